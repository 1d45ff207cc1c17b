//! Overhead of the local sweep backend (docs/sweep.md): `cargo run --release --example sweep_overhead [POINTS]
//! [JOBS]` (default 1000 points, 2 workers) sweeps seeds of `examples/matrix_factorization.toml` (30-40-30
//! linear net, SGD S = 1) at 2000 steps, and compares the sweep's wall time with `POINTS × T₁ / JOBS`, where
//! T₁ is one point's time run alone through the same routine (the mean of 100 points, interleaved before and
//! after the sweep so that a changing machine load affects both). Also prints the CPU-time ratio (less
//! sensitive to other processes) and the peak RSS after a sweep of POINTS/5 points and after the full sweep
//! (memory must not grow with the number of points beyond the table).

use noether::sweep::{run_local, run_point, LocalOptions, SweepDir, SweepSpec};
use std::path::Path;
use std::time::Instant;

fn spec(points: usize) -> SweepSpec {
    let text = format!(
        "name = \"overhead\"\nbase = \"matrix_factorization.toml\"\n[grid]\nsteps = [2000]\nseed = {{ range = [0, {points}] }}\n\
         [collect]\nfinal = [\"loss\", \"c_pair_l0_fro\"]\nsummary = [\"t\"]\n"
    );
    SweepSpec::from_toml(&text, "overhead", Path::new("examples")).expect("the overhead sweep parses")
}

/// (user + system) CPU seconds of this process so far.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = after.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name; clock ticks of 100 Hz.
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Mean (wall, cpu) seconds of `n` points run alone, one after the other.
fn single(points: &[noether::sweep::Point], dir: &Path, n: usize) -> (f64, f64) {
    let sweep = SweepDir::create(&spec(points.len()), dir).expect("single-point folder");
    let (t, c) = (Instant::now(), cpu_s());
    for p in &points[..n] {
        run_point(&sweep.dir, p).expect("a point runs");
    }
    (t.elapsed().as_secs_f64() / n as f64, (cpu_s() - c) / n as f64)
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(1000);
    let jobs = args.get(1).copied().unwrap_or(2);
    let root = std::env::temp_dir().join(format!("noether-sweep-overhead-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let full = spec(n);
    let points = full.points().expect("points");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("{n} points, {jobs} workers; load average before: {}", load.trim());
    let (w1, c1) = single(&points, &root.join("single-a"), 50);
    // A smaller sweep first: its peak RSS against the full sweep's shows whether memory grows with points.
    let small = spec(n / 5);
    let small_points = small.points().expect("points");
    let sweep = SweepDir::create(&small, root.join("small")).expect("folder");
    run_local(&sweep, &small_points, &LocalOptions { jobs, retry_failed: false }, &mut |_| {})
        .expect("sweep");
    let rss_small = peak_rss_mb();
    let sweep = SweepDir::create(&full, root.join("full")).expect("folder");
    let (t, c) = (Instant::now(), cpu_s());
    let table =
        run_local(&sweep, &points, &LocalOptions { jobs, retry_failed: false }, &mut |_| {}).expect("sweep");
    let (wall, cpu) = (t.elapsed().as_secs_f64(), cpu_s() - c);
    let rss_full = peak_rss_mb();
    let (w2, c2) = single(&points, &root.join("single-b"), 50);
    let (t1, tc) = ((w1 + w2) / 2.0, (c1 + c2) / 2.0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let c = table.counts();
    println!("load average after: {}", load.trim());
    println!("points done {} of {}, failed {}", c.done, c.total, c.failed);
    println!(
        "one point alone: {:.2} ms wall (before {:.2}, after {:.2}), {:.2} ms cpu",
        t1 * 1e3,
        w1 * 1e3,
        w2 * 1e3,
        tc * 1e3
    );
    let ideal = n as f64 * t1 / jobs as f64;
    println!("sweep wall {wall:.2} s vs points × T₁ / jobs = {ideal:.2} s: ratio {:.3}", wall / ideal);
    println!(
        "sweep cpu {cpu:.2} s vs points × cpu₁ = {:.2} s: ratio {:.3}",
        n as f64 * tc,
        cpu / (n as f64 * tc)
    );
    let in_sweep: f64 = table.rows.iter().filter_map(|r| r.wall_time_s).sum();
    println!(
        "points' own wall times in the sweep: {:.2} ms each; sweep wall vs their sum / jobs: ratio {:.3}",
        in_sweep / n as f64 * 1e3,
        wall / (in_sweep / jobs as f64)
    );
    println!("peak RSS after {} points: {rss_small:.1} MB; after {n} more: {rss_full:.1} MB", n / 5);
    let _ = std::fs::remove_dir_all(&root);
}
