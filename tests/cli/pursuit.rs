//! `bsa train --method pursuit` / `--preset retrieval`: exactly K atoms per code, chosen by greedy
//! binary matching pursuit on the decoder stored in the file, checked against an independent
//! f64 implementation that recomputes the residual at every step.

use crate::util::{TestDir, Weights, normalised, read_npy_2d};

/// Greedy pursuit the slow way: at each step the unchosen atom that most lowers |r - a_j|^2.
/// Returns the chosen atoms and the gap between the best and second-best error at every step
/// (a small gap means float32 rounding could legitimately pick the other atom).
fn greedy(w: &Weights, x: &[f32], k: usize) -> (Vec<bool>, f64) {
    let mut r: Vec<f64> = (0..w.dim).map(|d| x[d] as f64 - w.bd[d]).collect();
    let mut chosen = vec![false; w.bits];
    let mut min_gap = f64::INFINITY;
    for _ in 0..k {
        let mut errs: Vec<(f64, usize)> = (0..w.bits)
            .filter(|&j| !chosen[j])
            .map(|j| {
                let e: f64 = (0..w.dim)
                    .map(|d| (r[d] - w.wd[d * w.bits + j]).powi(2))
                    .sum();
                (e, j)
            })
            .collect();
        errs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        if errs.len() > 1 {
            min_gap = min_gap.min(errs[1].0 - errs[0].0);
        }
        let j = errs[0].1;
        chosen[j] = true;
        for (d, rd) in r.iter_mut().enumerate() {
            *rd -= w.wd[d * w.bits + j];
        }
    }
    (chosen, min_gap)
}

#[test]
fn pursuit_codes_are_the_greedy_atoms_of_the_stored_dictionary() {
    let t = TestDir::new();
    t.write_f32("train.npy", &normalised(400, 10, 61));
    t.bsa(&[
        "train",
        "--data",
        "train.npy",
        "--method",
        "pursuit",
        "--bits",
        "40",
        "--k",
        "3",
        "--rounds",
        "3",
        "--out",
        "p.safetensors",
        "-q",
    ])
    .ok();
    let w = Weights::load(&t.path("p.safetensors"));
    assert_eq!((w.bits, w.dim), (40, 10));
    let x = normalised(60, 10, 62);
    t.write_f32("x.npy", &x);
    t.bsa(&[
        "encode",
        "--model",
        "p.safetensors",
        "--data",
        "x.npy",
        "--out",
        "c.npy",
    ])
    .ok();
    let (_, rows, cols, data) = read_npy_2d(&t.read("c.npy"));
    assert_eq!((rows, cols), (60, 5));
    let mut compared = 0;
    for i in 0..rows {
        let packed = &data[i * cols..(i + 1) * cols];
        let got: Vec<bool> = (0..40).map(|j| packed[j / 8] >> (j % 8) & 1 == 1).collect();
        assert_eq!(
            got.iter().filter(|&&b| b).count(),
            3,
            "row {i}: exactly K atoms"
        );
        let (want, gap) = greedy(&w, x.row(i), 3);
        // Skip rows where two atoms are within float32 rounding of each other.
        if gap > 1e-4 {
            assert_eq!(got, want, "row {i}");
            compared += 1;
        }
    }
    assert!(compared > 40, "only {compared} rows were unambiguous");
}

#[test]
fn retrieval_preset_is_pursuit_and_eval_reports_exactly_k_bits() {
    let t = TestDir::new();
    t.write_f32("train.npy", &normalised(300, 8, 63));
    let out = t
        .bsa(&[
            "train",
            "--data",
            "train.npy",
            "--preset",
            "retrieval",
            "--bits",
            "32",
            "--k",
            "4",
            "--rounds",
            "2",
            "--json",
            "-q",
            "--out",
            "r.safetensors",
        ])
        .ok();
    let summary: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(summary["method"], "pursuit");
    assert_eq!(summary["preset"], "retrieval");
    let eval = t
        .bsa(&[
            "eval",
            "--model",
            "r.safetensors",
            "--data",
            "train.npy",
            "--json",
        ])
        .ok();
    let m: serde_json::Value = serde_json::from_str(eval.stdout.trim()).unwrap();
    assert_eq!(m["active_mean"], 4.0);
    assert_eq!(m["active_std"], 0.0);
    // The training summary's reconstruction is the model's, as eval measures it on the same
    // rows (the last round's figure decodes the codes its dictionary was refitted to).
    let (train, eval) = (
        summary["train_reconstruction"].as_f64().unwrap(),
        m["reconstruction_loss"].as_f64().unwrap(),
    );
    assert!((train - eval).abs() < 1e-5, "train {train}, eval {eval}");
    assert!(
        summary["last_round_reconstruction"].as_f64().is_some(),
        "{summary}"
    );
    // Preset and an explicit method contradict each other.
    let bad = t.bsa(&[
        "train",
        "--data",
        "train.npy",
        "--preset",
        "retrieval",
        "--method",
        "bsa",
        "--out",
        "x",
    ]);
    assert_eq!(bad.code, 2);
}

/// `--init MODEL` starts the pursuit from a trained BSA model's decoder atoms: the fit runs, its
/// codes still have exactly K bits, the dictionary differs from the random start's, and the
/// run is recorded; a model of another size, or --init without pursuit, is refused clearly.
#[test]
fn pursuit_warm_starts_from_a_bsa_decoder() {
    let t = TestDir::new();
    t.write_f32("train.npy", &normalised(300, 8, 64));
    t.train("train.npy", "bsa.safetensors", 32, 4, &[]);
    t.train("train.npy", "bsa64.safetensors", 64, 4, &[]);
    let pursuit = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--data",
            "train.npy",
            "--method",
            "pursuit",
            "--bits",
            "32",
            "--k",
            "4",
            "--rounds",
            "1",
            "-q",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        t.bsa(&args)
    };
    pursuit("warm.safetensors", &["--init", "bsa.safetensors"]).ok();
    pursuit("cold.safetensors", &[]).ok();
    let warm = Weights::load(&t.path("warm.safetensors"));
    let cold = Weights::load(&t.path("cold.safetensors"));
    assert_ne!(
        warm.wd, cold.wd,
        "--init must change the starting dictionary"
    );
    assert!(warm.wd.iter().all(|v| v.is_finite()));
    let eval = t
        .bsa(&[
            "eval",
            "--model",
            "warm.safetensors",
            "--data",
            "train.npy",
            "--json",
        ])
        .ok();
    let m: serde_json::Value = serde_json::from_str(eval.stdout.trim()).unwrap();
    assert_eq!(m["active_mean"], 4.0);
    assert_eq!(m["active_std"], 0.0);

    pursuit("x.safetensors", &["--init", "bsa64.safetensors"]).fails_with(&[
        "bsa64.safetensors",
        "64 bits",
        "--bits 64",
    ]);
    // A model of other data: no flag mends that (it said "pass --bits 32", given already).
    t.write_f32("wide.npy", &normalised(300, 12, 65));
    t.train("wide.npy", "wide.safetensors", 32, 4, &[]);
    let wrong = pursuit("x.safetensors", &["--init", "wide.safetensors"]);
    let msg = wrong.fails_with(&["12-d data", "start from a model of 8-d data"]);
    assert!(!msg.contains("--bits"), "{msg}");
    t.bsa(&[
        "train",
        "--data",
        "train.npy",
        "--bits",
        "32",
        "--k",
        "4",
        "--init",
        "bsa.safetensors",
        "--out",
        "y.safetensors",
        "-q",
    ])
    .usage_error(&["--method bsa does not read --init (read by pursuit)"]);
    assert!(!t.exists("y.safetensors"));
}

/// A pursuit model's index searched with float queries by the default score (Hamming) says
/// on stderr that its codes are made for `--score adc` (they rank poorly by Hamming); an
/// explicit `--score`, or another model's index, says nothing.
#[test]
fn default_hamming_on_pursuit_codes_notes_the_adc_score() {
    let t = TestDir::new();
    t.write_f32("train.npy", &normalised(300, 8, 71));
    t.write_f32("q.npy", &normalised(5, 8, 72));
    let fits: [(&str, &[&str]); 2] = [
        ("pursuit", &["--bits", "32", "--k", "4", "--rounds", "2"]),
        ("lsh", &["--bits", "32"]),
    ];
    for (method, settings) in fits {
        let model = format!("{method}.safetensors");
        let mut train = vec!["train", "--data", "train.npy", "--method", method, "-q"];
        train.extend(settings);
        train.extend(["--out", &model]);
        t.bsa(&train).ok();
        let idx = format!("{method}-idx");
        t.bsa(&[
            "build",
            "--model",
            &model,
            "--data",
            "train.npy",
            "-q",
            "--out",
            &idx,
        ])
        .ok();
        let search = |score: Option<&str>| {
            let mut args = vec!["search", "--index", &idx, "--queries", "q.npy", "--k", "3"];
            args.extend(score.map(|s| ["--score", s]).iter().flatten());
            t.bsa(&args).ok().stderr
        };
        let noted = search(None).contains("made to be searched with --score adc");
        assert_eq!(noted, method == "pursuit", "{method}");
        assert!(!search(Some("hamming")).contains("--score adc"), "{method}");
    }
}
