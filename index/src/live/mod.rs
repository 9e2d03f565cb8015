//! A live index: segments that grow by [`Writer::add`], rows removed by [`Writer::delete`],
//! replaced by upserts, merged by [`Writer::compact`] or by a [`MergePolicy`] as adds come in
//! ([`Writer::add_merging`]), and searched as one by a [`Snapshot`], with id filters and range
//! search. A snapshot searches its largest segment first and passes each query's `k`-th best
//! hit to the others as a cutoff ([`Searcher::search_within`](crate::search::Searcher::search_within)),
//! so small segments cost little beyond their rows.
//!
//! In graph mode a snapshot walks one graph: [`Writer::bridge`] links each row of the other
//! segments from the nearest nodes of the largest segment's graph (a bridge file per segment),
//! and the walk scores, at each node it expands, the rows bridged from it. An index grown by ten
//! adds of 1% then answers about as fast as the compacted index at the same recall
//! (`benches/RESULTS-live.md`, 2d), where searching each small segment on its own cost 40%.
//!
//! The layout follows tantivy's: an index directory of immutable segments (each a directory
//! in the single-segment format `bsa build` writes), a deletes file per segment that has
//! deleted rows, and a root `manifest.json` (format v2) that lists them with a generation
//! number. A change writes new files only and commits by replacing the root manifest
//! atomically; readers open the generation they read and never see a half-written state.
//!
//! ```text
//! idx/
//!   manifest.json               format v2: generation, segments, deletes, model, template
//!   LOCK                        held by the one writer
//!   model.safetensors           the model shared by the segments (if any)
//!   seg-000000/                 a single-segment index (manifest.json v1, codes.bin, ...)
//!   seg-000003/
//!   deletes-seg-000000-g4.bin   seg-000000's deleted rows as of generation 4
//!   bridge-seg-000003-from-seg-000000-g5.bin
//!                               edges from seg-000000's graph nodes to seg-000003's rows
//! ```
//!
//! ```
//! use bsa_index::live::{NewRows, Snapshot, Writer};
//! use bsa_index::{IndexBuilder, Mode, Score};
//! # fn main() -> bsa_index::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("idx");
//! IndexBuilder::new(8, &[0b0001, 0b0011]).ids(&[10, 11]).build(&path)?;
//! let before = Snapshot::open(&path)?;
//!
//! let mut w = Writer::open(&path)?;
//! w.add(&NewRows::codes(&[0b0001]).ids(&[12]), false)?; // a new segment
//! w.delete(&[10])?;
//! assert_eq!(w.add(&NewRows::codes(&[0b1111]).ids(&[11]), true)?.replaced, 1); // upsert
//! w.compact(1, None)?; // one segment again, without the deleted rows
//!
//! let after = Snapshot::open(&path)?;
//! let flat = Mode::parse("flat")?;
//! let (hits, _) = after.search(&[0b0001], 3, &Score::Hamming, &flat, &Default::default())?;
//! assert_eq!(hits[0].ids, vec![12, 11]);
//! // A snapshot opened before keeps answering from its generation.
//! let (old, _) = before.search(&[0b0001], 3, &Score::Hamming, &flat, &Default::default())?;
//! assert_eq!(old[0].ids, vec![10, 11]);
//! # Ok(()) }
//! ```

mod copy;
pub(crate) mod meta;
mod snapshot;
mod summary;
mod writer;

pub use crate::lock_note::LockHolder;
pub use meta::{
    BridgeEntry, DeletesEntry, GraphSource, GraphTemplate, LIVE_INCOMPAT_FEATURES, LiveManifest,
    LiveModel, SegmentEntry, Template,
};
pub use snapshot::{
    GRAPH_SCAN_ROWS_PER_EF, IdFilter, OVERFETCH_MAX, SUBSET_SCAN_FRACTION, SearchOptions,
    SegmentReader, Snapshot,
};
pub use summary::{GraphSummary, SegmentSummary, Summary};
pub use writer::{
    AddReport, BRIDGE_EDGES, BRIDGE_EF, BridgeReport, CompactReport, DeleteReport, GraphVectorsFn,
    LOCK_FILE, MergePolicy, NewRows, RowTablesFn, Writer,
};
