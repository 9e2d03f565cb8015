//! A query server's float queries with bsa-index alone (no BLAS, no trainer): the index's model
//! encodes them and makes their ADC tables, the codes are scanned, and the candidates are
//! re-ranked against the stored vectors: the ids and scores `bsa search --score adc --rescore 4`
//! prints for the same queries (`--score hamming` when the index has no norms for ADC).
//!
//! ```sh
//! bsa build --model m.safetensors --data base.npy --vectors f32 --out idx
//! cargo run --release -p bsa-index --example float_queries -- idx queries.npy [k]
//! ```

#[path = "common/npy.rs"]
mod npy;

use std::time::Instant;

use bsa_index::live::{SearchOptions, Snapshot};
use bsa_index::model::per_unit_query;
use bsa_index::{pack, Mode, Score};

fn main() -> bsa_index::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(queries)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: float_queries INDEX_DIR QUERIES.npy [k]");
        std::process::exit(2);
    };
    let k: usize = args
        .get(3)
        .map_or(10, |s| s.parse().expect("k is a number"));
    let snap = Snapshot::open(dir)?;
    let Some(model) = snap.query_model()? else {
        eprintln!("{dir}: the index has no model; build it with --model to search float queries");
        std::process::exit(2);
    };
    let (rows, cols, values) = npy::read_2d::<f32>(queries);
    let q = ndarray::Array2::from_shape_vec((rows, cols), values).expect("rows x cols values");

    let started = Instant::now();
    let codes = pack::pack_set_bits(&model.encode(q.view())?, snap.bits())?;
    let adc = snap.has_norms();
    let rescore = snap.has_vectors();
    let w = model.weights();
    let (tables, offsets) = match (adc, rescore) {
        // Candidates to re-rank are picked by the integer tables, as `bsa search` does.
        (true, true) => per_unit_query(w.adc_candidate_tables(q.view()), q.view()),
        (true, false) => per_unit_query(w.adc_tables(q.view()), q.view()),
        (false, _) => (Vec::new(), Vec::new()),
    };
    let score = if adc {
        Score::Table {
            tables: &tables,
            offsets: &offsets,
            normalise: true,
        }
    } else {
        Score::Hamming
    };
    let fetch = if rescore { 4 * k } else { k };
    let flat = Mode::parse("flat")?;
    let (mut hits, _) = snap.search(&codes, fetch, &score, &flat, &SearchOptions::default())?;
    if rescore {
        hits = snap.rescore_batch(q.as_slice().expect("standard layout"), &hits, k)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{rows} queries by {}{} in {seconds:.3} s ({:.0} queries/s)",
        if adc { "adc" } else { "hamming" },
        if rescore { ", rescored x4" } else { "" },
        rows as f64 / seconds
    );
    for (i, h) in hits.iter().take(3).enumerate() {
        println!("query {i}: ids {:?} scores {:?}", h.ids, h.scores);
    }
    Ok(())
}
