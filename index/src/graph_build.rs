//! A native, parallel and deterministic HNSW builder: the graph of `graph.bin` from float vectors
//! compared by cosine similarity (the decoded vectors of a model, or the stored embeddings).
//!
//! **The graph** is HNSW's (Malkov and Yashunin): node `r` lives on levels `0..=level(r)`, with
//! `level(r) = floor(-ln(u) / ln(M))` for a `u` drawn from a seeded hash of `r`; each node keeps up
//! to `M` neighbours on the upper levels and `2M` on level 0, chosen by HNSW's heuristic (a
//! candidate is kept only if it is closer to the node than to every neighbour kept before it),
//! both when the node is inserted and when a full list of an older node is shrunk. Level-0 lists
//! the heuristic leaves shorter than `M` are filled up to `M` with the closest of the candidates
//! it pruned, as FAISS does: on WordNet's sentence embeddings the heuristic alone kept a mean of
//! 17.7 level-0 neighbours (FAISS's graph: 42.4), and a search then needed a larger `ef` for the
//! same recall (rescored recall@10 at ef 40: 0.958 without the fill, 0.977 with it).
//!
//! **Memory, not arithmetic, bounds the build**: each similarity reads a row nobody touched
//! recently. So level 0's lists live in one flat array (one cache miss per expanded node), rows
//! start on cache lines, and a search computes its neighbours' similarities four rows at a time
//! ([`Dot::dot4`]) while it asks for the next four rows.
//!
//! **Parallel and deterministic.** Rows are inserted in batches (sizes growing with the graph,
//! at most 1/8 of the rows already in it, at most 1024). Each row of a batch searches the graph as
//! it stood before the batch (read only, in parallel), then the batch's links are applied: each
//! row gets its lists, and each old node that gained links is shrunk if it overflows (in
//! parallel, one node per task, from the same candidates in the same order). No step depends on
//! thread timing, and the similarities are the fixed-order dot products of [`crate::dot`], so the
//! same vectors give the same graph on every CPU and thread count.
//!
//! Similarities become `u32` keys that sort the closest first ([`desc_key`] of the dot product
//! of unit vectors), ties broken by the smaller row.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rayon::prelude::*;

use crate::bits::Line;
use crate::dot::Dot;
use crate::error::{Error, Result};
use crate::graph::{GraphData, MAX_LEVEL, MAX_STRIDE};
use crate::kernel::KernelFamily;
use crate::score::desc_key;
use crate::topk::{key, key_row};

/// Largest batch of rows inserted together.
const MAX_BATCH: usize = 1024;

/// The float vectors a graph is built on ([`IndexBuilder::graph_on_vectors`]), made unit
/// length as they are added, chunk by chunk: a caller that makes them (a model's decoded codes)
/// need not hold them whole beside the builder's normalised copy (`n x dim` floats twice).
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// use bsa_index::GraphVectors;
/// let mut v = GraphVectors::new(2, 3);
/// v.push(&[3.0, 4.0, 0.0, 2.0])?;
/// v.push(&[1.0, 0.0])?;
/// assert_eq!((v.len(), v.dim()), (3, 2));
/// assert!(v.push(&[f32::NAN, 0.0]).is_err());
/// # Ok(()) }
/// ```
///
/// [`IndexBuilder::graph_on_vectors`]: crate::IndexBuilder::graph_on_vectors
#[derive(Debug, Clone)]
pub struct GraphVectors {
    pub(crate) space: UnitVectors,
}

impl GraphVectors {
    /// No rows yet, of `dim` floats each, with room for `rows`.
    pub fn new(dim: usize, rows: usize) -> GraphVectors {
        GraphVectors {
            space: UnitVectors::with_capacity(dim, rows, KernelFamily::current()),
        }
    }

    /// Appends whole rows (`dim` floats each, finite), scaled to unit length as
    /// [`IndexBuilder::graph_on`](crate::IndexBuilder::graph_on) scales its vectors.
    pub fn push(&mut self, rows: &[f32]) -> Result<()> {
        let dim = self.space.dim;
        if dim == 0 || !rows.len().is_multiple_of(dim) {
            return Err(Error::InvalidArgument(format!(
                "{} floats are not whole rows of dimension {dim}",
                rows.len()
            )));
        }
        check_finite(rows, dim, self.len())?;
        self.space.push(rows);
        Ok(())
    }

    /// Rows added.
    pub fn len(&self) -> usize {
        self.space.len()
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Floats per row.
    pub fn dim(&self) -> usize {
        self.space.dim
    }

    /// Puts the rows in the order `order` gives (row `i` becomes `order[i]`'s), in place.
    pub(crate) fn permute(&mut self, order: &[usize]) {
        self.space.permute(order);
    }
}

/// Refuses graph vectors with a value that is not finite: `rows` of `dim` floats, the first
/// of them row `first` of the graph's.
pub(crate) fn check_finite(rows: &[f32], dim: usize, first: usize) -> Result<()> {
    match rows.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(Error::InvalidArgument(format!(
            "graph vector {} has a non-finite value at {}",
            first + i / dim.max(1),
            i % dim.max(1)
        ))),
        None => Ok(()),
    }
}

/// Unit-length float vectors compared by dot product (cosine similarity).
#[derive(Debug, Clone)]
pub(crate) struct UnitVectors {
    lines: Vec<Line>,
    /// Floats per row.
    pub(crate) dim: usize,
    /// Floats from one row's start to the next: `dim` rounded up to a whole line.
    stride: usize,
    dot: Dot,
}

impl UnitVectors {
    /// The rows of `vectors` (`n * dim` floats) scaled to unit length (zero rows stay zero:
    /// similarity 0 with everything).
    pub(crate) fn normalized(vectors: &[f32], dim: usize, family: KernelFamily) -> Self {
        let mut space = UnitVectors::with_capacity(dim, vectors.len() / dim.max(1), family);
        space.push(vectors);
        space
    }

    /// No rows yet, room for `rows` of `dim` floats.
    fn with_capacity(dim: usize, rows: usize, family: KernelFamily) -> Self {
        let stride = dim.div_ceil(16) * 16;
        UnitVectors {
            lines: Vec::with_capacity(rows * stride / 16),
            dim,
            stride,
            dot: Dot::select(family),
        }
    }

    /// Appends the whole rows of `vectors` (`dim` floats each), scaled to unit length.
    fn push(&mut self, vectors: &[f32]) {
        let (dim, stride) = (self.dim, self.stride);
        let n = vectors.len() / dim.max(1);
        // Rows start on a cache line: no 64-byte load of a row straddles two (an allocator's large
        // blocks start 16 bytes into a page, which made every AVX-512 load of a row touch two).
        let start = self.lines.len();
        self.lines.resize(start + n * stride / 16, Line::ZERO);
        let floats: &mut [f32] = bytemuck::cast_slice_mut(&mut self.lines[start..]);
        for (src, dst) in vectors
            .chunks_exact(dim.max(1))
            .zip(floats.chunks_exact_mut(stride.max(1)))
        {
            // The norm in f64, so it does not depend on how a SIMD unit would order the sum.
            let norm = src
                .iter()
                .map(|&x| f64::from(x) * f64::from(x))
                .sum::<f64>()
                .sqrt();
            for (d, &x) in dst.iter_mut().zip(src) {
                *d = if norm > 0.0 {
                    (f64::from(x) / norm) as f32
                } else {
                    x
                };
            }
        }
    }

    /// Puts the rows in the order `order` gives (row `i` becomes `order[i]`'s; `order` a
    /// permutation of the rows), in place: each cycle of the permutation is followed with one
    /// row of scratch, so no second copy of the rows is made.
    fn permute(&mut self, order: &[usize]) {
        let per = self.stride / 16;
        let mut placed = vec![false; order.len()];
        let mut scratch = vec![Line::ZERO; per];
        for start in 0..order.len() {
            if placed[start] || order[start] == start {
                continue;
            }
            scratch.copy_from_slice(&self.lines[start * per..(start + 1) * per]);
            let mut at = start;
            loop {
                placed[at] = true;
                let from = order[at];
                if from == start {
                    self.lines[at * per..(at + 1) * per].copy_from_slice(&scratch);
                    break;
                }
                self.lines
                    .copy_within(from * per..(from + 1) * per, at * per);
                at = from;
            }
        }
    }

    fn len(&self) -> usize {
        self.lines.len() * 16 / self.stride.max(1)
    }

    fn row(&self, r: u32) -> &[f32] {
        let at = r as usize * self.stride;
        &bytemuck::cast_slice::<Line, f32>(&self.lines)[at..at + self.dim]
    }

    /// Asks the CPU to load row `r` (a hint).
    #[inline]
    fn prefetch(&self, r: u32) {
        crate::bits::prefetch(self.row(r));
    }

    /// Appends the closeness keys ([`key`]: similarity and row) of `q` and each of `rows` to
    /// `out`, four rows at a time, asking for the next four rows' memory while it computes.
    fn keys(&self, q: u32, rows: &[u32], out: &mut Vec<u64>) {
        for &r in rows.iter().take(4) {
            self.prefetch(r);
        }
        for (i, c) in rows.chunks(4).enumerate() {
            for &r in rows.iter().skip(4 * i + 4).take(4) {
                self.prefetch(r);
            }
            let dots = self.sims4(q, c);
            out.extend(c.iter().zip(dots).map(|(&r, d)| key(desc_key(d), r)));
        }
    }

    /// The similarities of `q` and each of one to four `rows` (as [`UnitVectors::key`] has
    /// them), computed together; a short chunk repeats its last row.
    fn sims4(&self, q: u32, rows: &[u32]) -> [f32; 4] {
        let last = rows[rows.len() - 1];
        let r = |i: usize| self.row(rows.get(i).copied().unwrap_or(last));
        self.dot.dot4(self.row(q), [r(0), r(1), r(2), r(3)])
    }

    /// Closeness key of rows `a` and `b` (smaller is closer).
    #[inline]
    fn key(&self, a: u32, b: u32) -> u32 {
        desc_key(self.dot.dot(self.row(a), self.row(b)))
    }
}

/// Settings of a build.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BuildParams {
    /// Neighbours per node on the upper levels (`2M` on level 0).
    pub(crate) m: usize,
    /// Candidate list size while inserting.
    pub(crate) ef_construction: usize,
    /// Seed of the level draw.
    pub(crate) seed: u64,
}

/// The graph while it grows.
struct Graph {
    /// Level 0, one slot of `1 + stride0` words per node: the list's length, then the list. One
    /// flat array, so expanding a node costs one cache miss, not three as nested lists would.
    level0: Vec<u32>,
    stride0: usize,
    /// Per node, its lists on levels 1 and up.
    upper: Vec<Vec<Vec<u32>>>,
    entry: u32,
    max_level: usize,
}

/// Per-thread search scratch: visited marks by epoch, reused across searches.
struct Scratch {
    visited: Vec<u32>,
    epoch: u32,
    /// The unvisited neighbours of the node being expanded, and their keys.
    fresh: Vec<u32>,
    keys: Vec<u64>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { visited: Vec::new(), epoch: 0, fresh: Vec::new(), keys: Vec::new() }) };
}

/// How full [`select`] keeps a list of `level`: `M` at level 0, no filling above (the upper
/// levels only route a search down, where sparse lists cost little).
fn fill_to(level: usize, m: usize) -> usize {
    if level == 0 { m } else { 0 }
}

/// The level of row `r`: `floor(-ln(u) / ln(M))` with `u` in (0, 1] from a hash of `(seed, r)`.
fn level_of(r: u32, m: usize, seed: u64) -> usize {
    // splitmix64 of the row and the seed.
    let mut z = seed ^ (u64::from(r).wrapping_add(1)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let ml = 1.0 / (m.max(2) as f64).ln();
    ((-u.ln() * ml) as usize).min(MAX_LEVEL as usize)
}

/// HNSW's neighbour selection: from `candidates` (keys relative to the node, sorted closest
/// first), keep each one that is closer to the node than to every one kept before it, up to
/// `max` of them; then, if fewer than `fill_to` were kept, add the closest of the others until
/// there are `fill_to` (FAISS keeps level-0 lists full the same way).
///
/// The heuristic alone keeps about 15 of 40 candidates on 384-d sentence embeddings, whatever
/// `max` is; a level-0 list that sparse makes a search walk further for the same recall (see
/// the module docs).
fn select(space: &UnitVectors, candidates: &[u64], max: usize, fill_to: usize) -> Vec<u32> {
    let mut kept: Vec<u32> = Vec::with_capacity(max);
    let mut pruned: Vec<u32> = Vec::new();
    for &c in candidates {
        if kept.len() == max {
            break;
        }
        let (ck, cr) = ((c >> 32) as u32, key_row(c));
        // Closer to the node than to each kept one (checked four kept ones at a time).
        if kept.chunks(4).all(|ks| {
            space.sims4(cr, ks)[..ks.len()]
                .iter()
                .all(|&d| ck < desc_key(d))
        }) {
            kept.push(cr);
        } else if kept.len() + pruned.len() < fill_to {
            pruned.push(cr);
        }
    }
    let fill = fill_to.min(max).saturating_sub(kept.len());
    kept.extend(pruned.into_iter().take(fill));
    kept
}

impl Graph {
    fn new(levels: &[usize], stride0: usize) -> Graph {
        Graph {
            level0: vec![0; levels.len() * (1 + stride0)],
            stride0,
            upper: levels.iter().map(|&l| vec![Vec::new(); l]).collect(),
            entry: 0,
            max_level: levels[0],
        }
    }

    fn len(&self) -> usize {
        self.upper.len()
    }

    /// Where `node`'s level-0 slot lies in `level0`.
    fn slot0_range(&self, node: u32) -> std::ops::Range<usize> {
        let at = node as usize * (1 + self.stride0);
        at..at + 1 + self.stride0
    }

    fn slot0(&self, node: u32) -> &[u32] {
        &self.level0[self.slot0_range(node)]
    }

    /// The neighbours of `node` on `level`.
    fn list(&self, node: u32, level: usize) -> &[u32] {
        if level == 0 {
            let slot = self.slot0(node);
            &slot[1..1 + slot[0] as usize]
        } else {
            &self.upper[node as usize][level - 1]
        }
    }

    fn set_list(&mut self, node: u32, level: usize, list: Vec<u32>) {
        if level == 0 {
            let range = self.slot0_range(node);
            let slot = &mut self.level0[range];
            slot[0] = list.len() as u32;
            slot[1..1 + list.len()].copy_from_slice(&list);
        } else {
            self.upper[node as usize][level - 1] = list;
        }
    }

    /// Asks the CPU to load `node`'s list on `level` (a hint; level 0 only, where it pays).
    fn prefetch_list(&self, node: u32, level: usize) {
        if level == 0 {
            crate::bits::prefetch(self.slot0(node));
        }
    }

    /// The rows closest to `q` on `level` found from `entry` with a candidate list of `ef`:
    /// keys relative to `q`, sorted closest first.
    fn search_level(
        &self,
        space: &UnitVectors,
        q: u32,
        entry: &[u64],
        ef: usize,
        level: usize,
        s: &mut Scratch,
    ) -> Vec<u64> {
        let n = self.len();
        if s.visited.len() != n {
            s.visited = vec![0; n];
            s.epoch = 0;
        }
        s.epoch = s.epoch.wrapping_add(1);
        if s.epoch == 0 {
            s.visited.fill(0);
            s.epoch = 1;
        }
        let epoch = s.epoch;
        let mut candidates: BinaryHeap<Reverse<u64>> = BinaryHeap::new();
        let mut results: BinaryHeap<u64> = BinaryHeap::new();
        for &e in entry {
            s.visited[key_row(e) as usize] = epoch;
            candidates.push(Reverse(e));
            results.push(e);
        }
        while results.len() > ef {
            results.pop();
        }
        while let Some(Reverse(c)) = candidates.pop() {
            if results.len() >= ef && c > *results.peek().expect("results hold ef keys") {
                break;
            }
            // The node expanded next is, most often, the closest candidate left now.
            if let Some(&Reverse(next)) = candidates.peek() {
                self.prefetch_list(key_row(next), level);
            }
            // The unvisited neighbours' keys first, four at a time with their rows fetched
            // ahead (the dot products wait on memory, not on arithmetic); then the lists are
            // updated in the neighbours' order, as one at a time would.
            s.fresh.clear();
            for &nb in self.list(key_row(c), level) {
                if s.visited[nb as usize] != epoch {
                    s.visited[nb as usize] = epoch;
                    s.fresh.push(nb);
                }
            }
            s.keys.clear();
            space.keys(q, &s.fresh, &mut s.keys);
            for &k in &s.keys {
                if results.len() < ef || k < *results.peek().expect("results hold ef keys") {
                    candidates.push(Reverse(k));
                    results.push(k);
                    if results.len() > ef {
                        results.pop();
                    }
                }
            }
        }
        results.into_sorted_vec()
    }

    /// The lists row `q` (of level `level_q`) gets, from level 0 up, searching the graph as it
    /// stands.
    fn links_for(
        &self,
        space: &UnitVectors,
        q: u32,
        level_q: usize,
        p: &BuildParams,
        s: &mut Scratch,
    ) -> Vec<Vec<u32>> {
        let mut eps = vec![key(space.key(q, self.entry), self.entry)];
        // Greedy descent through the levels above the row's own.
        for level in (level_q + 1..=self.max_level).rev() {
            eps = self.search_level(space, q, &eps[..1], 1, level, s);
        }
        let top = level_q.min(self.max_level);
        let mut out = vec![Vec::new(); level_q + 1];
        for level in (0..=top).rev() {
            let found = self.search_level(space, q, &eps, p.ef_construction, level, s);
            out[level] = select(space, &found, p.m, fill_to(level, p.m));
            eps = found;
        }
        out
    }
}

/// Builds the HNSW graph of `space`'s rows (in the current rayon pool); `progress(done)` is
/// called after each batch, and an error it returns (e.g. [`Error::Stopped`]) ends the build.
pub(crate) fn build(
    space: &UnitVectors,
    p: &BuildParams,
    mut progress: impl FnMut(usize) -> Result<()>,
) -> Result<GraphData> {
    let n = space.len();
    if n == 0 || n > u32::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "a graph needs 1 to 2^32-1 rows, got {n}"
        )));
    }
    if !(2..=(MAX_STRIDE as usize / 2)).contains(&p.m) || p.ef_construction == 0 {
        return Err(Error::InvalidArgument(format!(
            "graph parameters out of range: M = {} (2..={}), ef_construction = {} (>= 1)",
            p.m,
            MAX_STRIDE / 2,
            p.ef_construction
        )));
    }
    let levels: Vec<usize> = (0..n as u32).map(|r| level_of(r, p.m, p.seed)).collect();
    let cap = |level: usize| if level == 0 { 2 * p.m } else { p.m };
    let mut g = Graph::new(&levels, cap(0));
    let mut done = 1usize;
    progress(done)?;
    while done < n {
        let batch = (done / 8).clamp(1, MAX_BATCH).min(n - done);
        let rows: Vec<u32> = (done as u32..(done + batch) as u32).collect();
        // 1. Every row of the batch searches the graph as it stood before the batch.
        let links: Vec<Vec<Vec<u32>>> = rows
            .par_iter()
            .map(|&q| {
                SCRATCH.with(|s| g.links_for(space, q, levels[q as usize], p, &mut s.borrow_mut()))
            })
            .collect();
        // 2. The reverse links each old node gains, grouped by (node, level), rows ascending.
        let mut gained: Vec<(u32, usize, u32)> = Vec::new();
        for (&q, lists) in rows.iter().zip(&links) {
            for (level, list) in lists.iter().enumerate() {
                gained.extend(list.iter().map(|&nb| (nb, level, q)));
            }
        }
        gained.sort_unstable();
        let groups: Vec<&[(u32, usize, u32)]> =
            gained.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)).collect();
        // 3. New lists of the old nodes, computed in parallel from the graph before the batch.
        let updates: Vec<(u32, usize, Vec<u32>)> = groups
            .par_iter()
            .map(|grp| {
                let (node, level) = (grp[0].0, grp[0].1);
                let mut list = g.list(node, level).to_vec();
                list.extend(grp.iter().map(|&(_, _, q)| q));
                if list.len() > cap(level) {
                    let mut cands = Vec::with_capacity(list.len());
                    space.keys(node, &list, &mut cands);
                    cands.sort_unstable();
                    list = select(space, &cands, cap(level), fill_to(level, p.m));
                }
                (node, level, list)
            })
            .collect();
        // 4. Apply: the batch's own lists, the old nodes' new lists, the entry point.
        for (&q, lists) in rows.iter().zip(links) {
            for (level, list) in lists.into_iter().enumerate() {
                g.set_list(q, level, list);
            }
        }
        for (node, level, list) in updates {
            g.set_list(node, level, list);
        }
        for &q in &rows {
            // The smallest row of the highest level is the entry point (as graph.bin says).
            if levels[q as usize] > g.max_level {
                g.max_level = levels[q as usize];
                g.entry = q;
            }
        }
        done += batch;
        progress(done)?;
    }
    let layer0 = (0..n as u32).map(|r| g.list(r, 0).to_vec()).collect();
    let mut data = GraphData {
        layer0,
        upper: g.upper,
        stride0: (2 * p.m) as u32,
        stride_upper: p.m as u32,
    };
    data.link_unreached();
    if data.stride0 > MAX_STRIDE {
        return Err(Error::InvalidArgument(format!(
            "M = {} leaves no room to link the graph up ({} neighbours per node, the limit is \
             {MAX_STRIDE}): use a smaller M",
            p.m, data.stride0
        )));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut x = seed | 1;
        let mut v = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let row: Vec<f32> = (0..dim)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect();
            let norm = row.iter().map(|a| a * a).sum::<f32>().sqrt();
            v.extend(row.iter().map(|a| a / norm));
        }
        v
    }

    #[test]
    fn levels_follow_the_geometric_law() {
        let n = 100_000u32;
        let m = 16;
        let above: usize = (0..n).filter(|&r| level_of(r, m, 7) >= 1).count();
        // P(level >= 1) = 1/M.
        let expect = n as f64 / m as f64;
        assert!((above as f64 - expect).abs() < 0.1 * expect, "{above}");
    }

    #[test]
    fn same_graph_whatever_the_threads_and_kernels() {
        let dim = 40;
        let data = unit_rows(600, dim, 3);
        let p = BuildParams {
            m: 6,
            ef_construction: 20,
            seed: 1,
        };
        let mut graphs = Vec::new();
        for family in KernelFamily::supported() {
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let space = UnitVectors::normalized(&data, dim, family);
                let g = pool.install(|| build(&space, &p, |_| Ok(()))).unwrap();
                graphs.push(g.to_payload().unwrap());
            }
        }
        assert!(graphs.windows(2).all(|w| w[0] == w[1]));
    }
}
