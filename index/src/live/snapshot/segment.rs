//! [`SegmentReader`]: one segment of a snapshot (a single-segment index and its deleted rows),
//! the id lookups and filters over its rows, and the bridges read from its files: a bridge
//! file not read at open ([`UnreadBridge`]), and the bridged segments as one graph walk reads
//! them ([`Bridges`]).

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Result;
use crate::index::Index;
use crate::live::meta::read_bridge;
use crate::rowset::RowSet;
use crate::search::graph::BridgeLists;

use super::options::IdFilter;

/// One segment of a [`Snapshot`](super::Snapshot): a single-segment [`Index`] and its deleted rows.
///
/// ```
/// use bsa_index::live::{NewRows, Snapshot, Writer};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// bsa_index::IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?; // ids 0, 1, 2
/// let mut w = Writer::open(&path)?;
/// w.add(&NewRows::codes(&[0b1111]).ids(&[7]), false)?; // a second segment
/// w.delete(&[1])?;
///
/// let snap = Snapshot::open(&path)?;
/// let [first, second] = snap.segments() else { panic!("two segments") };
/// assert_eq!((first.rows(), first.live_rows(), first.base()), (3, 2, 0));
/// assert_eq!((second.rows(), second.live_rows(), second.base()), (1, 1, 3));
/// assert_eq!(first.row_of(1), Some(1));
/// assert!(first.is_deleted(1) && first.live_row_of(1).is_none());
/// assert_eq!(second.index().ids(), &[7]);
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[derive(Debug)]
pub struct SegmentReader {
    pub(super) name: String,
    /// Shared with the snapshots opened after this one by [`Snapshot::reopen`] while they list
    /// the segment: its maps, graph and scan layouts are made once.
    ///
    /// [`Snapshot::reopen`]: super::Snapshot::reopen
    pub(super) index: Arc<Index>,
    deleted: Option<RowSet>,
    /// Global row of this segment's row 0.
    pub(super) base: u64,
    /// Rows in id order, kept only for segments whose rows are not (written before rows were
    /// stored in id order); otherwise ids are found by binary search in `ids.bin`.
    by_id: Option<Vec<u32>>,
    /// The segment its bridge leaves from and the edges (graph node there, row here), or what
    /// reads the bridge file again where it could not be read at open.
    pub(super) bridge: Option<(String, BridgeEdges)>,
}

/// A bridge's edges (graph node there, row here), or what reads its file again.
type BridgeEdges = std::result::Result<Vec<(u32, u32)>, UnreadBridge>;

/// A bridge whose file could not be read when the snapshot was opened (damaged, or gone).
/// Bridges serve only the graph walk, as graphs do: the exact modes answer without them, a graph
/// walk and the checks read it again and fail with its error ([`UnreadBridge::read`]), and a compaction
/// (`bsa compact --no-verify`), which rewrites the bridges of the segments it merges, mends it.
#[derive(Debug)]
pub(super) struct UnreadBridge {
    pub(super) dir: PathBuf,
    pub(super) entry: crate::live::BridgeEntry,
    pub(super) rows: usize,
    pub(super) nodes: usize,
}

impl UnreadBridge {
    /// The file read again: a read that failed for a passing reason (too many open files, say)
    /// may succeed now; damage fails again with its error.
    pub(super) fn read(&self) -> Result<Vec<(u32, u32)>> {
        read_bridge(&self.dir, &self.entry, self.rows, self.nodes)
    }
}

impl SegmentReader {
    /// Whether a file of this segment that is opened quietly (its graph, its bridge) could not
    /// be read at open.
    pub(super) fn missed_a_file(&self) -> bool {
        self.index.graph_unopened() || matches!(&self.bridge, Some((_, Err(_))))
    }

    pub(super) fn new(
        name: String,
        index: Arc<Index>,
        deleted: Option<RowSet>,
        base: u64,
    ) -> SegmentReader {
        let ids = index.ids();
        let by_id = (!ids.windows(2).all(|p| p[0] < p[1])).then(|| {
            let mut order: Vec<u32> = (0..ids.len() as u32).collect();
            order.sort_unstable_by_key(|&r| ids[r as usize]);
            order
        });
        SegmentReader {
            name,
            index,
            deleted,
            base,
            by_id,
            bridge: None,
        }
    }

    /// Whether the rows are in ascending id order (every segment written by this version).
    pub(crate) fn in_id_order(&self) -> bool {
        self.by_id.is_none()
    }

    /// The segment whose graph this segment's bridge leaves from, if it has one (see
    /// [`Writer::bridge`](crate::live::Writer::bridge)).
    ///
    /// ```
    /// # use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # bsa_index::IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?; // ids 0, 1, 2
    /// # let mut w = Writer::open(&path)?;
    /// # w.add(&NewRows::codes(&[0b1111]).ids(&[7]), false)?; // a second segment
    /// # w.delete(&[1])?;
    /// # let snap = Snapshot::open(&path)?;
    /// // `snap`: ids 0, 1, 2 (1 deleted) in one segment, id 7 in a second.
    /// // No bridges unless `Writer::bridge` made them.
    /// assert!(snap.segments().iter().all(|s| s.bridged_from().is_none()));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn bridged_from(&self) -> Option<&str> {
        self.bridge.as_ref().map(|(to, _)| to.as_str())
    }

    /// The segment's directory name (`"."` for a single-segment index).
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// assert_eq!(Snapshot::open(&path)?.segments()[0].name(), "."); // as `bsa build` wrote it
    /// let added = Writer::open(&path)?.add(&NewRows::codes(&[3]), false)?;
    /// let snap = Snapshot::open(&path)?;
    /// assert_eq!(snap.segments()[1].name(), added.segment);
    /// assert!(path.join(snap.segments()[1].name()).is_dir());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The segment as an index.
    ///
    /// ```
    /// # use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # bsa_index::IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?; // ids 0, 1, 2
    /// # let mut w = Writer::open(&path)?;
    /// # w.add(&NewRows::codes(&[0b1111]).ids(&[7]), false)?; // a second segment
    /// # w.delete(&[1])?;
    /// # let snap = Snapshot::open(&path)?;
    /// // `snap`: ids 0, 1, 2 (1 deleted) in one segment, id 7 in a second.
    /// let second = snap.segments()[1].index();
    /// assert_eq!((second.len(), second.ids(), second.codes()), (1, &[7][..], &[0b1111][..]));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn index(&self) -> &Index {
        &self.index
    }
    /// The deleted rows, if any.
    ///
    /// ```
    /// # use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # bsa_index::IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?; // ids 0, 1, 2
    /// # let mut w = Writer::open(&path)?;
    /// # w.add(&NewRows::codes(&[0b1111]).ids(&[7]), false)?; // a second segment
    /// # w.delete(&[1])?;
    /// # let snap = Snapshot::open(&path)?;
    /// // `snap`: ids 0, 1, 2 (1 deleted) in one segment, id 7 in a second.
    /// let deleted = snap.segments()[0].deleted().unwrap();
    /// assert_eq!(deleted.iter().collect::<Vec<_>>(), vec![1]);
    /// assert!(snap.segments()[1].deleted().is_none());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn deleted(&self) -> Option<&RowSet> {
        self.deleted.as_ref()
    }
    /// Rows, deleted ones included.
    ///
    /// ```
    /// # use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # bsa_index::IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?; // ids 0, 1, 2
    /// # let mut w = Writer::open(&path)?;
    /// # w.add(&NewRows::codes(&[0b1111]).ids(&[7]), false)?; // a second segment
    /// # w.delete(&[1])?;
    /// # let snap = Snapshot::open(&path)?;
    /// // `snap`: ids 0, 1, 2 (1 deleted) in one segment, id 7 in a second.
    /// let rows: Vec<usize> = snap.segments().iter().map(|s| s.rows()).collect();
    /// assert_eq!(rows, vec![3, 1]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn rows(&self) -> usize {
        self.index.len()
    }
    /// Rows not deleted.
    ///
    /// ```
    /// # use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # bsa_index::IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?; // ids 0, 1, 2
    /// # let mut w = Writer::open(&path)?;
    /// # w.add(&NewRows::codes(&[0b1111]).ids(&[7]), false)?; // a second segment
    /// # w.delete(&[1])?;
    /// # let snap = Snapshot::open(&path)?;
    /// // `snap`: ids 0, 1, 2 (1 deleted) in one segment, id 7 in a second.
    /// let live: Vec<usize> = snap.segments().iter().map(|s| s.live_rows()).collect();
    /// assert_eq!(live, vec![2, 1]); // row 1 of the first segment is deleted
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn live_rows(&self) -> usize {
        self.rows() - self.deleted.as_ref().map_or(0, RowSet::count)
    }
    /// The global row (in [`Hits::rows`] of a snapshot search) of this segment's row 0.
    ///
    /// [`Hits::rows`]: crate::search::Hits::rows
    ///
    /// ```
    /// # use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # bsa_index::IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?; // ids 0, 1, 2
    /// # let mut w = Writer::open(&path)?;
    /// # w.add(&NewRows::codes(&[0b1111]).ids(&[7]), false)?; // a second segment
    /// # w.delete(&[1])?;
    /// # let snap = Snapshot::open(&path)?;
    /// // `snap`: ids 0, 1, 2 (1 deleted) in one segment, id 7 in a second.
    /// use bsa_index::{Mode, Score};
    /// assert_eq!(snap.segments()[1].base(), 3);
    /// // Id 7, row 0 of the second segment, is global row 3 in hits.
    /// let (hits, _) = snap.search(&[0b1111], 1, &Score::Hamming, &Mode::parse("flat")?, &Default::default())?;
    /// assert_eq!((hits[0].ids[0], hits[0].rows[0]), (7, 3));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn base(&self) -> u64 {
        self.base
    }
    /// Whether `row` is deleted.
    ///
    /// ```
    /// # use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # bsa_index::IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?; // ids 0, 1, 2
    /// # let mut w = Writer::open(&path)?;
    /// # w.add(&NewRows::codes(&[0b1111]).ids(&[7]), false)?; // a second segment
    /// # w.delete(&[1])?;
    /// # let snap = Snapshot::open(&path)?;
    /// // `snap`: ids 0, 1, 2 (1 deleted) in one segment, id 7 in a second.
    /// let first = &snap.segments()[0];
    /// assert_eq!((first.is_deleted(0), first.is_deleted(1)), (false, true));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn is_deleted(&self, row: usize) -> bool {
        self.deleted.as_ref().is_some_and(|d| d.contains(row))
    }

    /// The row holding `id`, deleted or not.
    ///
    /// ```
    /// # use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # bsa_index::IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?; // ids 0, 1, 2
    /// # let mut w = Writer::open(&path)?;
    /// # w.add(&NewRows::codes(&[0b1111]).ids(&[7]), false)?; // a second segment
    /// # w.delete(&[1])?;
    /// # let snap = Snapshot::open(&path)?;
    /// // `snap`: ids 0, 1, 2 (1 deleted) in one segment, id 7 in a second.
    /// let first = &snap.segments()[0];
    /// assert_eq!(first.row_of(1), Some(1)); // deleted, still there
    /// assert_eq!(first.row_of(7), None); // in the other segment
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn row_of(&self, id: u64) -> Option<usize> {
        let ids = self.index.ids();
        match &self.by_id {
            None => ids.binary_search(&id).ok(),
            Some(order) => order
                .binary_search_by_key(&id, |&r| ids[r as usize])
                .ok()
                .map(|p| order[p] as usize),
        }
    }

    /// The row holding `id` if it is not deleted.
    ///
    /// ```
    /// # use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # bsa_index::IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?; // ids 0, 1, 2
    /// # let mut w = Writer::open(&path)?;
    /// # w.add(&NewRows::codes(&[0b1111]).ids(&[7]), false)?; // a second segment
    /// # w.delete(&[1])?;
    /// # let snap = Snapshot::open(&path)?;
    /// // `snap`: ids 0, 1, 2 (1 deleted) in one segment, id 7 in a second.
    /// let first = &snap.segments()[0];
    /// assert_eq!((first.live_row_of(2), first.live_row_of(1)), (Some(2), None));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn live_row_of(&self, id: u64) -> Option<usize> {
        self.row_of(id).filter(|&r| !self.is_deleted(r))
    }

    /// The rows a search may return under `filter`: `None` when every row may be returned.
    pub(super) fn allowed(&self, filter: Option<IdFilter<'_>>) -> Option<RowSet> {
        let n = self.rows();
        match filter {
            None => self.deleted.as_ref().map(RowSet::complement),
            Some(IdFilter::Allow(ids)) => {
                let mut a = RowSet::empty(n);
                for &id in ids {
                    if let Some(r) = self.live_row_of(id) {
                        a.insert(r);
                    }
                }
                Some(a)
            }
            Some(IdFilter::Deny(ids)) => {
                let mut a = self
                    .deleted
                    .as_ref()
                    .map_or_else(|| RowSet::full(n), RowSet::complement);
                for &id in ids {
                    if let Some(r) = self.row_of(id) {
                        a.remove(r);
                    }
                }
                Some(a)
            }
        }
    }
}

/// The segments bridged from the largest segment's graph, as one walk reads them.
#[derive(Debug)]
pub(super) struct Bridges {
    /// The largest segment.
    pub(super) target: usize,
    /// The bridged segments, in the order of `lists`.
    pub(super) segments: Vec<usize>,
    pub(super) lists: BridgeLists,
}
