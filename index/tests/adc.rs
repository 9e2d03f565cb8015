//! The quantised table scan (`bsa_index::adc`) returns exactly the `f64` top k of the score's
//! definition (rows, `f32` scores, ties by row), for every kernel family this CPU runs, sparse
//! and dense layouts, normalised or not, on random and adversarial tables: huge and tiny
//! entries, entries 1 ulp apart, many equal scores, constant tables, one huge entry, negative
//! entries, zero and odd norms; k from 1 to past n.

mod common;

use bsa_index::InvertedLists;
use bsa_index::adc::{self, AdcCodes, GROUP, QuantisedTable, QueryGroup};
use bsa_index::adc_wide as wide;
use bsa_index::score::{desc_key, from_desc_key, table_score, table_sum};
use bsa_index::search::flat::top_k_scored;
use bsa_index::search::{
    CodesView, Cutoffs, FlatParams, FlatSearcher, InvertedParams, InvertedSearcher, Searcher,
};
use bsa_index::sparse::SparseCodes;
use bsa_index::topk::{TopK, key_distance, key_row};
use bsa_index::{Index, IndexBuilder, KernelFamily, Mode, RowSet, Score, SearchParams, Split};
use common::*;
use proptest::prelude::*;
use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;

/// The score as `bsa_index::score` defines it, written out: `f64` sum in ascending bit order
/// from 0, plus the offset, divided by a positive norm (0 otherwise), rounded once to `f32`.
fn reference_score(code: &[u64], table: &[f32], offset: f32, norm: Option<f32>) -> f32 {
    let mut sum = 0.0f64;
    for (wi, &word) in code.iter().enumerate() {
        for b in 0..64 {
            if word >> b & 1 == 1 {
                sum += f64::from(table[wi * 64 + b]);
            }
        }
    }
    let s = f64::from(offset) + sum;
    match norm {
        None => s as f32,
        Some(n) if n > 0.0 => (s / f64::from(n)) as f32,
        Some(_) => 0.0,
    }
}

/// Reference top k: `(row, score)` by descending score (`-0.0 == 0.0`), ties by row.
fn reference(
    codes: &[u64],
    bits: usize,
    table: &[f32],
    offset: f32,
    norms: Option<&[f32]>,
    k: usize,
) -> Vec<(u64, f32)> {
    let w = words(bits);
    let mut all: Vec<(u32, u64)> = codes
        .chunks_exact(w)
        .enumerate()
        .map(|(r, c)| {
            let s = reference_score(c, table, offset, norms.map(|v| v[r]));
            (desc_key(s), r as u64)
        })
        .collect();
    all.sort();
    all.truncate(k);
    all.into_iter()
        .map(|(key, r)| (r, from_desc_key(key)))
        .collect()
}

/// A table of `bits` entries of kind `kind` (see the match).
fn table(rng: &mut Xoshiro256PlusPlus, bits: usize, kind: u8) -> Vec<f32> {
    match kind % 9 {
        // Ordinary: uniform in [-1, 1].
        0 => (0..bits).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
        // Huge and tiny magnitudes mixed (sums of huge ones overflow f32: scores of +-inf).
        1 => (0..bits)
            .map(|_| {
                let m = [3e38f32, 1e30, 1.0, 1e-30, 1e-40, 0.0][rng.random_range(0..6)];
                if rng.random_bool(0.5) { -m } else { m }
            })
            .collect(),
        // Entries 1 ulp apart: near-ties everywhere.
        2 => {
            let base = rng.random_range(0.1f32..10.0);
            (0..bits)
                .map(|_| f32::from_bits(base.to_bits() + rng.random_range(0..3)))
                .collect()
        }
        // Few distinct values: many exactly equal scores.
        3 => (0..bits)
            .map(|_| [0.0f32, 0.5, 1.0][rng.random_range(0..3)])
            .collect(),
        // All equal.
        4 => vec![rng.random_range(-2.0f32..2.0); bits],
        // One huge entry among small ones.
        5 => {
            let mut t: Vec<f32> = (0..bits)
                .map(|_| rng.random_range(-1e-3f32..1e-3))
                .collect();
            t[rng.random_range(0..bits)] = 1e30;
            t
        }
        // Negative only.
        6 => (0..bits).map(|_| -rng.random_range(0.0f32..5.0)).collect(),
        // Tiny only (subnormal f32 and just above).
        7 => (0..bits)
            .map(|_| f32::from_bits(rng.random_range(1..0x0100_0000)))
            .collect(),
        // All zero.
        _ => vec![0.0; bits],
    }
}

/// Norms: ordinary, with zeros, negative, tiny, huge, NaN and infinite ones mixed in.
fn norms(rng: &mut Xoshiro256PlusPlus, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.random_range(0..12) {
            0 => 0.0,
            1 => -1.0,
            2 => 1e-38,
            3 => 3e38,
            4 => f32::NAN,
            5 => f32::INFINITY,
            6 => f32::from_bits(1),
            _ => rng.random_range(0.2f32..3.0),
        })
        .collect()
}

/// `n` codes of `bits` bits: sparse (about `set` bits each), dense, or with duplicates.
fn codes(rng: &mut Xoshiro256PlusPlus, n: usize, bits: usize, set: usize, kind: u8) -> Vec<u64> {
    let w = words(bits);
    let mut c = match kind % 3 {
        0 => {
            let mut c = vec![0u64; n * w];
            for row in c.chunks_exact_mut(w) {
                // Popcounts vary from 0 to `set` (blocks are padded to their longest code).
                for _ in 0..rng.random_range(0..=set) {
                    let j = rng.random_range(0..bits);
                    row[j / 64] |= 1 << (j % 64);
                }
            }
            c
        }
        1 => random_codes(rng, n, bits, 0),
        // Few distinct codes: exact score ties between rows.
        _ => {
            let distinct = random_codes(rng, 3, bits, 1);
            (0..n)
                .flat_map(|_| {
                    let d = rng.random_range(0..3);
                    distinct[d * w..(d + 1) * w].to_vec()
                })
                .collect()
        }
    };
    mask_rows(&mut c, bits);
    c
}

/// Runs `adc::scan` (or, `wide`, `adc_wide::scan`) over `layout` for queries `tables` in
/// groups and returns each query's top k.
#[allow(clippy::too_many_arguments)]
fn adc_top(
    wide: bool,
    family: KernelFamily,
    layout: &AdcCodes,
    codes: &[u64],
    bits: usize,
    tables: &[Vec<f32>],
    offsets: &[f32],
    norms: Option<&[f32]>,
    k: usize,
    split: usize,
) -> Vec<Vec<(u64, f32)>> {
    let n = layout.len();
    let w = words(bits);
    let mut out = Vec::new();
    let size = if wide { wide::WIDE } else { GROUP };
    for g0 in (0..tables.len()).step_by(size) {
        let g1 = (g0 + size).min(tables.len());
        let qts: Vec<_> = (g0..g1)
            .map(|q| QuantisedTable::new(layout, &tables[q], offsets[q], norms.is_some()).unwrap())
            .collect();
        let (narrow, wide_group) = if wide {
            (None, Some(wide::WideGroup::new(qts).unwrap()))
        } else {
            (Some(QueryGroup::new(qts).unwrap()), None)
        };
        // Two row ranges (cut at `split`, not a block boundary in general) merged, as the
        // parallel search does with chunks.
        let mut parts: Vec<Vec<u64>> = vec![Vec::new(); g1 - g0];
        for rows in [0..split.min(n), split.min(n)..n] {
            let mut tops: Vec<TopK> = (g0..g1).map(|_| TopK::new(k.min(n), None)).collect();
            let exact = |g: usize, r: usize| {
                let q = g0 + g;
                desc_key(reference_score(
                    &codes[r * w..(r + 1) * w],
                    &tables[q],
                    offsets[q],
                    norms.map(|v| v[r]),
                ))
            };
            match (&narrow, &wide_group) {
                (Some(group), _) => adc::scan(family, layout, group, rows, &mut tops, exact),
                (_, Some(group)) => wide::scan(family, layout, group, rows, &mut tops, exact),
                _ => unreachable!(),
            }
            .unwrap();
            for (p, t) in parts.iter_mut().zip(tops) {
                p.extend(t.into_sorted_keys());
            }
        }
        for mut p in parts {
            p.sort();
            p.truncate(k);
            out.push(
                p.iter()
                    .map(|&key| (u64::from(key_row(key)), from_desc_key(key_distance(key))))
                    .collect(),
            );
        }
    }
    out
}

fn same(got: &[(u64, f32)], want: &[(u64, f32)]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(a, b)| a.0 == b.0 && a.1.to_bits() == b.1.to_bits())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// The kernels' scan, both layouts, every family, equals the reference exactly.
    #[test]
    fn scan_equals_f64_reference(
        seed in any::<u64>(),
        n in 0usize..300,
        bits in prop::sample::select(vec![3usize, 5, 8, 63, 130, 384, 1000]),
        code_kind in 0u8..3,
        table_kind in 0u8..9,
        nq in prop::sample::select(vec![1usize, 3, 8, 11, 64, 70]),
        k in 1usize..40,
        normalise in any::<bool>(),
        split in 0usize..300,
    ) {
        let mut rng = rng(seed);
        let codes = codes(&mut rng, n, bits, 12, code_kind);
        let tables: Vec<Vec<f32>> = (0..nq).map(|q| table(&mut rng, bits, table_kind + q as u8 % 2)).collect();
        let offsets: Vec<f32> = (0..nq)
            .map(|q| [0.0f32, 0.25, -3.0, 1e30][(q + table_kind as usize) % 4])
            .collect();
        let nv = norms(&mut rng, n);
        let norms = normalise.then_some(&nv[..]);
        // k up to n + 3: k > n returns every row.
        let k = if n == 0 { k } else { k % (n + 4) + 1 };
        let sparse = SparseCodes::build(&codes, bits).unwrap();
        let mut layouts = vec![AdcCodes::from_packed(&codes, bits).unwrap()];
        layouts.push(AdcCodes::from_sparse(&sparse.view()).unwrap());
        for layout in layouts {
            let layout = match norms {
                Some(v) => layout.with_norms(v).unwrap(),
                None => layout,
            };
            for family in KernelFamily::supported() {
                // The wide kernel too, where this family has one for the layout.
                for wide in [false, true].into_iter().filter(|&x| !x || wide::supported(family, &layout)) {
                    let got = adc_top(wide, family, &layout, &codes, bits, &tables, &offsets, norms, k, split);
                    for (q, g) in got.iter().enumerate() {
                        let want = reference(&codes, bits, &tables[q], offsets[q], norms, k);
                        prop_assert!(
                            same(g, &want),
                            "family {} wide {} dense {} q {} k {}:\n got {:?}\nwant {:?}",
                            family, wide, layout.is_dense(), q, k, g, want
                        );
                    }
                }
            }
        }
    }

    /// The flat search of table scores on bare slices (the dense layout) equals the reference,
    /// on every family and with 1 or 2 threads.
    #[test]
    fn flat_table_search_equals_f64_reference(
        seed in any::<u64>(),
        n in 1usize..400,
        bits in prop::sample::select(vec![8usize, 100, 384]),
        table_kind in 0u8..9,
        nq in 1usize..10,
        k in 1usize..30,
        normalise in any::<bool>(),
    ) {
        let mut rng = rng(seed);
        let codes = codes(&mut rng, n, bits, 40, table_kind);
        let w = words(bits);
        let tables: Vec<f32> = (0..nq).flat_map(|_| table(&mut rng, bits, table_kind)).collect();
        let offsets: Vec<f32> = (0..nq).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let nv = norms(&mut rng, n);
        let queries = random_codes(&mut rng, nq, bits, 0);
        let score = Score::Table { tables: &tables, offsets: &offsets, normalise };
        for family in KernelFamily::supported() {
            for threads in [1, 2] {
                let p = SearchParams::default().with_kernel(Some(family));
                let hits = pool(threads)
                    .install(|| top_k_scored(&codes, w, bits, &queries, k, &score, Some(&nv), &p))
                    .unwrap();
                for (q, h) in hits.iter().enumerate() {
                    let want = reference(
                        &codes, bits, &tables[q * bits..(q + 1) * bits], offsets[q],
                        normalise.then_some(&nv[..]), k,
                    );
                    let got: Vec<(u64, f32)> = h.rows.iter().copied()
                        .zip(h.scores.clone().unwrap()).collect();
                    prop_assert!(same(&got, &want), "family {} threads {} q {}", family, threads, q);
                }
            }
        }
    }
}

/// Big enough for several chunks per query (chunks are >= 16k codes), which share their k-th
/// scores as they go: with sparse codes and few distinct table values the ties cross chunk
/// boundaries, and the result must still be the reference's, ties to the lower row, on every
/// family, split and thread count.
#[test]
fn flat_table_search_over_many_chunks_equals_f64_reference() {
    let mut rng = rng(7);
    let (n, bits, nq) = (70_000, 100, 3);
    let codes = codes(&mut rng, n, bits, 6, 0);
    let w = words(bits);
    // Few distinct values, then ordinary ones: many equal scores, and ordinary near-ties.
    let tables: Vec<f32> = (0..nq)
        .flat_map(|q| table(&mut rng, bits, [3, 0, 3][q]))
        .collect();
    let offsets = vec![0.0f32; nq];
    let queries = random_codes(&mut rng, nq, bits, 0);
    let score = Score::Table {
        tables: &tables,
        offsets: &offsets,
        normalise: false,
    };
    for k in [1, 10, 100] {
        let want: Vec<Vec<(u64, f32)>> = (0..nq)
            .map(|q| {
                reference(
                    &codes,
                    bits,
                    &tables[q * bits..(q + 1) * bits],
                    0.0,
                    None,
                    k,
                )
            })
            .collect();
        for family in KernelFamily::supported() {
            for split in [Split::Auto, Split::Codes, Split::Queries] {
                for threads in [1, 4] {
                    let p = SearchParams::default()
                        .with_kernel(Some(family))
                        .with_split(split);
                    let hits = pool(threads)
                        .install(|| top_k_scored(&codes, w, bits, &queries, k, &score, None, &p))
                        .unwrap();
                    for (q, h) in hits.iter().enumerate() {
                        let got: Vec<(u64, f32)> = h
                            .rows
                            .iter()
                            .copied()
                            .zip(h.scores.clone().unwrap())
                            .collect();
                        assert!(
                            same(&got, &want[q]),
                            "{family} {split:?} threads {threads} k {k} q {q}"
                        );
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// `search_within` (the flat scan seeded with per-query cutoffs, as a segmented index's
    /// later segments are searched) returns exactly the reference's hits within each cutoff,
    /// for table scores (scores at least the cutoff) and Hamming (distances at most it), with
    /// and without a row filter, on every family.
    #[test]
    fn flat_search_within_cutoffs_equals_reference(
        seed in any::<u64>(),
        n in 1usize..300,
        bits in prop::sample::select(vec![8usize, 100, 384]),
        table_kind in 0u8..9,
        nq in 1usize..8,
        k in 1usize..20,
        normalise in any::<bool>(),
        filtered in any::<bool>(),
    ) {
        let mut rng = rng(seed);
        let codes = codes(&mut rng, n, bits, 40, table_kind);
        let w = words(bits);
        let tables: Vec<f32> = (0..nq).flat_map(|_| table(&mut rng, bits, table_kind)).collect();
        let offsets: Vec<f32> = (0..nq).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let nv = norms(&mut rng, n);
        let queries = random_codes(&mut rng, nq, bits, 0);
        let mut allowed = RowSet::full(n);
        if filtered {
            for r in 0..n {
                if rng.random_bool(0.3) {
                    allowed.remove(r);
                }
            }
        }
        let view = CodesView::new(&codes, bits).unwrap().with_norms(Some(&nv)).unwrap();
        let flat = FlatSearcher::new(view, FlatParams::default());
        let score = Score::Table { tables: &tables, offsets: &offsets, normalise };
        let norms = normalise.then_some(&nv[..]);
        // Each query's reference over the allowed rows, all of them, best first.
        let refs: Vec<Vec<(u64, f32)>> = (0..nq)
            .map(|q| {
                reference(&codes, bits, &tables[q * bits..(q + 1) * bits], offsets[q], norms, n)
                    .into_iter()
                    .filter(|&(r, _)| allowed.contains(r as usize))
                    .collect()
            })
            .collect();
        // Cutoffs: a score of the reference (the j-th best, so ties sit at the cutoff), or
        // one below every score, or a random one.
        let min: Vec<f32> = refs
            .iter()
            .map(|r| match (rng.random_range(0..3), r.is_empty()) {
                (0, false) => r[rng.random_range(0..r.len())].1,
                (1, _) => f32::NEG_INFINITY,
                _ => rng.random_range(-2.0f32..2.0),
            })
            .collect();
        let dist: Vec<u32> = (0..nq).map(|_| rng.random_range(0..=bits as u32)).collect();
        let lists = InvertedLists::build(&codes, bits).unwrap();
        let inverted: Vec<InvertedSearcher<'_>> = [false, true]
            .map(|force| {
                let ip = InvertedParams::default().with_force_inverted(force);
                InvertedSearcher::new(view, lists.view(), ip).unwrap()
            })
            .into();
        let mut searchers: Vec<&dyn Searcher> = vec![&flat];
        searchers.extend(inverted.iter().map(|s| s as &dyn Searcher));
        for (family, searcher) in KernelFamily::supported().into_iter().flat_map(|f| searchers.iter().map(move |s| (f, s))) {
            let p = SearchParams::default().with_kernel(Some(family));
            let filter = filtered.then_some(&allowed);
            let (hits, _) = searcher
                .search_within(&queries, k, &score, &p, filter, Cutoffs::MinScore(&min))
                .unwrap();
            for (q, h) in hits.iter().enumerate() {
                let want: Vec<(u64, f32)> = refs[q]
                    .iter()
                    .copied()
                    .filter(|&(_, s)| desc_key(s) <= desc_key(min[q]))
                    .take(k)
                    .collect();
                let got: Vec<(u64, f32)> =
                    h.rows.iter().copied().zip(h.scores.clone().unwrap()).collect();
                prop_assert!(same(&got, &want), "{} family {} q {} min {} got {:?} want {:?}", searcher.mode(), family, q, min[q], got, want);
            }
            let (hits, _) = searcher
                .search_within(&queries, k, &Score::Hamming, &p, filter, Cutoffs::MaxDistance(&dist))
                .unwrap();
            for (q, h) in hits.iter().enumerate() {
                let want: Vec<(u32, u64)> = brute(&codes, bits, &queries[q * w..(q + 1) * w], n)
                    .into_iter()
                    .filter(|&(d, r)| d <= dist[q] && allowed.contains(r as usize))
                    .take(k)
                    .collect();
                let got: Vec<(u32, u64)> =
                    h.distances.iter().copied().zip(h.rows.iter().copied()).collect();
                prop_assert_eq!(got, want, "{} family {} q {}", searcher.mode(), family, q);
            }
        }
    }
}

#[test]
fn cutoffs_of_the_wrong_kind_or_length_are_errors() {
    let codes = [1u64, 2, 3];
    let flat = FlatSearcher::new(CodesView::new(&codes, 8).unwrap(), FlatParams::default());
    let p = SearchParams::default();
    let q = [1u64, 2];
    let e = flat
        .search_within(
            &q,
            2,
            &Score::Hamming,
            &p,
            None,
            Cutoffs::MinScore(&[0.0, 0.0]),
        )
        .unwrap_err();
    assert!(e.to_string().contains("maximum distances"), "{e}");
    let e = flat
        .search_within(&q, 2, &Score::Hamming, &p, None, Cutoffs::MaxDistance(&[1]))
        .unwrap_err();
    assert!(e.to_string().contains("cutoffs (one per query)"), "{e}");
    let e = flat
        .search_within(
            &q,
            2,
            &Score::Cosine,
            &p,
            None,
            Cutoffs::MinScore(&[0.0, f32::NAN]),
        )
        .unwrap_err();
    assert!(e.to_string().contains("NaN"), "{e}");
}

/// End to end: an index with `sparse.bin` and norms answers `search_flat_scored` with the
/// reference's rows and scores, identically for every family and thread count, and reports the
/// quantised scan's work.
#[test]
fn index_search_is_unchanged() {
    let mut rng = rng(7);
    // 9 queries (the narrow kernel), and 70: the wide kernel's batches (adc_wide) on AVX-512
    // and AVX2, with a part-filled group.
    let (n, bits, all_q, k) = (3000, 1024, 70, 10);
    let codes = codes(&mut rng, n, bits, 24, 0);
    let w = words(bits);
    let nv: Vec<f32> = (0..n)
        .map(|i| {
            if i % 97 == 0 {
                0.0
            } else {
                rng.random_range(0.5f32..2.0)
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i");
    IndexBuilder::new(bits, &codes)
        .norms(&nv)
        .build(&path)
        .unwrap();
    let index = Index::open(&path).unwrap();
    assert!(
        index.sparse().is_some(),
        "the builder stores set bits of sparse codes"
    );
    let tables: Vec<f32> = (0..all_q * bits)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let offsets: Vec<f32> = (0..all_q).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let all_queries = random_codes(&mut rng, all_q, bits, 3);
    for (nq, normalise) in [(9, false), (9, true), (70, false), (70, true)] {
        let queries = &all_queries[..nq * w];
        let score = Score::Table {
            tables: &tables[..nq * bits],
            offsets: &offsets[..nq],
            normalise,
        };
        let mut first = None;
        for family in KernelFamily::supported() {
            for threads in [1, 2] {
                let p = SearchParams::default().with_kernel(Some(family));
                let flat = index.searcher(&Mode::parse("flat").unwrap()).unwrap();
                let (hits, stats) = pool(threads)
                    .install(|| flat.search(queries, k, &score, &p))
                    .unwrap();
                let scanned = stats.counter("codes_scanned").unwrap();
                let rescored = stats.counter("codes_rescored").unwrap();
                assert_eq!(scanned, (n * nq) as u64);
                // The bound leaves few codes to re-score: far fewer than all of them.
                assert!(rescored < scanned / 4, "{stats:?}");
                let kernel = stats.table_kernel.unwrap();
                assert!(kernel.ends_with("sparse"), "{stats:?}");
                if family != KernelFamily::Portable && nq >= wide::WIDE_MIN_QUERIES {
                    assert_eq!(kernel, wide::kernel_name(family), "{stats:?}");
                }
                for (q, h) in hits.iter().enumerate() {
                    let want = reference(
                        &codes,
                        bits,
                        &tables[q * bits..(q + 1) * bits],
                        offsets[q],
                        normalise.then_some(&nv[..]),
                        k,
                    );
                    let got: Vec<(u64, f32)> = h
                        .ids
                        .iter()
                        .copied()
                        .zip(h.scores.clone().unwrap())
                        .collect();
                    assert!(same(&got, &want), "{family} {threads} {q}");
                    let d: Vec<u32> = h
                        .rows
                        .iter()
                        .map(|&r| {
                            hamming(
                                &queries[q * w..(q + 1) * w],
                                &codes[r as usize * w..(r as usize + 1) * w],
                            )
                        })
                        .collect();
                    assert_eq!(h.distances, d);
                }
                match &first {
                    None => first = Some(hits),
                    Some(f) => assert_eq!(f, &hits, "{family} {threads}"),
                }
            }
        }
    }
}

/// Quantised tables are scanned only over layouts of the shape they were made for: the levels
/// follow the layout's longest block, and a layout of the same table length with longer blocks
/// could carry one query's 16-bit sum into the next one's field (rows silently lost).
#[test]
fn tables_of_another_layout_shape_are_errors() {
    // 64 rows of 512 bits: one bit set a row (255 levels), or 511 (131 levels: a table of
    // 255 levels summed over 511 positions would pass 65535).
    let bits = 512;
    let w = words(bits);
    let mut few = vec![0u64; 64 * w];
    let mut many = vec![u64::MAX; 64 * w];
    for i in 0..64 {
        few[i * w + i / 64] |= 1 << (i % 64);
        many[i * w + i / 64] &= !(1 << (i % 64));
    }
    let sparse = |c: &[u64]| {
        let s = SparseCodes::build(c, bits).unwrap();
        AdcCodes::from_sparse(&s.view()).unwrap()
    };
    let (a, b) = (sparse(&few), sparse(&many));
    let table: Vec<f32> = (0..bits).map(|j| j as f32).collect();
    let qa = || QuantisedTable::new(&a, &table, 0.0, false).unwrap();
    let qb = QuantisedTable::new(&b, &table, 0.0, false).unwrap();
    assert!(qa().step() < qb.step(), "the levels differ");
    assert!(
        QueryGroup::new(vec![qa(), qb.clone()]).is_err(),
        "one group, one layout shape"
    );
    let group = QueryGroup::new(vec![qa()]).unwrap();
    // Normalised tables over the same layout without its norms: refused, not scored by 0.
    let normed = a.clone().with_norms(&[1.0; 64]).unwrap();
    let ng = QueryGroup::new(vec![
        QuantisedTable::new(&normed, &table, 0.0, true).unwrap(),
    ])
    .unwrap();
    let mut tops = vec![TopK::new(5, None)];
    let e = adc::scan(KernelFamily::Portable, &a, &ng, 0..64, &mut tops, |_, _| 0).unwrap_err();
    assert!(e.to_string().contains("norms"), "{e}");
    for family in KernelFamily::supported() {
        let mut tops = vec![TopK::new(5, None)];
        let e = adc::scan(family, &b, &group, 0..64, &mut tops, |_, _| 0).unwrap_err();
        assert!(e.to_string().contains("another layout"), "{family:?}: {e}");
        assert!(adc::scan(family, &a, &group, 0..64, &mut tops, |_, _| 0).is_ok());
        if wide::supported(family, &b) {
            let wg = wide::WideGroup::new(vec![qa()]).unwrap();
            let mut tops = vec![TopK::new(5, None)];
            assert!(wide::scan(family, &b, &wg, 0..64, &mut tops, |_, _| 0).is_err());
            assert!(wide::scan(family, &a, &wg, 0..64, &mut tops, |_, _| 0).is_ok());
        }
    }
}

/// Tables of fewer entries than the quantiser's lanes of eight: the error bound must still
/// count every entry, or codes scoring above the threshold are never candidates (a bound that
/// skipped the last `len % 8` entries gave tables of under eight an error of 0). Every code of
/// 2-6 bits against 200 tables, every threshold, every family.
#[test]
fn every_code_above_the_threshold_is_a_candidate_for_tables_of_few_entries() {
    for bits in [2usize, 3, 5, 6] {
        let n = 1usize << bits;
        let codes: Vec<u64> = (0..n as u64).collect();
        let sparse = SparseCodes::build(&codes, bits).unwrap();
        let layout = AdcCodes::from_sparse(&sparse.view()).unwrap();
        for seed in 0..200u32 {
            let table: Vec<f32> = (0..bits)
                .map(|j| (((seed * 7919 + j as u32 * 104_729) % 1000) as f32 / 137.0).sin())
                .collect();
            let qt = QuantisedTable::new(&layout, &table, 0.0, false).unwrap();
            let group = QueryGroup::new(vec![qt]).unwrap();
            let exact: Vec<f32> = (0..n)
                .map(|r| table_score(0.0, table_sum(&codes[r..r + 1], &table), None))
                .collect();
            for family in KernelFamily::supported() {
                for &threshold in &exact {
                    let mut out = vec![[0u16; GROUP]; layout.blocks()];
                    adc::candidates(
                        family,
                        &layout,
                        &group,
                        &[threshold],
                        0..layout.blocks(),
                        &mut out,
                    )
                    .unwrap();
                    for (r, &s) in exact.iter().enumerate() {
                        let candidate = out[r / adc::LANES][0] >> (r % adc::LANES) & 1 == 1;
                        assert!(
                            s <= threshold || candidate,
                            "{family:?}, {bits} bits, table {seed}: code {r} scores {s} > {threshold}, not a candidate"
                        );
                    }
                }
            }
        }
    }
}
