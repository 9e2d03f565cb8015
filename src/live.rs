//! Growing and shrinking an index with its model: `bsa add`, `bsa delete` and `bsa compact` as
//! library calls (the command line and the Python binding both call these).
//!
//! [`bsa_index::live`] writes segments and commits; what it cannot do without the model is
//! done here: encode float rows, compute the norms `adc` divides by, and compute the vectors
//! a graph on float vectors is built on (the decoded codes, or the data).
//!
//! ```no_run
//! use bsa::live::{add, compact, AddSource};
//! use bsa_index::live::{MergePolicy, Writer};
//! # fn main() -> bsa::Result<()> {
//! let x = ndarray::Array2::<f32>::ones((3, 384));
//! let rows = AddSource::Floats(x.view());
//! // The writer holds the index's lock until it is dropped: one writer at a time.
//! let wait = bsa_index::LockWait::new().on_wait(|| eprintln!("waiting for another writer"));
//! let mut w = Writer::open_waiting("idx", wait)?;
//! let report = add(&mut w, rows, Some(&[7, 8, 9]), false, false, MergePolicy::default())?;
//! println!("added {} rows as {}", report.added, report.segment);
//! w.delete(&[7])?;
//! compact(&mut w, 1)?;
//! # Ok(()) }
//! ```

use bsa_index::live::{
    AddReport, CompactReport, GraphVectorsFn, MergePolicy, NewRows, RowTablesFn, Snapshot, Writer,
};
use bsa_index::pack;
use ndarray::ArrayView2;

use crate::error::{Error, Result};
use crate::model::Autoencoder;
use crate::pipeline::{GraphOn, active_bits, encode_rows};
use crate::query::check_rows;

/// The rows to add.
#[derive(Debug, Clone, Copy)]
pub enum AddSource<'a> {
    /// Float rows, encoded with the index's model (and stored, when the index stores vectors).
    Floats(ArrayView2<'a, f32>),
    /// Packed codes (`rows x ceil(bits / 8)` bytes, numpy `packbits(bitorder="little")`), for
    /// an index built from codes.
    Packed {
        /// The bytes, row-major.
        bytes: &'a [u8],
        /// Number of rows.
        rows: usize,
        /// Bytes per row (`ceil(bits / 8)` for the index's codes): the width of an empty batch
        /// is checked too.
        cols: usize,
    },
}

impl AddSource<'_> {
    /// Number of rows.
    ///
    /// ```
    /// use bsa::live::AddSource;
    /// assert_eq!(AddSource::Packed { bytes: &[1, 2, 3, 4], rows: 2, cols: 2 }.rows(), 2);
    /// ```
    pub fn rows(&self) -> usize {
        match self {
            AddSource::Floats(x) => x.nrows(),
            AddSource::Packed { rows, .. } => *rows,
        }
    }
}

/// Checks that `source` fits the index `snap` with its `model` ([`snapshot_model`]), as [`add`]
/// does before it encodes anything: float rows need a model and its input width, packed codes
/// the index's code width and an index that keeps nothing more per row; `vectors_requested` (asked to
/// store the rows' vectors) an index that stores them. An empty batch is checked the same way;
/// [`add`] refuses it (there is nothing to commit), and a caller that treats one as nothing
/// to add, as Python's `Index.add` does, checks it here without taking the writer's lock.
///
/// ```
/// use bsa::live::{check_source, AddSource};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("idx");
/// bsa_index::IndexBuilder::new(16, &[1, 2]).build(&path)?; // 16-bit codes: 2 bytes a row
/// let snap = bsa_index::live::Snapshot::open(&path)?;
/// check_source(&snap, None, AddSource::Packed { bytes: &[], rows: 0, cols: 2 }, false)?;
/// let e = check_source(&snap, None, AddSource::Packed { bytes: &[], rows: 0, cols: 3 }, false);
/// assert!(e.unwrap_err().to_string().contains("16-bit codes"));
/// let floats = ndarray::Array2::<f32>::zeros((0, 8));
/// let e = check_source(&snap, None, AddSource::Floats(floats.view()), false).unwrap_err();
/// assert!(e.to_string().contains("no model"));
/// # Ok::<(), bsa::Error>(())
/// ```
pub fn check_source(
    snap: &Snapshot,
    model: Option<&Autoencoder>,
    source: AddSource<'_>,
    vectors_requested: bool,
) -> Result<()> {
    let (bits, t, on) = (snap.bits(), snap.template(), graph_on(snap));
    let d = snap.dir().display();
    if vectors_requested && t.vectors.is_none() {
        return Err(Error::InvalidArgument(format!(
            "{d}: the index stores no vectors (it was built without them); add the rows \
             without vectors"
        )));
    }
    match source {
        AddSource::Floats(x) => {
            let m = model.ok_or_else(|| no_model_for_floats(snap.dir()))?;
            if x.ncols() != m.config.dim {
                return Err(Error::model_dim("the new rows", m.config.dim, x.ncols()));
            }
            check_rows("new rows", x, t.vectors.is_some())
        }
        AddSource::Packed { bytes, rows, cols } => {
            if t.vectors.is_some()
                || t.norms
                || matches!(on, Some(GraphOn::Decoded | GraphOn::Data))
            {
                return Err(Error::InvalidArgument(format!(
                    "{d}: the index holds vectors, norms or a graph on float vectors for every \
                     row: add float rows (encoded with its model)"
                )));
            }
            let want = pack::bytes_per_code(bits);
            if cols != want {
                return Err(Error::DimMismatch {
                    what: format!("bytes per new code (the index holds {bits}-bit codes)"),
                    expected: want,
                    got: cols,
                });
            }
            if rows.checked_mul(cols) != Some(bytes.len()) {
                return Err(Error::InvalidArgument(format!(
                    "{} bytes are not {rows} rows of {cols} bytes",
                    bytes.len()
                )));
            }
            Ok(())
        }
    }
}

/// The model stored in the index directory (shared by its segments), if any, its checksum
/// verified.
pub fn snapshot_model(snap: &Snapshot) -> Result<Option<Autoencoder>> {
    snap.verify_model()?;
    crate::query::index_model(snap)
}

/// What the index's graph is built on, if it has one.
fn graph_on(snap: &Snapshot) -> Option<GraphOn> {
    GraphOn::of_index(snap.extra(), snap.graph_metric())
}

/// The error of float rows given to an index without a model (built from codes).
pub fn no_model_for_floats(dir: &std::path::Path) -> Error {
    Error::InvalidArgument(format!(
        "{}: the index has no model to encode float rows (it was built from codes): add packed \
         codes",
        dir.display()
    ))
}

/// Adds rows to the index `writer` changes as a new segment: encodes float rows with the index's
/// model and computes what the index holds for every row (norms, stored vectors, graph
/// vectors). `ids` default to the ones after the largest id so far; ids already live are an
/// error unless `upsert`, which replaces their rows in the same commit.
///
/// `vectors_requested`: the caller asks for the rows' vectors to be stored (`bsa add
/// --vectors`), which the index must do already (they are stored whenever it does, asked or
/// not).
///
/// `merge`: the segments `merge` finds in a full size tier are merged in the same commit
/// ([`Writer::add_merging`]; `MergePolicy::NEVER` keeps every add a segment of its own).
///
/// In the same commit, for an index with a graph on float vectors, the segments other than the
/// largest are bridged from its graph ([`Writer::add_bridging`]: a graph search then walks one
/// graph for all of them), ranked by the rows' ADC tables.
pub fn add(
    writer: &mut Writer,
    source: AddSource<'_>,
    ids: Option<&[u64]>,
    upsert: bool,
    vectors_requested: bool,
    merge: MergePolicy,
) -> Result<AddReport> {
    let snap = writer.snapshot()?;
    let (bits, t, on) = (snap.bits(), snap.template().clone(), graph_on(snap));
    let model = snapshot_model(snap)?;
    check_source(snap, model.as_ref(), source, vectors_requested)?;
    let (floats, codes, norms, graph_vectors) = match source {
        AddSource::Floats(x) => {
            let m = model.as_ref().expect("checked: floats need a model");
            // Borrowed when the rows are in C order already (a memory-mapped .npy's are).
            let x = if x.is_standard_layout() {
                ndarray::CowArray::from(x)
            } else {
                ndarray::CowArray::from(x.as_standard_layout().into_owned())
            };
            // As `bsa build` encodes, chunk by chunk.
            let decoded = on == Some(GraphOn::Decoded);
            let mut gv = Vec::new();
            let (codes, norms) = encode_rows(m, x.view(), writer.stop_flag(), &mut |xhat| {
                if decoded {
                    gv.extend(xhat.iter().copied());
                }
                Ok(())
            })?;
            (
                Some(x),
                codes,
                t.norms.then_some(norms),
                decoded.then_some(gv),
            )
        }
        AddSource::Packed { bytes, rows, cols } => (
            None,
            pack::pack_le_bytes(bytes, rows, cols, bits)?,
            None,
            None,
        ),
    };
    let n = NewRows::codes(&codes).len(bits);
    let ids = match ids {
        Some(ids) => {
            crate::pipeline::check_ids_fit_int64("ids", ids)?;
            std::borrow::Cow::Borrowed(ids)
        }
        None => {
            let ids = writer.default_ids(n)?;
            if let Some(&last) = ids.last().filter(|&&l| l > i64::MAX as u64) {
                let what = match n {
                    1 => format!("the new row's default id would be {last}"),
                    _ => format!(
                        "the {n} new rows' default ids would run from {} to {last}",
                        ids[0]
                    ),
                };
                return Err(Error::InvalidArgument(format!(
                    "{what}, past int64's largest (bsa returns ids as int64); give their ids"
                )));
            }
            std::borrow::Cow::Owned(ids)
        }
    };
    let mut rows = NewRows::codes(&codes).ids(&ids);
    if let (Some(x), Some(_)) = (&floats, t.vectors) {
        rows = rows.vectors(x.as_slice().expect("standard layout"));
    }
    if let Some(nm) = &norms {
        rows = rows.norms(nm);
    }
    match (&graph_vectors, &floats, on) {
        (Some(gv), _, _) => rows = rows.graph_vectors(gv),
        // A graph on the data: the rows themselves.
        (None, Some(x), Some(GraphOn::Data)) => {
            rows = rows.graph_vectors(x.as_slice().expect("standard layout"));
        }
        _ => {}
    }
    // A graph on data the index does not store cannot be rebuilt for a merged segment (nor
    // by `bsa compact`): such an index keeps every add a segment of its own.
    let merge = match on {
        Some(GraphOn::Data) if t.vectors.is_none() => MergePolicy::NEVER,
        _ => merge,
    };
    let merged = merge_vectors(on, model.as_ref(), bits);
    let needs = matches!(on, Some(GraphOn::Decoded | GraphOn::Data));
    let stored = t.vectors.is_some();
    let tables = bridge_tables(on, model.as_ref(), stored);
    let report = match &tables {
        Some(tables) => writer.add_bridging(&rows, upsert, merge, &merged, &**tables)?,
        None => writer.add_merging(
            &rows,
            upsert,
            merge,
            needs.then_some(&merged as &GraphVectorsFn<'_>),
        )?,
    };
    Ok(report)
}

/// The tables a bridge ranks a graph's nodes by ([`Writer::bridge`]: the rows' ADC tables),
/// for a graph on float vectors that can be computed again (the decoded codes with the model,
/// or stored data); `None` for other indexes.
fn bridge_tables(
    on: Option<GraphOn>,
    model: Option<&Autoencoder>,
    stored: bool,
) -> Option<Box<RowTablesFn<'_>>> {
    let recomputable = on == Some(GraphOn::Decoded) || (on == Some(GraphOn::Data) && stored);
    let m = model.filter(|_| recomputable)?;
    let dim = m.config.dim;
    Some(Box::new(move |v: &[f32], n: usize| {
        let q = ArrayView2::from_shape((n, dim), v).map_err(|e| {
            bsa_index::Error::InvalidArgument(format!("graph vectors are not {n} x {dim}: {e}"))
        })?;
        m.params.weights().adc_tables(q)
    }))
}

/// What a merged segment's graph is built on, from its rows' codes and stored vectors: the
/// decoded codes (with `model`), or the stored data.
fn merge_vectors<'a>(
    on: Option<GraphOn>,
    model: Option<&'a Autoencoder>,
    bits: usize,
) -> impl Fn(&[u64], Option<&[f32]>) -> bsa_index::Result<Vec<f32>> + 'a {
    move |codes: &[u64], stored: Option<&[f32]>| match (on, model, stored) {
        (Some(GraphOn::Data), _, Some(v)) => Ok(v.to_vec()),
        (Some(GraphOn::Decoded), Some(m), _) => Ok(m
            .params
            .decode_sparse(&active_bits(codes, bits))
            .into_raw_vec_and_offset()
            .0),
        _ => Err(bsa_index::Error::InvalidArgument(
            "the graph is built on decoded codes but the index has no model to decode \
             them; rebuild the index with `bsa build`"
                .into(),
        )),
    }
}

/// Compacts the index `writer` changes to at most `max_segments` segments without deleted rows,
/// rebuilding the graphs of merged segments (on the decoded codes with the index's model, or
/// on the stored vectors for a graph on the data), and bridges the segments left other than
/// the largest from its graph in the same commit, as [`add`] does.
pub fn compact(writer: &mut Writer, max_segments: usize) -> Result<CompactReport> {
    let dir = writer.dir().to_path_buf();
    let snap = writer.snapshot()?;
    let (bits, on, stored) = (snap.bits(), graph_on(snap), snap.has_vectors());
    let model = snapshot_model(snap)?;
    if on == Some(GraphOn::Data) && !stored {
        return Err(Error::InvalidArgument(format!(
            "{}: the graph is built on the data, which the index does not store: compacting \
             cannot rebuild it; rebuild the index with `bsa build`",
            dir.display()
        )));
    }
    let vectors = merge_vectors(on, model.as_ref(), bits);
    let needs = matches!(on, Some(GraphOn::Decoded | GraphOn::Data));
    let tables = bridge_tables(on, model.as_ref(), stored);
    let report = match &tables {
        Some(tables) => writer.compact_bridging(max_segments, &vectors, &**tables)?,
        None => writer.compact(
            max_segments,
            needs.then_some(&vectors as &GraphVectorsFn<'_>),
        )?,
    };
    Ok(report)
}
