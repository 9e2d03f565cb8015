//! A query server's float queries with bsa-index alone (no BLAS, no trainer): the index's model
//! encodes them and makes their ADC tables, the codes are scanned, and the candidates are
//! re-ranked against the stored vectors (`bsa_index::query::search`): the ids and scores
//! `bsa search --score adc --rescore 4` prints for the same queries (`--score hamming` when the
//! index has no norms for ADC, no rescoring without stored vectors).
//!
//! ```sh
//! bsa build --model m.safetensors --data base.npy --vectors --out idx
//! cargo run --release -p bsa-index --example float_queries -- idx queries.npy [k]
//! ```

#[path = "common/npy.rs"]
mod npy;

use std::time::Instant;

use bsa_index::live::Snapshot;
use bsa_index::query::{Queries, Request, search};

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
    // A server's request body would be such a buffer too: no ndarray needed to search it.
    let (rows, cols, values) = npy::read_2d::<f32>(queries);

    let started = Instant::now();
    // ADC where the index has the decoded codes' norms, rescored where it stores vectors.
    let (adc, rescore) = (snap.has_norms(), snap.has_vectors());
    let request = Request::new(k)
        .score(if adc { "adc" } else { "hamming" })?
        .rescore(rescore.then_some(4));
    let found = search(
        &snap,
        Some(model.view()),
        Queries::floats(&values, cols)?,
        &request,
    )?;
    let hits = found.hits;
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
