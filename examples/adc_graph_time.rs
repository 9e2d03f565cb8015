//! Where a rescored ADC graph search spends its time: the per-query tables (float and integer),
//! the walk and the rescoring, each timed apart, in one process (so the later repetitions run
//! with the index's pages mapped).
//!
//! `cargo run --release --example adc_graph_time -- IDX QUERIES.npy EF REPS`
use std::time::Instant;

use bsa_index::live::{SearchOptions, Snapshot};
use bsa_index::{Mode, OpenOptions, Score};
use rayon::prelude::*;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let idx = &a[1];
    let ef: usize = a[3].parse()?;
    let reps: usize = a[4].parse()?;
    // SAFETY: the program's start: no thread and no BLAS product yet.
    unsafe { bsa::threads::fix_blas_core(bsa::simd::Family::current()) };
    bsa::threads::configure(None)?;
    let index = Snapshot::open_with(idx, OpenOptions::verify_checksums(false))?;
    let model = bsa::io::model::load(index.model_path().unwrap())?;
    let q = bsa::io::Embeddings::open(&a[2])?;
    let nq = q.n();
    let codes = vec![0u64; nq * index.bits().div_ceil(64)];
    let mode = Mode::parse("hnsw")?.with_ef_search(Some(ef));
    let options = SearchOptions::default();
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    for _ in 0..reps {
        let t = Instant::now();
        let (tables, offsets) = model.adc_tables(q.view())?;
        let t_tab = ms(t);
        let t = Instant::now();
        let (int_tables, _) = model.adc_candidate_tables(q.view())?;
        let t_int = ms(t);
        drop(int_tables);
        let score = Score::Table {
            tables: &tables,
            offsets: &offsets,
            normalise: true,
        };
        let t = Instant::now();
        let (hits, _) = index.search(&codes, 40, &score, &mode, &options)?;
        let t_search = ms(t);
        let t = Instant::now();
        let rescored = hits
            .par_iter()
            .enumerate()
            .map(|(i, h)| index.rescore(q.row(i), h, 10))
            .collect::<Result<Vec<_>, _>>()?;
        let t_res = ms(t);
        println!(
            "{nq} queries: tables {t_tab:.1} ms, integer tables {t_int:.1} ms, walk {t_search:.1} ms, \
             rescore {t_res:.1} ms ({} answered)",
            rescored.len()
        );
    }
    Ok(())
}
