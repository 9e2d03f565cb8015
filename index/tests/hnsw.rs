//! HNSW: high recall@10 against the exact top-10 on clustered codes; reloading gives identical
//! results; parameter validation.

mod common;

use bsa_index::{Error, HnswParams, Index, IndexBuilder, SearchParams};
use common::*;

fn recall_at_10(exact: &[bsa_index::Hits], approx: &[bsa_index::Hits]) -> f64 {
    let mut hit = 0usize;
    let mut total = 0usize;
    for (e, a) in exact.iter().zip(approx) {
        // Tie-aware: any row at a distance <= the exact 10th distance is a true neighbour (with
        // ties at the 10th distance the exact row set is one arbitrary choice among equals).
        let tenth = *e.distances.last().unwrap();
        let exact_rows: std::collections::HashSet<u64> = e.rows.iter().copied().collect();
        hit += a
            .rows
            .iter()
            .zip(&a.distances)
            .filter(|&(r, &d)| exact_rows.contains(r) || d <= tenth)
            .count()
            .min(10);
        total += 10;
    }
    hit as f64 / total as f64
}

#[test]
fn hnsw_recall_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let bits = 256;
    let w = words(bits);
    let mut r = rng(21);
    let n = 5000;
    let codes = clustered_codes(&mut r, n, bits, 50, 0.08);
    let queries = clustered_codes(&mut r, 100, bits, 50, 0.08);
    // Queries come from the same distribution: re-draw them from the data's own centres by
    // perturbing stored codes.
    let queries: Vec<u64> = (0..100)
        .flat_map(|i| {
            let row = (i * 37) % n;
            let mut q = codes[row * w..(row + 1) * w].to_vec();
            q[0] ^= queries[i * w] & 0x0101_0101_0101_0101;
            q
        })
        .collect();
    let path = dir.path().join("h");
    let mut reports = Vec::new();
    IndexBuilder::new(bits, &codes)
        .hnsw(HnswParams {
            max_connections: 16,
            ef_construction: 200,
            ef_search: 100,
        })
        .progress(|d, t| reports.push((d, t)))
        .build(&path)
        .unwrap();
    assert_eq!(reports.last().copied(), Some((3 * n as u64, 3 * n as u64)));
    assert!(reports.windows(2).all(|p| p[0].0 <= p[1].0));

    let index = Index::open(&path).unwrap();
    assert!(index.has_hnsw());
    let p = SearchParams::default();
    let exact = index.search_flat(&queries, 10, &p).unwrap();
    let approx = pool(2)
        .install(|| index.search_hnsw(&queries, 10, &p))
        .unwrap();
    let rec = recall_at_10(&exact, &approx);
    eprintln!("recall@10 = {rec}");
    assert!(rec >= 0.95, "recall@10 = {rec}");
    for (qi, a) in approx.iter().enumerate() {
        assert_eq!(a.len(), 10);
        // Distances are true bit-level Hamming distances, sorted, ties by row.
        for (&row, &d) in a.rows.iter().zip(&a.distances) {
            let row = row as usize;
            assert_eq!(
                d,
                hamming(
                    &queries[qi * w..(qi + 1) * w],
                    &codes[row * w..(row + 1) * w]
                )
            );
        }
        let pairs: Vec<(u32, u64)> = a
            .distances
            .iter()
            .copied()
            .zip(a.rows.iter().copied())
            .collect();
        assert!(pairs.windows(2).all(|x| x[0] < x[1]));
    }
    // A larger ef cannot do worse here.
    let wide = index
        .search_hnsw(&queries, 10, &p.with_ef_search(Some(400)))
        .unwrap();
    assert!(recall_at_10(&exact, &wide) >= rec - 1e-9);

    // Reload in a fresh Index (and in another thread count): identical results.
    drop(index);
    let again = Index::open(&path).unwrap();
    again.load_hnsw().unwrap();
    let approx2 = pool(1)
        .install(|| again.search_hnsw(&queries, 10, &p))
        .unwrap();
    assert_eq!(approx, approx2);
    // Concurrent HNSW searches agree too.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert_eq!(again.search_hnsw(&queries, 10, &p).unwrap(), approx2));
        }
    });
}

#[test]
fn hnsw_parameter_validation_and_missing_graph() {
    let dir = tempfile::tempdir().unwrap();
    let codes = vec![1u64, 2, 3, 4];
    for m in [0usize, 1, 256, 257, 10_000] {
        let e = IndexBuilder::new(64, &codes)
            .hnsw(HnswParams {
                max_connections: m,
                ef_construction: 10,
                ef_search: 10,
            })
            .build(dir.path().join(format!("m{m}")))
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        assert!(!dir.path().join(format!("m{m}")).exists());
    }
    let path = dir.path().join("ok255");
    // One thread: hnsw_rs's parallel inserts can race and, rarely, leave one of these four
    // nodes without an edge to it, which this exact check would then miss (seen once under load).
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| {
            IndexBuilder::new(64, &codes)
                .hnsw(HnswParams {
                    max_connections: 255,
                    ef_construction: 10,
                    ef_search: 10,
                })
                .build(&path)
        })
        .unwrap();
    let index = Index::open(&path).unwrap();
    let h = index
        .search_hnsw(&[3], 10, &SearchParams::default())
        .unwrap();
    assert_eq!(h[0].rows, vec![2, 0, 1, 3]);
    assert_eq!(h[0].distances, vec![0, 1, 1, 3]);

    let flat_only = dir.path().join("flat");
    IndexBuilder::new(64, &codes).build(&flat_only).unwrap();
    let index = Index::open(&flat_only).unwrap();
    let e = index
        .search_hnsw(&[3], 1, &SearchParams::default())
        .unwrap_err();
    assert!(e.to_string().contains("no HNSW graph"), "{e}");
}

#[test]
fn every_row_is_reachable_when_distances_tie_by_the_thousand() {
    // Sparse random codes: nearly all distances between them are equal, hnsw_rs's neighbour
    // selection keeps a few links per row, and before the graph was linked up two thirds of
    // the rows had no node linking to them: no search returned them, whatever its ef. With a
    // small M every list is full, and the links must spread (a first version hung them all on
    // the entry point, widening every node's slots to thousands).
    for (n, bits, density, m) in [(2000, 1000, 5, 32), (6000, 256, 4, 4)] {
        let dir = tempfile::tempdir().unwrap();
        let w = words(bits);
        let codes = random_codes(&mut rng(5), n, bits, density);
        let path = dir.path().join("h");
        IndexBuilder::new(bits, &codes)
            .hnsw(HnswParams {
                max_connections: m,
                ef_construction: 64,
                ef_search: 64,
            })
            .build(&path)
            .unwrap();
        let index = Index::open(&path).unwrap();
        let stride = index.graph().unwrap().level0_stride();
        assert!(stride <= 2 * m + 2, "{stride} slots per node at M = {m}");
        let queries: Vec<u64> = [0, 777, n - 1]
            .iter()
            .flat_map(|&r| codes[r * w..(r + 1) * w].to_vec())
            .collect();
        let p = SearchParams::default().with_ef_search(Some(n));
        let exact = index.search_flat(&queries, n, &p).unwrap();
        for (a, e) in index
            .search_hnsw(&queries, n, &p)
            .unwrap()
            .iter()
            .zip(&exact)
        {
            assert_eq!(a.len(), n);
            assert_eq!(
                a, e,
                "a walk with ef = n visits every row: the exact answer"
            );
        }
    }
}

/// The walk's `ef` can be set on the searcher (`GraphParams`, through `Mode`) or for one search
/// (`SearchParams`, which overrides it): both are honoured, so neither is silently ignored, and
/// an `ef` of 0 is refused either way.
#[test]
fn ef_is_honoured_from_the_mode_and_from_the_search() {
    use bsa_index::search::GraphParams;
    use bsa_index::{Mode, Score};
    let dir = tempfile::tempdir().unwrap();
    let bits = 128;
    let mut r = rng(5);
    let codes = clustered_codes(&mut r, 3000, bits, 30, 0.1);
    let path = dir.path().join("idx");
    IndexBuilder::new(bits, &codes)
        .hnsw(HnswParams::default())
        .build(&path)
        .unwrap();
    let index = Index::open(&path).unwrap();
    let q = &codes[..words(bits)];
    let visited = |mode_ef: Option<usize>, search_ef: Option<usize>| {
        let mode = Mode::Hnsw(GraphParams::default().with_ef_search(mode_ef));
        let searcher = index.searcher(&mode).unwrap();
        let params = SearchParams::default().with_ef_search(search_ef);
        let (_, stats) = searcher.search(q, 1, &Score::Hamming, &params).unwrap();
        stats.counter("nodes_visited").unwrap()
    };
    let (small, large) = (visited(Some(1), None), visited(Some(400), None));
    assert!(small < large, "{small} vs {large}");
    assert_eq!(visited(Some(1), Some(400)), large);
    assert_eq!(visited(Some(400), Some(1)), small);
    assert_eq!(visited(None, Some(400)), large);
    for (mode_ef, search_ef) in [(Some(0), None), (None, Some(0))] {
        let mode = Mode::Hnsw(GraphParams::default().with_ef_search(mode_ef));
        let params = SearchParams::default().with_ef_search(search_ef);
        let e = index
            .searcher(&mode)
            .and_then(|s| s.search(q, 1, &Score::Hamming, &params))
            .unwrap_err();
        assert!(
            e.to_string().contains("ef_search must be at least 1"),
            "{e}"
        );
    }
}
