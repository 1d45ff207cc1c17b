use crate::reference;
use noether::testutil::{fd_grad, max_rel_vec, random_case, rel};
use noether::{Activation, Loss};

#[test]
fn gradients_match_finite_differences_for_every_layer_kind() {
    let mut seed = 0;
    for act in Activation::all() {
        for loss in [Loss::Mse, Loss::CrossEntropy] {
            for bias in [false, true] {
                for norm in [[false, false, false], [true, false, false], [false, true, true]] {
                    seed += 1;
                    let acts = [act, act, Activation::Identity];
                    let (model, data) = random_case(&[4, 5, 3, 3], &acts, bias, &norm, loss, 7, seed);
                    let (_, g) = model.loss_and_grad(&data, loss, 3).unwrap();
                    let fd = fd_grad(&model, &data, loss, 1e-5);
                    let err = max_rel_vec(&g, &fd);
                    assert!(err < 1e-7, "{act:?} {loss:?} bias={bias} norm={norm:?}: rel err {err:e}");
                }
            }
        }
    }
}

#[test]
fn loss_and_gradient_match_reference_cases() {
    for case in reference::all() {
        let (l, g) = case.model.loss_and_grad(&case.data, case.loss, 16).unwrap();
        let want = case.json["loss_value"].as_f64().unwrap();
        assert!(rel(l, want, 1e-300) < 1e-10, "{}: loss {l} vs {want}", case.name);
        let gn = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        let want = case.json["grad_norm"].as_f64().unwrap();
        assert!(rel(gn, want, 1e-300) < 1e-10, "{}: |grad| {gn} vs {want}", case.name);
        for (i, w) in case.json["grad_first5"].as_array().unwrap().iter().enumerate() {
            let w = w.as_f64().unwrap();
            assert!((g[i] - w).abs() <= 1e-10 * gn, "{}: grad[{i}] {} vs {w}", case.name, g[i]);
        }
    }
}

#[test]
fn chunking_does_not_change_results() {
    let (model, data) = random_case(
        &[3, 6, 2],
        &[Activation::Relu, Activation::Identity],
        true,
        &[false, false],
        Loss::Mse,
        23,
        5,
    );
    let (l1, g1) = model.loss_and_grad(&data, Loss::Mse, 23).unwrap();
    let (l2, g2) = model.loss_and_grad(&data, Loss::Mse, 4).unwrap();
    assert!(rel(l1, l2, 1e-300) < 1e-14);
    assert!(max_rel_vec(&g1, &g2) < 1e-14);
}

#[test]
fn f32_engine_agrees_with_f64() {
    let (model, data) = random_case(
        &[5, 8, 3],
        &[Activation::Tanh, Activation::Identity],
        true,
        &[false, false],
        Loss::CrossEntropy,
        30,
        9,
    );
    let (l64, g64) = model.loss_and_grad(&data, Loss::CrossEntropy, 30).unwrap();
    let (l32, g32) = model.cast::<f32>().loss_and_grad(&data.cast::<f32>(), Loss::CrossEntropy, 30).unwrap();
    assert!(rel(l32, l64, 1e-300) < 1e-5);
    assert!(max_rel_vec(&g32, &g64) < 1e-4);
}

/// The generic SGD path's mean loss and mean gradient ĝ over the samples `rows`: the trainer's
/// [`noether::dynamics::Trainable`] batch gradient of a dense chain, on the module-tree tape of
/// `NetArch::from_dense` (the reference for the specialised step kernels).
fn tape_batch_gradient<T: noether::Real>(
    model: &noether::Model<T>,
    data: &noether::data::Dataset<T>,
    rows: &[usize],
    loss: Loss,
) -> (f64, Vec<T>) {
    use noether::dynamics::Trainable;
    let mut tape = model.tape(rows.len()).unwrap();
    let mut g = vec![T::from_f64(f64::NAN); model.arch.n_params()];
    let l = model.batch_grad_into(&mut tape, noether::data::Batch::Rows(data, rows), loss, &mut g).unwrap();
    (l, g)
}

/// One step of the fused small-batch SGD path against the generic one on the net tape (forward, backward,
/// then `sgd_update_in_place`) for every activation, both losses, with and without bias, B = 1 to
/// `FUSED_MAX_BATCH`, widths that leave vector tails (7, 9, 5), f64 and f32: same θ and same ĝ up to
/// round-off; without recording ĝ the update is bit-identical to the recorded one.
#[test]
fn fused_small_batch_step_matches_the_tape() {
    use noether::linalg::sgd_update_in_place;
    use noether::model::{SmallBatchStep, FUSED_MAX_BATCH};
    use noether::Real;
    fn one<T: Real>(tol: f64) {
        let mut seed = 100;
        for act in Activation::all() {
            for loss in [Loss::Mse, Loss::CrossEntropy] {
                for bias in [false, true] {
                    for b in 1..=FUSED_MAX_BATCH {
                        seed += 1;
                        let acts = [act, act, Activation::Identity];
                        let (m64, d64) = random_case(&[7, 9, 5, 3], &acts, bias, &[false; 3], loss, 11, seed);
                        let (model, data) = (m64.cast::<T>(), d64.cast::<T>());
                        let rows: Vec<usize> = (0..b).map(|i| (i * 5 + seed as usize) % 11).collect();
                        let (eta, wd) = (T::from_f64(0.1), T::from_f64(0.01));
                        let (l_tape, g_tape) = tape_batch_gradient(&model, &data, &rows, loss);
                        let mut theta_tape = model.params.clone();
                        sgd_update_in_place(&mut theta_tape, &g_tape, eta, wd);

                        assert!(SmallBatchStep::<T>::supports(&model.arch, b));
                        let mut fused = SmallBatchStep::<T>::new(&model.arch, b);
                        let (mut theta, mut g) =
                            (model.params.clone(), vec![T::zero(); model.arch.n_params()]);
                        fused.load_rows(&data, &rows);
                        let l = fused.step(&mut theta, &mut g, true, loss, eta, wd);
                        let mut theta_norec = model.params.clone();
                        let mut scratch = vec![T::zero(); model.arch.n_params()];
                        fused.step(&mut theta_norec, &mut scratch, false, loss, eta, wd);

                        let f = |v: &[T]| v.iter().map(|x| x.to_f64()).collect::<Vec<_>>();
                        let what = format!("{act:?} {loss:?} bias={bias} B={b}");
                        assert!(rel(l, l_tape, 1e-3) < tol, "{what}: loss {l} vs {l_tape}");
                        let eg = max_rel_vec(&f(&g), &f(&g_tape));
                        let et = max_rel_vec(&f(&theta), &f(&theta_tape));
                        assert!(eg < tol && et < tol, "{what}: ĝ rel err {eg:e}, θ rel err {et:e}");
                        assert_eq!(theta, theta_norec, "{what}: recording ĝ changed the update");
                    }
                }
            }
        }
    }
    one::<f64>(1e-13);
    one::<f32>(1e-5);
}

/// The Gram-form step of bias-free linear chains gives the generic net-tape path's ĝ and loss, for depths
/// 2–4, both losses, f64 and f32, and every batch source (rows of the data set, of its sample-major copy, an
/// online batch).
#[test]
fn linear_chain_step_matches_the_tape() {
    use noether::data::{Batch, SampleMajor};
    use noether::model::LinearChainStep;
    use noether::Real;
    fn one<T: Real>(tol: f64) {
        let mut seed = 300;
        for dims in [&[6, 9, 4][..], &[7, 5, 8, 3], &[5, 6, 4, 7, 3]] {
            for loss in [Loss::Mse, Loss::CrossEntropy] {
                seed += 1;
                let b = 23;
                let acts = vec![Activation::Identity; dims.len() - 1];
                let norm = vec![false; dims.len() - 1];
                let (m64, d64) = random_case(dims, &acts, false, &norm, loss, 40, seed);
                let (model, data) = (m64.cast::<T>(), d64.cast::<T>());
                let rows: Vec<usize> = (0..b).map(|i| (i * 7 + seed as usize) % 40).collect();
                let (l_tape, g_tape) = tape_batch_gradient(&model, &data, &rows, loss);

                assert!(
                    LinearChainStep::<T>::supports(&model.arch, b),
                    "{dims:?}: Gram form cheaper at B = {b}"
                );
                let mut chain = LinearChainStep::<T>::new(&model.arch, b);
                let sm = SampleMajor::new(&data);
                let first = data.select(&rows);
                for (src, batch) in [
                    ("rows", Batch::Rows(&data, &rows)),
                    ("sample-major", Batch::SampleMajorRows(&sm, &rows)),
                    ("first", Batch::First(&first, b)),
                ] {
                    let mut g = vec![T::from_f64(f64::NAN); model.arch.n_params()];
                    chain.load_batch(batch);
                    let l = chain.gradient(&model.params, &mut g, loss);
                    let f = |v: &[T]| v.iter().map(|x| x.to_f64()).collect::<Vec<_>>();
                    let what = format!("{dims:?} {loss:?} {src}");
                    assert!(rel(l, l_tape, 1e-3) < tol, "{what}: loss {l} vs {l_tape}");
                    let eg = max_rel_vec(&f(&g), &f(&g_tape));
                    assert!(eg < tol, "{what}: ĝ rel err {eg:e}");

                    // The fused update: bit for bit θ − η·ĝ (every product here runs the small kernels).
                    let eta = T::from_f64(0.05);
                    let mut theta = model.params.clone();
                    noether::linalg::sgd_update_in_place(&mut theta, &g, eta, T::zero());
                    let mut fused = model.params.clone();
                    let l_fused = chain.sgd_step(&mut fused, loss, eta);
                    assert_eq!(l_fused.to_bits(), l.to_bits(), "{what}: fused step's loss");
                    assert_eq!(fused, theta, "{what}: fused update differs from θ − η·ĝ");
                }
            }
        }
    }
    one::<f64>(1e-12);
    one::<f32>(1e-4);
}

/// The trainer's Gram-form SGD step without a recorded direction (the products update θ, ĝ is never
/// stored) follows the same trajectory, bit for bit, as with ĝ recorded and the separate update pass: the
/// paper's 30-40-30 net at S = 64 over 50 steps, f64, on the benchmark's path. A non-finite loss leaves θ
/// untouched.
#[test]
fn linear_chain_fused_update_follows_the_recorded_trajectory() {
    use noether::data::Sampling;
    use noether::dynamics::{Method, TrainConfig, TrainData, Trainer};
    use noether::model::{LinearChainStep, ModelSpec};
    use rand::SeedableRng;
    let spec = ModelSpec::from_compact("30-40-30", Activation::Identity, false).unwrap();
    let sgd = Method::Sgd { batch_size: 64, sampling: Sampling::WithReplacement };
    let config = TrainConfig::new(spec.clone(), sgd, 0.01, 50).with_loss(Loss::Mse);
    let acts = [Activation::Identity; 2];
    let (_, data) = random_case(&[30, 40, 30], &acts, false, &[false; 2], Loss::Mse, 256, 7);
    let trainer = |record: bool| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let model = spec.build::<f64, _>(&mut rng).unwrap();
        let mut t = Trainer::new(model, TrainData::Finite(data.clone()), &config, rng).unwrap();
        t.record_direction(record);
        t
    };
    let (mut rec, mut fused) = (trainer(true), trainer(false));
    assert!(LinearChainStep::<f64>::supports(&rec.model.arch, 64));
    for step in 0..50 {
        rec.step().unwrap();
        fused.step().unwrap();
        assert_eq!(fused.last_loss().to_bits(), rec.last_loss().to_bits(), "loss at step {step}");
        assert_eq!(fused.model.params, rec.model.params, "θ at step {step}");
        assert!(rec.last_direction().is_some() && fused.last_direction().is_none());
    }
    assert_ne!(fused.model.params, trainer(false).model.params, "the steps moved θ");

    let mut chain = LinearChainStep::<f64>::new(&rec.model.arch, 64);
    let rows: Vec<usize> = (0..64).collect();
    chain.load_batch(noether::data::Batch::Rows(&data, &rows));
    let mut theta = rec.model.params.clone();
    theta[5] = f64::INFINITY;
    let before: Vec<u64> = theta.iter().map(|v| v.to_bits()).collect();
    assert!(!chain.sgd_step(&mut theta, Loss::Mse, 0.01).is_finite());
    assert_eq!(theta.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), before, "θ touched on divergence");
}

/// The Gram form is taken exactly where it needs fewer multiply-adds: the paper's 30-40-30 net from B = 16
/// on (223k against 384k at B = 64), never with a bias, a nonlinearity or a single layer.
#[test]
fn linear_chain_step_is_chosen_by_multiply_adds() {
    use noether::model::{gram_step_fmas, layered_step_fmas, Architecture, LinearChainStep};
    let id = Activation::Identity;
    let arch = |dims: &[usize], act: Activation, bias: bool| {
        let n = dims.len() - 1;
        let mut acts = vec![act; n];
        acts[n - 1] = id;
        Architecture::new(dims, &acts, &vec![bias; n], &vec![false; n]).unwrap()
    };
    let paper = arch(&[30, 40, 30], id, false);
    assert_eq!(gram_step_fmas(&paper, 64), 2 * 64 * 900 + 3 * 36_000);
    assert_eq!(layered_step_fmas(&paper, 64), 5 * 64 * 1200);
    assert!(LinearChainStep::<f64>::supports(&paper, 64));
    assert!(!LinearChainStep::<f64>::supports(&paper, 4), "weight products dominate at B = 4");
    assert!(!LinearChainStep::<f64>::supports(&arch(&[30, 40, 30], id, true), 64), "bias");
    assert!(!LinearChainStep::<f64>::supports(&arch(&[30, 40, 30], Activation::Relu, false), 64), "relu");
    assert!(!LinearChainStep::<f64>::supports(&arch(&[30, 30], id, false), 64), "one layer");
}

/// The sample-major copy gathers the same rows as the data set (the net tape's loading of it from every
/// source is checked in `net_tape_loads_every_batch_source_alike`).
#[test]
fn sample_major_gather_matches_the_data_set() {
    use noether::data::SampleMajor;
    for loss in [Loss::Mse, Loss::CrossEntropy] {
        let (_, data) = random_case(
            &[5, 7, 3],
            &[Activation::Relu, Activation::Identity],
            true,
            &[false; 2],
            loss,
            30,
            9,
        );
        let rows: Vec<usize> = (0..11).map(|i| (i * 13 + 4) % 30).collect();
        let sm = SampleMajor::new(&data);
        assert_eq!(sm.len(), 30);
        let mut rm = vec![0.0; 11 * 5];
        sm.gather_x(&rows, faer::MatMut::from_row_major_slice_mut(&mut rm, 11, 5));
        assert_eq!(faer::MatRef::from_row_major_slice(&rm, 11, 5), data.select(&rows).x.as_ref());
    }
}

/// The net tape of a dense chain (what SGD trains on) loads a minibatch alike from every source: `load` by
/// index, and `load_batch` of data-set rows, of the sample-major copy and of an online batch's first samples
/// give the same inputs and, after forward, the same per-sample losses, bit for bit, and those agree with
/// the dense tape's. A batch over the capacity, a label out of range, targets of the wrong width and a
/// sample-major batch for an image input are typed errors.
#[test]
fn net_tape_loads_every_batch_source_alike() {
    use noether::data::{Batch, Dataset, SampleMajor, Targets};
    use noether::net::{NetArch, Rows, Tape};
    use noether::Error;
    let acts = [Activation::Relu, Activation::Identity];
    for loss in [Loss::Mse, Loss::CrossEntropy] {
        let (model, data) = random_case(&[5, 7, 3], &acts, true, &[false; 2], loss, 30, 9);
        let arch = NetArch::from_dense(&model.arch).unwrap();
        let rows: Vec<usize> = (0..11).map(|i| (i * 13 + 4) % 30).collect();
        let (sm, first) = (SampleMajor::new(&data), data.select(&rows));
        let run = |load: &dyn Fn(&mut Tape<f64>) -> noether::Result<()>| {
            let mut tape = Tape::new(&arch, 16);
            load(&mut tape).unwrap();
            assert_eq!(tape.batch(), 11);
            tape.forward(&model.params);
            let mut l = vec![0.0; 11];
            tape.losses_into(loss, &mut l);
            (tape.act(0).to_vec(), l)
        };
        let want = run(&|t| t.load(&data, Rows::Index(&rows)));
        for (src, batch) in [
            ("rows", Batch::Rows(&data, &rows)),
            ("sample-major", Batch::SampleMajorRows(&sm, &rows)),
            ("first", Batch::First(&first, 11)),
        ] {
            assert_eq!(run(&|t| t.load_batch(batch)), want, "{loss:?} {src}");
        }
        let dense = model.per_sample_losses(&first, loss, 16).unwrap();
        assert!(max_rel_vec(&want.1, &dense) < 1e-14, "{loss:?}: net tape against the dense tape");

        let mut tape = Tape::new(&arch, 4);
        let e = tape.load_batch(Batch::SampleMajorRows(&sm, &rows)).unwrap_err();
        assert!(matches!(e, Error::Config(_)) && e.to_string().contains("capacity"), "{e}");
    }
    let (model, data) = random_case(&[5, 7, 3], &acts, true, &[false; 2], Loss::CrossEntropy, 30, 9);
    let arch = NetArch::from_dense(&model.arch).unwrap();
    let mut tape = Tape::<f64>::new(&arch, 16);
    let bad = Dataset::new(data.x.clone(), Targets::Classes((0..30).map(|n| n % 4).collect())).unwrap();
    let e = tape.load_batch(Batch::SampleMajorRows(&SampleMajor::new(&bad), &[0, 3])).unwrap_err();
    assert!(matches!(e, Error::Data(_)) && e.to_string().contains("label 3 of sample 3"), "{e}");
    let wide = Dataset::new(data.x.clone(), Targets::Dense(faer::Mat::zeros(30, 4))).unwrap();
    assert!(tape.load_batch(Batch::Rows(&wide, &[0, 1])).is_err(), "targets 4 wide for 3 outputs");
    let net = crate::net::net_for(crate::net::KINDS_ARCH, 1);
    let images = crate::net::data_for(&net.arch, 8, Loss::CrossEntropy, 2);
    let mut tape = Tape::<f64>::new(&net.arch, 8);
    let e = tape.load_batch(Batch::SampleMajorRows(&SampleMajor::new(&images), &[0, 1])).unwrap_err();
    assert!(matches!(e, Error::Config(_)) && e.to_string().contains("image"), "{e}");
    tape.load_batch(Batch::Rows(&images, &[0, 1])).unwrap();
}

/// faer's parallel GEMM splits the output, not the inner sum: a pass on two threads gives bit-identical
/// gradients to the sequential pass (so results of the analysis passes do not depend on the core count).
#[test]
fn parallel_passes_are_bit_identical_to_sequential() {
    let acts = [Activation::Relu, Activation::Tanh, Activation::Identity];
    let (model, data) =
        random_case(&[96, 128, 160, 10], &acts, true, &[false, true, false], Loss::CrossEntropy, 300, 5);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let arch = noether::net::NetArch::from_dense(&model.arch).unwrap();
    let net_grad_with = |par: faer::Par| {
        let mut tape = noether::net::Tape::new(&arch, 300).with_par(par);
        tape.load(&data, noether::net::Rows::Range(0..300)).unwrap();
        tape.forward(&model.params);
        tape.loss_grad(Loss::CrossEntropy);
        let mut g = vec![f64::NAN; model.arch.n_params()];
        tape.backward_into(&model.params, &mut g, 1.0);
        g
    };
    let net_par = pool.install(|| net_grad_with(faer::Par::rayon(2)));
    assert_eq!(net_par, net_grad_with(faer::Par::Seq));
}
