//! bsa-index without its `hnsw-rs` feature, as a query server links it
//! (`bsa-index = { default-features = false }`): building a graph over the codes by Hamming
//! distance is refused before anything is written, an index whose graph exists only as an
//! hnsw_rs dump is read by bsa (a damaged dump is an error naming it; tests/compat.rs searches
//! a committed one), and every index with a `graph.bin` opens and is searched through its
//! graph, as is one without a graph.
//!
//! Compiled only without the feature:
//! `cargo test -p bsa-index --no-default-features --test without_hnsw_rs`.
#![cfg(not(feature = "hnsw-rs"))]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use bsa_index::live::{NewRows, SearchOptions, Snapshot, Writer};
use bsa_index::manifest::{FileInfo, HnswInfo};
use bsa_index::search::GraphParams;
use bsa_index::{Error, HnswParams, Index, IndexBuilder, Manifest, Mode, Score, SearchParams};
use common::*;
use rand::Rng;

const BITS: usize = 128;
const DIM: usize = 16;

/// `n` codes of [`BITS`] bits with 8 bits set each, and their "decoded" vectors: the sum of one
/// random unit atom per set bit (the atoms are returned too, for the queries' tables).
fn data(n: usize, seed: u64) -> (Vec<u64>, Vec<f32>, Vec<f32>) {
    let mut r = rng(seed);
    let atoms: Vec<f32> = (0..BITS * DIM).map(|_| r.random::<f32>() - 0.5).collect();
    let w = words(BITS);
    let mut codes = vec![0u64; n * w];
    let mut decoded = vec![0f32; n * DIM];
    for i in 0..n {
        let mut set = 0;
        while set < 8 {
            let b = r.random_range(0..BITS);
            if codes[i * w + b / 64] & (1 << (b % 64)) == 0 {
                codes[i * w + b / 64] |= 1 << (b % 64);
                for d in 0..DIM {
                    decoded[i * DIM + d] += atoms[b * DIM + d];
                }
                set += 1;
            }
        }
    }
    (codes, decoded, atoms)
}

/// Per-query tables `t_j = atom_j . q` for random queries `q`.
/// An index of `data(n, seed)` with a graph on the decoded vectors, in a new temporary folder:
/// (the folder, the index's path, the codes, the atoms).
fn built_on_vectors(n: usize, seed: u64) -> (tempfile::TempDir, PathBuf, Vec<u64>, Vec<f32>) {
    let (codes, decoded, atoms) = data(n, seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    IndexBuilder::new(BITS, &codes)
        .hnsw(params())
        .graph_on(&decoded, DIM)
        .build(&path)
        .unwrap();
    (dir, path, codes, atoms)
}

fn tables(atoms: &[f32], nq: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    (0..nq)
        .flat_map(|_| {
            let q: Vec<f32> = (0..DIM).map(|_| r.random::<f32>() - 0.5).collect();
            atoms
                .chunks_exact(DIM)
                .map(|a| a.iter().zip(&q).map(|(x, y)| x * y).sum::<f32>())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn params() -> HnswParams {
    HnswParams {
        max_connections: 8,
        ef_construction: 40,
        ef_search: 32,
    }
}

/// Rewrites the manifest of the single-segment index at `path` with `edit`.
fn edit_manifest(path: &Path, edit: impl FnOnce(&mut Manifest)) {
    let mut m = Index::open(path).unwrap().manifest().clone();
    edit(&mut m);
    fs::write(path.join("manifest.json"), m.to_bytes().unwrap()).unwrap();
}

/// Writes `bytes` to `path/name` and lists the file in `m`.
fn add_file(m: &mut Manifest, path: &Path, name: &str, bytes: &[u8]) {
    fs::write(path.join(name), bytes).unwrap();
    let info: FileInfo = serde_json::from_value(serde_json::json!({
        "len": bytes.len(),
        "crc32": crc32fast::hash(bytes),
    }))
    .unwrap();
    m.files.insert(name.to_string(), info);
}

/// The manifest entry of an hnsw_rs-built graph (`native`: its `graph.bin`, if any).
fn hnsw_info(native: Option<&str>) -> HnswInfo {
    serde_json::from_value(serde_json::json!({
        "basename": "hnsw",
        "graph": "hnsw.hnsw.graph",
        "data": "hnsw.hnsw.data",
        "params": params(),
        "native": native,
    }))
    .unwrap()
}

#[test]
fn a_hamming_graph_build_is_refused_before_writing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let codes = random_codes(&mut rng(1), 300, BITS, 1);
    let err = IndexBuilder::new(BITS, &codes)
        .hnsw(params())
        .build(&path)
        .unwrap_err();
    let Error::InvalidArgument(msg) = &err else {
        panic!("not InvalidArgument: {err:?}");
    };
    for says in ["Hamming", "`hnsw-rs` feature", "on by default", "graph_on"] {
        assert!(msg.contains(says), "{says:?} missing from: {msg}");
    }
    assert!(!path.exists());
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    // Over an existing index (overwrite): refused too, the index untouched.
    IndexBuilder::new(BITS, &codes).build(&path).unwrap();
    let before = fs::read(path.join("manifest.json")).unwrap();
    let err = IndexBuilder::new(BITS, &codes)
        .hnsw(params())
        .overwrite(true)
        .build(&path)
        .unwrap_err();
    assert!(err.to_string().contains("`hnsw-rs` feature"), "{err}");
    assert_eq!(fs::read(path.join("manifest.json")).unwrap(), before);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    assert!(bsa_index::build_leftovers(&path).is_empty());
}

#[test]
fn a_graph_on_vectors_is_built_opened_and_searched() {
    let n = 600;
    let (_dir, path, _, atoms) = built_on_vectors(n, 2);
    let index = Index::open(&path).unwrap();
    index.verify().unwrap();
    index.load_hnsw().unwrap();
    assert_eq!(index.graph().unwrap().len(), n);

    let nq = 20;
    let t = tables(&atoms, nq, 3);
    let offsets = vec![0f32; nq];
    let score = Score::Table {
        tables: &t,
        offsets: &offsets,
        normalise: false,
    };
    let qcodes = vec![0u64; nq * words(BITS)];
    let sp = SearchParams::default();
    let flat = index.search_flat_scored(&qcodes, 10, &score, &sp).unwrap();
    let graph = |ef: usize| graph_search(&index, &qcodes, 10, &score, ef);
    assert_eq!(graph(n), flat, "exhaustive graph search differs from flat");
    let found: usize = graph(32)
        .iter()
        .zip(&flat)
        .map(|(g, f)| g.ids.iter().filter(|id| f.ids.contains(id)).count())
        .sum();
    assert!(found >= 8 * nq, "graph recall {found} of {}", 10 * nq);

    // The same through a snapshot, as a server serves it.
    let snap = Snapshot::open(&path).unwrap();
    snap.load_graphs().unwrap();
    let mode = Mode::Hnsw(GraphParams::default().with_ef_search(Some(n)));
    let (hits, _) = snap
        .search(&qcodes, 10, &score, &mode, &SearchOptions::default())
        .unwrap();
    assert_eq!(hits, flat);
}

#[test]
fn an_index_without_a_graph_opens_and_searches_flat() {
    let n = 500;
    let codes = random_codes(&mut rng(4), n, BITS, 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    IndexBuilder::new(BITS, &codes)
        .ids(&(0..n as u64).map(|i| 10 * i).collect::<Vec<_>>())
        .build(&path)
        .unwrap();
    let index = Index::open(&path).unwrap();
    index.verify().unwrap();
    let queries = random_codes(&mut rng(5), 8, BITS, 0);
    let hits = index
        .search_flat(&queries, 5, &SearchParams::default())
        .unwrap();
    for (q, h) in queries.chunks_exact(words(BITS)).zip(&hits) {
        let want = brute(&codes, BITS, q, 5);
        let ids: Vec<u64> = want.iter().map(|&(_, r)| 10 * r).collect();
        let dists: Vec<u32> = want.iter().map(|&(d, _)| d).collect();
        assert_eq!((&h.ids, &h.distances), (&ids, &dists));
    }
    let snap = Snapshot::open(&path).unwrap();
    snap.load_graphs().unwrap(); // no graph: nothing to load
    let flat = Mode::parse("flat").unwrap();
    let (shits, _) = snap
        .search(
            &queries,
            5,
            &Score::Hamming,
            &flat,
            &SearchOptions::default(),
        )
        .unwrap();
    assert_eq!(shits, hits);
    let err = index
        .search_hnsw(&queries, 5, &SearchParams::default())
        .unwrap_err();
    assert!(err.to_string().contains("no HNSW graph"), "{err}");
}

/// A graph over the codes built elsewhere (by a build with the feature) has a `graph.bin`:
/// opened and searched by Hamming distance without hnsw_rs. Made here by relabelling a graph
/// built on vectors, whose file has the same layout; the hnsw_rs dump beside it is never read.
#[test]
fn a_hamming_graph_with_graph_bin_is_searched() {
    let n = 400;
    let (_dir, path, codes, _) = built_on_vectors(n, 6);
    edit_manifest(&path, |m| {
        m.graph = None;
        m.hnsw = Some(hnsw_info(Some("graph.bin")));
        add_file(m, &path, "hnsw.hnsw.graph", b"not read without hnsw_rs");
        add_file(m, &path, "hnsw.hnsw.data", b"not read either");
    });
    let index = Index::open(&path).unwrap();
    index.verify().unwrap();
    let queries = random_codes(&mut rng(7), 10, BITS, 3);
    let p = |ef: usize| SearchParams::default().with_ef_search(Some(ef));
    let flat = index.search_flat(&queries, 10, &p(n)).unwrap();
    assert_eq!(index.search_hnsw(&queries, 10, &p(n)).unwrap(), flat);
    drop(index);
    let snap = Snapshot::open(&path).unwrap();
    snap.load_graphs().unwrap();

    // Adding rows would build a segment graph over the codes: refused before anything is
    // written, the index as it was.
    let files = |p: &Path| {
        let mut names: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let mut writer = Writer::open(&path).unwrap(); // (it adds its LOCK file)
    let before = files(&path);
    let err = writer
        .add(&NewRows::codes(&codes[..4 * words(BITS)]), false)
        .unwrap_err();
    let msg = err.to_string();
    for says in [
        path.display().to_string().as_str(),
        "adding rows",
        "`hnsw-rs` feature",
    ] {
        assert!(msg.contains(says), "{says:?} missing from: {msg}");
    }
    assert_eq!(files(&path), before);
    assert!(snap.is_current().unwrap());
    // Deleting needs no graph; compacting the deleted row away would rebuild one: refused, and
    // the generation the delete committed stays.
    writer.delete(&[0]).unwrap();
    let deleted = Snapshot::open(&path).unwrap();
    let err = writer.compact(1, None).unwrap_err().to_string();
    assert!(
        err.contains("merging segments") && err.contains("`hnsw-rs` feature"),
        "{err}"
    );
    drop(writer);
    assert!(deleted.is_current().unwrap());
    assert_eq!(deleted.len(), n - 1);
}

/// An index written before `graph.bin` existed, its graph only an hnsw_rs dump, read by bsa
/// itself (tests/compat.rs searches a real one here too): a damaged dump (here bytes that are
/// no dump, under matching checksums) is an error naming the dump file, from the graph search,
/// the graph's load and verify alike; flat search and the snapshot's flat search work.
#[test]
fn a_damaged_dump_only_graph_is_an_error_naming_it_and_the_rest_works() {
    let n = 300;
    let codes = random_codes(&mut rng(8), n, BITS, 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old-idx");
    IndexBuilder::new(BITS, &codes).build(&path).unwrap();
    edit_manifest(&path, |m| {
        m.hnsw = Some(hnsw_info(None));
        add_file(m, &path, "hnsw.hnsw.graph", b"an hnsw_rs graph dump");
        add_file(m, &path, "hnsw.hnsw.data", b"an hnsw_rs data dump");
    });
    let index = Index::open(&path).unwrap();
    let named = |e: Error| {
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("hnsw.hnsw.graph"), "{e}");
    };
    named(index.verify().unwrap_err());
    let queries = random_codes(&mut rng(9), 4, BITS, 0);
    let sp = SearchParams::default();
    let flat = index.search_flat(&queries, 5, &sp).unwrap();
    assert_eq!(flat.len(), 4);
    named(index.search_hnsw(&queries, 5, &sp).unwrap_err());
    named(index.load_hnsw().unwrap_err());

    let snap = Snapshot::open(&path).unwrap();
    assert!(
        snap.load_graphs()
            .unwrap_err()
            .to_string()
            .contains("hnsw.hnsw.graph")
    );
    let flat_mode = Mode::parse("flat").unwrap();
    let (hits, _) = snap
        .search(
            &queries,
            5,
            &Score::Hamming,
            &flat_mode,
            &SearchOptions::default(),
        )
        .unwrap();
    assert_eq!(hits, flat);
}
