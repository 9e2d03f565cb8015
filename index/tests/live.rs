//! The live index against fresh builds: after any sequence of build, add, delete, upsert and
//! compact, every search (each mode, score, filter and range, rescoring too) returns exactly
//! what an index freshly built from the surviving rows returns: ids, distances, scores, ties.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use bsa_index::live::{
    BridgeReport, IdFilter, LiveManifest, MergePolicy, NewRows, SearchOptions, Snapshot, Writer,
};
use bsa_index::{
    Hits, HnswParams, Index, IndexBuilder, LockWait, Mode, OpenOptions, Score, SearchParams,
};
use common::*;
use proptest::prelude::*;
use rand::Rng;
use rand::seq::SliceRandom;
use rand_xoshiro::Xoshiro256PlusPlus;

const DIM: usize = 6;

/// What one live row holds.
#[derive(Clone, Debug)]
struct Row {
    code: Vec<u64>,
    vector: Vec<f32>,
    norm: f32,
}

/// The shape of an index: which parts every segment has.
#[derive(Clone, Copy, Debug)]
struct Shape {
    bits: usize,
    /// Vectors, norms and a graph on the vectors (else a Hamming graph on the codes).
    floats: bool,
}

fn graph() -> HnswParams {
    HnswParams {
        max_connections: 8,
        ef_construction: 64,
        ef_search: 16,
    }
}

fn new_rows(rng: &mut Xoshiro256PlusPlus, shape: Shape, ids: &[u64]) -> Vec<(u64, Row)> {
    let w = words(shape.bits);
    // Sparse codes from a few patterns: many equal distances and scores, so ties matter.
    let codes = random_codes(rng, ids.len(), shape.bits, 2);
    ids.iter()
        .enumerate()
        .map(|(i, &id)| {
            let vector: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let code = if rng.random_bool(0.3) {
                vec![0; w]
            } else {
                codes[i * w..(i + 1) * w].to_vec()
            };
            let norm = rng.random_range(0.5f32..2.0);
            (id, Row { code, vector, norm })
        })
        .collect()
}

struct Columns {
    codes: Vec<u64>,
    ids: Vec<u64>,
    vectors: Vec<f32>,
    norms: Vec<f32>,
}

impl Columns {
    /// The rows to add, with everything `shape` stores.
    fn new_rows(&self, shape: Shape) -> NewRows<'_> {
        let r = NewRows::codes(&self.codes).ids(&self.ids);
        if !shape.floats {
            return r;
        }
        r.vectors(&self.vectors)
            .norms(&self.norms)
            .graph_vectors(&self.vectors)
    }
}

fn columns(rows: &[(u64, Row)]) -> Columns {
    Columns {
        codes: rows.iter().flat_map(|(_, r)| r.code.clone()).collect(),
        ids: rows.iter().map(|(id, _)| *id).collect(),
        vectors: rows.iter().flat_map(|(_, r)| r.vector.clone()).collect(),
        norms: rows.iter().map(|(_, r)| r.norm).collect(),
    }
}

fn build(shape: Shape, rows: &[(u64, Row)], out: &Path) {
    let c = columns(rows);
    let mut b = IndexBuilder::new(shape.bits, &c.codes)
        .ids(&c.ids)
        .inverted(true)
        .hnsw(graph());
    if shape.floats {
        b = b
            .vectors(&c.vectors, DIM)
            .norms(&c.norms)
            .graph_on(&c.vectors, DIM);
    }
    b.build(out).unwrap();
}

/// Adds `rows`; with `merge`, under a merge policy (small tiers, so that merges happen often).
fn add(w: &mut Writer, shape: Shape, rows: &[(u64, Row)], upsert: bool, merge: Option<usize>) {
    let c = columns(rows);
    let r = c.new_rows(shape);
    match merge {
        None => {
            w.add(&r, upsert).unwrap();
        }
        Some(factor) => {
            let stored = |_: &[u64], v: Option<&[f32]>| Ok(v.expect("stored vectors").to_vec());
            let f: Option<&bsa_index::live::GraphVectorsFn<'_>> =
                if shape.floats { Some(&stored) } else { None };
            let policy = MergePolicy::tiered(factor).with_min_rows(8);
            let before = w.manifest().segments.len();
            // With vectors, the merged segments are bridged in the same commit.
            let atoms = atoms_for(w.manifest().bits as usize);
            let tables = |v: &[f32], n: usize| Ok((tables_of(&atoms, v), vec![0.0; n]));
            let report = match f {
                Some(f) => w.add_bridging(&r, upsert, policy, f, &tables).unwrap(),
                None => w.add_merging(&r, upsert, policy, f).unwrap(),
            };
            let after = w.manifest().segments.len();
            // Merges leave fewer segments than one per add.
            assert!(
                report.merged == 0 || after <= before,
                "{} merged, {before} -> {after} segments",
                report.merged
            );
        }
    }
}

/// Bridges the segments from the largest one's graph (an index with a graph on vectors),
/// ranking its nodes by tables made from the rows' stored vectors: any tables do for exact
/// answers, since a walk with an `ef` above the row count expands every node.
fn bridge(w: &mut Writer) -> BridgeReport {
    let atoms = atoms_for(w.manifest().bits as usize);
    bridge_by(w, &atoms)
}

/// Fixed atoms (one `DIM` row per bit) for [`tables_of`]: what the bridges of the property
/// test rank nodes by.
fn atoms_for(bits: usize) -> Vec<f32> {
    (0..bits * DIM)
        .map(|x| ((x * 7) % 5) as f32 - 2.0)
        .collect()
}

/// Bridges with the tables `atoms · v` (`atoms` one `DIM` row per bit) of each row's vector `v`.
fn bridge_by(w: &mut Writer, atoms: &[f32]) -> BridgeReport {
    let stored = |_: &[u64], v: Option<&[f32]>| Ok(v.expect("stored vectors").to_vec());
    let tables = |v: &[f32], n: usize| Ok((tables_of(atoms, v), vec![0.0; n]));
    w.bridge(&stored, &tables).unwrap()
}

/// For each `DIM`-vector of `v`, its table `atoms · v`.
fn tables_of(atoms: &[f32], v: &[f32]) -> Vec<f32> {
    v.chunks_exact(DIM)
        .flat_map(|q| {
            atoms
                .chunks_exact(DIM)
                .map(move |a| a.iter().zip(q).map(|(x, y)| x * y).sum::<f32>())
        })
        .collect()
}

/// Rows whose vectors are their codes decoded by `atoms` (one `DIM` row per bit): the table
/// score with a query's tables `atoms · q` ranks them by cosine with `q`, as the graph on their
/// vectors does, so that a walk with a small `ef` finds what it should.
fn decoded_rows(
    rng: &mut Xoshiro256PlusPlus,
    atoms: &[f32],
    bits: usize,
    ids: &[u64],
) -> Vec<(u64, Row)> {
    let w = words(bits);
    let codes = random_codes(rng, ids.len(), bits, 2);
    ids.iter()
        .enumerate()
        .map(|(i, &id)| {
            let mut code = codes[i * w..(i + 1) * w].to_vec();
            code[0] |= 1 << (id % 64);
            let mut vector = vec![0.0f32; DIM];
            for j in (0..bits).filter(|&j| code[j / 64] >> (j % 64) & 1 == 1) {
                for (x, a) in vector.iter_mut().zip(&atoms[j * DIM..(j + 1) * DIM]) {
                    *x += a;
                }
            }
            let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-3);
            (id, Row { code, vector, norm })
        })
        .collect()
}

/// Scores to check: Hamming, the binary similarities, and tables (normalised where norms exist).
fn scores(rng: &mut Xoshiro256PlusPlus, shape: Shape, nq: usize) -> (Vec<f32>, Vec<f32>) {
    // Coarse table values (multiples of 1/4): many equal sums.
    let t = (0..nq * shape.bits)
        .map(|_| rng.random_range(-4i32..5) as f32 / 4.0)
        .collect();
    let o = (0..nq).map(|_| rng.random_range(-2i32..3) as f32).collect();
    (t, o)
}

/// The reference: an index freshly built from `rows`, searched by the flat scan (the graph
/// with `ef` above the row count visits every row, so it must agree exactly too).
#[allow(clippy::too_many_arguments)]
fn reference(
    shape: Shape,
    rows: &[(u64, Row)],
    dir: &Path,
    queries: &[u64],
    k: usize,
    score: &Score<'_>,
    max_distance: Option<u32>,
    nq: usize,
) -> Vec<Hits> {
    if rows.is_empty() {
        return vec![Hits::none(score.has_scores()); nq];
    }
    let _ = std::fs::remove_dir_all(dir);
    build(shape, rows, dir);
    let index = Index::open(dir).unwrap();
    let params = SearchParams::default().with_max_distance(max_distance);
    let flat = Mode::parse("flat").unwrap();

    index
        .searcher(&flat)
        .unwrap()
        .search(queries, k, score, &params)
        .unwrap()
        .0
}

fn all_of(
    shape: Shape,
    rows: &[(u64, Row)],
    dir: &Path,
    queries: &[u64],
    score: &Score<'_>,
    nq: usize,
) -> Vec<Hits> {
    reference(shape, rows, dir, queries, usize::MAX, score, None, nq)
}

/// `live` is, per query, a subsequence of the full ranking `all` with the same distances: only
/// allowed live rows, correctly scored, in order.
fn subsequence(live: &[Hits], all: &[Hits], what: &str) {
    for (q, (a, b)) in live.iter().zip(all).enumerate() {
        let mut j = 0;
        for (i, id) in a.ids.iter().enumerate() {
            while j < b.ids.len() && b.ids[j] != *id {
                j += 1;
            }
            assert!(
                j < b.ids.len(),
                "{what}: query {q}: id {id} out of order or not allowed"
            );
            assert_eq!(a.distances[i], b.distances[j], "{what}: query {q}, id {id}");
        }
    }
}

fn same(live: &[Hits], want: &[Hits], what: &str) {
    assert_eq!(live.len(), want.len(), "{what}");
    for (q, (a, b)) in live.iter().zip(want).enumerate() {
        assert_eq!(a.ids, b.ids, "{what}: ids of query {q}");
        assert_eq!(a.distances, b.distances, "{what}: distances of query {q}");
        assert_eq!(a.scores, b.scores, "{what}: scores of query {q}");
    }
}

/// Every mode, score, filter and range of `snap` against fresh builds of the surviving rows.
fn check(
    rng: &mut Xoshiro256PlusPlus,
    shape: Shape,
    snap: &Snapshot,
    truth: &BTreeMap<u64, Row>,
    scratch: &Path,
) {
    let rows: Vec<(u64, Row)> = truth.iter().map(|(&i, r)| (i, r.clone())).collect();
    assert_eq!(snap.len(), rows.len());
    let nq = 3;
    let w = words(shape.bits);
    let mut queries = random_codes(rng, nq, shape.bits, 1);
    // One query equal to a stored code: distance 0 and its ties.
    if let Some((_, r)) = rows.first() {
        queries[..w].copy_from_slice(&r.code);
    }
    let (tables, offsets) = scores(rng, shape, nq);
    let mut score_list = vec![Score::Hamming, Score::Cosine, Score::Jaccard];
    score_list.push(Score::Table {
        tables: &tables,
        offsets: &offsets,
        normalise: shape.floats,
    });
    // Filters: none, a few ids (an exact scan of them), most ids, and a deny list; unknown
    // ids included.
    let mut ids: Vec<u64> = truth.keys().copied().collect();
    ids.shuffle(rng);
    let few: Vec<u64> = ids.iter().take(2).copied().chain([999_999]).collect();
    let most: Vec<u64> = ids.iter().take(ids.len() * 4 / 5).copied().collect();
    let deny: Vec<u64> = ids
        .iter()
        .take(ids.len() / 3)
        .copied()
        .chain([888_888])
        .collect();
    let filters: Vec<Option<IdFilter<'_>>> = vec![
        None,
        Some(IdFilter::Allow(&few)),
        Some(IdFilter::Allow(&most)),
        Some(IdFilter::Deny(&deny)),
    ];
    for (fi, filter) in filters.iter().enumerate() {
        let kept: Vec<(u64, Row)> = rows
            .iter()
            .filter(|(id, _)| match filter {
                None => true,
                Some(IdFilter::Allow(a)) => a.contains(id),
                Some(IdFilter::Deny(d)) => !d.contains(id),
                Some(other) => unreachable!("{other:?}"),
            })
            .cloned()
            .collect();
        for (si, score) in score_list.iter().enumerate() {
            let ref_dir = scratch.join(format!("ref-{fi}-{si}"));
            for k in [1, 5, 1000] {
                let want = reference(shape, &kept, &ref_dir, &queries, k, score, None, nq);
                let mut modes = vec!["flat", "inverted"];
                // The graph answers the score it was built for; ef above the row count makes
                // its walk visit every reachable row.
                let graph_score = if shape.floats {
                    matches!(score, Score::Table { .. })
                } else {
                    matches!(score, Score::Hamming)
                };
                if graph_score {
                    // Smaller segments scanned exactly (the default at this ef), and walked.
                    modes.extend(["hnsw", "hnsw-walk"]);
                }
                for m in modes {
                    let walk_all = m == "hnsw-walk";
                    let m = if walk_all { "hnsw" } else { m };
                    let mode = Mode::parse(m).unwrap().with_ef_search(Some(100_000));
                    let opts = SearchOptions::default()
                        .with_filter(*filter)
                        .with_graph_scan_rows_per_ef(walk_all.then_some(0));
                    let (got, _) = snap.search(&queries, k, score, &mode, &opts).unwrap();
                    let what =
                        format!("mode {m}, walk all {walk_all}, score {si}, filter {fi}, k {k}");
                    if m == "hnsw" && !shape.floats {
                        // hnsw_rs's graphs on codes with many duplicates leave some rows
                        // unreachable even at a huge ef (the native graph on vectors does
                        // not): the walk's results must still be live, allowed, correctly
                        // scored and ordered rows, and miss only what the graph cannot reach.
                        subsequence(
                            &got,
                            &all_of(shape, &kept, &ref_dir, &queries, score, nq),
                            &what,
                        );
                    } else {
                        same(&got, &want, &what);
                    }
                }
            }
            // Range search: every row in range, not just the top k.
            let all = reference(
                shape,
                &kept,
                &ref_dir,
                &queries,
                usize::MAX,
                score,
                None,
                nq,
            );
            let opts = SearchOptions::default().with_filter(*filter);
            let mode = Mode::parse("flat").unwrap();
            if matches!(score, Score::Hamming) {
                let d = rng.random_range(0..shape.bits as u32 / 3);
                let want = reference(
                    shape,
                    &kept,
                    &ref_dir,
                    &queries,
                    usize::MAX,
                    score,
                    Some(d),
                    nq,
                );
                let opts = opts.with_params(SearchParams::default().with_max_distance(Some(d)));
                let (got, _) = snap
                    .search(&queries, usize::MAX, score, &mode, &opts)
                    .unwrap();
                same(&got, &want, &format!("max distance {d}, filter {fi}"));
            } else {
                let min = all[0]
                    .scores
                    .as_ref()
                    .and_then(|s| s.get(s.len() / 2))
                    .copied();
                let want: Vec<Hits> = all
                    .iter()
                    .map(|h| {
                        let mut h = h.clone();
                        // No hits (every row filtered out): nothing to keep.
                        let s = h.scores.clone().unwrap_or_default();
                        let mut i = 0;
                        h.retain_rows(|_| {
                            i += 1;
                            min.is_none_or(|m| s[i - 1] >= m)
                        });
                        h
                    })
                    .collect();
                let opts = opts.with_min_score(min);
                let (got, _) = snap
                    .search(&queries, usize::MAX, score, &mode, &opts)
                    .unwrap();
                same(
                    &got,
                    &want,
                    &format!("min score {min:?}, score {si}, filter {fi}"),
                );
            }
        }
    }
    // Rescoring the top candidates against the stored vectors.
    if shape.floats && !rows.is_empty() {
        let qf: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let ref_dir = scratch.join("ref-rescore");
        let want = reference(
            shape,
            &rows,
            &ref_dir,
            &queries[..w],
            8,
            &Score::Hamming,
            None,
            1,
        );
        let index = Index::open(&ref_dir).unwrap();
        let want = index.rescore(&qf, &want[0], 4).unwrap();
        let flat = Mode::parse("flat").unwrap();
        let (got, _) = snap
            .search(
                &queries[..w],
                8,
                &Score::Hamming,
                &flat,
                &SearchOptions::default(),
            )
            .unwrap();
        let got = snap.rescore(&qf, &got[0], 4).unwrap();
        same(&[got], &[want], "rescored");
    }
}

fn run(seed: u64, shape: Shape, steps: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let mut rng = rng(seed);
    let mut truth: BTreeMap<u64, Row> = BTreeMap::new();
    // The first build: ids given out of order, with gaps.
    let mut ids: Vec<u64> = (0..rng.random_range(20..60u64))
        .map(|i| i * 3 + 1)
        .collect();
    ids.shuffle(&mut rng);
    let first = new_rows(&mut rng, shape, &ids);
    build(shape, &first, &path);
    truth.extend(first);
    let mut next_id = 1000;
    let mut held: Option<Snapshot> = None;
    for step in 0..steps {
        let mut w = Writer::open(&path).unwrap();
        match rng.random_range(0..6) {
            0 | 1 => {
                let n = rng.random_range(1..30);
                let ids: Vec<u64> = (next_id..next_id + n).collect();
                next_id += n + rng.random_range(0..5);
                let rows = new_rows(&mut rng, shape, &ids);
                let merge = rng.random_bool(0.5).then(|| rng.random_range(2..4));
                add(&mut w, shape, &rows, false, merge);
                truth.extend(rows);
            }
            2 => {
                // Upsert: some live ids, some new.
                let mut ids: Vec<u64> = truth.keys().copied().collect();
                ids.shuffle(&mut rng);
                ids.truncate(rng.random_range(1..8));
                ids.push(next_id);
                next_id += 1;
                let rows = new_rows(&mut rng, shape, &ids);
                let merge = rng.random_bool(0.5).then(|| rng.random_range(2..4));
                add(&mut w, shape, &rows, true, merge);
                truth.extend(rows);
            }
            3 => {
                let mut ids: Vec<u64> = truth.keys().copied().collect();
                ids.shuffle(&mut rng);
                ids.truncate(rng.random_range(0..=ids.len().min(25)));
                ids.push(777_777); // unknown: reported, not fatal
                let report = w.delete(&ids).unwrap();
                assert_eq!(report.unknown, vec![777_777]);
                for id in &ids {
                    truth.remove(id);
                }
            }
            5 => {
                // Rows of the other segments reached through the largest segment's graph.
                if shape.floats {
                    bridge(&mut w);
                }
            }
            _ => {
                // A graph on vectors is rebuilt on the merged rows' vectors: here the stored ones.
                let stored = |_: &[u64], v: Option<&[f32]>| Ok(v.expect("stored vectors").to_vec());
                let f: Option<&bsa_index::live::GraphVectorsFn<'_>> =
                    if shape.floats { Some(&stored) } else { None };
                let atoms = atoms_for(shape.bits);
                let tables = |v: &[f32], n: usize| Ok((tables_of(&atoms, v), vec![0.0; n]));
                let max = rng.random_range(1..3);
                match f {
                    Some(f) if rng.random_bool(0.5) => w.compact_bridging(max, f, &tables),
                    _ => w.compact(max, f),
                }
                .unwrap();
            }
        }
        drop(w);
        // Followed from the last generation (its warm segments shared) or opened afresh.
        let snap = match held.take() {
            Some(last) if rng.random_bool(0.7) => follow(last, &path),
            _ => Snapshot::open(&path).unwrap(),
        };
        snap.verify().unwrap();
        if step + 1 == steps || rng.random_bool(0.4) {
            check(&mut rng, shape, &snap, &truth, &scratch);
        }
        held = Some(snap);
    }
}

/// `last`'s generation followed to the current one by `Snapshot::reopen`: the segments both
/// list are `last`'s own, the new ones opened.
fn follow(last: Snapshot, path: &Path) -> Snapshot {
    let Some(next) = last.reopen(OpenOptions::default()).unwrap() else {
        assert!(last.is_current().unwrap());
        return last;
    };
    assert!(next.is_current().unwrap());
    assert_eq!(
        next.manifest_bytes(),
        Snapshot::open(path).unwrap().manifest_bytes()
    );
    for seg in next.segments() {
        let before = last.segments().iter().find(|s| s.name() == seg.name());
        if let Some(before) = before {
            assert!(
                std::ptr::eq(before.index(), seg.index()),
                "segment {} was opened again",
                seg.name()
            );
        }
    }
    next
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    #[test]
    fn codes_only_equals_a_fresh_build(seed in any::<u64>(), steps in 1usize..7, wide in any::<bool>()) {
        run(seed, Shape { bits: if wide { 130 } else { 40 }, floats: false }, steps);
    }

    #[test]
    fn vectors_norms_and_graph_on_vectors_equal_a_fresh_build(seed in any::<u64>(), steps in 1usize..7) {
        run(seed, Shape { bits: 70, floats: true }, steps);
    }
}

/// A snapshot opened before changes keeps answering from its generation (its files outlive
/// their removal), and snapshots opened while a writer commits see whole generations only:
/// every answer a concurrent reader gets equals the answer of the generation it opened.
#[test]
fn readers_see_whole_generations_while_the_index_changes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let shape = Shape {
        bits: 70,
        floats: false,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let mut r = rng(99);
    let ids: Vec<u64> = (0..200).collect();
    build(shape, &new_rows(&mut r, shape, &ids), &path);
    let queries = random_codes(&mut r, 4, shape.bits, 1);
    let flat = Mode::parse("flat").unwrap();
    let answer = |s: &Snapshot| -> Vec<Hits> {
        s.search(
            &queries,
            50,
            &Score::Hamming,
            &flat,
            &SearchOptions::default(),
        )
        .unwrap()
        .0
    };
    let first = Snapshot::open(&path).unwrap();
    let first_answer = answer(&first);

    let stop = Arc::new(AtomicBool::new(false));
    type Seen = Vec<(u64, Vec<Hits>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let reader = {
        let (stop, seen, path, queries) =
            (stop.clone(), seen.clone(), path.clone(), queries.clone());
        std::thread::spawn(move || {
            let flat = Mode::parse("flat").unwrap();
            while !stop.load(Ordering::Relaxed) {
                let s = Snapshot::open(&path).unwrap();
                let (h, _) = s
                    .search(
                        &queries,
                        50,
                        &Score::Hamming,
                        &flat,
                        &SearchOptions::default(),
                    )
                    .unwrap();
                seen.lock().unwrap().push((s.generation(), h));
            }
        })
    };
    let mut expected: BTreeMap<u64, Vec<Hits>> = BTreeMap::new();
    expected.insert(0, first_answer.clone());
    let mut next = 1000;
    for step in 0..12 {
        let mut w = Writer::open(&path).unwrap();
        match step % 4 {
            0 | 1 => {
                let ids: Vec<u64> = (next..next + 40).collect();
                next += 40;
                add(&mut w, shape, &new_rows(&mut r, shape, &ids), false, None);
            }
            2 => {
                let ids: Vec<u64> = (0..300).filter(|i| i % 7 == step as u64 % 7).collect();
                w.delete(&ids).unwrap();
            }
            _ => {
                let stored = |_: &[u64], v: Option<&[f32]>| Ok(v.expect("stored").to_vec());
                w.compact(1, Some(&stored)).unwrap();
            }
        }
        let g = w.generation();
        drop(w);
        expected.insert(g, answer(&Snapshot::open(&path).unwrap()));
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty());
    for (g, h) in seen.iter() {
        same(h, &expected[g], &format!("reader at generation {g}"));
    }
    // The first snapshot still answers from generation 0, though compaction removed its files.
    same(&answer(&first), &first_answer, "the first snapshot");
    let now = Snapshot::open(&path).unwrap();
    assert_eq!(now.generation(), *expected.keys().last().unwrap());
    assert!(now.len() > first.len());
}

/// The shape of the small indexes below: codes only, 40 bits (with a Hamming graph).
const CODES_40: Shape = Shape {
    bits: 40,
    floats: false,
};

/// An index of `rows` rows of [`CODES_40`], ids `0..rows`, built in a new temporary directory
/// (at `idx` in it), and the generator that made them.
fn codes_index(
    seed: u64,
    rows: u64,
) -> (tempfile::TempDir, std::path::PathBuf, Xoshiro256PlusPlus) {
    let mut rng = rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let ids: Vec<u64> = (0..rows).collect();
    build(CODES_40, &new_rows(&mut rng, CODES_40, &ids), &path);
    (dir, path, rng)
}

/// [`codes_index`] grown by a second segment holding ids `more` (rows of [`CODES_40`]).
fn grown_codes_index(
    seed: u64,
    rows: u64,
    more: &[u64],
) -> (tempfile::TempDir, std::path::PathBuf, Xoshiro256PlusPlus) {
    let (dir, path, mut rng) = codes_index(seed, rows);
    let c = columns(&new_rows(&mut rng, CODES_40, more));
    let mut w = Writer::open(&path).unwrap();
    w.add(&NewRows::codes(&c.codes).ids(&c.ids), false).unwrap();
    (dir, path, rng)
}

/// A snapshot that has not walked its graph yet still can after a commit removed the files it
/// opened (the graph is checked at its first search, but its file is held from the open on):
/// first when the single-segment index becomes segmented, then when a compaction removes the
/// segments.
#[test]
fn an_old_snapshot_walks_its_graph_after_its_files_are_removed() {
    let shape = CODES_40;
    let (_dir, path, mut r) = codes_index(7, 150);
    let queries = random_codes(&mut r, 5, shape.bits, 1);
    let hnsw = Mode::parse("hnsw").unwrap();
    let answer = |s: &Snapshot| {
        s.search(
            &queries,
            20,
            &Score::Hamming,
            &hnsw,
            &SearchOptions::default(),
        )
        .map(|(h, _)| h)
    };
    let single = Snapshot::open(&path).unwrap();
    let single_answer = answer(&Snapshot::open(&path).unwrap()).unwrap();

    let mut w = Writer::open(&path).unwrap();
    let more: Vec<u64> = (500..530).collect();
    add(&mut w, shape, &new_rows(&mut r, shape, &more), false, None);
    let segmented = Snapshot::open(&path).unwrap();
    assert_eq!(segmented.segments().len(), 2);
    let segmented_answer = answer(&Snapshot::open(&path).unwrap()).unwrap();
    let stored = |_: &[u64], v: Option<&[f32]>| Ok(v.expect("stored").to_vec());
    w.compact(1, Some(&stored)).unwrap();
    drop(w);
    let gone = |seg: &str| !path.join(seg).join("graph.bin").exists();
    assert!(
        !path.join("graph.bin").exists() && gone("seg-000000") && gone("seg-000001"),
        "the commits removed the files the snapshots opened"
    );

    same(
        &answer(&single).unwrap(),
        &single_answer,
        "the single-segment snapshot",
    );
    same(
        &answer(&segmented).unwrap(),
        &segmented_answer,
        "the two-segment snapshot",
    );
}

/// A snapshot followed to the next generation shares no segment with a directory another
/// index was put in place of (`bsa build --force`), though its segments have the same names:
/// the followed snapshot answers as the new index does, not from the old one's files.
#[test]
fn a_followed_snapshot_opens_an_index_put_in_its_place() {
    let shape = CODES_40;
    let (_a, path, _) = grown_codes_index(1, 80, &[500, 501]);
    let (_b, other, _) = grown_codes_index(2, 80, &[500, 501]);
    let queries = random_codes(&mut rng(3), 4, shape.bits, 1);
    let flat = Mode::parse("flat").unwrap();
    let answer = |s: &Snapshot| {
        let o = SearchOptions::default();
        s.search(&queries, 10, &Score::Hamming, &flat, &o)
            .unwrap()
            .0
    };
    let old = Snapshot::open(&path).unwrap();
    let before = answer(&old);
    std::fs::rename(&path, path.with_extension("old")).unwrap();
    std::fs::rename(&other, &path).unwrap();

    let next = old
        .reopen(OpenOptions::default())
        .unwrap()
        .expect("another index");
    let names = |s: &Snapshot| {
        s.segments()
            .iter()
            .map(|g| g.name().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&next), names(&old), "the same segment names");
    for (a, b) in old.segments().iter().zip(next.segments()) {
        assert!(
            !std::ptr::eq(a.index(), b.index()),
            "segment {} shared",
            a.name()
        );
    }
    same(
        &answer(&next),
        &answer(&Snapshot::open(&path).unwrap()),
        "the new index",
    );
    same(
        &answer(&old),
        &before,
        "the old snapshot, still on its own files",
    );
    assert_ne!(
        answer(&next)[0].ids,
        before[0].ids,
        "the indexes answer differently"
    );
}

/// A writer's snapshot after its commit shares the segments the commit kept, and is the
/// generation committed.
#[test]
fn a_writer_shares_kept_segments_with_its_next_snapshot() {
    let shape = CODES_40;
    let (_dir, path, mut r) = codes_index(5, 60);
    let mut w = Writer::open(&path).unwrap();
    add(
        &mut w,
        shape,
        &new_rows(&mut r, shape, &[500, 501]),
        false,
        None,
    );
    let first = w.snapshot().unwrap().segments()[0].index() as *const Index;
    w.delete(&[3]).unwrap();
    add(&mut w, shape, &new_rows(&mut r, shape, &[600]), false, None);
    let snap = w.snapshot().unwrap();
    assert_eq!(snap.segments().len(), 3);
    assert!(
        std::ptr::eq(snap.segments()[0].index(), first),
        "segment 0 opened again"
    );
    assert_eq!(
        snap.manifest_bytes(),
        Snapshot::open(&path).unwrap().manifest_bytes()
    );
    assert_eq!(snap.find_id(3), None);
    assert!(snap.find_id(600).is_some());
}

/// A change that fails after writing files (here an add whose merge needs the graph's
/// vectors, not given) leaves nothing behind: the same writer then makes the change, and the
/// index answers as a fresh build of its rows.
#[test]
fn a_failed_change_leaves_the_writer_usable() {
    let shape = Shape {
        bits: 70,
        floats: true,
    };
    let mut rng = rng(5);
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let path = dir.path().join("idx");
    let first = new_rows(&mut rng, shape, &(0..10).collect::<Vec<u64>>());
    build(shape, &first, &path);
    let mut truth: BTreeMap<u64, Row> = first.into_iter().collect();
    let rows = new_rows(&mut rng, shape, &(100..110).collect::<Vec<u64>>());
    let c = columns(&rows);
    let mut w = Writer::open(&path).unwrap();
    let policy = MergePolicy::tiered(2).with_min_rows(8);
    let err = w
        .add_merging(&c.new_rows(shape), false, policy, None)
        .unwrap_err();
    assert_eq!(w.generation(), 0, "{err}");
    let listed = |p: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert!(
        !listed(&path).iter().any(|n| n.starts_with("seg-")),
        "the failed add left {:?}",
        listed(&path)
    );
    add(&mut w, shape, &rows, false, Some(2));
    truth.extend(rows);
    drop(w);
    check(
        &mut rng,
        shape,
        &Snapshot::open(&path).unwrap(),
        &truth,
        &scratch,
    );
}

/// Ids run out at `u64::MAX`: rows holding it open and search, and an add without ids is
/// refused with a message instead of an overflow.
#[test]
fn no_ids_are_made_after_the_largest_possible() {
    let shape = Shape {
        bits: 40,
        floats: false,
    };
    let mut rng = rng(6);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    build(shape, &new_rows(&mut rng, shape, &[1, u64::MAX]), &path);
    let snap = Snapshot::open(&path).unwrap();
    assert_eq!(snap.len(), 2);
    let mut w = Writer::open(&path).unwrap();
    let c = columns(&new_rows(&mut rng, shape, &[0, 0, 0]));
    let err = w
        .add(&NewRows::codes(&c.codes), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not 3 ids left"), "{err}");
    // The saturated counter cannot tell u64::MAX - 1 from u64::MAX: the message does not guess.
    assert!(
        err.contains(&format!("({} or more)", u64::MAX - 1)),
        "{err}"
    );
    w.add(&NewRows::codes(&c.codes).ids(&[7, 8, 9]), false)
        .unwrap();
    assert_eq!(Snapshot::open(&path).unwrap().len(), 5);
}

/// A delete counts each live row once, however often its id is given (the report says how
/// many rows left the index).
#[test]
fn a_delete_counts_a_repeated_id_once() {
    let (_dir, path, _) = codes_index(11, 20);
    let mut w = Writer::open(&path).unwrap();
    let r = w.delete(&[3, 3, 5, 7777, 5]).unwrap();
    assert_eq!(r.deleted, 2);
    assert_eq!(r.unknown, vec![7777]);
    assert_eq!(Snapshot::open(&path).unwrap().len(), 18);
}

/// A segment whose every row is deleted leaves the index: not kept with a deletes file that
/// covers it, which every search would still open and filter.
#[test]
fn a_segment_whose_rows_are_all_deleted_is_dropped() {
    let (_dir, path, _) = grown_codes_index(12, 20, &[100, 101]);
    let mut w = Writer::open(&path).unwrap();
    assert_eq!(w.manifest().segments.len(), 2);
    w.delete(&[100]).unwrap();
    assert_eq!(w.manifest().segments.len(), 2);
    w.delete(&[101]).unwrap();
    assert_eq!(w.manifest().segments.len(), 1);
    let snap = Snapshot::open(&path).unwrap();
    assert_eq!((snap.len(), snap.segments().len()), (20, 1));
}

/// Hits of an older snapshot naming a row deleted since are refused by a newer snapshot's
/// rescore, as hits naming another id are: rescoring them would return the deleted id.
#[test]
fn rescore_refuses_a_row_deleted_since_the_search() {
    let mut rng = rng(13);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let ids: Vec<u64> = (0..20).collect();
    build(FLOATS, &new_rows(&mut rng, FLOATS, &ids), &path);
    let old = Snapshot::open(&path).unwrap();
    let q = random_codes(&mut rng, 1, FLOATS.bits, 1);
    let qf: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let flat = Mode::parse("flat").unwrap();
    let (hits, _) = old
        .search(&q, 5, &Score::Hamming, &flat, &SearchOptions::default())
        .unwrap();
    let gone = hits[0].ids[0];
    Writer::open(&path).unwrap().delete(&[gone]).unwrap();
    let new = Snapshot::open(&path).unwrap();
    let err = new.rescore(&qf, &hits[0], 5).unwrap_err().to_string();
    assert!(err.contains("deleted"), "{err}");
    // The snapshot that searched still rescores them.
    assert_eq!(old.rescore(&qf, &hits[0], 5).unwrap().ids.len(), 5);
}

/// A root manifest whose `next_id` is not past every id (a writer's bug, resealed) fails
/// `verify`, naming the manifest: an add without ids would have collided with the ids in use.
#[test]
fn verify_checks_next_id_against_the_ids() {
    let (_dir, path, _) = grown_codes_index(8, 20, &[100, 101]);
    Snapshot::open(&path).unwrap().verify().unwrap();
    let mpath = path.join("manifest.json");
    let mut m = LiveManifest::from_bytes(&std::fs::read(&mpath).unwrap(), &mpath).unwrap();
    m.next_id = 5;
    std::fs::write(&mpath, m.to_bytes().unwrap()).unwrap();
    let e = Snapshot::open(&path)
        .unwrap()
        .verify()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("manifest.json") && e.contains("next_id is 5, but id 101"),
        "{e}"
    );
}

/// A root manifest that disagrees with its segments (a writer's bug, resealed; a fuzzer's
/// finding) is refused at open, naming the manifest and what differs: before, `verify` passed
/// it while searches called one segment corrupt and `add` wrote segments unlike the others; a
/// `next_segment` already in use made every later change fail as "already exists".
#[test]
fn a_manifest_that_disagrees_with_its_segments_is_refused() {
    let (_dir, path, _) = grown_codes_index(8, 20, &[100, 101]);
    let mpath = path.join("manifest.json");
    let good = std::fs::read(&mpath).unwrap();
    let edited = |edit: &dyn Fn(&mut LiveManifest)| {
        let mut m = LiveManifest::from_bytes(&good, &mpath).unwrap();
        edit(&mut m);
        std::fs::write(&mpath, m.to_bytes().unwrap()).unwrap();
        Snapshot::open(&path).unwrap_err().to_string()
    };
    let e = edited(&|m| m.template.norms = true);
    assert!(
        e.contains("manifest.json")
            && e.contains("seg-000000 holds posting lists, a graph on the codes")
            && e.contains("but the manifest says every segment holds norms, posting lists"),
        "{e}"
    );
    let e = edited(&|m| m.next_segment = 1);
    assert!(
        e.contains("manifest.json")
            && e.contains("lists segment \"seg-000001\" but next_segment is 1"),
        "{e}"
    );
    std::fs::write(&mpath, &good).unwrap();
    Snapshot::open(&path).unwrap().verify().unwrap();
}

/// A handle or a snapshot opened before a writer's change still verifies what it reads after
/// the commit removed files of its generation (the first change moves the files into a
/// segment; a compaction removes the segments it merged): a graph is read through the file
/// held since the open, as its searches read it. It failed with "removed by a change" (a stress
/// review: about 1 `bsa verify` in 250 while writers committed, exit 1, "damaged").
#[test]
fn handles_from_before_a_change_verify_what_they_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    // A graph (on vectors): its file is not mapped at open, only opened.
    let v = [1.0, 0.0, 0.6, 0.8, 0.0, 1.0];
    IndexBuilder::new(8, &[1, 2, 4])
        .vectors(&v, 2)
        .hnsw(graph())
        .graph_on(&v, 2)
        .build(&path)
        .unwrap();
    let old = Index::open(&path).unwrap();
    let loaded = Index::open(&path).unwrap();
    loaded.load_hnsw().unwrap();
    let snap = Snapshot::open(&path).unwrap();
    let mut w = Writer::open(&path).unwrap();
    w.delete(&[1]).unwrap();
    assert!(!path.join("graph.bin").exists(), "moved into seg-000000");
    old.verify().unwrap();
    loaded.verify().unwrap();
    snap.verify().unwrap();
    assert_eq!(old.graph().unwrap().len(), 3);
    // A compaction removes seg-000000 with its graph: the snapshot of the generation before
    // still verifies it.
    let grown = Snapshot::open(&path).unwrap();
    let x = [0.0, 1.0];
    w.add(&NewRows::codes(&[8]).vectors(&x).graph_vectors(&x), false)
        .unwrap();
    let before_compaction = Snapshot::open(&path).unwrap();
    let stored = |_: &[u64], v: Option<&[f32]>| Ok(v.expect("stored").to_vec());
    w.compact(1, Some(&stored)).unwrap();
    assert!(!path.join("seg-000000").exists());
    for s in [&grown, &before_compaction] {
        s.verify().unwrap();
    }
    Snapshot::open(&path).unwrap().verify().unwrap();
}

/// An id live in two segments (a writer's bug, resealed) fails `verify`, naming both
/// segments: `delete` would remove one of them and searches could return the id twice. The
/// same id in a deleted row of one segment and a live row of another (an upsert) passes.
#[test]
fn verify_checks_ids_are_unique_across_segments() {
    use bsa_index::format::{FileKind, HEADER_LEN, Header};
    let (_dir, path, mut rng) = codes_index(9, 20);
    let mut w = Writer::open(&path).unwrap();
    // An upsert of id 7: its old row in seg-000000 is deleted, the new one is live.
    let c = columns(&new_rows(&mut rng, CODES_40, &[7, 100, 101]));
    w.add(&NewRows::codes(&c.codes).ids(&c.ids), true).unwrap();
    drop(w);
    Snapshot::open(&path).unwrap().verify().unwrap();
    // Row 1 of seg-000001 (id 100) becomes id 3, which is live in seg-000000.
    let seg = path.join("seg-000001");
    let mut b = std::fs::read(seg.join("ids.bin")).unwrap();
    let mut h = Header::decode(&b, FileKind::Ids, b.len() as u64, Path::new("ids.bin")).unwrap();
    let at = h.payload_offset as usize;
    assert_eq!(b[at + 8..at + 16], 100u64.to_le_bytes());
    b[at + 8..at + 16].copy_from_slice(&3u64.to_le_bytes());
    h.payload_crc = crc32fast::hash(&b[at..]);
    b[..HEADER_LEN].copy_from_slice(&h.encode());
    replace_listed_file(&seg, "ids.bin", &b);
    let e = Snapshot::open(&path)
        .unwrap()
        .verify()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("manifest.json")
            && e.contains("id 3 is live in more than one segment (seg-000000, seg-000001)"),
        "{e}"
    );
}

/// A build that replaces a live index waits for its writer, and the writer's commit lands in
/// the index it opened, not in the one that replaced it: after both, the directory is the new
/// build, whole.
#[test]
fn a_build_over_a_live_index_waits_for_its_writer() {
    let shape = CODES_40;
    let (_dir, path, mut rng) = codes_index(8, 20);
    let replacement = columns(&new_rows(
        &mut rng,
        shape,
        &(100..107).collect::<Vec<u64>>(),
    ));
    let added = new_rows(&mut rng, shape, &[50, 51]);
    let mut w = Writer::open(&path).unwrap();
    let builder = {
        let (path, codes, ids) = (
            path.clone(),
            replacement.codes.clone(),
            replacement.ids.clone(),
        );
        std::thread::spawn(move || {
            IndexBuilder::new(shape.bits, &codes)
                .ids(&ids)
                .overwrite(true)
                .build(&path)
                .unwrap();
        })
    };
    // The build is done in a few milliseconds unless it waits for the lock.
    std::thread::sleep(std::time::Duration::from_millis(300));
    add(&mut w, shape, &added, false, None);
    drop(w);
    builder.join().unwrap();
    let snap = Snapshot::open(&path).unwrap();
    snap.verify().unwrap();
    assert_eq!(snap.len(), 7);
    // A writer opened now changes the new index.
    Writer::open(&path).unwrap().delete(&[100]).unwrap();
    assert_eq!(Snapshot::open(&path).unwrap().len(), 6);
}

/// A second writer is told once, before it waits, that another one holds the lock (the CLI
/// prints a notice, else `bsa add` behind a long compaction looks hung); a writer that finds
/// the lock free is not told.
#[test]
fn a_waiting_writer_is_told_once_before_it_waits() {
    let (_dir, path, _rng) = codes_index(10, 20);
    let notices = std::sync::atomic::AtomicUsize::new(0);
    let wait = LockWait::new().on_wait(|| {
        notices.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    let first = Writer::open_waiting(&path, wait).unwrap();
    assert_eq!(notices.load(std::sync::atomic::Ordering::SeqCst), 0);
    let (told_tx, told_rx) = std::sync::mpsc::channel();
    let second = {
        let path = path.clone();
        std::thread::spawn(move || {
            let wait = LockWait::new().on_wait(move || told_tx.send(()).unwrap());
            let mut w = Writer::open_waiting(&path, wait).unwrap();
            w.delete(&[3]).unwrap().generation
        })
    };
    told_rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the waiting writer was not told");
    assert!(!second.is_finished(), "the second writer did not wait");
    drop(first);
    assert_eq!(second.join().unwrap(), 1);
}

/// A compaction checks the rows it copies: a damaged segment is reported, not sealed into a
/// merged segment with fresh checksums.
#[test]
fn compaction_refuses_a_damaged_segment() {
    let (_dir, path, _) = grown_codes_index(9, 20, &[50, 51]);
    let codes = path.join("seg-000001").join("codes.bin");
    let mut bytes = std::fs::read(&codes).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&codes, bytes).unwrap();
    let e = Writer::open(&path).unwrap().compact(1, None).unwrap_err();
    assert!(e.to_string().contains("codes.bin"), "{e}");
    assert_eq!(
        Snapshot::open_with(&path, bsa_index::OpenOptions::verify_checksums(false))
            .unwrap()
            .segments()
            .len(),
        2
    );
}

/// Each id's stored vector, as the bytes its segment stores.
fn stored_rows(snap: &Snapshot) -> BTreeMap<u64, Vec<u8>> {
    let mut rows = BTreeMap::new();
    for seg in snap.segments() {
        let index = seg.index();
        let dim = index.vector_dim().unwrap();
        for (r, &id) in index.ids().iter().enumerate() {
            let bytes = match index.vectors().unwrap().unwrap() {
                bsa_index::Vectors::F32(v) => v[r * dim..(r + 1) * dim]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                bsa_index::Vectors::F16(v) => v[r * dim..(r + 1) * dim]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                other => unreachable!("{other:?}"),
            };
            assert!(rows.insert(id, bytes).is_none());
        }
    }
    rows
}

/// A merge copies the rows' stored vectors as they are stored (f16 ones are not converted to
/// f32 and back), and builds the merged graph on the graph vectors the caller computes a chunk
/// of rows at a time: 3,000 rows, more than one chunk.
#[test]
fn compaction_copies_stored_vectors_as_they_are() {
    for dtype in [bsa_index::VectorDtype::F16, bsa_index::VectorDtype::F32] {
        let mut rng = rng(17);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idx");
        let n = 3000;
        let codes = random_codes(&mut rng, n, 64, 3);
        // Rows far from unit length, and one of zeros.
        let mut v: Vec<f32> = (0..n * DIM)
            .map(|_| rng.random_range(-40.0f32..40.0))
            .collect();
        v[..DIM].fill(0.0);
        let ids: Vec<u64> = (0..n as u64).map(|i| (i * 7919) % 10_007).collect();
        let first = 2000;
        IndexBuilder::new(64, &codes[..first])
            .ids(&ids[..first])
            .vectors(&v[..first * DIM], DIM)
            .vector_dtype(dtype)
            .hnsw(graph())
            .graph_on(&v[..first * DIM], DIM)
            .build(&path)
            .unwrap();
        let mut w = Writer::open(&path).unwrap();
        let rows = NewRows::codes(&codes[first..])
            .ids(&ids[first..])
            .vectors(&v[first * DIM..])
            .graph_vectors(&v[first * DIM..]);
        w.add(&rows, false).unwrap();
        w.delete(&ids[10..20]).unwrap();
        let before = stored_rows(&Snapshot::open(&path).unwrap());
        let calls = std::cell::Cell::new(0);
        let stored = |c: &[u64], s: Option<&[f32]>| {
            calls.set(calls.get() + 1);
            let s = s.expect("stored vectors");
            assert_eq!(s.len(), c.len() * DIM);
            Ok(s.to_vec())
        };
        assert_eq!(w.compact(1, Some(&stored)).unwrap().rows, n - 10);
        assert!(calls.get() > 1, "{dtype:?}: {} calls", calls.get());
        drop(w);
        let snap = Snapshot::open(&path).unwrap();
        snap.verify().unwrap();
        assert_eq!(snap.segments().len(), 1);
        let mut want = before;
        for id in &ids[10..20] {
            want.remove(id);
        }
        assert_eq!(stored_rows(&snap), want, "{dtype:?}");
        if dtype == bsa_index::VectorDtype::F32 {
            // The merged graph is the graph a fresh build of the surviving rows makes.
            let keep: Vec<usize> = (0..n).filter(|i| !(10..20).contains(i)).collect();
            let pick = |x: &[f32]| -> Vec<f32> {
                keep.iter()
                    .flat_map(|&i| x[i * DIM..(i + 1) * DIM].to_vec())
                    .collect()
            };
            let kept_v = pick(&v);
            let kept_codes: Vec<u64> = keep.iter().map(|&i| codes[i]).collect();
            let kept_ids: Vec<u64> = keep.iter().map(|&i| ids[i]).collect();
            let fresh = dir.path().join("fresh");
            IndexBuilder::new(64, &kept_codes)
                .ids(&kept_ids)
                .hnsw(graph())
                .graph_on(&kept_v, DIM)
                .build(&fresh)
                .unwrap();
            let merged = snap.segments()[0].index().dir().join("graph.bin");
            assert!(
                std::fs::read(merged).unwrap() == std::fs::read(fresh.join("graph.bin")).unwrap()
            );
        }
    }
}

/// A segment folder the root manifest lists but that is missing is said as the manifest's
/// (an incomplete copy, or another index's manifest), not as "no such index directory".
#[test]
fn a_missing_segment_is_named_with_the_manifest_listing_it() {
    let (_dir, path, _) = grown_codes_index(14, 10, &[100]);
    std::fs::remove_dir_all(path.join("seg-000001")).unwrap();
    let e = Snapshot::open(&path).unwrap_err().to_string();
    assert!(
        e.contains("manifest.json") && e.contains("lists segment") && e.contains("seg-000001"),
        "{e}"
    );
}

/// A first change of a single-segment index whose graph file is missing (it is read at the
/// first search, not at the open) names it as the manifest's, as the other commands do, and
/// leaves the index as it was.
#[test]
fn a_first_change_names_a_missing_file_as_the_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let v: Vec<f32> = (0..64)
        .flat_map(|i| [(i as f32).cos(), (i as f32).sin()])
        .collect();
    let codes: Vec<u64> = (0..64).map(|i| 1 << i).collect();
    IndexBuilder::new(64, &codes)
        .hnsw(graph())
        .graph_on(&v, 2)
        .build(&path)
        .unwrap();
    std::fs::remove_file(path.join("graph.bin")).unwrap();
    let manifest = std::fs::read(path.join("manifest.json")).unwrap();
    let e = Writer::open(&path)
        .unwrap()
        .delete(&[3])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("graph.bin: missing, though") && e.contains("manifest.json lists it"),
        "{e}"
    );
    assert!(
        e.ends_with("copy the whole index again or rebuild it"),
        "{e}"
    );
    assert_eq!(std::fs::read(path.join("manifest.json")).unwrap(), manifest);
    assert!(!path.join("seg-000000").exists());
}

/// The writers' clean-up removes only what bsa writes: a user's files and folders in the index
/// directory (notes, the data an add reads, a backup folder) outlive adds, deletes and
/// compactions, in both formats; leftovers of bsa's own kinds go.
#[test]
fn changes_leave_a_users_files_in_the_index_directory_alone() {
    let (_dir, path, mut rng) = codes_index(16, 20);
    // Names like bsa's too: a file the single-segment format would have (this index has no
    // vectors), a folder of a year, deletes and bridge files of no segment.
    let theirs = [
        "NOTES.txt",
        "mydata.npy",
        "seg-backup/old.npy",
        ".hidden",
        "vectors.bin",
        "seg-2024/report.txt",
        "deletes-old.bin",
        "bridge-notes.bin",
    ];
    for f in theirs {
        let p = path.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, f).unwrap();
    }
    let stale = [
        ".seg-000007.tmp-1",
        "deletes-seg-000000-g9.bin",
        "seg-000009",
    ];
    let mut w = Writer::open(&path).unwrap();
    let c = columns(&new_rows(&mut rng, CODES_40, &[100]));
    w.add(&NewRows::codes(&c.codes).ids(&c.ids), false).unwrap(); // the first change: v1 to v2
    drop(w);
    for f in stale {
        std::fs::create_dir_all(path.join(f).parent().unwrap()).unwrap();
        std::fs::write(path.join(f), b"left by a killed writer").unwrap();
    }
    let mut w = Writer::open(&path).unwrap(); // removes what killed writers left
    w.delete(&[3]).unwrap();
    let stored = |_: &[u64], v: Option<&[f32]>| Ok(v.expect("stored").to_vec());
    w.compact(1, Some(&stored)).unwrap();
    drop(w);
    for f in theirs {
        assert_eq!(std::fs::read(path.join(f)).unwrap(), f.as_bytes(), "{f}");
    }
    for f in stale {
        assert!(!path.join(f).exists(), "{f} was left");
    }
    assert!(
        !path.join("codes.bin").exists(),
        "the single-segment files were left"
    );
    let snap = Snapshot::open(&path).unwrap();
    snap.verify().unwrap();
    assert_eq!(snap.len(), 20);
}

/// A `LOCK` file removed while a writer holds it lets a second writer in. The writer whose lock
/// file went refuses its changes from then on, saying why, and removes nothing of the other's:
/// the index opens and holds exactly the other writer's change.
#[test]
fn a_writer_whose_lock_file_was_removed_does_not_commit() {
    let (_dir, path, mut rng) = codes_index(17, 20);
    let mut first = Writer::open(&path).unwrap();
    first.delete(&[0]).unwrap(); // segmented from here on
    std::fs::remove_file(path.join("LOCK")).unwrap();
    let mut second = Writer::open(&path).unwrap(); // takes a new LOCK: not kept out
    let c = columns(&new_rows(&mut rng, CODES_40, &[200]));
    second
        .add(&NewRows::codes(&c.codes).ids(&c.ids), false)
        .unwrap();
    let c = columns(&new_rows(&mut rng, CODES_40, &[100]));
    let e = first
        .add(&NewRows::codes(&c.codes).ids(&c.ids), false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("LOCK") && e.contains("nothing was committed"),
        "{e}"
    );
    drop(first);
    // The refused writer's clean-up did not touch the winner's segment.
    let snap = Snapshot::open(&path).unwrap();
    snap.verify().unwrap();
    assert_eq!(snap.len(), 20);
    assert!(snap.find_id(200).is_some() && snap.find_id(100).is_none());
    second.delete(&[1]).unwrap();
    drop(second);
    assert_eq!(Snapshot::open(&path).unwrap().len(), 19);
}

/// A segment whose manifest says format v2 (here the root manifest copied over it, its
/// checksum intact) is damage named by that file, not advice to open the segment as a snapshot.
#[test]
fn a_segment_manifest_of_the_segmented_format_is_damage() {
    let (_dir, path, _) = grown_codes_index(15, 10, &[100]);
    let seg = path.join("seg-000001").join("manifest.json");
    std::fs::copy(path.join("manifest.json"), &seg).unwrap();
    let e = Snapshot::open(&path).unwrap_err();
    assert!(matches!(e, bsa_index::Error::Corrupt { .. }), "{e:?}");
    let e = e.to_string();
    assert!(
        e.contains(&seg.display().to_string()) && e.contains("says format v2"),
        "{e}"
    );
    assert!(!e.contains("Snapshot"), "{e}");
}

/// A segment whose posting lists describe other codes (a writer's bug, resealed) fails
/// `verify`, but a compaction, which builds the lists of the merged segment from the codes
/// again, mends it rather than refusing (the codes it copies are checked).
#[test]
fn compaction_mends_wrong_posting_lists() {
    use bsa_index::format::HEADER_LEN;
    let dir = tempfile::tempdir().unwrap();
    let (bits, n) = (128, 200);
    let codes = random_codes(&mut rng(12), n, bits, 2);
    let mut swapped = codes.clone();
    swapped[..4].rotate_left(2); // rows 0 and 1 swapped: same sizes
    let (path, other) = (dir.path().join("idx"), dir.path().join("other"));
    IndexBuilder::new(bits, &codes)
        .inverted(true)
        .build(&path)
        .unwrap();
    IndexBuilder::new(bits, &swapped)
        .inverted(true)
        .build(&other)
        .unwrap();
    let b = std::fs::read(other.join("inverted.bin")).unwrap();
    assert!(b.len() > HEADER_LEN);
    replace_listed_file(&path, "inverted.bin", &b);
    let e = Snapshot::open(&path).unwrap().verify().unwrap_err();
    assert!(e.to_string().contains("inverted.bin"), "{e}");
    let mut w = Writer::open(&path).unwrap();
    let more = random_codes(&mut rng(13), 5, bits, 2);
    w.add(&NewRows::codes(&more), false).unwrap();
    let stored = |_: &[u64], v: Option<&[f32]>| Ok(v.expect("stored").to_vec());
    w.compact(1, Some(&stored)).unwrap();
    drop(w);
    let snap = Snapshot::open(&path).unwrap();
    snap.verify().unwrap();
    assert_eq!((snap.segments().len(), snap.len()), (1, n + 5));
}

/// The merge policy in an add: a full tier (here the first build and three adds, 10 rows each)
/// is merged into one segment in the add's own commit, deleted rows dropped, the index still
/// answering as a fresh build of its rows; a single-segment (format v1) index merges too.
#[test]
fn adds_merge_full_tiers_in_their_commit() {
    let shape = Shape {
        bits: 70,
        floats: true,
    };
    let mut rng = rng(91);
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let policy = MergePolicy::tiered(4).with_min_rows(8);
    let stored = |_: &[u64], v: Option<&[f32]>| Ok(v.expect("stored vectors").to_vec());
    let f: Option<&bsa_index::live::GraphVectorsFn<'_>> = Some(&stored);
    let rows_of = |rng: &mut Xoshiro256PlusPlus, from: u64| {
        let ids: Vec<u64> = (from..from + 10).collect();
        new_rows(rng, shape, &ids)
    };

    let path = dir.path().join("idx");
    let mut truth: BTreeMap<u64, Row> = BTreeMap::new();
    let first = rows_of(&mut rng, 0);
    build(shape, &first, &path);
    truth.extend(first);
    let mut expect_segments = 1;
    for a in 1..=3u64 {
        let rows = rows_of(&mut rng, a * 100);
        let c = columns(&rows);
        let r = c.new_rows(shape);
        let mut w = Writer::open(&path).unwrap();
        if a == 2 {
            // A deleted row, dropped by the merge.
            w.delete(&[3]).unwrap();
            truth.remove(&3);
        }
        let report = w.add_merging(&r, false, policy, f).unwrap();
        truth.extend(rows);
        expect_segments += 1;
        if a < 3 {
            assert_eq!((report.merged, report.merged_rows), (0, 0), "add {a}");
        } else {
            // Four segments of 10 rows (tier 0 under 32 rows): merged into one of 39.
            assert_eq!((report.merged, report.merged_rows), (4, 39), "add {a}");
            expect_segments = 1;
            assert_eq!(w.manifest().segments[0].name, report.segment);
        }
        assert_eq!(w.manifest().segments.len(), expect_segments, "add {a}");
        drop(w);
        let snap = Snapshot::open(&path).unwrap();
        snap.verify().unwrap();
        assert_eq!(snap.len(), truth.len());
        check(&mut rng, shape, &snap, &truth, &scratch);
    }

    // A fresh build (format v1) and an add of as many rows, with factor 2: both merged.
    let path = dir.path().join("v1");
    let first = rows_of(&mut rng, 0);
    build(shape, &first, &path);
    let mut truth: BTreeMap<u64, Row> = first.into_iter().collect();
    let rows = rows_of(&mut rng, 500);
    let c = columns(&rows);
    let r = c.new_rows(shape);
    let mut w = Writer::open(&path).unwrap();
    let report = w
        .add_merging(&r, false, MergePolicy::tiered(2).with_min_rows(8), f)
        .unwrap();
    truth.extend(rows);
    assert_eq!((report.merged, report.merged_rows), (2, 20));
    drop(w);
    let snap = Snapshot::open(&path).unwrap();
    snap.verify().unwrap();
    assert_eq!((snap.segments().len(), snap.len()), (1, 20));
    check(&mut rng, shape, &snap, &truth, &scratch);
    // Nothing but the manifest, the lock and the merged segment is left.
    let mut names: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let seg = snap.segments()[0].name().to_string();
    assert_eq!(names, vec!["LOCK".to_string(), "manifest.json".into(), seg]);

    // Merges that cascade: segments of 20 and 10 rows and a new one of 10; the two of 10 merge
    // into a second of 20, which merges with the first. Three segments merged into 40 rows (the
    // intermediate one counted neither as a segment merged nor for its rows).
    let tiered = MergePolicy::tiered(2).with_min_rows(8);
    for (a, want) in [(600u64, (0, 0)), (700, (3, 40))] {
        let rows = rows_of(&mut rng, a);
        let c = columns(&rows);
        let mut w = Writer::open(&path).unwrap();
        let report = w.add_merging(&c.new_rows(shape), false, tiered, f).unwrap();
        truth.extend(rows);
        assert_eq!(
            (report.merged, report.merged_rows),
            want,
            "add of ids {a}.."
        );
    }
    let snap = Snapshot::open(&path).unwrap();
    assert_eq!((snap.segments().len(), snap.len()), (1, 40));
    check(&mut rng, shape, &snap, &truth, &scratch);
}

/// The shape of the graph-mode tests: vectors, norms and a graph on the vectors.
const FLOATS: Shape = Shape {
    bits: 70,
    floats: true,
};

/// A [`FLOATS`] index in a temporary directory: rows with ids `0..base` built, then each of
/// `adds` (first id, rows) added as a segment of its own, every row made by `rows`. Returns the
/// directory (removed when dropped), the index path, a writer and the random generator.
fn grown_index(
    seed: u64,
    base: u64,
    adds: &[(u64, u64)],
    rows: impl Fn(&mut Xoshiro256PlusPlus, &[u64]) -> Vec<(u64, Row)>,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Writer,
    Xoshiro256PlusPlus,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let mut rng = rng(seed);
    let ids = |a: u64, n: u64| (a..a + n).collect::<Vec<u64>>();
    build(FLOATS, &rows(&mut rng, &ids(0, base)), &path);
    let mut w = Writer::open(&path).unwrap();
    for &(start, n) in adds {
        add(&mut w, FLOATS, &rows(&mut rng, &ids(start, n)), false, None);
    }
    (dir, path, w, rng)
}

/// Graph mode on several segments: the largest is walked, the others are scanned exactly when
/// small against the walk's `ef` (`graph_scan_rows_per_ef`) and walked otherwise. Every row of
/// a scanned segment that belongs in the exact top k is returned, with its exact score: the
/// largest segment's walk only leaves out competitors.
#[test]
fn graph_mode_scans_small_segments_and_walks_the_others() {
    let shape = FLOATS;
    let (_dir, path, w, mut rng) = grown_index(16, 300, &[(1000, 10), (2000, 40)], |rng, ids| {
        new_rows(rng, FLOATS, ids)
    });
    drop(w);
    let snap = Snapshot::open(&path).unwrap();
    let nq = 20;
    let queries = random_codes(&mut rng, nq, shape.bits, 1);
    let (tables, offsets) = scores(&mut rng, shape, nq);
    let score = Score::Table {
        tables: &tables,
        offsets: &offsets,
        normalise: true,
    };
    let k = 5;
    let flat = Mode::parse("flat").unwrap();
    let (exact, _) = snap
        .search(&queries, k, &score, &flat, &SearchOptions::default())
        .unwrap();
    let graph = Mode::parse("hnsw").unwrap().with_ef_search(Some(8));
    let scanned = |per_ef: Option<usize>| {
        let opts = SearchOptions::default().with_graph_scan_rows_per_ef(per_ef);
        let (got, stats) = snap.search(&queries, k, &score, &graph, &opts).unwrap();
        let count = |name: &str| {
            let c = stats.counters.iter().find(|(n, _)| *n == name);
            c.map_or(0, |&(_, v)| v)
        };
        assert!(count("nodes_visited") > 0, "the largest segment is walked");
        (got, count("graph_scanned_segments"))
    };
    // ef 8: 10 rows are at most 8 x 2, 40 rows are not; the default scans both, 0 neither.
    assert_eq!(scanned(Some(2)).1, 1);
    assert_eq!(scanned(Some(0)).1, 0);
    let (got, n) = scanned(None);
    assert_eq!(n, 2);
    for (q, (g, e)) in got.iter().zip(&exact).enumerate() {
        let scores = e.scores.as_ref().unwrap();
        for (i, &id) in e.ids.iter().enumerate() {
            if id < 1000 {
                continue;
            }
            let at = g.ids.iter().position(|&x| x == id);
            let at =
                at.unwrap_or_else(|| panic!("query {q}: id {id} of the exact top {k} missing"));
            assert_eq!(
                g.scores.as_ref().unwrap()[at],
                scores[i],
                "query {q}, id {id}"
            );
        }
    }
}

/// Bridged segments are searched by the largest segment's walk: their rows are found through
/// the nodes they are linked from, no segment is scanned or walked on its own, and compacting
/// the bridged segments away drops their bridges and files.
#[test]
fn graph_mode_walks_bridged_segments_with_the_largest() {
    let shape = FLOATS;
    let atoms: Vec<f32> = {
        let mut rng = rng(117);
        (0..shape.bits * DIM)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect()
    };
    let (_dir, path, mut w, mut rng) =
        grown_index(17, 300, &[(1000, 10), (2000, 40)], |rng, ids| {
            decoded_rows(rng, &atoms, FLOATS.bits, ids)
        });
    let report = bridge_by(&mut w, &atoms);
    assert_eq!(report.segments, 2);
    assert!(report.edges >= 50, "every row has an edge: {report:?}");
    // Nothing left to bridge: no commit.
    assert_eq!(bridge_by(&mut w, &atoms).generation, report.generation);
    w.delete(&[1003, 2005]).unwrap();
    drop(w);
    let snap = Snapshot::open(&path).unwrap();
    snap.verify().unwrap();
    let nq = 20;
    let queries = random_codes(&mut rng, nq, shape.bits, 1);
    let q: Vec<f32> = (0..nq * DIM)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let (tables, offsets) = (tables_of(&atoms, &q), vec![0.0; nq]);
    let score = Score::Table {
        tables: &tables,
        offsets: &offsets,
        normalise: true,
    };
    let k = 5;
    let flat = Mode::parse("flat").unwrap();
    let opts = SearchOptions::default();
    let (exact, _) = snap.search(&queries, k, &score, &flat, &opts).unwrap();
    let count = |stats: &bsa_index::SearchStats, name: &str| {
        let c = stats.counters.iter().find(|(n, _)| *n == name);
        c.map_or(0, |&(_, v)| v)
    };
    // Every row reached: the exact answer, deleted rows left out.
    let all = Mode::parse("hnsw").unwrap().with_ef_search(Some(100_000));
    let (got, stats) = snap.search(&queries, k, &score, &all, &opts).unwrap();
    same(&got, &exact, "bridged walk of every node");
    assert_eq!(count(&stats, "bridged_segments"), 2);
    assert_eq!(count(&stats, "graph_scanned_segments"), 0);
    // A small ef still finds the bridged rows of the exact top k, with their exact scores.
    let graph = Mode::parse("hnsw").unwrap().with_ef_search(Some(16));
    let (got, _) = snap.search(&queries, k, &score, &graph, &opts).unwrap();
    let (mut wanted, mut found) = (0, 0);
    for (g, e) in got.iter().zip(&exact) {
        for (i, &id) in e.ids.iter().enumerate().filter(|&(_, &id)| id >= 1000) {
            wanted += 1;
            if let Some(at) = g.ids.iter().position(|&x| x == id) {
                found += 1;
                assert_eq!(
                    g.scores.as_ref().unwrap()[at],
                    e.scores.as_ref().unwrap()[i]
                );
            }
        }
    }
    assert!(
        wanted > 0 && found * 10 >= wanted * 9,
        "{found} of {wanted}"
    );
    // A filter that leaves a bridged segment a few rows scans them exactly instead.
    let few = [2001, 2002, 5, 6, 7];
    let opts_few = SearchOptions::default().with_filter(Some(IdFilter::Allow(&few)));
    let (got, stats) = snap.search(&queries, k, &score, &all, &opts_few).unwrap();
    let (want, _) = snap.search(&queries, k, &score, &flat, &opts_few).unwrap();
    same(&got, &want, "filtered");
    assert!(count(&stats, "filter_exact_scan_segments") >= 1);
    // A damaged bridge file does not keep the index from opening (bridges serve only the
    // walk, as graphs do): the exact modes answer; the walk and the checks name the file.
    let bridge_file = damage_a_bridge_file(&path);
    let damaged = Snapshot::open(&path).unwrap();
    let (got, _) = damaged.search(&queries, k, &score, &flat, &opts).unwrap();
    same(&got, &exact, "flat, beside a damaged bridge");
    let named = |e: bsa_index::Error| {
        let e = e.to_string();
        assert!(e.contains(&*bridge_file.to_string_lossy()), "{e}");
    };
    named(
        damaged
            .search(&queries, k, &score, &all, &opts)
            .unwrap_err(),
    );
    named(damaged.verify_checksums().unwrap_err());
    named(damaged.verify().unwrap_err());
    // Compacted into one segment: no bridge is left, nor its file (the damaged one mended).
    let mut w = Writer::open(&path).unwrap();
    let stored = |_: &[u64], v: Option<&[f32]>| Ok(v.expect("stored vectors").to_vec());
    w.compact(1, Some(&stored)).unwrap();
    assert!(w.manifest().segments.iter().all(|s| s.bridge.is_none()));
    let left: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("bridge-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    Snapshot::open(&path).unwrap().verify().unwrap();
}

/// Flips a bit of the last byte of a bridge file of the index at `path`, and returns the file.
fn damage_a_bridge_file(path: &Path) -> std::path::PathBuf {
    let file = bridge_files(path)
        .into_iter()
        .next()
        .expect("a bridge file");
    damage_last_byte(&file);
    file
}

/// The bridge files in the index directory `path`, sorted.
fn bridge_files(path: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("bridge-")
        })
        .collect();
    files.sort();
    files
}

/// Flips a bit of the last byte of `file` (a bridge's last edge: its checksum fails).
fn damage_last_byte(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    std::fs::write(file, bytes).unwrap();
}

/// A mapped file damaged under a snapshot is damage, said as such, even once writers have
/// committed since (a review's finding: any commit made it "replaced by a rebuild"); only the
/// model, read by path, can be replaced under a snapshot.
#[test]
fn damage_under_an_old_snapshot_is_not_called_a_rebuild() {
    let (_dir, path, _) = codes_index(21, 30);
    let old = Snapshot::open(&path).unwrap();
    let codes = path.join("codes.bin");
    let mut b = std::fs::read(&codes).unwrap();
    let last = b.len() - 1;
    b[last] ^= 1;
    std::fs::write(&codes, &b).unwrap();
    Writer::open(&path).unwrap().delete(&[4]).unwrap();
    assert!(!old.is_current().unwrap());
    let e = old.verify_checksums().unwrap_err();
    assert!(matches!(e, bsa_index::Error::Checksum { .. }), "{e}");
}

/// A damaged bridge file is an error naming it in the checks (not at open: bridges serve only
/// the graph walk), and a compaction that merges its segment mends the index.
#[test]
fn a_damaged_bridge_file_is_named_by_the_checks_and_compacted_away() {
    let (_dir, path, mut w, _) =
        grown_index(18, 100, &[(500, 20)], |rng, ids| new_rows(rng, FLOATS, ids));
    bridge(&mut w);
    drop(w);
    let file = damage_a_bridge_file(&path);
    let snap = Snapshot::open(&path).unwrap();
    let e = snap.verify_checksums().unwrap_err().to_string();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(e.contains(&name), "{e}");
    let mut w = Writer::open(&path).unwrap();
    let stored = |_: &[u64], v: Option<&[f32]>| Ok(v.expect("stored vectors").to_vec());
    w.compact(1, Some(&stored)).unwrap();
    drop(w);
    Snapshot::open(&path).unwrap().verify().unwrap();
    assert!(!file.exists());
}

/// Every bridge unread at open is read again by the checks, not only the first: here the
/// first is mended after the open (as a passing read error would pass) and the second, still
/// damaged, is named. Before, the checks read the first again and said the index was sound.
#[test]
fn the_checks_read_every_bridge_unread_at_open() {
    let (_dir, path, mut w, _) = grown_index(22, 100, &[(500, 20), (600, 20)], |rng, ids| {
        new_rows(rng, FLOATS, ids)
    });
    assert_eq!(bridge(&mut w).segments, 2, "two small segments bridged");
    drop(w);
    let files = bridge_files(&path);
    let sound: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    for f in &files {
        damage_last_byte(f);
    }
    let snap = Snapshot::open(&path).unwrap();
    let name = |i: usize| files[i].file_name().unwrap().to_string_lossy().into_owned();
    let e = snap.verify_checksums().unwrap_err().to_string();
    assert!(e.contains(&name(0)) || e.contains(&name(1)), "{e}");
    // One mended: the other is still named, by both checks.
    let mended = if e.contains(&name(0)) { 0 } else { 1 };
    std::fs::write(&files[mended], &sound[mended]).unwrap();
    for e in [snap.verify_checksums(), snap.verify()] {
        let e = e.unwrap_err().to_string();
        assert!(e.contains(&name(1 - mended)), "{e}");
    }
    std::fs::write(&files[1 - mended], &sound[1 - mended]).unwrap();
    snap.verify().unwrap();
}

/// An add with bridging writes its segment's bridge in its own commit, and bridges every other
/// segment again when it brings a new largest one; a compaction with nothing to do commits
/// nothing.
#[test]
fn adds_bridge_their_segments_in_their_commit() {
    let shape = FLOATS;
    let (_dir, path, mut w, mut rng) =
        grown_index(19, 100, &[], |rng, ids| new_rows(rng, FLOATS, ids));
    let ids = |a: u64, n: u64| (a..a + n).collect::<Vec<u64>>();
    let stored = |_: &[u64], v: Option<&[f32]>| Ok(v.expect("stored vectors").to_vec());
    let atoms = atoms_for(shape.bits);
    let tables = |v: &[f32], n: usize| Ok((tables_of(&atoms, v), vec![0.0; n]));
    let mut add = |w: &mut Writer, from: u64, n: u64| {
        let c = columns(&new_rows(&mut rng, shape, &ids(from, n)));
        let before = w.generation();
        let r = c.new_rows(shape);
        let report = w
            .add_bridging(&r, false, MergePolicy::NEVER, &stored, &tables)
            .unwrap();
        assert_eq!(report.generation, before + 1, "one commit");
        report
    };
    let bridges = |w: &Writer| -> Vec<Option<String>> {
        let segs = &w.manifest().segments;
        segs.iter()
            .map(|s| s.bridge.as_ref().map(|b| b.to.clone()))
            .collect()
    };
    let r = add(&mut w, 1000, 20);
    assert_eq!((r.bridged, r.bridge_edges > 0), (1, true));
    let first = Some("seg-000000".to_string());
    assert_eq!(bridges(&w), vec![None, first.clone()]);
    // 150 rows: the largest segment now, every other one bridged from its graph.
    let r = add(&mut w, 2000, 150);
    assert_eq!(r.bridged, 2);
    let big = Some(r.segment.clone());
    assert_eq!(bridges(&w), vec![big.clone(), big.clone(), None]);
    let before = w.generation();
    let c = w.compact_bridging(3, &stored, &tables).unwrap();
    assert_eq!((c.merged, c.bridged, c.generation), (0, 0, before));
    drop(w);
    let snap = Snapshot::open(&path).unwrap();
    let nq = 4;
    let queries = random_codes(&mut rng, nq, shape.bits, 1);
    let (tables, offsets) = scores(&mut rng, shape, nq);
    let score = Score::Table {
        tables: &tables,
        offsets: &offsets,
        normalise: true,
    };
    let all = Mode::parse("hnsw").unwrap().with_ef_search(Some(100_000));
    let flat = Mode::parse("flat").unwrap();
    let opts = SearchOptions::default();
    let (got, stats) = snap.search(&queries, 10, &score, &all, &opts).unwrap();
    let (want, _) = snap.search(&queries, 10, &score, &flat, &opts).unwrap();
    same(&got, &want, "walk of the new largest graph");
    assert_eq!(stats.counter("bridged_segments"), Some(2));
}

#[test]
fn a_segment_folder_is_refused_as_an_index_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111])
        .build(&path)
        .unwrap();
    let mut w = Writer::open(&path).unwrap();
    w.add(&NewRows::codes(&[0b1111]), false).unwrap();
    w.delete(&[0]).unwrap();
    drop(w);
    let before = std::fs::read(path.join("manifest.json")).unwrap();
    let segment = path.join(Snapshot::open(&path).unwrap().segments()[0].name());
    // Read alone it would return the deleted row; written, it would become an index of its
    // own that the enclosing one could no longer read.
    let refused = |e: bsa_index::Error| {
        let msg = e.to_string();
        assert!(
            msg.contains("a folder inside the index") && msg.contains("give that index"),
            "{msg}"
        );
    };
    refused(Snapshot::open(&segment).unwrap_err());
    refused(Writer::open(&segment).unwrap_err());
    assert_eq!(std::fs::read(path.join("manifest.json")).unwrap(), before);
    assert_eq!(Snapshot::open(&path).unwrap().len(), 3);
    // The index itself opens whole.
    assert_eq!(Snapshot::open(&path).unwrap().segments().len(), 2);
}

/// A copy holds the generation its snapshot read, whatever was committed since; when a
/// compaction has removed that generation's files it is refused (never a mix), and the
/// destination is left as it was.
#[test]
fn a_copy_is_its_snapshots_generation_or_nothing() {
    let shape = CODES_40;
    let (dir, path, mut r) = codes_index(11, 120);
    let queries = random_codes(&mut r, 4, shape.bits, 1);
    let flat = Mode::parse("flat").unwrap();
    let answer = |s: &Snapshot| {
        s.search(
            &queries,
            15,
            &Score::Hamming,
            &flat,
            &SearchOptions::default(),
        )
        .unwrap()
        .0
    };
    let mut w = Writer::open(&path).unwrap();
    let more: Vec<u64> = (500..540).collect();
    add(&mut w, shape, &new_rows(&mut r, shape, &more), false, None);
    let held = Snapshot::open(&path).unwrap();
    let later: Vec<u64> = (600..640).collect();
    add(&mut w, shape, &new_rows(&mut r, shape, &later), false, None);
    let copy = dir.path().join("copy");
    held.copy_to(&copy, false, LockWait::new()).unwrap();
    let copied = Snapshot::open(&copy).unwrap();
    assert_eq!((copied.len(), held.len()), (160, 160));
    assert_eq!(answer(&copied), answer(&held));
    assert_eq!(
        bsa_index::build_leftovers(&copy),
        Vec::<std::path::PathBuf>::new()
    );

    let stored = |_: &[u64], v: Option<&[f32]>| Ok(v.expect("stored").to_vec());
    w.compact(1, Some(&stored)).unwrap();
    let e = held.copy_to(&copy, true, LockWait::new()).unwrap_err();
    assert!(
        e.to_string().contains("removed by a change to the index"),
        "{e}"
    );
    assert_eq!(Snapshot::open(&copy).unwrap().len(), 160);
    // A rebuild reuses the file names: a snapshot opened before it would copy the new files
    // under its old manifest; the copy is checked against its checksums and refused.
    let single = dir.path().join("single");
    IndexBuilder::new(shape.bits, &[4, 5])
        .build(&single)
        .unwrap();
    let before = Snapshot::open(&single).unwrap();
    IndexBuilder::new(shape.bits, &[1, 2, 3])
        .overwrite(true)
        .build(&single)
        .unwrap();
    let e = before
        .copy_to(&dir.path().join("copy2"), false, LockWait::new())
        .unwrap_err();
    assert!(e.to_string().contains("changed by a writer"), "{e}");
    assert!(!dir.path().join("copy2").exists());
    // The same with segments: a rebuild with as many rows added writes segments of the same
    // names and sizes, whose own manifests (which hold their checksums) are copied with them.
    let segmented = dir.path().join("segmented");
    let rebuild = |codes: &[u64], ids: &[u64]| {
        IndexBuilder::new(shape.bits, codes)
            .overwrite(true)
            .build(&segmented)
            .unwrap();
        let mut w = Writer::open(&segmented).unwrap();
        w.add(&NewRows::codes(&codes[..1]).ids(ids), false).unwrap();
    };
    rebuild(&[4, 5], &[9]);
    let before = Snapshot::open(&segmented).unwrap();
    assert_eq!(before.segments().len(), 2);
    rebuild(&[1, 2], &[8]);
    let e = before
        .copy_to(&dir.path().join("copy3"), false, LockWait::new())
        .unwrap_err();
    assert!(e.to_string().contains("changed by a writer"), "{e}");
    assert!(!dir.path().join("copy3").exists());
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

/// A copy over an index, and a replacement of one, wait for its writers as their `LockWait`
/// says: past the timeout (at once for zero), or once the stop flag is set, they give up with
/// `LockTimeout` or `Stopped`, the index and the new directory as they were, nothing left
/// beside them; once the writer is gone the same calls go through.
#[test]
fn copies_and_replacements_give_up_waiting_as_their_lock_wait_says() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, mpsc};
    use std::time::Duration;
    let (dir, path, _) = codes_index(17, 30);
    let source = dir.path().join("source");
    IndexBuilder::new(64, &[7, 8, 9]).build(&source).unwrap();
    let new = dir.path().join(".idx.new");
    IndexBuilder::new(64, &[1, 2]).build(&new).unwrap();
    let ((held, is_held), (release, released)) = (mpsc::channel(), mpsc::channel::<()>());
    let writer = std::thread::spawn({
        let path = path.clone();
        move || {
            let _w = Writer::open(&path).unwrap();
            held.send(()).unwrap();
            released.recv().ok();
        }
    });
    is_held.recv().unwrap();
    let snap = Snapshot::open(&source).unwrap();
    let waited = |t| LockWait::new().timeout(Duration::from_millis(t));
    let e = snap.copy_to(&path, true, waited(50)).unwrap_err();
    assert!(matches!(e, bsa_index::Error::LockTimeout { .. }), "{e}");
    let e = bsa_index::replace_index_dir(&new, &path, waited(0)).unwrap_err();
    assert!(matches!(e, bsa_index::Error::LockTimeout { .. }), "{e}");
    let stopped = LockWait::new().stop(Arc::new(AtomicBool::new(true)));
    let e = bsa_index::replace_index_dir(&new, &path, stopped).unwrap_err();
    assert!(matches!(e, bsa_index::Error::Stopped), "{e}");
    // A copy told it waits (its `on_wait`, once) and stopped from there, as Ctrl-C would.
    let (stop, told) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let on_wait = {
        let (stop, told) = (stop.clone(), told.clone());
        move || {
            told.fetch_add(1, Ordering::SeqCst);
            stop.store(true, Ordering::SeqCst);
        }
    };
    let wait = LockWait::new().stop(stop).on_wait(on_wait);
    let e = snap.copy_to(&path, true, wait).unwrap_err();
    assert!(matches!(e, bsa_index::Error::Stopped), "{e}");
    assert_eq!(told.load(Ordering::SeqCst), 1);
    assert_eq!(Snapshot::open(&path).unwrap().len(), 30);
    assert_eq!(Index::open(&new).unwrap().len(), 2);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [".idx.new", "idx", "source"]);
    release.send(()).unwrap();
    writer.join().unwrap();
    snap.copy_to(&path, true, waited(0)).unwrap();
    assert_eq!(Snapshot::open(&path).unwrap().len(), 3);
    bsa_index::replace_index_dir(&new, &path, waited(0)).unwrap();
    assert_eq!(Snapshot::open(&path).unwrap().len(), 2);
}

/// A thread that asks for the writers' lock it already holds (a second Writer, a build that
/// replaces the index) gets an error instead of waiting for itself forever; another thread
/// waits for the lock as before and gets it once the first Writer is dropped.
#[test]
fn a_thread_holding_the_writers_lock_is_told_not_hung() {
    let (_dir, path, _) = codes_index(13, 20);
    let first = Writer::open(&path).unwrap();
    let Err(e) = Writer::open(&path) else {
        panic!("a second Writer in this thread")
    };
    assert!(e.to_string().contains("would wait for itself"), "{e}");
    let e = IndexBuilder::new(64, &[1, 2])
        .overwrite(true)
        .build(&path)
        .unwrap_err();
    assert!(e.to_string().contains("would wait for itself"), "{e}");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let w = Writer::open(&path).unwrap();
            tx.send(w.manifest().segments.len()).unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(rx.try_recv().is_err(), "the other thread did not wait");
        drop(first);
        assert!(rx.recv_timeout(std::time::Duration::from_secs(30)).is_ok());
    });
    // Dropped: this thread may open one again.
    Writer::open(&path).unwrap();
}
