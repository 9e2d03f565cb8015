//! The closed-form baselines (`bsa train --method sign|lsh|itq`) end to end: the model files they
//! write, the codes `bsa encode` makes with them (checked independently from the file), `bsa
//! eval`, `bsa build` and `bsa search` on them, and `bsa groundtruth` against a brute-force f64
//! ranking.

use crate::util::{Matrix, TestDir, Weights, normalised, read_npy_2d, sign_code};

/// Codes written by `bsa encode`, unpacked (numpy little bit order), `bits` per row.
fn encoded(t: &TestDir, model: &str, data: &str, bits: usize) -> Vec<Vec<bool>> {
    t.bsa(&[
        "encode",
        "--model",
        model,
        "--data",
        data,
        "--out",
        "codes.npy",
    ])
    .ok();
    let (descr, rows, cols, bytes) = read_npy_2d(&t.read("codes.npy"));
    assert_eq!((descr.as_str(), cols), ("|u1", bits.div_ceil(8)));
    (0..rows)
        .map(|i| {
            (0..bits)
                .map(|j| bytes[i * cols + j / 8] >> (j % 8) & 1 == 1)
                .collect()
        })
        .collect()
}

fn train_json(t: &TestDir, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["train", "--json", "-q"];
    all.extend_from_slice(args);
    t.bsa(&all).ok().json()
}

fn metadata(t: &TestDir, model: &str) -> serde_json::Value {
    let buf = t.read(model);
    let n = u64::from_le_bytes(buf[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&buf[8..8 + n]).unwrap();
    header["__metadata__"].clone()
}

#[test]
fn itq_model_encodes_with_its_rotation() {
    let t = TestDir::new();
    let x = normalised(400, 24, 61);
    t.write_f32("x.npy", &x);
    let s = train_json(
        &t,
        &[
            "--data",
            "x.npy",
            "--method",
            "itq",
            "--bits",
            "16",
            "--out",
            "itq.safetensors",
        ],
    );
    assert_eq!(s["method"], "itq");
    assert_eq!((s["bits"].as_u64(), s["k"].as_u64()), (Some(16), Some(8)));
    assert_eq!(s["epochs"], 0);
    assert_eq!(s["alpha"], 0.0);
    assert_eq!(s["fit_rows"], 400);
    assert!(s["samples_per_sec"].as_f64().unwrap() > 0.0, "{s}");
    let q: Vec<f64> = serde_json::from_value(s["quantization_loss"].clone()).unwrap();
    assert_eq!(q.len(), 50);
    assert!(q.windows(2).all(|w| w[1] <= w[0] * (1.0 + 1e-9)), "{q:?}");
    let rec = s["train_reconstruction"].as_f64().unwrap();
    assert!(rec > 0.0 && rec < 1.0, "{s}");

    let meta = metadata(&t, "itq.safetensors");
    assert_eq!(meta["method"], "itq");
    assert_eq!(meta["bits"], "16");

    // The file's encoder is a rotated PCA: orthonormal rows, and be = -We mean(x) (every row
    // was used for the fit).
    let w = Weights::load(&t.path("itq.safetensors"));
    assert_eq!((w.bits, w.dim), (16, 24));
    for a in 0..16 {
        for b in 0..16 {
            let dot: f64 = (0..24).map(|d| w.we[a * 24 + d] * w.we[b * 24 + d]).sum();
            let want = if a == b { 1.0 } else { 0.0 };
            assert!((dot - want).abs() < 1e-4, "We We^T [{a},{b}] = {dot}");
        }
    }
    let mean: Vec<f64> = (0..24)
        .map(|d| (0..x.n).map(|i| x.row(i)[d] as f64).sum::<f64>() / x.n as f64)
        .collect();
    for j in 0..16 {
        let want = -(0..24).map(|d| w.we[j * 24 + d] * mean[d]).sum::<f64>();
        assert!(
            (w.be[j] - want).abs() < 1e-5,
            "be[{j}] {} vs {want}",
            w.be[j]
        );
    }

    // `bsa encode` gives sign(We x + be), computed independently from the file.
    let codes = encoded(&t, "itq.safetensors", "x.npy", 16);
    let mut fires = [0usize; 16];
    for (i, code) in codes.iter().enumerate() {
        assert_eq!(code, &sign_code(&w.pre_activations(x.row(i))), "row {i}");
        for (j, &b) in code.iter().enumerate() {
            fires[j] += b as usize;
        }
    }
    // ITQ's bits are balanced-ish on this centred-by-the-mean data.
    for (j, &f) in fires.iter().enumerate() {
        assert!((80..=320).contains(&f), "bit {j} fires for {f} of 400 rows");
    }
}

#[test]
fn sign_model_codes_are_x_positive_and_bits_default_to_dim() {
    let t = TestDir::new();
    let mut x = normalised(100, 12, 62);
    x.row_mut(0)[3] = 0.0;
    x.row_mut(1)[4] = -0.0;
    t.write_f32("x.npy", &x);
    let s = train_json(
        &t,
        &[
            "--data",
            "x.npy",
            "--method",
            "sign",
            "--out",
            "sign.safetensors",
        ],
    );
    assert_eq!((s["bits"].as_u64(), s["k"].as_u64()), (Some(12), Some(6)));
    let codes = encoded(&t, "sign.safetensors", "x.npy", 12);
    for (i, code) in codes.iter().enumerate() {
        let want: Vec<bool> = x.row(i).iter().map(|&v| v > 0.0).collect();
        assert_eq!(code, &want, "row {i}");
    }
    // An explicit --bits must be D; --k is recorded.
    let s = train_json(
        &t,
        &[
            "--data",
            "x.npy",
            "--method",
            "sign",
            "--bits",
            "12",
            "--k",
            "3",
            "--out",
            "s2.safetensors",
        ],
    );
    assert_eq!(s["k"], 3);
    t.bsa(&[
        "train",
        "--data",
        "x.npy",
        "--method",
        "sign",
        "--bits",
        "16",
        "--out",
        "bad.safetensors",
    ])
    .fails_with(&["--method sign", "--bits must be 12", "got 16"]);
    assert!(!t.exists("bad.safetensors"));
}

#[test]
fn lsh_is_deterministic_and_needs_bits() {
    let t = TestDir::new();
    t.write_f32("x.npy", &normalised(200, 12, 63));
    let fit = |out: &str, seed: &str| {
        train_json(
            &t,
            &[
                "--data", "x.npy", "--method", "lsh", "--bits", "40", "--seed", seed, "--out", out,
            ],
        )
    };
    fit("a.safetensors", "5");
    fit("b.safetensors", "5");
    fit("c.safetensors", "6");
    assert_eq!(t.read("a.safetensors"), t.read("b.safetensors"));
    assert_ne!(t.read("a.safetensors"), t.read("c.safetensors"));
    assert_eq!(metadata(&t, "a.safetensors")["method"], "lsh");
    t.bsa(&[
        "train",
        "--data",
        "x.npy",
        "--method",
        "lsh",
        "--out",
        "m.safetensors",
    ])
    .usage_error(&["--bits"]);
    // --k stays required for the trained methods.
    t.bsa(&[
        "train",
        "--data",
        "x.npy",
        "--method",
        "topk",
        "--bits",
        "8",
        "--out",
        "m.safetensors",
    ])
    .usage_error(&["--k"]);
    // Flags the method does not read are refused, naming the methods that read them; their
    // defaults are not (the flags were not given).
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--data", "x.npy", "--out", "u.safetensors"];
        args.extend_from_slice(extra);
        t.bsa(&args)
    };
    train(&[
        "--method", "itq", "--bits", "8", "--epochs", "3", "--lr", "0.1",
    ])
    .usage_error(&["--method itq does not read --epochs, --lr (read by bsa, topk)"]);
    train(&["--method", "sign", "--rounds", "2", "--itq-iterations", "3"]).usage_error(&[
        "--rounds (read by pursuit)",
        "--itq-iterations (read by itq)",
    ]);
    train(&["--bits", "8", "--k", "2", "--fit-rows", "10"])
        .usage_error(&["--method bsa does not read --fit-rows"]);
    // TopK reads the gradient flags, --alpha included (the contract lists it; no effect).
    train(&[
        "--method", "topk", "--bits", "8", "--k", "2", "--alpha", "0.5", "--rounds", "2",
    ])
    .usage_error(&["--method topk does not read --rounds (read by pursuit)"]);
    train(&[
        "--preset",
        "retrieval",
        "--bits",
        "16",
        "--k",
        "2",
        "--batch",
        "8",
    ])
    .usage_error(&["--preset retrieval does not read --batch"]);
    // A setting of a training aid without the aid is refused too: it changed nothing.
    let bsa = ["--bits", "8", "--k", "2"];
    for (extra, needs) in [
        (&["--final-lr-fraction", "0.5"][..], "--schedule cosine"),
        (&["--max-bit-freq", "0.9"], "--rebalance-bits"),
        (&["--neighbour-rows", "64"], "--neighbour-weight"),
        (&["--probe-queries", "10"], "--monitor"),
    ] {
        train(&[&bsa[..], extra].concat()).usage_error(&[extra[0], "no effect without", needs]);
    }
    assert!(!t.exists("u.safetensors"));
    // TopK accepts --alpha and --target without effect, and records what it trained with.
    let out = train(&[
        "--method", "topk", "--bits", "8", "--k", "2", "--alpha", "5", "--target", "masked",
        "--epochs", "1", "--json", "-q",
    ])
    .ok();
    let summary = crate::util::json_lines(&out.stdout).pop().unwrap();
    assert_eq!(
        (summary["alpha"].as_f64(), summary["target"].as_str()),
        (Some(0.0), Some("khot"))
    );
    std::fs::remove_file(t.path("u.safetensors")).unwrap();
    train(&[
        "--method",
        "itq",
        "--bits",
        "8",
        "--fit-rows",
        "50",
        "--itq-iterations",
        "2",
        "-q",
    ])
    .ok();
}

#[test]
fn itq_longer_than_dim_is_a_clear_error() {
    let t = TestDir::new();
    t.write_f32("x.npy", &normalised(50, 12, 64));
    t.bsa(&[
        "train",
        "--data",
        "x.npy",
        "--method",
        "itq",
        "--bits",
        "13",
        "--out",
        "m.safetensors",
    ])
    .fails_with(&["--method itq", "at most the input dimension 12", "got 13"]);
}

#[test]
fn baseline_models_work_with_eval_build_and_search() {
    let t = TestDir::new();
    t.write_f32("base.npy", &normalised(300, 12, 65));
    t.write_f32("q.npy", &normalised(10, 12, 66));
    for method in ["sign", "lsh", "itq"] {
        let model = format!("{method}.safetensors");
        let bits = if method == "lsh" { "64" } else { "12" };
        train_json(
            &t,
            &[
                "--data", "base.npy", "--method", method, "--bits", bits, "--out", &model,
            ],
        );
        let e = t
            .bsa(&["eval", "--model", &model, "--data", "base.npy", "--json"])
            .ok()
            .json();
        let rec = e["reconstruction_loss"].as_f64().unwrap();
        // Much better than knowing nothing (cosine distance 1 for unrelated directions).
        assert!(rec < 0.5, "{method}: {e}");
        let active = e["active_mean"].as_f64().unwrap();
        let n_bits: f64 = bits.parse().unwrap();
        assert!(
            active > 0.25 * n_bits && active < 0.75 * n_bits,
            "{method}: {e}"
        );
        let idx = format!("idx-{method}");
        t.bsa(&[
            "build",
            "--model",
            &model,
            "--data",
            "base.npy",
            "--vectors",
            "--out",
            &idx,
            "-q",
        ])
        .ok();
        let out = t
            .bsa(&[
                "search",
                "--index",
                &idx,
                "--queries",
                "q.npy",
                "--k",
                "5",
                "--rescore",
                "4",
            ])
            .ok();
        assert_eq!(out.stdout.lines().count(), 10, "{method}");
        // bsa info shows the model's method and bits, and no K: a baseline has none.
        let info = t.bsa(&["info", "--index", &idx, "--json"]).ok().json();
        let want = serde_json::json!({"method": method, "bits": n_bits as u64, "dim": 12});
        assert_eq!(info["model_config"], want, "{method}");
    }
}

/// Cosine top-k in f64 by a stable sort (ties keep the lower id), with the sorted scores.
fn brute_top_k(base: &Matrix, queries: &Matrix, k: usize) -> Vec<(Vec<i32>, Vec<f64>)> {
    let unit = |r: &[f32]| {
        let n = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        r.iter().map(|&v| v as f64 / n).collect::<Vec<f64>>()
    };
    let b: Vec<Vec<f64>> = (0..base.n).map(|i| unit(base.row(i))).collect();
    (0..queries.n)
        .map(|qi| {
            let q = unit(queries.row(qi));
            let s: Vec<f64> = b
                .iter()
                .map(|r| r.iter().zip(&q).map(|(a, c)| a * c).sum())
                .collect();
            let mut order: Vec<usize> = (0..base.n).collect();
            order.sort_by(|&a, &c| s[c].partial_cmp(&s[a]).unwrap());
            order.truncate(k);
            (
                order.iter().map(|&i| i as i32).collect(),
                order.iter().map(|&i| s[i]).collect(),
            )
        })
        .collect()
}

#[test]
fn groundtruth_writes_int32_exact_top_k_with_ties_to_lower_ids() {
    let t = TestDir::new();
    let mut base = normalised(500, 16, 67);
    // Exact duplicates: equal scores, so the lower id must come first.
    for (dst, src) in [(400, 7), (250, 7), (499, 0), (120, 33)] {
        let row = base.row(src).to_vec();
        base.row_mut(dst).copy_from_slice(&row);
    }
    let mut queries = normalised(30, 16, 68);
    for (q, b) in [(0, 7), (1, 0), (2, 33)] {
        let row = base.row(b).to_vec();
        queries.row_mut(q).copy_from_slice(&row);
    }
    t.write_f32("base.npy", &base);
    t.write_f32("q.npy", &queries);
    let s = t
        .bsa(&[
            "groundtruth",
            "--base",
            "base.npy",
            "--queries",
            "q.npy",
            "--k",
            "10",
            "--out",
            "gt.npy",
            "--json",
            "-q",
        ])
        .ok()
        .json();
    assert_eq!(
        (s["n_base"].as_u64(), s["n_queries"].as_u64()),
        (Some(500), Some(30))
    );
    let (descr, rows, cols, bytes) = read_npy_2d(&t.read("gt.npy"));
    assert_eq!((descr.as_str(), rows, cols), ("<i4", 30, 10));
    let got: Vec<i32> = bytes
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let want = brute_top_k(&base, &queries, 10);
    let mut ties = 0;
    for (qi, (ids, scores)) in want.iter().enumerate() {
        for w in scores.windows(2) {
            // Distinct scores must be far apart compared with float32 rounding, or the fixture
            // cannot tell right from wrong: then pick another seed.
            assert!(w[0] == w[1] || w[0] - w[1] > 1e-5, "near tie in query {qi}");
            ties += (w[0] == w[1]) as usize;
        }
        assert_eq!(&got[qi * 10..(qi + 1) * 10], ids.as_slice(), "query {qi}");
    }
    assert!(ties >= 4, "the fixture should hold exact ties");
}

#[test]
fn groundtruth_bad_inputs_are_clear_errors() {
    let t = TestDir::new();
    let mut base = normalised(20, 8, 69);
    t.write_f32("base.npy", &base);
    t.write_f32("q.npy", &normalised(3, 8, 70));
    t.write_f32("q9.npy", &normalised(3, 9, 70));
    let gt = |b: &str, q: &str, k: &str| {
        t.bsa(&[
            "groundtruth",
            "--base",
            b,
            "--queries",
            q,
            "--k",
            k,
            "--out",
            "gt.npy",
        ])
    };
    gt("base.npy", "q.npy", "0").fails_with(&["--k must be at least 1"]);
    // A k whose padded output cannot be held is refused before the work.
    for huge in ["100000000000000", "18446744073709551615"] {
        gt("base.npy", "q.npy", huge).fails_with(&["do not fit in memory", "fewer neighbours"]);
    }
    gt("base.npy", "q9.npy", "5").fails_with(&["q9.npy", "9 columns", "base.npy", "8"]);
    base.row_mut(4).fill(0.0);
    t.write_f32("zero.npy", &base);
    gt("zero.npy", "q.npy", "5").fails_with(&["zero.npy", "row 4", "L2 norm is 0"]);
    assert!(!t.exists("gt.npy"));
    // A k past the base's rows is padded with -1, as search results are (and Python's
    // bsa.groundtruth): the first 20 are the whole base in order.
    let ids = |k: &str| {
        gt("base.npy", "q.npy", k).ok();
        let (descr, rows, cols, bytes) = read_npy_2d(&t.read("gt.npy"));
        assert_eq!((descr.as_str(), rows), ("<i4", 3));
        let v: Vec<i32> = bytes
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (cols, v)
    };
    let (cols, padded) = ids("25");
    let (_, whole) = ids("20");
    assert_eq!(cols, 25);
    for q in 0..3 {
        assert_eq!(padded[q * 25..q * 25 + 20], whole[q * 20..(q + 1) * 20]);
        assert!(padded[q * 25 + 20..(q + 1) * 25].iter().all(|&i| i == -1));
        let mut sorted = whole[q * 20..(q + 1) * 20].to_vec();
        sorted.sort();
        assert_eq!(sorted, (0..20).collect::<Vec<i32>>());
    }
}
