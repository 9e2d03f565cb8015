//! `bsa eval --json` agrees with an independent computation: the model file read with the
//! `safetensors` crate (not bsa's loader) and every metric of `shared/method.md` computed the slow
//! obvious way, in f64 with plain loops.

use crate::util::{Matrix, TestDir, Weights, assert_close, khot_code, normalised, sign_code};

/// The metrics `bsa eval` reports, computed independently.
struct Expected {
    reconstruction_loss: f64,
    reconstruction_mse: f64,
    fixed_topk_reconstruction_loss: f64,
    active_mean: f64,
    active_std: f64,
    dead_features: usize,
    /// min p01 p10 p50 p90 p99 max of the per-bit frequency.
    quantiles: [(&'static str, f64); 7],
}

fn cosine_distance(a: &[f64], b: &[f32]) -> f64 {
    let mut dot = 0.0;
    let mut na = 0.0;
    let mut nb = 0.0;
    for (&u, &v) in a.iter().zip(b) {
        let v = v as f64;
        dot += u * v;
        na += u * u;
        nb += v * v;
    }
    1.0 - dot / (na.sqrt() * nb.sqrt())
}

fn mean_squared_error(a: &[f64], b: &[f32]) -> f64 {
    let sum: f64 = a.iter().zip(b).map(|(&u, &v)| (u - v as f64).powi(2)).sum();
    sum / a.len() as f64
}

/// numpy's `np.quantile(v, p)` (method "linear"): position `p (n - 1)` in the sorted values,
/// interpolated between its neighbours.
fn numpy_quantile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pos = p * (s.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

fn expected(w: &Weights, x: &Matrix, topk: bool, k: usize) -> Expected {
    let n = x.n as f64;
    let mut rec = 0.0;
    let mut mse = 0.0;
    let mut fixed = 0.0;
    let mut counts = Vec::new();
    let mut fires = vec![0usize; w.bits];
    for i in 0..x.n {
        let xi = x.row(i);
        let h = w.pre_activations(xi);
        let khot = khot_code(&h, k);
        let code = if topk { khot.clone() } else { sign_code(&h) };
        let xhat = w.decode(&code);
        rec += cosine_distance(&xhat, xi);
        mse += mean_squared_error(&xhat, xi);
        fixed += cosine_distance(&w.decode(&khot), xi);
        counts.push(code.iter().filter(|&&b| b).count() as f64);
        for j in 0..w.bits {
            if code[j] {
                fires[j] += 1;
            }
        }
    }
    let active_mean = counts.iter().sum::<f64>() / n;
    let active_var = counts
        .iter()
        .map(|c| (c - active_mean).powi(2))
        .sum::<f64>()
        / n;
    let freq: Vec<f64> = fires.iter().map(|&c| c as f64 / n).collect();
    let q = |p| numpy_quantile(&freq, p);
    Expected {
        reconstruction_loss: rec / n,
        reconstruction_mse: mse / n,
        fixed_topk_reconstruction_loss: fixed / n,
        active_mean,
        active_std: active_var.sqrt(),
        dead_features: fires.iter().filter(|&&c| c == 0).count(),
        quantiles: [
            ("min", q(0.0)),
            ("p01", q(0.01)),
            ("p10", q(0.10)),
            ("p50", q(0.50)),
            ("p90", q(0.90)),
            ("p99", q(0.99)),
            ("max", q(1.0)),
        ],
    }
}

/// Trains through the CLI with `--method method`, evaluates on the training data and on fresh
/// data, and compares with the independent computation.
fn eval_agrees(method: &str) {
    let (bits, k) = (32, 4);
    let t = TestDir::new();
    let x = normalised(300, 16, 11);
    t.write_f32("x.npy", &x);
    let summary = t
        .bsa(&[
            "train",
            "--data",
            "x.npy",
            "--bits",
            "32",
            "--k",
            "4",
            "--epochs",
            "3",
            "--batch",
            "64",
            "--out",
            "m.safetensors",
            "--json",
            "-q",
            "--method",
            method,
        ])
        .ok()
        .json();
    assert_eq!(summary["method"], method);
    let w = Weights::load(&t.path("m.safetensors"));
    assert_eq!((w.bits, w.dim), (bits, 16));

    // Fresh data too, with rows that are not unit length (eval must not assume normalised input).
    let mut y = normalised(123, 16, 12);
    for i in 0..y.n {
        let scale = 0.5 + i as f32 / 40.0;
        y.row_mut(i).iter_mut().for_each(|v| *v *= scale);
    }
    t.write_f32("y.npy", &y);

    for (file, data) in [("x.npy", &x), ("y.npy", &y)] {
        let got = t
            .bsa(&["eval", "--model", "m.safetensors", "--data", file, "--json"])
            .ok()
            .json();
        let keys: Vec<&str> = got
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want_keys = vec![
            "n",
            "bits",
            "k",
            "reconstruction_loss",
            "reconstruction_mse",
            "fixed_topk_reconstruction_loss",
            "active_mean",
            "active_std",
            "dead_features",
            "feature_frequency_quantiles",
        ];
        want_keys.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, want_keys, "{got}");
        assert_eq!(got["n"], data.n);
        assert_eq!(got["bits"], bits);
        assert_eq!(got["k"], k);

        let e = expected(&w, data, method == "topk", k);
        let num = |key: &str| {
            got[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{key} is not a number: {got}"))
        };
        let ctx = |key: &str| format!("{method} {file} {key}");
        let rel = 1e-5;
        assert_close(
            &ctx("reconstruction_loss"),
            num("reconstruction_loss"),
            e.reconstruction_loss,
            rel,
        );
        assert_close(
            &ctx("reconstruction_mse"),
            num("reconstruction_mse"),
            e.reconstruction_mse,
            rel,
        );
        assert_close(
            &ctx("fixed_topk_reconstruction_loss"),
            num("fixed_topk_reconstruction_loss"),
            e.fixed_topk_reconstruction_loss,
            rel,
        );
        assert_close(&ctx("active_mean"), num("active_mean"), e.active_mean, rel);
        assert_close(&ctx("active_std"), num("active_std"), e.active_std, rel);
        assert_eq!(
            got["dead_features"],
            e.dead_features,
            "{}",
            ctx("dead_features")
        );
        let q = &got["feature_frequency_quantiles"];
        assert_eq!(q.as_object().unwrap().len(), 7, "{q}");
        for (key, want) in e.quantiles {
            let v = q[key]
                .as_f64()
                .unwrap_or_else(|| panic!("quantile {key} missing: {q}"));
            assert_close(&ctx(&format!("quantile {key}")), v, want, rel);
        }

        // Sanity of the fixture itself, so the comparison means something.
        if method == "topk" {
            assert_eq!(e.active_mean, k as f64);
            assert_eq!(e.active_std, 0.0);
            // The model's code is the fixed-TopK code.
            assert_eq!(e.reconstruction_loss, e.fixed_topk_reconstruction_loss);
        } else {
            assert!(
                e.active_std > 0.0,
                "degenerate fixture: every code has the same count"
            );
            assert_ne!(e.reconstruction_loss, e.fixed_topk_reconstruction_loss);
        }
        assert!(
            e.quantiles[0].1 < e.quantiles[6].1,
            "degenerate fixture: all bits fire equally"
        );
    }
}

#[test]
fn eval_agrees_with_independent_computation_bsa() {
    eval_agrees("bsa");
}

#[test]
fn eval_agrees_with_independent_computation_topk() {
    eval_agrees("topk");
}

/// Without `--json`, the same numbers as a table on stdout.
#[test]
fn eval_table() {
    let t = TestDir::new();
    t.write_f32("x.npy", &normalised(100, 8, 13));
    t.train("x.npy", "m.safetensors", 16, 3, &[]);
    let out = t
        .bsa(&["eval", "--model", "m.safetensors", "--data", "x.npy"])
        .ok();
    for label in [
        "vectors",
        "100",
        "16 / 3",
        "reconstruction loss (cosine)",
        "dead features",
    ] {
        assert!(out.stdout.contains(label), "{label:?} missing: {out:#?}");
    }
    assert!(out.stderr.is_empty(), "{out:#?}");
}
