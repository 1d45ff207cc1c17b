//! Reading and writing named tensors in safetensors files (f64, f32, f16-free; integer labels).

use crate::error::{Error, Result};
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

/// Reads tensor `name` from a parsed file, or a `MissingTensor` error listing what is there.
pub fn get(st: &SafeTensors<'_>, name: &str, path: &Path) -> Result<Tensor> {
    match st.tensor(name) {
        Ok(v) => to_f64(&v, name, path),
        Err(_) => Err(Error::MissingTensor {
            name: name.into(),
            file: path.display().to_string(),
            found: names(st),
        }),
    }
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

/// As [`write`], with string pairs in the file's `__metadata__` (for example `noether.arch`).
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
