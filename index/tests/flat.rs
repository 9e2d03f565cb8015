//! Flat search equals a brute-force sort exactly (ids, distances, ties), for code sizes that are
//! and are not multiples of 64 bits, k larger than n, and 1 or 4 threads.

mod common;

use bsa_index::search::flat::top_k;
use bsa_index::{Index, IndexBuilder, KernelFamily, Mode, Score, SearchParams, Searcher, Split};
use common::*;
use proptest::prelude::*;

const BITS: [usize; 10] = [1, 63, 64, 65, 128, 200, 256, 384, 512, 1024];

fn check(
    codes: &[u64],
    bits: usize,
    queries: &[u64],
    k: usize,
    split: Split,
    threads: usize,
) -> Result<(), TestCaseError> {
    for family in KernelFamily::supported() {
        check_family(codes, bits, queries, k, split, threads, family)?;
    }
    Ok(())
}

fn check_family(
    codes: &[u64],
    bits: usize,
    queries: &[u64],
    k: usize,
    split: Split,
    threads: usize,
    family: KernelFamily,
) -> Result<(), TestCaseError> {
    let w = words(bits);
    let params = SearchParams::default()
        .with_split(split)
        .with_kernel(Some(family));
    let hits = pool(threads)
        .install(|| top_k(codes, w, bits, queries, k, &params))
        .unwrap();
    prop_assert_eq!(hits.len(), queries.len() / w);
    for (qi, h) in hits.iter().enumerate() {
        let want = brute(codes, bits, &queries[qi * w..(qi + 1) * w], k);
        let got: Vec<(u32, u64)> = h
            .distances
            .iter()
            .copied()
            .zip(h.rows.iter().copied())
            .collect();
        prop_assert_eq!(
            got,
            want,
            "bits={} k={} q={} split={:?} threads={} kernel={}",
            bits,
            k,
            qi,
            split,
            threads,
            family
        );
        prop_assert_eq!(&h.ids, &h.rows);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn flat_equals_brute_force(
        bits_i in 0usize..BITS.len(),
        n in 1usize..700,
        nq in prop_oneof![1usize..40, 64usize..72],
        k in prop_oneof![1usize..20, 600usize..900],
        density in 0u32..4,
        seed in any::<u64>(),
        split in prop::sample::select(vec![Split::Auto, Split::Queries, Split::Codes]),
        threads in prop::sample::select(vec![1usize, 4]),
    ) {
        let bits = BITS[bits_i];
        let mut r = rng(seed);
        let codes = random_codes(&mut r, n, bits, density);
        let queries = random_codes(&mut r, nq, bits, density);
        check(&codes, bits, &queries, k, split, threads)?;
    }
}

/// Big enough that the code split produces several chunks per query (chunks are >= 16k codes),
/// with 9 queries (row-major scans) and 64 (on AVX2, the slab scan, whose chunks are whole
/// tiles).
#[test]
fn flat_equals_brute_force_split_over_many_chunks() {
    for &bits in &[64usize, 200, 256] {
        let mut r = rng(bits as u64);
        let n = 70_000;
        // Sparse codes: many exact ties, including across chunk boundaries.
        let codes = random_codes(&mut r, n, bits, 3);
        let queries = random_codes(&mut r, 64, bits, 3);
        for (nq, ks) in [(9, &[1, 10, 100][..]), (64, &[10][..])] {
            let queries = &queries[..nq * words(bits)];
            for threads in [1, 4] {
                for split in [Split::Auto, Split::Codes, Split::Queries] {
                    for &k in ks {
                        check(&codes, bits, queries, k, split, threads).unwrap();
                    }
                }
            }
        }
    }
}

#[test]
fn index_search_equals_brute_force_with_ids_and_max_distance() {
    let dir = tempfile::tempdir().unwrap();
    for &bits in &BITS {
        let mut r = rng(100 + bits as u64);
        let n = 500;
        let w = words(bits);
        let codes = random_codes(&mut r, n, bits, 2);
        let ids: Vec<u64> = (0..n as u64).map(|i| i * 7 + 1_000_000).collect();
        let path = dir.path().join(format!("idx-{bits}"));
        IndexBuilder::new(bits, &codes)
            .ids(&ids)
            .build(&path)
            .unwrap();
        let index = Index::open(&path).unwrap();
        assert_eq!(index.codes(), &codes[..]);
        assert_eq!(
            (index.len(), index.bits(), index.words_per_code()),
            (n, bits, w)
        );
        let queries = random_codes(&mut r, 9, bits, 2);
        for threads in [1, 4] {
            for k in [1, 10, 499, 500, 10_000] {
                let hits = pool(threads)
                    .install(|| index.search_flat(&queries, k, &SearchParams::default()))
                    .unwrap();
                for (qi, h) in hits.iter().enumerate() {
                    let want = brute(&codes, bits, &queries[qi * w..(qi + 1) * w], k);
                    assert_eq!(h.len(), k.min(n));
                    assert_eq!(h.distances, want.iter().map(|x| x.0).collect::<Vec<_>>());
                    assert_eq!(h.rows, want.iter().map(|x| x.1).collect::<Vec<_>>());
                    assert_eq!(
                        h.ids,
                        want.iter().map(|x| ids[x.1 as usize]).collect::<Vec<_>>()
                    );
                }
            }
            let maxd = (bits / 3) as u32;
            let p = SearchParams::default().with_max_distance(Some(maxd));
            let hits = pool(threads)
                .install(|| index.search_flat(&queries, 50, &p))
                .unwrap();
            for (qi, h) in hits.iter().enumerate() {
                let want: Vec<(u32, u64)> = brute(&codes, bits, &queries[qi * w..(qi + 1) * w], 50)
                    .into_iter()
                    .filter(|x| x.0 <= maxd)
                    .collect();
                assert_eq!(h.rows, want.iter().map(|x| x.1).collect::<Vec<_>>());
            }
        }
    }
}

/// Searches `batch` (Hamming, k = 10, two threads), asserts the hits equal the brute-force
/// reference, and returns the kernel `--stats` names.
fn search_equals_brute(
    searcher: &dyn Searcher,
    codes: &[u64],
    bits: usize,
    batch: &[u64],
    params: &SearchParams,
) -> &'static str {
    let w = words(bits);
    let (hits, stats) = pool(2)
        .install(|| searcher.search(batch, 10, &Score::Hamming, params))
        .unwrap();
    for (qi, h) in hits.iter().enumerate() {
        let want = brute(codes, bits, &batch[qi * w..(qi + 1) * w], 10);
        let got: Vec<(u32, u64)> = h.distances.iter().copied().zip(h.rows.clone()).collect();
        assert_eq!(got, want, "{bits} bits, query {qi}");
    }
    stats.kernel
}

/// On AVX2 an index builds its slabs at the first batch large enough to repay them (64 queries)
/// and keeps them for smaller batches (from 8): `--stats` names the kernel, results stay exact.
#[test]
fn index_keeps_its_slabs_for_later_batches() {
    if !KernelFamily::Avx2.is_supported() {
        return; // no AVX2 here: nothing runs the slab scan
    }
    let dir = tempfile::tempdir().unwrap();
    for bits in [100usize, 256] {
        let mut r = rng(bits as u64);
        let n = 3000; // eleven slabs, the last one partial
        let w = words(bits);
        let codes = random_codes(&mut r, n, bits, 1);
        let path = dir.path().join(format!("idx-{bits}"));
        IndexBuilder::new(bits, &codes).build(&path).unwrap();
        let index = Index::open(&path).unwrap();
        let searcher = index.searcher(&Mode::Flat(Default::default())).unwrap();
        let params = SearchParams::default().with_kernel(Some(KernelFamily::Avx2));
        let queries = random_codes(&mut r, 64, bits, 1);
        for (nq, kernel) in [
            (8, "avx2-w"),
            (64, "avx2-slabs"),
            (8, "avx2-slabs"),
            (7, "avx2-w"),
        ] {
            let used = search_equals_brute(&*searcher, &codes, bits, &queries[..nq * w], &params);
            assert!(
                used.starts_with(kernel),
                "{bits} bits, {nq} queries: {used}"
            );
        }
    }
}

/// With AVX-512 a batch on codes wider than 256 bits, sparse or dense, runs on slabs: built
/// from 256 queries, then used from 8; at 256 bits the row-major scan runs. Exact either way.
#[test]
fn avx512_takes_slabs_for_codes_wider_than_256_bits() {
    if !KernelFamily::Avx512.is_supported() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for bits in [256, 384, 512, 1024] {
        let w = words(bits);
        let mut r = rng(7);
        let n = 1500;
        let codes = random_codes(&mut r, n, bits, 3);
        let path = dir.path().join(format!("idx-{bits}"));
        IndexBuilder::new(bits, &codes).build(&path).unwrap();
        let index = Index::open(&path).unwrap();
        let searcher = index.searcher(&Mode::Flat(Default::default())).unwrap();
        let params = SearchParams::default().with_kernel(Some(KernelFamily::Avx512));
        // About one bit in sixteen set, then half of them.
        let sparse = random_codes(&mut r, 256, bits, 3);
        let dense = random_codes(&mut r, 256, bits, 0);
        let (row_major, slabs) = ("avx512-w", "avx512-slabs");
        let wide = |k: &'static str| if bits > 256 { k } else { row_major };
        for (queries, nq, kernel) in [
            (&dense, 8, row_major), // too few to build the slabs
            (&sparse, 255, row_major),
            (&dense, 256, wide(slabs)), // builds them
            (&sparse, 8, wide(slabs)),  // kept: from 8 queries
            (&dense, 7, row_major),
        ] {
            let used = search_equals_brute(&*searcher, &codes, bits, &queries[..nq * w], &params);
            assert!(
                used.starts_with(kernel),
                "{bits} bits, {nq} queries: {used}"
            );
        }
    }
}

#[test]
fn query_shape_errors() {
    let dir = tempfile::tempdir().unwrap();
    let codes = vec![1u64, 2, 3, 4, 5, 6];
    let path = dir.path().join("i");
    IndexBuilder::new(128, &codes).build(&path).unwrap();
    let index = Index::open(&path).unwrap();
    let p = SearchParams::default();
    assert!(matches!(
        index.search_flat(&[1, 2, 3], 1, &p),
        Err(bsa_index::Error::DimMismatch { .. })
    ));
    // 100-bit codes in a 128-bit index are fine size-wise; bits above 128 cannot exist, but a
    // 100-bit index rejects queries with bits at or above 100 set.
    let codes100 = vec![1u64, 0, 3, 0];
    let p100 = dir.path().join("j");
    IndexBuilder::new(100, &codes100).build(&p100).unwrap();
    let i100 = Index::open(&p100).unwrap();
    assert!(matches!(
        i100.search_flat(&[0, 1 << 40], 1, &p),
        Err(bsa_index::Error::InvalidArgument(_))
    ));
    assert_eq!(index.search_flat(&[], 1, &p).unwrap().len(), 0);
    let h = index.search_flat(&[1, 2], 0, &p).unwrap();
    assert_eq!(h.len(), 1);
    assert!(h[0].is_empty());
}

#[test]
fn concurrent_searches_equal_single_thread() {
    let dir = tempfile::tempdir().unwrap();
    let bits = 256;
    let mut r = rng(5);
    let codes = random_codes(&mut r, 20_000, bits, 1);
    let path = dir.path().join("c");
    IndexBuilder::new(bits, &codes).build(&path).unwrap();
    let index = Index::open(&path).unwrap();
    let queries = random_codes(&mut r, 40, bits, 1);
    let p = SearchParams::default();
    let want = pool(1)
        .install(|| index.search_flat(&queries, 10, &p))
        .unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let (index, queries, want) = (&index, &queries, &want);
                s.spawn(move || {
                    for rep in 0..5 {
                        // Alternate one query at a time and the whole batch, on the global pool.
                        if (t + rep) % 2 == 0 {
                            assert_eq!(&index.search_flat(queries, 10, &p).unwrap(), want);
                        } else {
                            for (qi, q) in queries.chunks_exact(4).enumerate() {
                                assert_eq!(index.search_flat(q, 10, &p).unwrap()[0], want[qi]);
                            }
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}
