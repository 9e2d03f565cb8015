//! Graph search (`--mode hnsw`) over the flat, memory-mapped graph of [`crate::graph`].
//!
//! The graph (built natively on float vectors, or with hnsw_rs on the codes: see
//! [`crate::graph`]) is stored as flat per-level neighbour lists of `u32` rows in `graph.bin`
//! (layout in `index/FORMAT.md`, section "`graph.bin`"). Searching reads that file in place,
//! together with the mapped codes:
//!
//! 1. **Greedy descent** from the entry point through the upper levels: at each level, scan the
//!    current node's list, move to the best neighbour if it is better, repeat until no neighbour
//!    is better; then go one level down.
//! 2. **ef-search on level 0** from the node found: a min-heap of candidates and a max-heap of at
//!    most `ef` results, both of `u64` keys `distance << 32 | row` (so ties are broken by the
//!    smaller row, deterministically); a node is marked visited when it is first seen as a
//!    neighbour of an expanded node; the search stops when the best remaining candidate is worse
//!    than the worst of `ef` results.
//!
//! No allocation happens per candidate: the visited set is a per-thread byte array reset by an
//! epoch counter, and the heaps and neighbour buffer are per-thread and reused. Distances use the
//! fixed-width Hamming kernels ([`hamming_fixed`]) for common code sizes, and the codes of a
//! node's unvisited neighbours are prefetched before their distances are computed.
//!
//! Every byte of the file is checked before the first search ([`GraphView::from_payload`]):
//! neighbour ids are bounds-checked against the number of codes, so a damaged file gives an
//! error naming it, never a panic or an out-of-bounds read.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::bits::prefetch;
use crate::error::{Error, Result};
use crate::graph::{GraphView, NO_NEIGHBOUR};
use crate::hamming::{hamming, hamming_fixed};
use crate::manifest::GraphMetric;
use crate::rowset::RowSet;
use crate::score::{Score, desc_key, table_score, table_sum};
use crate::search::{CodesView, Hits, SearchParams, SearchStats, Searcher, check_allowed};
use crate::sparse::SparseView;
use crate::topk::{key, key_distance, key_row};

/// Per-thread scratch space, reused across queries (no allocation per candidate).
struct Scratch {
    /// `visited[row] == epoch` iff the row was seen in the current query.
    visited: Vec<u8>,
    epoch: u8,
    candidates: BinaryHeap<Reverse<u64>>,
    results: BinaryHeap<u64>,
    /// The best `keep` keys of every row scored, when more are kept than `ef` (see
    /// [`search_one`]).
    kept: BinaryHeap<u64>,
    /// An expanded node's unvisited neighbours (rows), then their keys.
    fresh: Vec<u64>,
}

impl Scratch {
    /// Starts a query over `n` rows: a new epoch (clearing the array when the counter wraps).
    fn begin(&mut self, n: usize) {
        if self.visited.len() < n {
            self.visited.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.visited.fill(0);
            self.epoch = 1;
        }
        self.candidates.clear();
        self.results.clear();
        self.kept.clear();
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            visited: Vec::new(),
            epoch: 0,
            candidates: BinaryHeap::new(),
            results: BinaryHeap::new(),
            kept: BinaryHeap::new(),
            fresh: Vec::new(),
        })
    };
}

/// Distance from one query to stored codes.
trait Metric {
    /// Whether [`dist`](Self::dist) only approximates the score: the walk then ranks by it and
    /// the rows found are re-keyed with [`exact`](Self::exact).
    const APPROXIMATE: bool = false;
    fn dist(&self, row: u32) -> u32;
    /// The exact key of `row`.
    fn exact(&self, row: u32) -> u32 {
        self.dist(row)
    }
    fn prefetch(&self, row: u32);
}

struct Fixed<'a, const W: usize> {
    query: &'a [u64; W],
    codes: &'a [[u64; W]],
}

impl<const W: usize> Metric for Fixed<'_, W> {
    #[inline(always)]
    fn dist(&self, row: u32) -> u32 {
        hamming_fixed(self.query, &self.codes[row as usize])
    }
    #[inline(always)]
    fn prefetch(&self, row: u32) {
        if let Some(c) = self.codes.get(row as usize) {
            prefetch(c);
        }
    }
}

struct Dynamic<'a> {
    query: &'a [u64],
    codes: &'a [u64],
}

impl Metric for Dynamic<'_> {
    #[inline(always)]
    fn dist(&self, row: u32) -> u32 {
        let w = self.query.len();
        let r = row as usize;
        hamming(self.query, &self.codes[r * w..(r + 1) * w])
    }
    #[inline(always)]
    fn prefetch(&self, row: u32) {
        let w = self.query.len();
        let r = row as usize;
        if let Some(c) = self.codes.get(r * w..(r + 1) * w) {
            prefetch(c);
        }
    }
}

/// A table score (e.g. decoder ADC) of one query, as a key that sorts the best first: the same
/// exact `f64` sum as the flat scan ([`crate::score`]), so a row found by both has one score.
struct Table<'a> {
    table: &'a [f32],
    offset: f32,
    norms: Option<&'a [f32]>,
    sparse: Option<SparseView<'a>>,
    codes: &'a [u64],
    w: usize,
}

impl<'a> Table<'a> {
    /// The scorer of one query's `table` and `offset` over the codes of `v` (with their
    /// `norms`, when the score divides by them).
    #[inline(always)]
    fn new(v: &CodesView<'a>, norms: Option<&'a [f32]>, table: &'a [f32], offset: f32) -> Self {
        Table {
            table,
            offset,
            norms,
            sparse: v.sparse(),
            codes: v.codes(),
            w: v.words_per_code(),
        }
    }
}

impl Table<'_> {
    /// The set bits of `row` as table indices, or `None` for packed codes.
    #[inline(always)]
    fn ids(&self, r: usize) -> Option<&[u16]> {
        self.sparse.as_ref().map(|sv| sv.row(r))
    }

    #[inline(always)]
    fn score(&self, r: usize, sum: f64) -> u32 {
        desc_key(table_score(self.offset, sum, self.norms.map(|n| n[r])))
    }
}

impl Metric for Table<'_> {
    const APPROXIMATE: bool = true;

    /// The walk's key: the table sum in `f32` with four running sums (a fixed order, so the
    /// same on every CPU), a quarter of the dependent additions of the exact `f64` sum.
    #[inline(always)]
    fn dist(&self, row: u32) -> u32 {
        let r = row as usize;
        let sum = match self.ids(r) {
            Some(ids) => {
                let mut acc = [0.0f32; 4];
                let mut quads = ids.chunks_exact(4);
                for q in &mut quads {
                    for i in 0..4 {
                        acc[i] += self.table[q[i] as usize];
                    }
                }
                for (i, &j) in quads.remainder().iter().enumerate() {
                    acc[i] += self.table[j as usize];
                }
                f64::from((acc[0] + acc[1]) + (acc[2] + acc[3]))
            }
            None => table_sum(&self.codes[r * self.w..(r + 1) * self.w], self.table),
        };
        self.score(r, sum)
    }

    /// The flat scan's exact key ([`crate::score`]: `f64`, ascending bit order).
    fn exact(&self, row: u32) -> u32 {
        let r = row as usize;
        let sum = match &self.sparse {
            Some(sv) => sv.table_sum(r, self.table),
            None => table_sum(&self.codes[r * self.w..(r + 1) * self.w], self.table),
        };
        self.score(r, sum)
    }

    #[inline(always)]
    fn prefetch(&self, row: u32) {
        let r = row as usize;
        if let Some(n) = self.norms.and_then(|n| n.get(r..r + 1)) {
            prefetch(n);
        }
        match &self.sparse {
            Some(sv) if r < sv.len() => prefetch(sv.row(r)),
            _ => {
                if let Some(c) = self.codes.get(r * self.w..(r + 1) * self.w) {
                    prefetch(c);
                }
            }
        }
    }
}

/// One query: greedy descent, then ef-search on level 0. Returns the `max(ef, keep)` best keys
/// of the rows scored, sorted, and the number of rows whose score was computed.
///
/// `ef` bounds the walk (the candidate list), `keep` the answer: with `keep` above `ef` the walk
/// stays as short as `ef` makes it and every row it scores may still be among the `keep`
/// returned (a rescored search asks for more candidates than the walk needs to find them).
///
/// With `allowed`, only allowed rows enter the results, but the walk still passes through the
/// others (hnswlib's filtered search): it keeps expanding until it holds `ef` allowed rows, so
/// a selective filter costs more visits but does not cut the graph apart.
///
/// With `bridges`, each expanded node also offers the rows of other segments bridged from it
/// ([`BridgeLists`], extended rows from `g.len()` on) to the results, never to the candidates
/// (they are not nodes of `g`); `ok` says which rows may enter the results.
fn search_one<M: Metric>(
    g: &GraphView<'_>,
    m: &M,
    ef: usize,
    keep: usize,
    ok: impl Fn(u32) -> bool,
    bridges: Option<&BridgeLists>,
    s: &mut Scratch,
) -> (Vec<u64>, u64) {
    let mut evaluated = 1u64;
    let mut cur = g.entry_point();
    let mut best = key(m.dist(cur), cur);
    for level in (1..=g.max_level()).rev() {
        loop {
            let slots = g.slots(cur, level);
            for &nb in slots {
                if nb == NO_NEIGHBOUR {
                    break;
                }
                m.prefetch(nb);
            }
            for &nb in slots {
                if nb == NO_NEIGHBOUR {
                    break;
                }
                evaluated += 1;
                let k = key(m.dist(nb), nb);
                if k < best {
                    best = k;
                }
            }
            if key_row(best) == cur {
                break;
            }
            cur = key_row(best);
        }
    }

    let rows = g.len() + bridges.map_or(0, BridgeLists::extra_rows);
    s.begin(rows);
    let Scratch {
        visited,
        epoch,
        candidates,
        results,
        kept,
        fresh,
    } = s;
    // Every allowed row scored is offered to `kept` when it keeps more than the walk's `ef`.
    let wide = keep > ef;
    let mut offer = |k: u64| {
        if wide && (kept.len() < keep || kept.peek().is_some_and(|&worst| k < worst)) {
            insert_bounded(kept, keep, k);
        }
    };
    let e = *epoch;
    let visited = &mut visited[..rows];
    visited[cur as usize] = e;
    candidates.push(Reverse(best));
    if ok(cur) {
        results.push(best);
        offer(best);
    }
    while let Some(Reverse(c)) = candidates.pop() {
        if results.len() >= ef && results.peek().is_some_and(|&worst| c > worst) {
            break;
        }
        // The list most likely expanded next is fetched while this one's rows are scored (the
        // list of a popped candidate is otherwise the walk's first cache miss per step).
        if let Some(&Reverse(next)) = candidates.peek() {
            prefetch(g.slots(key_row(next), 0));
            if let Some(b) = bridges {
                b.prefetch_of(key_row(next));
            }
        }
        // Whether a neighbour was visited is a coin toss the branch predictor loses, so the
        // unvisited ones are collected without a branch (each written to the next free place,
        // which advances only for them), then their rows are prefetched.
        let slots = g.slots(key_row(c), 0);
        fresh.clear();
        fresh.resize(slots.len(), 0);
        let mut len = 0;
        for &nb in slots {
            if nb == NO_NEIGHBOUR {
                break;
            }
            let v = &mut visited[nb as usize];
            let new = *v != e;
            *v = e;
            fresh[len] = u64::from(nb);
            len += usize::from(new);
        }
        fresh.truncate(len);
        for &nb in fresh.iter() {
            m.prefetch(nb as u32);
        }
        let bridged = bridges.map_or(&[][..], |b| b.of(key_row(c)));
        for &x in bridged {
            m.prefetch(x);
        }
        evaluated += fresh.len() as u64;
        // All the keys first, then the heaps: a row's key is a chain of loads and adds, and
        // whether it enters the heaps a branch the predictor loses; scored in one loop free of
        // such branches, the rows' chains (and their cache misses) overlap instead of being
        // thrown away at each misprediction.
        for x in fresh.iter_mut() {
            let nb = *x as u32;
            *x = key(m.dist(nb), nb);
        }
        for &k in fresh.iter() {
            let nb = key_row(k);
            let allowed = ok(nb);
            if results.len() < ef || results.peek().is_some_and(|&worst| k < worst) {
                candidates.push(Reverse(k));
                if allowed {
                    insert_bounded(results, ef, k);
                }
            }
            if allowed {
                offer(k);
            }
        }
        for &x in bridged {
            let v = &mut visited[x as usize];
            let seen = *v == e;
            *v = e;
            if seen || !ok(x) {
                continue;
            }
            evaluated += 1;
            let k = key(m.dist(x), x);
            if results.len() < ef || results.peek().is_some_and(|&worst| k < worst) {
                insert_bounded(results, ef, k);
            }
            offer(k);
        }
    }
    let mut out: Vec<u64> = if wide { kept } else { results }.drain().collect();
    out.sort_unstable();
    (out, evaluated)
}

/// Adds `k`, which beats the worst of `heap` or finds it holding fewer than `size`, to `heap`,
/// keeping the best `size`: a full heap's worst is replaced in place (one sift down, instead of a
/// push's sift up and a pop's sift down).
#[inline(always)]
fn insert_bounded(heap: &mut BinaryHeap<u64>, size: usize, k: u64) {
    if heap.len() < size {
        heap.push(k);
    } else if let Some(mut worst) = heap.peek_mut() {
        *worst = k;
    }
}

/// One query's keys (the best `k` rows scored by a walk with a candidate list of `ef`, filtered
/// by `max_distance`) and its count of scored rows.
fn one<M: Metric>(
    g: &GraphView<'_>,
    m: &M,
    k: usize,
    ef: usize,
    max_distance: Option<u32>,
    allowed: Option<&RowSet>,
) -> (Vec<u64>, u64) {
    if k == 0 {
        return (Vec::new(), 0);
    }
    let ok = |row: u32| allowed.is_none_or(|a| a.contains(row as usize));
    let (mut keys, evaluated) =
        SCRATCH.with(|s| search_one(g, m, ef, k, ok, None, &mut s.borrow_mut()));
    if M::APPROXIMATE {
        for x in keys.iter_mut() {
            *x = key(m.exact(key_row(*x)), key_row(*x));
        }
        keys.sort_unstable();
    }
    if let Some(maxd) = max_distance {
        keys.retain(|&x| key_distance(x) <= maxd);
    }
    keys.truncate(k);
    (keys, evaluated)
}

/// Splits per-query results into the keys and the total of scored rows.
fn unzip(per_query: Vec<(Vec<u64>, u64)>) -> (Vec<Vec<u64>>, u64) {
    let total = per_query.iter().map(|&(_, e)| e).sum();
    (per_query.into_iter().map(|(k, _)| k).collect(), total)
}

/// Searches `queries` (`w` words each) by Hamming distance on graph `g` over `codes` and
/// returns, per query, the keys of the at most `k` best rows scored by a walk with a candidate
/// list of `ef`, best first, filtered by `max_distance`, and the number of rows whose
/// distance was computed. Runs on the current rayon pool.
#[allow(clippy::too_many_arguments)]
pub(crate) fn search_batch(
    g: &GraphView<'_>,
    codes: &[u64],
    w: usize,
    queries: &[u64],
    k: usize,
    ef: usize,
    max_distance: Option<u32>,
    allowed: Option<&RowSet>,
) -> (Vec<Vec<u64>>, u64) {
    use rayon::prelude::*;
    fn run<const W: usize>(
        g: &GraphView<'_>,
        codes: &[u64],
        queries: &[u64],
        k: usize,
        ef: usize,
        max_distance: Option<u32>,
        allowed: Option<&RowSet>,
    ) -> Vec<(Vec<u64>, u64)> {
        // Whole rows: `codes` and `queries` are multiples of W words (checked by the callers).
        let (codes, _) = codes.as_chunks::<W>();
        let (queries, _) = queries.as_chunks::<W>();
        queries
            .par_iter()
            .map(|q| one(g, &Fixed { query: q, codes }, k, ef, max_distance, allowed))
            .collect()
    }
    unzip(match w {
        1 => run::<1>(g, codes, queries, k, ef, max_distance, allowed),
        2 => run::<2>(g, codes, queries, k, ef, max_distance, allowed),
        3 => run::<3>(g, codes, queries, k, ef, max_distance, allowed),
        4 => run::<4>(g, codes, queries, k, ef, max_distance, allowed),
        6 => run::<6>(g, codes, queries, k, ef, max_distance, allowed),
        8 => run::<8>(g, codes, queries, k, ef, max_distance, allowed),
        12 => run::<12>(g, codes, queries, k, ef, max_distance, allowed),
        16 => run::<16>(g, codes, queries, k, ef, max_distance, allowed),
        _ => queries
            .par_chunks_exact(w)
            .map(|q| {
                one(
                    g,
                    &Dynamic { query: q, codes },
                    k,
                    ef,
                    max_distance,
                    allowed,
                )
            })
            .collect(),
    })
}

/// Searches by a table score: query `i` has `tables[i * bits..]` and `offsets[i]` (checked by
/// the caller); otherwise as [`search_batch`].
#[allow(clippy::too_many_arguments)]
fn search_batch_table(
    g: &GraphView<'_>,
    c: &CodesView<'_>,
    tables: &[f32],
    offsets: &[f32],
    norms: Option<&[f32]>,
    k: usize,
    ef: usize,
    allowed: Option<&RowSet>,
) -> (Vec<Vec<u64>>, u64) {
    use rayon::prelude::*;
    let bits = c.bits();
    unzip(
        (0..offsets.len())
            .into_par_iter()
            .map(|qi| {
                let m = Table::new(c, norms, &tables[qi * bits..(qi + 1) * bits], offsets[qi]);
                one(g, &m, k, ef, None, allowed)
            })
            .collect(),
    )
}

/// The graph search's own parameters.
///
/// ```
/// use bsa_index::search::GraphParams;
/// use bsa_index::{HnswParams, Index, IndexBuilder};
/// # fn main() -> bsa_index::Result<()> {
/// let codes: Vec<u64> = (0..100u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("idx");
/// let hnsw = HnswParams { ef_search: 40, ..HnswParams::default() };
/// IndexBuilder::new(64, &codes).hnsw(hnsw).build(&path)?;
/// let index = Index::open(&path)?;
/// // Without an ef of its own, the searcher takes the one stored at build time.
/// assert_eq!(index.graph_searcher(GraphParams::default())?.ef_search(), 40);
/// let wide = GraphParams::default().with_ef_search(Some(100));
/// assert_eq!(index.graph_searcher(wide)?.ef_search(), 100);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GraphParams {
    /// Candidate list size (`ef`). `None`: the graph's default (the value stored at build
    /// time, or 64) raised to the `k` asked for, as hnswlib and FAISS do (a walk of 8
    /// candidates asked for 300 answered with 80 to 300). A given `ef` is used as given: with
    /// `k` above it, the walk stays as short as `ef` makes it and answers with the best `k` of
    /// every row it scored (a rescored search's candidates).
    pub ef_search: Option<usize>,
}

impl GraphParams {
    /// Sets [`ef_search`](Self::ef_search).
    pub fn with_ef_search(mut self, ef: Option<usize>) -> Self {
        self.ef_search = ef;
        self
    }
}

/// Approximate search over a graph (see the [module docs](self)) by the score the graph was
/// built for (Hamming on a graph of the codes, table scores such as ADC on a graph of float
/// vectors): best first, ties by row; may return fewer than `k` hits. Queries run in parallel
/// on the current rayon pool.
///
/// With a candidate list as large as the index, the walk scores every row it can reach and
/// answers like the exact scan:
///
/// ```
/// use bsa_index::search::{FlatParams, GraphParams, Searcher};
/// use bsa_index::{HnswParams, Index, IndexBuilder, Score, SearchParams};
/// # fn main() -> bsa_index::Result<()> {
/// let codes: Vec<u64> = (0..200u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("idx");
/// IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).build(&path)?;
/// let index = Index::open(&path)?;
/// let graph = index.graph_searcher(GraphParams::default().with_ef_search(Some(200)))?;
/// let flat = index.flat_searcher(FlatParams::default());
/// let (q, sp) = ([codes[17] ^ 0b101], SearchParams::default());
/// let (approx, _) = graph.search(&q, 5, &Score::Hamming, &sp)?;
/// let (exact, _) = flat.search(&q, 5, &Score::Hamming, &sp)?;
/// assert_eq!(approx[0].rows[0], 17);
/// assert_eq!(approx[0].distances, exact[0].distances);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct GraphSearcher<'a> {
    codes: CodesView<'a>,
    graph: GraphView<'a>,
    ef_search: usize,
    /// Whether `ef_search` was given (used as given) or is the default (raised to `k`).
    ef_given: bool,
    metric: GraphMetric,
}

impl<'a> GraphSearcher<'a> {
    /// A graph searcher over `codes` with their graph, whose neighbours are nearest by `metric`
    /// (a Hamming graph answers the Hamming score, a cosine graph table scores such as ADC);
    /// `default_ef` is the candidate list size when `params` names none. Fails if the graph has
    /// another number of nodes than `codes`.
    ///
    /// ```
    /// use bsa_index::manifest::GraphMetric;
    /// use bsa_index::search::{CodesView, GraphParams, GraphSearcher, Searcher};
    /// use bsa_index::{HnswParams, Index, IndexBuilder, Score, SearchParams};
    /// # fn main() -> bsa_index::Result<()> {
    /// let codes: Vec<u64> = (0..50u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).build(&path)?;
    /// let index = Index::open(&path)?;
    /// let (view, graph) = (CodesView::new(&codes, 64)?, index.graph()?);
    /// let p = GraphParams::default();
    /// let searcher = GraphSearcher::new(view, graph, p, 50, GraphMetric::Hamming)?;
    /// let (hits, _) = searcher.search(&[codes[9]], 1, &Score::Hamming, &SearchParams::default())?;
    /// assert_eq!((hits[0].rows[0], hits[0].distances[0]), (9, 0));
    /// // The graph's nodes are the rows: it cannot search other codes.
    /// let fewer = CodesView::new(&codes[..49], 64)?;
    /// assert!(GraphSearcher::new(fewer, graph, p, 50, GraphMetric::Hamming).is_err());
    /// # Ok(()) }
    /// ```
    pub fn new(
        codes: CodesView<'a>,
        graph: GraphView<'a>,
        params: GraphParams,
        default_ef: usize,
        metric: GraphMetric,
    ) -> Result<Self> {
        if graph.len() != codes.len() {
            return Err(Error::InvalidArgument(format!(
                "a graph of {} nodes cannot search {} codes",
                graph.len(),
                codes.len()
            )));
        }
        Ok(GraphSearcher {
            codes,
            graph,
            ef_search: params.ef_search.unwrap_or(default_ef),
            ef_given: params.ef_search.is_some(),
            metric,
        })
    }
}

impl Searcher for GraphSearcher<'_> {
    fn mode(&self) -> &'static str {
        "hnsw"
    }

    fn rows(&self) -> usize {
        self.codes.len()
    }

    fn search(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        params: &SearchParams,
    ) -> Result<(Vec<Hits>, SearchStats)> {
        self.walk(queries, k, score, params, None)
    }

    /// The filtered walk: disallowed rows are passed through but never returned (see
    /// `search_one`), so the graph keeps its reach under a filter.
    fn search_allowed(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        params: &SearchParams,
        allowed: &RowSet,
    ) -> Result<(Vec<Hits>, SearchStats)> {
        check_allowed(allowed, self.codes.len())?;
        self.walk(queries, k, score, params, Some(allowed))
    }
}

impl GraphSearcher<'_> {
    /// The candidate list size (`ef`) given, or the default (which a walk for more than that
    /// many results raises to their number: see [`GraphParams::ef_search`]).
    pub fn ef_search(&self) -> usize {
        self.ef_search
    }

    /// The candidate list size of a walk for the best `k`: the query-time
    /// [`SearchParams::ef_search`] if set, else the searcher's (see [`GraphParams::ef_search`]).
    fn ef_for(&self, k: usize, params: &SearchParams) -> usize {
        match params.ef_search {
            Some(ef) => ef,
            None if self.ef_given => self.ef_search,
            None => self.ef_search.max(k),
        }
    }

    /// Fails unless the graph serves `score`: a graph of the codes the Hamming score, a graph
    /// of float vectors table scores (such as ADC).
    ///
    /// ```
    /// use bsa_index::search::{GraphParams, Searcher};
    /// use bsa_index::{HnswParams, Index, IndexBuilder, Score, SearchParams};
    /// # fn main() -> bsa_index::Result<()> {
    /// let codes: Vec<u64> = (0..50u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("idx");
    /// IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).build(&path)?;
    /// let index = Index::open(&path)?;
    /// let searcher = index.graph_searcher(GraphParams::default())?; // a graph of the codes
    /// assert!(searcher.check_score(&Score::Hamming).is_ok());
    /// assert!(searcher.check_score(&Score::Cosine).is_err());
    /// // The search makes the same check.
    /// assert!(searcher.search(&[0], 3, &Score::Cosine, &SearchParams::default()).is_err());
    /// # Ok(()) }
    /// ```
    pub fn check_score(&self, score: &Score<'_>) -> Result<()> {
        match (self.metric, score) {
            (GraphMetric::Hamming, Score::Hamming) | (GraphMetric::Cosine, Score::Table { .. }) => {
                Ok(())
            }
            (GraphMetric::Hamming, _) => Err(Error::InvalidArgument(format!(
                "the graph was built on the codes for Hamming distance, not for the {} score; \
                     search it with --score hamming, or rebuild it on vectors (bsa build --model ... --hnsw)",
                score.name()
            ))),
            (_, _) => Err(Error::InvalidArgument(format!(
                "the graph was built on float vectors for table scores (adc), not for the {} score; \
                     use an exact mode for it (flat, or inverted where the index has posting lists)",
                score.name()
            ))),
        }
    }

    fn walk(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        params: &SearchParams,
        allowed: Option<&RowSet>,
    ) -> Result<(Vec<Hits>, SearchStats)> {
        let (params, norms) = self.checked(queries, score, params)?;
        let c = &self.codes;
        let k = k.min(c.len());
        let (keys, evaluated) = match (self.metric, score) {
            (GraphMetric::Hamming, Score::Hamming) => search_batch(
                &self.graph,
                c.codes(),
                c.words_per_code(),
                queries,
                k,
                self.ef_for(k, &params),
                params.max_distance,
                allowed,
            ),
            (
                GraphMetric::Cosine,
                Score::Table {
                    tables, offsets, ..
                },
            ) => search_batch_table(
                &self.graph,
                c,
                tables,
                offsets,
                norms,
                k,
                self.ef_for(k, &params),
                allowed,
            ),
            _ => unreachable!("graph and score checked by check_score"),
        };
        Ok((
            c.hits(&keys, queries, score.has_scores(), &params),
            walk_stats(evaluated),
        ))
    }

    /// The checks every walk starts with: the parameters resolved, the queries and score
    /// against the codes, and the score against the graph. Returns the parameters and the norms
    /// the score divides by.
    fn checked<'s>(
        &'s self,
        queries: &[u64],
        score: &Score<'_>,
        params: &SearchParams,
    ) -> Result<(SearchParams, Option<&'s [f32]>)> {
        // The graph walk computes one distance at a time (portable); resolving the family
        // still reports a bad BSA_KERNEL as every other search does.
        let params = params.resolved()?;
        // The searcher's own, or this search's.
        if self.ef_for(1, &params) == 0 {
            return Err(Error::InvalidArgument(
                "ef_search must be at least 1 (the walk's candidate list size)".into(),
            ));
        }
        let (_, norms) = self.codes.check(queries, score, &params)?;
        self.check_score(score)?;
        Ok((params, norms))
    }
}

/// A walk's statistics: the kernel and the rows scored.
fn walk_stats(evaluated: u64) -> SearchStats {
    SearchStats {
        kernel_family: None,
        kernel: "portable-graph",
        table_kernel: None,
        counters: vec![("nodes_visited", evaluated)],
    }
}

/// The rows of other segments reachable through a graph's nodes: bridges (see
/// [`crate::live`]). The walk of the graph scores, at each node it expands, the rows bridged
/// from that node, so rows added after the graph was built are found by the one walk instead
/// of a search of their own segment each.
///
/// Rows of the other segments are numbered after the graph's nodes ("extended rows"):
/// segment `i` of [`BridgeLists::new`]'s `sizes` holds extended rows
/// `nodes + sizes[..i].sum()` onwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BridgeLists {
    /// Per node, `rows[offsets[v]..offsets[v + 1]]` are the extended rows bridged from `v`.
    offsets: Vec<u32>,
    rows: Vec<u32>,
    /// Where each segment's extended rows start.
    starts: Vec<u32>,
    /// One past the last extended row.
    end: u32,
}

impl BridgeLists {
    /// Lists over a graph of `nodes` nodes from each segment's `(node, row)` edges (its `sizes`
    /// rows). Fails if a node or row is out of range or the rows do not fit `u32`.
    pub(crate) fn new(nodes: usize, sizes: &[usize], edges: &[&[(u32, u32)]]) -> Result<Self> {
        let total = sizes.iter().try_fold(nodes, |t, &n| t.checked_add(n));
        if total.is_none_or(|t| t >= NO_NEIGHBOUR as usize) || sizes.len() != edges.len() {
            return Err(Error::InvalidArgument(
                "bridged segments hold more rows than a graph walk can number".into(),
            ));
        }
        let mut starts = Vec::with_capacity(sizes.len());
        let mut next = nodes as u32;
        for &n in sizes {
            starts.push(next);
            next += n as u32;
        }
        let mut counts = vec![0u32; nodes + 1];
        for (s, list) in edges.iter().enumerate() {
            for &(v, r) in list.iter() {
                if v as usize >= nodes || r as usize >= sizes[s] {
                    return Err(Error::InvalidArgument(format!(
                        "a bridge edge ({v}, {r}) is outside a graph of {nodes} nodes and a \
                         segment of {} rows",
                        sizes[s]
                    )));
                }
                counts[v as usize + 1] += 1;
            }
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        let offsets = counts.clone();
        let mut fill = counts;
        let mut rows = vec![0u32; offsets[nodes] as usize];
        for (s, list) in edges.iter().enumerate() {
            for &(v, r) in list.iter() {
                let at = &mut fill[v as usize];
                rows[*at as usize] = starts[s] + r;
                *at += 1;
            }
        }
        Ok(BridgeLists {
            offsets,
            rows,
            starts,
            end: next,
        })
    }

    /// Fetches where node `v`'s list starts into the cache.
    #[inline(always)]
    fn prefetch_of(&self, v: u32) {
        if let Some(o) = self.offsets.get(v as usize..v as usize + 2) {
            prefetch(o);
        }
    }

    /// The extended rows bridged from node `v`.
    #[inline(always)]
    fn of(&self, v: u32) -> &[u32] {
        let v = v as usize;
        &self.rows[self.offsets[v] as usize..self.offsets[v + 1] as usize]
    }

    /// Number of graph nodes.
    fn nodes(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Rows of the bridged segments, together.
    fn extra_rows(&self) -> usize {
        self.end as usize - self.nodes()
    }

    /// The bridged segment holding extended row `x`, and its row there.
    #[inline(always)]
    fn locate(&self, x: u32) -> (usize, u32) {
        let s = self.starts.partition_point(|&st| st <= x) - 1;
        (s, x - self.starts[s])
    }
}

/// A table score over the graph's rows and the rows bridged from them (extended rows, see
/// [`BridgeLists`]), each scored with its own segment's codes and norms.
struct Extended<'a> {
    nodes: u32,
    large: Table<'a>,
    others: Vec<Table<'a>>,
    lists: &'a BridgeLists,
}

impl<'a> Extended<'a> {
    /// The table of the segment holding extended row `row`, and its row there.
    #[inline(always)]
    fn part(&self, row: u32) -> (&Table<'a>, u32) {
        if row < self.nodes {
            (&self.large, row)
        } else {
            let (s, r) = self.lists.locate(row);
            (&self.others[s], r)
        }
    }
}

impl Metric for Extended<'_> {
    const APPROXIMATE: bool = true;

    #[inline(always)]
    fn dist(&self, row: u32) -> u32 {
        let (t, r) = self.part(row);
        t.dist(r)
    }

    fn exact(&self, row: u32) -> u32 {
        let (t, r) = self.part(row);
        t.exact(r)
    }

    #[inline(always)]
    fn prefetch(&self, row: u32) {
        let (t, r) = self.part(row);
        t.prefetch(r);
    }
}

/// A segment searched through the bridges of another segment's graph
/// ([`GraphSearcher::walk_bridged`]): its codes (with norms and set bits as its own searches
/// use them) and the rows a search may return.
pub(crate) struct BridgedSegment<'a> {
    pub(crate) codes: CodesView<'a>,
    pub(crate) allowed: Option<&'a RowSet>,
}

impl GraphSearcher<'_> {
    /// The walk of this graph by a table score that also scores the rows of `others` bridged
    /// from each expanded node (`lists`, built over this graph and `others` in order): one walk
    /// answers for every segment. Returns per segment (this one first, then `others`) each
    /// query's best hits (at most `k`) among the best `max(ef, k)` rows the walk scored, rows local to the segment,
    /// best first, ties by row; `allowed` restricts this segment's rows, as in a filtered walk.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn walk_bridged(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        params: &SearchParams,
        allowed: Option<&RowSet>,
        lists: &BridgeLists,
        others: &[BridgedSegment<'_>],
    ) -> Result<(Vec<Vec<Hits>>, SearchStats)> {
        use rayon::prelude::*;
        let (_, norms) = self.checked(queries, score, params)?;
        let c = &self.codes;
        let Score::Table {
            tables, offsets, ..
        } = score
        else {
            return Err(Error::InvalidArgument(
                "bridges between segments serve table scores (adc) only".into(),
            ));
        };
        if let Some(a) = allowed {
            check_allowed(a, c.len())?;
        }
        let sizes_agree = lists.nodes() == c.len()
            && lists.starts.len() == others.len()
            && others.iter().enumerate().all(|(i, o)| {
                let end = lists.starts.get(i + 1).copied().unwrap_or(lists.end);
                (end - lists.starts[i]) as usize == o.codes.len()
            });
        if !sizes_agree {
            return Err(Error::InvalidArgument(
                "the bridge lists were built for other segments than the ones searched".into(),
            ));
        }
        let mut other_norms = Vec::with_capacity(others.len());
        for o in others {
            // The queries and tables were checked against this graph's codes, of the same bits.
            if o.codes.bits() != c.bits() {
                return Err(Error::InvalidArgument(format!(
                    "a segment of {}-bit codes cannot be bridged from a graph of {}-bit codes",
                    o.codes.bits(),
                    c.bits()
                )));
            }
            let n = o.codes.norms_for(score)?;
            if let Some(a) = o.allowed {
                check_allowed(a, o.codes.len())?;
            }
            other_norms.push(n);
        }
        let bits = c.bits();
        let nodes = c.len() as u32;
        let ok = |row: u32| {
            if row < nodes {
                allowed.is_none_or(|a| a.contains(row as usize))
            } else {
                let (s, r) = lists.locate(row);
                others[s].allowed.is_none_or(|a| a.contains(r as usize))
            }
        };
        let ef = self.ef_for(k, params);
        let per_query: Vec<(Vec<Vec<u64>>, u64)> = (0..offsets.len())
            .into_par_iter()
            .map(|qi| {
                let (table, offset) = (&tables[qi * bits..(qi + 1) * bits], offsets[qi]);
                let m = Extended {
                    nodes,
                    large: Table::new(c, norms, table, offset),
                    others: others
                        .iter()
                        .zip(&other_norms)
                        .map(|(o, &n)| Table::new(&o.codes, n, table, offset))
                        .collect(),
                    lists,
                };
                let (mut keys, evaluated) = SCRATCH.with(|s| {
                    search_one(&self.graph, &m, ef, k, ok, Some(lists), &mut s.borrow_mut())
                });
                for x in keys.iter_mut() {
                    *x = key(m.exact(key_row(*x)), key_row(*x));
                }
                keys.sort_unstable();
                let mut parts = vec![Vec::new(); others.len() + 1];
                for x in keys {
                    let row = key_row(x);
                    let (p, local) = if row < nodes {
                        (0, row)
                    } else {
                        let (s, r) = lists.locate(row);
                        (s + 1, r)
                    };
                    if parts[p].len() < k {
                        parts[p].push(key(key_distance(x), local));
                    }
                }
                (parts, evaluated)
            })
            .collect();
        let mut evaluated = 0;
        // Per segment, each query's keys (moved, not copied, out of the per-query parts).
        let mut by_segment: Vec<Vec<Vec<u64>>> = (0..=others.len())
            .map(|_| Vec::with_capacity(per_query.len()))
            .collect();
        for (parts, e) in per_query {
            evaluated += e;
            for (keys, part) in by_segment.iter_mut().zip(parts) {
                keys.push(part);
            }
        }
        let views = std::iter::once(c).chain(others.iter().map(|o| &o.codes));
        let hits = views
            .zip(&by_segment)
            .map(|(v, keys)| v.hits(keys, queries, true, params))
            .collect();
        Ok((hits, walk_stats(evaluated)))
    }
}

impl GraphSearcher<'_> {
    /// The `m` nodes of this graph nearest to each of the rows whose tables and offsets are
    /// given (one `bits`-entry table per row, as a query's), by a walk with candidate list `ef`:
    /// the nodes a bridge links each row from. Runs on the current rayon pool.
    pub(crate) fn bridge_targets(
        &self,
        tables: &[f32],
        offsets: &[f32],
        ef: usize,
        m: usize,
    ) -> Vec<Vec<u32>> {
        use rayon::prelude::*;
        let c = &self.codes;
        let bits = c.bits();
        (0..offsets.len())
            .into_par_iter()
            .map(|qi| {
                let t = Table::new(
                    c,
                    c.norms(),
                    &tables[qi * bits..(qi + 1) * bits],
                    offsets[qi],
                );
                let (keys, _) = SCRATCH.with(|s| {
                    search_one(&self.graph, &t, ef, m, |_| true, None, &mut s.borrow_mut())
                });
                keys.iter().take(m).map(|&x| key_row(x)).collect()
            })
            .collect()
    }
}
