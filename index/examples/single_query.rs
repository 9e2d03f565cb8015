//! One query per call on an index directory: per-query latency with a rayon pool of T threads.
//!
//! The counterpart of calling FAISS `index.search` on one row at a time (used by
//! `benches/faiss_compare.py`). Each repetition times every query separately and reports the
//! median; the output is one JSON line with the median over repetitions.
//!
//! `cargo run --release -p bsa-index --example single_query -- INDEX QUERY_CODES.npy [threads] [queries] [reps] [split] [k]`
//!
//! `QUERY_CODES.npy` is uint8 nq x ceil(bits/8) (numpy `packbits(bitorder="little")`);
//! `split` is `auto` (default: one query is split across the threads), `queries` (FAISS's way:
//! one query on one thread) or `codes`.

use std::time::Instant;

use bsa_index::{Index, OpenOptions, SearchParams, Split, pack};

#[path = "common/npy.rs"]
mod npy;

/// Selected lines of /proc/self/status (kB), for the memory section of the benchmark.
fn proc_status() -> serde_json::Value {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mut m = serde_json::Map::new();
    for line in s.lines() {
        for key in ["VmHWM", "VmRSS", "RssAnon", "RssFile"] {
            if let Some(rest) = line.strip_prefix(&format!("{key}:")) {
                let kb: u64 = rest
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .unwrap_or(0);
                m.insert(format!("{key}_kb"), kb.into());
            }
        }
    }
    m.into()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().expect("INDEX directory");
    let qpath = args.get(1).expect("QUERY_CODES.npy");
    let threads: usize = args.get(2).map_or(1, |s| s.parse().unwrap());
    let nq_arg: usize = args.get(3).map_or(200, |s| s.parse().unwrap());
    let reps: usize = args.get(4).map_or(3, |s| s.parse().unwrap());
    let split = match args.get(5).map_or("auto", String::as_str) {
        "auto" => Split::Auto,
        "queries" => Split::Queries,
        "codes" => Split::Codes,
        s => panic!("unknown split {s}"),
    };
    let k: usize = args.get(6).map_or(10, |s| s.parse().unwrap());

    let index = Index::open_with(dir, OpenOptions::verify_checksums(true)).expect("open index");
    let bits = index.bits();
    let w = index.words_per_code();
    let (nq, cols, bytes) = npy::read_u8(qpath);
    assert_eq!(
        cols,
        bits.div_ceil(8),
        "query bytes do not match the index's {bits}-bit codes"
    );
    let queries = pack::pack_le_bytes(&bytes, nq, cols, bits).expect("pack queries");
    let nq = nq.min(nq_arg);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let params = SearchParams::default().with_split(split);
    let mut medians = Vec::new();
    let mut means = Vec::new();
    let mut first_distances = Vec::new();
    pool.install(|| {
        // Warm-up: fault the mapped pages in and start the pool's threads.
        for qi in 0..nq.min(5) {
            let _ = index
                .search_flat(&queries[qi * w..(qi + 1) * w], k, &params)
                .unwrap();
        }
        for rep in 0..reps {
            let mut lat = Vec::with_capacity(nq);
            for qi in 0..nq {
                let t = Instant::now();
                let hits = index
                    .search_flat(&queries[qi * w..(qi + 1) * w], k, &params)
                    .unwrap();
                lat.push(t.elapsed().as_secs_f64());
                if rep == 0 {
                    first_distances.push(hits[0].distances.clone());
                }
            }
            means.push(lat.iter().sum::<f64>() / nq as f64);
            lat.sort_by(f64::total_cmp);
            medians.push(lat[nq / 2]);
        }
    });
    let median_of = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let med = median_of(&mut medians.clone());
    println!(
        "{}",
        serde_json::json!({
            "index": dir,
            "n": index.len(),
            "bits": bits,
            "threads": threads,
            "queries": nq,
            "reps": reps,
            "split": format!("{split:?}"),
            "kernel": index.kernel_name(&bsa_index::SearchParams::default()).unwrap(),
            "median_ms": 1e3 * med,
            "rep_median_ms": medians.iter().map(|s| 1e3 * s).collect::<Vec<_>>(),
            "mean_ms": 1e3 * median_of(&mut means),
            "distances": first_distances,
            "proc": proc_status(),
        })
    );
}
