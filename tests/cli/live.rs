//! `bsa add`, `bsa delete`, `bsa compact` and the filters and ranges of `bsa search` on the
//! command line: what they print, their clear errors, and that a changed index answers as a
//! fresh build of its surviving rows (the library's property tests cover every mode and score).

use crate::util::*;

fn ids_npy(ids: &[i64]) -> Vec<u8> {
    let data: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    let shape = format!("({},)", ids.len());
    // A 1-D shape: npy_bytes takes the shape text as given.
    npy_bytes("<i8", &shape, &data)
}

fn search(t: &TestDir, index: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["search", "--index", index, "--queries", "q.npy"];
    args.extend_from_slice(extra);
    json_lines(&t.bsa(&args).ok().stdout)
}

#[test]
fn add_delete_compact_and_filters_equal_a_fresh_build() {
    let t = TestDir::new();
    let x = normalised(300, 16, 1);
    let q = normalised(5, 16, 2);
    t.write_f32("x.npy", &x);
    t.write_f32("q.npy", &q);
    let head = Matrix {
        n: 200,
        dim: 16,
        data: x.data[..200 * 16].to_vec(),
    };
    let tail = Matrix {
        n: 100,
        dim: 16,
        data: x.data[200 * 16..].to_vec(),
    };
    t.write_f32("head.npy", &head);
    t.write_f32("tail.npy", &tail);
    t.write("tail_ids.npy", &ids_npy(&(200..300).collect::<Vec<_>>()));
    let model = t.train("x.npy", "m.safetensors", 64, 8, &["--method", "topk"]);
    t.bsa(&[
        "build",
        "--model",
        &model,
        "--data",
        "x.npy",
        "--vectors",
        "-q",
        "--out",
        "full",
    ])
    .ok();
    t.bsa(&[
        "build",
        "--model",
        &model,
        "--data",
        "head.npy",
        "--vectors",
        "-q",
        "--out",
        "live",
    ])
    .ok();

    // Add the other rows: the same answers as the index built from all of them. (No merging
    // here: the segments below are as the adds made them; merging is checked at the end.)
    let out = t
        .bsa(&[
            "add",
            "--index",
            "live",
            "--data",
            "tail.npy",
            "--ids",
            "tail_ids.npy",
            "--merge-factor",
            "0",
        ])
        .ok();
    assert!(
        out.stderr.contains("added 100 rows (ids 200..=299)"),
        "{out:#?}"
    );
    for extra in [
        &["--k", "7"][..],
        &["--k", "7", "--score", "adc", "--rescore", "3"],
        &["--max-distance", "20"],
    ] {
        assert_eq!(
            search(&t, "live", extra),
            search(&t, "full", extra),
            "{extra:?}"
        );
    }
    // Clashing ids are refused (naming them and the way out), unless upserting.
    t.bsa(&[
        "add",
        "--index",
        "live",
        "--data",
        "tail.npy",
        "--ids",
        "tail_ids.npy",
    ])
    .fails_with(&[
        "live: 100 of the new ids are already in the index",
        "200, 201",
        "--upsert",
    ]);
    t.bsa(&["add", "--index", "live", "--codes", "tail_ids.npy"])
        .fails_with(&["tail_ids.npy"]);
    t.bsa(&[
        "add",
        "--index",
        "live",
        "--data",
        "tail.npy",
        "--ids",
        "tail_ids.npy",
        "--upsert",
        "--merge-factor",
        "0",
    ])
    .ok();

    // Deleting: unknown ids are reported, not fatal; the rows are gone from every search.
    t.write("gone.npy", &ids_npy(&[0, 1, 2, 250, 9999]));
    let out = t
        .bsa(&["delete", "--index", "live", "--ids", "gone.npy"])
        .ok();
    assert!(
        out.stderr.contains("1 id was not in the index: 9999"),
        "{out:#?}"
    );
    assert!(out.stderr.contains("deleted 4 rows"), "{out:#?}");
    t.write(
        "kept.npy",
        &ids_npy(&(3..300).filter(|&i| i != 250).collect::<Vec<_>>()),
    );
    let deleted = search(&t, "live", &["--k", "300"]);
    let allowed = search(&t, "full", &["--k", "300", "--allow-ids", "kept.npy"]);
    assert_eq!(deleted, allowed);
    let denied = search(&t, "full", &["--k", "300", "--deny-ids", "gone.npy"]);
    assert_eq!(deleted, denied);
    assert!(
        deleted
            .iter()
            .all(|l| l["ids"].as_array().unwrap().len() == 296)
    );

    // Compacting changes no answer; verify reports the segments. (The upsert replaced every
    // row of the first added segment, which was dropped then: 4 deleted rows remain to drop.)
    let out = t.bsa(&["compact", "--index", "live"]).ok();
    assert!(
        out.stderr
            .contains("merged 2 segments into 296 rows (dropped 4 deleted)"),
        "{out:#?}"
    );
    assert_eq!(search(&t, "live", &["--k", "300"]), deleted);
    let out = t.bsa(&["verify", "--index", "live"]).ok();
    assert!(
        out.stdout
            .contains("296 codes of 64 bits in 1 segment, generation"),
        "{out:#?}"
    );

    // Merging as it grows: with --merge-factor 2, two segments of one size tier (both under
    // 1000 rows) are merged in the add's commit; --merge-factor 0 keeps the add apart.
    let add_as = |ids: std::ops::Range<i64>, factor: &str| {
        t.write("more_ids.npy", &ids_npy(&ids.collect::<Vec<_>>()));
        t.bsa(&[
            "add",
            "--index",
            "live",
            "--data",
            "tail.npy",
            "--ids",
            "more_ids.npy",
            "--merge-factor",
            factor,
        ])
        .ok()
    };
    let out = add_as(1000..1100, "2");
    assert!(
        out.stderr.contains("merging 2 segments (396 rows)"),
        "{out:#?}"
    );
    let out = add_as(2000..2100, "0");
    assert!(!out.stderr.contains("merging"), "{out:#?}");
    let out = t.bsa(&["verify", "--index", "live"]).ok();
    assert!(
        out.stdout.contains("496 codes of 64 bits in 2 segments"),
        "{out:#?}"
    );
}

#[test]
fn range_search_returns_every_row_in_range() {
    let t = TestDir::new();
    let x = normalised(200, 16, 3);
    t.write_f32("x.npy", &x);
    t.write_f32("q.npy", &normalised(4, 16, 4));
    let model = t.train("x.npy", "m.safetensors", 64, 8, &["--method", "topk"]);
    t.bsa(&[
        "build", "--model", &model, "--data", "x.npy", "-q", "--out", "idx",
    ])
    .ok();
    let all = search(&t, "idx", &["--k", "200"]);
    let range = search(&t, "idx", &["--max-distance", "10"]);
    for (a, r) in all.iter().zip(&range) {
        let within: Vec<_> = a["distances"]
            .as_array()
            .unwrap()
            .iter()
            .take_while(|d| d.as_u64().unwrap() <= 10)
            .collect();
        assert_eq!(r["distances"].as_array().unwrap().len(), within.len());
    }
    let scored = search(&t, "idx", &["--score", "adc", "--min-score", "0.2"]);
    for l in &scored {
        assert!(
            l["scores"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s.as_f64().unwrap() >= 0.2)
        );
    }
    // A bound that keeps every row, written as a separate argument: `-inf` is its value, not
    // the short flags `-i -n -f`.
    for l in search(&t, "idx", &["--score", "adc", "--min-score", "-inf"]) {
        assert_eq!(l["ids"].as_array().unwrap().len(), 200);
    }
    // With --rescore the bound still selects by the exact ADC score (the integer tables that
    // pick rescoring's candidates let rows just below it in, and left rows at it out): the
    // same rows, re-ranked. Bounds at exact scores of hits, where that showed.
    t.bsa(&[
        "build",
        "--model",
        &model,
        "--data",
        "x.npy",
        "--vectors",
        "-q",
        "--out",
        "idxv",
    ])
    .ok();
    let ids = |l: &serde_json::Value| {
        let mut v: Vec<u64> = l["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap())
            .collect();
        v.sort_unstable();
        v
    };
    let exact = search(&t, "idxv", &["--score", "adc", "--k", "200"]);
    for rank in [3, 10, 25, 60] {
        let bound = exact[0]["scores"][rank].as_f64().unwrap().to_string();
        let plain = search(&t, "idxv", &["--score", "adc", "--min-score", &bound]);
        let rescored = search(
            &t,
            "idxv",
            &["--score", "adc", "--min-score", &bound, "--rescore", "2"],
        );
        for (p, r) in plain.iter().zip(&rescored) {
            assert_eq!(ids(p), ids(r), "bound {bound}");
        }
    }
    t.bsa(&[
        "search",
        "--index",
        "idx",
        "--queries",
        "q.npy",
        "--min-score",
        "0.2",
    ])
    .fails_with(&["minimum score", "hamming"]);
    t.write(
        "bad.npy",
        &npy_bytes("<f4", "(2,)", &f32_bytes(&[1.0, 2.0])),
    );
    t.bsa(&[
        "search",
        "--index",
        "idx",
        "--queries",
        "q.npy",
        "--allow-ids",
        "bad.npy",
    ])
    .fails_with(&["bad.npy"]);
}

#[test]
fn graph_searches_reach_added_rows_through_bridges() {
    let t = TestDir::new();
    let x = normalised(300, 16, 3);
    t.write_f32("x.npy", &x);
    t.write_f32("q.npy", &normalised(6, 16, 4));
    let part = |name: &str, rows: std::ops::Range<usize>| t.write_f32(name, &x.rows(rows));
    part("head.npy", 0..240);
    part("tail.npy", 240..300);
    t.write("tail_ids.npy", &ids_npy(&(240..300).collect::<Vec<_>>()));
    let model = t.train("x.npy", "m.safetensors", 64, 8, &["--method", "topk"]);
    for (data, out) in [("x.npy", "full"), ("head.npy", "live")] {
        t.bsa(&[
            "build", "--model", &model, "--data", data, "--hnsw", "-q", "--out", out,
        ])
        .ok();
    }
    let out = t
        .bsa(&[
            "add",
            "--index",
            "live",
            "--data",
            "tail.npy",
            "--ids",
            "tail_ids.npy",
            "--merge-factor",
            "0",
        ])
        .ok();
    assert!(
        out.stderr
            .contains("bridging 1 segment from the largest one's graph"),
        "{out:#?}"
    );
    // A walk of every node of the first segment's graph reaches every added row through the
    // bridge: the exact ADC answer of the index built from all rows.
    let walk = [
        "--k", "7", "--score", "adc", "--mode", "hnsw", "--ef", "1000",
    ];
    let exact = search(&t, "full", &["--k", "7", "--score", "adc"]);
    assert_eq!(search(&t, "live", &walk), exact);
    let mut args = vec!["search", "--index", "live", "--queries", "q.npy", "--stats"];
    args.extend_from_slice(&walk);
    let out = t.bsa(&args).ok();
    assert!(out.stderr.contains("\"bridged_segments\":1"), "{out:#?}");
    let out = t.bsa(&["verify", "--index", "live"]).ok();
    assert!(
        out.stdout.contains("hnsw graph (1 segment bridged)"),
        "{out:#?}"
    );
    // Nothing more to bridge: compact leaves the bridge as it is.
    let out = t
        .bsa(&["compact", "--index", "live", "--max-segments", "2"])
        .ok();
    assert!(out.stderr.contains("nothing to compact"), "{out:#?}");
    assert!(!out.stderr.contains("bridging"), "{out:#?}");
}

/// An index whose graph is built on data it does not store cannot rebuild that graph for a
/// merged segment: its adds never merge, even when the default --merge-factor finds two
/// segments in one tier (which would fail the add, saying the index has no model). No test
/// added twice to such an index, so dropping the rule passed.
#[test]
fn a_graph_on_unstored_data_keeps_every_add_a_segment() {
    let t = TestDir::new();
    let x = normalised(90, 16, 5);
    let part = |name: &str, rows: std::ops::Range<usize>| t.write_f32(name, &x.rows(rows));
    part("head.npy", 0..60);
    part("a.npy", 60..75);
    part("b.npy", 75..90);
    let model = t.train("head.npy", "m.safetensors", 64, 8, &["--method", "topk"]);
    t.bsa(&[
        "build",
        "--model",
        &model,
        "--data",
        "head.npy",
        "--hnsw",
        "--hnsw-on",
        "data",
        "-q",
        "--out",
        "idx",
    ])
    .ok();
    for part in ["a.npy", "b.npy"] {
        t.bsa(&["add", "--index", "idx", "--data", part]).ok();
    }
    let out = t.bsa(&["info", "--index", "idx"]).ok();
    assert!(out.stdout.contains("3 segments"), "{out:#?}");
}

/// An index `idx` of 40 codes of 16 bits (`c.npy`), `gone.npy` holding one of its ids, and the
/// index's `LOCK` file, open (not locked), for a test to play another writer with.
fn index_and_its_lock_file() -> (TestDir, std::fs::File) {
    let t = TestDir::new();
    let codes: Vec<u8> = (0..40u8).flat_map(|i| [i, !i]).collect();
    t.write("c.npy", &npy_bytes("|u1", "(40, 2)", &codes));
    t.write("gone.npy", &ids_npy(&[3]));
    t.bsa(&["build", "--codes", "c.npy", "-q", "--out", "idx"])
        .ok();
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(t.path("idx").join("LOCK"))
        .unwrap();
    (t, lock)
}

/// `bsa delete` behind another writer says it waits (else it looks hung), naming the holder its
/// lock file notes, then does its work once the lock is free.
#[test]
fn a_writer_behind_another_says_it_waits() {
    let (t, lock) = index_and_its_lock_file();
    let behind_the_lock = |args: &[&str], note: bool| {
        lock.lock().unwrap();
        if note {
            // As a writer notes itself: its pid, and since when (65 s ago) it holds the lock.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let note = format!("pid 4242 since {}\n", now - 65);
            std::fs::write(t.path("idx").join("LOCK"), note).unwrap();
        }
        let out = std::thread::scope(|s| {
            let change = s.spawn(|| t.bsa(args));
            // The change takes milliseconds once it has the lock: time to reach the wait.
            std::thread::sleep(std::time::Duration::from_millis(500));
            assert!(!change.is_finished(), "{args:?} did not wait for the lock");
            lock.unlock().unwrap();
            change.join().unwrap()
        })
        .ok();
        assert!(
            out.stderr
                .contains("waiting for another writer of idx to finish ("),
            "{out:#?}"
        );
        let named = out
            .stderr
            .contains("(process 4242, for 1 min 5 s: an add, delete");
        let named = named
            || out
                .stderr
                .contains("(process 4242, for 1 min 6 s: an add, delete");
        assert_eq!(named, note, "{out:#?}");
        out
    };
    let out = behind_the_lock(&["delete", "--index", "idx", "--ids", "gone.npy"], true);
    assert!(out.stderr.contains("deleted 1 row from"), "{out:#?}");
    // The delete's own note went with its lock.
    assert_eq!(std::fs::read(t.path("idx").join("LOCK")).unwrap(), b"");
    // A build replacing the index waits for its writers too, and says so (no note: no holder
    // named).
    let out = behind_the_lock(
        &["build", "--codes", "c.npy", "--force", "-q", "--out", "idx"],
        false,
    );
    assert!(out.stderr.contains("built idx"), "{out:#?}");
}

/// With --lock-timeout, a change behind another writer gives up once the time has passed (at
/// once for 0, without saying it waits), naming the index and the holder its lock file notes,
/// with exit status 75, and changes nothing; a build replacing the index does too; a timeout
/// that is no number of seconds is a usage error.
#[test]
fn a_writer_gives_up_after_its_lock_timeout() {
    let (t, lock) = index_and_its_lock_file();
    let before = t.read("idx/manifest.json");
    lock.lock().unwrap();
    std::fs::write(t.path("idx").join("LOCK"), "pid 4242 since 0\n").unwrap();
    let gives_up = |args: &[&str]| {
        let out = t.bsa(args);
        // Exit status 75 (EX_TEMPFAIL): a script can tell "busy, try again" from a failure.
        assert_eq!(out.code, 75, "{args:?}: {out:#?}");
        let last = out.stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("bsa: ")
                && last.contains("idx: another writer of the index (process 4242")
                && last.contains("so nothing was changed: try again once it has finished"),
            "{args:?}: {out:#?}"
        );
        // Told it waits only when it does.
        let told = out.stderr.contains("waiting for another writer");
        assert_eq!(told, args.last() != Some(&"0"), "{args:?}: {out:#?}");
        assert_eq!(t.read("idx/manifest.json"), before, "{args:?} changed it");
        last.to_string()
    };
    let delete = ["delete", "--index", "idx", "--ids", "gone.npy"];
    let said = gives_up(&[&delete[..], &["--lock-timeout", "0.3"]].concat());
    assert!(
        said.contains("still held its lock after 0.3 s of waiting"),
        "{said}"
    );
    let add = ["add", "--index", "idx", "--codes", "c.npy"];
    let said = gives_up(&[&add[..], &["--lock-timeout", "0"]].concat());
    assert!(
        said.contains("holds its lock, and no wait was asked for"),
        "{said}"
    );
    gives_up(&["compact", "--index", "idx", "--lock-timeout", "0"]);
    let build = ["build", "--codes", "c.npy", "--force", "-q", "--out", "idx"];
    gives_up(&[&build[..], &["--lock-timeout", "0"]].concat());
    for bad in ["-1", "nan", "soon", "inf", "1e30"] {
        t.bsa(&["compact", "--index", "idx", "--lock-timeout", bad])
            .usage_error(&["--lock-timeout", "seconds"]);
    }
    t.bsa(&[
        "build",
        "--codes",
        "c.npy",
        "--out",
        "idx2",
        "--lock-timeout",
        "1",
    ])
    .usage_error(&["--force"]);
    lock.unlock().unwrap();
    let out = t.bsa(&[&delete[..], &["--lock-timeout", "0"]].concat());
    assert!(out.ok().stderr.contains("deleted 1 row from"));
}

/// A writer encodes new rows with the index's model only after checking its checksum: rows a
/// damaged model encoded would be committed under new, valid checksums.
#[test]
fn add_and_compact_refuse_a_damaged_model() {
    let t = TestDir::new();
    t.write_f32("x.npy", &normalised(60, 16, 5));
    let model = t.train("x.npy", "m.safetensors", 64, 8, &["--method", "topk"]);
    t.bsa(&[
        "build", "--model", &model, "--data", "x.npy", "-q", "--out", "idx",
    ])
    .ok();
    // (Not merged: the first segment keeps the built index's files, its model among them.)
    t.bsa(&[
        "add",
        "--index",
        "idx",
        "--data",
        "x.npy",
        "--merge-factor",
        "0",
    ])
    .ok();
    let name = std::fs::read_dir(t.path("idx"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".safetensors"))
        .expect("the index holds its model");
    let mut bytes = t.read(&format!("idx/{name}"));
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40; // a weight's byte: the file still parses
    t.write(&format!("idx/{name}"), &bytes);
    let manifest = t.read("idx/manifest.json");
    t.bsa(&["add", "--index", "idx", "--data", "x.npy"])
        .fails_with(&[&name, "checksum"]);
    t.bsa(&["compact", "--index", "idx"])
        .fails_with(&[&name, "checksum"]);
    assert_eq!(t.read("idx/manifest.json"), manifest, "nothing committed");
    // The copy the first segment kept of the built index's model is checked as a search
    // checks it (a delete encodes nothing, but would carry the damage on).
    t.write(&format!("idx/{name}"), &t.read(&model));
    let kept = format!("idx/seg-000000/{name}");
    let mut bytes = t.read(&kept);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    t.write(&kept, &bytes);
    t.write("ids.npy", &ids_npy(&[1]));
    t.bsa(&["delete", "--index", "idx", "--ids", "ids.npy"])
        .fails_with(&["idx is damaged", "seg-000000", "checksum"]);
    assert_eq!(t.read("idx/manifest.json"), manifest, "nothing committed");
}

/// A damaged segment (one flipped bit in its codes) is refused by add, delete and compact
/// before they write, as searches refuse it: they committed new generations over it (exit 0),
/// carrying the damage on (compact said "nothing to compact" of a damaged single segment);
/// --no-verify changes it anyway.
#[test]
fn changes_refuse_a_damaged_index_unless_told() {
    let t = TestDir::new();
    t.write_f32("x.npy", &normalised(60, 16, 5));
    t.write("ids.npy", &ids_npy(&[1, 2]));
    let model = t.train("x.npy", "m.safetensors", 64, 8, &["--method", "topk"]);
    t.bsa(&[
        "build", "--model", &model, "--data", "x.npy", "-q", "--out", "idx",
    ])
    .ok();
    let mut bytes = t.read("idx/codes.bin");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    t.write("idx/codes.bin", &bytes);
    let manifest = t.read("idx/manifest.json");
    for args in [
        &["add", "--index", "idx", "--data", "x.npy"][..],
        &["delete", "--index", "idx", "--ids", "ids.npy"],
        &["compact", "--index", "idx"],
    ] {
        t.bsa(args)
            .fails_with(&["idx is damaged", "not changed", "codes.bin", "checksum"]);
        assert_eq!(
            t.read("idx/manifest.json"),
            manifest,
            "{args:?}: nothing committed"
        );
    }
    // A compaction that merges nothing commits nothing: it runs.
    let o = t.bsa(&["compact", "--index", "idx", "--no-verify"]);
    assert!(o.stderr.contains("nothing to compact"), "{o:#?}");
    t.bsa(&[
        "delete",
        "--index",
        "idx",
        "--ids",
        "ids.npy",
        "--no-verify",
    ])
    .ok();
    // One that would merge the damaged rows refuses them itself, whatever --no-verify says.
    t.bsa(&["compact", "--index", "idx", "--no-verify"])
        .fails_with(&["codes.bin", "checksum"]);
    let v = t.bsa(&["verify", "--index", "idx"]);
    assert_eq!(v.code, 1, "still damaged: {v:#?}");
    assert!(v.stderr.contains("codes.bin"), "{v:#?}");
}

/// With every row deleted, a scored search still answers every query with the same fields,
/// in every mode: empty ids, distances and scores.
#[test]
fn an_emptied_index_answers_with_empty_scored_lines() {
    let t = TestDir::new();
    t.write_f32("x.npy", &normalised(50, 16, 8));
    let model = t.train("x.npy", "m.safetensors", 64, 8, &["--method", "topk"]);
    t.bsa(&[
        "build", "--model", &model, "--data", "x.npy", "--hnsw", "-q", "--out", "idx",
    ])
    .ok();
    let ids: Vec<u8> = (0..50i64).flat_map(|v| v.to_le_bytes()).collect();
    t.write("all.npy", &npy_bytes("<i8", "(50,)", &ids));
    t.bsa(&["delete", "--index", "idx", "--ids", "all.npy"])
        .ok();
    for mode in ["flat", "hnsw"] {
        let out = t
            .bsa(&[
                "search",
                "--index",
                "idx",
                "--queries",
                "x.npy",
                "--k",
                "3",
                "--score",
                "adc",
                "--mode",
                mode,
            ])
            .ok();
        let lines = json_lines(&out.stdout);
        assert_eq!(lines.len(), 50);
        for l in &lines {
            assert_eq!(l["ids"], serde_json::json!([]), "{mode}: {l}");
            assert_eq!(l["scores"], serde_json::json!([]), "{mode}: {l}");
        }
    }
}

/// Bytes of the regular files under `dir`, each file once however many links it has (what the
/// index costs on disk).
fn disk_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else if seen.insert(meta.ino()) {
                total += meta.len();
            }
        }
    }
    total
}

#[test]
fn info_describes_rows_model_structures_and_bytes_on_disk() {
    let t = TestDir::new();
    let x = normalised(300, 16, 4);
    t.write_f32("x.npy", &x);
    let model = t.train("x.npy", "m.safetensors", 64, 8, &["--method", "topk"]);
    t.bsa(&[
        "build",
        "--model",
        &model,
        "--data",
        "x.npy",
        "--vectors",
        "-q",
        "--out",
        "idx",
    ])
    .ok();
    let info = |t: &TestDir| t.bsa(&["info", "--index", "idx", "--json"]).ok().json();
    let s = info(&t);
    assert_eq!(
        (
            &s["format_version"],
            &s["rows"],
            &s["live_rows"],
            &s["bits"]
        ),
        (&1.into(), &300.into(), &300.into(), &64.into()),
        "{s:#}"
    );
    assert_eq!(
        s["model_config"],
        serde_json::json!({"method": "topk", "bits": 64, "k": 8, "dim": 16})
    );
    assert_eq!(s["vectors"], serde_json::json!({"dim": 16, "dtype": "f32"}));
    assert_eq!(s["total_bytes"].as_u64(), Some(disk_bytes(&t.path("idx"))));
    assert_eq!(s["bytes"]["vectors.bin"].as_u64(), Some(64 + 300 * 16 * 4));

    // Segmented by an add and a delete: the model, now linked into the root and the first
    // segment, counts once; the counts follow the deletes.
    t.bsa(&[
        "add",
        "--index",
        "idx",
        "--data",
        "x.npy",
        "--merge-factor",
        "0",
    ])
    .ok();
    t.write("gone.npy", &ids_npy(&[0, 1, 2, 310]));
    t.bsa(&["delete", "--index", "idx", "--ids", "gone.npy"])
        .ok();
    let s = info(&t);
    assert_eq!(
        (
            &s["format_version"],
            &s["rows"],
            &s["live_rows"],
            &s["next_id"]
        ),
        (&2.into(), &600.into(), &596.into(), &600.into()),
        "{s:#}"
    );
    let live: Vec<_> = s["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["live_rows"].as_u64().unwrap())
        .collect();
    assert_eq!(live, [297, 299]);
    assert_eq!(s["total_bytes"].as_u64(), Some(disk_bytes(&t.path("idx"))));
    let text = t.bsa(&["info", "--index", "idx"]).ok().stdout;
    for needle in [
        "64-bit codes (8 bytes each)",
        "596 live (4 deleted, dropped by `bsa compact`) in 2 segments",
        "topk, 64 bits, K = 8, from 16-d rows",
        "16-d f32",
    ] {
        assert!(text.contains(needle), "{needle:?} in {text}");
    }

    // Compacted: what superseded generations held is gone from the disk and from the count.
    t.bsa(&["compact", "--index", "idx"]).ok();
    let s = info(&t);
    assert_eq!((&s["rows"], &s["live_rows"]), (&596.into(), &596.into()));
    assert_eq!(s["total_bytes"].as_u64(), Some(disk_bytes(&t.path("idx"))));

    // A model that cannot be read is described, not fatal (verify fails on it).
    let model_file = s["model"].as_str().unwrap().to_string();
    t.write(&format!("idx/{model_file}"), b"not a model");
    let s = info(&t);
    assert!(s.get("model_config").is_none(), "{s:#}");
    assert!(
        s["model_error"].as_str().unwrap().contains(&model_file),
        "{s:#}"
    );
    assert!(
        t.bsa(&["info", "--index", "idx"])
            .ok()
            .stdout
            .contains("cannot be used")
    );
    t.bsa(&["info", "--index", "missing"])
        .fails_with(&["missing", "no such index directory"]);
}

#[test]
fn ids_past_int64_are_refused_by_every_writer() {
    // bsa returns ids as int64 (Python, numpy): an index holding a larger one could not be
    // searched or changed from Python.
    let t = TestDir::new();
    let codes: Vec<u8> = (0..4u8).collect();
    t.write("c.npy", &npy_bytes("|u1", "(4, 1)", &codes));
    let big: Vec<u8> = [0u64, 1, 1 << 63, 2]
        .iter()
        .flat_map(|i| i.to_le_bytes())
        .collect();
    t.write("big.npy", &npy_bytes("<u8", "(4,)", &big));
    let build = |ids: &str| {
        t.bsa(&[
            "build", "--codes", "c.npy", "--bits", "8", "--ids", ids, "-q", "--force", "--out",
            "idx",
        ])
    };
    build("big.npy").fails_with(&["big.npy", "ids[2] is 9223372036854775808", "below 2^63"]);
    t.write("ok.npy", &ids_npy(&[0, 1, i64::MAX - 1, 2]));
    build("ok.npy").ok();
    t.bsa(&[
        "add", "--index", "idx", "--codes", "c.npy", "--ids", "big.npy",
    ])
    .fails_with(&["ids[2] is 9223372036854775808"]);
    // No rows: said as --data says it.
    t.write("none.npy", &npy_bytes("|u1", "(0, 1)", &[]));
    t.bsa(&["add", "--index", "idx", "--codes", "none.npy"])
        .fails_with(&["none.npy: no rows", "nothing to add"]);
    // The largest id is 2^63 - 2: one default id fits, two do not.
    t.write("one.npy", &npy_bytes("|u1", "(1, 1)", &[9]));
    t.bsa(&["add", "--index", "idx", "--codes", "one.npy"]).ok();
    t.bsa(&["add", "--index", "idx", "--codes", "one.npy"])
        .fails_with(&["default id would be 9223372036854775808", "give their ids"]);
    assert_eq!(
        t.bsa(&["info", "--index", "idx", "--json"]).ok().json()["live_rows"],
        5
    );
    let text = t.bsa(&["info", "--index", "idx"]).ok().stdout;
    assert!(text.contains("no default id is left below 2^63"), "{text}");
}

/// `bsa verify` short of file descriptors (`ulimit -n`) could not check the index: exit 2,
/// with the limit's hint, not exit 1, which says the index is damaged (a script would rebuild
/// or restore an intact one).
#[cfg(target_os = "linux")]
#[test]
fn verify_short_of_file_descriptors_is_no_damage() {
    let t = TestDir::new();
    t.write_f32("x.npy", &normalised(200, 16, 3));
    let model = t.train("x.npy", "m.safetensors", 64, 8, &["--method", "topk"]);
    t.bsa(&[
        "build",
        "--model",
        &model,
        "--data",
        "x.npy",
        "--vectors",
        "--hnsw",
        "-q",
        "--out",
        "idx",
    ])
    .ok();
    // Ten segments, each holding its graph's file open.
    for seed in 0..9 {
        t.write_f32("more.npy", &normalised(10, 16, 10 + seed));
        t.bsa(&[
            "add",
            "--index",
            "idx",
            "--data",
            "more.npy",
            "--merge-factor",
            "0",
        ])
        .ok();
    }
    let out = std::process::Command::new("sh")
        .args(["-c", "ulimit -n 8 && exec \"$0\" verify --index idx"])
        .arg(env!("CARGO_BIN_EXE_bsa"))
        .current_dir(t.path(""))
        .env("OPENBLAS_NUM_THREADS", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("Too many open files"), "{stderr}");
    assert!(stderr.contains("raise its limit (ulimit -n)"), "{stderr}");
    assert!(stderr.contains("one per segment"), "{stderr}");
    t.bsa(&["verify", "--index", "idx"]).ok();
}
