//! Native HNSW search on the exported graph (`graph.bin`): identical to a plain reference
//! implementation of the same algorithm, high recall, identical after reload, the same through
//! the hnsw_rs-dump path of older indexes, and damaged bytes give errors naming the file.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::Path;

use bsa_index::format::{FileKind, HEADER_LEN, Header};
use bsa_index::graph::{GRAPH_FILE, GraphView, NO_NEIGHBOUR};
use bsa_index::{Error, HnswParams, Index, IndexBuilder, Manifest, SearchParams};
use common::*;
use proptest::prelude::*;

/// The search algorithm of `bsa_index::graph`, written as plainly as possible: sets instead of
/// heaps, a hash set for visited rows, distances with the naive loop. The walk's list holds
/// `ef` rows; the answer is the best `k` of every row it scored (the list's best when `k <= ef`).
fn reference(
    g: &GraphView<'_>,
    codes: &[u64],
    w: usize,
    q: &[u64],
    k: usize,
    ef: usize,
    max_distance: Option<u32>,
) -> Vec<(u32, u64)> {
    let dist = |r: u32| hamming(q, &codes[r as usize * w..(r as usize + 1) * w]);
    let mut cur = (dist(g.entry_point()), g.entry_point());
    for level in (1..=g.max_level()).rev() {
        loop {
            let mut best = cur;
            for &nb in g.neighbours(cur.1, level) {
                best = best.min((dist(nb), nb));
            }
            if best == cur {
                break;
            }
            cur = best;
        }
    }
    let mut visited = HashSet::from([cur.1]);
    let mut candidates = BTreeSet::from([cur]);
    let mut results = BTreeSet::from([cur]);
    let mut scored = BTreeSet::from([cur]);
    while let Some(c) = candidates.pop_first() {
        if results.len() >= ef && c > *results.last().unwrap() {
            break;
        }
        for &nb in g.neighbours(c.1, 0) {
            if !visited.insert(nb) {
                continue;
            }
            let e = (dist(nb), nb);
            scored.insert(e);
            if results.len() < ef || e < *results.last().unwrap() {
                candidates.insert(e);
                results.insert(e);
                if results.len() > ef {
                    results.pop_last();
                }
            }
        }
    }
    scored
        .into_iter()
        .filter(|&(d, _)| max_distance.is_none_or(|m| d <= m))
        .take(k)
        .map(|(d, r)| (d, u64::from(r)))
        .collect()
}

fn params(m: usize) -> HnswParams {
    HnswParams {
        max_connections: m,
        ef_construction: 100,
        ef_search: 32,
    }
}

/// `nq` queries near stored codes (a few bits flipped).
fn near_queries(codes: &[u64], w: usize, nq: usize, seed: u64) -> Vec<u64> {
    let n = codes.len() / w;
    let noise = random_codes(&mut rng(seed), nq, w * 64, 2);
    (0..nq)
        .flat_map(|i| {
            let row = (i * 7919) % n;
            let mut q = codes[row * w..(row + 1) * w].to_vec();
            q[0] ^= noise[i * w] & 0x0f0f;
            q
        })
        .collect()
}

fn as_pairs(h: &bsa_index::Hits) -> Vec<(u32, u64)> {
    h.distances
        .iter()
        .copied()
        .zip(h.rows.iter().copied())
        .collect()
}

fn tie_aware_recall(codes: &[u64], bits: usize, queries: &[u64], hits: &[bsa_index::Hits]) -> f64 {
    let w = words(bits);
    let mut good = 0;
    for (qi, h) in hits.iter().enumerate() {
        let exact = brute(codes, bits, &queries[qi * w..(qi + 1) * w], 10);
        let tenth = exact.last().unwrap().0;
        good += h.distances.iter().filter(|&&d| d <= tenth).count().min(10);
    }
    good as f64 / (10 * hits.len()) as f64
}

#[test]
fn native_search_equals_the_reference() {
    // 256 and 1024 bits use fixed-width kernels, 100 bits has a partial word, 320 bits (5 words)
    // takes the generic path.
    for (bits, m, n) in [
        (256, 16, 3000),
        (100, 8, 2000),
        (320, 6, 1500),
        (1024, 12, 1200),
    ] {
        let w = words(bits);
        let mut r = rng(bits as u64);
        let codes = clustered_codes(&mut r, n, bits, 30, 0.1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g");
        IndexBuilder::new(bits, &codes)
            .hnsw(params(m))
            .build(&path)
            .unwrap();
        assert!(path.join(GRAPH_FILE).exists());
        let index = Index::open(&path).unwrap();
        let g = index.graph().unwrap();
        assert_eq!(g.len(), n);
        assert_eq!(g.level0_stride(), 2 * m);
        assert_eq!(g.upper_stride(), m);
        assert_eq!(g.level(g.entry_point()), g.max_level());
        let upper: usize = (0..n as u32).map(|r| g.level(r)).sum();
        assert!(upper > 0 && upper < n, "{upper} upper-level lists");
        let queries = near_queries(&codes, w, 60, 5);
        let mut random_q = random_codes(&mut r, 20, bits, 0);
        let mut queries = queries;
        queries.append(&mut random_q);
        let nq = queries.len() / w;
        for (k, ef, maxd) in [
            (10, 10, None),
            (10, 32, None),
            (1, 1, None),
            (5, 80, None),
            (10, 24, Some(bits as u32 / 5)),
            // More rows kept than the walk's list (a rescored search's candidates).
            (40, 12, None),
            (25, 10, Some(bits as u32 / 4)),
            (n + 5, 16, None),
        ] {
            let p = SearchParams::default()
                .with_ef_search(Some(ef))
                .with_max_distance(maxd);
            for threads in [1, 2] {
                let hits = pool(threads)
                    .install(|| index.search_hnsw(&queries, k, &p))
                    .unwrap();
                assert_eq!(hits.len(), nq);
                for (qi, h) in hits.iter().enumerate() {
                    let q = &queries[qi * w..(qi + 1) * w];
                    let want = reference(&g, index.codes(), w, q, k.min(n), ef, maxd);
                    assert_eq!(as_pairs(h), want, "bits {bits} k {k} ef {ef} query {qi}");
                    assert_eq!(h.ids, h.rows);
                }
            }
        }
        // No ef given: the stored one (32), raised to k when k is larger, so a walk asked for
        // more than it stores still answers k rows.
        for k in [10, 32, 100, 300] {
            let hits = index
                .search_hnsw(&queries, k, &SearchParams::default())
                .unwrap();
            for (qi, h) in hits.iter().enumerate() {
                let q = &queries[qi * w..(qi + 1) * w];
                let want = reference(&g, index.codes(), w, q, k, k.max(32), None);
                assert_eq!(
                    as_pairs(h),
                    want,
                    "bits {bits} k {k} default ef, query {qi}"
                );
                assert_eq!(h.len(), k);
            }
        }
    }
}

#[test]
fn recall_reload_ids_and_the_old_dump_path() {
    let bits = 256;
    let w = words(bits);
    let n = 5000;
    let mut r = rng(77);
    let codes = clustered_codes(&mut r, n, bits, 50, 0.08);
    let ids: Vec<u64> = (0..n as u64).map(|i| 1_000_000 + 3 * i).collect();
    let queries = near_queries(&codes, w, 200, 9);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g");
    IndexBuilder::new(bits, &codes)
        .ids(&ids)
        .hnsw(HnswParams {
            max_connections: 16,
            ef_construction: 200,
            ef_search: 64,
        })
        .build(&path)
        .unwrap();
    let p = SearchParams::default();
    let index = Index::open(&path).unwrap();
    let hits = pool(2)
        .install(|| index.search_hnsw(&queries, 10, &p))
        .unwrap();
    let rec = tie_aware_recall(&codes, bits, &queries, &hits);
    eprintln!("recall@10 = {rec}");
    assert!(rec >= 0.97, "recall@10 = {rec}");
    for h in &hits {
        assert_eq!(h.len(), 10);
        for (&row, &id) in h.rows.iter().zip(&h.ids) {
            assert_eq!(id, ids[row as usize]);
        }
    }
    drop(index);

    // Reload: identical results, from 1 thread and from several threads at once.
    let again = Index::open(&path).unwrap();
    assert_eq!(
        pool(1)
            .install(|| again.search_hnsw(&queries, 10, &p))
            .unwrap(),
        hits
    );
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| assert_eq!(again.search_hnsw(&queries, 10, &p).unwrap(), hits));
        }
    });
    drop(again);

    // An index written before graph.bin existed (only the hnsw_rs dump): converted on load, it
    // gives the same graph and the same results.
    let old = dir.path().join("old");
    fs::create_dir(&old).unwrap();
    for e in fs::read_dir(&path).unwrap() {
        let e = e.unwrap();
        if e.file_name() != GRAPH_FILE {
            fs::copy(e.path(), old.join(e.file_name())).unwrap();
        }
    }
    let mut m: Manifest = Index::open(&path).unwrap().manifest().clone();
    m.files.remove(GRAPH_FILE);
    m.hnsw.as_mut().unwrap().native = None;
    fs::write(old.join("manifest.json"), m.to_bytes().unwrap()).unwrap();
    let converted = Index::open(&old).unwrap();
    let native = Index::open(&path).unwrap();
    let (a, b) = (converted.graph().unwrap(), native.graph().unwrap());
    assert_eq!(a.entry_point(), b.entry_point());
    for row in 0..n as u32 {
        for level in 0..=a.level(row) {
            assert_eq!(a.neighbours(row, level), b.neighbours(row, level));
        }
    }
    assert_eq!(converted.search_hnsw(&queries, 10, &p).unwrap(), hits);
    converted.verify().unwrap();
    drop(converted);

    // Its dump cut short but matching its checksum (written so): hnsw_rs panicked inside the
    // search; it is an error naming the dump now. (Verify does not convert dumps, and one
    // crafted otherwise can still make hnsw_rs end the process: it calls exit on some damage
    // and allocates what a length in the file says.)
    let dump = old.join(&m.hnsw.as_ref().unwrap().graph);
    let mut bytes = fs::read(&dump).unwrap();
    bytes.truncate(bytes.len() / 2 + 3);
    fs::write(&dump, &bytes).unwrap();
    let name = dump.file_name().unwrap().to_str().unwrap().to_string();
    let info = m.files.get_mut(&name).unwrap();
    (info.len, info.crc32) = (bytes.len() as u64, crc32fast::hash(&bytes));
    fs::write(old.join("manifest.json"), m.to_bytes().unwrap()).unwrap();
    let damaged = Index::open(&old).unwrap();
    let err = damaged.search_hnsw(&queries, 10, &p).unwrap_err();
    assert!(err.to_string().contains(&name), "{err}");
}

fn small_index(dir: &Path) -> (std::path::PathBuf, Vec<u64>) {
    let bits = 128;
    let codes = clustered_codes(&mut rng(3), 400, bits, 10, 0.1);
    let path = dir.join("s");
    IndexBuilder::new(bits, &codes)
        .hnsw(params(6))
        .build(&path)
        .unwrap();
    let queries = near_queries(&codes, words(bits), 5, 1);
    (path, queries)
}

/// Rewrites graph.bin's payload with `edit`, fixing every checksum (header and manifest), so
/// only the structural checks can catch the damage.
fn rewrite_payload(path: &Path, edit: impl FnOnce(&mut [u8])) {
    let gpath = path.join(GRAPH_FILE);
    let mut b = fs::read(&gpath).unwrap();
    let mut h = Header::decode(&b, FileKind::Graph, b.len() as u64, &gpath).unwrap();
    edit(&mut b[HEADER_LEN..]);
    h.payload_crc = crc32fast::hash(&b[HEADER_LEN..]);
    b[..HEADER_LEN].copy_from_slice(&h.encode());
    replace_listed_file(path, GRAPH_FILE, &b);
}

#[test]
fn bad_graph_bytes_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, queries) = small_index(dir.path());
    let p = SearchParams::default();
    let good = Index::open(&path)
        .unwrap()
        .search_hnsw(&queries, 5, &p)
        .unwrap();
    let payload = fs::read(path.join(GRAPH_FILE)).unwrap()[HEADER_LEN..].to_vec();
    let g = GraphView::from_payload(&payload, 400, Path::new("x")).unwrap();
    let (stride0, max_level) = (g.level0_stride(), g.max_level());
    let layer0_at = (64 + 401 * 8usize).div_ceil(64) * 64;

    type Edit = Box<dyn Fn(&mut [u8])>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "neighbour out of range",
            Box::new(move |b: &mut [u8]| {
                b[layer0_at..layer0_at + 4].copy_from_slice(&400u32.to_le_bytes())
            }),
        ),
        (
            "neighbour after padding",
            Box::new(move |b: &mut [u8]| {
                let at = layer0_at + 4 * (stride0 - 1);
                // Pad the first slot, keep a real neighbour in the last one.
                b[at..at + 4].copy_from_slice(&1u32.to_le_bytes());
                b[layer0_at..layer0_at + 4].copy_from_slice(&NO_NEIGHBOUR.to_le_bytes());
            }),
        ),
        ("node count", Box::new(|b: &mut [u8]| b[0] ^= 1)),
        (
            "entry point",
            Box::new(|b: &mut [u8]| b[16..20].copy_from_slice(&400u32.to_le_bytes())),
        ),
        (
            "max level",
            Box::new(move |b: &mut [u8]| {
                b[12..16].copy_from_slice(&(max_level as u32 + 1).to_le_bytes())
            }),
        ),
        (
            "level offsets",
            Box::new(|b: &mut [u8]| b[64 + 8 * 7] ^= 0x40),
        ),
        ("stride", Box::new(|b: &mut [u8]| b[4] ^= 1)),
        ("reserved", Box::new(|b: &mut [u8]| b[40] = 1)),
    ];
    for (what, edit) in cases {
        let d = tempfile::tempdir().unwrap();
        let copy = d.path().join("s");
        fs::create_dir(&copy).unwrap();
        for e in fs::read_dir(&path).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), copy.join(e.file_name())).unwrap();
        }
        rewrite_payload(&copy, edit);
        let index = Index::open(&copy).unwrap();
        let err = index.search_hnsw(&queries, 5, &p).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{what}: {err}");
        assert!(err.to_string().contains(GRAPH_FILE), "{what}: {err}");
        assert!(index.graph().is_err());
    }
    // A plain flipped byte is a checksum error naming the file, even with checksums skipped.
    let mut b = fs::read(path.join(GRAPH_FILE)).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x10;
    fs::write(path.join(GRAPH_FILE), &b).unwrap();
    let index = Index::open_with(&path, bsa_index::OpenOptions::verify_checksums(false)).unwrap();
    let err = index.search_hnsw(&queries, 5, &p).unwrap_err();
    assert!(matches!(err, Error::Checksum { .. }), "{err}");
    assert!(err.to_string().contains(GRAPH_FILE), "{err}");
    b[mid] ^= 0x10;
    fs::write(path.join(GRAPH_FILE), &b).unwrap();
    assert_eq!(
        Index::open(&path)
            .unwrap()
            .search_hnsw(&queries, 5, &p)
            .unwrap(),
        good
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Mutated or random payloads: the validator returns an error or a graph whose every list
    /// can be walked in bounds.
    #[test]
    fn mutated_payloads_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        random in proptest::option::of(proptest::collection::vec(any::<u64>(), 0..64)),
    ) {
        let s = shared_payload();
        let mut words: Vec<u64> = match random {
            Some(r) => r,
            None => s.clone(),
        };
        {
            let b: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
            for (at, x) in &edits {
                if !b.is_empty() {
                    let i = at.index(b.len());
                    b[i] ^= x;
                }
            }
        }
        let mut bytes: &[u8] = bytemuck::cast_slice(&words);
        if let Some(c) = cut {
            bytes = &bytes[..c.index(bytes.len() + 1)];
        }
        if let Ok(g) = GraphView::from_payload(bytes, 150, Path::new("graph.bin")) {
            for row in 0..g.len() as u32 {
                for level in 0..=g.max_level() + 1 {
                    for &nb in g.neighbours(row, level) {
                        prop_assert!((nb as usize) < g.len());
                    }
                }
            }
        }
    }
}

fn shared_payload() -> &'static Vec<u64> {
    static P: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let codes = clustered_codes(&mut rng(8), 150, 64, 5, 0.1);
        let path = dir.path().join("p");
        IndexBuilder::new(64, &codes)
            .hnsw(params(4))
            .build(&path)
            .unwrap();
        let b = fs::read(path.join(GRAPH_FILE)).unwrap();
        let mut words = vec![0u64; (b.len() - HEADER_LEN) / 8];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words).copy_from_slice(&b[HEADER_LEN..]);
        words
    })
}

/// A walk that excludes rows (a filter, or deletes) returns allowed rows only, also when asked
/// for more rows than its `ef` keeps (then it answers from every row it scored).
#[test]
fn a_filtered_walk_with_k_above_ef_returns_allowed_rows_only() {
    use bsa_index::{HnswParams, Index, IndexBuilder, Mode, RowSet, Score, SearchParams};
    let n = 400usize;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let codes: Vec<u64> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g");
    IndexBuilder::new(64, &codes)
        .hnsw(HnswParams {
            max_connections: 8,
            ef_construction: 64,
            ef_search: 16,
        })
        .build(&path)
        .unwrap();
    let index = Index::open(&path).unwrap();
    let searcher = index.searcher(&Mode::parse("hnsw").unwrap()).unwrap();
    let mut allowed = RowSet::full(n);
    for r in (0..n).step_by(3) {
        allowed.remove(r);
    }
    let p = SearchParams::default().with_ef_search(Some(4));
    let (hits, _) = searcher
        .search_allowed(&codes[..8], 40, &Score::Hamming, &p, &allowed)
        .unwrap();
    for h in &hits {
        assert!(h.rows.len() > 4, "more than ef rows: {}", h.rows.len());
        for &r in &h.rows {
            assert!(allowed.contains(r as usize), "row {r} is excluded");
        }
    }
}
