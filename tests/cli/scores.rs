//! `bsa build --inverted` and `bsa search --mode inverted --score ...`: inverted search prints
//! exactly what the flat scan prints for every score, the overlap scores equal a brute-force
//! ranking of independently computed codes, ADC and soft scores agree with an f64 computation
//! from the safetensors file, `--rescore` combines with every score, and misuse is refused.

use crate::util::{Matrix, TestDir, Weights, json_lines, normalised, npy_bytes, sign_code};

const N: usize = 300;
const DIM: usize = 12;
const BITS: usize = 48;

/// A trained 48-bit model, base and query files, and an index with vectors and posting lists.
fn setup() -> TestDir {
    let t = TestDir::new();
    t.write_f32("base.npy", &normalised(N, DIM, 43));
    t.write_f32("q.npy", &normalised(20, DIM, 143));
    t.train("base.npy", "m.safetensors", BITS, 6, &[]);
    t.bsa(&[
        "build",
        "--model",
        "m.safetensors",
        "--data",
        "base.npy",
        "--vectors",
        "--inverted",
        "--out",
        "idx",
        "-q",
    ])
    .ok();
    t
}

fn search(t: &TestDir, extra: &[&str]) -> String {
    let mut args = vec!["search", "--index", "idx", "--queries", "q.npy", "--k", "7"];
    args.extend_from_slice(extra);
    t.bsa(&args).ok().stdout
}

fn codes(w: &Weights, x: &Matrix) -> Vec<Vec<bool>> {
    (0..x.n)
        .map(|i| sign_code(&w.pre_activations(x.row(i))))
        .collect()
}

fn field<T: serde::de::DeserializeOwned>(v: &serde_json::Value, name: &str) -> T {
    serde_json::from_value(v[name].clone()).unwrap_or_else(|e| panic!("{name}: {e} in {v}"))
}

#[test]
fn inverted_prints_exactly_what_flat_prints_for_every_score() {
    let t = setup();
    for score in ["hamming", "cosine", "jaccard", "adc", "soft"] {
        for rescore in [None, Some("5")] {
            let mut extra = vec!["--score", score];
            if let Some(r) = rescore {
                extra.extend_from_slice(&["--rescore", r]);
            }
            let flat = search(&t, &extra);
            extra.extend_from_slice(&["--mode", "inverted"]);
            let inv = search(&t, &extra);
            assert_eq!(inv, flat, "--score {score} --rescore {rescore:?}");
            let got = json_lines(&flat);
            assert_eq!(got.len(), 20);
            let has_scores = score != "hamming" || rescore.is_some();
            assert_eq!(
                got[0].get("scores").is_some(),
                has_scores,
                "{score}: {}",
                got[0]
            );
        }
    }
    // Hamming output is unchanged by the new options: no "scores".
    assert_eq!(
        search(&t, &[]),
        search(&t, &["--score", "hamming", "--mode", "inverted"])
    );
    // --stats reports how the inverted queries were answered.
    let out = t
        .bsa(&[
            "search",
            "--index",
            "idx",
            "--queries",
            "q.npy",
            "--mode",
            "inverted",
            "--score",
            "cosine",
            "--stats",
        ])
        .ok();
    let st: serde_json::Value = serde_json::from_str(out.stderr.trim()).unwrap();
    assert_eq!(st["score"], "cosine");
    assert_eq!(
        st["inverted_queries"].as_u64().unwrap() + st["flat_fallback_queries"].as_u64().unwrap(),
        20
    );
    assert_eq!(st["bitmap_queries"], 0, "only Hamming reads the bitmaps");
    // These 48-bit codes set about half their bits: `bsa build` stored the lists as bitmaps
    // too; with or without them the output is the flat scan's.
    let stats = |index: &str| -> serde_json::Value {
        let out = t
            .bsa(&[
                "search",
                "--index",
                index,
                "--queries",
                "q.npy",
                "--k",
                "7",
                "--mode",
                "inverted",
                "--stats",
            ])
            .ok();
        let st: serde_json::Value = serde_json::from_str(out.stderr.trim()).unwrap();
        assert_eq!(out.stdout, search(&t, &[]), "{index}");
        st
    };
    assert!(t.path("idx/bitmaps.bin").exists());
    // (300 codes are too few for either side to beat a scan: queries fall back to the flat
    // scan; the library tests force the bitmap path, index/tests/inverted.rs.)
    let st = stats("idx");
    assert!(st["bitmap_queries"].as_u64().unwrap() <= st["inverted_queries"].as_u64().unwrap());
    t.bsa(&[
        "build",
        "--model",
        "m.safetensors",
        "--data",
        "base.npy",
        "--inverted",
        "--no-bitmaps",
        "--out",
        "plain",
        "-q",
    ])
    .ok();
    assert!(!t.path("plain/bitmaps.bin").exists());
    assert_eq!(stats("plain")["bitmap_queries"], 0);
    // --bitmaps without posting lists is refused with a hint.
    t.bsa(&[
        "build",
        "--model",
        "m.safetensors",
        "--data",
        "base.npy",
        "--no-inverted",
        "--bitmaps",
        "--out",
        "bad",
        "-q",
    ])
    .fails_with(&["--bitmaps", "--inverted"]);
}

#[test]
fn overlap_scores_equal_brute_force_with_ties_by_row() {
    let t = setup();
    let w = Weights::load(&t.path("m.safetensors"));
    let base = codes(&w, &normalised(N, DIM, 43));
    let queries = codes(&w, &normalised(20, DIM, 143));
    for score in ["cosine", "jaccard"] {
        let got = json_lines(&search(&t, &["--score", score, "--mode", "inverted"]));
        for (qi, q) in queries.iter().enumerate() {
            let m = q.iter().filter(|&&x| x).count() as u32;
            let mut all: Vec<(f32, u64, u32)> = base
                .iter()
                .enumerate()
                .map(|(r, b)| {
                    let p = b.iter().filter(|&&x| x).count() as u32;
                    let c = q.iter().zip(b).filter(|(x, y)| **x && **y).count() as u32;
                    let d = q.iter().zip(b).filter(|(x, y)| x != y).count() as u32;
                    let s = if score == "cosine" {
                        if m == 0 || p == 0 {
                            0.0
                        } else {
                            (c as f64 / ((m * p) as f64).sqrt()) as f32
                        }
                    } else if m + p - c == 0 {
                        0.0
                    } else {
                        (c as f64 / (m + p - c) as f64) as f32
                    };
                    (s, r as u64, d)
                })
                .collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let ids: Vec<u64> = field(&got[qi], "ids");
            let scores: Vec<f32> = field(&got[qi], "scores");
            let d: Vec<u32> = field(&got[qi], "distances");
            assert_eq!(
                ids,
                all[..7].iter().map(|x| x.1).collect::<Vec<_>>(),
                "{score} q{qi}"
            );
            assert_eq!(
                scores,
                all[..7].iter().map(|x| x.0).collect::<Vec<_>>(),
                "{score} q{qi}"
            );
            assert_eq!(
                d,
                all[..7].iter().map(|x| x.2).collect::<Vec<_>>(),
                "{score} q{qi}"
            );
        }
    }
}

/// Independent f64 scores of every base code for one query: ADC `cos(q, Wd b + bd)` or soft
/// `sigmoid(We q + be) . b`.
fn float_scores(w: &Weights, base: &[Vec<bool>], q: &[f32], adc: bool) -> Vec<f64> {
    let h = w.pre_activations(q);
    base.iter()
        .map(|b| {
            if adc {
                let x = w.decode(b);
                let dot: f64 = x.iter().zip(q).map(|(a, &b)| a * b as f64).sum();
                let nx = x.iter().map(|a| a * a).sum::<f64>().sqrt();
                dot / nx // q is unit length; the norm of the query does not change the order
            } else {
                h.iter()
                    .zip(b)
                    .filter(|&(_, &s)| s)
                    .map(|(p, _)| 1.0 / (1.0 + (-p.h).exp()))
                    .sum()
            }
        })
        .collect()
}

#[test]
fn rescored_adc_picks_candidates_with_integer_tables_and_prints_exact_cosines() {
    let t = setup();
    let xb = normalised(N, DIM, 43);
    let xq = normalised(20, DIM, 143);
    let stats = |extra: &[&str]| -> (String, serde_json::Value) {
        let mut args = vec!["--score", "adc", "--stats"];
        args.extend_from_slice(extra);
        let mut all = vec!["search", "--index", "idx", "--queries", "q.npy", "--k", "7"];
        all.extend_from_slice(&args);
        let out = t.bsa(&all).ok();
        (out.stdout, serde_json::from_str(out.stderr.trim()).unwrap())
    };
    let (_, plain) = stats(&[]);
    assert_eq!(plain["adc_tables"], "f32");
    assert!(plain.get("adc_tables_kernel").is_none(), "{plain}");
    let (out, rescored) = stats(&["--rescore", "5"]);
    assert_eq!(rescored["adc_tables"], "int8");
    // The integer kernel, one of the family's (BSA_KERNEL or the CPU's best).
    let kernel = rescored["adc_tables_kernel"].as_str().unwrap();
    let family = rescored["kernel_family"].as_str().unwrap();
    let of_family: &[&str] = match family {
        "avx512" => &["amx", "avx512-vnni", "avx512"],
        "avx2" => &["avx2"],
        _ => &["portable"],
    };
    assert!(of_family.contains(&kernel), "{kernel} under {family}");
    for (qi, line) in json_lines(&out).iter().enumerate() {
        let ids: Vec<u64> = field(line, "ids");
        let scores: Vec<f32> = field(line, "scores");
        assert_eq!(ids.len(), 7);
        for (&id, &s) in ids.iter().zip(&scores) {
            let exact: f64 = (0..DIM)
                .map(|d| f64::from(xb.row(id as usize)[d]) * f64::from(xq.row(qi)[d]))
                .sum();
            assert!(
                (f64::from(s) - exact).abs() < 1e-5,
                "q{qi} id {id}: {s} vs {exact}"
            );
        }
        assert!(
            scores.windows(2).all(|p| p[0] >= p[1]),
            "q{qi}: not descending"
        );
    }
}

#[test]
fn adc_and_soft_agree_with_an_f64_computation() {
    let t = setup();
    let w = Weights::load(&t.path("m.safetensors"));
    let xb = normalised(N, DIM, 43);
    let xq = normalised(20, DIM, 143);
    let base = codes(&w, &xb);
    for (score, adc) in [("adc", true), ("soft", false)] {
        let got = json_lines(&search(&t, &["--score", score, "--mode", "inverted"]));
        for (qi, line) in got.iter().enumerate() {
            let want = float_scores(&w, &base, xq.row(qi), adc);
            let ids: Vec<u64> = field(line, "ids");
            let scores: Vec<f32> = field(line, "scores");
            let mut sorted = want.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let tol = 1e-4 * sorted[0].abs().max(1.0);
            for (rank, (&id, &s)) in ids.iter().zip(&scores).enumerate() {
                let exact = want[id as usize];
                assert!(
                    (s as f64 - exact).abs() <= tol,
                    "{score} q{qi} id {id}: {s} vs {exact}"
                );
                // The rank-th best score, up to rounding: nothing much better was left out.
                assert!(
                    exact >= sorted[rank] - 2.0 * tol,
                    "{score} q{qi} rank {rank}"
                );
            }
            assert!(
                scores.windows(2).all(|p| p[0] >= p[1]),
                "{score}: not descending"
            );
        }
    }
}

#[test]
fn misuse_is_refused_with_a_reason() {
    let t = setup();
    t.bsa(&[
        "encode",
        "--model",
        "m.safetensors",
        "--data",
        "q.npy",
        "--out",
        "qc.npy",
    ])
    .ok();
    t.bsa(&[
        "search",
        "--index",
        "idx",
        "--query-codes",
        "qc.npy",
        "--score",
        "adc",
    ])
    .fails_with(&["score adc needs float queries"]);
    t.bsa(&[
        "search",
        "--index",
        "idx",
        "--queries",
        "q.npy",
        "--mode",
        "hnsw",
        "--score",
        "cosine",
    ])
    .fails_with(&["mode hnsw", "no HNSW graph"]);
    t.bsa(&[
        "search",
        "--index",
        "idx",
        "--queries",
        "q.npy",
        "--score",
        "jaccard",
        "--max-dist",
        "3",
    ])
    .fails_with(&["maximum distance", "hamming"]);
    t.bsa(&[
        "search",
        "--index",
        "idx",
        "--queries",
        "q.npy",
        "--score",
        "bogus",
    ])
    .usage_error(&["bogus"]);
    // Codes without a model: no lists unless asked (48-bit codes are dense), no ADC norms.
    t.bsa(&[
        "encode",
        "--model",
        "m.safetensors",
        "--data",
        "base.npy",
        "--out",
        "bc.npy",
    ])
    .ok();
    t.bsa(&["build", "--codes", "bc.npy", "--out", "plain", "-q"])
        .ok();
    t.bsa(&[
        "search",
        "--index",
        "plain",
        "--query-codes",
        "qc.npy",
        "--mode",
        "inverted",
    ])
    .fails_with(&["plain", "--inverted"]);
    // The same codes with lists forced: inverted Hamming search equals flat.
    t.bsa(&[
        "build",
        "--codes",
        "bc.npy",
        "--inverted",
        "--out",
        "forced",
        "-q",
    ])
    .ok();
    let a = t
        .bsa(&[
            "search",
            "--index",
            "forced",
            "--query-codes",
            "qc.npy",
            "--mode",
            "inverted",
            "--score",
            "jaccard",
        ])
        .ok();
    let b = t
        .bsa(&[
            "search",
            "--index",
            "forced",
            "--query-codes",
            "qc.npy",
            "--score",
            "jaccard",
        ])
        .ok();
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn sparse_codes_get_posting_lists_automatically() {
    let t = TestDir::new();
    // 2000 codes of 512 bits with 3 bits set: far sparser than the auto rule's bound.
    let (n, bytes) = (2000usize, 64usize);
    let mut data = vec![0u8; n * bytes];
    for r in 0..n {
        for j in [r % 512, (r * 7 + 3) % 512, (r * 13 + 100) % 512] {
            data[r * bytes + j / 8] |= 1 << (j % 8);
        }
    }
    t.write(
        "codes.npy",
        &npy_bytes("|u1", &format!("({n}, {bytes})"), &data),
    );
    t.write("q.npy", &npy_bytes("|u1", "(3, 64)", &data[..3 * bytes]));
    t.bsa(&["build", "--codes", "codes.npy", "--out", "auto", "-q"])
        .ok();
    let m: serde_json::Value = serde_json::from_slice(&t.read("auto/manifest.json")).unwrap();
    assert_eq!(m["manifest"]["extra"]["inverted"]["built"], true, "{m}");
    assert!(t.exists("auto/inverted.bin"));
    let inv = t
        .bsa(&[
            "search",
            "--index",
            "auto",
            "--query-codes",
            "q.npy",
            "--mode",
            "inverted",
            "--k",
            "4",
        ])
        .ok();
    let flat = t
        .bsa(&[
            "search",
            "--index",
            "auto",
            "--query-codes",
            "q.npy",
            "--k",
            "4",
        ])
        .ok();
    assert_eq!(inv.stdout, flat.stdout);
    let first = json_lines(&flat.stdout);
    assert_eq!(field::<Vec<u64>>(&first[0], "ids")[0], 0);
    // --no-inverted wins over the rule.
    t.bsa(&[
        "build",
        "--codes",
        "codes.npy",
        "--no-inverted",
        "--out",
        "none",
        "-q",
    ])
    .ok();
    assert!(!t.exists("none/inverted.bin"));
}

/// ADC scores are cosines whatever the queries' length: queries scaled by 3 (and by 1/8) get
/// the same neighbours and, up to rounding, the same scores as the unit ones, and
/// `--min-score` bounds those cosines. Before, the scores were |q| times the cosine.
#[test]
fn adc_scores_are_cosines_for_queries_of_any_length() {
    let t = setup();
    let q = normalised(20, DIM, 143);
    for scale in [3.0f32, 0.125] {
        let mut scaled = q.clone();
        scaled.data.iter_mut().for_each(|v| *v *= scale);
        t.write_f32("qs.npy", &scaled);
        for extra in [
            &["--score", "adc"][..],
            &["--score", "adc", "--min-score", "0.1"][..],
        ] {
            let unit = json_lines(&search(&t, extra));
            let mut args = vec![
                "search",
                "--index",
                "idx",
                "--queries",
                "qs.npy",
                "--k",
                "7",
            ];
            args.extend_from_slice(extra);
            let other = json_lines(&t.bsa(&args).ok().stdout);
            assert_eq!(unit.len(), other.len());
            for (a, b) in unit.iter().zip(&other) {
                let (ia, ib): (Vec<u64>, Vec<u64>) = (field(a, "ids"), field(b, "ids"));
                assert_eq!(ia, ib, "x{scale} {extra:?}");
                let (sa, sb): (Vec<f32>, Vec<f32>) = (field(a, "scores"), field(b, "scores"));
                for (x, y) in sa.iter().zip(&sb) {
                    assert!((x - y).abs() <= 1e-6, "x{scale} {extra:?}: {x} vs {y}");
                }
            }
        }
    }
}
