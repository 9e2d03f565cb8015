//! Shared fixtures for the integration tests: seeded codes and a brute-force reference.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

pub fn rng(seed: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed)
}

pub fn words(bits: usize) -> usize {
    bits.div_ceil(64)
}

/// Clears the bits at or above `bits` in every row.
pub fn mask_rows(codes: &mut [u64], bits: usize) {
    let w = words(bits);
    if !bits.is_multiple_of(64) {
        let mask = (1u64 << (bits % 64)) - 1;
        for row in codes.chunks_exact_mut(w) {
            row[w - 1] &= mask;
        }
    }
}

/// `n` random codes; `density` in 0..=3 makes bits sparser (more ties).
pub fn random_codes(rng: &mut Xoshiro256PlusPlus, n: usize, bits: usize, density: u32) -> Vec<u64> {
    let mut c: Vec<u64> = (0..n * words(bits))
        .map(|_| {
            let mut x: u64 = rng.random();
            for _ in 0..density {
                x &= rng.random::<u64>();
            }
            x
        })
        .collect();
    mask_rows(&mut c, bits);
    c
}

/// `n` codes around `centers` centres, each bit flipped with probability `noise`.
pub fn clustered_codes(
    rng: &mut Xoshiro256PlusPlus,
    n: usize,
    bits: usize,
    centers: usize,
    noise: f64,
) -> Vec<u64> {
    let w = words(bits);
    let cs = random_codes(rng, centers, bits, 0);
    let mut out = Vec::with_capacity(n * w);
    for _ in 0..n {
        let c = rng.random_range(0..centers);
        for j in 0..w {
            let mut x = cs[c * w + j];
            for b in 0..64 {
                if rng.random_bool(noise) {
                    x ^= 1 << b;
                }
            }
            out.push(x);
        }
    }
    mask_rows(&mut out, bits);
    out
}

pub fn hamming(a: &[u64], b: &[u64]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// Brute force: all (distance, row) sorted, first k.
pub fn brute(codes: &[u64], bits: usize, q: &[u64], k: usize) -> Vec<(u32, u64)> {
    let w = words(bits);
    let mut all: Vec<(u32, u64)> = codes
        .chunks_exact(w)
        .enumerate()
        .map(|(r, c)| (hamming(q, c), r as u64))
        .collect();
    all.sort();
    all.truncate(k);
    all
}

pub fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// Writes `bytes` as `file` of the single-segment index at `dir` and records their length and
/// CRC in its manifest (resealed): a file every checksum vouches for, as a writer's bug (or a
/// file copied in with its manifest entry) would leave it.
pub fn replace_listed_file(dir: &std::path::Path, file: &str, bytes: &[u8]) {
    std::fs::write(dir.join(file), bytes).unwrap();
    let mpath = dir.join("manifest.json");
    let mut m = bsa_index::Manifest::from_bytes(&std::fs::read(&mpath).unwrap(), &mpath).unwrap();
    let info = m.files.get_mut(file).unwrap();
    (info.len, info.crc32) = (bytes.len() as u64, crc32fast::hash(bytes));
    std::fs::write(&mpath, m.to_bytes().unwrap()).unwrap();
}

/// The graph search of `index` with candidate list `ef`: the `k` best of `qcodes`' queries by
/// `score` (default search parameters), for comparing against the flat scan.
pub fn graph_search(
    index: &bsa_index::Index,
    qcodes: &[u64],
    k: usize,
    score: &bsa_index::Score<'_>,
    ef: usize,
) -> Vec<bsa_index::Hits> {
    let params = bsa_index::search::GraphParams::default().with_ef_search(Some(ef));
    index
        .searcher(&bsa_index::Mode::Hnsw(params))
        .unwrap()
        .search(qcodes, k, score, &bsa_index::SearchParams::default())
        .unwrap()
        .0
}
