//! `bsa build`, `bsa search` and `bsa verify` end to end: search results equal a brute-force
//! Hamming ranking of independently computed codes, rescoring equals a brute-force cosine ranking,
//! and damaged indexes are refused with a message naming the file.

use crate::util::{TestDir, Weights, json_lines, normalised, read_npy_2d, sign_code};

/// A trained 48-bit model, base and query files, and an index built from them with vectors.
fn setup() -> TestDir {
    let t = TestDir::new();
    t.write_f32("base.npy", &normalised(300, 12, 43));
    t.write_f32("q.npy", &normalised(20, 12, 143));
    t.train("base.npy", "m.safetensors", 48, 6, &[]);
    t.bsa(&[
        "build",
        "--model",
        "m.safetensors",
        "--data",
        "base.npy",
        "--vectors",
        "--hnsw",
        "--hnsw-on",
        "codes",
        "--out",
        "idx",
        "-q",
    ])
    .ok();
    t
}

fn codes_of(w: &Weights, x: &crate::util::Matrix) -> Vec<Vec<bool>> {
    (0..x.n)
        .map(|i| sign_code(&w.pre_activations(x.row(i))))
        .collect()
}

#[test]
fn flat_search_equals_brute_force_hamming_with_ties_by_row() {
    let t = setup();
    let w = Weights::load(&t.path("m.safetensors"));
    let base = codes_of(&w, &normalised(300, 12, 43));
    let queries = codes_of(&w, &normalised(20, 12, 143));
    let out = t
        .bsa(&["search", "--index", "idx", "--queries", "q.npy", "--k", "7"])
        .ok();
    let got = json_lines(&out.stdout);
    assert_eq!(got.len(), 20);
    for (qi, q) in queries.iter().enumerate() {
        let mut all: Vec<(u32, u64)> = base
            .iter()
            .enumerate()
            .map(|(r, b)| {
                (
                    q.iter().zip(b).filter(|(x, y)| x != y).count() as u32,
                    r as u64,
                )
            })
            .collect();
        all.sort();
        let want_ids: Vec<u64> = all[..7].iter().map(|p| p.1).collect();
        let want_d: Vec<u32> = all[..7].iter().map(|p| p.0).collect();
        assert_eq!(got[qi]["query"], qi);
        let ids: Vec<u64> = serde_json::from_value(got[qi]["ids"].clone()).unwrap();
        let d: Vec<u32> = serde_json::from_value(got[qi]["distances"].clone()).unwrap();
        assert_eq!((ids, d), (want_ids, want_d), "query {qi}");
        assert!(got[qi].get("scores").is_none());
    }
}

#[test]
fn query_codes_give_the_same_results_as_float_queries() {
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
    let a = t
        .bsa(&["search", "--index", "idx", "--queries", "q.npy", "--k", "5"])
        .ok();
    let b = t
        .bsa(&[
            "search",
            "--index",
            "idx",
            "--query-codes",
            "qc.npy",
            "--k",
            "5",
        ])
        .ok();
    assert_eq!(a.stdout, b.stdout);
    // Codes from elsewhere: the index can be built from the packed file too.
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
    t.bsa(&["build", "--codes", "bc.npy", "--out", "idx2", "-q"])
        .ok();
    let c = t
        .bsa(&[
            "search",
            "--index",
            "idx2",
            "--query-codes",
            "qc.npy",
            "--k",
            "5",
        ])
        .ok();
    assert_eq!(a.stdout, c.stdout);
}

#[test]
fn rescoring_ranks_candidates_by_exact_cosine() {
    let t = setup();
    let base = normalised(300, 12, 43);
    let q = normalised(20, 12, 143);
    let cand = json_lines(
        &t.bsa(&[
            "search",
            "--index",
            "idx",
            "--queries",
            "q.npy",
            "--k",
            "20",
        ])
        .ok()
        .stdout,
    );
    let out = t
        .bsa(&[
            "search",
            "--index",
            "idx",
            "--queries",
            "q.npy",
            "--k",
            "5",
            "--rescore",
            "4",
        ])
        .ok();
    for (qi, line) in json_lines(&out.stdout).iter().enumerate() {
        let pool: Vec<u64> = serde_json::from_value(cand[qi]["ids"].clone()).unwrap();
        let cos = |id: u64| -> f64 {
            let b = base.row(id as usize);
            let a = q.row(qi);
            let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            dot / (na * nb)
        };
        let mut want = pool.clone();
        want.sort_by(|a, b| cos(*b).total_cmp(&cos(*a)).then(a.cmp(b)));
        let ids: Vec<u64> = serde_json::from_value(line["ids"].clone()).unwrap();
        let scores: Vec<f64> = serde_json::from_value(line["scores"].clone()).unwrap();
        assert_eq!(ids, want[..5].to_vec(), "query {qi}");
        for (id, s) in ids.iter().zip(&scores) {
            assert!((cos(*id) - s).abs() < 1e-5);
        }
    }
}

#[test]
fn hnsw_search_finds_the_exact_neighbours_on_a_small_index() {
    let t = setup();
    let exact = t
        .bsa(&["search", "--index", "idx", "--queries", "q.npy", "--k", "5"])
        .ok();
    let hnsw = t
        .bsa(&[
            "search",
            "--index",
            "idx",
            "--queries",
            "q.npy",
            "--k",
            "5",
            "--mode",
            "hnsw",
            "--ef",
            "300",
        ])
        .ok();
    // With ef >= n the graph search is exhaustive: the distances at every rank must agree.
    for (a, b) in json_lines(&exact.stdout)
        .iter()
        .zip(json_lines(&hnsw.stdout))
    {
        assert_eq!(a["distances"], b["distances"]);
    }
}

/// The graph on decoded codes (`bsa build --model --hnsw`) is searched by ADC: its hits carry
/// the flat scan's exact scores, an exhaustive `--ef` finds exactly the flat top k, a small one
/// most of it, and other scores and an `--ef` below `--k` are refused.
#[test]
fn adc_graph_finds_the_flat_adc_neighbours_with_their_exact_scores() {
    let t = TestDir::new();
    t.write_f32("base.npy", &normalised(1200, 16, 7));
    t.write_f32("q.npy", &normalised(25, 16, 8));
    t.bsa(&[
        "train",
        "--data",
        "base.npy",
        "--method",
        "pursuit",
        "--bits",
        "256",
        "--k",
        "6",
        "--rounds",
        "2",
        "--out",
        "p.safetensors",
        "-q",
    ])
    .ok();
    t.bsa(&[
        "build",
        "--model",
        "p.safetensors",
        "--data",
        "base.npy",
        "--vectors",
        "--hnsw",
        "--m",
        "8",
        "--ef-construction",
        "48",
        "--out",
        "idx",
        "-q",
    ])
    .ok();
    let search = |extra: &[&str]| {
        let mut args = vec![
            "search",
            "--index",
            "idx",
            "--queries",
            "q.npy",
            "--k",
            "10",
            "--score",
            "adc",
        ];
        args.extend_from_slice(extra);
        json_lines(&t.bsa(&args).ok().stdout)
    };
    let flat = search(&[]);
    // ef >= n: the walk reaches every row, so the result is the flat top 10 exactly.
    assert_eq!(search(&["--mode", "hnsw", "--ef", "1200"]), flat);
    // A small ef: most of the top 10, every score the flat scan's score of that id.
    let graph = search(&["--mode", "hnsw", "--ef", "24"]);
    let (mut found, mut scored) = (0, 0);
    for (g, f) in graph.iter().zip(&flat) {
        let f_ids = f["ids"].as_array().unwrap();
        for (id, score) in g["ids"]
            .as_array()
            .unwrap()
            .iter()
            .zip(g["scores"].as_array().unwrap())
        {
            if let Some(at) = f_ids.iter().position(|x| x == id) {
                found += 1;
                assert_eq!(&f["scores"][at], score, "id {id}");
                scored += 1;
            }
        }
    }
    assert!(found >= 25 * 10 * 8 / 10, "recall {found} / 250");
    assert!(scored > 0);
    t.bsa(&[
        "search",
        "--index",
        "idx",
        "--queries",
        "q.npy",
        "--k",
        "10",
        "--mode",
        "hnsw",
    ])
    .fails_with(&["built on the decoded codes", "score hamming"]);
    t.bsa(&[
        "search",
        "--index",
        "idx",
        "--queries",
        "q.npy",
        "--k",
        "10",
        "--mode",
        "hnsw",
        "--score",
        "adc",
        "--ef",
        "5",
    ])
    .fails_with(&["ef 5 is below k 10"]);
}

/// The `--stats` line of `bsa search --k 3 --stats` of `q.npy` on `idx`, with `extra` arguments.
fn stats_line(t: &TestDir, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "search",
        "--index",
        "idx",
        "--queries",
        "q.npy",
        "--k",
        "3",
        "--stats",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(t.bsa(&args).ok().stderr.trim()).unwrap()
}

/// `--stats` says where the time went: tables only for table scores, rescoring only with
/// `--rescore`, and, in flat mode (each step of a batch on all threads, one after the other),
/// all within the search's seconds.
#[test]
fn stats_give_the_seconds_of_each_step() {
    let t = setup();
    let steps = |extra: &[&str]| {
        let stats = stats_line(&t, extra);
        (
            stats["step_seconds"].clone(),
            stats["search_seconds"].as_f64().unwrap(),
        )
    };
    let s = |v: &serde_json::Value, k: &str| {
        v[k].as_f64()
            .unwrap_or_else(|| panic!("no step {k} in {v}"))
    };
    let (hamming, _) = steps(&[]);
    assert_eq!(s(&hamming, "tables"), 0.0, "{hamming}");
    assert_eq!(s(&hamming, "rescore"), 0.0, "{hamming}");
    assert!(s(&hamming, "search") > 0.0, "{hamming}");
    let (adc, total) = steps(&["--score", "adc", "--rescore", "2"]);
    for k in ["tables", "search", "rescore"] {
        assert!(s(&adc, k) > 0.0, "{k}: {adc}");
    }
    let sum = s(&adc, "tables") + s(&adc, "search") + s(&adc, "rescore");
    assert!(sum <= total, "{adc} adds up to more than {total}");
    let (graph, _) = steps(&["--mode", "hnsw"]);
    assert_eq!(s(&graph, "tables"), 0.0, "{graph}");
    assert!(s(&graph, "search") > 0.0, "{graph}");
}

/// `--no-distances` leaves the Hamming distances out and nothing else: the same ids and
/// scores, in every exact mode and with --rescore, with labels too; a table score of float
/// queries then skips encoding them. Refused with --score hamming, which ranks by them.
#[test]
fn no_distances_leaves_out_only_the_distances() {
    let t = setup();
    let run = |extra: &[&str]| {
        let mut args = vec!["search", "--index", "idx", "--queries", "q.npy", "--k", "4"];
        args.extend_from_slice(extra);
        t.bsa(&args)
    };
    let search = |extra: &[&str]| run(extra).ok().stdout;
    let lines = |out: &str| -> Vec<serde_json::Value> {
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    for score in [
        &["--score", "adc"][..],
        &["--score", "soft"],
        &["--score", "cosine"],
    ] {
        for rescore in [&[][..], &["--rescore", "2"]] {
            let base: Vec<&str> = score.iter().chain(rescore).copied().collect();
            let with = lines(&search(&base));
            let without = lines(&search(&[&base[..], &["--no-distances"]].concat()));
            assert_eq!(with.len(), 20);
            for (mut w, o) in with.into_iter().zip(without) {
                assert!(
                    w["distances"].is_array() && o.get("distances").is_none(),
                    "{o}"
                );
                w.as_object_mut().unwrap().remove("distances");
                assert_eq!(w, o, "{base:?}");
            }
        }
    }
    let stats = stats_line(&t, &["--score", "adc", "--no-distances"]);
    assert_eq!(stats["encode_seconds"], 0.0, "{stats}");
    let labels: String = (0..300).map(|i| format!("sentence {i}\n")).collect();
    t.write("labels.txt", labels.as_bytes());
    let text = search(&["--score", "adc", "--labels", "labels.txt", "--no-distances"]);
    assert!(text.contains("score=") && !text.contains("d="), "{text}");
    run(&["--no-distances"]).fails_with(&["--no-distances", "what --score hamming ranks by"]);
}

#[test]
fn stats_go_to_stderr_and_labels_print_text() {
    let t = setup();
    let stats = stats_line(&t, &[]);
    assert_eq!(stats["queries"], 20);
    assert!(stats["qps"].as_f64().unwrap() > 0.0);
    // Encoding the float queries is timed apart from the search.
    assert!(stats["search_seconds"].as_f64().unwrap() > 0.0);
    assert!(stats["encode_seconds"].as_f64().unwrap() > 0.0, "{stats}");
    // Query codes need no encoding.
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
    let out = t
        .bsa(&[
            "search",
            "--index",
            "idx",
            "--query-codes",
            "qc.npy",
            "--k",
            "3",
            "--stats",
        ])
        .ok();
    let stats: serde_json::Value = serde_json::from_str(out.stderr.trim()).unwrap();
    assert_eq!(stats["encode_seconds"], 0.0, "{stats}");
    let labels: String = (0..300).map(|i| format!("sentence {i}\n")).collect();
    t.write("labels.txt", labels.as_bytes());
    let labelled = |file: &str| {
        t.bsa(&[
            "search",
            "--index",
            "idx",
            "--queries",
            "q.npy",
            "--k",
            "3",
            "--labels",
            file,
        ])
        .ok()
    };
    let out = labelled("labels.txt");
    assert!(out.stdout.starts_with("query 0:"));
    assert!(out.stdout.contains("sentence "));
    assert!(!out.stdout.contains("score="), "{out:#?}");
    assert!(!out.stderr.contains("warning"), "{out:#?}");
    // Ranked by a score: each line shows it, best first, then the Hamming distance.
    let scored = t
        .bsa(&[
            "search",
            "--index",
            "idx",
            "--queries",
            "q.npy",
            "--k",
            "3",
            "--score",
            "cosine",
            "--labels",
            "labels.txt",
        ])
        .ok();
    let scores: Vec<f64> = (scored.stdout.lines())
        .filter_map(|l| l.split("score=").nth(1))
        .map(|s| s.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(!scores.is_empty(), "{scored:#?}");
    for line in scored.stdout.lines().filter(|l| !l.starts_with("query")) {
        assert!(line.contains(" d="), "{line}");
    }
    for q in scored.stdout.split("query ").skip(1) {
        let s: Vec<f64> = (q.lines())
            .filter_map(|l| l.split("score=").nth(1))
            .map(|s| s.split(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(s.windows(2).all(|w| w[0] >= w[1]), "{q}");
    }
    // A labels file shorter than the index: the unlabelled neighbours are counted on stderr.
    t.write("short.txt", b"only\ntwo\n");
    let out = labelled("short.txt");
    let unlabelled = out.stdout.matches("<no label>").count();
    assert!(unlabelled > 0);
    assert!(
        out.stderr.contains(&format!(
            "warning: short.txt has 2 lines, but {unlabelled} neighbours have ids past them"
        )),
        "{out:#?}"
    );
}

/// An allow-list naming ids the index does not hold says how many, and the others are still
/// searched.
#[test]
fn unknown_allowed_ids_are_counted_in_a_warning() {
    let t = setup();
    t.write(
        "allow.npy",
        &crate::util::npy_bytes(
            "<i8",
            "(3,)",
            &[5i64, 9, 7777]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        ),
    );
    let out = t
        .bsa(&[
            "search",
            "--index",
            "idx",
            "--queries",
            "q.npy",
            "--k",
            "5",
            "--allow-ids",
            "allow.npy",
        ])
        .ok();
    assert!(
        out.stderr
            .contains("warning: 1 of the 3 ids in allow.npy are not live in idx"),
        "{out:#?}"
    );
    for line in json_lines(&out.stdout) {
        let mut ids: Vec<u64> = line["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, [5, 9]);
    }
}

#[test]
fn build_refuses_to_overwrite_without_force() {
    let t = setup();
    let out = t.bsa(&[
        "build",
        "--model",
        "m.safetensors",
        "--data",
        "base.npy",
        "--out",
        "idx",
        "-q",
    ]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("idx"), "{}", out.stderr);
    t.bsa(&[
        "build",
        "--model",
        "m.safetensors",
        "--data",
        "base.npy",
        "--out",
        "idx",
        "--force",
        "-q",
    ])
    .ok();
}

/// A damaged file is named by the search that reads it. The stored vectors are read only by
/// rescoring, which verifies them first: a search without it answers as before the damage.
#[test]
fn damaged_index_files_are_named_in_the_error() {
    for file in ["codes.bin", "ids.bin", "vectors.bin", "manifest.json"] {
        let t = setup();
        t.bsa(&["verify", "--index", "idx"]).ok();
        let search = ["search", "--index", "idx", "--queries", "q.npy", "--k", "3"];
        let before = t.bsa(&search).ok();
        let path = t.path("idx").join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - 3;
        bytes[at] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let out = t.bsa(&search);
        if file == "vectors.bin" {
            assert_eq!(out.ok().stdout, before.stdout);
            t.bsa(&[&search[..], &["--rescore", "2"]].concat())
                .fails_with(&[file, "checksum"]);
        } else {
            out.fails_with(&[file]);
        }
        let v = t.bsa(&["verify", "--index", "idx"]);
        assert!(v.code == 1 || v.code == 2, "{v:#?}");
        assert!(v.stderr.contains(file), "{v:#?}");

        // Truncation too.
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        t.bsa(&["search", "--index", "idx", "--queries", "q.npy", "--k", "3"])
            .fails_with(&[file]);
    }
}

/// A model that does not fit its index (another model put in its place with its checksum
/// resealed, as a careless copy or a writer's bug would leave it) passes every checksum: `bsa
/// verify` loads it and says so (exit 1), and a search refuses it naming the model file.
#[test]
fn a_model_that_does_not_fit_its_index_is_named() {
    let t = setup();
    for (bits, dim, needle) in [(64, 12, "makes 64-bit codes"), (48, 10, "reads 10-d rows")] {
        let data = format!("d{dim}.npy");
        t.write_f32(&data, &normalised(100, dim, 7));
        let other = t.train(
            &data,
            &format!("other{bits}x{dim}.safetensors"),
            bits,
            6,
            &[],
        );
        let copy = t.path(&format!("idx-{bits}x{dim}"));
        std::fs::create_dir(&copy).unwrap();
        for e in std::fs::read_dir(t.path("idx")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
        }
        let model = std::fs::read(t.path(&other)).unwrap();
        std::fs::write(copy.join("model.safetensors"), &model).unwrap();
        let mpath = copy.join("manifest.json");
        let mut m =
            bsa_index::Manifest::from_bytes(&std::fs::read(&mpath).unwrap(), &mpath).unwrap();
        let info = m.files.get_mut("model.safetensors").unwrap();
        (info.len, info.crc32) = (model.len() as u64, crc32fast::hash(&model));
        std::fs::write(&mpath, m.to_bytes().unwrap()).unwrap();

        let dir = copy.to_str().unwrap();
        let v = t.bsa(&["verify", "--index", dir]);
        assert_eq!(v.code, 1, "{v:#?}");
        assert!(v.stderr.contains("model.safetensors"), "{v:#?}");
        assert!(v.stderr.contains(needle), "{v:#?}");
        t.bsa(&["search", "--index", dir, "--queries", "q.npy", "--k", "3"])
            .fails_with(&["model.safetensors", needle, "rebuild the index"]);
    }
}

/// `bsa verify` exits 1 when a check fails, whatever the file (damaged, missing, or a whole
/// file from another index), and 2 only when there is no index to check.
#[test]
fn verify_exit_codes_tell_a_damaged_index_from_none() {
    let t = setup();
    t.bsa(&[
        "build",
        "--model",
        "m.safetensors",
        "--data",
        "q.npy",
        "--out",
        "small",
        "-q",
    ])
    .ok();
    let copy = |name: &str| {
        let d = t.path(name);
        std::fs::create_dir(&d).unwrap();
        for e in std::fs::read_dir(t.path("idx")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
        }
        d
    };
    let foreign = copy("foreign");
    std::fs::copy(t.path("small/codes.bin"), foreign.join("codes.bin")).unwrap();
    let missing = copy("missing");
    std::fs::remove_file(missing.join("ids.bin")).unwrap();
    // A manifest a newer bsa wrote, with a feature this one does not know: nothing to check.
    let newer = copy("newer");
    let path = newer.join(bsa::bsa_index::manifest::MANIFEST_FILE);
    let mut m =
        bsa::bsa_index::manifest::Manifest::from_bytes(&std::fs::read(&path).unwrap(), &path)
            .unwrap();
    m.incompat_features.push("tomorrow".into());
    std::fs::write(&path, m.to_bytes().unwrap()).unwrap();
    for (dir, code, needle) in [
        ("foreign", 1, "come from different indexes"),
        ("missing", 1, "missing, though"),
        ("nowhere", 2, "no such index directory"),
        ("newer", 2, "needs feature \"tomorrow\""),
    ] {
        let v = t.bsa(&["verify", "--index", dir]);
        assert_eq!(v.code, code, "{dir}: {v:#?}");
        assert!(v.stderr.contains(needle), "{dir}: {v:#?}");
    }
    // `bsa info` says a missing file as the others do (it gave the bare OS error).
    t.bsa(&["info", "--index", "missing"])
        .fails_with(&["ids.bin: missing, though", "manifest.json lists it"]);
}

#[test]
fn mismatched_queries_are_clear_errors() {
    let t = setup();
    // Float queries of the wrong dimension.
    t.write_f32("q8.npy", &normalised(4, 8, 1));
    t.bsa(&[
        "search",
        "--index",
        "idx",
        "--queries",
        "q8.npy",
        "--k",
        "3",
    ])
    .fails_with(&["q8.npy", "8", "12"]);
    // Query codes of the wrong width (48-bit index needs 6 bytes).
    let bytes = crate::util::npy_bytes("|u1", "(2, 4)", &[0u8; 8]);
    t.write("qc4.npy", &bytes);
    t.bsa(&[
        "search",
        "--index",
        "idx",
        "--query-codes",
        "qc4.npy",
        "--k",
        "3",
    ])
    .fails_with(&["qc4.npy", "4 bytes"]);
    // Rescoring without stored vectors.
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
    t.bsa(&["build", "--codes", "bc.npy", "--out", "novec", "-q"])
        .ok();
    t.bsa(&[
        "search",
        "--index",
        "novec",
        "--queries",
        "q.npy",
        "--k",
        "3",
        "--rescore",
        "2",
    ])
    .fails_with(&["novec"]);
    let (_, rows, cols, _) = read_npy_2d(&t.read("bc.npy"));
    assert_eq!((rows, cols), (300, 6));
}

/// `BSA_KERNEL` forces a kernel family: every family the CPU has prints the same bytes (flat and
/// inverted over 256-bit codes given directly, flat over the 48-bit codes of a model), `--stats` names the
/// family and its kernel, and a family that is unknown or missing from the CPU is a clear error.
#[test]
fn kernel_switch_gives_identical_output_and_is_named_in_stats() {
    use bsa_index::KernelFamily;
    let t = setup();
    // 256-bit codes (4 words: every family has a vector kernel for them), many equal distances.
    use rand::{Rng, SeedableRng};
    let mut r = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(5);
    let bytes: Vec<u8> = (0..400 * 32)
        .map(|_| r.random::<u8>() & r.random::<u8>())
        .collect();
    t.write(
        "c256.npy",
        &crate::util::npy_bytes("|u1", "(400, 32)", &bytes),
    );
    t.write(
        "q256.npy",
        &crate::util::npy_bytes("|u1", "(7, 32)", &bytes[..7 * 32]),
    );
    t.bsa(&[
        "build",
        "--codes",
        "c256.npy",
        "--inverted",
        "--out",
        "i256",
        "-q",
    ])
    .ok();
    let runs: [&[&str]; 3] = [
        &["--index", "idx", "--queries", "q.npy", "--k", "5"],
        &["--index", "i256", "--query-codes", "q256.npy", "--k", "9"],
        &[
            "--index",
            "i256",
            "--query-codes",
            "q256.npy",
            "--k",
            "9",
            "--mode",
            "inverted",
        ],
    ];
    for run in runs {
        let mut want: Option<String> = None;
        for family in KernelFamily::supported() {
            let args: Vec<&str> = ["search"]
                .iter()
                .chain(run)
                .chain(&["--stats"])
                .copied()
                .collect();
            let out = t.bsa_env(&args, &[("BSA_KERNEL", family.name())]).ok();
            let stats: serde_json::Value = serde_json::from_str(out.stderr.trim()).unwrap();
            assert_eq!(stats["kernel_family"], family.name(), "{run:?}");
            let kernel = stats["kernel"].as_str().unwrap();
            assert!(kernel.starts_with(family.name()), "{kernel} for {family}");
            match &want {
                None => want = Some(out.stdout),
                Some(w) => assert_eq!(&out.stdout, w, "{family} differs on {run:?}"),
            }
        }
    }
    let search = ["search", "--index", "idx", "--queries", "q.npy", "--k", "3"];
    t.bsa_env(&search, &[("BSA_KERNEL", "sse9")]).fails_with(&[
        "BSA_KERNEL",
        "sse9",
        "portable, avx2 or avx512",
    ]);
    if let Some(missing) = KernelFamily::ALL.into_iter().find(|f| !f.is_supported()) {
        t.bsa_env(&search, &[("BSA_KERNEL", missing.name())])
            .fails_with(&[missing.name(), "lacks", "portable"]);
    }
}

/// Graph settings need a graph (they were accepted and ignored without --hnsw), and a graph on
/// the data without --vectors is built with a warning: that index's added segments never merge
/// and it cannot be compacted.
#[test]
fn graph_flags_need_a_graph_and_a_graph_on_data_warns_without_vectors() {
    let t = setup();
    for flag in ["--m", "--ef-construction", "--ef-search"] {
        let o = t.bsa(&[
            "build",
            "--model",
            "m.safetensors",
            "--data",
            "base.npy",
            flag,
            "8",
            "--out",
            "x",
        ]);
        assert_eq!(o.code, 2, "{flag}: {o:#?}");
        assert!(o.stderr.contains("--hnsw"), "{flag}: {o:#?}");
        assert!(!t.exists("x"));
    }
    let build = |vectors: bool, out: &str| {
        let mut args = vec![
            "build",
            "--model",
            "m.safetensors",
            "--data",
            "base.npy",
            "--hnsw",
            "--hnsw-on",
            "data",
            "-q",
            "--out",
            out,
        ];
        if vectors {
            args.push("--vectors");
        }
        t.bsa(&args).ok()
    };
    let warned = build(false, "bare");
    assert!(
        warned
            .stderr
            .contains("warning: the graph is built on the data")
            && warned.stderr.contains("--vectors"),
        "{warned:#?}"
    );
    let kept = build(true, "kept");
    assert!(!kept.stderr.contains("warning"), "{kept:#?}");
    // `bsa info` says what the graph is on (it said "vectors" for the data and the decoded
    // codes alike).
    let info = t.bsa(&["info", "--index", "kept"]).ok();
    assert!(info.stdout.contains("hnsw (on the data, "), "{info:#?}");
    let json = t.bsa(&["info", "--index", "kept", "--json"]).ok().json();
    assert_eq!(json["graph_on"], "data");
    let json = t.bsa(&["info", "--index", "idx", "--json"]).ok().json();
    assert_eq!(json["graph_on"], "codes");
}
