//! Inverted search equals flat search exactly (rows, Hamming distances, scores, ties by row) for
//! every score, on random sparse codes of several densities and skewed bit frequencies; flat
//! search equals a brute-force computation written from the definitions in `bsa_index::score`.

mod common;

use bsa_index::InvertedLists;
use bsa_index::search::flat::{top_k, top_k_scored};
use bsa_index::search::inverted;
use bsa_index::{Hits, Index, IndexBuilder, KernelFamily, Score, SearchParams};
use common::*;
use proptest::prelude::*;
use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;

/// `n` codes of `bits` bits; bit j is set with probability `density * weight_j`, where the
/// weights are flat or (skewed) fall off like 1/(j+1) and are rescaled to mean 1.
fn sparse_codes(
    r: &mut Xoshiro256PlusPlus,
    n: usize,
    bits: usize,
    density: f64,
    skew: bool,
) -> Vec<u64> {
    let w = words(bits);
    let weights: Vec<f64> = (0..bits)
        .map(|j| if skew { 1.0 / (j as f64 + 1.0) } else { 1.0 })
        .collect();
    let mean = weights.iter().sum::<f64>() / bits as f64;
    let mut out = vec![0u64; n * w];
    for row in out.chunks_exact_mut(w) {
        for (j, wt) in weights.iter().enumerate() {
            if r.random_bool((density * wt / mean).min(1.0)) {
                row[j / 64] |= 1 << (j % 64);
            }
        }
    }
    out
}

fn bits_of(code: &[u64], bits: usize) -> Vec<usize> {
    (0..bits)
        .filter(|&j| (code[j / 64] >> (j % 64)) & 1 == 1)
        .collect()
}

/// Brute force from the definitions: (score key, row) sorted, first k.
fn brute_scores(
    codes: &[u64],
    bits: usize,
    q: &[u64],
    qi: usize,
    k: usize,
    score: &Score<'_>,
    norms: Option<&[f32]>,
) -> Vec<(u64, f32, u32)> {
    let w = words(bits);
    let qb = bits_of(q, bits);
    let m = qb.len() as u32;
    let mut all: Vec<(f32, u64, u32)> = codes
        .chunks_exact(w)
        .enumerate()
        .map(|(r, b)| {
            let bb = bits_of(b, bits);
            let p = bb.len() as u32;
            let c = bb.iter().filter(|j| qb.contains(j)).count() as u32;
            let s = match score {
                Score::Cosine => {
                    if m == 0 || p == 0 {
                        0.0
                    } else {
                        (c as f64 / ((m as f64) * (p as f64)).sqrt()) as f32
                    }
                }
                Score::Jaccard => {
                    if m + p - c == 0 {
                        0.0
                    } else {
                        (c as f64 / (m + p - c) as f64) as f32
                    }
                }
                Score::Table {
                    tables,
                    offsets,
                    normalise,
                } => {
                    let mut sum = 0.0f64;
                    for &j in &bb {
                        sum += tables[qi * bits + j] as f64;
                    }
                    let s = offsets[qi] as f64 + sum;
                    if *normalise {
                        let nv = norms.unwrap()[r];
                        if nv > 0.0 {
                            (s / nv as f64) as f32
                        } else {
                            0.0
                        }
                    } else {
                        s as f32
                    }
                }
                _ => unreachable!(),
            };
            (s + 0.0, r as u64, hamming(q, b))
        })
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    all.truncate(k);
    all.into_iter().map(|(s, r, d)| (r, s, d)).collect()
}

fn tables_for(r: &mut Xoshiro256PlusPlus, nq: usize, bits: usize) -> (Vec<f32>, Vec<f32>) {
    // Few distinct values, so that many rows tie exactly.
    let t = (0..nq * bits)
        .map(|_| r.random_range(-3i32..4) as f32 * 0.25)
        .collect();
    let o = (0..nq)
        .map(|_| r.random_range(-2i32..3) as f32 * 0.5)
        .collect();
    (t, o)
}

fn check_all(
    codes: &[u64],
    bits: usize,
    queries: &[u64],
    k: usize,
    seed: u64,
    family: KernelFamily,
) -> Result<(), TestCaseError> {
    let w = words(bits);
    let n = codes.len() / w;
    let nq = queries.len() / w;
    let lists = InvertedLists::build(codes, bits).unwrap();
    let inv = lists.view();
    let mut r = rng(seed);
    let (tables, offsets) = tables_for(&mut r, nq, bits);
    // Norms with ties and zeros.
    let norms: Vec<f32> = (0..n)
        .map(|_| r.random_range(0u32..4) as f32 * 0.5)
        .collect();
    let p = SearchParams::default().with_kernel(Some(family));
    let force = p.with_force_inverted(true);
    // Hamming: inverted == flat == brute force.
    let flat = top_k(codes, w, bits, queries, k, &p).unwrap();
    let (invh, stats) =
        inverted::top_k(codes, w, bits, &inv, queries, k, &Score::Hamming, None, &p).unwrap();
    prop_assert_eq!(stats.inverted_queries + stats.flat_queries, nq);
    for (qi, q) in queries.chunks_exact(w).enumerate() {
        let want = brute(codes, bits, q, k);
        prop_assert_eq!(
            &flat[qi].rows,
            &want.iter().map(|x| x.1).collect::<Vec<_>>()
        );
        prop_assert_eq!(
            &flat[qi].distances,
            &want.iter().map(|x| x.0).collect::<Vec<_>>()
        );
    }
    prop_assert_eq!(&invh, &flat);
    let (forced, stats) = inverted::top_k(
        codes,
        w,
        bits,
        &inv,
        queries,
        k,
        &Score::Hamming,
        None,
        &force,
    )
    .unwrap();
    prop_assert_eq!(stats.inverted_queries, nq);
    prop_assert_eq!(&forced, &flat);
    // max_distance too.
    let pm = p.with_max_distance(Some(3));
    let (a, _) = inverted::top_k(
        codes,
        w,
        bits,
        &inv,
        queries,
        k,
        &Score::Hamming,
        None,
        &pm.with_force_inverted(true),
    )
    .unwrap();
    prop_assert_eq!(a, top_k(codes, w, bits, queries, k, &pm).unwrap());
    for score in [
        Score::Cosine,
        Score::Jaccard,
        Score::Table {
            tables: &tables,
            offsets: &offsets,
            normalise: false,
        },
        Score::Table {
            tables: &tables,
            offsets: &offsets,
            normalise: true,
        },
    ] {
        let flat = top_k_scored(codes, w, bits, queries, k, &score, Some(&norms), &p).unwrap();
        let (inv_hits, _) =
            inverted::top_k(codes, w, bits, &inv, queries, k, &score, Some(&norms), &p).unwrap();
        prop_assert_eq!(&inv_hits, &flat, "{:?}", score.name());
        let (inv_hits, stats) = inverted::top_k(
            codes,
            w,
            bits,
            &inv,
            queries,
            k,
            &score,
            Some(&norms),
            &force,
        )
        .unwrap();
        prop_assert_eq!(stats.inverted_queries, nq);
        prop_assert_eq!(&inv_hits, &flat, "{:?} forced", score.name());
        for (qi, q) in queries.chunks_exact(w).enumerate() {
            let want = brute_scores(codes, bits, q, qi, k, &score, Some(&norms));
            let h: &Hits = &flat[qi];
            prop_assert_eq!(
                &h.rows,
                &want.iter().map(|x| x.0).collect::<Vec<_>>(),
                "{}",
                score.name()
            );
            prop_assert_eq!(
                h.scores.as_ref().unwrap(),
                &want.iter().map(|x| x.1).collect::<Vec<_>>()
            );
            prop_assert_eq!(&h.distances, &want.iter().map(|x| x.2).collect::<Vec<_>>());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn inverted_equals_flat_equals_brute_force(
        n in 1usize..400,
        bits in prop::sample::select(vec![8usize, 64, 70, 130, 256]),
        density in prop::sample::select(vec![0.01f64, 0.05, 0.2]),
        skew in any::<bool>(),
        nq in 1usize..5,
        k in prop::sample::select(vec![0usize, 1, 3, 10, 50, 1000]),
        seed in any::<u64>(),
        family in prop::sample::select(KernelFamily::supported()),
    ) {
        let mut r = rng(seed);
        let codes = sparse_codes(&mut r, n, bits, density, skew);
        // Queries: some from the base (exact matches), some fresh.
        let w = words(bits);
        let mut queries = sparse_codes(&mut r, nq, bits, density, skew);
        let copy = r.random_range(0..n);
        queries[..w].copy_from_slice(&codes[copy * w..(copy + 1) * w]);
        check_all(&codes, bits, &queries, k, seed ^ 1, family)?;
    }
}

fn lists_len(codes: &[u64], bits: usize, j: usize) -> usize {
    codes
        .chunks_exact(words(bits))
        .filter(|c| (c[j / 64] >> (j % 64)) & 1 == 1)
        .count()
}

#[test]
fn dense_queries_fall_back_to_flat_and_agree() {
    let mut r = rng(3);
    let bits = 128;
    let codes = sparse_codes(&mut r, 300, bits, 0.2, true);
    // A dense query touches far more postings (about 300 x 128 x 0.2 / 2) than 1/32 of the
    // words the scan reads (600 / 32); a one-bit query on a rare bit touches fewer.
    let dense = random_codes(&mut r, 1, bits, 0);
    let rare = (0..bits)
        .rev()
        .find(|&j| lists_len(&codes, bits, j) <= 600 / 32)
        .unwrap();
    let mut sparse = vec![0u64, 0];
    sparse[rare / 64] |= 1 << (rare % 64);
    let mut queries = dense.clone();
    queries.extend_from_slice(&sparse);
    let lists = InvertedLists::build(&codes, bits).unwrap();
    let (hits, stats) = inverted::top_k(
        &codes,
        2,
        bits,
        &lists.view(),
        &queries,
        7,
        &Score::Hamming,
        None,
        &SearchParams::default(),
    )
    .unwrap();
    assert_eq!(
        (stats.inverted_queries, stats.flat_queries),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(
        hits,
        top_k(&codes, 2, bits, &queries, 7, &SearchParams::default()).unwrap()
    );
    for f in KernelFamily::supported() {
        check_all(&codes, bits, &queries, 7, 9, f).unwrap();
    }
    assert!(!stats.flat_on_slabs, "one query does not build slabs");
    // 64 dense queries on AVX2: the flat scan of the fallback runs on slabs, with the same hits.
    if KernelFamily::Avx2.is_supported() {
        let many = random_codes(&mut r, 64, bits, 0);
        let p = SearchParams::default().with_kernel(Some(KernelFamily::Avx2));
        let (hits, stats) = inverted::top_k(
            &codes,
            2,
            bits,
            &lists.view(),
            &many,
            7,
            &Score::Hamming,
            None,
            &p,
        )
        .unwrap();
        assert_eq!((stats.flat_queries, stats.flat_on_slabs), (64, true));
        assert_eq!(hits, top_k(&codes, 2, bits, &many, 7, &p).unwrap());
    }
}

/// With AVX-512, the flat part of an inverted batch on codes wider than 256 bits runs on slabs
/// (from 256 queries, as the flat search's): dense queries go to the scan, sparse ones to the
/// posting lists, and the hits are the flat search's.
#[test]
fn avx512_fallback_scans_wide_codes_on_slabs() {
    if !KernelFamily::Avx512.is_supported() {
        return;
    }
    let mut r = rng(11);
    let bits = 512;
    // Each bit in about 60 of 3000 rows: a query with half its bits set touches about 15,000
    // postings, far more than the scan costs; one with about 5 set touches 300.
    let codes = sparse_codes(&mut r, 3000, bits, 0.02, false);
    let lists = InvertedLists::build(&codes, bits).unwrap();
    let mut queries = random_codes(&mut r, 300, bits, 0);
    queries.extend(sparse_codes(&mut r, 100, bits, 0.01, false));
    let p = SearchParams::default().with_kernel(Some(KernelFamily::Avx512));
    let w = words(bits);
    let (hits, stats) = inverted::top_k(
        &codes,
        w,
        bits,
        &lists.view(),
        &queries,
        10,
        &Score::Hamming,
        None,
        &p,
    )
    .unwrap();
    assert_eq!(
        (
            stats.flat_queries,
            stats.inverted_queries,
            stats.flat_on_slabs
        ),
        (300, 100, true),
        "{stats:?}"
    );
    assert_eq!(hits, top_k(&codes, w, bits, &queries, 10, &p).unwrap());
}

#[test]
fn empty_codes_and_queries_and_all_ties() {
    // All-zero codes: every distance ties; the empty query matches all at |b|.
    let bits = 70;
    let mut codes = vec![0u64; 20 * 2];
    codes[5 * 2] = 1; // row 5 = {0}
    let queries = vec![0u64, 0, 1, 0];
    for f in KernelFamily::supported() {
        check_all(&codes, bits, &queries, 25, 1, f).unwrap();
    }
    for f in KernelFamily::supported() {
        check_all(&codes, bits, &queries, 3, 2, f).unwrap();
    }
}

#[test]
fn index_on_disk_searches_inverted_like_flat() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(5);
    let bits = 200;
    let codes = sparse_codes(&mut r, 500, bits, 0.05, true);
    let norms: Vec<f32> = (0..500).map(|i| (i % 7) as f32).collect();
    let ids: Vec<u64> = (0..500u64).map(|i| 10_000 - i).collect();
    let path = dir.path().join("idx");
    IndexBuilder::new(bits, &codes)
        .ids(&ids)
        .inverted(true)
        .norms(&norms)
        .build(&path)
        .unwrap();
    let index = Index::open(&path).unwrap();
    index.verify().unwrap();
    assert!(index.has_inverted());
    // Rows are stored in id order: these ids descend, so the norms come back reversed.
    let reversed: Vec<f32> = norms.iter().rev().copied().collect();
    assert_eq!(index.norms().unwrap(), &reversed[..]);
    let queries = sparse_codes(&mut r, 6, bits, 0.05, true);
    let (tables, offsets) = tables_for(&mut r, 6, bits);
    let p = SearchParams::default();
    for score in [
        Score::Hamming,
        Score::Cosine,
        Score::Jaccard,
        Score::Table {
            tables: &tables,
            offsets: &offsets,
            normalise: true,
        },
    ] {
        for k in [1, 10, 600] {
            let flat = index.search_flat_scored(&queries, k, &score, &p).unwrap();
            let (inv, stats) = index.search_inverted(&queries, k, &score, &p).unwrap();
            assert_eq!(inv, flat, "{} k={k}", score.name());
            assert_eq!(stats.inverted_queries + stats.flat_queries, 6);
            let (inv, stats) = index
                .search_inverted(&queries, k, &score, &p.with_force_inverted(true))
                .unwrap();
            assert_eq!(inv, flat, "{} k={k} forced", score.name());
            assert_eq!(stats.inverted_queries, 6);
            assert_eq!(flat[0].ids[0], index.ids()[flat[0].rows[0] as usize]);
        }
    }
    // Without posting lists or norms: clear errors.
    let plain = dir.path().join("plain");
    IndexBuilder::new(bits, &codes).build(&plain).unwrap();
    let index = Index::open(&plain).unwrap();
    assert!(!index.has_inverted());
    let e = index
        .search_inverted(&queries, 3, &Score::Hamming, &p)
        .unwrap_err();
    assert!(e.to_string().contains("--inverted"), "{e}");
    let e = index
        .search_flat_scored(
            &queries,
            3,
            &Score::Table {
                tables: &tables,
                offsets: &offsets,
                normalise: true,
            },
            &p,
        )
        .unwrap_err();
    assert!(e.to_string().contains("norms"), "{e}");
    // A max distance is for Hamming only; tables must have the right size.
    let e = index
        .search_flat_scored(
            &queries,
            3,
            &Score::Cosine,
            &SearchParams::default().with_max_distance(Some(2)),
        )
        .unwrap_err();
    assert!(e.to_string().contains("hamming"), "{e}");
    let e = index
        .search_flat_scored(
            &queries,
            3,
            &Score::Table {
                tables: &tables[1..],
                offsets: &offsets,
                normalise: false,
            },
            &p,
        )
        .unwrap_err();
    assert!(matches!(e, bsa_index::Error::DimMismatch { .. }), "{e}");
}

/// Several blocks of the blocked search (16384 rows each) with pruning at its default costs:
/// 40000 codes of 1024 bits with about 16 bits set (skewed), queries from the base and noisy
/// copies, many k; inverted (forced) equals flat exactly.
#[test]
fn blocked_search_over_many_blocks_equals_flat() {
    let bits = 1024;
    let w = words(bits);
    let mut r = rng(77);
    let codes = sparse_codes(&mut r, 40_000, bits, 16.0 / 1024.0, true);
    let n = codes.len() / w;
    let mut queries = sparse_codes(&mut r, 6, bits, 16.0 / 1024.0, true);
    for (i, row) in [5usize, 17_000, 39_999].iter().enumerate() {
        queries[i * w..(i + 1) * w].copy_from_slice(&codes[row * w..(row + 1) * w]);
    }
    // A near copy: one bit moved.
    queries[3 * w..4 * w].copy_from_slice(&codes[20_000 * w..20_001 * w]);
    queries[3 * w] ^= 0b11;
    let lists = InvertedLists::build(&codes, bits).unwrap();
    let force = SearchParams::default().with_force_inverted(true);
    for k in [1usize, 10, 100, 2000] {
        let flat = top_k(&codes, w, bits, &queries, k, &SearchParams::default()).unwrap();
        let (inv, stats) = inverted::top_k(
            &codes,
            w,
            bits,
            &lists.view(),
            &queries,
            k,
            &Score::Hamming,
            None,
            &force,
        )
        .unwrap();
        assert_eq!(stats.inverted_queries, 6);
        assert_eq!(inv, flat, "k = {k}");
        assert!(flat.iter().all(|h| h.len() == k.min(n)));
    }
}

/// Bitmap lists over many chunks (512 rows each) and batches: 40000 skewed codes of 1024 bits
/// with about 16 bits set, queries from the base and near copies, many k and max distances;
/// equal to the flat scan exactly. Then an index on disk with `bitmaps.bin`, whose inverted
/// search sends the queries to the bitmaps and still equals flat.
#[test]
fn bitmap_lists_equal_flat_in_memory_and_on_disk() {
    let bits = 1024;
    let w = words(bits);
    let mut r = rng(78);
    let codes = sparse_codes(&mut r, 40_000, bits, 16.0 / 1024.0, true);
    let mut queries = sparse_codes(&mut r, 40, bits, 16.0 / 1024.0, true);
    for (i, row) in [0usize, 511, 512, 39_999].iter().enumerate() {
        queries[i * w..(i + 1) * w].copy_from_slice(&codes[row * w..(row + 1) * w]);
    }
    queries[4 * w..5 * w].copy_from_slice(&codes[20_000 * w..20_001 * w]);
    queries[4 * w] ^= 0b11;
    let bm = bsa_index::bitmaps::BitmapLists::build(&codes, bits).unwrap();
    for k in [1usize, 10, 100, 2000] {
        for max_d in [None, Some(4), Some(14)] {
            let p = SearchParams::default()
                .with_max_distance(max_d)
                .with_kernel(Some(KernelFamily::Portable));
            let flat = top_k(&codes, w, bits, &queries, k, &p).unwrap();
            for family in KernelFamily::supported() {
                let got = bm.view().hamming_keys(&queries, w, k, max_d, family);
                for (qi, (g, h)) in got.iter().zip(&flat).enumerate() {
                    let g: Vec<(u32, u64)> = g
                        .iter()
                        .map(|&x| ((x >> 32) as u32, x & 0xffff_ffff))
                        .collect();
                    let h: Vec<(u32, u64)> = h
                        .distances
                        .iter()
                        .copied()
                        .zip(h.rows.iter().copied())
                        .collect();
                    assert_eq!(
                        g, h,
                        "{family}: query {qi}, k = {k}, max distance {max_d:?}"
                    );
                }
            }
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    IndexBuilder::new(bits, &codes)
        .inverted(true)
        .bitmaps(Some(true))
        .build(&path)
        .unwrap();
    let index = Index::open(&path).unwrap();
    index.verify().unwrap();
    assert_eq!(index.bitmaps().unwrap().unwrap().len(), 40_000);
    let p = SearchParams::default();
    let flat = index.search_flat(&queries, 10, &p).unwrap();
    for family in KernelFamily::supported() {
        let (inv, stats) = index
            .search_inverted(
                &queries,
                10,
                &Score::Hamming,
                &p.with_force_inverted(true).with_kernel(Some(family)),
            )
            .unwrap();
        assert_eq!(inv, flat, "{family}");
        // Skewed 16-bit queries over 40000 rows: 16 x 625 bitmap words against ~16 x 1000 postings.
        assert!(stats.bitmap_queries > 20, "{stats:?}");
        // `--stats` names the bitmaps' counting loop for a query they answered, the Hamming
        // kernel (which verifies the candidates) for one the posting lists answered.
        let mode = bsa_index::Mode::parse("inverted").unwrap();
        let searcher = index.searcher(&mode).unwrap();
        let one = p.with_kernel(Some(family));
        for q in queries.chunks(words(bits)) {
            let (_, st) = searcher.search(q, 10, &Score::Hamming, &one).unwrap();
            let by_bitmaps = st.counter("bitmap_queries") == Some(1);
            let want = if by_bitmaps {
                format!("{}-bitmaps", family.name())
            } else {
                bsa_index::hamming::kernel_name(family, words(bits)).to_string()
            };
            assert_eq!(st.kernel, want, "{family}: {st:?}");
        }
    }
    // Other scores never read the bitmaps.
    let (inv, stats) = index
        .search_inverted(&queries, 10, &Score::Cosine, &p.with_force_inverted(true))
        .unwrap();
    assert_eq!(
        inv,
        index
            .search_flat_scored(&queries, 10, &Score::Cosine, &p)
            .unwrap()
    );
    assert_eq!(stats.bitmap_queries, 0);
}

/// Table scores read from the per-code set bits (`sparse.bin`, written automatically for sparse
/// codes) equal those from the packed codes and the brute-force definition, flat and inverted.
#[test]
fn sparse_layout_gives_identical_table_scores() {
    let bits = 300;
    let w = words(bits);
    let mut r = rng(31);
    let codes = sparse_codes(&mut r, 3000, bits, 0.03, true);
    let n = codes.len() / w;
    let queries = sparse_codes(&mut r, 5, bits, 0.03, true);
    let (tables, offsets) = tables_for(&mut r, 5, bits);
    let norms: Vec<f32> = (0..n).map(|i| (i % 4) as f32 * 0.5).collect();
    let dir = tempfile::tempdir().unwrap();
    IndexBuilder::new(bits, &codes)
        .norms(&norms)
        .inverted(true)
        .build(dir.path().join("auto"))
        .unwrap();
    IndexBuilder::new(bits, &codes)
        .norms(&norms)
        .sparse(Some(false))
        .build(dir.path().join("dense"))
        .unwrap();
    let with = Index::open(dir.path().join("auto")).unwrap();
    let without = Index::open(dir.path().join("dense")).unwrap();
    assert!(with.sparse().is_some(), "sparse codes get sparse.bin");
    assert!(without.sparse().is_none());
    with.verify().unwrap();
    let p = SearchParams::default();
    for normalise in [false, true] {
        let score = Score::Table {
            tables: &tables,
            offsets: &offsets,
            normalise,
        };
        for k in [1usize, 10, 3000] {
            let a = with.search_flat_scored(&queries, k, &score, &p).unwrap();
            let b = without.search_flat_scored(&queries, k, &score, &p).unwrap();
            assert_eq!(a, b);
            let (c, _) = with.search_inverted(&queries, k, &score, &p).unwrap();
            assert_eq!(c, a);
            for (qi, q) in queries.chunks_exact(w).enumerate() {
                let want = brute_scores(&codes, bits, q, qi, k, &score, Some(&norms));
                assert_eq!(a[qi].rows, want.iter().map(|x| x.0).collect::<Vec<_>>());
                assert_eq!(
                    a[qi].scores.as_ref().unwrap(),
                    &want.iter().map(|x| x.1).collect::<Vec<_>>()
                );
            }
        }
    }
}
