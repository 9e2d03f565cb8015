//! The trainer through its public API: finite-difference gradient checks of every loss variant,
//! agreement of the sparse and dense decoder paths, and training behaviour on synthetic data.

use bsa::convergence::{Monitor, Schedule};
use bsa::model::{LossKind, Method, ModelConfig, Params, Target};
use bsa::train::{
    CodeMode, DecoderPath, Neighbourhood, PhaseTimer, Progress, TrainParams, loss_and_grad,
    loss_and_grad_with,
};
use ndarray::{Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;

fn gaussian(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    Array2::from_shape_simple_fn((rows, cols), || rng.sample(StandardNormal))
}

fn value(p: &Params<f64>, x: ArrayView2<f64>, cfg: &ModelConfig, nb: &Neighbourhood) -> f64 {
    let mut t = PhaseTimer::default();
    loss_and_grad_with(
        p,
        x,
        cfg,
        nb,
        CodeMode::Identity,
        DecoderPath::Dense,
        None,
        &mut t,
    )
    .loss
}

/// The tiny model of the gradient checks: D=6, N=10, K=3.
fn tiny(method: Method, loss: LossKind, target: Target, alpha: f64) -> ModelConfig {
    ModelConfig {
        dim: 6,
        bits: 10,
        k: 3,
        method,
        loss,
        alpha,
        target,
    }
}

/// Weights for [`tiny`], larger than the default init so the sigmoid is far from linear and the
/// TopK choices are well separated.
fn tiny_params(seed: u64) -> Params<f64> {
    let mut p = Params::<f64>::init(10, 6, seed);
    p.we.mapv_inplace(|v| v * 4.0);
    p.be.mapv_inplace(|v| v * 4.0);
    p
}

/// Central differences on every weight of a tiny model (D=6, N=10, K=3) in f64, with the code
/// function replaced by the identity (what the straight-through estimator differentiates).
fn gradcheck(method: Method, loss: LossKind, target: Target, alpha: f64) {
    gradcheck_with(method, loss, target, alpha, Neighbourhood::default());
}

fn gradcheck_with(method: Method, loss: LossKind, target: Target, alpha: f64, nb: Neighbourhood) {
    gradcheck_rows(method, loss, target, alpha, nb, 5);
}

/// [`gradcheck_with`] on a batch of `rows` rows.
fn gradcheck_rows(
    method: Method,
    loss: LossKind,
    target: Target,
    alpha: f64,
    nb: Neighbourhood,
    rows: usize,
) {
    let cfg = tiny(method, loss, target, alpha);
    let x = gaussian(rows, 6, 1);
    let p = tiny_params(2);
    let mut g = Params::<f64>::zeros(10, 6);
    let mut t = PhaseTimer::default();
    let l = loss_and_grad_with(
        &p,
        x.view(),
        &cfg,
        &nb,
        CodeMode::Identity,
        DecoderPath::Dense,
        Some(&mut g),
        &mut t,
    );
    assert_eq!(l.neighbour > 0.0, nb.weight > 0.0, "{l:?}");

    let eps = 1e-6;
    let mut worst: f64 = 0.0;
    let mut check = |name: &str, get: &dyn Fn(&mut Params<f64>) -> &mut f64, analytic: f64| {
        let mut plus = p.clone();
        *get(&mut plus) += eps;
        let mut minus = p.clone();
        *get(&mut minus) -= eps;
        let fd =
            (value(&plus, x.view(), &cfg, &nb) - value(&minus, x.view(), &cfg, &nb)) / (2.0 * eps);
        let err = (fd - analytic).abs() / fd.abs().max(analytic.abs()).max(1e-3);
        worst = worst.max(err);
        assert!(
            err < 1e-5,
            "{method}/{loss}/{target}/alpha={alpha}/{nb:?}: d/d{name}: finite difference {fd:e}, analytic {analytic:e}"
        );
    };
    for i in 0..10 {
        for j in 0..6 {
            check("we", &|q| &mut q.we[[i, j]], g.we[[i, j]]);
            check("wd", &|q| &mut q.wd_t[[i, j]], g.wd_t[[i, j]]);
        }
        check("be", &|q| &mut q.be[i], g.be[i]);
    }
    for j in 0..6 {
        check("bd", &|q| &mut q.bd[j], g.bd[j]);
    }
    // The gradient must not be trivially zero.
    assert!(g.we.iter().any(|v| v.abs() > 1e-6) && g.wd_t.iter().any(|v| v.abs() > 1e-6));
    assert!(worst < 1e-5);
}

#[test]
fn gradients_cosine_khot_with_alignment() {
    gradcheck(Method::Bsa, LossKind::Cosine, Target::Khot, 1.0);
}

#[test]
fn gradients_cosine_masked_with_alignment() {
    gradcheck(Method::Bsa, LossKind::Cosine, Target::Masked, 1.0);
}

#[test]
fn gradients_cosine_without_alignment() {
    gradcheck(Method::Bsa, LossKind::Cosine, Target::Khot, 0.0);
}

#[test]
fn gradients_mse_khot_with_alignment() {
    gradcheck(Method::Bsa, LossKind::Mse, Target::Khot, 1.0);
}

#[test]
fn gradients_mse_masked_with_alignment() {
    gradcheck(Method::Bsa, LossKind::Mse, Target::Masked, 1.0);
}

#[test]
fn gradients_mse_without_alignment() {
    gradcheck(Method::Bsa, LossKind::Mse, Target::Khot, 0.0);
}

#[test]
fn gradients_unequal_alpha() {
    gradcheck(Method::Bsa, LossKind::Cosine, Target::Khot, 0.37);
}

#[test]
fn gradients_topk_method() {
    // TopK ignores alpha: the check passes only if no alignment term leaks into the gradient.
    gradcheck(Method::Topk, LossKind::Cosine, Target::Khot, 1.0);
    gradcheck(Method::Topk, LossKind::Mse, Target::Masked, 1.0);
}

#[test]
fn gradients_with_neighbourhood_term() {
    // On 4 of the 5 rows, so the sub-batch slicing is checked too.
    let nb = Neighbourhood {
        weight: 0.7,
        rows: 4,
    };
    gradcheck_with(Method::Bsa, LossKind::Cosine, Target::Khot, 1.0, nb);
    gradcheck_with(Method::Bsa, LossKind::Mse, Target::Masked, 0.0, nb);
    gradcheck_with(Method::Topk, LossKind::Cosine, Target::Khot, 1.0, nb);
    // More rows than the batch: all of it.
    let all = Neighbourhood {
        weight: 2.0,
        rows: 64,
    };
    gradcheck_with(Method::Bsa, LossKind::Cosine, Target::Khot, 1.0, all);
}

#[test]
fn neighbourhood_term_changes_the_gradient_only_when_weighted() {
    let cfg = ModelConfig {
        dim: 6,
        bits: 10,
        k: 3,
        method: Method::Bsa,
        loss: LossKind::Cosine,
        alpha: 1.0,
        target: Target::Khot,
    };
    let x = gaussian(8, 6, 5);
    let p = Params::<f64>::init(10, 6, 6);
    let run = |nb: Neighbourhood, path| {
        let mut g = Params::<f64>::zeros(10, 6);
        let mut t = PhaseTimer::default();
        let l = loss_and_grad_with(
            &p,
            x.view(),
            &cfg,
            &nb,
            CodeMode::Binary,
            path,
            Some(&mut g),
            &mut t,
        );
        (l, g)
    };
    let (l0, g0) = run(
        Neighbourhood {
            weight: 0.0,
            rows: 8,
        },
        DecoderPath::Dense,
    );
    let mut t = PhaseTimer::default();
    let mut g_plain = Params::<f64>::zeros(10, 6);
    let plain = loss_and_grad(
        &p,
        x.view(),
        &cfg,
        CodeMode::Binary,
        DecoderPath::Dense,
        Some(&mut g_plain),
        &mut t,
    );
    assert_eq!(l0.loss, plain.loss);
    assert_eq!(g0, g_plain);
    let (l1, g1) = run(
        Neighbourhood {
            weight: 1.0,
            rows: 8,
        },
        DecoderPath::Dense,
    );
    assert!(l1.neighbour > 0.0 && (l1.loss - l0.loss - l1.neighbour).abs() < 1e-12);
    assert_ne!(g1.we, g0.we);
    // The decoder does not enter the term: its gradient is unchanged.
    assert_eq!(g1.wd_t, g0.wd_t);
    // The sparse path builds the sub-batch code from the set-bit lists: same values.
    let (ls, gs) = run(
        Neighbourhood {
            weight: 1.0,
            rows: 8,
        },
        DecoderPath::Sparse,
    );
    assert!((ls.loss - l1.loss).abs() < 1e-12);
    assert!(gs.we.iter().zip(&g1.we).all(|(a, b)| (a - b).abs() < 1e-12));
}

/// The trainer's step on a batch of 49 rows: three parallel tasks of 16 rows and a remainder
/// (each task's offsets into the step's buffers), with the products split between two threads
/// as a fit runs them (OpenBLAS at one thread, rayon at two; the split needs 32 rows). The
/// gradient checks above use 5 rows, one task, one product.
#[test]
fn gradients_over_several_tasks_and_split_products() {
    // Every fit sets OpenBLAS to one thread while it runs (and restores the count it found),
    // so one thread changes no fit's products in this process. A fit of another test that
    // ends during this one may restore the count it found and turn the split off for the
    // rest of it: the check then runs the single product (and allows for either's rounding).
    bsa::threads::set_blas_threads(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| {
        let nb = Neighbourhood::default();
        gradcheck_rows(Method::Bsa, LossKind::Cosine, Target::Khot, 1.0, nb, 49);
        gradcheck_rows(Method::Bsa, LossKind::Mse, Target::Masked, 0.37, nb, 49);
        gradcheck_rows(Method::Topk, LossKind::Cosine, Target::Khot, 1.0, nb, 49);
    });
}

/// method.md's objective computed row by row, plainly, for [`loss_values_are_method_md_s`]:
/// `(L, L_rec, L_align, mean active bits)` with the binary code (`S > 1/2`, or the k-hot of the
/// top K of `S` for TopK, whose alignment term is reported as 0).
fn reference_loss(p: &Params<f64>, x: ArrayView2<f64>, cfg: &ModelConfig) -> [f64; 4] {
    let (b, n, d) = (x.nrows(), cfg.bits, cfg.dim);
    let cos_dist = |u: &[f64], v: &[f64]| {
        let dot: f64 = u.iter().zip(v).map(|(a, b)| a * b).sum();
        let nu = u.iter().map(|a| a * a).sum::<f64>().sqrt();
        let nv = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        1.0 - dot / (nu * nv)
    };
    let mse = |u: &[f64], v: &[f64]| {
        u.iter().zip(v).map(|(a, b)| (a - b) * (a - b)).sum::<f64>() / u.len() as f64
    };
    let dist = |u: &[f64], v: &[f64]| match cfg.loss {
        LossKind::Cosine => cos_dist(u, v),
        LossKind::Mse => mse(u, v),
    };
    let (mut rec, mut align, mut active) = (0.0, 0.0, 0.0);
    for row in x.rows() {
        let s: Vec<f64> = (0..n)
            .map(|j| {
                let h = p.be[j] + (0..d).map(|c| p.we[[j, c]] * row[c]).sum::<f64>();
                1.0 / (1.0 + (-h).exp())
            })
            .collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
        let top = &order[..cfg.k];
        let t: Vec<f64> = (0..n)
            .map(|j| match (top.contains(&j), cfg.target) {
                (false, _) => 0.0,
                (true, Target::Khot) => 1.0,
                (true, Target::Masked) => s[j],
            })
            .collect();
        let c: Vec<f64> = (0..n)
            .map(|j| match cfg.method {
                Method::Topk => f64::from(u8::from(top.contains(&j))),
                _ => f64::from(u8::from(s[j] > 0.5)),
            })
            .collect();
        let xhat: Vec<f64> = (0..d)
            .map(|c_| p.bd[c_] + (0..n).map(|j| c[j] * p.wd_t[[j, c_]]).sum::<f64>())
            .collect();
        rec += dist(&xhat, row.as_slice().unwrap());
        if cfg.method != Method::Topk {
            align += dist(&s, &t);
        }
        active += c.iter().sum::<f64>();
    }
    let (rec, align) = (rec / b as f64, align / b as f64);
    [rec + cfg.alpha * align, rec, align, active / b as f64]
}

/// The loss the trainer reports is method.md's, computed independently above (the gradient
/// checks differentiate the trainer's own loss, so they cannot catch a wrong one), on the
/// binary codes, over several parallel tasks, on both decoder paths.
#[test]
fn loss_values_are_method_md_s() {
    let x = gaussian(49, 6, 7);
    let p = tiny_params(8);
    for (method, loss, target, alpha) in [
        (Method::Bsa, LossKind::Cosine, Target::Khot, 1.0),
        (Method::Bsa, LossKind::Cosine, Target::Masked, 0.37),
        (Method::Bsa, LossKind::Mse, Target::Khot, 1.0),
        (Method::Bsa, LossKind::Mse, Target::Masked, 0.0),
        (Method::Topk, LossKind::Cosine, Target::Khot, 1.0),
    ] {
        let cfg = tiny(method, loss, target, alpha);
        let want = reference_loss(&p, x.view(), &cfg);
        // Codes that are neither empty nor full, so the test sees the rounding.
        assert!(want[3] > 1.0 && want[3] < 9.0, "{want:?}");
        for path in [DecoderPath::Sparse, DecoderPath::Dense] {
            let mut t = PhaseTimer::default();
            let l = loss_and_grad(&p, x.view(), &cfg, CodeMode::Binary, path, None, &mut t);
            let got = [l.loss, l.rec, l.align, l.active_mean];
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-12 * w.abs().max(1.0),
                    "{method}/{loss}/{target}/alpha={alpha}/{path:?}: {got:?} against {want:?}"
                );
            }
        }
    }
}

#[test]
fn sparse_and_dense_decoder_paths_agree() {
    for method in [Method::Bsa, Method::Topk] {
        let cfg = ModelConfig {
            dim: 12,
            bits: 40,
            k: 5,
            method,
            loss: LossKind::Cosine,
            alpha: 1.0,
            target: Target::Khot,
        };
        let x = gaussian(17, 12, 3);
        let p = Params::<f64>::init(40, 12, 4);
        let run = |path| {
            let mut g = Params::<f64>::zeros(40, 12);
            let mut t = PhaseTimer::default();
            let l = loss_and_grad(
                &p,
                x.view(),
                &cfg,
                CodeMode::Binary,
                path,
                Some(&mut g),
                &mut t,
            );
            (l, g)
        };
        let (ls, gs) = run(DecoderPath::Sparse);
        let (ld, gd) = run(DecoderPath::Dense);
        assert!((ls.loss - ld.loss).abs() < 1e-12);
        assert_eq!(ls.active_mean, ld.active_mean);
        for (a, b) in [(&gs.we, &gd.we), (&gs.wd_t, &gd.wd_t)] {
            assert!(a.iter().zip(b).all(|(u, v)| (u - v).abs() < 1e-12));
        }
        if method == Method::Topk {
            assert_eq!(ls.active_mean, 5.0);
        }
    }
}

/// Clustered synthetic embeddings: 16 random centres in 32-d plus noise, rows L2-normalised.
fn clustered(n: usize, seed: u64) -> Array2<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let centres = gaussian(16, 32, seed + 1);
    let mut x = Array2::<f32>::zeros((n, 32));
    for (i, mut row) in x.rows_mut().into_iter().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            let noise: f64 = rng.sample(StandardNormal);
            *v = (centres[[i % 16, j]] + 0.3 * noise) as f32;
        }
        let norm = row.dot(&row).sqrt();
        row /= norm;
    }
    x
}

fn train(alpha: f64, epochs: usize) -> Vec<bsa::train::EpochStats> {
    let x = clustered(2000, 9);
    let mut params = TrainParams::new(128, 8);
    params.alpha = alpha;
    params.epochs = epochs;
    params.batch = 128;
    params.lr = 5e-3;
    params.seed = 11;
    let mut first_active = None;
    let (_, report) = params
        .fit(x.view(), &mut |p| {
            if let Progress::Step { loss, .. } = p {
                first_active.get_or_insert(loss.active_mean);
            }
        })
        .unwrap();
    // Default initialisation fires about half the bits.
    let first = first_active.unwrap();
    assert!(
        (40.0..90.0).contains(&first),
        "first batch had {first} active bits"
    );
    report.epochs
}

#[test]
fn training_lowers_the_loss_and_alignment_pulls_active_bits_toward_k() {
    let epochs = train(1.0, 15);
    let (first, last) = (&epochs[0], epochs.last().unwrap());
    let val = |e: &bsa::train::EpochStats| e.validation.unwrap();
    assert!(
        val(last).rec < 0.7 * val(first).rec,
        "reconstruction did not fall: {:?} -> {:?}",
        val(first),
        val(last)
    );
    assert!(val(last).loss < val(first).loss);
    // From about 64 active bits at the start toward K = 8.
    assert!(
        val(last).active_mean < 20.0,
        "active bits did not approach K: {}",
        val(last).active_mean
    );
}

#[test]
fn without_alignment_the_loss_still_falls() {
    let epochs = train(0.0, 8);
    let (first, last) = (&epochs[0], epochs.last().unwrap());
    assert!(last.validation.unwrap().rec < first.validation.unwrap().rec);
    // The term is measured (how far the activations are from their targets) but weighs nothing.
    assert!(last.train.align > 0.0, "{:?}", last.train);
    assert_eq!(last.train.loss, last.train.rec);
}

#[test]
fn same_seed_same_model() {
    let x = clustered(500, 5);
    let mut params = TrainParams::new(64, 4);
    params.epochs = 2;
    params.batch = 64;
    let (a, _) = params.fit(x.view(), &mut |_| {}).unwrap();
    let (b, _) = params.fit(x.view(), &mut |_| {}).unwrap();
    assert_eq!(a.params, b.params);
    params.seed = 1;
    let (c, _) = params.fit(x.view(), &mut |_| {}).unwrap();
    assert_ne!(a.params, c.params);
}

#[test]
fn divergence_is_an_error_not_a_garbage_model() {
    let mut x = clustered(300, 5);
    x[[7, 3]] = f32::NAN;
    let mut params = TrainParams::new(32, 4);
    params.epochs = 1;
    params.batch = 300;
    params.val_fraction = 0.0;
    let err = params.fit(x.view(), &mut |_| {}).unwrap_err().to_string();
    assert!(
        err.contains("training diverged") && err.contains("--lr"),
        "{err}"
    );
}

#[test]
fn bad_settings_are_rejected() {
    let x = clustered(100, 5);
    for (bits, k) in [(16, 0), (16, 17), (0, 1)] {
        let err = TrainParams::new(bits, k)
            .fit(x.view(), &mut |_| {})
            .unwrap_err();
        assert!(err.to_string().contains("invalid argument"), "{err}");
    }
}

#[test]
fn quantile_bias_init_starts_with_about_k_active_bits() {
    let x = clustered(2000, 9);
    let mut params = TrainParams::new(128, 8);
    params.epochs = 1;
    params.batch = 128;
    params.quantile_bias_init = true;
    let mut first = None;
    params
        .fit(x.view(), &mut |p| {
            if let Progress::Step { loss, .. } = p {
                first.get_or_insert(loss.active_mean);
            }
        })
        .unwrap();
    // The default initialisation starts near N / 2 = 64 (see `train` above).
    let first = first.unwrap();
    assert!(
        (6.0..10.0).contains(&first),
        "first batch had {first} active bits"
    );
}

#[test]
fn monitor_keeps_the_best_epoch_and_patience_stops_training() {
    let x = clustered(2000, 9);
    let mut params = TrainParams::new(128, 8);
    params.epochs = 40;
    params.batch = 128;
    params.lr = 5e-3;
    params.seed = 3;
    params.monitor = Some(Monitor::Adc);
    params.patience = 2;
    params.probe_queries = 50;
    let (model, report) = params.fit(x.view(), &mut |_| {}).unwrap();
    let recalls: Vec<f64> = report
        .epochs
        .iter()
        .map(|e| e.validation_recall.unwrap().adc)
        .collect();
    let best = report.best_epoch.unwrap();
    // The first epoch with the highest probe recall.
    let max = recalls.iter().copied().fold(f64::MIN, f64::max);
    assert_eq!(
        recalls.iter().position(|&r| r == max).unwrap() + 1,
        best,
        "{recalls:?}"
    );
    assert!(report.stopped_early, "never stopped: {recalls:?}");
    assert_eq!(report.epochs.len(), best + 2);
    assert!(
        report
            .epochs
            .iter()
            .all(|e| e.dead_bits.is_some() && e.max_bit_freq.is_some())
    );
    // The kept weights are the best epoch's, not the last: re-running to exactly that epoch
    // without a monitor gives the same model.
    let mut again = params.clone();
    again.monitor = None;
    again.patience = 0;
    again.epochs = best;
    let (same, _) = again.fit(x.view(), &mut |_| {}).unwrap();
    assert_eq!(model.params, same.params);
}

#[test]
fn cosine_schedule_ends_at_the_floor_and_rebalancing_leaves_healthy_bits() {
    let x = clustered(2000, 9);
    let mut params = TrainParams::new(128, 8);
    params.epochs = 4;
    params.batch = 128;
    params.lr = 5e-3;
    params.schedule = Schedule::Cosine;
    params.warmup_epochs = 1.0;
    params.final_lr_fraction = 0.1;
    params.rebalance_bits = true;
    params.max_bit_freq = 0.3;
    params.monitor = Some(Monitor::Loss);
    let (_, report) = params.fit(x.view(), &mut |_| {}).unwrap();
    let lrs: Vec<f64> = report.epochs.iter().map(|e| e.lr).collect();
    assert!((lrs[3] - 5e-4).abs() < 1e-9, "{lrs:?}");
    // Warm-up reaches the full rate at the end of the first epoch, then it decays.
    assert!(
        lrs[0] > lrs[1] && lrs[1] > lrs[2] && lrs[2] > lrs[3],
        "{lrs:?}"
    );
    // The default initialisation fires about half of the bits for most rows: the first
    // rebalancing has work to do, and none happens after the last epoch.
    assert!(report.epochs[0].bits_reset > 0, "{:?}", report.epochs[0]);
    assert_eq!(report.epochs[3].bits_reset, 0);
}

#[test]
fn training_aids_are_validated() {
    let x = clustered(100, 5);
    let mut p = TrainParams::new(16, 4);
    p.patience = 2;
    assert!(
        p.fit(x.view(), &mut |_| {})
            .unwrap_err()
            .to_string()
            .contains("--monitor")
    );
    let mut p = TrainParams::new(16, 4);
    p.monitor = Some(Monitor::Adc);
    p.val_fraction = 0.0;
    assert!(
        p.fit(x.view(), &mut |_| {})
            .unwrap_err()
            .to_string()
            .contains("--val-fraction")
    );
    // A probe among too few validation rows tells no codes apart: refused (with 11 rows it
    // found recall 1.0 every epoch, so the first was kept and --patience stopped the training).
    let mut p = TrainParams::new(16, 4);
    p.monitor = Some(Monitor::Hamming);
    let e = p.fit(x.view(), &mut |_| {}).unwrap_err().to_string();
    assert!(
        e.contains("--monitor hamming")
            && e.contains("are too few")
            && e.contains("--monitor loss"),
        "{e}"
    );
    p.monitor = Some(Monitor::Loss);
    p.fit(x.view(), &mut |_| {}).unwrap();
    let mut p = TrainParams::new(16, 4);
    p.neighbourhood.weight = -1.0;
    assert!(
        p.fit(x.view(), &mut |_| {})
            .unwrap_err()
            .to_string()
            .contains("--neighbour-weight")
    );
    let mut p = TrainParams::new(16, 4);
    p.final_lr_fraction = 2.0;
    assert!(
        p.fit(x.view(), &mut |_| {})
            .unwrap_err()
            .to_string()
            .contains("--final-lr-fraction")
    );
}

#[test]
fn monitor_max_active_keeps_the_last_epoch_when_no_epoch_is_sparse_enough() {
    let x = clustered(1000, 9);
    let mut params = TrainParams::new(64, 4);
    params.epochs = 3;
    params.batch = 128;
    params.monitor = Some(Monitor::Adc);
    params.probe_queries = 20;
    // No code sets fewer than 0.01 x K bits on average: nothing qualifies as best.
    params.monitor_max_active = Some(0.01);
    let (model, report) = params.fit(x.view(), &mut |_| {}).unwrap();
    assert_eq!(report.best_epoch, None);
    assert_eq!(report.epochs.len(), 3);
    let mut plain = params.clone();
    plain.monitor = None;
    plain.monitor_max_active = None;
    let (last, _) = plain.fit(x.view(), &mut |_| {}).unwrap();
    assert_eq!(model.params, last.params);
    // A generous bound lets the best epoch through.
    params.monitor_max_active = Some(100.0);
    let (_, report) = params.fit(x.view(), &mut |_| {}).unwrap();
    assert!(report.best_epoch.is_some());
}

/// Epochs that tie the best score do not replace it: the first epoch with the best score is
/// kept, and patience counts from it. Here the weights barely move, so every epoch's probe
/// recall is the same: the first epoch is best and training stops `patience` epochs later.
#[test]
fn a_tie_with_the_best_epoch_keeps_the_first() {
    let x = clustered(1000, 9);
    let mut params = TrainParams::new(64, 4);
    params.epochs = 6;
    params.batch = 128;
    params.lr = 1e-12;
    params.monitor = Some(Monitor::Hamming);
    params.patience = 2;
    params.probe_queries = 20;
    let (_, report) = params.fit(x.view(), &mut |_| {}).unwrap();
    let recalls: Vec<f64> = (report.epochs.iter())
        .map(|e| e.validation_recall.unwrap().hamming)
        .collect();
    assert!(recalls.iter().all(|&r| r == recalls[0]), "{recalls:?}");
    assert_eq!(report.best_epoch, Some(1));
    assert!(report.stopped_early);
    assert_eq!(report.epochs.len(), 3);
}

/// A stop asked for during training ends the fit at the next step, with `Error::Stopped`.
#[test]
fn a_set_stop_flag_ends_the_fit() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let x = gaussian(600, 16, 7).mapv(|v| v as f32);
    let mut t = TrainParams::new(32, 4);
    t.batch = 100;
    // Epochs have no upper bound: a run this long is ended by its stop flag, and counting its
    // steps (6 an epoch) must not overflow.
    t.epochs = usize::MAX;
    let (stop, mut steps) = (AtomicBool::new(false), 0);
    let result = t.fit_until(
        x.view(),
        &mut |p| {
            if let Progress::Step { .. } = p {
                steps += 1;
                if steps == 3 {
                    stop.store(true, Ordering::Relaxed);
                }
            }
        },
        &stop,
    );
    assert!(matches!(result, Err(bsa::Error::Stopped)), "{result:?}");
    assert_eq!(steps, 3);
}
