//! Times the five GEMMs of a 30-40-30 SGD step at S = 64 (f64) with faer and with `gemm_small`.
use faer::{Accum, Mat, MatMut, MatRef, Par};
use noether::linalg::gemm_small;

fn time(mut f: impl FnMut()) -> f64 {
    for _ in 0..2000 {
        f();
    }
    let reps = 10_000;
    (0..9)
        .map(|_| {
            let t = std::time::Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64 * 1e6
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let b = 64usize;
    let x = Mat::<f64>::from_fn(b, 30, |i, j| ((i * 7 + j * 3) % 11) as f64 * 0.1);
    let h = Mat::<f64>::from_fn(b, 40, |i, j| ((i * 5 + j * 3) % 13) as f64 * 0.1);
    let d1 = Mat::<f64>::from_fn(b, 30, |i, j| ((i * 3 + j * 7) % 17) as f64 * 0.1);
    let w0: Vec<f64> = (0..1200).map(|i| (i % 19) as f64 * 0.01).collect();
    let w1: Vec<f64> = (0..1200).map(|i| (i % 23) as f64 * 0.01).collect();
    let w0m = MatRef::from_row_major_slice(&w0, 40, 30);
    let w1m = MatRef::from_row_major_slice(&w1, 30, 40);
    let mut z0 = Mat::<f64>::zeros(b, 40);
    let mut z1 = Mat::<f64>::zeros(b, 30);
    let mut d0 = Mat::<f64>::zeros(b, 40);
    let mut g0 = vec![0.0; 1200];
    let mut g1 = vec![0.0; 1200];
    type Case<'a> = (&'a str, Box<dyn FnMut(bool) + 'a>);
    let mut cases: Vec<Case> = vec![
        ("Z0=X W0t   64x40x30", Box::new(|s| run(s, z0.as_mut(), x.as_ref(), w0m.transpose()))),
        ("Z1=H W1t   64x30x40", Box::new(|s| run(s, z1.as_mut(), h.as_ref(), w1m.transpose()))),
        (
            "G1=D1t H   30x40x64",
            Box::new(|s| {
                run(s, MatMut::from_row_major_slice_mut(&mut g1, 30, 40), d1.as_ref().transpose(), h.as_ref())
            }),
        ),
        ("D0=D1 W1   64x40x30", Box::new(|s| run(s, d0.as_mut(), d1.as_ref(), w1m))),
        (
            "G0=D0t X   40x30x64",
            Box::new(|s| {
                run(s, MatMut::from_row_major_slice_mut(&mut g0, 40, 30), h.as_ref().transpose(), x.as_ref())
            }),
        ),
    ];
    let mut tot = [0.0; 2];
    for (name, f) in cases.iter_mut() {
        let tf = time(|| f(false));
        let ts = time(|| f(true));
        tot[0] += tf;
        tot[1] += ts;
        let gf = 2.0 * 76800.0 / 1e3;
        println!("{name}: faer {tf:.2} us ({:.1} GF/s)  small {ts:.2} us ({:.1} GF/s)", gf / tf, gf / ts);
    }
    println!("total: faer {:.2} small {:.2}", tot[0], tot[1]);
    // The Gram-form linear-chain step of 30-40-30 at S = 64 (model::LinearChainStep), in its layouts: row-major
    // batch matrices, column-major Q_1 = W_0 (copy) and P = Q_2, row-major G.
    {
        let (d0, d1, d2, b) = (30usize, 40usize, 30usize, 64usize);
        let w0: Vec<f64> = (0..d1 * d0).map(|i| (i % 19) as f64 * 0.01).collect();
        let w1: Vec<f64> = (0..d2 * d1).map(|i| (i % 23) as f64 * 0.01).collect();
        let w0m = MatRef::from_row_major_slice(&w0, d1, d0);
        let w1m = MatRef::from_row_major_slice(&w1, d2, d1);
        let xs: Vec<f64> = (0..b * d0).map(|i| ((i * 7) % 11) as f64 * 0.1).collect();
        let rs: Vec<f64> = (0..b * d2).map(|i| ((i * 3) % 17) as f64 * 0.1).collect();
        let x = MatRef::from_row_major_slice(&xs, b, d0);
        let r = MatRef::from_row_major_slice(&rs, b, d2);
        let mut q1 = Mat::<f64>::zeros(d1, d0);
        let mut p = Mat::<f64>::zeros(d2, d0);
        let mut f = vec![0.0; b * d2];
        let mut g = vec![0.0; d2 * d0];
        let mut g1 = vec![0.0; d2 * d1];
        let mut g0 = vec![0.0; d1 * d0];
        let gm: Vec<f64> = (0..d2 * d0).map(|i| (i % 13) as f64 * 0.01).collect();
        let gmr = MatRef::from_row_major_slice(&gm, d2, d0);
        noether::linalg::copy_into(q1.as_mut(), w0m);
        let cases: [(&str, usize, f64); 6] = [
            ("Q1 = W0 (copy)", 0, time(|| noether::linalg::copy_into(q1.as_mut(), w0m))),
            ("P = W1 Q1", d2 * d1 * d0, time(|| run(true, p.as_mut(), w1m, q1.as_ref()))),
            (
                "F = X P^T",
                b * d2 * d0,
                time(|| run(true, MatMut::from_row_major_slice_mut(&mut f, b, d2), x, p.transpose())),
            ),
            (
                "G = R^T X",
                d2 * d0 * b,
                time(|| run(true, MatMut::from_row_major_slice_mut(&mut g, d2, d0), r.transpose(), x)),
            ),
            (
                "gW1^T = Q1 G^T",
                d2 * d1 * d0,
                time(|| {
                    run(
                        true,
                        MatMut::from_column_major_slice_mut(&mut g1, d1, d2),
                        q1.as_ref(),
                        gmr.transpose(),
                    )
                }),
            ),
            (
                "gW0 = W1^T G",
                d1 * d0 * d2,
                time(|| run(true, MatMut::from_row_major_slice_mut(&mut g0, d1, d0), w1m.transpose(), gmr)),
            ),
        ];
        let mut tot = 0.0;
        for (name, fmas, t) in cases {
            tot += t;
            println!("chain {name}: {t:.2} us ({:.1} GF/s)", 2.0 * fmas as f64 / t / 1e3);
        }
        println!("chain total {tot:.2} us");
    }
    // Square sweeps in the tape's two forms: Z = X Wᵀ (axpy) and G = Δᵀ X (dot, row-major G).
    for s in [32usize, 48, 64, 80, 96, 128] {
        let x = Mat::<f64>::from_fn(s, s, |i, j| ((i * 7 + j * 3) % 11) as f64 * 0.1);
        let w: Vec<f64> = (0..s * s).map(|i| (i % 19) as f64 * 0.01).collect();
        let wm = MatRef::from_row_major_slice(&w, s, s);
        let mut z = Mat::<f64>::zeros(s, s);
        let mut g = vec![0.0; s * s];
        let gf = 2.0 * (s * s * s) as f64 / 1e3;
        let ax = [
            time(|| run(false, z.as_mut(), x.as_ref(), wm.transpose())),
            time(|| run(true, z.as_mut(), x.as_ref(), wm.transpose())),
        ];
        let dt = [
            time(|| {
                run(false, MatMut::from_row_major_slice_mut(&mut g, s, s), x.as_ref().transpose(), x.as_ref())
            }),
            time(|| {
                run(true, MatMut::from_row_major_slice_mut(&mut g, s, s), x.as_ref().transpose(), x.as_ref())
            }),
        ];
        println!(
            "n={s}: ax faer {:.1} small {:.1} GF/s | dot faer {:.1} small {:.1} GF/s",
            gf / ax[0],
            gf / ax[1],
            gf / dt[0],
            gf / dt[1]
        );
    }
}

fn run(small: bool, dst: MatMut<'_, f64>, a: MatRef<'_, f64>, b: MatRef<'_, f64>) {
    if small {
        assert!(gemm_small(dst, false, a, b, 1.0));
    } else {
        faer::linalg::matmul::matmul(dst, Accum::Replace, a, b, 1.0, Par::Seq);
    }
}
