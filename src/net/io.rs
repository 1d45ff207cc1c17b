//! State-dict files: a safetensors file whose tensors are named as the PyTorch `nn.Sequential` the
//! architecture describes (`0.weight`, `2.body.0.bias`, …). Loading is strict, as PyTorch's
//! `load_state_dict(strict=True)`: a missing, unexpected or wrongly shaped tensor is an error that names it.
//! Files noether writes carry the architecture file's text in `__metadata__["noether.arch"]`.

use super::{Net, NetArch};
use crate::error::{Error, Result};
use crate::real::Real;
use crate::tensor_io;
use std::collections::HashMap;
use std::path::Path;

/// The `__metadata__` key holding the architecture (TOML text).
pub const ARCH_METADATA_KEY: &str = "noether.arch";

/// The architecture a safetensors file carries in `__metadata__["noether.arch"]`, if any (an unreadable file
/// or a stored architecture that does not parse is an error naming the file).
pub fn stored_arch(path: &Path) -> Result<Option<NetArch>> {
    let file = path.display().to_string();
    match tensor_io::header_metadata(path, ARCH_METADATA_KEY)? {
        None => Ok(None),
        Some(text) => NetArch::parse(&text)
            .map(Some)
            .map_err(|e| Error::Config(format!("architecture stored in {file}: {e}"))),
    }
}

/// Loads a state dict. The architecture is `arch` when given, else the file's `noether.arch` metadata.
pub fn load_net<T: Real>(path: &Path, arch: Option<&NetArch>) -> Result<Net<T>> {
    let bytes = tensor_io::read_file(path)?;
    let st = tensor_io::parse(&bytes, path)?;
    let file = path.display().to_string();
    let arch = match arch {
        Some(a) => a.clone(),
        None => {
            let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
                .map_err(|e| Error::Safetensors { file: file.clone(), reason: e.to_string() })?;
            let text = meta.metadata().as_ref().and_then(|m| m.get(ARCH_METADATA_KEY)).ok_or_else(|| {
                Error::Config(format!(
                    "{file} carries no architecture (`__metadata__[\"{ARCH_METADATA_KEY}\"]`); give one with --arch ARCH.toml"
                ))
            })?;
            NetArch::parse(text).map_err(|e| Error::Config(format!("architecture stored in {file}: {e}")))?
        }
    };
    let names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
    let mut unexpected: Vec<&String> = names.iter().filter(|n| arch.block(n).is_none()).collect();
    unexpected.sort();
    let missing: Vec<&str> =
        arch.blocks.iter().filter(|b| !names.contains(&b.name)).map(|b| b.name.as_str()).collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        let mut msg = format!("{file} does not match the architecture (strict state_dict loading):");
        if !missing.is_empty() {
            msg += &format!(" missing tensor(s) {};", missing.join(", "));
        }
        if !unexpected.is_empty() {
            let u: Vec<&str> = unexpected.iter().map(|s| s.as_str()).collect();
            msg += &format!(" unexpected tensor(s) {};", u.join(", "));
        }
        msg += &format!(
            " the architecture's tensors are {}",
            arch.blocks.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", ")
        );
        return Err(Error::Data(msg));
    }
    let mut params = vec![T::zero(); arch.n_params()];
    for b in &arch.blocks {
        let t = tensor_io::get(&st, &b.name, path)?;
        if !matches!(
            t.dtype,
            safetensors::Dtype::F64
                | safetensors::Dtype::F32
                | safetensors::Dtype::F16
                | safetensors::Dtype::BF16
        ) {
            return Err(Error::Data(format!(
                "tensor `{}` in {file} has dtype {:?}; parameters must be floats",
                b.name, t.dtype
            )));
        }
        if t.shape != b.shape {
            return Err(Error::shape(format!("tensor `{}` in {file}", b.name), &b.shape, &t.shape));
        }
        for (p, &v) in params[b.range.clone()].iter_mut().zip(&t.data) {
            *p = T::from_f64(v);
        }
    }
    let net = Net::from_params(arch, params)?;
    net.check_finite()?;
    Ok(net)
}

/// Writes `net` as a state dict in precision `U` (tensor names and shapes of the architecture), with the
/// architecture in the metadata.
pub fn save_net<T: Real, U: Real>(net: &Net<T>, path: &Path) -> Result<()> {
    let tensors: Vec<_> = net
        .arch
        .blocks
        .iter()
        .map(|b| {
            let v: Vec<U> = net.params[b.range.clone()].iter().map(|&x| U::from_f64(x.to_f64())).collect();
            (b.name.clone(), U::DTYPE, b.shape.clone(), U::to_le_bytes_vec(&v))
        })
        .collect();
    let meta = HashMap::from([(ARCH_METADATA_KEY.to_string(), net.arch.to_toml().to_string())]);
    tensor_io::write_with_metadata(path, &tensors, Some(meta))
}

/// The `__metadata__` of a dense-chain file: `noether.arch` = [`NetArch::from_dense`]'s text, so that the file
/// needs neither `--arch` nor `--activation`. `stems`: the tensor stems of the file's layers when they are not
/// `layers.{l}` ([`NetArch::from_dense_named`]).
pub fn dense_metadata(
    arch: &crate::model::Architecture,
    stems: Option<&[String]>,
) -> Result<std::collections::HashMap<String, String>> {
    let net = match stems {
        Some(names) => NetArch::from_dense_named(arch, names)?,
        None => NetArch::from_dense(arch)?,
    };
    Ok(std::collections::HashMap::from([(ARCH_METADATA_KEY.to_string(), net.to_toml().to_string())]))
}

/// Saves a dense chain as `layers.{l}.weight` / `layers.{l}.bias` in precision `U` (`f64` or `f32`), with its
/// architecture in the metadata ([`dense_metadata`]): what every dense model noether writes looks like.
pub fn save_dense<T: Real, U: Real>(model: &crate::Model<T>, path: &Path) -> Result<()> {
    let meta = dense_metadata(&model.arch, None)?;
    tensor_io::write_with_metadata(
        path,
        &crate::model::tensors_to_safetensors_bytes::<T, U>(model),
        Some(meta),
    )
}

/// A dense-chain file that carries its architecture (as [`save_dense`] writes them): the model with the stored
/// activations and normalisations, its parameters checked against them. `None` when the file carries no
/// architecture or one that is not a plain dense chain ([`NetArch::dense_chain`]).
pub fn load_dense_described<T: Real>(path: &Path) -> Result<Option<crate::Model<T>>> {
    let Some((arch, _)) = stored_arch(path)?.and_then(|a| a.dense_chain()) else { return Ok(None) };
    let mut model = crate::Model::zeros(arch);
    crate::model::load_params_into(&mut model, path)?;
    Ok(Some(model))
}
