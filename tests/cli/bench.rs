//! `bsa bench`: its recall figures against a direct computation on a small set (sign codes by
//! brute-force Hamming distance with ties to the lower row, truth by f64 cosine), and its report
//! files.

use serde_json::Value;

use crate::util::{Matrix, TestDir, normalised, npy_bytes, read_npy_2d};

/// The `k` rows of `base` most similar to `q` by cosine, in f64, ties to the lower row.
fn cosine_top(base: &Matrix, q: &[f32], k: usize) -> Vec<usize> {
    let dot = |a: &[f32], b: &[f32]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum()
    };
    let qn = dot(q, q).sqrt();
    let mut s: Vec<(f64, usize)> = (0..base.n)
        .map(|i| {
            let r = base.row(i);
            (dot(r, q) / (dot(r, r).sqrt() * qn), i)
        })
        .collect();
    s.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    s.into_iter().take(k).map(|(_, i)| i).collect()
}

/// Sign bits of a row: bit j = x_j > 0.
fn sign_bits(x: &[f32]) -> Vec<bool> {
    x.iter().map(|&v| v > 0.0).collect()
}

/// The `k` base codes nearest to `q` by Hamming distance, ties to the lower row, and whether a
/// tie crosses the k-th place (so the tie rule matters).
fn hamming_top(base: &[Vec<bool>], q: &[bool], k: usize) -> (Vec<usize>, bool) {
    let mut d: Vec<(usize, usize)> = base
        .iter()
        .enumerate()
        .map(|(i, b)| (b.iter().zip(q).filter(|(x, y)| x != y).count(), i))
        .collect();
    d.sort();
    let tie = k < d.len() && d[k - 1].0 == d[k].0;
    (d.iter().take(k).map(|&(_, i)| i).collect(), tie)
}

fn recall(got: &[Vec<usize>], truth: &[Vec<usize>], k: usize) -> f64 {
    let hits: usize = got
        .iter()
        .zip(truth)
        .map(|(g, t)| g.iter().take(k).filter(|i| t[..k].contains(i)).count())
        .sum();
    hits as f64 / (k * got.len()) as f64
}

fn cell<'a>(results: &'a Value, method: &str) -> &'a Value {
    results
        .as_array()
        .expect("results.json is an array of cells")
        .iter()
        .find(|c| c["method"] == method)
        .unwrap_or_else(|| panic!("no {method} cell in {results}"))
}

#[test]
fn bench_recall_matches_a_direct_computation_with_ties() {
    let t = TestDir::new();
    let base = normalised(500, 16, 901);
    let queries = normalised(50, 16, 902);
    t.write_f32("base.npy", &base);
    t.write_f32("q.npy", &queries);
    t.bsa(&[
        "groundtruth",
        "--base",
        "base.npy",
        "--queries",
        "q.npy",
        "--k",
        "100",
        "--out",
        "gt.npy",
        "-q",
    ])
    .ok();

    // The direct computation.
    let truth: Vec<Vec<usize>> = (0..queries.n)
        .map(|i| cosine_top(&base, queries.row(i), 100))
        .collect();
    let base_codes: Vec<Vec<bool>> = (0..base.n).map(|i| sign_bits(base.row(i))).collect();
    let mut ties = 0;
    let got: Vec<Vec<usize>> = (0..queries.n)
        .map(|i| {
            let (top, tie) = hamming_top(&base_codes, &sign_bits(queries.row(i)), 100);
            ties += usize::from(tie || hamming_top(&base_codes, &sign_bits(queries.row(i)), 10).1);
            top
        })
        .collect();
    assert!(
        ties > 10,
        "16-bit codes should tie at the cut-off often ({ties} queries)"
    );

    for gt in [Some("gt.npy"), None] {
        let out = if gt.is_some() { "res-gt" } else { "res" };
        let mut args = vec![
            "bench",
            "--base",
            "base.npy",
            "--queries",
            "q.npy",
            "--methods",
            "sign,bsa",
            "--bits",
            "32",
            "--k",
            "4",
            "--epochs",
            "1",
            "--threads",
            "1",
            "-q",
            "--out",
            out,
        ];
        if let Some(g) = gt {
            args.extend(["--gt", g]);
        }
        t.bsa(&args).ok();
        let results: Value =
            serde_json::from_slice(&t.read(&format!("{out}/results.json"))).unwrap();
        assert_eq!(results.as_array().unwrap().len(), 2, "{results}");
        let sign = cell(&results, "sign");
        assert_eq!(sign["bits"], 16);
        for (key, k) in [
            ("recall_at_1", 1),
            ("recall_at_10", 10),
            ("recall_at_100", 100),
        ] {
            let want = recall(&got, &truth, k);
            assert_eq!(sign[key].as_f64().unwrap(), want, "{key} of {sign}");
        }
        // Rescoring: the Hamming top 10 x o re-ranked by exact cosine (f64 here, f32 in bsa).
        for (key, o) in [("x2", 2), ("x4", 4), ("x10", 10)] {
            let rescored: Vec<Vec<usize>> = got
                .iter()
                .enumerate()
                .map(|(qi, cands)| {
                    let sub = Matrix {
                        n: 10 * o,
                        dim: base.dim,
                        data: cands[..10 * o]
                            .iter()
                            .flat_map(|&r| base.row(r).to_vec())
                            .collect(),
                    };
                    cosine_top(&sub, queries.row(qi), 10)
                        .into_iter()
                        .map(|p| cands[p])
                        .collect()
                })
                .collect();
            let want = recall(&rescored, &truth, 10);
            assert_eq!(
                sign["recall_at_10_rescored"][key].as_f64().unwrap(),
                want,
                "rescored {key} of {sign}"
            );
        }
        // Jaccard and the intersection, descending, ties to the lower row (exact fractions
        // here: 16-bit codes make distinct ones distinct in f32 too).
        let by_overlap = |jaccard: bool| -> Vec<Vec<usize>> {
            (0..queries.n)
                .map(|i| {
                    let q = sign_bits(queries.row(i));
                    let mut rows: Vec<(u32, u32, usize)> = base_codes
                        .iter()
                        .enumerate()
                        .map(|(r, b)| {
                            let and = q.iter().zip(b).filter(|(x, y)| **x && **y).count();
                            let or = q.iter().zip(b).filter(|(x, y)| **x || **y).count();
                            (and as u32, if jaccard { or as u32 } else { 1 }, r)
                        })
                        .collect();
                    // a/b > c/d as a*d > c*b.
                    rows.sort_by(|x, y| (y.0 * x.1).cmp(&(x.0 * y.1)).then(x.2.cmp(&y.2)));
                    rows[..10].iter().map(|r| r.2).collect()
                })
                .collect()
        };
        let others = &sign["other_scores"];
        assert_eq!(
            others["jaccard"].as_f64().unwrap(),
            recall(&by_overlap(true), &truth, 10)
        );
        assert_eq!(
            others["overlap"].as_f64().unwrap(),
            recall(&by_overlap(false), &truth, 10)
        );
        assert!(
            (0.0..=1.0).contains(&others["soft"].as_f64().unwrap()),
            "{others}"
        );
        assert_eq!(sign["bytes_dense"], 2.0);
        assert!(sign["bytes_sparse"].is_null());
        let bsa = cell(&results, "bsa");
        assert_eq!(
            (bsa["bits"].as_u64(), bsa["k"].as_u64()),
            (Some(32), Some(4))
        );
        assert_eq!(bsa["epochs"], 1);
        for key in ["recall_at_10", "recall_at_10_cosine", "recall_at_10_adc"] {
            let v = bsa[key].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{key} of {bsa}");
        }
        for key in ["reconstruction_loss", "active_mean", "dead_features"] {
            assert!(bsa["metrics"][key].is_number(), "{key} of {bsa}");
        }
        for file in [
            "report.md",
            "recall_vs_bytes.svg",
            "recall_vs_k.svg",
            "loss_vs_k.svg",
            "active_bits_hist.svg",
            "bit_frequency.svg",
        ] {
            let bytes = t.read(&format!("{out}/{file}"));
            assert!(!bytes.is_empty(), "{file} is empty");
            if file.ends_with(".svg") {
                assert!(String::from_utf8_lossy(&bytes).contains("<svg"), "{file}");
            }
        }
        let report = String::from_utf8(t.read(&format!("{out}/report.md"))).unwrap();
        assert!(report.contains("| sign | 16 | - |"), "{report}");
        assert!(report.contains("## Other scores"), "{report}");
    }
}

/// A bench killed before its clean-up (a second Ctrl-C) left its cells' indexes in the
/// temporary directory for good: the next bench removes a dead bench's folder (its marker file
/// unlocked), saying so, and keeps a live one's (marker locked, whatever its process id says)
/// and folders that only look like one; its own goes when it ends.
#[test]
fn a_killed_benchs_temporary_folder_is_removed_by_the_next() {
    let t = TestDir::new();
    t.write_f32("base.npy", &normalised(60, 16, 1));
    let marked = |dir: &str| {
        std::fs::create_dir_all(t.path(dir)).unwrap();
        std::fs::File::create(t.path(&format!("{dir}/.bsa-bench-lock"))).unwrap()
    };
    marked("tmp/bsa-bench-4242-aB3xZ9");
    let live = marked("tmp/bsa-bench-4243-Qw7rT1");
    live.lock().unwrap();
    marked("tmp/bsa-bench-2024-results"); // a user's folder, not tempfile's name
    std::fs::create_dir_all(t.path("tmp/bsa-bench-4244-nomark")).unwrap();
    let tmp = t.path("tmp");
    let out = t.bsa_env(
        &[
            "bench",
            "--base",
            "base.npy",
            "--queries",
            "base.npy",
            "--methods",
            "sign",
            "--hnsw",
            "none",
            "-q",
            "--out",
            "r",
        ],
        &[("TMPDIR", tmp.to_str().unwrap())],
    );
    let out = out.ok();
    assert!(
        out.stderr.contains("removed") && out.stderr.contains("bsa-bench-4242-aB3xZ9"),
        "{}",
        out.stderr
    );
    let mut left: Vec<String> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "bsa-bench-2024-results",
            "bsa-bench-4243-Qw7rT1",
            "bsa-bench-4244-nomark"
        ]
    );
}

/// A temporary folder or `--cache` that cannot be made is said before the ground truth is
/// computed (minutes on a large base), TMPDIR named, and nothing is reported.
#[test]
fn bench_says_at_once_where_it_cannot_work() {
    let t = TestDir::new();
    t.write_f32("base.npy", &normalised(60, 16, 1));
    t.write("file", b"");
    let bench = |extra: &[&str], env: &[(&str, &str)]| {
        let args = [
            &[
                "bench",
                "--base",
                "base.npy",
                "--queries",
                "base.npy",
                "--methods",
                "sign",
                "--out",
                "r",
            ][..],
            extra,
        ]
        .concat();
        t.bsa_env(&args, env)
    };
    let none = t.path("file/none");
    let msg = bench(&[], &[("TMPDIR", none.to_str().unwrap())])
        .fails_with(&["temporary folder", "set TMPDIR", "file/none"])
        .to_string();
    assert!(!msg.contains("ground truth"), "{msg}");
    bench(&["--cache", "file/cache"], &[]).fails_with(&["--cache", "file/cache"]);
    assert!(!t.exists("r"));
    // A --cache this run made is removed when it fails before writing there (a bad --gt).
    t.write("gt.npy", b"not a ground truth");
    bench(&["--cache", "new/cache", "--gt", "gt.npy"], &[]).fails_with(&["gt.npy"]);
    assert!(!t.exists("new/cache"));
    // A folder above --out that cannot be made is said as --out's, then named.
    let o = t.bsa(&[
        "bench",
        "--base",
        "base.npy",
        "--queries",
        "base.npy",
        "--out",
        "file/sub/r",
    ]);
    o.fails_with(&["--out file/sub/r: file/sub: "]);
}

/// Every cell reports recall@10: fewer than ten base vectors is refused, not divided wrongly.
#[test]
fn bench_needs_ten_base_vectors() {
    let t = TestDir::new();
    t.write_f32("base.npy", &normalised(9, 8, 1));
    t.bsa(&[
        "bench",
        "--base",
        "base.npy",
        "--queries",
        "base.npy",
        "--out",
        "res",
    ])
    .fails_with(&["base.npy: 9 base vectors", "at least 10"]);
    assert!(!t.exists("res/results.json"));
}

#[test]
fn bench_rejects_unknown_methods() {
    let t = TestDir::new();
    t.write_f32("base.npy", &normalised(50, 8, 1));
    t.bsa(&[
        "bench",
        "--base",
        "base.npy",
        "--queries",
        "base.npy",
        "--methods",
        "nope",
        "--out",
        "res",
    ])
    .fails_with(&["nope", "sign"]);
}

/// Sizes the grid cannot take as given are said, a method left with no cell is refused, and
/// what would fail after the ground truth is refused before it.
#[test]
fn bench_says_what_it_drops_and_checks_first() {
    let t = TestDir::new();
    t.write_f32("base.npy", &normalised(60, 16, 1));
    let bench = |extra: &[&str]| {
        let mut args = vec!["bench", "--base", "base.npy", "--queries", "base.npy"];
        args.extend_from_slice(extra);
        t.bsa(&args)
    };
    let base = ["--hnsw", "none", "--epochs", "1", "-q"];
    let with = |extra: &[&'static str]| [&base[..], extra].concat();
    bench(&with(&[
        "--methods",
        "sign,bsa",
        "--bits",
        "32",
        "--k",
        "40",
        "--out",
        "r1",
    ]))
    .fails_with(&["--methods bsa: no cell", "K = 40 skipped at N = 32"]);
    let out = bench(&with(&[
        "--methods",
        "sign,itq,bsa",
        "--bits",
        "32",
        "--k",
        "4,40",
        "--out",
        "r2",
    ]))
    .ok();
    for note in [
        "sign: N is the data's dimension, 16 (--bits 32 does not apply)",
        "itq: N = 32 is above the data's dimension; run at N = 16",
        "bsa: K = 40 skipped at N = 32",
    ] {
        assert!(out.stderr.contains(note), "{note:?}: {}", out.stderr);
    }
    assert!(!out.stderr.contains("unit length"), "{}", out.stderr);
    // Rows off unit length are said once per file when a method's codes depend on the length
    // (ITQ's do; sign bits' do not).
    let mut long = normalised(60, 16, 1);
    long.data.iter_mut().take(16 * 3).for_each(|v| *v *= 3.0);
    t.write_f32("long.npy", &long);
    let long_bench = |methods: &'static str, out: &'static str| {
        t.bsa(&[
            "bench",
            "--base",
            "long.npy",
            "--queries",
            "base.npy",
            "--methods",
            methods,
            "--hnsw",
            "none",
            "-q",
            "--out",
            out,
        ])
        .ok()
        .stderr
    };
    let err = long_bench("sign,itq", "r3");
    assert_eq!(err.matches("not of unit length").count(), 1, "{err}");
    assert!(
        err.contains("3 of 60 rows of long.npy are not of unit length"),
        "{err}"
    );
    let err = long_bench("sign", "r4");
    assert!(!err.contains("unit length"), "{err}");
    // The ground truth it computed holds the whole base of 60 (it said top-100).
    let report = String::from_utf8(t.read("r2/report.md")).unwrap();
    assert!(
        report.contains("computed (exact cosine top-60)"),
        "{report}"
    );
    t.write("afile", b"mine");
    let early = |out: crate::util::Output, needle: &str| {
        out.fails_with(&[needle]);
        assert!(!out.stderr.contains("ground truth"), "{}", out.stderr);
    };
    early(
        bench(&with(&["--methods", "sign", "--out", "afile"])),
        "--out afile: exists and is not a folder",
    );
    early(
        bench(&with(&[
            "--methods",
            "sign",
            "--cache",
            "afile",
            "--out",
            "r3",
        ])),
        "--cache afile",
    );
    early(
        bench(&[
            "--methods",
            "bsa",
            "--bits",
            "32",
            "--k",
            "4",
            "--epochs",
            "0",
            "--out",
            "r3",
            "-q",
        ]),
        "--epochs and --rounds must be at least 1",
    );
    early(
        bench(&with(&[
            "--methods",
            "sign",
            "--alphas",
            "0.5",
            "--out",
            "r4",
        ])),
        "--alphas sweeps bsa's alpha, but --methods has no bsa",
    );
    // A code length no fit takes, after one that works: refused before any cell runs (it
    // failed in its turn, the cells before it lost).
    for bits in ["0", "70000"] {
        early(
            bench(&[
                "--methods",
                "topk",
                "--bits",
                &format!("32,{bits}"),
                "--k",
                "4",
                "--out",
                "r5",
                "-q",
            ]),
            &format!("--bits: {bits} is not a code length bsa makes (1 to 65536)"),
        );
    }
    assert_eq!(t.read("afile"), b"mine");
}

#[test]
fn bench_cache_reuses_models_and_resumes_results() {
    let t = TestDir::new();
    t.write_f32("base.npy", &normalised(300, 16, 911));
    t.write_f32("q.npy", &normalised(20, 16, 912));
    // The grid of every run below: one bsa cell (two with the alpha sweep).
    const GRID: [&str; 11] = [
        "bench",
        "--base",
        "base.npy",
        "--queries",
        "q.npy",
        "--methods",
        "bsa",
        "--bits",
        "32",
        "--k",
        "4",
    ];
    let run = |out: &str, extra: &[&str]| -> Value {
        let mut args = GRID.to_vec();
        args.extend_from_slice(&[
            "--alphas",
            "0.5",
            "--epochs",
            "1",
            "--threads",
            "1",
            "--hnsw",
            "all",
            "--cache",
            "cache",
            "-q",
            "--out",
            out,
        ]);
        args.extend(extra);
        t.bsa(&args).ok();
        serde_json::from_slice(&t.read(&format!("{out}/results.json"))).unwrap()
    };
    let first = run("o1", &[]);
    let cells = first.as_array().unwrap();
    assert_eq!(cells.len(), 2, "bsa and the alpha=0.5 sweep cell: {first}");
    assert_eq!(cells[0]["alpha"], 1.0);
    assert_eq!(cells[1]["alpha"], 0.5);
    assert_eq!(cells[1]["alpha_sweep"], true);
    for c in cells {
        let h = &c["hnsw"]["points"];
        assert_eq!(h.as_array().unwrap().len(), 6, "one point per ef: {c}");
    }
    assert!(t.exists("cache/bsa-32-k4/model.safetensors"));
    assert!(t.exists("cache/bsa-32-k4-a0.5/fit.json"));
    let report = String::from_utf8(t.read("o1/report.md")).unwrap();
    assert!(report.contains("| bsa alpha=0.5 | 32 | 4 |"), "{report}");
    assert!(report.contains("## HNSW graphs"), "{report}");
    for file in [
        "alpha_recall.svg",
        "alpha_sparsity.svg",
        "recall_vs_qps.svg",
    ] {
        assert!(t.exists(&format!("o1/{file}")), "{file}");
    }

    // The models come from the cache: same fit seconds and the same codes, so the same recall;
    // the searches ran again.
    let second = run("o2", &[]);
    for (a, b) in cells.iter().zip(second.as_array().unwrap()) {
        assert_eq!(a["train_seconds"], b["train_seconds"]);
        assert_eq!(a["recall_at_10"], b["recall_at_10"]);
        assert_eq!(a["recall_at_10_adc"], b["recall_at_10_adc"]);
    }
    // --resume reuses the measurements themselves, timings included.
    let third = run("o3", &["--resume"]);
    assert_eq!(third, second);

    // --cached-only reports the finished cells and lists the others as not run, fitting nothing.
    std::fs::remove_file(t.path("cache/bsa-32-k4-a0.5/result.json")).unwrap();
    let partial = run("o5", &["--resume", "--cached-only"]);
    assert_eq!(partial.as_array().unwrap().len(), 1, "{partial}");
    assert_eq!(partial[0], third[0]);
    assert!(!t.exists("cache/bsa-32-k4-a0.5/result.json"));
    let report = String::from_utf8(t.read("o5/report.md")).unwrap();
    assert!(report.contains("**Not run yet** (1 cells"), "{report}");
    assert!(report.contains("alpha=0.5"), "{report}");

    // With no finished cell (here another cache folder) nothing is reported: the report in
    // --out stays as it was.
    let before = t.read("o5/report.md");
    let other = [
        "--epochs",
        "1",
        "--cache",
        "elsewhere",
        "--resume",
        "--cached-only",
        "-q",
        "--out",
        "o5",
    ];
    let none = t.bsa(&[&GRID[..], &other[..]].concat());
    assert_eq!(none.code, 2, "{none:#?}");
    assert!(
        none.stderr
            .contains("--cached-only: none of the 1 cells is finished in elsewhere"),
        "{none:#?}"
    );
    assert_eq!(t.read("o5/report.md"), before);

    // A finished cell whose model file is gone is not finished: --cached-only fits nothing
    // (it fitted the model again before, and said the cell was finished).
    let model = t.read("cache/bsa-32-k4/model.safetensors");
    std::fs::remove_file(t.path("cache/bsa-32-k4/model.safetensors")).unwrap();
    let rest = [
        "--alphas",
        "0.5",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--hnsw",
        "all",
        "--cache",
        "cache",
        "--resume",
        "--cached-only",
        "-q",
        "--out",
        "o7",
    ];
    let gone = t.bsa(&[&GRID[..], &rest[..]].concat());
    assert!(
        gone.stderr.contains("none of the 2 cells is finished"),
        "{gone:#?}"
    );
    assert!(
        !t.exists("cache/bsa-32-k4/model.safetensors"),
        "fitted again"
    );
    t.write("cache/bsa-32-k4/model.safetensors", &model);

    // A damaged cache entry is not trusted: the cell is fitted again, the run succeeds.
    t.write("cache/bsa-32-k4/fit.json", b"{ not json");
    t.write("cache/bsa-32-k4/model.safetensors", b"garbage");
    let fourth = run("o4", &["--resume"]);
    assert_eq!(fourth[0]["recall_at_10"], cells[0]["recall_at_10"]);
    let fit: Value = serde_json::from_slice(&t.read("cache/bsa-32-k4/fit.json")).unwrap();
    assert!(fit["train_seconds"].is_number(), "{fit}");

    // Another fit's model under a matching fit.json (two benches sharing a cache, or a kill
    // between the two writes) is not trusted either: its checksum is not the recorded one.
    let own = t.read("cache/bsa-32-k4/model.safetensors");
    let other = t.read("cache/bsa-32-k4-a0.5/model.safetensors");
    assert_ne!(own, other);
    t.write("cache/bsa-32-k4/model.safetensors", &other);
    std::fs::remove_file(t.path("cache/bsa-32-k4/result.json")).unwrap();
    let fifth = run("o6", &["--resume"]);
    assert_eq!(fifth[0]["recall_at_10"], cells[0]["recall_at_10"]);
    assert_eq!(t.read("cache/bsa-32-k4/model.safetensors"), own, "refitted");
}

#[test]
fn bench_measures_the_inverted_search_of_sparse_codes() {
    let t = TestDir::new();
    t.write_f32("base.npy", &normalised(2000, 16, 921));
    t.write_f32("q.npy", &normalised(30, 16, 922));
    t.bsa(&[
        "bench",
        "--base",
        "base.npy",
        "--queries",
        "q.npy",
        "--methods",
        "pursuit,sign",
        "--bits",
        "256",
        "--k",
        "4",
        "--rounds",
        "1",
        "--hnsw",
        "none",
        "--threads",
        "1",
        "-q",
        "--out",
        "o",
    ])
    .ok();
    let results: Value = serde_json::from_slice(&t.read("o/results.json")).unwrap();
    // 4 of 256 bits: posting lists pay, and the inverted search equals the flat one.
    let p = cell(&results, "pursuit");
    let inv = &p["inverted"];
    assert_eq!(inv["identical_to_flat"], true, "{p}");
    assert!(inv["hamming_qps"].as_f64().unwrap() > 0.0, "{p}");
    assert!(inv["expected_postings"].as_f64().unwrap() > 0.0, "{p}");
    assert_eq!(p["adc_queries"], 30);
    // Sign bits set half of their bits: no lists.
    assert!(cell(&results, "sign")["inverted"].is_null());
    let report = String::from_utf8(t.read("o/report.md")).unwrap();
    assert!(report.contains("no lists"), "{report}");
    assert!(!report.contains("NOT EQUAL"), "{report}");
}

/// A ground truth that is not this base's and these queries' exact cosine top k (another
/// order of the queries, ids repeated in a row) is refused before the grid, naming the file
/// and row: before, the report scored recall against it (a repeated id inflated recall to
/// near 1). The report replaces its folder whole (an earlier run's plots are gone, the
/// folder's other files kept), and what it cannot replace is refused before the grid.
#[test]
fn bench_checks_the_ground_truth_and_replaces_its_report_whole() {
    let t = TestDir::new();
    t.write_f32("base.npy", &normalised(60, 16, 1));
    t.bsa(&[
        "groundtruth",
        "--base",
        "base.npy",
        "--queries",
        "base.npy",
        "--k",
        "10",
        "--out",
        "gt.npy",
    ])
    .ok();
    let (descr, rows, cols, data) = read_npy_2d(&t.read("gt.npy"));
    assert_eq!((descr.as_str(), rows, cols), ("<i4", 60, 10));
    let ids: Vec<i32> = data
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let write_gt = |name: &str, ids: &[i32]| {
        let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
        t.write(name, &npy_bytes("<i4", "(60, 10)", &bytes));
    };
    let mut shifted = ids.clone();
    shifted.rotate_left(cols);
    write_gt("shifted.npy", &shifted);
    let mut repeated = ids.clone();
    repeated[3 * cols + 5] = repeated[3 * cols];
    write_gt("repeated.npy", &repeated);
    // As `bsa groundtruth` pads a k past the base's rows.
    let mut padded = ids.clone();
    padded[7 * cols + 9] = -1;
    write_gt("padded.npy", &padded);
    let bench = |gt: &str, out: &str| {
        t.bsa(&[
            "bench",
            "--base",
            "base.npy",
            "--queries",
            "base.npy",
            "--gt",
            gt,
            "--methods",
            "sign",
            "--hnsw",
            "none",
            "-q",
            "--out",
            out,
        ])
    };
    for (gt, needles) in [
        (
            "shifted.npy",
            &[
                "shifted.npy: row 0: neighbour 0",
                "not the exact cosine top 10",
            ][..],
        ),
        ("repeated.npy", &["repeated.npy: row 3 lists id"][..]),
        (
            "padded.npy",
            &[
                "padded.npy: padded with -1 past the base's 60 rows",
                "--k of at most 60",
            ][..],
        ),
    ] {
        let out = bench(gt, "rep");
        out.fails_with(needles);
        assert!(!t.exists("rep"), "{gt}");
    }

    // Files named as a report's that no bsa bench wrote (no results.json of its beside them)
    // are refused, not replaced; beside an earlier report's results.json they are its own.
    std::fs::create_dir(t.path("rep")).unwrap();
    t.write("rep/recall_vs_qps.svg", b"<svg>an earlier run's</svg>");
    t.write("rep/report.md", b"my own notes");
    bench("gt.npy", "rep").fails_with(&[
        "--out rep: holds recall_vs_qps.svg, report.md but no results.json that bsa bench wrote",
    ]);
    assert_eq!(t.read("rep/report.md"), b"my own notes");
    t.write("rep/results.json", b"[]");
    bench("gt.npy", "rep").ok();
    assert!(t.exists("rep/results.json") && t.exists("rep/report.md"));
    assert!(
        !t.exists("rep/recall_vs_qps.svg"),
        "an earlier run's plot is left"
    );
    let names: Vec<String> = std::fs::read_dir(t.path("."))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with(".rep.") || n.starts_with(".bsa-bench")),
        "{names:?}"
    );

    // A folder's own files (a README, the script that ran the bench) are kept; a folder in it,
    // a path without a name and a cache inside --out are refused before the grid.
    std::fs::create_dir(t.path("mine")).unwrap();
    t.write("mine/notes.txt", b"mine");
    t.write("mine/photo.png", b"mine too");
    bench("gt.npy", "mine").ok();
    assert_eq!(t.read("mine/notes.txt"), b"mine");
    assert_eq!(t.read("mine/photo.png"), b"mine too");
    assert!(t.exists("mine/results.json"));
    std::fs::create_dir(t.path("mine/sub")).unwrap();
    std::fs::create_dir(t.path("an-index")).unwrap();
    t.write("an-index/manifest.json", b"{}");
    for (out, needle) in [
        ("mine", "--out mine: holds the folder sub"),
        (
            "an-index",
            "--out an-index: holds manifest.json: an index directory",
        ),
        (".", "--out .: not a folder of its own"),
        ("mine/..", "--out mine/..: not a folder of its own"),
    ] {
        let o = bench("gt.npy", out);
        o.fails_with(&[needle]);
        assert!(!o.stderr.contains("cells in"), "{}", o.stderr);
    }
    t.bsa(&[
        "bench",
        "--base",
        "base.npy",
        "--queries",
        "base.npy",
        "--methods",
        "sign",
        "--hnsw",
        "none",
        "-q",
        "--cache",
        "rep2/cache",
        "--out",
        "rep2",
    ])
    .fails_with(&["--cache rep2/cache is inside --out rep2"]);
    assert!(!t.exists("rep2"));
}
