//! [`Snapshot`]: the segments of an index as one generation of its manifest listed them,
//! searched as one index.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};
use crate::files::verify_plain_file;
use crate::index::{Index, OpenOptions};
use crate::live::meta::{
    GraphSource, GraphTemplate, LiveManifest, Template, largest_segment, read_bridge, read_deletes,
    read_manifest_bytes,
};
use crate::manifest::{
    GraphMetric, MANIFEST_FILE, Manifest, SEGMENTED_FORMAT_VERSION, manifest_version,
};
use crate::mode::Mode;
use crate::rowset::RowSet;
use crate::score::{Score, desc_key, from_desc_key};
use crate::search::graph::{BridgeLists, BridgedSegment};
use crate::search::{
    CodesView, Cutoffs, FlatParams, FlatSearcher, Hits, SearchParams, SharedTables, check_queries,
};
use crate::search::{Layouts, SearchStats, Searcher};
use crate::sparse::SparseCodes;
use crate::vectors::{check_query, cosines};

/// Below this fraction of a segment's rows, a filtered search scores just the allowed rows (an
/// exact scan of a copy of their codes) instead of asking the mode for more and dropping rows,
/// or walking the graph past the excluded ones: a graph walk under a selective filter visits
/// most of the graph to find `ef` allowed rows. Measured on WordNet's ADC graph
/// (`benches/RESULTS-live.md`): the exact scan of the allowed rows is faster than the walk up to
/// about 35% of 100k rows and 12% of 1.1M rows, and the walk's recall holds at every fraction,
/// so 10% is never slower than walking at either size.
///
/// ```
/// use bsa_index::live::{IdFilter, SearchOptions, Snapshot};
/// use bsa_index::{IndexBuilder, Mode, Score};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// let codes: Vec<u64> = (0..100).collect();
/// IndexBuilder::new(64, &codes).build(&path)?;
/// let snap = Snapshot::open(&path)?;
/// // 2 allowed rows of 100: below the fraction, so just those two are scanned.
/// let few = SearchOptions::default().with_filter(Some(IdFilter::Allow(&[40, 50])));
/// let (hits, stats) = snap.search(&[0], 5, &Score::Hamming, &Mode::parse("flat")?, &few)?;
/// assert_eq!(hits[0].ids, vec![40, 50]);
/// assert_eq!(stats.counter("filter_exact_scan_segments"), Some(1));
/// # Ok::<(), bsa_index::Error>(())
/// ```
pub const SUBSET_SCAN_FRACTION: f64 = 0.10;

/// Exact modes ask for `k` plus the excluded rows while at most this many (or a sixteenth of
/// the segment) are excluded; beyond that the allowed rows are scanned on their own.
///
/// ```
/// use bsa_index::live::{IdFilter, SearchOptions, Snapshot};
/// use bsa_index::{IndexBuilder, Mode, Score};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// let codes: Vec<u64> = (0..100).collect();
/// IndexBuilder::new(64, &codes).build(&path)?;
/// let snap = Snapshot::open(&path)?;
/// // Two rows denied: the flat scan asks for k + 2 and drops them.
/// let most = SearchOptions::default().with_filter(Some(IdFilter::Deny(&[0, 1])));
/// let (hits, stats) = snap.search(&[0], 2, &Score::Hamming, &Mode::parse("flat")?, &most)?;
/// assert_eq!(hits[0].ids, vec![2, 4]); // 2 and 4 are one bit from 0
/// assert_eq!(stats.counter("filter_overfetch_segments"), Some(1));
/// # Ok::<(), bsa_index::Error>(())
/// ```
pub const OVERFETCH_MAX: usize = 4096;

/// In graph mode, a segment other than the largest with at most this many rows per candidate
/// of the walk (`ef`, at least `k`) is scanned exactly instead of walked, and its part of the
/// answer is then exact. A small graph's walk still scores over a thousand nodes at ef 64, a
/// cache miss or two each, while the quantised ADC scan costs about a nanosecond a code: on a
/// 1M index plus ten 10k-row segments (`benches/RESULTS-live.md`, 2c) each small segment cost
/// about 35 µs a query walked and 10 µs scanned. The scan grows with the rows and the walk
/// hardly does, so they meet around 35k rows at ef 64; 512 `ef` is 32k. The largest segment is
/// always walked, so a single-segment index searches as before. Segments bridged from the
/// largest segment's graph ([`Writer::bridge`](crate::live::Writer::bridge)) are neither: the
/// walk of that graph finds their rows.
///
/// ```
/// # if cfg!(not(feature = "hnsw-rs")) { return Ok(()); } // a graph over the codes: hnsw_rs
/// use bsa_index::live::{NewRows, Snapshot, Writer, GRAPH_SCAN_ROWS_PER_EF};
/// use bsa_index::{HnswParams, IndexBuilder, Mode, Score};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// let codes: Vec<u64> = (0..32).map(|i| i * 0x0101).collect();
/// IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).build(&path)?;
/// Writer::open(&path)?.add(&NewRows::codes(&[7, 8, 9]), false)?;
/// let snap = Snapshot::open(&path)?;
/// // 3 rows against a walk of ef 64: far below 64 * 512, so the new segment is scanned exactly.
/// assert!(snap.segments()[1].rows() <= 64 * GRAPH_SCAN_ROWS_PER_EF);
/// let hnsw = Mode::parse("hnsw")?;
/// let (hits, stats) = snap.search(&[7], 1, &Score::Hamming, &hnsw, &Default::default())?;
/// assert_eq!(stats.counter("graph_scanned_segments"), Some(1));
/// assert_eq!(hits[0].distances, vec![0]); // id 32, code 7
/// assert_eq!(hits[0].ids, vec![32]);
/// # Ok::<(), bsa_index::Error>(())
/// ```
pub const GRAPH_SCAN_ROWS_PER_EF: usize = 512;

/// Which ids a search may return (`bsa search --allow-ids` / `--deny-ids`).
///
/// ```
/// use bsa_index::live::{IdFilter, SearchOptions, Snapshot};
/// use bsa_index::{IndexBuilder, Mode, Score};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).ids(&[10, 11, 12]).build(&path)?;
/// let snap = Snapshot::open(&path)?;
/// let flat = Mode::parse("flat")?;
/// let search = |filter| {
///     let options = SearchOptions::default().with_filter(Some(filter));
///     let (hits, _) = snap.search(&[0b0001], 3, &Score::Hamming, &flat, &options)?;
///     Ok::<_, bsa_index::Error>(hits[0].ids.clone())
/// };
/// assert_eq!(search(IdFilter::Allow(&[12, 10, 99]))?, vec![10, 12]); // 99 is no id: ignored
/// assert_eq!(search(IdFilter::Deny(&[10]))?, vec![11, 12]);
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdFilter<'a> {
    /// Only these ids (unknown ids are ignored).
    Allow(&'a [u64]),
    /// Every id but these.
    Deny(&'a [u64]),
}

impl<'a> IdFilter<'a> {
    /// The filter of an optional allow list and an optional deny list, as a command line or
    /// an API takes them: `None` without either, an error with both (which one would win is
    /// not obvious to a reader of the call).
    ///
    /// ```
    /// use bsa_index::live::IdFilter;
    /// let allow = [3u64, 5];
    /// assert_eq!(IdFilter::from_lists(Some(&allow), None).unwrap(), Some(IdFilter::Allow(&allow)));
    /// assert_eq!(IdFilter::from_lists(None, None).unwrap(), None);
    /// assert!(IdFilter::from_lists(Some(&allow), Some(&allow)).is_err());
    /// ```
    pub fn from_lists(allow: Option<&'a [u64]>, deny: Option<&'a [u64]>) -> Result<Option<Self>> {
        match (allow, deny) {
            (Some(_), Some(_)) => Err(Error::InvalidArgument(
                "an allow list and a deny list were both given: give one".into(),
            )),
            (Some(ids), None) => Ok(Some(IdFilter::Allow(ids))),
            (None, Some(ids)) => Ok(Some(IdFilter::Deny(ids))),
            (None, None) => Ok(None),
        }
    }
}

/// What restricts a search beyond `k`: an id filter and a range.
///
/// ```
/// use bsa_index::live::{IdFilter, SearchOptions, Snapshot};
/// use bsa_index::{IndexBuilder, Mode, Score, SearchParams};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111, 0b1111]).build(&path)?;
/// let snap = Snapshot::open(&path)?;
/// // Ids other than 1, within Hamming distance 2 of the query.
/// let options = SearchOptions::default()
///     .with_filter(Some(IdFilter::Deny(&[1])))
///     .with_params(SearchParams::default().with_max_distance(Some(2)));
/// let (hits, _) = snap.search(&[0b0001], 10, &Score::Hamming, &Mode::parse("flat")?, &options)?;
/// assert_eq!(hits[0].ids, vec![0, 2]);
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct SearchOptions<'a> {
    /// Restrict the results to (or away from) a set of ids.
    pub filter: Option<IdFilter<'a>>,
    /// Range search by score: only codes scoring at least this (scores other than Hamming).
    /// Range search by Hamming distance is [`SearchParams::max_distance`].
    pub min_score: Option<f32>,
    /// Per-mode options (`max_distance`, the kernel family).
    pub params: SearchParams,
    /// Graph mode: segments other than the largest with at most this many rows per candidate
    /// of the walk are scanned exactly instead; `None`: [`GRAPH_SCAN_ROWS_PER_EF`], `Some(0)`:
    /// every segment's graph is walked.
    pub graph_scan_rows_per_ef: Option<usize>,
}

impl<'a> SearchOptions<'a> {
    /// Sets [`filter`](Self::filter).
    ///
    /// ```
    /// use bsa_index::live::{IdFilter, SearchOptions};
    /// let options = SearchOptions::default().with_filter(Some(IdFilter::Allow(&[3, 5])));
    /// assert_eq!(options.filter, Some(IdFilter::Allow(&[3, 5])));
    /// ```
    pub fn with_filter(mut self, filter: Option<IdFilter<'a>>) -> Self {
        self.filter = filter;
        self
    }
    /// Sets [`min_score`](Self::min_score).
    ///
    /// ```
    /// use bsa_index::live::{SearchOptions, Snapshot};
    /// use bsa_index::{IndexBuilder, Mode, Score};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(8, &[0b0001, 0b0011, 0b1110]).build(&path)?;
    /// let snap = Snapshot::open(&path)?;
    /// // Binary cosine with the query 0b0011: 0.71, 1.0 and 0.41; keep those at 0.5 or more.
    /// let options = SearchOptions::default().with_min_score(Some(0.5));
    /// let (hits, _) = snap.search(&[0b0011], 10, &Score::Cosine, &Mode::parse("flat")?, &options)?;
    /// assert_eq!(hits[0].ids, vec![1, 0]);
    /// // Hamming has no scores: its range is `SearchParams::max_distance`.
    /// assert!(snap.search(&[0b0011], 10, &Score::Hamming, &Mode::parse("flat")?, &options).is_err());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn with_min_score(mut self, s: Option<f32>) -> Self {
        self.min_score = s;
        self
    }
    /// Sets [`params`](Self::params).
    ///
    /// ```
    /// use bsa_index::live::SearchOptions;
    /// use bsa_index::{KernelFamily, SearchParams};
    /// let params = SearchParams::default().with_kernel(Some(KernelFamily::Portable));
    /// let options = SearchOptions::default().with_params(params);
    /// assert_eq!(options.params.kernel, Some(KernelFamily::Portable));
    /// ```
    pub fn with_params(mut self, params: SearchParams) -> Self {
        self.params = params;
        self
    }
    /// Sets [`graph_scan_rows_per_ef`](Self::graph_scan_rows_per_ef).
    ///
    /// ```
    /// # if cfg!(not(feature = "hnsw-rs")) { return Ok(()); } // a graph over the codes: hnsw_rs
    /// use bsa_index::live::{NewRows, SearchOptions, Snapshot, Writer};
    /// use bsa_index::{HnswParams, IndexBuilder, Mode, Score};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let codes: Vec<u64> = (0..32).map(|i| i * 0x0101).collect();
    /// IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).build(&path)?;
    /// Writer::open(&path)?.add(&NewRows::codes(&[7, 8, 9]), false)?; // a small second segment
    /// let snap = Snapshot::open(&path)?;
    /// let hnsw = Mode::parse("hnsw")?;
    /// let counted = |options: &SearchOptions| -> bsa_index::Result<Option<u64>> {
    ///     let (_, stats) = snap.search(&[7], 2, &Score::Hamming, &hnsw, options)?;
    ///     Ok(stats.counter("graph_scanned_segments"))
    /// };
    /// // By default the small segment is scanned exactly; with 0 its graph is walked too.
    /// assert_eq!(counted(&SearchOptions::default())?, Some(1));
    /// assert_eq!(counted(&SearchOptions::default().with_graph_scan_rows_per_ef(Some(0)))?, None);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn with_graph_scan_rows_per_ef(mut self, rows: Option<usize>) -> Self {
        self.graph_scan_rows_per_ef = rows;
        self
    }
}

/// One segment of a [`Snapshot`]: a single-segment [`Index`] and its deleted rows.
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
    name: String,
    /// Shared with the snapshots opened after this one by [`Snapshot::reopen`] while they list
    /// the segment: its maps, graph and scan layouts are made once.
    index: Arc<Index>,
    deleted: Option<RowSet>,
    /// Global row of this segment's row 0.
    base: u64,
    /// Rows in id order, kept only for segments whose rows are not (written before rows were
    /// stored in id order); otherwise ids are found by binary search in `ids.bin`.
    by_id: Option<Vec<u32>>,
    /// The segment its bridge leaves from and the edges (graph node there, row here), or what
    /// reads the bridge file again where it could not be read at open.
    bridge: Option<(String, BridgeEdges)>,
}

/// A bridge's edges (graph node there, row here), or what reads its file again.
type BridgeEdges = std::result::Result<Vec<(u32, u32)>, UnreadBridge>;

/// A bridge whose file could not be read when the snapshot was opened (damaged, or gone).
/// Bridges serve only the graph walk, as graphs do: the exact modes answer without them, a graph
/// walk and the checks read it again and fail with its error ([`UnreadBridge::read`]), and a compaction
/// (`bsa compact --no-verify`), which rewrites the bridges of the segments it merges, mends it.
#[derive(Debug)]
struct UnreadBridge {
    dir: PathBuf,
    entry: crate::live::BridgeEntry,
    rows: usize,
    nodes: usize,
}

impl UnreadBridge {
    /// The file read again: a read that failed for a passing reason (too many open files, say)
    /// may succeed now; damage fails again with its error.
    fn read(&self) -> Result<Vec<(u32, u32)>> {
        read_bridge(&self.dir, &self.entry, self.rows, self.nodes)
    }
}

impl SegmentReader {
    /// Whether a file of this segment that is opened quietly (its graph, its bridge) could not
    /// be read at open.
    fn missed_a_file(&self) -> bool {
        self.index.graph_unopened() || matches!(&self.bridge, Some((_, Err(_))))
    }

    fn new(name: String, index: Arc<Index>, deleted: Option<RowSet>, base: u64) -> SegmentReader {
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
    fn allowed(&self, filter: Option<IdFilter<'_>>) -> Option<RowSet> {
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

/// How a filtered segment was searched (counted in [`SearchStats::counters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    /// No filter: the mode's searcher as it is.
    Plain,
    /// No row may be returned: nothing searched.
    Empty,
    /// The mode's searcher asked for `k` plus the excluded rows, which are then dropped.
    Overfetch,
    /// The graph walked past the excluded rows.
    Walk,
    /// An exact scan of the allowed rows alone.
    Subset,
}

impl Strategy {
    fn counter(self) -> Option<&'static str> {
        match self {
            Strategy::Plain | Strategy::Empty => None,
            Strategy::Overfetch => Some("filter_overfetch_segments"),
            Strategy::Walk => Some("filter_walk_segments"),
            Strategy::Subset => Some("filter_exact_scan_segments"),
        }
    }
}

/// The segments of an index directory as one generation of its manifest listed them: searched
/// as one index, ids unique over the live rows, deleted rows never returned.
///
/// A snapshot maps its segments' files; writers never change a published file and remove old
/// ones only after committing a new manifest, so a snapshot stays consistent while the index is
/// added to, deleted from or compacted (its mapped files outlive their removal). Open a new
/// snapshot to see the changes. Both formats open: a single-segment index directory (format v1,
/// `bsa build`) is a snapshot of one segment.
///
/// Hits of a snapshot search carry *global* rows: segment `s`'s row `r` is
/// `segments()[s].base() + r`. Ties between equal distances or scores fall to the smaller id
/// (segments store rows in id order, see [`IndexBuilder::build`](crate::IndexBuilder::build)).
///
/// ```
/// use bsa_index::live::{IdFilter, SearchOptions, Snapshot, Writer, NewRows};
/// use bsa_index::{IndexBuilder, Mode, Score};
/// # fn main() -> bsa_index::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("idx");
/// IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?; // ids 0, 1, 2
/// let mut w = Writer::open(&path)?;
/// w.add(&NewRows::codes(&[0b0001]).ids(&[7]), false)?; // a second segment
/// w.delete(&[0])?;
/// let snap = Snapshot::open(&path)?;
/// let flat = Mode::parse("flat")?;
/// let (hits, _) = snap.search(&[0b0001], 2, &Score::Hamming, &flat, &SearchOptions::default())?;
/// assert_eq!(hits[0].ids, vec![7, 1]); // id 0 is deleted
/// let only = SearchOptions::default().with_filter(Some(IdFilter::Allow(&[2])));
/// let (hits, _) = snap.search(&[0b0001], 2, &Score::Hamming, &flat, &only)?;
/// assert_eq!((hits[0].ids.clone(), hits[0].distances.clone()), (vec![2], vec![2]));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Snapshot {
    dir: PathBuf,
    generation: u64,
    segmented: bool,
    bits: usize,
    segments: Vec<SegmentReader>,
    model: Option<PathBuf>,
    /// Length and CRC of the root model file (segmented indexes; a v1 segment checks its own).
    model_info: Option<crate::manifest::FileInfo>,
    template: Template,
    next_id: u64,
    extra: serde_json::Value,
    /// The bridges into the largest segment's graph, put together at the first graph search.
    bridges: OnceLock<Option<Bridges>>,
    /// The model for float queries, read at the first [`Snapshot::query_model`] and kept (with
    /// what its products derive), shared by [`Snapshot::reopen`] while the model file is the
    /// same: a server reads it once, and an old snapshot keeps its codes' model after a rebuild.
    #[cfg(feature = "float-queries")]
    query_model: OnceLock<Arc<crate::model::QueryModel>>,
    /// The root `manifest.json` as read, and every other file of the generation (relative).
    manifest_bytes: Vec<u8>,
    files: Vec<String>,
}

/// The segments bridged from the largest segment's graph, as one walk reads them.
#[derive(Debug)]
struct Bridges {
    /// The largest segment.
    target: usize,
    /// The bridged segments, in the order of `lists`.
    segments: Vec<usize>,
    lists: BridgeLists,
}

/// `e`, from opening segment `name` at `seg_dir`, said as damage when the segment's manifest
/// claims the segmented format: a segment is a single-segment index (format v1), and the
/// single-segment reader's advice (open it as a snapshot) would lead nowhere.
fn segment_error(e: Error, name: &str, seg_dir: &Path) -> Error {
    let Error::InvalidArgument(_) = e else {
        return e;
    };
    let read = read_manifest_bytes(seg_dir).ok();
    let version =
        read.and_then(|(path, bytes)| Some((manifest_version(&bytes, &path).ok()?, path)));
    match version {
        Some((SEGMENTED_FORMAT_VERSION, path)) if name != "." => Error::corrupt(
            path,
            format!(
                "segment {name}'s manifest says format v{SEGMENTED_FORMAT_VERSION} (a segmented \
                 index), but a segment is a single-segment index (format v1): the segment is \
                 damaged, or another index's folder was put in its place"
            ),
        ),
        _ => e,
    }
}

/// The template a single-segment index implies for segments added to it.
pub(crate) fn template_of(m: &Manifest) -> Template {
    Template {
        vectors: m.vectors,
        norms: m.norms.is_some(),
        inverted: m.inverted.is_some(),
        graph: match (&m.graph, &m.hnsw) {
            (Some(g), _) => Some(GraphTemplate {
                params: g.params,
                on: GraphSource::Vectors { dim: g.dim },
            }),
            (None, Some(h)) => Some(GraphTemplate {
                params: h.params,
                on: GraphSource::Codes,
            }),
            (None, None) => None,
        },
    }
}

impl Snapshot {
    /// Opens the index directory `dir` (either format), verifying the checksums of every file
    /// it maps and of its model. Graphs are checked at their first search, or now with
    /// [`load_graphs`](Self::load_graphs) (a server's warm-up: an index whose graph is damaged
    /// or gone still answers the exact modes).
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// let built = Snapshot::open(&path)?; // as `bsa build` wrote it: one segment
    /// assert!(!built.is_segmented() && built.len() == 2);
    /// Writer::open(&path)?.add(&NewRows::codes(&[3]), false)?;
    /// let grown = Snapshot::open(&path)?; // segments
    /// assert!(grown.is_segmented() && grown.len() == 3);
    /// assert!(Snapshot::open(dir.path()).is_err()); // no index there
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn open(dir: impl AsRef<Path>) -> Result<Snapshot> {
        Self::open_with(dir, OpenOptions::default())
    }

    /// Opens `dir` with explicit options. If a writer commits while this reads (and removes
    /// files of the generation read), the manifest is read again.
    ///
    /// ```
    /// use bsa_index::{live::Snapshot, IndexBuilder, OpenOptions};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// // O(1) checks per file now; the checksums later.
    /// let snap = Snapshot::open_with(&path, OpenOptions::verify_checksums(false))?;
    /// assert_eq!(snap.len(), 2);
    /// snap.verify_checksums()?;
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn open_with(dir: impl AsRef<Path>, options: OpenOptions) -> Result<Snapshot> {
        Self::open_reusing(dir.as_ref(), options, &[])
    }

    /// The index's current generation if a writer has committed since this snapshot was
    /// opened (`None` if this snapshot is current): what a server that follows a changing
    /// index calls between queries. The segments both generations list are not opened again:
    /// the new snapshot shares their maps, their loaded graphs and their scan layouts with this
    /// one, so the first searches after a small change do not pay to build them again, and
    /// only new segments are checked (with `options`). A directory replaced by another index
    /// (`bsa build --force`) is opened whole: a segment is shared only while its directory and
    /// files are the ones this snapshot opened (by inode numbers: on a network file system,
    /// whose server may reuse them for another host's files, open the index afresh instead).
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// use bsa_index::OpenOptions;
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// let mut w = Writer::open(&path)?;
    /// w.add(&NewRows::codes(&[3]), false)?;
    /// let mut snap = Snapshot::open(&path)?;
    /// assert!(snap.reopen(OpenOptions::default())?.is_none()); // nothing new
    /// w.add(&NewRows::codes(&[4]), false)?;
    /// let next = snap.reopen(OpenOptions::default())?.expect("a new generation");
    /// assert_eq!((next.len(), next.segments().len()), (4, 3));
    /// // The first two segments are the ones `snap` opened, not opened again.
    /// let same = |a: &Snapshot, b: &Snapshot, s: usize| {
    ///     std::ptr::eq(a.segments()[s].index(), b.segments()[s].index())
    /// };
    /// assert!(same(&snap, &next, 0) && same(&snap, &next, 1));
    /// snap = next;
    /// assert!(snap.is_current()?);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn reopen(&self, options: OpenOptions) -> Result<Option<Snapshot>> {
        if self.is_current()? {
            return Ok(None);
        }
        let kept = self.kept_segments(|_| true);
        let fresh = Self::open_reusing(&self.dir, options, &kept)?;
        // The same model file (length and CRC): its model, read and derived, goes on.
        #[cfg(feature = "float-queries")]
        if let Some(m) = self
            .query_model
            .get()
            .filter(|_| fresh.model_info == self.model_info)
        {
            let _ = fresh.query_model.set(Arc::clone(m));
        }
        Ok(Some(fresh))
    }

    /// This snapshot's segments that `keep` names, to share with a later generation.
    pub(crate) fn kept_segments(&self, keep: impl Fn(&str) -> bool) -> Vec<(String, Arc<Index>)> {
        let kept = self.segments.iter().filter(|r| keep(&r.name));
        kept.map(|r| (r.name.clone(), Arc::clone(&r.index)))
            .collect()
    }

    /// [`open_with`](Self::open_with), sharing the segments of `kept` (name, opened index) that
    /// the manifest lists and whose files are still the ones mapped.
    pub(crate) fn open_reusing(
        dir: &Path,
        options: OpenOptions,
        kept: &[(String, Arc<Index>)],
    ) -> Result<Snapshot> {
        crate::builder::check_not_nested(dir)?;
        let mut attempts = 0;
        loop {
            let (path, bytes) = read_manifest_bytes(dir)?;
            match Self::open_bytes(dir, &path, &bytes, options, kept) {
                // A graph or bridge file is opened quietly (an index whose graph is gone still
                // scans): one missing because a writer committed meanwhile and removed it is of
                // a generation already gone, so the current one is opened instead.
                Ok(s) if attempts < 16 && s.segments.iter().any(SegmentReader::missed_a_file) => {
                    attempts += 1;
                    if read_manifest_bytes(dir).is_ok_and(|(_, now)| now == bytes) {
                        return Ok(s);
                    }
                }
                Ok(s) => return Ok(s),
                Err(e) => {
                    attempts += 1;
                    let now = read_manifest_bytes(dir).map(|(_, b)| b).ok();
                    if attempts >= 16 || now.as_deref() == Some(&bytes[..]) {
                        return Err(e);
                    }
                }
            }
        }
    }

    fn open_bytes(
        dir: &Path,
        path: &Path,
        bytes: &[u8],
        options: OpenOptions,
        kept: &[(String, Arc<Index>)],
    ) -> Result<Snapshot> {
        // A segment of `kept` of that name whose files are still in place, or the segment opened.
        let open = |name: &str, seg_dir: &Path| -> Result<Arc<Index>> {
            let same = kept.iter().find(|(n, i)| n == name && i.is_at(seg_dir));
            match same {
                Some((_, index)) => Ok(Arc::clone(index)),
                None => Index::open_with(seg_dir, options)
                    .map(Arc::new)
                    .map_err(|e| segment_error(e, name, seg_dir)),
            }
        };
        if manifest_version(bytes, path)? != SEGMENTED_FORMAT_VERSION {
            let index = open(".", dir)?;
            let m = index.manifest();
            // Saturating, as a writer's `next_id` is: an index holding id u64::MAX has no id
            // after it, and an add without ids is refused (`Writer::add`).
            let next_id = index.ids().iter().max().map_or(0, |&m| m.saturating_add(1));
            return Ok(Snapshot {
                dir: dir.to_path_buf(),
                generation: 0,
                segmented: false,
                bits: index.bits(),
                model: index.model_path(),
                model_info: m
                    .model
                    .as_ref()
                    .and_then(|mo| m.files.get(&mo.file).copied()),
                template: template_of(m),
                extra: m.extra.clone(),
                next_id,
                files: m.files.keys().cloned().collect(),
                manifest_bytes: bytes.to_vec(),
                segments: vec![SegmentReader::new(".".into(), index, None, 0)],
                bridges: OnceLock::new(),
                #[cfg(feature = "float-queries")]
                query_model: OnceLock::new(),
            });
        }
        let m = LiveManifest::from_bytes(bytes, path)?;
        let mut segments = Vec::with_capacity(m.segments.len());
        let mut files = Vec::new();
        let mut base = 0u64;
        for s in &m.segments {
            let seg_dir = dir.join(&s.name);
            // (A folder behind a symbolic-link loop is not missing: its open says what it is.)
            if matches!(seg_dir.try_exists(), Ok(false)) {
                // Said as the root manifest's, not as "no such index" (the usual causes: a
                // copy of the index that stopped half-way, or another index's manifest).
                return Err(Error::corrupt(
                    path,
                    format!(
                        "lists segment {}, which is missing: the directory is an incomplete \
                         copy, or this manifest is another index's",
                        seg_dir.display()
                    ),
                ));
            }
            let index = open(&s.name, &seg_dir)?;
            let in_segment = index.manifest().files.keys().map(String::as_str);
            for f in in_segment.chain([MANIFEST_FILE]) {
                files.push(format!("{}/{f}", s.name));
            }
            files.extend(s.deletes.iter().map(|d| d.file.clone()));
            files.extend(s.bridge.iter().map(|b| b.file.clone()));
            if index.len() as u64 != s.rows || index.bits() != m.bits as usize {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "segment {} holds {} codes of {} bits but the manifest says {} of {}",
                        seg_dir.display(),
                        index.len(),
                        index.bits(),
                        s.rows,
                        m.bits
                    ),
                ));
            }
            // Searches and writers take the template as what every segment holds.
            let holds = template_of(index.manifest());
            if holds != m.template {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "segment {} holds {} but the manifest says every segment holds {}",
                        seg_dir.display(),
                        holds.parts(),
                        m.template.parts()
                    ),
                ));
            }
            let deleted = match &s.deletes {
                Some(d) => Some(read_deletes(dir, d, s.rows as usize)?),
                None => None,
            };
            let mut reader = SegmentReader::new(s.name.clone(), index, deleted, base);
            // A bridge from a segment not listed is ignored (writers drop such entries).
            let from = s.bridge.as_ref().and_then(|b| {
                let to = m.segments.iter().find(|t| t.name == b.to)?;
                Some((b, to.rows as usize))
            });
            if let Some((b, nodes)) = from {
                // Not a reason to refuse the index: its exact modes do not read bridges.
                let rows = s.rows as usize;
                let edges = read_bridge(dir, b, rows, nodes).map_err(|_| UnreadBridge {
                    dir: dir.to_path_buf(),
                    entry: b.clone(),
                    rows,
                    nodes,
                });
                reader.bridge = Some((b.to.clone(), edges));
            }
            segments.push(reader);
            base += s.rows;
        }
        if let (Some(mo), true) = (&m.model, options.verify_checksums) {
            verify_plain_file(&dir.join(&mo.file), &mo.info)?;
        }
        Ok(Snapshot {
            dir: dir.to_path_buf(),
            generation: m.generation,
            segmented: true,
            bits: m.bits as usize,
            model: m.model.as_ref().map(|mo| dir.join(&mo.file)),
            model_info: m.model.as_ref().map(|mo| mo.info),
            template: m.template.clone(),
            extra: m.extra.clone(),
            next_id: m.next_id,
            segments,
            bridges: OnceLock::new(),
            #[cfg(feature = "float-queries")]
            query_model: OnceLock::new(),
            files: files
                .into_iter()
                .chain(m.model.iter().map(|mo| mo.file.clone()))
                .collect(),
            manifest_bytes: bytes.to_vec(),
        })
    }

    /// Verifies every checksum of every file (segments, deletes, model) and, as
    /// [`Index::verify`] does in each segment, what checksums cannot vouch for: here also that
    /// no id is live in two segments (`bsa delete` would remove one of them, and searches could
    /// return an id twice) and that `next_id` is past every id.
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// use bsa_index::{Error, IndexBuilder, OpenOptions};
    /// use std::io::{Seek, SeekFrom, Write};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// Writer::open(&path)?.add(&NewRows::codes(&[3]), false)?;
    /// Snapshot::open(&path)?.verify()?;
    /// // Flip a bit of the new segment's codes (a 64-byte header, then the codes).
    /// let snap = Snapshot::open(&path)?;
    /// let codes = path.join(snap.segments()[1].name()).join("codes.bin");
    /// let mut f = std::fs::OpenOptions::new().write(true).open(codes).unwrap();
    /// f.seek(SeekFrom::Start(64)).unwrap();
    /// f.write_all(&[0b111]).unwrap();
    /// drop(f);
    /// let snap = Snapshot::open_with(&path, OpenOptions::verify_checksums(false))?;
    /// assert!(matches!(snap.verify(), Err(Error::Checksum { .. })));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn verify(&self) -> Result<()> {
        self.verify_all().map_err(|e| self.superseded(e))
    }

    /// Verifies the checksums [`Snapshot::open`] verifies (every mapped file of every segment,
    /// and the model; not the graphs, see [`load_graphs`](Self::load_graphs)), for a snapshot
    /// opened without them: cheaper than [`Snapshot::verify`],
    /// which also checks what checksums cannot vouch for. A writer checks this before a change
    /// ([`Writer::verify_checksums`](crate::live::Writer::verify_checksums)).
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// use bsa_index::{live::Snapshot, OpenOptions};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// let snap = Snapshot::open_with(&path, OpenOptions::verify_checksums(false))?;
    /// snap.verify_checksums()?;
    /// # Ok(()) }
    /// ```
    pub fn verify_checksums(&self) -> Result<()> {
        let mapped = || -> Result<()> {
            for s in &self.segments {
                s.index.verify_open_checksums()?;
            }
            self.check_bridges_read()
        };
        // A v1 index's segment checks the model too, by path: replaced by a rebuild is said so.
        mapped().map_err(|e| self.file_superseded(e))?;
        self.verify_model()
    }

    /// Loads and checks every segment's HNSW graph now (its checksum and every neighbour id),
    /// which the first graph search would otherwise do: a server's warm-up, so that a damaged
    /// or missing graph fails here and the first query does not pay for loading. Segments
    /// without a graph are skipped.
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// # if cfg!(not(feature = "hnsw-rs")) { return Ok(()); } // a graph over the codes: hnsw_rs
    /// use bsa_index::{live::Snapshot, HnswParams, IndexBuilder};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("idx");
    /// let codes: Vec<u64> = (0..32).map(|i| i * 0x0101).collect();
    /// IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).build(&path)?;
    /// let snap = Snapshot::open(&path)?;
    /// snap.load_graphs()?;
    /// // A graph damaged on disk is found by the warm-up, not by a query.
    /// let graph = path.join("graph.bin");
    /// let mut bytes = std::fs::read(&graph).unwrap();
    /// let last = bytes.len() - 1;
    /// bytes[last] ^= 1;
    /// std::fs::write(&graph, bytes).unwrap();
    /// assert!(Snapshot::open(&path)?.load_graphs().is_err());
    /// # Ok(()) }
    /// ```
    pub fn load_graphs(&self) -> Result<()> {
        let load = || -> Result<()> {
            for s in &self.segments {
                if s.index.has_hnsw() {
                    s.index.load_hnsw()?;
                }
            }
            Ok(())
        };
        load().map_err(|e| self.superseded(e))
    }

    /// `e`, a failure to read a file of this snapshot, as its caller should read it: a file
    /// gone because a writer has committed another generation since (a compaction removes the
    /// segments it merged) is said as such, with what to do, not as a damaged index or an
    /// incomplete copy. Other errors are returned as they are.
    pub(crate) fn superseded(&self, e: Error) -> Error {
        let Error::Io { path, error } = &e else {
            return e;
        };
        // A folder that cannot be read any more is no longer this generation either.
        if error.kind() != std::io::ErrorKind::NotFound || self.is_current().unwrap_or(false) {
            return e;
        }
        // The whole directory gone is no compaction's doing, and leaves nothing to open again.
        let why = match self.dir.try_exists() {
            Ok(false) => format!(
                "the index directory {} was removed (or moved) after this snapshot of it was \
                 opened",
                self.dir.display()
            ),
            _ => "removed by a change to the index after this snapshot of it was opened (a \
                  compaction, say); open the index again"
                .to_string(),
        };
        Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, why))
    }

    fn verify_all(&self) -> Result<()> {
        for s in &self.segments {
            s.index.verify()?;
        }
        self.check_bridges_read()?;
        if self.segments.len() > 1 {
            let mut live: Vec<u64> = self
                .segments
                .iter()
                .flat_map(|s| {
                    let ids = s.index.ids();
                    (0..ids.len()).filter(|&r| !s.is_deleted(r)).map(|r| ids[r])
                })
                .collect();
            live.sort_unstable();
            if let Some(w) = live.windows(2).find(|w| w[0] == w[1]) {
                let id = w[0];
                let holders: Vec<&str> = self
                    .segments
                    .iter()
                    .filter(|s| s.live_row_of(id).is_some())
                    .map(|s| s.name())
                    .collect();
                return Err(Error::corrupt(
                    self.dir.join(crate::manifest::MANIFEST_FILE),
                    format!(
                        "id {id} is live in more than one segment ({}); ids are unique over \
                         the live rows of all segments",
                        holders.join(", ")
                    ),
                ));
            }
        }
        // Rows added without ids get ids from `next_id` on: below an id in use, an add would
        // collide with it. (It saturates at u64::MAX, which may then be in use.)
        let largest = self.segments.iter().flat_map(|s| s.index.ids()).max();
        if let Some(&id) = largest.filter(|&&id| id >= self.next_id && self.next_id != u64::MAX) {
            return Err(Error::corrupt(
                self.dir.join(crate::manifest::MANIFEST_FILE),
                format!(
                    "next_id is {}, but id {id} is in the index; it is one past the largest id",
                    self.next_id
                ),
            ));
        }
        self.verify_model()
    }

    /// Verifies the checksum of the model file, if the index has one: a writer that encodes new
    /// rows with it checks it first (a small file, read whole anyway), as the rows a damaged
    /// model encodes would be committed under new, valid checksums.
    ///
    /// ```
    /// use bsa_index::{live::Snapshot, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let model = dir.path().join("m.safetensors");
    /// std::fs::write(&model, b"weights").unwrap();
    /// IndexBuilder::new(64, &[1, 2]).model_file(&model).build(&path)?;
    /// let snap = Snapshot::open(&path)?;
    /// snap.verify_model()?;
    /// // The model changed under the index: not the one its rows were encoded with.
    /// std::fs::write(snap.model_path().unwrap(), b"WEIGHTS").unwrap();
    /// assert!(snap.verify_model().is_err());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn verify_model(&self) -> Result<()> {
        if let (Some(p), Some(info)) = (&self.model, &self.model_info) {
            verify_plain_file(p, info).map_err(|e| self.file_superseded(e))?;
        }
        Ok(())
    }

    /// `e`, a file of this generation failing its manifest entry, as said to the caller: a
    /// file removed ([`Self::superseded`]), or the model (read by path) found replaced (a
    /// different length or CRC) since this snapshot was opened when the index is no longer
    /// this generation (a rebuild put its own model there), is said to be so; otherwise it is
    /// damage, `e`.
    fn file_superseded(&self, e: Error) -> Error {
        let e = self.superseded(e);
        let path = match &e {
            Error::Checksum { path, .. }
            | Error::Corrupt { path, .. }
            | Error::Truncated { path, .. }
            | Error::Model { path, .. } => path.clone(),
            _ => return e,
        };
        // Only the model is read by path: a mapped file failing its checks is damage, whatever
        // writers committed since (they never change a mapped file, they write new ones).
        if self.model.as_deref() != Some(path.as_path()) || self.is_current().unwrap_or(true) {
            return e;
        }
        Error::model(
            &path,
            "replaced by a change to the index after this snapshot of it was opened (a \
             rebuild); open the index again",
        )
    }

    /// Whether the index directory still holds this snapshot's generation: `false` once a
    /// writer has committed another (an add, delete or compact, or a build that replaced the
    /// index; the [`generation`](Self::generation) number alone cannot tell, as a rebuilt index
    /// starts again at 0, and one of the same shape can have equal manifests: the files each
    /// segment maps are checked to be still in place too). One read of the root manifest and
    /// a look at each segment's folder and codes file: a server can ask before a batch of queries, or call
    /// [`reopen`](Self::reopen), which asks this first (a snapshot it holds keeps answering
    /// from its own generation meanwhile).
    ///
    /// ```
    /// use bsa_index::{live::Snapshot, live::Writer, pack, IndexBuilder};
    /// # fn main() -> bsa_index::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("idx");
    /// let codes = pack::pack_le_bytes(&[0b0001, 0b0011], 2, 1, 4)?;
    /// IndexBuilder::new(4, &codes).build(&path)?;
    /// let snap = Snapshot::open(&path)?;
    /// assert!(snap.is_current()?);
    /// Writer::open(&path)?.delete(&[0])?;
    /// assert!(!snap.is_current()?);
    /// assert!(Snapshot::open(&path)?.is_current()?);
    /// # Ok(()) }
    /// ```
    pub fn is_current(&self) -> Result<bool> {
        let (_, now) = read_manifest_bytes(&self.dir)?;
        // Equal manifests can list other files: a directory replaced by another index of the
        // same shape (same segment names, rows and generation) has equal manifest bytes.
        Ok(now == self.manifest_bytes && self.segments.iter().all(|s| s.index.is_at(&s.index.dir)))
    }

    /// The index directory.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// let snap = bsa_index::live::Snapshot::open(&path)?;
    /// assert_eq!(snap.dir(), path.as_path());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Every file of this snapshot's generation but the root `manifest.json`, relative to
    /// [`dir`](Self::dir) (`/`-separated: `seg-000001/codes.bin`): with
    /// [`manifest_bytes`](Self::manifest_bytes), what a copy of this generation is made of,
    /// whatever a writer has committed since.
    ///
    /// ```
    /// use bsa_index::{live::Snapshot, pack, IndexBuilder};
    /// # fn main() -> bsa_index::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let codes = pack::pack_le_bytes(&[0b0001, 0b0011], 2, 1, 4)?;
    /// IndexBuilder::new(4, &codes).build(dir.path().join("idx"))?;
    /// let snap = Snapshot::open(dir.path().join("idx"))?;
    /// assert!(snap.files().iter().any(|f| f == "codes.bin"));
    /// assert!(snap.manifest_bytes().starts_with(b"{"));
    /// # Ok(()) }
    /// ```
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// The root `manifest.json` as this snapshot read it (see [`files`](Self::files)).
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
    /// let read = snap.manifest_bytes().to_vec();
    /// w.delete(&[0])?;
    /// assert_eq!(snap.manifest_bytes(), &read[..]); // as read, whatever was committed since
    /// assert_ne!(Snapshot::open(&path)?.manifest_bytes(), &read[..]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The manifest generation this snapshot read (0 for a single-segment index). Commits
    /// count up, but a rebuild in place (`bsa build --force`) starts again at 0: two snapshots
    /// of one number may be of two indexes. [`is_current`](Self::is_current) tells whether a
    /// snapshot is the directory's current one.
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// assert_eq!(Snapshot::open(&path)?.generation(), 0);
    /// let mut w = Writer::open(&path)?;
    /// w.add(&NewRows::codes(&[3]), false)?;
    /// let after_add = Snapshot::open(&path)?.generation();
    /// w.delete(&[0])?;
    /// assert!(Snapshot::open(&path)?.generation() > after_add); // one more commit
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// Whether the directory is in the segmented format (v2).
    ///
    /// ```
    /// use bsa_index::live::{Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// assert!(!Snapshot::open(&path)?.is_segmented());
    /// Writer::open(&path)?.delete(&[1])?; // a writer's first commit converts the directory
    /// assert!(Snapshot::open(&path)?.is_segmented());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn is_segmented(&self) -> bool {
        self.segmented
    }
    /// The segments, in manifest order.
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
    /// let sizes: Vec<(usize, u64)> = snap.segments().iter().map(|s| (s.rows(), s.base())).collect();
    /// assert_eq!(sizes, vec![(3, 0), (1, 3)]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn segments(&self) -> &[SegmentReader] {
        &self.segments
    }
    /// Bits per code.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(100, &[1, 0, 2, 0]).build(&path)?; // two 100-bit codes
    /// let snap = bsa_index::live::Snapshot::open(&path)?;
    /// assert_eq!((snap.bits(), snap.words_per_code()), (100, 2));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn bits(&self) -> usize {
        self.bits
    }
    /// `u64` words per code.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(130, &[1, 0, 0]).build(&path)?;
    /// let snap = bsa_index::live::Snapshot::open(&path)?;
    /// assert_eq!(snap.words_per_code(), 3); // queries are packed 3 words each
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn words_per_code(&self) -> usize {
        self.bits.div_ceil(64)
    }
    /// Rows that searches can return (deleted rows excluded).
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
    /// assert_eq!((snap.len(), snap.rows()), (3, 4)); // one of the 4 rows is deleted
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.segments.iter().map(SegmentReader::live_rows).sum()
    }
    /// Whether no row can be returned.
    ///
    /// ```
    /// use bsa_index::live::{Snapshot, Writer};
    /// use bsa_index::{Mode, Score};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).ids(&[5, 6]).build(&path)?;
    /// Writer::open(&path)?.delete(&[5, 6])?;
    /// let snap = Snapshot::open(&path)?;
    /// assert!(snap.is_empty());
    /// let (hits, _) = snap.search(&[1], 5, &Score::Hamming, &Mode::parse("flat")?, &Default::default())?;
    /// assert!(hits[0].is_empty());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Rows in every segment, deleted ones included (global rows are below this).
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
    /// assert_eq!(snap.rows(), 4);
    /// assert!(snap.locate(3).is_some() && snap.locate(4).is_none());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn rows(&self) -> usize {
        self.segments.iter().map(SegmentReader::rows).sum()
    }
    /// The model file shared by the segments, if any.
    ///
    /// ```
    /// use bsa_index::{live::Snapshot, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let model = dir.path().join("m.safetensors");
    /// std::fs::write(&model, b"weights").unwrap();
    /// IndexBuilder::new(64, &[1, 2]).model_file(&model).build(&path)?;
    /// let copied = Snapshot::open(&path)?.model_path().unwrap();
    /// assert_eq!(std::fs::read(copied).unwrap(), b"weights");
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn model_path(&self) -> Option<PathBuf> {
        self.model.clone()
    }

    /// The index's model ([`Snapshot::model_path`]) for answering float queries, if the index
    /// has one, checked to fit the index ([`Snapshot::check_model`]): a query server's way to
    /// encode float queries and make the `adc` and `soft` tables ([`crate::model`]) the way
    /// `bsa search` does, without BLAS. Read at the first call and kept with the snapshot (and
    /// with what its products derive from it): later calls, and the snapshots
    /// [`reopen`](Self::reopen) makes while the model file is the same, share it. The bytes
    /// read are checked against the manifest's length and CRC first (a damaged file is an
    /// [`Error::Checksum`]; a model a rebuild put there after this snapshot was opened, an
    /// [`Error::Model`] saying to open the index again: call this once after opening, and the
    /// snapshot keeps its codes' model whatever happens to the directory); a model file that
    /// cannot be read or does not fit is an [`Error::Model`] naming it.
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    /// # let (eye, zeros) = (bytes(&[1.0, 0.0, 0.0, 1.0]), bytes(&[0.0, 0.0]));
    /// # use safetensors::{tensor::TensorView, Dtype};
    /// # let tensors = [
    /// #     ("encoder.weight", TensorView::new(Dtype::F32, vec![2, 2], &eye).unwrap()),
    /// #     ("encoder.bias", TensorView::new(Dtype::F32, vec![2], &zeros).unwrap()),
    /// #     ("decoder.weight", TensorView::new(Dtype::F32, vec![2, 2], &eye).unwrap()),
    /// #     ("decoder.bias", TensorView::new(Dtype::F32, vec![2], &zeros).unwrap()),
    /// # ];
    /// # let settings = [("format", "bsa-model"), ("format_version", "1"), ("dim", "2"),
    /// #                 ("bits", "2"), ("k", "1"), ("method", "topk")];
    /// # let meta = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    /// # let model_file = dir.path().join("m.safetensors");
    /// # std::fs::write(&model_file, safetensors::serialize(tensors, Some(meta)).unwrap()).unwrap();
    /// use bsa_index::{live::Snapshot, IndexBuilder};
    /// use bsa_index::query::{search, Queries, Request};
    /// // Two 2-bit codes of a 2-d model that sets the bit of the larger coordinate.
    /// IndexBuilder::new(2, &[0b01, 0b10]).model_file(&model_file).build(&path)?;
    /// let snap = Snapshot::open(&path)?;
    /// let model = snap.query_model()?.expect("built with a model");
    /// assert!(std::sync::Arc::ptr_eq(&model, &snap.query_model()?.unwrap())); // read once
    /// let q = ndarray::array![[0.2f32, 0.9]];
    /// let found = search(&snap, Some(model.view()), Queries::Floats(q.view()), &Request::new(1))?;
    /// assert_eq!(found.hits[0].ids, [1]); // the code with bit 1 set
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "float-queries")]
    pub fn query_model(&self) -> Result<Option<Arc<crate::model::QueryModel>>> {
        if let Some(m) = self.query_model.get() {
            return Ok(Some(Arc::clone(m)));
        }
        let Some((path, buf)) = self.model_bytes()? else {
            return Ok(None);
        };
        let source = crate::files::info_of_bytes(&buf);
        let model = crate::model::QueryModel::from_checked_bytes(&buf, &path, source)?;
        self.check_model(&path, model.bits(), model.dim())?;
        // Two threads' first calls may both read it: the first kept is everyone's.
        Ok(Some(Arc::clone(
            self.query_model.get_or_init(|| Arc::new(model)),
        )))
    }

    /// The bytes of the model file copied into the index, if it has one, and its path: the
    /// bytes this snapshot's manifest names, checked against the length and CRC-32 it records
    /// (an index of format 1 written before models had entries there is read unchecked).
    /// A model put in the file's place since (a rebuild over the index, with another model of
    /// the same shape) would encode queries this snapshot's codes do not answer, so it is an
    /// error (open the index again), never a model read in silence. For an application that
    /// reads the model its own way; [`Snapshot::query_model`] reads it for searches.
    ///
    /// ```
    /// use bsa_index::live::Snapshot;
    /// use bsa_index::IndexBuilder;
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let model = dir.path().join("m.safetensors");
    /// std::fs::write(&model, b"weights").unwrap();
    /// IndexBuilder::new(64, &[1, 2]).model_file(&model).build(&path)?;
    /// let snap = Snapshot::open(&path)?;
    /// let (file, bytes) = snap.model_bytes()?.expect("built with a model");
    /// assert_eq!((file, &bytes[..]), (snap.model_path().unwrap(), &b"weights"[..]));
    /// // Another file put in its place is refused, not read.
    /// std::fs::write(snap.model_path().unwrap(), b"WEIGHTS").unwrap();
    /// assert!(snap.model_bytes().unwrap_err().to_string().contains("checksum"));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn model_bytes(&self) -> Result<Option<(PathBuf, Vec<u8>)>> {
        let Some(path) = self.model_path() else {
            return Ok(None);
        };
        let buf = match &self.model_info {
            Some(info) => {
                crate::files::read_plain_file(&path, info)
                    .map_err(|e| self.file_superseded(e))?
                    .0
            }
            // A format-1 index records no checksum of its model.
            None => crate::files::read_regular(&path).map_err(|e| self.superseded(e))?,
        };
        Ok(Some((path, buf)))
    }

    /// Checks that a model making `bits`-bit codes from `dim`-d rows, read from `path` (this
    /// index's model file), fits the index: its codes are the index's width, and its rows the
    /// stored vectors' and the graph's dimension. A model that does not fit (a manifest edited,
    /// or a model file put in place of another with its checksum) would encode queries the
    /// index cannot answer: an [`Error::Model`] naming `path`.
    pub fn check_model(&self, path: &Path, bits: usize, dim: usize) -> Result<()> {
        let graph_dim = self.template().graph.and_then(|g| match g.on {
            GraphSource::Vectors { dim } => Some(dim as usize),
            _ => None,
        });
        let misfit = if bits != self.bits() {
            Some(format!(
                "makes {bits}-bit codes but the index holds {}-bit codes",
                self.bits()
            ))
        } else if let Some(v) = self.vector_dim().filter(|&v| v != dim) {
            Some(format!(
                "reads {dim}-d rows but the index stores {v}-d vectors"
            ))
        } else {
            graph_dim.filter(|&g| g != dim).map(|g| {
                format!("reads {dim}-d rows but the index's graph is built on {g}-d vectors")
            })
        };
        match misfit {
            None => Ok(()),
            Some(what) => Err(Error::model(
                path,
                format!(
                    "this model {what}: it is not the model the index was built with (its \
                     manifest or model file was replaced); rebuild the index"
                ),
            )),
        }
    }
    /// The length and CRC-32 the manifest records for the model file, if any: two snapshots
    /// with the same have the same model (a holder of a loaded model can tell whether a newer
    /// generation needs it loaded again).
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// use bsa_index::IndexBuilder;
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let model = dir.path().join("m.safetensors");
    /// std::fs::write(&model, b"weights").unwrap();
    /// IndexBuilder::new(64, &[1, 2]).model_file(&model).build(&path)?;
    /// let before = Snapshot::open(&path)?;
    /// assert_eq!(before.model_info().unwrap().len, 7);
    /// Writer::open(&path)?.add(&NewRows::codes(&[3]), false)?;
    /// // A new generation, the same model: no need to load it again.
    /// assert_eq!(Snapshot::open(&path)?.model_info(), before.model_info());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn model_info(&self) -> Option<crate::manifest::FileInfo> {
        self.model_info
    }
    /// The application's JSON recorded at build time.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2])
    ///     .extra(serde_json::json!({"encoder": "bsa"}))
    ///     .build(&path)?;
    /// let snap = bsa_index::live::Snapshot::open(&path)?;
    /// assert_eq!(snap.extra()["encoder"], "bsa");
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn extra(&self) -> &serde_json::Value {
        &self.extra
    }
    /// What every segment holds beside codes and ids.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2])
    ///     .vectors(&[1.0, 0.0, 0.0, 1.0], 2)
    ///     .inverted(true)
    ///     .build(&path)?;
    /// let template = bsa_index::live::Snapshot::open(&path)?.template().clone();
    /// // Rows added later bring vectors, and their segment gets posting lists.
    /// assert_eq!(template.vectors.map(|v| v.dim), Some(2));
    /// assert!(template.inverted && !template.norms && template.graph.is_none());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn template(&self) -> &Template {
        &self.template
    }
    /// The id a row added without ids gets next.
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).ids(&[10, 4]).build(&path)?;
    /// assert_eq!(Snapshot::open(&path)?.next_id(), 11);
    /// let mut w = Writer::open(&path)?;
    /// w.delete(&[10])?;
    /// w.add(&NewRows::codes(&[3]), false)?; // gets id 11: deleted ids are not given again
    /// let snap = Snapshot::open(&path)?;
    /// assert!(snap.find_id(11).is_some());
    /// assert_eq!(snap.next_id(), 12);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn next_id(&self) -> u64 {
        self.next_id
    }
    /// Whether every segment stores float vectors (for rescoring).
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).vectors(&[1.0, 0.0, 0.0, 1.0], 2).build(&path)?;
    /// // Rows added to it bring their vectors.
    /// Writer::open(&path)?.add(&NewRows::codes(&[3]).vectors(&[0.6, 0.8]), false)?;
    /// let snap = Snapshot::open(&path)?;
    /// assert!(snap.has_vectors());
    /// assert_eq!(snap.vector_dim(), Some(2));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn has_vectors(&self) -> bool {
        self.template.vectors.is_some()
    }
    /// The dimension of the stored vectors.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).vectors(&[0.5; 6], 3).build(&path)?;
    /// assert_eq!(bsa_index::live::Snapshot::open(&path)?.vector_dim(), Some(3));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn vector_dim(&self) -> Option<usize> {
        self.template.vectors.map(|v| v.dim as usize)
    }
    /// Whether every segment stores per-code norms (normalised table scores such as ADC).
    ///
    /// ```
    /// use bsa_index::live::{NewRows, Snapshot, Writer};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// bsa_index::IndexBuilder::new(64, &[1, 2]).norms(&[1.0, 2.0]).build(&path)?;
    /// let snap = Snapshot::open(&path)?;
    /// assert!(snap.has_norms());
    /// // So rows added later must bring theirs.
    /// let mut w = Writer::open(&path)?;
    /// assert!(w.add(&NewRows::codes(&[3]), false).is_err());
    /// w.add(&NewRows::codes(&[3]).norms(&[1.5]), false)?;
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn has_norms(&self) -> bool {
        self.template.norms
    }
    /// Whether every segment has posting lists (`--mode inverted`).
    ///
    /// ```
    /// use bsa_index::live::{NewRows, SearchOptions, Snapshot, Writer};
    /// use bsa_index::{IndexBuilder, Mode, Score};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(8, &[0b0001, 0b0011]).inverted(true).build(&path)?;
    /// Writer::open(&path)?.add(&NewRows::codes(&[0b0111]), false)?; // gets posting lists too
    /// let snap = Snapshot::open(&path)?;
    /// assert!(snap.has_inverted());
    /// let inverted = Mode::parse("inverted")?;
    /// let (hits, _) = snap.search(&[0b0111], 2, &Score::Hamming, &inverted, &SearchOptions::default())?;
    /// assert_eq!(hits[0].ids, vec![2, 1]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn has_inverted(&self) -> bool {
        self.template.inverted
    }
    /// The metric of the segments' graphs, if they have one.
    ///
    /// ```
    /// # if cfg!(not(feature = "hnsw-rs")) { return Ok(()); } // a graph over the codes: hnsw_rs
    /// use bsa_index::{live::Snapshot, manifest::GraphMetric, HnswParams, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let codes: Vec<u64> = (0..32).map(|i| i * 0x0101).collect();
    /// IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).build(&path)?;
    /// assert_eq!(Snapshot::open(&path)?.graph_metric(), Some(GraphMetric::Hamming));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn graph_metric(&self) -> Option<GraphMetric> {
        self.template.graph.map(|g| match g.on {
            GraphSource::Codes => GraphMetric::Hamming,
            GraphSource::Vectors { .. } => GraphMetric::Cosine,
        })
    }

    /// The segment and row of global row `row`.
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
    /// assert_eq!(snap.locate(1), Some((0, 1)));
    /// assert_eq!(snap.locate(3), Some((1, 0))); // row 0 of the second segment
    /// assert_eq!(snap.locate(4), None);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn locate(&self, row: u64) -> Option<(usize, usize)> {
        let s = self.segments.partition_point(|s| s.base <= row);
        let seg = self.segments.get(s.checked_sub(1)?)?;
        let r = (row - seg.base) as usize;
        (r < seg.rows()).then_some((s - 1, r))
    }

    /// The segment and row of the live row holding `id`.
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
    /// assert_eq!(snap.find_id(7), Some((1, 0)));
    /// assert_eq!(snap.find_id(2), Some((0, 2)));
    /// assert_eq!(snap.find_id(1), None); // deleted
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn find_id(&self, id: u64) -> Option<(usize, usize)> {
        self.segments
            .iter()
            .enumerate()
            .find_map(|(s, seg)| seg.live_row_of(id).map(|r| (s, r)))
    }

    /// The best `k` live rows of every segment for each query of `queries` (packed like the
    /// codes) under `score`, by `mode`, restricted by `options`: best first, ties by smaller
    /// id. Rows in the hits are global (see [`locate`](Self::locate)).
    ///
    /// Exact modes stay exact under filters and deletes; the graph walks past excluded rows,
    /// or scans the allowed rows exactly when they are under [`SUBSET_SCAN_FRACTION`] of a
    /// segment. In graph mode with a table score, segments bridged from the largest
    /// segment's graph are searched by its walk (the stats count them as `bridged_segments`);
    /// other segments that are small against the walk's `ef` ([`GRAPH_SCAN_ROWS_PER_EF`]) are
    /// scanned exactly (`graph_scanned_segments`), the rest walked. Table scores quantise each
    /// query's table once for all segments. `k = usize::MAX` with a range (`max_distance`,
    /// `min_score`) returns every row in range (exact modes; the graph returns those among its
    /// `ef` candidates). `k = 0` gives every query empty hits ([`crate::query::search`], the
    /// request-level search, refuses it as a mistake). The stats add `segments` and how many
    /// segments each filter strategy answered.
    ///
    /// ```
    /// use bsa_index::live::{NewRows, SearchOptions, Snapshot, Writer};
    /// use bsa_index::{IndexBuilder, Mode, Score, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111]).build(&path)?; // ids 0, 1, 2
    /// Writer::open(&path)?.add(&NewRows::codes(&[0b0001, 0b1111]).ids(&[7, 8]), false)?;
    /// let snap = Snapshot::open(&path)?;
    /// let flat = Mode::parse("flat")?;
    /// // Every row within distance 1, over both segments: ties by id.
    /// let range = SearchOptions::default().with_params(SearchParams::default().with_max_distance(Some(1)));
    /// let (hits, stats) = snap.search(&[0b0001], usize::MAX, &Score::Hamming, &flat, &range)?;
    /// assert_eq!(hits[0].ids, vec![0, 7, 1]);
    /// assert_eq!(hits[0].rows, vec![0, 3, 1]); // global rows: id 7 is row 0 of segment 1
    /// assert_eq!(stats.counter("segments"), Some(2));
    /// let (none, _) = snap.search(&[0b0001], 0, &Score::Hamming, &flat, &SearchOptions::default())?;
    /// assert!(none[0].ids.is_empty());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn search(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        mode: &Mode,
        options: &SearchOptions<'_>,
    ) -> Result<(Vec<Hits>, SearchStats)> {
        let nq = check_queries(queries, self.words_per_code(), self.bits)?;
        if options.min_score.is_some() && !score.has_scores() {
            return Err(Error::InvalidArgument(
                "a minimum score applies to scores other than hamming; for Hamming distance \
                 give a maximum distance"
                    .into(),
            ));
        }
        if options.min_score.is_some_and(f32::is_nan) {
            return Err(Error::InvalidArgument("the minimum score is NaN".into()));
        }
        let params = options.params.resolved()?;
        let scored = score.has_scores();
        let mut parts = Vec::with_capacity(self.segments.len());
        let mut stats = SearchStats::default();
        let mut counts: Vec<(&'static str, u64)> = vec![("segments", self.segments.len() as u64)];
        // The largest segment first: its k-th best hit per query becomes the cutoff of the
        // others, whose scans then skip the rows that cannot enter the merged top k.
        let mut order: Vec<usize> = (0..self.segments.len()).collect();
        order.sort_by_key(|&s| std::cmp::Reverse(self.segments[s].live_rows()));
        let mut best = BestSoFar::new(nq, k, scored, options.min_score);
        let shared = SharedTables::default();
        let mut answered = vec![false; self.segments.len()];
        let mut tally =
            |stats: &mut SearchStats, s: SearchStats, chosen: &[Option<&'static str>]| {
                if stats.kernel.is_empty() {
                    stats.kernel = s.kernel;
                    stats.kernel_family = s.kernel_family;
                }
                stats.table_kernel = stats.table_kernel.or(s.table_kernel);
                let chosen = chosen.iter().flatten().map(|&c| (c, 1));
                for (name, v) in s.counters.into_iter().chain(chosen) {
                    match counts.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, t)) => *t += v,
                        None => counts.push((name, v)),
                    }
                }
            };
        let (_, floor) = best.cutoffs();
        if let Some((found, s, chosen)) =
            self.search_bridged(queries, k, score, mode, &params, options, floor.as_deref())?
        {
            for (seg, mut hits) in found {
                answered[seg] = true;
                best.add(&hits);
                for h in &mut hits {
                    for r in &mut h.rows {
                        *r += self.segments[seg].base;
                    }
                }
                parts.push(hits);
            }
            tally(&mut stats, s, &chosen);
        }
        for (i, &si) in order.iter().enumerate() {
            if answered[si] {
                continue;
            }
            let seg = &self.segments[si];
            let (seg_mode, scanned) = Self::segment_mode(seg, i == 0, mode, k, score, options)?;
            let (dist, min) = best.cutoffs();
            let cutoffs = if scored {
                min.as_deref().map(Cutoffs::MinScore)
            } else {
                dist.as_deref().map(Cutoffs::MaxDistance)
            };
            let (mut hits, s, strategy) = self.search_segment(
                seg, queries, nq, k, score, &seg_mode, &params, options, cutoffs, &shared,
            )?;
            best.add(&hits);
            for h in &mut hits {
                for r in &mut h.rows {
                    *r += seg.base;
                }
            }
            let chosen = [
                strategy.counter(),
                scanned.then_some("graph_scanned_segments"),
            ];
            tally(&mut stats, s, &chosen);
            parts.push(hits);
        }
        stats.counters = counts;
        if stats.kernel.is_empty() {
            stats.kernel = "none";
        }
        Ok((merge(parts, nq, k, score.has_scores()), stats))
    }

    /// The error of the first bridge file that could not be read at open and still cannot be
    /// read, if any. Each is read again: a passing error at open (too many open files) says
    /// nothing of the bridges after it.
    fn check_bridges_read(&self) -> Result<()> {
        for s in &self.segments {
            if let Some((_, Err(unread))) = &s.bridge {
                unread.read()?;
            }
        }
        Ok(())
    }

    /// The bridges into the largest segment's graph, put together at the first call.
    fn bridges(&self) -> Result<Option<&Bridges>> {
        if let Some(b) = self.bridges.get() {
            return Ok(b.as_ref());
        }
        let built = match largest_segment(self.segments.iter().map(|s| s.live_rows() as u64)) {
            Some(target) => {
                let name = &self.segments[target].name;
                let segments: Vec<usize> = (0..self.segments.len())
                    .filter(|&s| {
                        s != target
                            && self.segments[s]
                                .bridge
                                .as_ref()
                                .is_some_and(|(to, _)| to == name)
                    })
                    .collect();
                let sizes: Vec<usize> = segments.iter().map(|&s| self.segments[s].rows()).collect();
                let read = segments
                    .iter()
                    .filter_map(|&s| self.segments[s].bridge.as_ref())
                    .map(|(_, e)| match e {
                        Ok(edges) => Ok(std::borrow::Cow::Borrowed(edges.as_slice())),
                        Err(unread) => unread
                            .read()
                            .map(std::borrow::Cow::Owned)
                            .map_err(|e| self.superseded(e)),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let edges: Vec<&[(u32, u32)]> = read.iter().map(|e| e.as_ref()).collect();
                let nodes = self.segments[target].rows();
                (!segments.is_empty())
                    .then(|| BridgeLists::new(nodes, &sizes, &edges))
                    .transpose()?
                    .map(|lists| Bridges {
                        target,
                        segments,
                        lists,
                    })
            }
            None => None,
        };
        let _ = self.bridges.set(built);
        Ok(self.bridges.get().and_then(Option::as_ref))
    }

    /// A graph search by a table score over the largest segment and the segments bridged from
    /// its graph ([`Writer::bridge`](crate::live::Writer::bridge)), by one walk: per segment
    /// answered, its index and its hits (local rows), the stats and the strategies chosen;
    /// `None` when the search is not a walk of a bridged graph. A bridged segment whose filter
    /// asks for an exact scan of its allowed rows is left to that scan. Hits under `floor`
    /// (per query, a minimum score asked for) are dropped.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn search_bridged(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        mode: &Mode,
        params: &SearchParams,
        options: &SearchOptions<'_>,
        floor: Option<&[f32]>,
    ) -> Result<
        Option<(
            Vec<(usize, Vec<Hits>)>,
            SearchStats,
            Vec<Option<&'static str>>,
        )>,
    > {
        let (Mode::Hnsw(p), Score::Table { .. }) = (mode, score) else {
            return Ok(None);
        };
        let Some(b) = self.bridges()? else {
            return Ok(None);
        };
        let large = &self.segments[b.target];
        // How a filter treats a segment: None to leave it to its own search.
        let walkable = |seg: &SegmentReader| -> Option<Option<RowSet>> {
            match seg.allowed(options.filter) {
                None => Some(None),
                Some(a) if (a.count() as f64) < SUBSET_SCAN_FRACTION * seg.rows() as f64 => None,
                Some(a) => Some(Some(a)),
            }
        };
        let Some(large_allowed) = walkable(large) else {
            return Ok(None);
        };
        let graph = large.index.graph_searcher(*p)?;
        let mut allowed = Vec::with_capacity(b.segments.len());
        let mut answered = vec![b.target];
        for &s in &b.segments {
            let seg = &self.segments[s];
            match walkable(seg) {
                Some(a) => {
                    answered.push(s);
                    allowed.push(a);
                }
                // Left to an exact scan: never offered by the walk.
                None => allowed.push(Some(RowSet::empty(seg.rows()))),
            }
        }
        let others: Vec<BridgedSegment<'_>> = b
            .segments
            .iter()
            .zip(&allowed)
            .map(|(&s, a)| BridgedSegment {
                codes: self.segments[s].index.codes_view(),
                allowed: a.as_ref(),
            })
            .collect();
        let (hits, stats) = graph.walk_bridged(
            queries,
            k,
            score,
            params,
            large_allowed.as_ref(),
            &b.lists,
            &others,
        )?;
        let segment_of = std::iter::once(b.target).chain(b.segments.iter().copied());
        let found = segment_of
            .zip(hits)
            .filter(|(s, _)| answered.contains(s))
            .map(|(s, mut h)| {
                if let Some(f) = floor {
                    Cutoffs::MinScore(f).retain(&mut h);
                }
                (s, h)
            })
            .collect();
        let strategy = match large_allowed {
            None => Strategy::Plain,
            Some(_) => Strategy::Walk,
        };
        let mut chosen = vec![strategy.counter()];
        chosen.extend((1..answered.len()).map(|_| Some("bridged_segments")));
        Ok(Some((found, stats, chosen)))
    }

    /// The mode `seg` is searched by: `mode`, except that in graph mode a segment other than
    /// the largest that is small against the walk ([`SearchOptions::graph_scan_rows_per_ef`])
    /// is scanned exactly; `true` then.
    fn segment_mode(
        seg: &SegmentReader,
        largest: bool,
        mode: &Mode,
        k: usize,
        score: &Score<'_>,
        options: &SearchOptions<'_>,
    ) -> Result<(Mode, bool)> {
        match *mode {
            Mode::Hnsw(p) if !largest => {
                // Checks that the segment has its graph and that it serves the score, as a walk
                // would, before scanning instead.
                let graph = seg.index.graph_searcher(p)?;
                graph.check_score(score)?;
                // The walk's ef: the query's if it sets one (see `SearchParams`).
                let ef = options.params.ef_search.unwrap_or(graph.ef_search()).max(k);
                let per_ef = options
                    .graph_scan_rows_per_ef
                    .unwrap_or(GRAPH_SCAN_ROWS_PER_EF);
                Ok(if seg.rows() <= ef.saturating_mul(per_ef) {
                    (Mode::Flat(FlatParams::default()), true)
                } else {
                    (*mode, false)
                })
            }
            m => Ok((m, false)),
        }
    }

    /// One segment's hits by `mode`; flat searches take their quantised tables from `shared`.
    #[allow(clippy::too_many_arguments)]
    fn search_segment(
        &self,
        seg: &SegmentReader,
        queries: &[u64],
        nq: usize,
        k: usize,
        score: &Score<'_>,
        mode: &Mode,
        params: &SearchParams,
        options: &SearchOptions<'_>,
        cutoffs: Option<Cutoffs<'_>>,
        shared: &SharedTables,
    ) -> Result<(Vec<Hits>, SearchStats, Strategy)> {
        let searcher = |mode: &Mode| -> Result<Box<dyn Searcher + '_>> {
            Ok(match *mode {
                Mode::Flat(p) => Box::new(seg.index.flat_searcher(p).with_shared_tables(shared)),
                _ => seg.index.searcher(mode)?,
            })
        };
        let Some(allowed) = seg.allowed(options.filter) else {
            let searcher = searcher(mode)?;
            let (h, s) = search_with(&*searcher, queries, k, score, params, None, cutoffs)?;
            return Ok((h, s, Strategy::Plain));
        };
        let n = seg.rows();
        let excluded = n - allowed.count();
        if allowed.count() == 0 {
            // Still check that the segment has what the mode reads, as an unfiltered search would.
            check_mode(&seg.index, mode)?;
            return Ok((
                vec![Hits::none(score.has_scores()); nq],
                SearchStats::default(),
                Strategy::Empty,
            ));
        }
        let small = (allowed.count() as f64) < SUBSET_SCAN_FRACTION * n as f64;
        let strategy = match mode {
            Mode::Hnsw(_) if !small => Strategy::Walk,
            Mode::Flat(_) | Mode::Inverted(_)
                if !small && excluded <= OVERFETCH_MAX.max(n / 16) =>
            {
                Strategy::Overfetch
            }
            _ => Strategy::Subset,
        };
        let (h, s) = match strategy {
            Strategy::Subset => {
                check_mode(&seg.index, mode)?;
                subset_search(seg, &allowed, queries, k, score, params, cutoffs)?
            }
            _ => {
                let searcher = searcher(mode)?;
                let a = Some(&allowed);
                search_with(&*searcher, queries, k, score, params, a, cutoffs)?
            }
        };
        Ok((h, s, strategy))
    }

    /// [`Snapshot::rescore`] of a batch: `queries` holds one float embedding per entry of
    /// `hits` (`hits.len() x dim` values, row-major), each entry's candidates re-ranked by its
    /// query, the queries in parallel on the calling rayon pool. The results are
    /// [`Snapshot::rescore`]'s, one by one; when queries fail, one of their errors is returned
    /// (which one, of several, is not fixed).
    ///
    /// ```
    /// use bsa_index::live::{SearchOptions, Snapshot};
    /// use bsa_index::{IndexBuilder, Mode, Score};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(8, &[0b0001, 0b0010]).vectors(&[1.0, 0.0, 0.6, 0.8], 2).build(&path)?;
    /// let snap = Snapshot::open(&path)?;
    /// let flat = Mode::parse("flat")?;
    /// let (hits, _) = snap.search(&[0, 0], 2, &Score::Hamming, &flat, &SearchOptions::default())?;
    /// let best = snap.rescore_batch(&[1.0, 0.0, 0.0, 1.0], &hits, 1)?;
    /// assert_eq!((best[0].ids[0], best[1].ids[0]), (0, 1));
    /// let e = snap.rescore_batch(&[1.0, 0.0], &hits, 1).unwrap_err().to_string();
    /// assert!(e.contains("expected 4, got 2"), "{e}"); // one embedding per entry of hits
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn rescore_batch(&self, queries: &[f32], hits: &[Hits], k: usize) -> Result<Vec<Hits>> {
        use rayon::prelude::*;
        let dim = self.vector_dim().unwrap_or(0);
        if dim > 0 && queries.len() != hits.len().saturating_mul(dim) {
            return Err(Error::DimMismatch {
                what: format!("float query values ({} queries of {dim})", hits.len()),
                expected: hits.len() * dim,
                got: queries.len(),
            });
        }
        hits.par_iter()
            .enumerate()
            .map(|(i, h)| self.rescore(&queries[i * dim..(i + 1) * dim], h, k))
            .collect()
    }

    /// Re-ranks one query's hits (global rows, as a search of this snapshot returns them) by
    /// cosine similarity with `query` against the stored vectors and keeps the best `k`:
    /// descending score, ties by smaller id. The same scores as [`Index::rescore`]. Hits whose
    /// rows hold other ids here, or deleted rows (a search of another snapshot: keep one
    /// snapshot for a query's search and rescoring), are an error.
    ///
    /// ```
    /// use bsa_index::live::{NewRows, SearchOptions, Snapshot, Writer};
    /// use bsa_index::{IndexBuilder, Mode, Score};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(8, &[0b0001, 0b0010]).vectors(&[1.0, 0.0, 0.6, 0.8], 2).build(&path)?;
    /// Writer::open(&path)?.add(&NewRows::codes(&[0b0100]).vectors(&[0.0, 1.0]), false)?;
    /// let snap = Snapshot::open(&path)?;
    /// let flat = Mode::parse("flat")?;
    /// // Three codes one bit from the query, in two segments; the vectors rank them.
    /// let (hits, _) = snap.search(&[0], 3, &Score::Hamming, &flat, &SearchOptions::default())?;
    /// assert_eq!(hits[0].ids, vec![0, 1, 2]);
    /// let best = snap.rescore(&[0.0, 1.0], &hits[0], 2)?;
    /// assert_eq!(best.ids, vec![2, 1]);
    /// assert_eq!(best.rows, vec![2, 1]);
    /// // The query is the float embedding, of the stored vectors' dimension.
    /// let e = snap.rescore(&[0.0; 3], &hits[0], 2).unwrap_err().to_string();
    /// assert!(e.contains("expected 2, got 3; rescoring takes the float embedding"), "{e}");
    /// // Hits of another snapshot are refused: id 1 is deleted in the next one.
    /// Writer::open(&path)?.delete(&[1])?;
    /// let next = Snapshot::open(&path)?;
    /// let e = next.rescore(&[0.0, 1.0], &hits[0], 2).unwrap_err();
    /// assert!(e.to_string().contains("row 1 (id 1) is deleted in this snapshot"), "{e}");
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn rescore(&self, query: &[f32], hits: &Hits, k: usize) -> Result<Hits> {
        let dim = self.vector_dim().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: the index stores no vectors, so it cannot rescore; rebuild it with vectors \
                 (bsa build --vectors; vectors=True from Python)",
                self.dir.display()
            ))
        })?;
        check_query(query, dim)?;
        hits.check_lengths()?;
        let located = hits
            .rows
            .iter()
            .zip(&hits.ids)
            .map(|(&row, &id)| {
                let (s, r) = self.locate(row).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "candidate row {row} is out of range (this snapshot, generation {}, has \
                         {} rows): the hits come from another snapshot; rescore with the one \
                         that searched",
                        self.generation,
                        self.rows()
                    ))
                })?;
                // Rows name rows of the snapshot that searched: hits of another generation
                // would be scored by other rows' vectors, or return a deleted id.
                let seg = &self.segments[s];
                let (live, here) = (!seg.is_deleted(r), seg.index.ids()[r]);
                if here != id || !live {
                    return Err(Error::InvalidArgument(format!(
                        "candidate row {row} (id {id}) is {} in this snapshot (generation {}): \
                         the hits come from another snapshot; rescore with the one that searched",
                        if live {
                            format!("id {here}")
                        } else {
                            "deleted".to_string()
                        },
                        self.generation
                    )));
                }
                let v = seg.index.vectors()?.ok_or_else(|| {
                    Error::corrupt(
                        self.dir.join(&seg.name),
                        "the segment stores no vectors but the index says every segment does",
                    )
                })?;
                Ok((v, r))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut scored: Vec<(usize, f32)> =
            cosines(&located, query).into_iter().enumerate().collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(hits.ids[a.0].cmp(&hits.ids[b.0])));
        scored.truncate(k);
        Ok(Hits {
            rows: scored.iter().map(|&(p, _)| hits.rows[p]).collect(),
            ids: scored.iter().map(|&(p, _)| hits.ids[p]).collect(),
            distances: scored.iter().map(|&(p, _)| hits.distances[p]).collect(),
            scores: Some(scored.iter().map(|&(_, s)| s).collect()),
        })
    }
}

/// Fails as opening `mode`'s searcher on `index` would when the index lacks what the mode
/// reads, without loading it (a graph is checked in full when loaded: 0.13 s at 1M rows).
fn check_mode(index: &Index, mode: &Mode) -> Result<()> {
    match mode {
        Mode::Inverted(_) if !index.has_inverted() => {
            index.inverted_searcher(Default::default()).map(|_| ())
        }
        Mode::Hnsw(_) if index.graph_metric().is_none() => {
            index.graph_searcher(Default::default()).map(|_| ())
        }
        _ => Ok(()),
    }
}

/// An exact flat scan of the `allowed` rows of `seg` alone (a copy of their codes and norms),
/// with the rows and ids mapped back: the same scores as a scan of the whole segment, since
/// every score of a row depends on that row's code alone.
fn subset_search(
    seg: &SegmentReader,
    allowed: &RowSet,
    queries: &[u64],
    k: usize,
    score: &Score<'_>,
    params: &SearchParams,
    cutoffs: Option<Cutoffs<'_>>,
) -> Result<(Vec<Hits>, SearchStats)> {
    let rows: Vec<usize> = allowed.iter().collect();
    let index = &seg.index;
    let w = index.words_per_code();
    let codes = index.codes();
    let sub: Vec<u64> = rows
        .iter()
        .flat_map(|&r| &codes[r * w..(r + 1) * w])
        .copied()
        .collect();
    let norms: Option<Vec<f32>> = index
        .norms()
        .map(|nm| rows.iter().map(|&r| nm[r]).collect());
    // With the allowed rows' set bits (when the segment stores them), table scores run the
    // quantised scan as on the whole segment; on packed 4096-bit codes its bound is too loose
    // and nearly every code is re-scored (benches/RESULTS-live.md: 12x to 33x slower).
    let sparse = match index.sparse() {
        Some(_) => Some(SparseCodes::build(&sub, index.bits())?),
        None => None,
    };
    let ids = index.ids();
    let sub_ids: Vec<u64> = rows.iter().map(|&r| ids[r]).collect();
    let layouts = Layouts::default();
    let view = CodesView::from_validated(
        &sub,
        index.bits(),
        &sub_ids,
        norms.as_deref(),
        sparse.as_ref().map(SparseCodes::view),
        &layouts,
    );
    let flat = FlatSearcher::new(view, FlatParams::default());
    let (mut hits, stats) = search_with(&flat, queries, k, score, params, None, cutoffs)?;
    for h in &mut hits {
        for (row, id) in h.rows.iter_mut().zip(h.ids.iter_mut()) {
            let r = rows[*row as usize];
            *row = r as u64;
            *id = ids[r];
        }
    }
    Ok((hits, stats))
}

/// `searcher`'s search restricted to `allowed` and `cutoffs`, each when given.
fn search_with(
    searcher: &dyn Searcher,
    queries: &[u64],
    k: usize,
    score: &Score<'_>,
    params: &SearchParams,
    allowed: Option<&RowSet>,
    cutoffs: Option<Cutoffs<'_>>,
) -> Result<(Vec<Hits>, SearchStats)> {
    match (allowed, cutoffs) {
        (a, Some(c)) => searcher.search_within(queries, k, score, params, a, c),
        (Some(a), None) => searcher.search_allowed(queries, k, score, params, a),
        (None, None) => searcher.search(queries, k, score, params),
    }
}

/// Each query's best keys over the segments searched so far, for the cutoffs of the next:
/// the `k`-th best hit (once `k` hits were found), within the minimum score if one was asked.
struct BestSoFar {
    /// `k`, or 0 when no cutoffs are kept (`k` above [`MAX_CUTOFF_K`]).
    k: usize,
    scored: bool,
    min_score: Option<f32>,
    /// Per query, up to `k` keys (distances, or [`desc_key`]s of scores), unordered.
    keys: Vec<Vec<u32>>,
}

/// Above this `k` no cutoffs are kept (range searches ask for every row in range).
const MAX_CUTOFF_K: usize = 1 << 12;

impl BestSoFar {
    fn new(nq: usize, k: usize, scored: bool, min_score: Option<f32>) -> Self {
        BestSoFar {
            k: if k <= MAX_CUTOFF_K { k } else { 0 },
            scored,
            min_score,
            keys: vec![Vec::new(); nq],
        }
    }

    fn add(&mut self, hits: &[Hits]) {
        if self.k == 0 {
            return;
        }
        for (keys, h) in self.keys.iter_mut().zip(hits) {
            match &h.scores {
                Some(s) if self.scored => keys.extend(s.iter().map(|&x| desc_key(x))),
                _ => keys.extend_from_slice(&h.distances),
            }
            if keys.len() > self.k {
                keys.select_nth_unstable(self.k - 1);
                keys.truncate(self.k);
            }
        }
    }

    /// Query `q`'s `k`-th best key so far.
    fn kth(&self, q: usize) -> Option<u32> {
        let keys = &self.keys[q];
        (self.k > 0 && keys.len() == self.k).then(|| keys.iter().copied().max().unwrap_or(0))
    }

    /// The cutoffs of the next segment, as maximum distances (Hamming) or minimum scores;
    /// `None` when no query has one.
    fn cutoffs(&self) -> (Option<Vec<u32>>, Option<Vec<f32>>) {
        let nq = self.keys.len();
        let any = (0..nq).any(|q| self.kth(q).is_some());
        if self.scored {
            let floor = self.min_score.unwrap_or(f32::NEG_INFINITY);
            let min = (any || self.min_score.is_some()).then(|| {
                (0..nq)
                    .map(|q| {
                        self.kth(q)
                            .map_or(floor, |key| from_desc_key(key).max(floor))
                    })
                    .collect()
            });
            (None, min)
        } else {
            let max = any.then(|| (0..nq).map(|q| self.kth(q).unwrap_or(u32::MAX)).collect());
            (max, None)
        }
    }
}

/// Merges each query's hits from every segment: best first (ascending distance, or descending
/// score), ties by smaller id, at most `k`.
fn merge(parts: Vec<Vec<Hits>>, nq: usize, k: usize, scored: bool) -> Vec<Hits> {
    match parts.len() {
        0 => return vec![Hits::none(scored); nq],
        1 => return parts.into_iter().next().expect("one part"),
        _ => {}
    }
    (0..nq)
        .map(|q| {
            let mut all: Vec<(&Hits, usize)> = parts
                .iter()
                .flat_map(|p| (0..p[q].len()).map(move |i| (&p[q], i)))
                .collect();
            all.sort_by(|&(a, i), &(b, j)| {
                let by_key = if scored {
                    let (sa, sb) = (a.scores.as_ref(), b.scores.as_ref());
                    sb.map_or(0.0, |s| s[j])
                        .total_cmp(&sa.map_or(0.0, |s| s[i]))
                } else {
                    a.distances[i].cmp(&b.distances[j])
                };
                by_key.then(a.ids[i].cmp(&b.ids[j]))
            });
            all.truncate(k);
            Hits {
                rows: all.iter().map(|&(h, i)| h.rows[i]).collect(),
                ids: all.iter().map(|&(h, i)| h.ids[i]).collect(),
                distances: all.iter().map(|&(h, i)| h.distances[i]).collect(),
                scores: scored.then(|| {
                    all.iter()
                        .map(|&(h, i)| h.scores.as_ref().map_or(0.0, |s| s[i]))
                        .collect()
                }),
            }
        })
        .collect()
}
