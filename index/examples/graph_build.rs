//! Time of the native graph build on float vectors (`IndexBuilder::graph_on`), for comparison
//! with FAISS's `IndexHNSWFlat` on the same vectors, M and ef_construction (`benches/adc_frontier.py`
//! and issue 14): `graph_build X.npy M EF_CONSTRUCTION [THREADS]` prints the seconds of the
//! graph alone (the index around it holds one-word dummy codes).

use std::time::Instant;

use bsa_index::{HnswParams, IndexBuilder};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: graph_build X.npy M EF_CONSTRUCTION [THREADS]");
        std::process::exit(2);
    }
    let bytes = std::fs::read(&args[1]).expect("reading the .npy file");
    // A float32, C-order, 2-D .npy (version 1 header); the shape is read from the header.
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8_lossy(&bytes[10..10 + header_len]);
    assert!(
        header.contains("'<f4'") && header.contains("False"),
        "need C-order float32: {header}"
    );
    let shape = &header[header.find("'shape': (").expect("shape") + 10..];
    let dims: Vec<usize> = shape[..shape.find(')').expect("shape end")]
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let (n, dim) = (dims[0], dims[1]);
    let data: Vec<f32> = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(data.len(), n * dim);
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
