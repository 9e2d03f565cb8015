//! What restricts a snapshot search beyond `k` ([`IdFilter`], [`SearchOptions`]), and the
//! measured constants that choose how a filtered or small segment is searched
//! ([`SUBSET_SCAN_FRACTION`], [`OVERFETCH_MAX`], [`GRAPH_SCAN_ROWS_PER_EF`]).

use crate::error::{Error, Result};
use crate::search::SearchParams;

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
