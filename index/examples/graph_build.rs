//! Time of the native graph build on float vectors (`IndexBuilder::graph_on`), for comparison
//! with FAISS's `IndexHNSWFlat` on the same vectors, M and ef_construction (`benches/adc_frontier.py`
//! and issue 14): `graph_build X.npy M EF_CONSTRUCTION [THREADS]` prints the seconds of the
//! graph alone (the index around it holds one-word dummy codes).

use std::time::Instant;

use bsa_index::{HnswParams, IndexBuilder};

#[path = "common/npy.rs"]
mod npy;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: graph_build X.npy M EF_CONSTRUCTION [THREADS]");
        std::process::exit(2);
    }
    let (n, dim, data) = npy::read_2d::<f32>(&args[1]);
    let m: usize = args[2].parse().expect("M");
    let efc: usize = args[3].parse().expect("EF_CONSTRUCTION");
    let threads: usize = args.get(4).map_or(2, |t| t.parse().expect("THREADS"));
    let codes = vec![0u64; n];
    let dir = tempfile::tempdir().expect("temporary directory");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    let started = Instant::now();
    pool.install(|| {
        IndexBuilder::new(64, &codes)
            .hnsw(HnswParams {
                max_connections: m,
                ef_construction: efc,
                ef_search: 64,
            })
            .graph_on(&data, dim)
            .build(dir.path().join("idx"))
            .expect("build")
    });
    println!(
        "bsa native graph n={n} dim={dim} M={m} efC={efc} threads={threads}: {:.2} s",
        started.elapsed().as_secs_f64()
    );
}
