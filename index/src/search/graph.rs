//! Graph search (`--mode hnsw`) over the flat, memory-mapped graph of [`crate::graph`].
//!
//! The graph is *built* with hnsw_rs (see [`crate::hnsw`]) and then exported into flat per-level
//! neighbour lists of `u32` rows, stored in `graph.bin` (layout in `index/FORMAT.md`, section
//! "`graph.bin`"). Searching reads that file in place, together with the mapped codes:
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
use crate::score::Score;
use crate::search::{CodesView, Hits, SearchParams, SearchStats, Searcher};
use crate::topk::{key, key_distance, key_row};

/// Per-thread scratch space, reused across queries (no allocation per candidate).
struct Scratch {
    /// `visited[row] == epoch` iff the row was seen in the current query.
    visited: Vec<u8>,
    epoch: u8,
    candidates: BinaryHeap<Reverse<u64>>,
    results: BinaryHeap<u64>,
    fresh: Vec<u32>,
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
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            visited: Vec::new(),
            epoch: 0,
            candidates: BinaryHeap::new(),
            results: BinaryHeap::new(),
            fresh: Vec::new(),
        })
    };
}

/// Distance from one query to stored codes.
trait Metric {
    fn dist(&self, row: u32) -> u32;
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

/// One query: greedy descent, then ef-search on level 0. Returns the `ef` best keys, sorted.
fn search_one<M: Metric>(g: &GraphView<'_>, m: &M, ef: usize, s: &mut Scratch) -> Vec<u64> {
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

    s.begin(g.len());
    let Scratch {
        visited,
        epoch,
        candidates,
        results,
        fresh,
    } = s;
    let e = *epoch;
    let visited = &mut visited[..g.len()];
    visited[cur as usize] = e;
    candidates.push(Reverse(best));
    results.push(best);
    while let Some(Reverse(c)) = candidates.pop() {
        if results.len() >= ef && results.peek().is_some_and(|&worst| c > worst) {
            break;
        }
        fresh.clear();
        for &nb in g.slots(key_row(c), 0) {
            if nb == NO_NEIGHBOUR {
                break;
            }
            let v = &mut visited[nb as usize];
            if *v != e {
                *v = e;
                fresh.push(nb);
                m.prefetch(nb);
            }
        }
        for &nb in fresh.iter() {
            let k = key(m.dist(nb), nb);
            if results.len() < ef || results.peek().is_some_and(|&worst| k < worst) {
                candidates.push(Reverse(k));
                results.push(k);
                if results.len() > ef {
                    results.pop();
                }
            }
        }
    }
    let mut out: Vec<u64> = results.drain().collect();
    out.sort_unstable();
    out
}

/// Searches `queries` (`w` words each) on graph `g` over `codes` and returns, per query, the
/// keys of the at most `k` best rows found with a candidate list of `ef` (at least `k`), best
/// first, filtered by `max_distance`. Runs on the current rayon pool.
pub(crate) fn search_batch(
    g: &GraphView<'_>,
    codes: &[u64],
    w: usize,
    queries: &[u64],
    k: usize,
    ef: usize,
    max_distance: Option<u32>,
) -> Vec<Vec<u64>> {
    use rayon::prelude::*;
    fn run<const W: usize>(
        g: &GraphView<'_>,
        codes: &[u64],
        queries: &[u64],
        k: usize,
        ef: usize,
        max_distance: Option<u32>,
    ) -> Vec<Vec<u64>> {
        // Whole rows: `codes` and `queries` are multiples of W words (checked by the callers).
        let (codes, _) = codes.as_chunks::<W>();
        let (queries, _) = queries.as_chunks::<W>();
        queries
            .par_iter()
            .map(|q| one(g, &Fixed { query: q, codes }, k, ef, max_distance))
            .collect()
    }
    fn one<M: Metric>(
        g: &GraphView<'_>,
        m: &M,
        k: usize,
        ef: usize,
        max_distance: Option<u32>,
    ) -> Vec<u64> {
        if k == 0 {
            return Vec::new();
        }
        let mut keys = SCRATCH.with(|s| search_one(g, m, ef.max(k), &mut s.borrow_mut()));
        if let Some(maxd) = max_distance {
            keys.retain(|&x| key_distance(x) <= maxd);
        }
        keys.truncate(k);
        keys
    }
    match w {
        1 => run::<1>(g, codes, queries, k, ef, max_distance),
        2 => run::<2>(g, codes, queries, k, ef, max_distance),
        3 => run::<3>(g, codes, queries, k, ef, max_distance),
        4 => run::<4>(g, codes, queries, k, ef, max_distance),
        6 => run::<6>(g, codes, queries, k, ef, max_distance),
        8 => run::<8>(g, codes, queries, k, ef, max_distance),
        12 => run::<12>(g, codes, queries, k, ef, max_distance),
        16 => run::<16>(g, codes, queries, k, ef, max_distance),
        _ => queries
            .par_chunks_exact(w)
            .map(|q| one(g, &Dynamic { query: q, codes }, k, ef, max_distance))
            .collect(),
    }
}

/// The graph search's own parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GraphParams {
    /// Candidate list size (`ef`); `None` uses the graph's default (the value stored at build
    /// time, or 64). Raised to `k` if smaller.
    pub ef_search: Option<usize>,
}

impl GraphParams {
    /// Sets [`ef_search`](Self::ef_search).
    pub fn with_ef_search(mut self, ef: Option<usize>) -> Self {
        self.ef_search = ef;
        self
    }
}

/// Approximate Hamming search over a graph (see the [module docs](self)): best first, ties by
/// row; may return fewer than `k` hits. Queries run in parallel on the current rayon pool.
#[derive(Debug, Clone, Copy)]
pub struct GraphSearcher<'a> {
    codes: CodesView<'a>,
    graph: GraphView<'a>,
    ef_search: usize,
}

impl<'a> GraphSearcher<'a> {
    /// A graph searcher over `codes` with their graph; `default_ef` is the candidate list size
    /// when `params` names none. Fails if the graph has another number of nodes than `codes`.
    pub fn new(
        codes: CodesView<'a>,
        graph: GraphView<'a>,
        params: GraphParams,
        default_ef: usize,
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
        })
    }
}

impl Searcher for GraphSearcher<'_> {
    fn mode(&self) -> &'static str {
        "hnsw"
    }

    fn search(
        &self,
        queries: &[u64],
        k: usize,
        score: &Score<'_>,
        params: &SearchParams,
    ) -> Result<(Vec<Hits>, SearchStats)> {
        // The graph walk computes one distance at a time (portable); resolving the family
        // still reports a bad BSA_KERNEL as every other search does.
        let params = params.resolved()?;
        if score.has_scores() {
            return Err(Error::InvalidArgument(format!(
                "the graph is searched by Hamming distance, not {}; use the flat or inverted mode for that score",
                score.name()
            )));
        }
        let c = &self.codes;
        c.check(queries, score, &params)?;
        let w = c.words_per_code();
        let k = k.min(c.len());
        let keys = search_batch(
            &self.graph,
            c.codes(),
            w,
            queries,
            k,
            self.ef_search,
            params.max_distance,
        );
        let stats = SearchStats {
            kernel_family: None,
            kernel: "portable-graph",
            counters: Vec::new(),
        };
        Ok((c.hits(&keys, queries, false), stats))
    }
}
