//! What every mode shares: the [`Searcher`] trait, its input ([`CodesView`], [`SearchParams`])
//! and output ([`Hits`], [`SearchStats`]), the checks of queries and scores, and the one
//! conversion of sorted `(key, row)` lists into hits.

use std::borrow::Cow;
use std::sync::OnceLock;

use crate::adc::AdcCodes;
use crate::error::{Error, Result};
use crate::hamming::hamming;
use crate::kernel::KernelFamily;
use crate::pack::check_high_bits_zero;
use crate::rowset::RowSet;
use crate::score::{Score, desc_key, from_desc_key};
use crate::slabs::SlabCodes;
use crate::sparse::SparseView;
use crate::topk::{key_distance, key_row};

/// A search mode: answers batches of packed queries.
///
/// Implemented by [`FlatSearcher`](crate::search::FlatSearcher), [`InvertedSearcher`](crate::search::InvertedSearcher) and
/// [`GraphSearcher`](crate::search::GraphSearcher);
/// [`Index::searcher`](crate::Index::searcher) opens the one a [`Mode`](crate::Mode) names.
/// Searchers are `Sync`: one can serve many threads at once. Queries run on the current rayon
/// pool.
///
/// ```
/// use bsa_index::search::Searcher;
/// use bsa_index::{Hits, Index, IndexBuilder, Mode, Score, SearchParams};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111, 0b1111]).inverted(true).build(&path)?;
/// let index = Index::open(&path)?;
///
/// // Code that takes any mode's searcher.
/// fn nearest(s: &dyn Searcher, query: u64) -> bsa_index::Result<Hits> {
///     let (mut hits, _stats) = s.search(&[query], 2, &Score::Hamming, &SearchParams::default())?;
///     Ok(hits.remove(0))
/// }
/// let flat = index.searcher(&Mode::parse("flat")?)?;
/// let inverted = index.searcher(&Mode::parse("inverted")?)?;
/// assert_eq!(nearest(&*flat, 0b0011)?.rows, vec![1, 0]);
/// assert_eq!(nearest(&*inverted, 0b0011)?, nearest(&*flat, 0b0011)?); // exact modes agree
/// # Ok::<(), bsa_index::Error>(())
/// ```
pub trait Searcher: Sync {
    /// The mode's name, as `bsa search --mode` spells it (`"flat"`, `"inverted"`, `"hnsw"`).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// # bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
    /// # let index = bsa_index::Index::open(&path)?;
    /// for name in ["flat", "inverted"] {
    ///     let mode = bsa_index::Mode::parse(name)?;
    ///     match index.searcher(&mode) {
    ///         Ok(searcher) => assert_eq!(searcher.mode(), name),
    ///         Err(e) => assert!(e.to_string().contains("posting lists")), // not built with them
    ///     }
    /// }
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    fn mode(&self) -> &'static str;

    /// The number of rows searched (the codes'): a row filter covers exactly these.
    ///
    /// ```
    /// use bsa_index::search::{CodesView, FlatParams, FlatSearcher, Searcher};
    /// use bsa_index::{RowSet, Score, SearchParams};
    /// let codes = [0b0111u64, 0b0110, 0b1111];
    /// let flat = FlatSearcher::new(CodesView::new(&codes, 4)?, FlatParams::default());
    /// assert_eq!(flat.rows(), 3);
    /// // A row filter ranges over exactly these rows.
    /// let mut allowed = RowSet::full(flat.rows());
    /// allowed.remove(1);
    /// let p = SearchParams::default();
    /// let (hits, _) = flat.search_allowed(&[0b0110], 3, &Score::Hamming, &p, &allowed)?;
    /// assert_eq!(hits[0].rows, vec![0, 2]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    fn rows(&self) -> usize;

    /// The best `k` rows for each query of `queries` (`nq * words_per_code` words, packed like
    /// the codes, unused high bits zero) under `score`, best first, ties by smaller row, and
    /// what the search did. `k` larger than the number of rows returns every row (exact modes).
    ///
    /// ```
    /// use bsa_index::search::{CodesView, FlatParams, FlatSearcher, Searcher};
    /// use bsa_index::{Score, SearchParams};
    /// let codes = [0b0111u64, 0b0110, 0b1111];
    /// let flat = FlatSearcher::new(CodesView::new(&codes, 4)?, FlatParams::default());
    /// let p = SearchParams::default();
    /// // Two queries; `k` above the number of rows returns every row.
    /// let (hits, stats) = flat.search(&[0b0110, 0b1000], 10, &Score::Hamming, &p)?;
    /// assert_eq!(hits[0].rows, vec![1, 0, 2]);
    /// assert_eq!(hits[1].rows, vec![1, 2, 0]); // distances 3, 3, 4: ties by row
    /// assert!(!stats.kernel.is_empty());
    /// // Queries are packed like the codes: bits past the 4th must be zero.
    /// assert!(flat.search(&[0b1_0000], 1, &Score::Hamming, &p).is_err());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    fn search(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        params: &SearchParams,
    ) -> Result<(Vec<Hits>, SearchStats)>;

    /// [`search`](Self::search) restricted to the rows of `allowed` (a set over every row of
    /// the codes): deleted rows, an id filter. The same order and ties; exact modes stay exact.
    ///
    /// The default asks the mode for `k` plus the number of excluded rows and drops the
    /// excluded ones, which is exact for exact modes (at most that many excluded rows can rank
    /// above any allowed one) and cheap when few rows are excluded. The graph walks past
    /// excluded rows instead. For a small `allowed`, scanning just those rows is cheaper:
    /// [`live`](crate::live) decides.
    ///
    /// ```
    /// use bsa_index::search::{CodesView, FlatParams, FlatSearcher, Searcher};
    /// use bsa_index::{RowSet, Score, SearchParams};
    /// let codes = [0b0001u64, 0b0011, 0b0111, 0b1111];
    /// let flat = FlatSearcher::new(CodesView::new(&codes, 4)?, FlatParams::default());
    /// let mut allowed = RowSet::full(4);
    /// allowed.remove(0);
    /// let (hits, _) = flat.search_allowed(&[0b0001], 2, &Score::Hamming, &SearchParams::default(), &allowed)?;
    /// assert_eq!(hits[0].rows, vec![1, 2]);
    /// // A set over another number of rows is refused (it would filter the wrong rows).
    /// let short = RowSet::full(2);
    /// assert!(flat.search_allowed(&[0b0001], 2, &Score::Hamming, &SearchParams::default(), &short).is_err());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    fn search_allowed(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        params: &SearchParams,
        allowed: &RowSet,
    ) -> Result<(Vec<Hits>, SearchStats)> {
        over_fetch(allowed, self.rows(), k, |k| {
            self.search(queries, k, score, params)
        })
    }

    /// The best `k` rows for each query among those within its cutoff (and in `allowed`, if
    /// given): the hits of [`search`](Self::search) or [`search_allowed`](Self::search_allowed)
    /// minus those beyond the cutoff, in the same order.
    ///
    /// A caller that merges several searches (a [`Snapshot`](crate::live::Snapshot) searching
    /// its segments) passes, for each query, the `k`-th best hit found so far: no row beyond it
    /// can enter the merged top `k`, and a mode may skip such rows early. The flat scan does
    /// (its top-k starts full, so the quantised table scan re-scores far fewer codes); the
    /// default searches as usual and drops the hits beyond the cutoffs.
    ///
    /// ```
    /// use bsa_index::search::{CodesView, Cutoffs, FlatParams, FlatSearcher, Searcher};
    /// use bsa_index::{Score, SearchParams};
    /// let codes = [0b0001u64, 0b0011, 0b0111, 0b1111];
    /// let flat = FlatSearcher::new(CodesView::new(&codes, 4)?, FlatParams::default());
    /// let p = SearchParams::default();
    /// // Two queries: the first wants distances up to 1, the second up to 3.
    /// let cut = Cutoffs::MaxDistance(&[1, 3]);
    /// let (hits, _) = flat.search_within(&[0b0001, 0b0001], 3, &Score::Hamming, &p, None, cut)?;
    /// assert_eq!(hits[0].rows, vec![0, 1]);
    /// assert_eq!(hits[1].rows, vec![0, 1, 2]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    fn search_within(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        params: &SearchParams,
        allowed: Option<&RowSet>,
        cutoffs: Cutoffs<'_>,
    ) -> Result<(Vec<Hits>, SearchStats)> {
        cutoffs.check_score(score)?;
        let (mut hits, stats) = match allowed {
            Some(a) => self.search_allowed(queries, k, score, params, a)?,
            None => self.search(queries, k, score, params)?,
        };
        cutoffs.check_len(hits.len())?;
        cutoffs.retain(&mut hits);
        Ok((hits, stats))
    }
}

/// For each query, the worst hit still wanted: hits beyond it are left out (see
/// [`Searcher::search_within`]). Inclusive: a hit at the cutoff is kept.
///
/// ```
/// use bsa_index::search::{CodesView, Cutoffs, FlatParams, FlatSearcher, Searcher};
/// use bsa_index::{Score, SearchParams};
/// let codes = [0b0001u64, 0b0011, 0b0111];
/// let flat = FlatSearcher::new(CodesView::new(&codes, 4)?, FlatParams::default());
/// // Scores rank by minimum score (binary cosine with 0b0001: 1.0, 0.71, 0.58).
/// let cut = Cutoffs::MinScore(&[0.6]);
/// let (hits, _) = flat.search_within(&[0b0001], 3, &Score::Cosine, &SearchParams::default(), None, cut)?;
/// assert_eq!(hits[0].rows, vec![0, 1]);
/// // A cutoff of the wrong kind for the score is refused.
/// let wrong = Cutoffs::MaxDistance(&[1]);
/// assert!(flat.search_within(&[0b0001], 3, &Score::Cosine, &SearchParams::default(), None, wrong).is_err());
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cutoffs<'a> {
    /// For the Hamming score: per query, the largest distance wanted.
    MaxDistance(&'a [u32]),
    /// For every other score: per query, the smallest score wanted (not NaN).
    MinScore(&'a [f32]),
}

impl Cutoffs<'_> {
    /// Number of queries.
    ///
    /// ```
    /// use bsa_index::search::Cutoffs;
    /// assert_eq!(Cutoffs::MaxDistance(&[1, 3]).len(), 2);
    /// assert!(Cutoffs::MinScore(&[]).is_empty());
    /// ```
    pub fn len(&self) -> usize {
        match self {
            Cutoffs::MaxDistance(d) => d.len(),
            Cutoffs::MinScore(s) => s.len(),
        }
    }

    /// Whether there are no queries.
    ///
    /// ```
    /// use bsa_index::search::Cutoffs;
    /// assert!(Cutoffs::MaxDistance(&[]).is_empty());
    /// assert!(!Cutoffs::MinScore(&[0.5]).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Query `q`'s cutoff as a search key (distance, or [`desc_key`] of the score): rows with a
    /// larger key are beyond it.
    pub(crate) fn key(&self, q: usize) -> u32 {
        match self {
            Cutoffs::MaxDistance(d) => d[q],
            Cutoffs::MinScore(s) => desc_key(s[q]),
        }
    }

    /// Every query's cutoff as a search key.
    pub(crate) fn keys(&self) -> Vec<u32> {
        (0..self.len()).map(|q| self.key(q)).collect()
    }

    /// Checks that the cutoffs are of the kind `score` ranks by.
    pub(crate) fn check_score(&self, score: &Score<'_>) -> Result<()> {
        match (self, score.has_scores()) {
            (Cutoffs::MaxDistance(_), false) => Ok(()),
            (Cutoffs::MinScore(s), true) => match s.iter().position(|x| x.is_nan()) {
                Some(q) => Err(Error::InvalidArgument(format!(
                    "the minimum score of query {q} is NaN"
                ))),
                None => Ok(()),
            },
            (Cutoffs::MaxDistance(_), true) => Err(Error::InvalidArgument(format!(
                "{} ranks by score: give minimum scores, not maximum distances",
                score.name()
            ))),
            (Cutoffs::MinScore(_), false) => Err(Error::InvalidArgument(
                "hamming ranks by distance: give maximum distances, not minimum scores".into(),
            )),
        }
    }

    /// Checks that there is one cutoff per query.
    pub(crate) fn check_len(&self, nq: usize) -> Result<()> {
        if self.len() != nq {
            return Err(Error::DimMismatch {
                what: "cutoffs (one per query)".into(),
                expected: nq,
                got: self.len(),
            });
        }
        Ok(())
    }

    /// Drops each query's hits beyond its cutoff.
    pub(crate) fn retain(&self, hits: &mut [Hits]) {
        for (q, h) in hits.iter_mut().enumerate() {
            let keep: Vec<bool> = match self {
                Cutoffs::MaxDistance(d) => h.distances.iter().map(|&x| x <= d[q]).collect(),
                Cutoffs::MinScore(s) => match h.scores.as_deref() {
                    Some(scores) => scores
                        .iter()
                        .map(|&x| desc_key(x) <= desc_key(s[q]))
                        .collect(),
                    None => vec![true; h.len()],
                },
            };
            let mut i = 0;
            h.retain_rows(|_| {
                i += 1;
                keep[i - 1]
            });
        }
    }
}

/// [`Searcher::search_within`] for a mode that takes cutoffs as per-query key limits:
/// `run(k, limits)` searches `queries` over `codes` with them; a filter is answered by
/// over-fetching, as [`Searcher::search_allowed`] does (exact: at most the excluded rows can
/// rank above an allowed one within the cutoff). Hits beyond a cutoff that `run` may still
/// return are dropped.
pub(crate) fn search_within_by(
    codes: &CodesView<'_>,
    queries: &[u64],
    k: usize,
    score: &Score<'_>,
    allowed: Option<&RowSet>,
    cutoffs: Cutoffs<'_>,
    run: impl FnOnce(usize, &[u32]) -> Result<(Vec<Hits>, SearchStats)>,
) -> Result<(Vec<Hits>, SearchStats)> {
    let nq = check_queries(queries, codes.words_per_code(), codes.bits())?;
    cutoffs.check_score(score)?;
    cutoffs.check_len(nq)?;
    let limits = cutoffs.keys();
    let (mut hits, stats) = match allowed {
        None => run(k, &limits)?,
        Some(allowed) => over_fetch(allowed, codes.len(), k, |k| run(k, &limits))?,
    };
    cutoffs.retain(&mut hits);
    Ok((hits, stats))
}

/// A search of `rows` rows restricted to `allowed` by over-fetching: `run(k2)` searches them
/// all for `k2` = `k` plus the rows `allowed` leaves out, which is exact (at most those can
/// rank above an allowed row), and the hits left out are dropped.
fn over_fetch(
    allowed: &RowSet,
    rows: usize,
    k: usize,
    run: impl FnOnce(usize) -> Result<(Vec<Hits>, SearchStats)>,
) -> Result<(Vec<Hits>, SearchStats)> {
    check_allowed(allowed, rows)?;
    let excluded = allowed.len() - allowed.count();
    let (mut hits, stats) = run(k.saturating_add(excluded))?;
    for h in &mut hits {
        h.retain_rows(|r| allowed.contains(r as usize));
        h.truncate(k);
    }
    Ok((hits, stats))
}

/// Checks that a filter ranges over exactly the `n` rows being searched.
pub(crate) fn check_allowed(allowed: &RowSet, n: usize) -> Result<()> {
    if allowed.len() != n {
        return Err(Error::InvalidArgument(format!(
            "a row filter over {} rows cannot restrict a search of {n} rows",
            allowed.len()
        )));
    }
    Ok(())
}

/// What a search did, for `bsa search --stats`.
///
/// ```
/// use bsa_index::search::Searcher;
/// use bsa_index::{Index, IndexBuilder, KernelFamily, Mode, Score, SearchParams};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// IndexBuilder::new(64, &[1, 2, 3]).inverted(true).build(&path)?;
/// let index = Index::open(&path)?;
/// let portable = SearchParams::default().with_kernel(Some(KernelFamily::Portable));
/// let (_, stats) = index.searcher(&Mode::parse("flat")?)?.search(&[1], 1, &Score::Hamming, &portable)?;
/// assert_eq!(stats.kernel_family, Some(KernelFamily::Portable));
/// assert!(stats.kernel.starts_with("portable"));
/// // Each mode counts what it did.
/// let forced = portable.with_force_inverted(true);
/// let (_, stats) = index.searcher(&Mode::parse("inverted")?)?.search(&[1], 1, &Score::Hamming, &forced)?;
/// assert_eq!(stats.counter("inverted_queries"), Some(1));
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SearchStats {
    /// The kernel family that ran, if the mode uses the family's kernels.
    pub kernel_family: Option<KernelFamily>,
    /// The distance kernel's name (e.g. `"avx512-w16"`).
    pub kernel: &'static str,
    /// The quantised table scan's kernel, when a flat table-score search ran it (e.g.
    /// `"avx512-gather-sparse"`, see [`crate::adc`]).
    pub table_kernel: Option<&'static str>,
    /// The mode's own counters, by name (e.g. the inverted search's `"postings_visited"`).
    /// Those whose names end in `segments` (`"segments"`, `"bridged_segments"`, ...) count the
    /// segments a search went through and how; the others count work (rows, postings, nodes).
    pub counters: Vec<(&'static str, u64)>,
}

impl SearchStats {
    /// The counter called `name`, if the mode reported it.
    ///
    /// ```
    /// use bsa_index::{live::Snapshot, IndexBuilder, Mode, Score};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &[1, 2, 3]).build(&path)?;
    /// let snap = Snapshot::open(&path)?;
    /// let (_, stats) = snap.search(&[1], 1, &Score::Hamming, &Mode::parse("flat")?, &Default::default())?;
    /// assert_eq!(stats.counter("segments"), Some(1));
    /// assert_eq!(stats.counter("no such counter"), None);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, v)| v)
    }

    /// Takes in the counters of another batch of queries of the same search: the work counters
    /// add up, the counters of segments are counted once (every batch went through the same
    /// segments the same way). The kernels stay this batch's.
    #[cfg(feature = "float-queries")] // for `query`'s batches
    pub(crate) fn add_batch(&mut self, other: SearchStats) {
        for (name, v) in other.counters {
            match self.counters.iter_mut().find(|(n, _)| *n == name) {
                Some((_, total)) if name.ends_with("segments") => *total = (*total).max(v),
                Some((_, total)) => *total += v,
                None => self.counters.push((name, v)),
            }
        }
    }
}

/// Borrowed codes with what every searcher may need beside them: their ids, the per-code norms
/// of normalised table scores, and the per-code set bits of table scores.
///
/// Built by [`Index::codes_view`](crate::Index::codes_view) on a mapped index, or by
/// [`CodesView::new`] on bare slices (then ids are rows).
///
/// ```
/// use bsa_index::search::{CodesView, FlatParams, FlatSearcher, Searcher};
/// use bsa_index::{Score, SearchParams};
/// // Two 100-bit codes, two words each: bare slices, so ids are rows.
/// let codes = [0b1011u64, 1 << 35, 0b0001, 0];
/// let view = CodesView::new(&codes, 100)?;
/// assert_eq!((view.len(), view.bits(), view.words_per_code()), (2, 100, 2));
/// let flat = FlatSearcher::new(view, FlatParams::default());
/// let (hits, _) = flat.search(&[0b0001, 0], 2, &Score::Hamming, &SearchParams::default())?;
/// assert_eq!((hits[0].ids.clone(), hits[0].distances.clone()), (vec![1, 0], vec![0, 3]));
/// // Codes that are not whole rows are refused.
/// assert!(CodesView::new(&codes[..3], 100).is_err());
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct CodesView<'a> {
    codes: &'a [u64],
    w: usize,
    bits: usize,
    ids: Option<&'a [u64]>,
    norms: Option<&'a [f32]>,
    sparse: Option<SparseView<'a>>,
    /// The index's layouts of the codes built at first use, if any.
    layouts: Option<&'a Layouts>,
}

/// What an index derives from its codes at first use and keeps for later searches: the codes
/// in the layout of the quantised table scan ([`crate::adc`], or why it could not be built),
/// and in the slabs of the batch Hamming scan ([`crate::slabs`]).
#[derive(Debug, Default)]
pub(crate) struct Layouts {
    adc: OnceLock<std::result::Result<AdcCodes, String>>,
    slabs: OnceLock<Option<SlabCodes>>,
}

impl<'a> CodesView<'a> {
    /// A view of `codes`, `n * ceil(bits / 64)` words holding `n < 2^32` codes of `bits` bits.
    ///
    /// ```
    /// let view = bsa_index::search::CodesView::new(&[1, 2, 3], 64)?;
    /// assert_eq!((view.len(), view.words_per_code()), (3, 1));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn new(codes: &'a [u64], bits: usize) -> Result<Self> {
        let w = bits.div_ceil(64);
        if bits == 0 {
            return Err(Error::InvalidArgument("codes need at least one bit".into()));
        }
        if !codes.len().is_multiple_of(w) || codes.len() / w > u32::MAX as usize {
            return Err(Error::InvalidArgument(
                "codes are not whole rows or exceed 2^32-1 rows".into(),
            ));
        }
        Ok(CodesView {
            codes,
            w,
            bits,
            ids: None,
            norms: None,
            sparse: None,
            layouts: None,
        })
    }

    /// A view of an index's validated files (no checks).
    pub(crate) fn from_validated(
        codes: &'a [u64],
        bits: usize,
        ids: &'a [u64],
        norms: Option<&'a [f32]>,
        sparse: Option<SparseView<'a>>,
        layouts: &'a Layouts,
    ) -> Self {
        CodesView {
            codes,
            w: bits.div_ceil(64),
            bits,
            ids: Some(ids),
            norms,
            sparse,
            layouts: Some(layouts),
        }
    }

    /// The codes (with their norms) in the layout of the quantised table scan, from the index's
    /// cache (built now if this is the first table-score search); `None` for bare slices or
    /// codes the layout cannot hold (the table scans then build or do without one).
    pub(crate) fn adc_codes(&self) -> Option<&'a AdcCodes> {
        self.layouts?
            .adc
            .get_or_init(|| {
                AdcCodes::of_codes(self.codes, self.bits, self.sparse.as_ref(), self.norms)
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .ok()
    }

    /// The codes in slabs when a Hamming batch of `queries` with `family` (resolved) runs on
    /// them ([`crate::slabs::used_for`]): from the index's cache (built now if this batch is
    /// large enough to repay it), or built for this search on bare slices. An index keeps the
    /// slabs of the first family that built them; a family of another width scans row-major.
    pub(crate) fn slabs_for(
        &self,
        family: KernelFamily,
        queries: &[u64],
    ) -> Option<Cow<'a, SlabCodes>> {
        let lane_words = crate::slabs::lane_words(family)?;
        let nq = queries.len() / self.w;
        let built = self.slabs_built(family);
        if !crate::slabs::used_for(family, nq, self.bits, built) {
            return None;
        }
        let build = || SlabCodes::build(self.codes, self.bits, lane_words);
        let Some(l) = self.layouts else {
            return build().map(Cow::Owned);
        };
        // Not `get_or_init`: the build runs on rayon's pool, whose waiting threads may take up
        // another search of this index, which would then block on the cell for ever. Two
        // searches may both build; one result is kept.
        if l.slabs.get().is_none() {
            let _ = l.slabs.set(build());
        }
        l.slabs
            .get()
            .and_then(Option::as_ref)
            .filter(|s| s.lane_words() == lane_words)
            .map(Cow::Borrowed)
    }

    /// Whether the index's slabs are built for `family` (then batches from 8 queries use them).
    pub(crate) fn slabs_built(&self, family: KernelFamily) -> bool {
        self.layouts.and_then(|l| l.slabs.get()).is_some_and(|s| {
            s.as_ref().map(SlabCodes::lane_words) == crate::slabs::lane_words(family)
        })
    }

    /// The same view with per-code norms (one per code), for normalised table scores.
    ///
    /// ```
    /// use bsa_index::search::{CodesView, FlatParams, FlatSearcher, Searcher};
    /// use bsa_index::{Score, SearchParams};
    /// let codes = [0b01u64, 0b11];
    /// let view = CodesView::new(&codes, 2)?.with_norms(Some(&[1.0, 4.0]))?;
    /// // A normalised table score divides each code's sum by its norm: 1/1 and (1+1)/4.
    /// let table = Score::Table { tables: &[1.0, 1.0], offsets: &[0.0], normalise: true };
    /// let flat = FlatSearcher::new(view, FlatParams::default());
    /// let (hits, _) = flat.search(&[0], 2, &table, &SearchParams::default())?;
    /// assert_eq!(hits[0].scores, Some(vec![1.0, 0.5]));
    /// // One norm per code.
    /// assert!(CodesView::new(&codes, 2)?.with_norms(Some(&[1.0])).is_err());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn with_norms(mut self, norms: Option<&'a [f32]>) -> Result<Self> {
        if let Some(v) = norms
            && v.len() != self.len()
        {
            return Err(Error::DimMismatch {
                what: "norms (one per code)".into(),
                expected: self.len(),
                got: v.len(),
            });
        }
        self.norms = norms;
        Ok(self)
    }

    /// Number of codes.
    ///
    /// ```
    /// let view = bsa_index::search::CodesView::new(&[1, 2, 3, 4], 128)?;
    /// assert_eq!(view.len(), 2); // two codes of two words
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.codes.len() / self.w
    }

    /// Whether there are no codes.
    ///
    /// ```
    /// use bsa_index::search::CodesView;
    /// assert!(CodesView::new(&[], 64)?.is_empty());
    /// assert!(!CodesView::new(&[7], 64)?.is_empty());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// Bits per code.
    ///
    /// ```
    /// let view = bsa_index::search::CodesView::new(&[1, 2], 12)?;
    /// assert_eq!(view.bits(), 12);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// `u64` words per code.
    ///
    /// ```
    /// let view = bsa_index::search::CodesView::new(&[1, 2, 3], 130)?;
    /// assert_eq!((view.words_per_code(), view.len()), (3, 1));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn words_per_code(&self) -> usize {
        self.w
    }

    /// All codes, row-major.
    ///
    /// ```
    /// let codes = [1u64, 2, 3, 4];
    /// let view = bsa_index::search::CodesView::new(&codes, 128)?;
    /// assert_eq!(view.codes(), &codes);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn codes(&self) -> &'a [u64] {
        self.codes
    }

    /// The per-code set bits, if the view has them.
    ///
    /// ```
    /// use bsa_index::{search::CodesView, Index, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// assert!(CodesView::new(&[0b1011], 64)?.sparse().is_none()); // bare slices have none
    /// IndexBuilder::new(64, &[0b1011]).sparse(Some(true)).build(&path)?;
    /// let index = Index::open(&path)?;
    /// assert_eq!(index.codes_view().sparse().unwrap().row(0), &[0, 1, 3]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn sparse(&self) -> Option<SparseView<'a>> {
        self.sparse
    }

    /// The per-code norms, if the view has them.
    ///
    /// ```
    /// use bsa_index::search::CodesView;
    /// let view = CodesView::new(&[1, 2], 64)?;
    /// assert_eq!(view.norms(), None);
    /// assert_eq!(view.with_norms(Some(&[0.5, 2.0]))?.norms(), Some(&[0.5, 2.0][..]));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn norms(&self) -> Option<&'a [f32]> {
        self.norms
    }

    /// Checks `queries` and `score` against these codes and returns the number of queries and
    /// the norms a normalised table score divides by.
    pub(crate) fn check(
        &self,
        queries: &[u64],
        score: &Score<'_>,
        params: &SearchParams,
    ) -> Result<(usize, Option<&'a [f32]>)> {
        let nq = check_queries(queries, self.w, self.bits)?;
        if score.has_scores() && params.max_distance.is_some() {
            return Err(Error::InvalidArgument(format!(
                "a maximum Hamming distance applies to the hamming score only, not {}",
                score.name()
            )));
        }
        score.validate(nq, self.bits)?;
        Ok((nq, self.norms_for(score)?))
    }

    /// The norms `score` divides by: these codes' norms for a normalised table score (an error
    /// when the view has none), else `None`.
    pub(crate) fn norms_for(&self, score: &Score<'_>) -> Result<Option<&'a [f32]>> {
        match score {
            Score::Table {
                normalise: true, ..
            } => Ok(Some(self.norms.ok_or_else(|| {
                Error::InvalidArgument(
                    "a normalised table score needs per-code norms; build the index with norms (bsa build --model)"
                        .into(),
                )
            })?)),
            _ => Ok(None),
        }
    }

    /// Turns each query's sorted `(key, row)` list into [`Hits`]: ids from the view, and for
    /// scored searches the scores decoded from the keys and the Hamming distances recomputed
    /// from the codes (`u32::MAX` with [`SearchParams::skip_distances`]). The one place where
    /// keys become hits.
    pub(crate) fn hits(
        &self,
        keys: &[Vec<u64>],
        queries: &[u64],
        scored: bool,
        params: &SearchParams,
    ) -> Vec<Hits> {
        use rayon::prelude::*;
        let w = self.w;
        keys.par_iter()
            .enumerate()
            .map(|(qi, keys)| {
                let rows: Vec<u64> = keys.iter().map(|&k| u64::from(key_row(k))).collect();
                let ids = match self.ids {
                    Some(ids) => rows.iter().map(|&r| ids[r as usize]).collect(),
                    None => rows.clone(),
                };
                let (distances, scores) = if scored {
                    let d = if params.skip_distances {
                        vec![u32::MAX; rows.len()]
                    } else {
                        self.hamming_of(&queries[qi * w..(qi + 1) * w], &rows)
                    };
                    let s = keys
                        .iter()
                        .map(|&k| from_desc_key(key_distance(k)))
                        .collect();
                    (d, Some(s))
                } else {
                    (keys.iter().map(|&k| key_distance(k)).collect(), None)
                };
                Hits {
                    rows,
                    ids,
                    distances,
                    scores,
                }
            })
            .collect()
    }

    /// The Hamming distances from `query` to codes `rows`. With the set bits at hand it reads
    /// those (a few cache lines the search has just touched) instead of whole packed codes:
    /// `|q ^ c| = |q| + |c| - 2 |q & c|`, the same number.
    fn hamming_of(&self, query: &[u64], rows: &[u64]) -> Vec<u32> {
        let w = self.w;
        match self.sparse() {
            Some(sv) => {
                let ones = crate::bits::popcount(query);
                rows.iter()
                    .map(|&r| {
                        let set = sv.row(r as usize);
                        let common: u32 = set
                            .iter()
                            .map(|&j| (query[usize::from(j) / 64] >> (j % 64) & 1) as u32)
                            .sum();
                        ones + set.len() as u32 - 2 * common
                    })
                    .collect()
            }
            None => rows
                .iter()
                .map(|&r| {
                    let r = r as usize;
                    hamming(query, &self.codes[r * w..(r + 1) * w])
                })
                .collect(),
        }
    }
}

/// How to divide the work between threads.
///
/// ```
/// use bsa_index::search::{CodesView, FlatParams, FlatSearcher, Searcher, Split};
/// use bsa_index::{Score, SearchParams};
/// let codes: Vec<u64> = (0..1000).collect();
/// let flat = FlatSearcher::new(CodesView::new(&codes, 64)?, FlatParams::default());
/// let search = |split| {
///     let p = SearchParams::default().with_split(split);
///     flat.search(&[7, 512], 5, &Score::Hamming, &p).map(|(hits, _)| hits)
/// };
/// // The split changes who does the work, never the answer.
/// let by_queries = search(Split::Queries)?;
/// assert_eq!(by_queries, search(Split::Codes)?);
/// assert_eq!(by_queries, search(Split::Auto)?);
/// assert_eq!(by_queries[0].rows, vec![7, 3, 5, 6, 15]);
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Split {
    /// Split codes into chunks when there are too few query blocks to keep every thread busy (default).
    #[default]
    Auto,
    /// Only split queries (FAISS's strategy: one query is scanned by one thread).
    Queries,
    /// Always split codes into at least one chunk per thread.
    Codes,
}

/// Query-time options.
///
/// Every [`Searcher`] reads [`max_distance`](Self::max_distance) and [`kernel`](Self::kernel).
/// The other fields are the modes' own parameters, for one search: a searcher's own parameter
/// type ([`FlatParams`](crate::search::FlatParams), [`InvertedParams`](crate::search::InvertedParams),
/// [`GraphParams`](crate::search::GraphParams), set through [`Mode`](crate::Mode)) holds its
/// defaults, and a field set here (`ef_search` given, `split` other than `Auto`,
/// `force_inverted` true) overrides them for that search; the other modes ignore it.
///
/// ```
/// use bsa_index::{Index, IndexBuilder, KernelFamily, SearchParams};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// IndexBuilder::new(4, &[0b0111, 0b0110, 0b1111, 0b0000]).build(&path)?;
/// let index = Index::open(&path)?;
/// let params = SearchParams::default()
///     .with_max_distance(Some(1))
///     .with_kernel(Some(KernelFamily::Portable));
/// let hits = index.search_flat(&[0b0111], 10, &params)?;
/// assert_eq!(hits[0].rows, vec![0, 1, 2]);
/// assert_eq!(hits[0].distances, vec![0, 1, 1]);
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SearchParams {
    /// Return only neighbours at Hamming distance `<= max_distance`.
    pub max_distance: Option<u32>,
    /// HNSW only: candidate list size (`ef`); `None` uses the value stored at build time,
    /// raised to `k` (see [`GraphParams::ef_search`](crate::search::GraphParams::ef_search)).
    pub ef_search: Option<usize>,
    /// Flat only: how to divide the work between threads.
    pub split: Split,
    /// Inverted only: answer every query from the posting lists, even those the cost rule would
    /// send to the flat scan (for tests and benchmarks; results are identical either way).
    pub force_inverted: bool,
    /// The kernel family to search with; `None`: `BSA_KERNEL` if set, else the fastest this CPU
    /// has ([`KernelFamily::active`]). Results are identical with every family; a family the
    /// CPU lacks makes the search fail. It is the family of the search's scans: what the model
    /// computes before a search (query codes, ADC tables) follows `BSA_KERNEL`
    /// ([`KernelFamily::current`]).
    pub kernel: Option<KernelFamily>,
    /// Scored searches only: leave every hit's Hamming distance at `u32::MAX` instead of
    /// recomputing it from the codes (for callers that read only the scores; the query codes of
    /// a table score are then not read at all). Ids, scores and order are the same.
    pub skip_distances: bool,
}

impl SearchParams {
    /// Sets [`max_distance`](Self::max_distance).
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(8, &[0b0001, 0b0011, 0b0111, 0b1111]).build(&path)?;
    /// let index = Index::open(&path)?;
    /// let within_2 = SearchParams::default().with_max_distance(Some(2));
    /// let hits = index.search_flat(&[0b0001], 10, &within_2)?;
    /// assert_eq!(hits[0].distances, vec![0, 1, 2]); // not 3
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn with_max_distance(mut self, d: Option<u32>) -> Self {
        self.max_distance = d;
        self
    }
    /// Sets [`ef_search`](Self::ef_search).
    ///
    /// ```
    /// # if cfg!(not(feature = "hnsw-rs")) { return Ok(()); } // a graph over the codes: hnsw_rs
    /// use bsa_index::{HnswParams, Index, IndexBuilder, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let codes: Vec<u64> = (0..64).map(|i| (1u64 << i) - 1).collect();
    /// IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).build(&path)?;
    /// let index = Index::open(&path)?;
    /// // A longer candidate list than the build's default (64): slower, closer to exact.
    /// let wide = SearchParams::default().with_ef_search(Some(128));
    /// let hits = index.search_hnsw(&[(1 << 10) - 1], 3, &wide)?;
    /// assert_eq!((hits[0].rows[0], hits[0].distances[0]), (10, 0));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn with_ef_search(mut self, ef: Option<usize>) -> Self {
        self.ef_search = ef;
        self
    }
    /// Sets [`split`](Self::split).
    ///
    /// ```
    /// use bsa_index::{search::Split, SearchParams};
    /// // FAISS's strategy: each query scanned by one thread.
    /// let p = SearchParams::default().with_split(Split::Queries);
    /// assert_eq!((p.split, SearchParams::default().split), (Split::Queries, Split::Auto));
    /// ```
    pub fn with_split(mut self, split: Split) -> Self {
        self.split = split;
        self
    }
    /// Sets [`force_inverted`](Self::force_inverted).
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder, Score, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &[1, 2, 3, 4]).inverted(true).build(&path)?;
    /// let index = Index::open(&path)?;
    /// let forced = SearchParams::default().with_force_inverted(true);
    /// let (hits, stats) = index.search_inverted(&[1, 3], 2, &Score::Hamming, &forced)?;
    /// assert_eq!((stats.inverted_queries, stats.flat_queries), (2, 0));
    /// // The same answer the flat scan gives.
    /// assert_eq!(hits, index.search_flat(&[1, 3], 2, &SearchParams::default())?);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn with_force_inverted(mut self, yes: bool) -> Self {
        self.force_inverted = yes;
        self
    }
    /// Sets [`skip_distances`](Self::skip_distances).
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder, Score, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(8, &[0b0001, 0b0011]).build(&path)?;
    /// let index = Index::open(&path)?;
    /// let p = SearchParams::default().with_skip_distances(true);
    /// let hits = index.search_flat_scored(&[0b0011], 2, &Score::Jaccard, &p)?;
    /// assert_eq!(hits[0].rows, vec![1, 0]);
    /// assert_eq!(hits[0].scores, Some(vec![1.0, 0.5]));
    /// assert_eq!(hits[0].distances, vec![u32::MAX, u32::MAX]);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn with_skip_distances(mut self, yes: bool) -> Self {
        self.skip_distances = yes;
        self
    }
    /// Sets [`kernel`](Self::kernel).
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder, KernelFamily, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// let codes: Vec<u64> = (0..200).map(|i: u64| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
    /// IndexBuilder::new(64, &codes).build(&path)?;
    /// let index = Index::open(&path)?;
    /// let reference = index.search_flat(&codes[..4], 5, &SearchParams::default())?;
    /// // Every family this CPU has gives the same hits; the others are refused.
    /// for family in KernelFamily::ALL {
    ///     let p = SearchParams::default().with_kernel(Some(family));
    ///     match index.search_flat(&codes[..4], 5, &p) {
    ///         Ok(hits) => assert_eq!(hits, reference),
    ///         Err(_) => assert!(!family.is_supported()),
    ///     }
    /// }
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn with_kernel(mut self, family: Option<KernelFamily>) -> Self {
        self.kernel = family;
        self
    }

    /// A copy with [`kernel`](Self::kernel) resolved ([`KernelFamily::resolve`]): what every
    /// public search runs first, so a bad `BSA_KERNEL` or a family the CPU lacks is an error.
    pub(crate) fn resolved(&self) -> Result<SearchParams> {
        Ok(self.with_kernel(Some(KernelFamily::resolve(self.kernel)?)))
    }

    /// The split to use where a searcher's own is `own`: this search's, if it sets one.
    pub(crate) fn split_over(&self, own: Split) -> Split {
        match self.split {
            Split::Auto => own,
            split => split,
        }
    }

    /// The kernel family to run: the resolved one (the fastest supported if unresolved).
    pub(crate) fn family(&self) -> KernelFamily {
        self.kernel
            .filter(|f| f.is_supported())
            .unwrap_or_else(KernelFamily::best)
    }
}

/// The neighbours of one query, best first: by ascending Hamming distance, or by descending
/// score when there are [`scores`](Self::scores); ties by ascending row in one index's answer,
/// by ascending id in a [`Snapshot`](crate::live::Snapshot)'s (merged over its segments).
///
/// ```
/// use bsa_index::{Index, IndexBuilder, SearchParams};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// IndexBuilder::new(8, &[0b0011, 0b0001, 0b0111]).ids(&[30, 10, 20]).build(&path)?;
/// let index = Index::open(&path)?;
/// let hits = &index.search_flat(&[0b0001], 2, &SearchParams::default())?[0];
/// // Parallel lists, best first; rows are stored in id order.
/// assert_eq!(hits.rows, vec![0, 2]);
/// assert_eq!(hits.ids, vec![10, 30]);
/// assert_eq!(hits.distances, vec![0, 1]);
/// assert_eq!(hits.scores, None); // Hamming search
/// for hit in hits.iter() {
///     println!("id {} at distance {}", hit.id, hit.distance);
/// }
/// // As JSON, the lists side by side (a server's answer).
/// let json = serde_json::to_string(hits).unwrap();
/// assert_eq!(json, r#"{"rows":[0,2],"ids":[10,30],"distances":[0,1],"scores":null}"#);
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
#[non_exhaustive]
pub struct Hits {
    /// Row numbers (0-based positions in the index).
    pub rows: Vec<u64>,
    /// External ids of the rows (equal to `rows` when the index has no ids, or for bare slices).
    pub ids: Vec<u64>,
    /// Hamming distances.
    pub distances: Vec<u32>,
    /// Scores, best first: the [`Score`] of a non-Hamming search, or cosine similarities after
    /// rescoring (then the order is by descending score, ties by row for [`Index`](crate::Index)
    /// and by id for a [`Snapshot`](crate::live::Snapshot)). `None` for Hamming search.
    pub scores: Option<Vec<f32>>,
}

/// One neighbour of [`Hits`] ([`Hits::iter`]).
///
/// ```
/// let hit = bsa_index::Hit { row: 0, id: 7, distance: 3, score: Some(0.5) };
/// assert_eq!((hit.id, hit.score), (7, Some(0.5)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Hit {
    /// Row number (0-based position in the index).
    pub row: u64,
    /// External id.
    pub id: u64,
    /// Hamming distance.
    pub distance: u32,
    /// The score, for a non-Hamming search or after rescoring.
    pub score: Option<f32>,
}

impl Hits {
    /// No neighbours, as a search answers when no row qualifies: with `scored`, the empty
    /// scores every answer of a scored search carries.
    ///
    /// ```
    /// use bsa_index::Hits;
    /// assert_eq!(Hits::none(true).scores, Some(vec![]));
    /// assert!(Hits::none(false).scores.is_none() && Hits::none(false).is_empty());
    /// ```
    pub fn none(scored: bool) -> Hits {
        Hits {
            scores: scored.then(Vec::new),
            ..Hits::default()
        }
    }

    /// The neighbours one by one, best first.
    ///
    /// # Panics
    /// If the fields were changed to different lengths (searches return them equal, and
    /// [`Hits::from_parts`] and the rescoring functions refuse them otherwise).
    ///
    /// ```
    /// use bsa_index::{Hit, Hits};
    /// let hits = Hits::from_parts(vec![4, 2], vec![40, 20], vec![0, 3])?;
    /// let all: Vec<Hit> = hits.iter().collect();
    /// assert_eq!(all[1], Hit { row: 2, id: 20, distance: 3, score: None });
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Hit> + '_ {
        (0..self.len()).map(|i| Hit {
            row: self.rows[i],
            id: self.ids[i],
            distance: self.distances[i],
            score: self.scores.as_ref().map(|s| s[i]),
        })
    }

    /// Number of neighbours.
    ///
    /// ```
    /// let hits = bsa_index::Hits::from_parts(vec![4, 2], vec![40, 20], vec![0, 3])?;
    /// assert_eq!(hits.len(), 2);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    /// Whether there are no neighbours.
    ///
    /// ```
    /// use bsa_index::{Index, IndexBuilder, SearchParams};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(8, &[0b1111]).build(&path)?;
    /// let index = Index::open(&path)?;
    /// // No code within distance 1 of the query.
    /// let near = SearchParams::default().with_max_distance(Some(1));
    /// assert!(index.search_flat(&[0b0000], 5, &near)?[0].is_empty());
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Keeps the hits whose row passes `keep`, in order.
    ///
    /// ```
    /// let mut hits = bsa_index::Hits::from_parts(vec![4, 2, 7], vec![40, 20, 70], vec![0, 3, 5])?;
    /// hits.retain_rows(|row| row != 2);
    /// assert_eq!((hits.rows, hits.ids, hits.distances), (vec![4, 7], vec![40, 70], vec![0, 5]));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn retain_rows(&mut self, mut keep: impl FnMut(u64) -> bool) {
        let keep: Vec<bool> = self.rows.iter().map(|&r| keep(r)).collect();
        fn retain<T>(v: &mut Vec<T>, keep: &[bool]) {
            let mut k = keep.iter();
            v.retain(|_| k.next().copied().unwrap_or(false));
        }
        retain(&mut self.rows, &keep);
        retain(&mut self.ids, &keep);
        retain(&mut self.distances, &keep);
        if let Some(s) = &mut self.scores {
            retain(s, &keep);
        }
    }

    /// Keeps the first `k` hits.
    ///
    /// ```
    /// let mut hits = bsa_index::Hits::from_parts(vec![4, 2, 7], vec![40, 20, 70], vec![0, 3, 5])?;
    /// hits.truncate(1);
    /// assert_eq!((hits.rows, hits.ids, hits.distances), (vec![4], vec![40], vec![0]));
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn truncate(&mut self, k: usize) {
        self.rows.truncate(k);
        self.ids.truncate(k);
        self.distances.truncate(k);
        if let Some(s) = &mut self.scores {
            s.truncate(k);
        }
    }

    /// Hits from parallel lists (e.g. candidates found elsewhere, to [rescore](crate::Index::rescore)).
    ///
    /// ```
    /// use bsa_index::{Hits, Index, IndexBuilder};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &[1, 2, 3]).vectors(&[1.0, 0.0, 0.6, 0.8, 0.0, 1.0], 2).build(&path)?;
    /// let index = Index::open(&path)?;
    /// // Candidates found elsewhere (rows 0 and 2), rescored against the stored vectors.
    /// let candidates = Hits::from_parts(vec![0, 2], vec![0, 2], vec![0, 0])?;
    /// assert_eq!(index.rescore(&[0.1, 1.0], &candidates, 1)?.rows, vec![2]);
    /// assert!(Hits::from_parts(vec![0, 2], vec![0], vec![0, 0]).is_err()); // lengths differ
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn from_parts(rows: Vec<u64>, ids: Vec<u64>, distances: Vec<u32>) -> Result<Hits> {
        let hits = Hits {
            rows,
            ids,
            distances,
            scores: None,
        };
        hits.check_lengths()?;
        Ok(hits)
    }

    /// One id and one distance (and one score, if any) per row: what the fields, public, may
    /// not hold, checked where hits come back from a caller.
    pub(crate) fn check_lengths(&self) -> Result<()> {
        let n = self.rows.len();
        let scores = self.scores.as_ref().map_or(n, Vec::len);
        if self.ids.len() != n || self.distances.len() != n || scores != n {
            return Err(Error::InvalidArgument(format!(
                "hits need one id, distance and score (if any) per row, got {n} rows, {} ids, {} \
                 distances{}",
                self.ids.len(),
                self.distances.len(),
                (self.scores.as_ref()).map_or(String::new(), |s| format!(", {} scores", s.len()))
            )));
        }
        Ok(())
    }
}

/// Checks a query matrix and returns the number of queries.
pub(crate) fn check_queries(queries: &[u64], w: usize, bits: usize) -> Result<usize> {
    if w == 0 || !queries.len().is_multiple_of(w) {
        return Err(Error::DimMismatch {
            what: format!("query words (a multiple of {w} words per {bits}-bit code)"),
            expected: w * (queries.len() / w.max(1)).max(1),
            got: queries.len(),
        });
    }
    check_high_bits_zero(queries, bits)?;
    Ok(queries.len() / w)
}
