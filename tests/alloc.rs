//! The step loop allocates nothing: a counting global allocator (declared in tests.rs) with a thread-local
//! counter, so tests running in parallel on other threads do not interfere.

use noether::dynamics::{TrainConfig, Trainable, Trainer};
use noether::net::Net;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// `System` plus a per-thread count of allocations (alloc, alloc_zeroed and realloc).
pub struct Counting;

fn count() {
    // `try_with`: the thread-local may already be gone while a thread shuts down.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is forwarded unchanged to `System`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
}

fn allocations() -> u64 {
    ALLOCATIONS.with(|c| c.get())
}

/// Allocations made by this thread during 100 steps, after 5 warm-up steps.
fn allocations_per_100_steps(toml: &str) -> u64 {
    allocations_per_100_steps_of::<noether::Model<f64>>(toml)
}

/// [`allocations_per_100_steps`] for a trainer of `M` (a dense chain or a module tree).
fn allocations_per_100_steps_of<M: Trainable<f64>>(toml: &str) -> u64 {
    let config = TrainConfig::from_toml(toml).unwrap();
    let mut trainer = Trainer::<f64, M>::from_config(&config).unwrap();
    for _ in 0..5 {
        trainer.step().unwrap();
    }
    let before = allocations();
    for _ in 0..100 {
        trainer.step().unwrap();
    }
    allocations() - before
}

fn config(model: &str, data: &str, optimizer: &str, loss: &str) -> String {
    format!(
        "seed = 3\nsteps = 1000\nlr = 0.01\nweight_decay = 1e-3\nloss = \"{loss}\"\n[model]\n{model}\n[data]\n{data}\n\
         [optimizer]\n{optimizer}\n"
    )
}

const LINEAR: &str = "dims = [6, 8, 5]\nactivation = \"identity\"\nbias = false";
const MLP: &str = "dims = [6, 8, 8, 5]\nactivation = \"relu\"\nbias = true";
/// Large enough that its GEMMs go to faer's matmul rather than the fused small loops (`m·n·k` above
/// `linalg::SMALL_GEMM_MAX_MNK_AVX2` at S = 32).
const WIDE: &str = "dims = [80, 128, 128, 5]\nactivation = \"tanh\"\nbias = true";
/// 63 MFLOP per pass at S = 48: above `linalg::PAR_MIN_FLOPS` (analysis passes use both cores), below
/// `linalg::STEP_PAR_MIN_FLOPS` (a training step stays sequential and allocation-free).
const PARALLEL: &str = "dims = [256, 512, 256]\nactivation = \"relu\"\nbias = true";
const FINITE: &str = "kind = \"teacher\"\nn = 50\nteacher = { map = \"random\" }";
const ONLINE: &str = "kind = \"teacher\"\neval_n = 20\nteacher = { map = \"random\" }";

#[test]
fn counting_allocator_sees_allocations() {
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 10]);
    assert!(allocations() > before);
    drop(v);
}

#[test]
fn sgd_step_allocates_nothing_on_finite_data() {
    // LINEAR at S = 1 takes the fused step, at S = 7 and 32 the Gram-form linear-chain step.
    for (model, batch) in [(LINEAR, 1), (LINEAR, 7), (LINEAR, 32), (MLP, 16), (WIDE, 32), (PARALLEL, 48)] {
        for sampling in ["with_replacement", "without_replacement"] {
            let opt = format!("method = \"sgd\"\nbatch_size = {batch}\nsampling = \"{sampling}\"");
            assert_eq!(
                allocations_per_100_steps(&config(model, FINITE, &opt, "mse")),
                0,
                "{model} S={batch}"
            );
        }
    }
}

#[test]
fn sgd_step_allocates_nothing_on_online_teacher_data() {
    for batch in [1, 8] {
        let opt = format!("method = \"sgd\"\nbatch_size = {batch}");
        for model in [MLP, LINEAR] {
            assert_eq!(
                allocations_per_100_steps(&config(model, ONLINE, &opt, "mse")),
                0,
                "{model} S={batch}"
            );
        }
    }
}

#[test]
fn gd_sde_and_gradient_flow_steps_allocate_nothing() {
    for opt in ["method = \"gd\"", "method = \"sde\"\nbatch_size = 4"] {
        for model in [LINEAR, MLP, WIDE] {
            assert_eq!(allocations_per_100_steps(&config(model, FINITE, opt, "mse")), 0, "{opt} {model}");
        }
    }
    // Gradient flow takes its gradients through the same full-data pass as GD (covered on WIDE above). The
    // tolerance is loose because MLP is a relu net, whose flow has kinks (see `Method::GradientFlow`).
    for opt in ["method = \"gradient_flow\"\nsubsteps = 2", "method = \"gradient_flow\"\ntolerance = 1e-6"] {
        for model in [LINEAR, MLP] {
            assert_eq!(allocations_per_100_steps(&config(model, FINITE, opt, "mse")), 0, "{opt} {model}");
        }
    }
}

/// A conv net and a residual net as `[model] layers` (the cases of `train_net`), on teacher or file data.
fn tree_model(arch: &str) -> String {
    arch.replace("[[layers]]", "[[model.layers]]").replace("[[layers.body]]", "[[model.layers.body]]")
}

#[test]
fn tree_steps_allocate_nothing() {
    let d = crate::cli::tmp("alloc-tree");
    let data = d.join("images.safetensors");
    let images = crate::train_net::class_data(24, 72, 3, 1);
    noether::data::save_dataset_shaped(&images, &[2, 6, 6], &data).unwrap();
    let conv_data = format!("kind = \"file\"\npath = \"{}\"", data.display());
    let res_data = "kind = \"teacher\"\nn = 24\nteacher = { map = \"random\" }";
    let opts = [
        "method = \"sgd\"\nbatch_size = 4",
        "method = \"sgd\"\nbatch_size = 4\nsampling = \"without_replacement\"",
        "method = \"gd\"",
        "method = \"sde\"\nbatch_size = 4",
        "method = \"gradient_flow\"\nsubsteps = 2",
        "method = \"gradient_flow\"\ntolerance = 1e-5",
    ];
    for opt in opts {
        let conv = tree_config(&tree_model(crate::train_net::CONV), &conv_data, opt, "cross_entropy");
        assert_eq!(allocations_per_100_steps_of::<Net<f64>>(&conv), 0, "conv {opt}");
        let res = tree_config(&tree_model(crate::train_net::RESIDUAL), res_data, opt, "mse");
        assert_eq!(allocations_per_100_steps_of::<Net<f64>>(&res), 0, "residual {opt}");
    }
    let online = "kind = \"teacher\"\neval_n = 20\nteacher = { map = \"random\" }";
    let res = tree_config(
        &tree_model(crate::train_net::RESIDUAL),
        online,
        "method = \"sgd\"\nbatch_size = 4",
        "mse",
    );
    assert_eq!(allocations_per_100_steps_of::<Net<f64>>(&res), 0, "residual online");
}

/// [`config`] with the `[model]` body first (its `[[model.layers]]` tables follow the config's keys).
fn tree_config(model: &str, data: &str, optimizer: &str, loss: &str) -> String {
    format!(
        "seed = 3\nsteps = 1000\nlr = 0.01\nweight_decay = 1e-3\nloss = \"{loss}\"\n[model]\n{}\n[data]\n{data}\n\
         [optimizer]\n{optimizer}\n",
        model.trim_start()
    )
}

#[test]
fn tree_curvature_products_allocate_nothing_after_the_first() {
    use noether::curvature::NetHessian;
    use noether::curvature::{Curvature, LinearOperator};
    use noether::net::{Rows, Tape};
    use noether::Loss;
    for text in [crate::net::KINDS_ARCH, crate::net::RESIDUAL_ARCH] {
        let net = crate::net::net_for(text, 1);
        let data = crate::net::data_for(&net.arch, 20, Loss::CrossEntropy, 2);
        let p = net.params.len();
        let v: Vec<f64> = (0..p).map(|i| ((i * 7 % 13) as f64 - 6.0) / 6.0).collect();
        let mut out = vec![0.0; p];
        // The tape's products (this thread): the first one allocates the R-operator buffers.
        let mut tape = Tape::new(&net.arch, 8);
        tape.load(&data, Rows::Range(0..8)).unwrap();
        tape.ggn_vp(&net.params, &v, Loss::CrossEntropy, &mut out, 0.1);
        tape.hvp(&net.params, &v, Loss::CrossEntropy, &mut out, 0.1);
        let before = allocations();
        for _ in 0..10 {
            tape.ggn_vp(&net.params, &v, Loss::CrossEntropy, &mut out, 0.1);
            tape.hvp(&net.params, &v, Loss::CrossEntropy, &mut out, 0.1);
        }
        assert_eq!(allocations() - before, 0, "tape products");
        // The operator's side on this thread (the lanes run on rayon's threads).
        for curvature in [Curvature::GaussNewton, Curvature::Hessian] {
            let mut op = NetHessian::with_curvature(&net, &data, Loss::CrossEntropy, curvature).unwrap();
            op.apply_into(&v, &mut out);
            let before = allocations();
            for _ in 0..10 {
                op.apply_into(&v, &mut out);
            }
            assert_eq!(allocations() - before, 0, "{curvature:?} operator");
        }
    }
}
