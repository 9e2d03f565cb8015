//! `bsa search` as a library call with bsa's models: the search crate's [`bsa_index::query`]
//! (float queries or packed query codes in, the hits `bsa search` prints out), given an
//! [`Autoencoder`] and returning this crate's [`Error`](crate::Error). The command line
//! searches through here; the Python binding and a query server without BLAS call
//! [`bsa_index::query`] itself (with `bsa::model::FrozenModel::view`, or the model
//! [`Snapshot::query_model`] reads), and get the same bytes.
//!
//! ```no_run
//! use bsa::query::{search, Queries, Request};
//! # fn main() -> bsa::Result<()> {
//! let index = bsa_index::live::Snapshot::open("idx")?; // every segment of the index
//! let model = bsa::query::index_model(&index)?; // the model copied in by `bsa build --model`
//! let queries = ndarray::Array2::<f32>::ones((2, 384));
//! let request = Request::new(10).mode("flat")?.score("adc")?.rescore(Some(4));
//! let found = search(&index, model.as_ref(), Queries::Floats(queries.view()), &request)?;
//! println!("{:?} in {:.3}s", found.hits[0].ids, found.seconds);
//! # Ok(()) }
//! ```

use std::sync::atomic::AtomicBool;

use bsa_index::live::{IdFilter, Snapshot};
use ndarray::ArrayView2;

pub use bsa_index::query::{Found, Queries, Request, ScoreName, overlap_tables};

use crate::error::Result;
use crate::model::Autoencoder;

/// The model copied into `index` by `bsa build --model`, if it has one: the file the
/// snapshot's manifest names, checked against its recorded checksum
/// ([`Snapshot::model_bytes`]; another model put in its place by a rebuild since the open would
/// encode queries the snapshot's codes do not answer), and checked to fit the index
/// ([`Snapshot::check_model`]): it makes codes of the index's width from rows of the stored
/// vectors' and the graph's dimension. (The search crate's [`Snapshot::query_model`] reads the
/// same file for a query server.)
pub fn index_model(index: &Snapshot) -> Result<Option<Autoencoder>> {
    Ok(index_model_and_training(index)?.map(|(model, _)| model))
}

/// [`index_model`] and the training settings recorded in the same file
/// ([`crate::io::model::training_info`]), read from the same checked bytes.
pub fn index_model_and_training(
    index: &Snapshot,
) -> Result<Option<(Autoencoder, serde_json::Value)>> {
    let Some((path, bytes)) = index.model_bytes()? else {
        return Ok(None);
    };
    let model = crate::io::model::from_bytes(&bytes, &path)?;
    index.check_model(&path, model.config.bits, model.config.dim)?;
    let training = crate::io::model::training_info_from_bytes(&bytes, &path)?;
    Ok(Some((model, training)))
}

/// [`bsa_index::query::check_rows`]: every value of `x` finite and, when `nonzero`, every row
/// of a norm cosine can divide by; [`crate::Error::BadRow`] naming `what` otherwise.
///
/// ```
/// use bsa::query::check_rows;
/// let x = ndarray::array![[0.6f32, 0.8], [0.0, 0.0]];
/// let zero = check_rows("x", x.view(), true).unwrap_err();
/// assert!(matches!(zero, bsa::Error::BadRow { row: 1, .. }), "{zero}");
/// ```
pub fn check_rows(what: &str, x: ArrayView2<f32>, nonzero: bool) -> Result<()> {
    Ok(bsa_index::query::check_rows(what, x, nonzero)?)
}

/// Float queries as packed codes of `model` for an index of `bits`-bit codes
/// ([`bsa_index::query::encode_queries`]).
pub fn encode_queries(model: &Autoencoder, q: ArrayView2<f32>, bits: usize) -> Result<Vec<u64>> {
    Ok(bsa_index::query::encode_queries(model.view(), q, bits)?)
}

/// Searches `index` for `queries` as `bsa search` does, and returns what it prints
/// ([`bsa_index::query::search`], whose checks it makes). Float queries are encoded with
/// `model`, which must be the index's model ([`index_model`]).
pub fn search(
    index: &Snapshot,
    model: Option<&Autoencoder>,
    queries: Queries<'_>,
    request: &Request,
) -> Result<Found> {
    search_filtered(index, model, queries, request, None)
}

/// [`search`] restricted by an id filter (`bsa search --allow-ids` / `--deny-ids`): exact
/// modes stay exact, the graph walks past excluded rows (see [`Snapshot::search`]).
pub fn search_filtered(
    index: &Snapshot,
    model: Option<&Autoencoder>,
    queries: Queries<'_>,
    request: &Request,
    filter: Option<IdFilter<'_>>,
) -> Result<Found> {
    search_until(index, model, queries, request, filter, None)
}

/// [`search_filtered`] that returns [`crate::Error::Stopped`] once `stop` is set (e.g. by
/// Ctrl-C), checked between batches of queries ([`bsa_index::query::search_until`]).
pub fn search_until(
    index: &Snapshot,
    model: Option<&Autoencoder>,
    queries: Queries<'_>,
    request: &Request,
    filter: Option<IdFilter<'_>>,
    stop: Option<&AtomicBool>,
) -> Result<Found> {
    let model = model.map(Autoencoder::view);
    Ok(bsa_index::query::search_until(
        index, model, queries, request, filter, stop,
    )?)
}

/// The per-query tables and offsets of a table score ([`bsa_index::query::tables`]) with
/// `model`.
pub fn tables(
    score: ScoreName,
    model: Option<&Autoencoder>,
    floats: Option<ArrayView2<f32>>,
    codes: &[u64],
    bits: usize,
    int_tables: bool,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let model = model.map(Autoencoder::view);
    Ok(bsa_index::query::tables(
        score, model, floats, codes, bits, int_tables,
    )?)
}
