//! [`Snapshot`]: the segments of an index as one generation of its manifest listed them,
//! searched as one index.
//!
//! The files, each building only on those listed before it:
//!
//! * `options`: what restricts a search ([`IdFilter`], [`SearchOptions`]) and the measured
//!   constants that choose how a filtered or small segment is searched.
//! * `segment`: [`SegmentReader`], one segment and its deleted rows, and the bridges read from
//!   its files.
//! * `open`: the [`Snapshot`] type, and how a generation is opened from its root manifest.
//! * `verify`: the checks of an open snapshot, and its errors said as superseded when a writer
//!   removed or replaced a file since it was opened.
//! * `accessors`: what an open snapshot holds, and the lookups from global rows and ids.
//! * `model`: the index's model file, the float-query model read from it, and its fit.
//! * `merge`: the cutoffs each segment passes to the next, and the merge of their hits.
//! * `search`: [`Snapshot::search`]: the order of the segments, the filter strategies, the
//!   bridged graph walk and the exact scan of allowed rows.
//! * `rescore`: re-ranking a search's hits by the stored float vectors.
//!
//! The files other than `options` and `segment` each add an `impl Snapshot` block; the fields
//! of [`Snapshot`] and [`SegmentReader`] that they share are `pub(super)`, visible in this
//! module only, as they were when it was one file.

mod accessors;
mod merge;
mod model;
mod open;
mod options;
mod rescore;
mod search;
mod segment;
mod verify;

pub use open::Snapshot;
pub use options::{
    GRAPH_SCAN_ROWS_PER_EF, IdFilter, OVERFETCH_MAX, SUBSET_SCAN_FRACTION, SearchOptions,
};
pub use segment::SegmentReader;
