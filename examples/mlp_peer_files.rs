//! Writes the files of the big-MLP comparison against PyTorch and BackPACK (docs/performance.md): the relu MLP
//! 784-1024-1024-10 at PyTorch's default initialisation (seed 0) as a dense-chain file (`layers.{l}.weight`, what
//! `noether analyze` reads without `--arch`) and under `nn.Sequential`'s positional names with its `arch.toml`
//! (what `shared/peers/run.sh` reads), and the first N Fashion-MNIST training images as `x` [N, 784] in [0, 1].
//!
//!   cargo run --release --example mlp_peer_files -- OUT_DIR [N]     (N default 12000)
//!   noether analyze --model OUT/model.safetensors --data OUT/data.safetensors --loss cross_entropy [--precision f32]
//!   shared/peers/run.sh OUT/arch.toml OUT/model_torch.safetensors OUT/data.safetensors --loss cross_entropy [--f32]

use noether::data::save_dataset;
use noether::data::{load_idx, IdxOptions};
use noether::net::{save_net, Net, NetArch};
use std::path::{Path, PathBuf};

const ARCH: &str = "input = [784]\n\
[[layers]]\nkind = \"linear\"\nin_features = 784\nout_features = 1024\n[[layers]]\nkind = \"relu\"\n\
[[layers]]\nkind = \"linear\"\nin_features = 1024\nout_features = 1024\n[[layers]]\nkind = \"relu\"\n\
[[layers]]\nkind = \"linear\"\nin_features = 1024\nout_features = 10\n";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: mlp_peer_files OUT_DIR [N]"));
    let n: usize = std::env::args().nth(2).map_or(12_000, |s| s.parse().expect("N"));
    std::fs::create_dir_all(&out)?;
    let arch = NetArch::parse(ARCH)?;
    std::fs::write(out.join("arch.toml"), ARCH)?;
    let net = Net::<f64>::init(arch, 0);
    save_net::<f64, f64>(&net, &out.join("model_torch.safetensors"))?;
    // The same θ as a dense chain: state_dict order is the dense layout (W_l row-major, then b_l).
    let dense = noether::model::Architecture::new(
        &[784, 1024, 1024, 10],
        &[noether::Activation::Relu, noether::Activation::Relu, noether::Activation::Identity],
        &[true, true, true],
        &[false, false, false],
    )?;
    let model = noether::Model::from_params(dense, net.params.clone())?;
    noether::net::save_dense::<f64, f64>(&model, &out.join("model.safetensors"))?;
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    let (data, _) = load_idx::<f64>(
        &dir.join("train-images-idx3-ubyte.gz"),
        &dir.join("train-labels-idx1-ubyte.gz"),
        &IdxOptions { n: Some(n), standardize: false },
    )?;
    save_dataset(&data, &out.join("data.safetensors"))?;
    println!("wrote {} (N = {n}, P = {})", out.display(), model.arch.n_params());
    Ok(())
}
