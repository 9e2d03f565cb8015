//! HNSW search on an index directory for a list of `ef` values: QPS of the search alone (the
//! graph is loaded before timing), tie-aware recall@k against the exact search, and the returned
//! ids, one JSON line per `ef`. The search is the native one on `graph.bin` (or on the hnsw_rs
//! dump converted at load, for indexes without it).
//!
//! Used by `benches/faiss_compare.py` (which computes recall@10 from the ids itself as well).
//!
//! `cargo run --release -p bsa-index --example hnsw_sweep -- INDEX QUERY_CODES.npy [threads] [ef,ef,...] [reps] [k]`

use std::time::Instant;

use bsa_index::{Index, OpenOptions, SearchParams, pack};

#[path = "common/npy.rs"]
mod npy;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().expect("INDEX directory");
    let qpath = args.get(1).expect("QUERY_CODES.npy");
    let threads: usize = args.get(2).map_or(2, |s| s.parse().unwrap());
    let efs: Vec<usize> = args
        .get(3)
        .map_or("16,32,64,128,256,512", String::as_str)
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let reps: usize = args.get(4).map_or(3, |s| s.parse().unwrap());
    let k: usize = args.get(5).map_or(10, |s| s.parse().unwrap());

    let index = Index::open_with(dir, OpenOptions::verify_checksums(true)).expect("open index");
    let bits = index.bits();
    let (nq, cols, bytes) = npy::read_u8(qpath);
    assert_eq!(
        cols,
        bits.div_ceil(8),
        "query bytes do not match the index's {bits}-bit codes"
    );
    let queries = pack::pack_le_bytes(&bytes, nq, cols, bits).expect("pack queries");
    let t = Instant::now();
    index.load_hnsw().expect("load graph");
    let load_seconds = t.elapsed().as_secs_f64();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let exact = pool
        .install(|| index.search_flat(&queries, k, &SearchParams::default()))
        .expect("exact search");
    // Tie-aware: a returned row is correct if its distance is <= the exact k-th distance.
    let recall = |hits: &[bsa_index::Hits]| {
        let mut good = 0usize;
        for (e, h) in exact.iter().zip(hits) {
            let kth = e.distances.last().copied().unwrap_or(0);
            good += h
                .distances
                .iter()
                .filter(|&&d| d <= kth)
                .count()
                .min(e.len());
        }
        good as f64 / exact.iter().map(|e| e.len()).sum::<usize>().max(1) as f64
    };
    pool.install(|| {
        for &ef in &efs {
            let p = SearchParams::default().with_ef_search(Some(ef));
            let mut secs = Vec::new();
            let mut ids = Vec::new();
            let mut rec = 0.0;
            for _ in 0..reps {
                let t = Instant::now();
                let hits = index.search_hnsw(&queries, k, &p).unwrap();
                secs.push(t.elapsed().as_secs_f64());
                rec = recall(&hits);
                ids = hits.into_iter().map(|h| h.ids).collect::<Vec<_>>();
            }
            secs.sort_by(f64::total_cmp);
            let s = secs[secs.len() / 2];
            println!(
                "{}",
                serde_json::json!({
                    "ef": ef,
                    "threads": threads,
                    "queries": nq,
                    "load_seconds": load_seconds,
                    "search_seconds": s,
                    "qps": nq as f64 / s,
                    "recall": rec,
                    "ids": ids,
                })
            );
        }
    });
}
