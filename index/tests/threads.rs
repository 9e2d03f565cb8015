//! Search results do not depend on the size of rayon's pool (issue 12): the flat scan with every
//! way of splitting the work, the inverted search by its cost rule and forced onto the posting
//! lists, for every score, with ties everywhere. `bsa search`'s own test
//! (`tests/cli/threads.rs`) covers the command line, but on its small fixture the cost rule sends
//! table scores to the flat scan; here the inverted path runs for them too.

mod common;

use bsa_index::InvertedLists;
use bsa_index::search::flat::{top_k, top_k_scored};
use bsa_index::search::inverted;
use bsa_index::{Hits, KernelFamily, Score, SearchParams, Split};
use common::*;
use rand::Rng;

/// `f` in a rayon pool of `threads` threads.
fn pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// Every search of the fixture with every kernel family this CPU has, labelled.
fn all_searches(
    codes: &[u64],
    bits: usize,
    queries: &[u64],
    scores: &[(&str, Score<'_>)],
    norms: &[f32],
) -> Vec<(String, Vec<Hits>)> {
    let mut out = Vec::new();
    for family in KernelFamily::supported() {
        for (name, hits) in family_searches(codes, bits, queries, scores, norms, family) {
            out.push((format!("{family} {name}"), hits));
        }
    }
    out
}

/// Every search of the fixture with `family`, labelled.
fn family_searches(
    codes: &[u64],
    bits: usize,
    queries: &[u64],
    scores: &[(&str, Score<'_>)],
    norms: &[f32],
    family: KernelFamily,
) -> Vec<(String, Vec<Hits>)> {
    let w = words(bits);
    let k = 25;
    let lists = InvertedLists::build(codes, bits).unwrap();
    let inv = lists.view();
    let mut out = Vec::new();
    for split in [Split::Auto, Split::Queries, Split::Codes] {
        let p = SearchParams::default()
            .with_split(split)
            .with_kernel(Some(family));
        out.push((
            format!("flat hamming {split:?}"),
            top_k(codes, w, bits, queries, k, &p).unwrap(),
        ));
        for (name, score) in scores {
            out.push((
                format!("flat {name} {split:?}"),
                top_k_scored(codes, w, bits, queries, k, score, Some(norms), &p).unwrap(),
            ));
        }
    }
    for force in [false, true] {
        let p = SearchParams::default()
            .with_force_inverted(force)
            .with_kernel(Some(family));
        for (name, score) in std::iter::once(&("hamming", Score::Hamming)).chain(scores) {
            let (hits, stats) =
                inverted::top_k(codes, w, bits, &inv, queries, k, score, Some(norms), &p).unwrap();
            if force {
                assert_eq!(stats.inverted_queries, queries.len() / w, "{name}");
            }
            out.push((format!("inverted {name} forced={force}"), hits));
        }
    }
    out
}

#[test]
fn search_results_do_not_depend_on_the_thread_count() {
    let mut r = rng(12);
    let bits = 256;
    let w = words(bits);
    // About 16 of 256 bits set (each bit survives three ANDs): sparse, so many equal overlaps.
    let codes = random_codes(&mut r, 5000, bits, 3);
    // 70 queries: a batch that runs the AVX2 scan through slabs.
    let mut queries = random_codes(&mut r, 70, bits, 3);
    // Queries that are base codes: exact matches, and their duplicates in the base tie.
    for (q, b) in [(0, 10), (1, 4999), (2, 2500)] {
        queries[q * w..(q + 1) * w].copy_from_slice(&codes[b * w..(b + 1) * w]);
    }
    let nq = queries.len() / w;
    // Tables of arbitrary floats (sums that round), and of a few values (exact ties).
    let fine: Vec<f32> = (0..nq * bits)
        .map(|_| r.random_range(-1.0f32..1.0))
        .collect();
    let coarse: Vec<f32> = (0..nq * bits)
        .map(|_| r.random_range(-2i32..3) as f32 * 0.25)
        .collect();
    let offsets: Vec<f32> = (0..nq).map(|_| r.random_range(-1.0f32..1.0)).collect();
    let norms: Vec<f32> = (0..5000)
        .map(|i| {
            if i % 97 == 0 {
                0.0
            } else {
                r.random_range(0.5f32..2.0)
            }
        })
        .collect();
    let scores = [
        ("cosine", Score::Cosine),
        ("jaccard", Score::Jaccard),
        (
            "table fine",
            Score::Table {
                tables: &fine,
                offsets: &offsets,
                normalise: false,
            },
        ),
        (
            "table fine normalised",
            Score::Table {
                tables: &fine,
                offsets: &offsets,
                normalise: true,
            },
        ),
        (
            "table coarse normalised",
            Score::Table {
                tables: &coarse,
                offsets: &offsets,
                normalise: true,
            },
        ),
    ];
    let one = pool(1, || all_searches(&codes, bits, &queries, &scores, &norms));
    // The fixture must hold ties at the cut, or the order of equal scores is never tested.
    let hamming = &one[0].1;
    let tied = hamming
        .iter()
        .filter(|h| h.distances.len() == 25 && h.distances[23] == h.distances[24])
        .count();
    assert!(tied > nq / 2, "only {tied} queries tie at the k-th place");
    for threads in [2, 4] {
        let other = pool(threads, || {
            all_searches(&codes, bits, &queries, &scores, &norms)
        });
        for ((name, want), (_, got)) in one.iter().zip(&other) {
            for (qi, (g, w)) in got.iter().zip(want).enumerate() {
                assert_eq!(g, w, "{name}, {threads} threads, query {qi}");
            }
        }
    }
}
