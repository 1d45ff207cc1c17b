//! Reading and writing named tensors in safetensors files (f64, f32, f16-free; integer labels).

use crate::error::{Error, Result};
use crate::real::Real;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::path::Path;

/// A tensor read from a file, converted to f64, with its shape.
#[derive(Clone, Debug)]
pub struct Tensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values in row-major order.
    pub data: Vec<f64>,
    /// The dtype in the file.
    pub dtype: Dtype,
}

/// Reads a whole file into memory.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// The `__metadata__` entry `key` of a safetensors file, from its header alone (the 8-byte little-endian
/// header length, then the JSON header), without reading the tensors. `None` when the file has no such entry;
/// the tensors themselves are checked when the file is loaded.
pub fn header_metadata(path: &Path, key: &str) -> Result<Option<String>> {
    use std::io::Read;
    let bad = |reason: String| Error::Safetensors { file: path.display().to_string(), reason };
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = f.metadata().map_err(|e| Error::io(path, e))?;
    // A pipe or device has no size to check against; its header is only bounded.
    let size = meta.is_file().then_some(meta.len());
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|_| bad("too short for a safetensors header (8 bytes)".into()))?;
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 || size.is_some_and(|size| n > size - 8) {
        return Err(bad(format!("header length {n} does not fit the file ({} bytes)", size.unwrap_or(0))));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    match json.get("__metadata__").and_then(|m| m.get(key)) {
        None => Ok(None),
        Some(serde_json::Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(bad(format!("`__metadata__[\"{key}\"]` is not a string"))),
    }
}

/// Parses safetensors bytes.
pub fn parse<'a>(bytes: &'a [u8], path: &Path) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Safetensors { file: path.display().to_string(), reason: e.to_string() })
}

/// Converts a tensor view to f64 values (float and integer dtypes).
pub fn to_f64(view: &TensorView<'_>, name: &str, path: &Path) -> Result<Tensor> {
    let b = view.data();
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            b.chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect::<Vec<f64>>()
        };
    }
    let data = match view.dtype() {
        Dtype::F64 => conv!(f64, 8),
        Dtype::F32 => conv!(f32, 4),
        Dtype::I64 => conv!(i64, 8),
        Dtype::I32 => conv!(i32, 4),
        Dtype::I16 => conv!(i16, 2),
        Dtype::I8 => conv!(i8, 1),
        Dtype::U8 => conv!(u8, 1),
        Dtype::U16 => conv!(u16, 2),
        Dtype::U32 => conv!(u32, 4),
        Dtype::U64 => conv!(u64, 8),
        other => {
            return Err(Error::Safetensors {
                file: path.display().to_string(),
                reason: format!(
                    "tensor `{name}` has unsupported dtype {other:?}; save it as float32 or float64"
                ),
            })
        }
    };
    Ok(Tensor { shape: view.shape().to_vec(), data, dtype: view.dtype() })
}

/// A tensor `[n, *rest]` (row-major in the file) as a column-major `[n, d]` matrix in `T`, `d` = the product
/// of the other axes, converted straight from the file's bytes in blocks of `ROW_BLOCK` rows, so that the
/// block's source rows and its destination column segments both stay in cache (an element-by-element
/// transposing copy strides through the whole tensor once per column). Float and integer dtypes.
pub fn matrix<T: Real>(view: &TensorView<'_>, name: &str, path: &Path) -> Result<faer::Mat<T>> {
    let shape = view.shape();
    let n = shape.first().copied().unwrap_or(1);
    let d = shape.iter().skip(1).product::<usize>();
    let b = view.data();
    let mut m = faer::Mat::<T>::zeros(n, d);
    macro_rules! fill {
        ($t:ty, $w:expr) => {{
            let mut r0 = 0;
            while r0 < n {
                let r1 = (r0 + ROW_BLOCK).min(n);
                for j in 0..d {
                    let col = &mut m
                        .col_mut(j)
                        .try_as_col_major_mut()
                        .expect("a fresh Mat is column-major")
                        .as_slice_mut()[r0..r1];
                    for (c, i) in col.iter_mut().zip(r0..r1) {
                        let at = (i * d + j) * $w;
                        *c = T::from_f64(<$t>::from_le_bytes(b[at..at + $w].try_into().unwrap()) as f64);
                    }
                }
                r0 = r1;
            }
        }};
    }
    match view.dtype() {
        Dtype::F64 => fill!(f64, 8),
        Dtype::F32 => fill!(f32, 4),
        _ => {
            let t = to_f64(view, name, path)?;
            m = faer::Mat::from_fn(n, d, |i, j| T::from_f64(t.data[i * d + j]));
        }
    }
    Ok(m)
}

/// Rows per block of [`matrix`]'s transposing conversion.
const ROW_BLOCK: usize = 64;

/// Reads tensor `name` from a parsed file, or a `MissingTensor` error listing what is there.
pub fn get(st: &SafeTensors<'_>, name: &str, path: &Path) -> Result<Tensor> {
    to_f64(&view(st, name, path)?, name, path)
}

/// The raw view of tensor `name` in a parsed file, or a `MissingTensor` error listing what is there.
pub fn view<'a>(st: &SafeTensors<'a>, name: &str, path: &Path) -> Result<TensorView<'a>> {
    st.tensor(name).map_err(|_| Error::MissingTensor {
        name: name.into(),
        file: path.display().to_string(),
        found: names(st),
    })
}

/// The sorted tensor names of a file, comma separated.
pub fn names(st: &SafeTensors<'_>) -> String {
    let mut n: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
    n.sort();
    n.join(", ")
}

/// Writes named tensors (`name`, dtype, shape, little-endian bytes) to a safetensors file.
pub fn write(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Result<()> {
    write_with_metadata(path, tensors, None)
}

/// As [`write()`], with string pairs in the file's `__metadata__` (for example `noether.arch`).
pub fn write_with_metadata(
    path: &Path,
    tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, dt, shape, bytes)| {
            TensorView::new(*dt, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Safetensors { file: path.display().to_string(), reason: e.to_string() })
        })
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(views, metadata, path)
        .map_err(|e| Error::Safetensors { file: path.display().to_string(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`matrix`]'s blocked conversion against the element-by-element one ([`to_f64`] then indexing), for
    /// f64, f32 and integer tensors, rank 2 and 4, with a row count that is not a multiple of the block.
    #[test]
    fn matrix_matches_the_elementwise_conversion() {
        let path = Path::new("test.safetensors");
        let (n, shape) = (2 * ROW_BLOCK + 7, vec![2usize, 3, 5]);
        let d: usize = shape.iter().product();
        let full: Vec<usize> = std::iter::once(n).chain(shape.iter().copied()).collect();
        let vals: Vec<f64> = (0..n * d).map(|k| ((k * 7919) % 1013) as f64 - 500.0).collect();
        let cases: Vec<(Dtype, Vec<u8>, Vec<usize>)> = vec![
            (Dtype::F64, vals.iter().flat_map(|v| v.to_le_bytes()).collect(), full.clone()),
            (Dtype::F32, vals.iter().flat_map(|&v| (v as f32 * 0.25).to_le_bytes()).collect(), full.clone()),
            (Dtype::I32, vals.iter().flat_map(|&v| (v as i32).to_le_bytes()).collect(), vec![n, d]),
        ];
        for (dtype, bytes, shape) in cases {
            let view = TensorView::new(dtype, shape, &bytes).unwrap();
            let t = to_f64(&view, "x", path).unwrap();
            let m64: faer::Mat<f64> = matrix(&view, "x", path).unwrap();
            let m32: faer::Mat<f32> = matrix(&view, "x", path).unwrap();
            assert_eq!((m64.nrows(), m64.ncols()), (n, d));
            for i in 0..n {
                for j in 0..d {
                    assert_eq!(m64[(i, j)], t.data[i * d + j], "{dtype:?} ({i}, {j})");
                    assert_eq!(m32[(i, j)], t.data[i * d + j] as f32, "{dtype:?} ({i}, {j})");
                }
            }
        }
    }
}
