//! [`Snapshot::search`]: the segments searched largest first, each by the strategy its filter
//! calls for ([`Strategy`]), the segments bridged from the largest one's graph by one walk, and
//! the exact scan of a segment's allowed rows ([`subset_search`]).

use crate::error::{Error, Result};
use crate::index::Index;
use crate::live::meta::largest_segment;
use crate::mode::Mode;
use crate::rowset::RowSet;
use crate::score::Score;
use crate::search::graph::{BridgeLists, BridgedSegment};
use crate::search::{
    CodesView, Cutoffs, FlatParams, FlatSearcher, Hits, Layouts, SearchParams, SearchStats,
    Searcher, SharedTables, check_queries,
};
use crate::sparse::SparseCodes;

use super::merge::{BestSoFar, merge};
use super::open::Snapshot;
use super::options::{GRAPH_SCAN_ROWS_PER_EF, OVERFETCH_MAX, SUBSET_SCAN_FRACTION, SearchOptions};
use super::segment::{Bridges, SegmentReader};

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

impl Snapshot {
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
