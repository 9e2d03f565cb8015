//! `bsa search` prints the same bytes for `--threads 1, 2, 4` and every kernel family the CPU
//! has (`BSA_KERNEL`), in every mode, for every score, with and without `--rescore` (issue 12).
//!
//! The fixture is sized so that the products that used to depend on the thread count really run
//! on several threads: OpenBLAS only splits a GEMM above about 2^18 multiply-adds, and 200
//! queries x 256 bits x 64 dimensions is 3.3M. The ADC and soft tables and the query codes come
//! from `bsa::deterministic` now; with the BLAS tables they replaced, the ADC scores printed here
//! differed in the last digit between `--threads 1` and `--threads 4`, and the codes of the rows
//! on the decision boundary between 1 and 2 threads with OpenBLAS's AVX2 kernel.

use crate::util::{TestDir, Weights, json_lines, normalised};

const DIM: usize = 64;
const BITS: usize = 256;
const QUERIES: usize = 200;
const THREADS: [&str; 3] = ["1", "2", "4"];

/// Base and query files, a BSA model and a pursuit model (the codes ADC is made for), and an
/// index of each with vectors, posting lists and (BSA) a graph.
fn setup() -> TestDir {
    let t = TestDir::new();
    t.write_f32("base.npy", &normalised(1500, DIM, 71));
    t.write_f32("q.npy", &normalised(QUERIES, DIM, 171));
    let bits = BITS.to_string();
    t.train("base.npy", "bsa.safetensors", BITS, 16, &[]);
    t.bsa(&[
        "train",
        "--data",
        "base.npy",
        "--method",
        "pursuit",
        "--bits",
        &bits,
        "--k",
        "8",
        "--rounds",
        "2",
        "--out",
        "pursuit.safetensors",
        "-q",
    ])
    .ok();
    for (model, index, extra) in [
        // A graph on the codes (Hamming) and one on the decoded codes (ADC).
        (
            "bsa.safetensors",
            "bsa-idx",
            &["--hnsw", "--hnsw-on", "codes"][..],
        ),
        ("pursuit.safetensors", "pursuit-idx", &["--hnsw"][..]),
    ] {
        let mut args = vec![
            "build",
            "--model",
            model,
            "--data",
            "base.npy",
            "--vectors",
            "--inverted",
            "--out",
            index,
            "-q",
        ];
        args.extend_from_slice(extra);
        t.bsa(&args).ok();
    }
    t
}

/// Searches `index` with every thread count and asserts the outputs are byte-identical. Returns
/// the output (checked to be one JSON line per query, with scores when the options promise them).
fn same_for_every_thread_count(
    t: &TestDir,
    index: &str,
    mode: &str,
    score: &str,
    rescore: Option<&str>,
) -> String {
    let mut args = vec![
        "search",
        "--index",
        index,
        "--queries",
        "q.npy",
        "--k",
        "10",
        "--mode",
        mode,
        "--score",
        score,
    ];
    if let Some(r) = rescore {
        args.extend_from_slice(&["--rescore", r]);
    }
    let what = format!("{index} --mode {mode} --score {score} --rescore {rescore:?}");
    // --stats goes to stderr (it holds timings, which do differ) and says how the inverted
    // search answered.
    // Every kernel family this CPU has (BSA_KERNEL) with every thread count.
    let families = bsa_index::KernelFamily::supported();
    let configs: Vec<(&str, &str)> = families
        .iter()
        .flat_map(|f| THREADS.iter().map(move |th| (f.name(), *th)))
        .collect();
    let runs: Vec<_> = configs
        .iter()
        .map(|&(family, th)| {
            let mut a = args.clone();
            a.extend_from_slice(&["--threads", th, "--stats"]);
            t.bsa_env(&a, &[("BSA_KERNEL", family)]).ok()
        })
        .collect();
    // The sparse pursuit codes (8 of 256 bits) are answered from the posting lists by the
    // overlap scores; table scores read every posting, which the cost rule sends to the flat
    // scan at this size (bsa-index's tests/threads.rs forces them through the lists), and the
    // BSA codes are too dense for the lists.
    if mode == "inverted"
        && index == "pursuit-idx"
        && matches!(score, "hamming" | "cosine" | "jaccard")
    {
        let stats: serde_json::Value = serde_json::from_str(runs[0].stderr.trim()).unwrap();
        assert!(
            stats["inverted_queries"].as_u64() > Some(0),
            "{what}: no query went through the posting lists: {stats}"
        );
    }
    let outputs: Vec<String> = runs.into_iter().map(|r| r.stdout).collect();
    for ((family, th), out) in configs.iter().zip(&outputs).skip(1) {
        if *out != outputs[0] {
            let first = out
                .lines()
                .zip(outputs[0].lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!(
                "{what}: BSA_KERNEL={family} --threads {th} differs from {:?}, first at query {first}:\n{}\n{}",
                configs[0],
                out.lines().nth(first).unwrap_or(""),
                outputs[0].lines().nth(first).unwrap_or("")
            );
        }
    }
    let lines = json_lines(&outputs[0]);
    assert_eq!(lines.len(), QUERIES, "{what}");
    let has_scores = score != "hamming" || rescore.is_some();
    assert_eq!(
        lines[0].get("scores").is_some(),
        has_scores,
        "{what}: {}",
        lines[0]
    );
    assert_eq!(lines[0]["ids"].as_array().map(Vec::len), Some(10), "{what}");
    outputs.into_iter().next().unwrap()
}

#[test]
fn search_output_does_not_depend_on_the_thread_count() {
    let t = setup();
    let scores = ["hamming", "cosine", "jaccard", "overlap", "adc", "soft"];
    for (index, modes) in [
        ("bsa-idx", &["flat", "inverted", "hnsw"][..]),
        ("pursuit-idx", &["flat", "inverted", "hnsw"][..]),
    ] {
        for &mode in modes {
            for score in scores {
                // A graph answers the score it was built for (refused otherwise): Hamming on the
                // codes' graph, the table scores on the decoded codes' graph.
                let graph_score = if index == "bsa-idx" {
                    score == "hamming"
                } else {
                    matches!(score, "adc" | "soft")
                };
                if mode == "hnsw" && !graph_score {
                    continue;
                }
                let plain = same_for_every_thread_count(&t, index, mode, score, None);
                let rescored = same_for_every_thread_count(&t, index, mode, score, Some("4"));
                // Rescoring re-ranks 40 candidates by cosine: it changes the output, so the two
                // runs above compare different computations.
                assert_ne!(plain, rescored, "{index} {mode} {score}");
            }
        }
    }
}

#[test]
fn query_codes_do_not_depend_on_the_thread_count() {
    // `bsa encode` is the query encoder of `bsa search` (and the base encoder of `bsa build`):
    // the same rows give the same codes whatever the threads, for a thresholded model (BSA), a
    // top-K model and pursuit. 2000 rows x 256 bits x 64 dims is well above OpenBLAS's threshold.
    let t = TestDir::new();
    t.write_f32("train.npy", &normalised(1000, DIM, 72));
    t.train("train.npy", "bsa.safetensors", BITS, 16, &[]);
    t.train(
        "train.npy",
        "topk.safetensors",
        BITS,
        16,
        &["--method", "topk"],
    );
    let bits = BITS.to_string();
    t.bsa(&[
        "train",
        "--data",
        "train.npy",
        "--method",
        "pursuit",
        "--bits",
        &bits,
        "--k",
        "8",
        "--rounds",
        "1",
        "--out",
        "pursuit.safetensors",
        "-q",
    ])
    .ok();
    // Rows on the BSA model's decision boundaries: row i moved (in f64) to where its
    // pre-activation h_j, j = i mod N, is 0, then rounded to f32, which leaves h_j within a few
    // ulp of 0, where the sign depends on the order the dot product is summed in.
    let w = Weights::load(&t.path("bsa.safetensors"));
    let mut x = normalised(2000, DIM, 73);
    for i in 0..1000 {
        let j = i % BITS;
        let wj = &w.we[j * DIM..(j + 1) * DIM];
        let row = x.row_mut(i);
        let h: f64 = w.be[j]
            + wj.iter()
                .zip(row.iter())
                .map(|(a, &b)| a * f64::from(b))
                .sum::<f64>();
        let n2: f64 = wj.iter().map(|a| a * a).sum();
        for (v, a) in row.iter_mut().zip(wj) {
            *v = (f64::from(*v) - h / n2 * a) as f32;
        }
    }
    t.write_f32("x.npy", &x);
    for model in ["bsa.safetensors", "topk.safetensors", "pursuit.safetensors"] {
        let codes: Vec<Vec<u8>> = THREADS
            .iter()
            .map(|th| {
                let out = format!("codes-{th}.npy");
                t.bsa(&[
                    "encode",
                    "--model",
                    model,
                    "--data",
                    "x.npy",
                    "--out",
                    &out,
                    "--threads",
                    th,
                ])
                .ok();
                t.read(&out)
            })
            .collect();
        assert!(codes[0].len() > 2000 * BITS / 8, "{model}");
        for (th, c) in THREADS.iter().zip(&codes) {
            assert!(
                *c == codes[0],
                "{model}: --threads {th} gives other codes than --threads 1"
            );
        }
    }
}
