//! The GEMMs of one dense statistics pass (`noether analyze` on 784-1024-1024-10, chunks of 1024 samples) in
//! the tape's own layouts, timed alone: on one core, and in two lanes at once (one sequential GEMM chain per
//! core, as the pass runs them). Their GFLOP/s is the ceiling the pass could reach if its element-wise work
//! were free. `cargo run --release --example prof_pass_gemms -- [f32] [N]`.
use faer::{Mat, MatMut, MatRef, Par};
use noether::linalg::gemm_par;
use noether::Real;
use std::time::Instant;

/// One chunk's GEMMs: forward, weight gradient, input gradient (not for the first layer), element moments.
fn chunk_gemms<T: Real>(dims: &[usize], b: usize, bufs: &mut Bufs<T>) {
    for l in 0..dims.len() - 1 {
        let (din, dout) = (dims[l], dims[l + 1]);
        let w = MatRef::from_row_major_slice(&bufs.w[l], dout, din);
        let x = bufs.acts[l].as_ref().subrows(0, b);
        gemm_par(bufs.z[l].as_mut().subrows_mut(0, b), false, x, w.transpose(), T::one(), Par::Seq);
        let d = bufs.z[l].as_ref().subrows(0, b);
        let g = MatMut::from_row_major_slice_mut(&mut bufs.g[l], dout, din);
        gemm_par(g, false, d.transpose(), x, T::one(), Par::Seq);
        if l > 0 {
            gemm_par(bufs.dx[l].as_mut().subrows_mut(0, b), false, d, w, T::one(), Par::Seq);
        }
        if l > 0 && l + 1 < dims.len() - 1 {
            gemm_par(bufs.e[l].as_mut(), true, d.transpose(), x, T::one(), Par::Seq);
        }
    }
}

struct Bufs<T> {
    w: Vec<Vec<T>>,
    g: Vec<Vec<T>>,
    acts: Vec<Mat<T>>,
    z: Vec<Mat<T>>,
    dx: Vec<Mat<T>>,
    e: Vec<Mat<T>>,
}

fn bufs<T: Real>(dims: &[usize], b: usize) -> Bufs<T> {
    let v = |k: usize| T::from_f64(((k * 7919) % 1013) as f64 * 1e-3);
    let pairs: Vec<(usize, usize)> = dims.windows(2).map(|p| (p[0], p[1])).collect();
    Bufs {
        w: pairs.iter().map(|&(i, o)| (0..i * o).map(v).collect()).collect(),
        g: pairs.iter().map(|&(i, o)| vec![T::zero(); i * o]).collect(),
        acts: pairs.iter().map(|&(i, _)| Mat::from_fn(b, i, |r, c| v(r * i + c))).collect(),
        z: pairs.iter().map(|&(_, o)| Mat::zeros(b, o)).collect(),
        dx: pairs.iter().map(|&(i, _)| Mat::zeros(b, i)).collect(),
        e: pairs.iter().map(|&(i, o)| Mat::zeros(o, i)).collect(),
    }
}

/// Flops of [`chunk_gemms`] on `b` samples.
fn flops(dims: &[usize], b: usize) -> f64 {
    let nl = dims.len() - 1;
    (0..nl)
        .map(|l| {
            let f = 2.0 * (b * dims[l] * dims[l + 1]) as f64;
            f * (2.0 + (l > 0) as u8 as f64 + (l > 0 && l + 1 < nl) as u8 as f64)
        })
        .sum()
}

fn run<T: Real>(n: usize) {
    let (dims, b) = ([784usize, 1024, 1024, 10], 1024usize);
    let chunks = n.div_ceil(b);
    let f = flops(&dims, b) * chunks as f64;
    let mut one = bufs::<T>(&dims, b);
    chunk_gemms(&dims, b, &mut one);
    for rep in 0..3 {
        let t = Instant::now();
        for _ in 0..chunks.div_ceil(2) {
            chunk_gemms(&dims, b, &mut one);
        }
        let t1 = t.elapsed().as_secs_f64();
        let mut lanes = [bufs::<T>(&dims, b), bufs::<T>(&dims, b)];
        let t = Instant::now();
        rayon::scope(|s| {
            for mine in lanes.iter_mut() {
                s.spawn(|_| {
                    for _ in 0..chunks / 2 {
                        chunk_gemms(&dims, b, mine);
                    }
                });
            }
        });
        let t2 = t.elapsed().as_secs_f64();
        let half = flops(&dims, b) * chunks.div_ceil(2) as f64;
        println!(
            "{} rep {rep}: one core {:.1} GFLOP/s; two lanes {:.3} s for the pass's {:.1} GFLOP = {:.1} GFLOP/s",
            std::any::type_name::<T>(),
            half / t1 / 1e9,
            t2,
            f / 1e9,
            flops(&dims, b) * (chunks / 2 * 2) as f64 / t2 / 1e9
        );
    }
}

fn kinds<T: Real>() {
    let b = 1024usize;
    let (din, dout) = (1024usize, 1024usize);
    let v = |k: usize| T::from_f64(((k * 7919) % 1013) as f64 * 1e-3);
    let w: Vec<T> = (0..din * dout).map(v).collect();
    let mut g: Vec<T> = vec![T::zero(); din * dout];
    let x = Mat::<T>::from_fn(b, din, |r, c| v(r * din + c));
    let d = Mat::<T>::from_fn(b, dout, |r, c| v(r * 3 + c));
    let mut z = Mat::<T>::zeros(b, dout);
    let mut dx = Mat::<T>::zeros(b, din);
    let mut e = Mat::<T>::zeros(dout, din);
    let f = 2.0 * (b * din * dout) as f64;
    let time = |name: &str, run: &mut dyn FnMut()| {
        run();
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            run();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("  {name:<34} {:.1} GFLOP/s (one core)", f / best / 1e9);
    };
    let wr = MatRef::from_row_major_slice(&w, dout, din);
    time("forward Z = X·Wᵀ", &mut || {
        gemm_par(z.as_mut(), false, x.as_ref(), wr.transpose(), T::one(), Par::Seq)
    });
    time("weight grad G(row-major) = Δᵀ·X", &mut || {
        gemm_par(
            MatMut::from_row_major_slice_mut(&mut g, dout, din),
            false,
            d.as_ref().transpose(),
            x.as_ref(),
            T::one(),
            Par::Seq,
        )
    });
    time("input grad ΔX = Δ·W", &mut || gemm_par(dx.as_mut(), false, d.as_ref(), wr, T::one(), Par::Seq));
    time("input grad, transposed: ΔXᵀ = Wᵀ·Δᵀ", &mut || {
        gemm_par(
            dx.as_mut().transpose_mut(),
            false,
            wr.transpose(),
            d.as_ref().transpose(),
            T::one(),
            Par::Seq,
        )
    });
    let wc = Mat::<T>::from_fn(dout, din, |i, j| wr[(i, j)]);
    time("input grad, W col-major copy", &mut || {
        gemm_par(dx.as_mut(), false, d.as_ref(), wc.as_ref(), T::one(), Par::Seq)
    });
    time("element E(col-major) += Δᵀ·X", &mut || {
        gemm_par(e.as_mut(), true, d.as_ref().transpose(), x.as_ref(), T::one(), Par::Seq)
    });
    time("square C = A·B (all col-major)", &mut || {
        gemm_par(e.as_mut(), false, x.as_ref(), d.as_ref(), T::one(), Par::Seq)
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = args.iter().find_map(|a| a.parse().ok()).unwrap_or(12_000);
    if args.iter().any(|a| a == "f32") {
        kinds::<f32>();
        run::<f32>(n)
    } else {
        kinds::<f64>();
        run::<f64>(n)
    }
}
