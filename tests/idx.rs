//! MNIST-format IDX files: the reader against files written byte by byte here (raw and gzip), standardisation
//! against a direct two-pass computation, every bad-input class, the `noether data idx` converter, a
//! `kind = "idx"` training config, and Fashion-MNIST from Debian's `dataset-fashion-mnist` when installed.

use crate::cli::{noether, stderr, tmp};
use noether::data::{
    load_dataset_shaped, load_idx, IdxOptions, IdxProblem, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC,
};
use noether::{Dataset, Error, Real, Targets};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::path::{Path, PathBuf};

/// An IDX file: big-endian magic, big-endian u32 sizes, then the bytes.
fn idx_bytes(magic: u32, dims: &[usize], values: &[u8]) -> Vec<u8> {
    let mut b = magic.to_be_bytes().to_vec();
    for &d in dims {
        b.extend((d as u32).to_be_bytes());
    }
    b.extend_from_slice(values);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// `n` random images of `rows × cols` (pixel 0 constant at 7, pixel 1 spanning 0 and 255 when n ≥ 2) and
/// labels in 0..classes.
fn images(n: usize, rows: usize, cols: usize, classes: u8, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = rows * cols;
    let mut px: Vec<u8> = (0..n * d).map(|_| rng.random()).collect();
    for i in 0..n {
        px[i * d] = 7;
        if d > 1 {
            px[i * d + 1] = if i % 2 == 0 { 0 } else { 255 };
        }
    }
    let labels = (0..n).map(|_| rng.random_range(0..classes)).collect();
    (px, labels)
}

struct Pair {
    images: PathBuf,
    labels: PathBuf,
    px: Vec<u8>,
    y: Vec<u8>,
}

/// Writes an image/label pair (gzip'd or raw) into `dir`.
fn write_pair(dir: &Path, tag: &str, n: usize, rows: usize, cols: usize, gz: bool) -> Pair {
    let (px, y) = images(n, rows, cols, 10, (n * 131 + rows * 7 + cols) as u64);
    let ext = if gz { ".gz" } else { "" };
    let images = dir.join(format!("{tag}-images-idx3-ubyte{ext}"));
    let labels = dir.join(format!("{tag}-labels-idx1-ubyte{ext}"));
    let (ib, lb) =
        (idx_bytes(IDX_IMAGES_MAGIC, &[n, rows, cols], &px), idx_bytes(IDX_LABELS_MAGIC, &[n], &y));
    std::fs::write(&images, if gz { gzip(&ib) } else { ib }).unwrap();
    std::fs::write(&labels, if gz { gzip(&lb) } else { lb }).unwrap();
    Pair { images, labels, px, y }
}

fn classes<T>(d: &Dataset<T>) -> &[usize] {
    match &d.y {
        Targets::Classes(c) => c,
        Targets::Dense(_) => panic!("IDX labels must load as classes"),
    }
}

fn load<T: Real>(p: &Pair, n: Option<usize>, standardize: bool) -> noether::Result<(Dataset<T>, Vec<usize>)> {
    load_idx::<T>(&p.images, &p.labels, &IdxOptions { n, standardize })
}

/// Every pixel is `p/255` (rounded once to T), every label as written, row-major flattening.
fn check_scaled<T: Real>(p: &Pair, n: usize, rows: usize, cols: usize) {
    let (d, shape) = load::<T>(p, Some(n), false).unwrap();
    assert_eq!(shape, vec![1, rows, cols]);
    assert_eq!((d.len(), d.d_in()), (n, rows * cols));
    for i in 0..n {
        for r in 0..rows {
            for c in 0..cols {
                let want = T::from_f64(p.px[(i * rows + r) * cols + c] as f64 / 255.0);
                assert_eq!(d.x[(i, r * cols + c)], want, "sample {i}, pixel ({r}, {c})");
            }
        }
    }
    let want: Vec<usize> = p.y[..n].iter().map(|&k| k as usize).collect();
    assert_eq!(classes(&d), want.as_slice());
}

#[test]
fn reads_raw_and_gzip_files_pixel_for_pixel() {
    let dir = tmp("idx-read");
    for (n, rows, cols) in [(1, 1, 1), (3, 2, 5), (17, 4, 3), (2, 28, 28), (130, 3, 2)] {
        for gz in [false, true] {
            let p = write_pair(&dir, &format!("{n}-{rows}-{cols}-{gz}"), n, rows, cols, gz);
            check_scaled::<f64>(&p, n, rows, cols);
            check_scaled::<f32>(&p, n, rows, cols);
            // The default options load every sample; `n` keeps the first ones in file order.
            let (all, _) = load::<f64>(&p, None, false).unwrap();
            assert_eq!(all.len(), n);
            check_scaled::<f64>(&p, n.div_ceil(2), rows, cols);
        }
    }
}

/// Direct two-pass standardisation of the first `n` images in f64: x = p/255, mean and population variance per
/// pixel, (x − mean)/√var; 0 where the pixel is constant over the n images.
fn standardized_direct(px: &[u8], n: usize, d: usize) -> Vec<f64> {
    let x = |i: usize, j: usize| px[i * d + j] as f64 / 255.0;
    let mut out = vec![0.0; n * d];
    for j in 0..d {
        if (0..n).all(|i| px[i * d + j] == px[j]) {
            continue;
        }
        let mean = (0..n).map(|i| x(i, j)).sum::<f64>() / n as f64;
        let var = (0..n).map(|i| (x(i, j) - mean).powi(2)).sum::<f64>() / n as f64;
        for i in 0..n {
            out[i * d + j] = (x(i, j) - mean) / var.sqrt();
        }
    }
    out
}

#[test]
fn standardisation_matches_a_direct_computation_over_the_loaded_samples() {
    let dir = tmp("idx-standardize");
    let (n, rows, cols) = (40, 3, 4);
    let d = rows * cols;
    let p = write_pair(&dir, "s", n, rows, cols, true);
    // (One sample is refused: standardising it would zero every pixel.)
    assert!(load::<f64>(&p, Some(1), true).is_err());
    for take in [2, 7, n] {
        let (got, _) = load::<f64>(&p, Some(take), true).unwrap();
        let want = standardized_direct(&p.px, take, d);
        // The direct path rounds O(n) times in the mean and variance: tolerance 128·ε·n·max(1, |x|).
        for i in 0..take {
            for j in 0..d {
                let (g, w) = (got.x[(i, j)], want[i * d + j]);
                let tol = 128.0 * f64::EPSILON * take as f64 * w.abs().max(1.0);
                assert!((g - w).abs() <= tol, "n = {take}, sample {i}, pixel {j}: {g} vs {w}");
            }
        }
        // Pixel 0 is constant (7 in every image): it becomes exactly 0.
        assert!((0..take).all(|i| got.x[(i, 0)] == 0.0));
        // Each non-constant pixel has mean 0 and population std 1 over the loaded samples.
        let mean = (0..take).map(|i| got.x[(i, 1)]).sum::<f64>() / take as f64;
        let var = (0..take).map(|i| (got.x[(i, 1)] - mean).powi(2)).sum::<f64>() / take as f64;
        let tol = 16.0 * f64::EPSILON * take as f64;
        assert!(mean.abs() <= tol && (var - 1.0).abs() <= tol, "mean {mean}, var {var}");
        let (f32s, _) = load::<f32>(&p, Some(take), true).unwrap();
        for i in 0..take {
            for j in 0..d {
                assert_eq!(f32s.x[(i, j)], got.x[(i, j)] as f32, "f32 is the f64 value rounded once");
            }
        }
    }
    // The statistics are those of the loaded subset, not of the whole file.
    let (first7, _) = load::<f64>(&p, Some(7), true).unwrap();
    let (all, _) = load::<f64>(&p, None, true).unwrap();
    assert!((0..7).any(|i| (first7.x[(i, 2)] - all.x[(i, 2)]).abs() > 1e-3));
}

fn idx_problem(e: Error) -> (String, IdxProblem) {
    match e {
        Error::Idx { file, problem } => (file, problem),
        other => panic!("expected an IDX error, got {other}"),
    }
}

/// One bad input of each class: its files, the options, and the expected culprit and problem.
struct BadCase {
    name: &'static str,
    images: Vec<u8>,
    labels: Vec<u8>,
    n: Option<usize>,
    culprit_is_images: bool,
    check: fn(&IdxProblem) -> bool,
}

fn bad_cases() -> Vec<BadCase> {
    let (px, y) = images(5, 2, 3, 10, 1);
    let img = idx_bytes(IDX_IMAGES_MAGIC, &[5, 2, 3], &px);
    let lab = idx_bytes(IDX_LABELS_MAGIC, &[5], &y);
    let gz = gzip(&img);
    let mut corrupt = gz.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    let mut bad_crc = gz.clone();
    let k = bad_crc.len() - 8; // CRC32 of the trailer
    bad_crc[k] ^= 0x01;
    type Check = fn(&IdxProblem) -> bool;
    let case = |name: &'static str, images: Vec<u8>, labels: Vec<u8>, n, culprit_is_images, check: Check| {
        BadCase { name, images, labels, n, culprit_is_images, check }
    };
    vec![
        case("labels-as-images", lab.clone(), lab.clone(), None, true, |p| {
            *p == IdxProblem::BadMagic { found: IDX_LABELS_MAGIC, expected: IDX_IMAGES_MAGIC }
        }),
        case("images-as-labels", img.clone(), img.clone(), None, false, |p| {
            *p == IdxProblem::BadMagic { found: IDX_IMAGES_MAGIC, expected: IDX_LABELS_MAGIC }
        }),
        case("not-idx", b"hello, world: not an IDX file".to_vec(), lab.clone(), None, true, |p| {
            *p == IdxProblem::BadMagic { found: u32::from_be_bytes(*b"hell"), expected: IDX_IMAGES_MAGIC }
        }),
        case("float32", idx_bytes(0x0000_0d03, &[5, 2, 3], &[0; 120]), lab.clone(), None, true, |p| {
            *p == IdxProblem::BadMagic { found: 0x0d03, expected: IDX_IMAGES_MAGIC }
        }),
        case("short-values", img[..img.len() - 1].to_vec(), lab.clone(), None, true, |p| {
            *p == IdxProblem::Truncated { expected: 16 + 30, got: 16 + 29, dims: vec![5, 2, 3] }
        }),
        case("short-header", img[..10].to_vec(), lab.clone(), None, true, |p| {
            *p == IdxProblem::Truncated { expected: 16, got: 10, dims: vec![] }
        }),
        case("two-bytes", vec![0, 0], lab.clone(), None, true, |p| {
            *p == IdxProblem::Truncated { expected: 16, got: 2, dims: vec![] }
        }),
        case("trailing", [img.as_slice(), &[9]].concat(), lab.clone(), None, true, |p| {
            *p == IdxProblem::TrailingBytes { expected: 46, got: 47, dims: vec![5, 2, 3] }
        }),
        case("no-images", idx_bytes(IDX_IMAGES_MAGIC, &[0, 2, 3], &[]), lab.clone(), None, true, |p| {
            *p == IdxProblem::EmptyImages { n: 0, rows: 2, cols: 3 }
        }),
        case("count-mismatch", img.clone(), idx_bytes(IDX_LABELS_MAGIC, &[4], &y[..4]), None, false, |p| {
            matches!(p, IdxProblem::CountMismatch { labels: 4, images: 5, .. })
        }),
        case("n-too-large", img.clone(), lab.clone(), Some(6), true, |p| {
            *p == IdxProblem::TooFewSamples { requested: 6, available: 5 }
        }),
        case("gzip-cut-short", gz[..gz.len() / 2].to_vec(), lab.clone(), None, true, |p| {
            matches!(p, IdxProblem::Gzip(_))
        }),
        case("gzip-corrupt", corrupt, lab.clone(), None, true, |p| matches!(p, IdxProblem::Gzip(_))),
        case("gzip-bad-crc", bad_crc, gzip(&lab), None, true, |p| matches!(p, IdxProblem::Gzip(_))),
    ]
}

fn write_case(dir: &Path, c: &BadCase) -> (PathBuf, PathBuf) {
    let (i, l) = (dir.join(format!("{}-images", c.name)), dir.join(format!("{}-labels", c.name)));
    std::fs::write(&i, &c.images).unwrap();
    std::fs::write(&l, &c.labels).unwrap();
    (i, l)
}

#[test]
fn every_bad_input_class_is_a_typed_error_naming_the_file() {
    let dir = tmp("idx-bad");
    for c in bad_cases() {
        let (i, l) = write_case(&dir, &c);
        let e = load_idx::<f64>(&i, &l, &IdxOptions { n: c.n, standardize: false }).unwrap_err();
        let msg = e.to_string();
        let culprit = if c.culprit_is_images { &i } else { &l };
        assert!(msg.contains(&culprit.display().to_string()), "{}: {msg}", c.name);
        let (file, problem) = idx_problem(e);
        assert_eq!(file, culprit.display().to_string(), "{}", c.name);
        assert!((c.check)(&problem), "{}: {problem:?}", c.name);
    }
    // n = 0 and a missing file are errors too (of the config and I/O kinds).
    let p = write_pair(&dir, "ok", 3, 2, 2, false);
    let e = load::<f64>(&p, Some(0), false).unwrap_err();
    assert!(matches!(e, Error::Config(_)) && e.to_string().contains("n must be at least 1"), "{e}");
    let missing = dir.join("missing.gz");
    let e = load_idx::<f64>(&missing, &p.labels, &IdxOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("missing.gz"), "{e}");
}

#[test]
fn converter_exits_2_naming_the_culprit() {
    let dir = tmp("idx-cli-bad");
    for c in bad_cases() {
        let (i, l) = write_case(&dir, &c);
        let out = dir.join(format!("{}.safetensors", c.name));
        let mut args =
            vec!["data".to_string(), "idx".into(), i.display().to_string(), l.display().to_string()];
        args.extend(["--out".into(), out.display().to_string()]);
        if let Some(n) = c.n {
            args.extend(["--n".into(), n.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let o = noether(&args);
        assert_eq!(o.status.code(), Some(2), "{}: {}", c.name, stderr(&o));
        let culprit = if c.culprit_is_images { &i } else { &l };
        assert!(
            stderr(&o).contains(&format!("IDX file {}", culprit.display())),
            "{}: {}",
            c.name,
            stderr(&o)
        );
        assert!(!out.exists(), "{}: no output on error", c.name);
    }
}

#[test]
fn converter_round_trip_and_refusal_to_overwrite() {
    let dir = tmp("idx-cli");
    let (n, rows, cols) = (9, 5, 3);
    let p = write_pair(&dir, "rt", n, rows, cols, true);
    let (i, l) = (p.images.display().to_string(), p.labels.display().to_string());
    for (extra, take, standardize, f32) in [
        (vec![], n, false, false),
        (vec!["--n", "7", "--standardize"], 7, true, false),
        (vec!["--precision", "f32", "--flat"], n, false, true),
    ] {
        let flat = extra.contains(&"--flat");
        let x_shape =
            if flat { format!("[{take}, {}]", rows * cols) } else { format!("[{take}, 1, {rows}, {cols}]") };
        let out = dir.join(format!("rt-{take}-{standardize}-{f32}.safetensors"));
        let o_s = out.display().to_string();
        let mut args = vec!["data", "idx", &i, &l, "--out", &o_s];
        args.extend(&extra);
        let o = noether(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let line = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(line.lines().count(), 1, "{line}");
        let k = p.y[..take].iter().max().unwrap() + 1;
        for part in [format!("{take} samples"), x_shape, format!("{k} classes"), o_s.clone()] {
            assert!(line.contains(&part), "`{part}` missing from: {line}");
        }
        let (back, shape) = load_dataset_shaped::<f64>(&out).unwrap();
        assert_eq!(shape, if flat { vec![rows * cols] } else { vec![1, rows, cols] });
        let want: Dataset<f64> = if f32 {
            load::<f32>(&p, Some(take), standardize).unwrap().0.cast()
        } else {
            load::<f64>(&p, Some(take), standardize).unwrap().0
        };
        assert_eq!(back, want, "the file holds exactly what load_idx returns");
    }
    // An existing --out is left alone unless --force.
    let out = dir.join("rt-9-false-false.safetensors");
    let o_s = out.display().to_string();
    let before = std::fs::read(&out).unwrap();
    let o = noether(&["data", "idx", &i, &l, "--out", &o_s, "--n", "2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--force") && stderr(&o).contains(&o_s), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), before);
    let o = noether(&["data", "idx", &i, &l, "--out", &o_s, "--n", "2", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(load_dataset_shaped::<f64>(&out).unwrap().0.len(), 2);
}

/// `n` images of 4×4 whose class (0..3) is the bright quadrant (top-left, top-right, bottom), with noise.
fn quadrant_images(n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (mut px, mut y) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let k: u8 = rng.random_range(0..3);
        for r in 0..4 {
            for c in 0..4 {
                let bright = match k {
                    0 => r < 2 && c < 2,
                    1 => r < 2 && c >= 2,
                    _ => r >= 2,
                };
                px.push(if bright { rng.random_range(180..=255) } else { rng.random_range(0..60) });
            }
        }
        y.push(k);
    }
    (px, y)
}

fn loss_column(csv: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let k = header.iter().position(|h| *h == "loss").expect("a loss column");
    lines.map(|l| l.split(',').nth(k).unwrap().parse().unwrap()).collect()
}

#[test]
fn an_idx_config_trains_a_small_mlp() {
    let dir = tmp("idx-train");
    let (px, y) = quadrant_images(60);
    let images = dir.join("train-images.gz");
    let labels = dir.join("train-labels");
    std::fs::write(&images, gzip(&idx_bytes(IDX_IMAGES_MAGIC, &[60, 4, 4], &px))).unwrap();
    std::fs::write(&labels, idx_bytes(IDX_LABELS_MAGIC, &[60], &y)).unwrap();
    let config = |extra: &str, n: usize| {
        format!(
            "seed = 1\nsteps = 300\nlog_every = 50\nlr = 0.1\nloss = \"cross_entropy\"\n\
             [model]\ndims = [16, 8, 3]\nactivation = \"relu\"\n\
             [data]\nkind = \"idx\"\nimages = \"{}\"\nlabels = \"{}\"\nn = {n}\nstandardize = true\n{extra}\
             [optimizer]\nmethod = \"sgd\"\nbatch_size = 8\n",
            images.display(),
            labels.display()
        )
    };
    let cfg = dir.join("idx.toml");
    std::fs::write(&cfg, config("", 48)).unwrap();
    let run = dir.join("run");
    let o = noether(&["train", &cfg.display().to_string(), "--out", &run.display().to_string(), "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let loss = loss_column(&run.join("metrics.csv"));
    let (first, last) = (loss[0], *loss.last().unwrap());
    assert!(last < 0.1 * first, "the cross-entropy should fall by 10×: {first} → {last}");
    // The training data written to the run folder are the first 48 standardised images.
    let (written, _) = load_dataset_shaped::<f64>(&run.join("data.safetensors")).unwrap();
    let opts = IdxOptions { n: Some(48), standardize: true };
    assert_eq!(written, load_idx::<f64>(&images, &labels, &opts).unwrap().0);
    let resolved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(resolved.contains("kind = \"idx\"") && resolved.contains("standardize = true"), "{resolved}");

    // The converter's --flat output feeds the analysis commands with the trained model.
    let flat = dir.join("flat.safetensors").display().to_string();
    let (i, l) = (images.display().to_string(), labels.display().to_string());
    let o = noether(&["data", "idx", &i, &l, "--out", &flat, "--n", "48", "--standardize", "--flat"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let model = run.join("model.safetensors").display().to_string();
    let o = noether(&["analyze", "--model", &model, "--data", &flat, "--loss", "cross_entropy", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Unknown keys in the data section stay errors; so do n beyond the file and a width mismatch.
    for (extra, n, needle) in [
        ("test_images = \"x\"\n", 48, "test_images".to_string()),
        ("", 61, format!("IDX file {}", images.display())),
        ("", 48, "width".to_string()),
    ] {
        let text = config(extra, n);
        let text = if needle == "width" { text.replace("dims = [16,", "dims = [15,") } else { text };
        std::fs::write(&cfg, text).unwrap();
        let o = noether(&[
            "train",
            &cfg.display().to_string(),
            "--out",
            &dir.join("bad").display().to_string(),
            "-q",
        ]);
        assert_eq!(o.status.code(), Some(2), "{needle}: {}", stderr(&o));
        assert!(stderr(&o).contains(&needle), "{needle}: {}", stderr(&o));
    }
}

/// Where Debian's `dataset-fashion-mnist` puts Fashion-MNIST.
const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST from Debian: 60000 training and 10000 test images of 28×28, each class 0..9 exactly a tenth
/// of the samples, every pixel equal to an independent decompression of the file. Skipped when the package is
/// missing, except under `CI=true`, where it fails with the install command.
#[test]
fn fashion_mnist_from_debian() {
    let dir = Path::new(FASHION_MNIST);
    let file = |s: &str| dir.join(format!("{s}-idx{}-ubyte.gz", if s.ends_with("images") { 3 } else { 1 }));
    if !file("train-images").exists() {
        let hint = format!(
            "Fashion-MNIST not found under {FASHION_MNIST}: install it with \
             `apt-get update && apt-get install -y dataset-fashion-mnist`"
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{hint}");
        eprintln!("skipping: {hint}");
        return;
    }
    for (split, n) in [("train", 60000), ("t10k", 10000)] {
        let (images, labels) = (file(&format!("{split}-images")), file(&format!("{split}-labels")));
        let t = std::time::Instant::now();
        let (d, shape) = load_idx::<f32>(&images, &labels, &IdxOptions::default()).unwrap();
        eprintln!(
            "{split}: {} images of {shape:?} loaded in {:.2} s (f32)",
            d.len(),
            t.elapsed().as_secs_f64()
        );
        assert_eq!((d.len(), d.d_in(), shape), (n, 784, vec![1, 28, 28]));
        let mut counts = [0usize; 10];
        classes(&d).iter().for_each(|&k| counts[k] += 1);
        assert_eq!(counts, [n / 10; 10], "{split}: class counts");
        if split == "t10k" {
            let mut raw = Vec::new();
            let f = std::fs::File::open(&images).unwrap();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(f), &mut raw).unwrap();
            assert_eq!(raw.len(), 16 + n * 784);
            for i in 0..n {
                for j in 0..784 {
                    assert_eq!(d.x[(i, j)], raw[16 + i * 784 + j] as f32 / 255.0, "image {i}, pixel {j}");
                }
            }
        }
    }
}

#[test]
fn standardising_one_sample_is_an_error_and_the_summary_names_the_classes_present() {
    let dir = tmp("idx-one");
    let px: Vec<u8> = (0..3 * 4).map(|i| (i * 37 % 256) as u8).collect();
    let (images, labels) = (dir.join("images"), dir.join("labels"));
    std::fs::write(&images, idx_bytes(IDX_IMAGES_MAGIC, &[3, 2, 2], &px)).unwrap();
    std::fs::write(&labels, idx_bytes(IDX_LABELS_MAGIC, &[3], &[9, 2, 9])).unwrap();
    let e = load_idx::<f64>(&images, &labels, &IdxOptions { n: Some(1), standardize: true }).unwrap_err();
    assert!(matches!(e, Error::Config(_)) && e.to_string().contains("standardize needs n ≥ 2"), "{e}");
    let (i, l) = (images.display().to_string(), labels.display().to_string());
    let out = dir.join("one.safetensors");
    let o_s = out.display().to_string();
    let o = noether(&["data", "idx", &i, &l, "--out", &o_s, "--n", "1", "--standardize"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--standardize") && stderr(&o).contains("--n 1"), "{}", stderr(&o));
    assert!(!out.exists());
    // Two samples with labels {9, 2}: not "10 classes".
    let o = noether(&["data", "idx", &i, &l, "--out", &o_s, "--n", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(line.contains("labels 0–9 (2 of those 10 classes present)"), "{line}");
    // A training config with n = 1 and standardize names both.
    let cfg = dir.join("one.toml");
    std::fs::write(
        &cfg,
        format!(
            "steps = 5\nlr = 0.1\nloss = \"cross_entropy\"\n[model]\ndims = [4, 10]\n\
             [data]\nkind = \"idx\"\nimages = \"{i}\"\nlabels = \"{l}\"\nn = 1\nstandardize = true\n\
             [optimizer]\nmethod = \"gd\"\n"
        ),
    )
    .unwrap();
    let run = dir.join("run").display().to_string();
    let o = noether(&["train", &cfg.display().to_string(), "--out", &run, "-q"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("standardize") && stderr(&o).contains("n = 1"), "{}", stderr(&o));
}
