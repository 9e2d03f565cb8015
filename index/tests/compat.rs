//! Indexes written by earlier builds must keep opening with identical results (one committed
//! golden index per format version, as tantivy's compat tests do).
//!
//! To (re)create the golden index for the current version, run
//! `BSA_REGEN_GOLDEN=1 cargo test -p bsa-index --test compat` and commit `tests/data/v<N>/`.

use std::path::PathBuf;

use bsa_index::format::FORMAT_VERSION;
use bsa_index::{Index, IndexBuilder, SearchParams, VectorDtype};

fn golden_dir(version: u32) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/v{version}"))
}

/// 16 codes of 70 bits (not a multiple of 64), ids, f16 vectors of dimension 3, a model file.
fn golden_inputs() -> (Vec<u64>, Vec<u64>, Vec<f32>) {
    let codes: Vec<u64> = (0..16u64)
        .flat_map(|i| [i.wrapping_mul(0x9e37_79b9_7f4a_7c15), (i * 5) & 0x3f])
        .collect();
    let ids: Vec<u64> = (0..16u64).map(|i| 1000 - i * 3).collect();
    let vectors: Vec<f32> = (0..48).map(|i| ((i % 7) as f32) - 3.0).collect();
    (codes, ids, vectors)
}

#[test]
fn golden_indexes_open_and_answer() {
    let dir = golden_dir(FORMAT_VERSION);
    let (codes, ids, vectors) = golden_inputs();
    if std::env::var_os("BSA_REGEN_GOLDEN").is_some() {
        let scratch = tempfile::tempdir().unwrap();
        let model = scratch.path().join("model.safetensors");
        std::fs::write(&model, b"golden model bytes").unwrap();
        IndexBuilder::new(70, &codes)
            .ids(&ids)
            .vectors(&vectors, 3)
            .vector_dtype(VectorDtype::F16)
            .model_file(&model)
            .extra(serde_json::json!({"golden": true}))
            .overwrite(true)
            .build(&dir)
            .unwrap();
    }
    for version in 1..=FORMAT_VERSION {
        let index =
            Index::open(golden_dir(version)).unwrap_or_else(|e| panic!("golden v{version}: {e}"));
        index.verify().unwrap();
        assert_eq!(index.codes(), &codes[..]);
        assert_eq!(index.ids(), &ids[..]);
        assert_eq!(index.bits(), 70);
        assert_eq!(index.extra()["golden"], true);
        assert_eq!(
            std::fs::read(index.model_path().unwrap()).unwrap(),
            b"golden model bytes"
        );
        let hits = index
            .search_flat(&codes[6..8], 4, &SearchParams::default())
            .unwrap();
        assert_eq!(hits[0].rows[0], 3);
        assert_eq!(hits[0].distances[0], 0);
        let r = index.rescore(&[1.0, 0.0, -1.0], &hits[0], 2).unwrap();
        assert_eq!(r.len(), 2);
    }
}

/// Copies the files of directory `from` (and its subdirectories) to `to`.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The segmented format (v2) came with issue 16: the golden v1 index opens as a snapshot of
/// one segment with the same answers, grows into v2 at its first change, and the committed
/// golden v2 index (the v1 one after an add and a delete) keeps opening with the same answers.
#[test]
fn golden_v1_grows_into_the_segmented_format_and_golden_v2_opens() {
    use bsa_index::live::{NewRows, SearchOptions, Snapshot, Writer};
    use bsa_index::manifest::SEGMENTED_FORMAT_VERSION;
    use bsa_index::{Mode, Score};

    let (codes, ids, vectors) = golden_inputs();
    let flat = Mode::parse("flat").unwrap();
    let v1 = Snapshot::open(golden_dir(1)).unwrap();
    assert!(!v1.is_segmented());
    let (a, _) = v1
        .search(
            &codes[6..8],
            4,
            &Score::Hamming,
            &flat,
            &SearchOptions::default(),
        )
        .unwrap();
    let b = Index::open(golden_dir(1))
        .unwrap()
        .search_flat(&codes[6..8], 4, &SearchParams::default())
        .unwrap();
    assert_eq!(
        (a[0].ids.clone(), a[0].distances.clone()),
        (b[0].ids.clone(), b[0].distances.clone())
    );
    // The golden rows are not in id order (they predate sorted segments): ids are still found.
    assert_eq!(v1.find_id(ids[5]), Some((0, 5)));

    // Made once (`BSA_REGEN_GOLDEN_V2=1`) from the committed v1 index, then committed.
    let v2_dir = golden_dir(SEGMENTED_FORMAT_VERSION);
    if std::env::var_os("BSA_REGEN_GOLDEN_V2").is_some() {
        let _ = std::fs::remove_dir_all(&v2_dir);
        copy_tree(&golden_dir(1), &v2_dir);
        let mut w = Writer::open(&v2_dir).unwrap();
        w.add(
            &NewRows::codes(&codes[..4])
                .ids(&[5000, 5001])
                .vectors(&vectors[..6]),
            false,
        )
        .unwrap();
        w.delete(&[ids[3]]).unwrap();
    }
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("v2");
    copy_tree(&v2_dir, &copy);
    for dir in [&v2_dir, &copy] {
        let s = Snapshot::open(dir).unwrap_or_else(|e| panic!("golden v2: {e}"));
        s.verify().unwrap();
        assert!(s.is_segmented());
        assert_eq!((s.segments().len(), s.len(), s.rows()), (2, 17, 18));
        assert_eq!(s.extra()["golden"], true);
        assert_eq!(
            std::fs::read(s.model_path().unwrap()).unwrap(),
            b"golden model bytes"
        );
        // Rows 0 and 1 were added again as ids 5000 and 5001; id ids[3] is deleted.
        let (h, _) = s
            .search(
                &codes[..2],
                3,
                &Score::Hamming,
                &flat,
                &SearchOptions::default(),
            )
            .unwrap();
        assert_eq!(h[0].distances[..2], [0, 0]);
        assert_eq!(h[0].ids[..2], [ids[0], 5000]);
        assert!(s.find_id(ids[3]).is_none());
    }
    // A single-segment reader refuses the segmented index, saying what to open it with.
    let e = Index::open(&copy).unwrap_err().to_string();
    assert!(e.contains("segmented index"), "{e}");
    // Compacting the copy sorts the old rows by id; the answers do not change.
    let before = Snapshot::open(&copy).unwrap();
    let (h1, _) = before
        .search(
            &codes,
            18,
            &Score::Hamming,
            &flat,
            &SearchOptions::default(),
        )
        .unwrap();
    Writer::open(&copy).unwrap().compact(1, None).unwrap();
    let after = Snapshot::open(&copy).unwrap();
    let ids_after = after.segments()[0].index().ids();
    assert!(ids_after.windows(2).all(|p| p[0] < p[1]));
    let (h2, _) = after
        .search(
            &codes,
            18,
            &Score::Hamming,
            &flat,
            &SearchOptions::default(),
        )
        .unwrap();
    for (x, y) in h1.iter().zip(&h2) {
        assert_eq!(x.distances, y.distances);
    }
}

/// Compacting an index whose one segment predates rows in id order rewrites it in id order
/// (nothing to merge, nothing deleted): ties then fall to the smaller id, as a fresh build's do.
#[test]
fn compacting_a_lone_unsorted_segment_sorts_it() {
    use bsa_index::live::{SearchOptions, Snapshot, Writer};
    use bsa_index::{Mode, Score};
    let (codes, ids, _) = golden_inputs();
    assert!(
        !ids.windows(2).all(|p| p[0] < p[1]),
        "the golden rows are not in id order"
    );
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("v1");
    copy_tree(&golden_dir(1), &copy);
    let report = Writer::open(&copy).unwrap().compact(1, None).unwrap();
    assert_eq!((report.merged, report.segments), (1, 1));
    let snap = Snapshot::open(&copy).unwrap();
    snap.verify().unwrap();
    assert!(
        snap.segments()[0]
            .index()
            .ids()
            .windows(2)
            .all(|p| p[0] < p[1])
    );
    // Every query's whole ranking: by distance, ties by the smaller id.
    let flat = Mode::parse("flat").unwrap();
    let n = ids.len();
    let (hits, _) = snap
        .search(&codes, n, &Score::Hamming, &flat, &SearchOptions::default())
        .unwrap();
    let w = codes.len() / n;
    for (q, h) in hits.iter().enumerate() {
        let mut want: Vec<(u32, u64)> = (0..n)
            .map(|r| {
                let (a, b) = (&codes[q * w..(q + 1) * w], &codes[r * w..(r + 1) * w]);
                let d = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x ^ y).count_ones())
                    .sum::<u32>();
                (d, ids[r])
            })
            .collect();
        want.sort();
        let got: Vec<(u32, u64)> = h
            .distances
            .iter()
            .copied()
            .zip(h.ids.iter().copied())
            .collect();
        assert_eq!(got, want, "query {q}");
    }
}

/// An index written before `graph.bin` existed, its Hamming graph only an hnsw_rs dump
/// (`tests/data/v1-hnsw-dump/`, made once with `BSA_REGEN_GOLDEN_DUMP=1` and the `hnsw-rs`
/// feature, then committed): bsa reads the dump itself, so it opens, verifies and is searched
/// through its graph with or without the feature: its lists are those of the `graph.bin` the
/// same build exported (`v1-hnsw-dump.lists.txt`, written then), and with `ef` at least the
/// rows, a graph search is exact (every graph is linked so that level 0 reaches every node):
/// it equals the flat scan.
#[test]
fn golden_hnsw_rs_dump_is_searched_through_its_graph() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1-hnsw-dump");
    let lists_file = dir.with_extension("lists.txt");
    // One line per row: its neighbours on each level, levels apart by " / "; then the entry.
    let lists = |g: &bsa_index::graph::GraphView<'_>| {
        let mut text = String::new();
        for row in 0..g.len() as u32 {
            let levels: Vec<String> = (0..=g.level(row))
                .map(|l| {
                    let nb: Vec<String> = g.neighbours(row, l).iter().map(u32::to_string).collect();
                    nb.join(" ")
                })
                .collect();
            text += &format!("{row}: {}\n", levels.join(" / "));
        }
        text + &format!("entry: {}\n", g.entry_point())
    };
    let n = 120u64;
    let codes: Vec<u64> = (0..n)
        .flat_map(|i| {
            let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            [x & (x >> 3), (x >> 17) & 0x3f]
        })
        .collect();
    #[cfg(feature = "hnsw-rs")]
    if std::env::var_os("BSA_REGEN_GOLDEN_DUMP").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        let params = bsa_index::HnswParams {
            max_connections: 8,
            ef_construction: 32,
            ef_search: 16,
        };
        IndexBuilder::new(70, &codes)
            .hnsw(params)
            .build(&dir)
            .unwrap();
        let native = Index::open(&dir).unwrap();
        std::fs::write(&lists_file, lists(&native.graph().unwrap())).unwrap();
        drop(native);
        let mut m = Index::open(&dir).unwrap().manifest().clone();
        let graph = bsa_index::graph::GRAPH_FILE;
        m.files.remove(graph);
        m.hnsw.as_mut().unwrap().native = None;
        std::fs::remove_file(dir.join(graph)).unwrap();
        std::fs::write(dir.join("manifest.json"), m.to_bytes().unwrap()).unwrap();
    }
    let index = Index::open(&dir).unwrap();
    assert!(!dir.join(bsa_index::graph::GRAPH_FILE).exists());
    index.verify().unwrap();
    assert_eq!(index.codes(), &codes[..]);
    let queries = &codes[..2 * 20];
    let exact = index
        .search_flat(queries, 7, &SearchParams::default())
        .unwrap();
    let walked = index
        .search_hnsw(
            queries,
            7,
            &SearchParams::default().with_ef_search(Some(n as usize)),
        )
        .unwrap();
    assert_eq!(walked, exact);
    let want = std::fs::read_to_string(&lists_file).unwrap();
    assert_eq!(lists(&index.graph().unwrap()), want);
}
