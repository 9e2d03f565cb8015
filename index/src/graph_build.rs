//! A native, parallel and deterministic HNSW builder: the graph of `graph.bin` from float vectors
//! compared by cosine similarity (the decoded vectors of a model, or the stored embeddings).
//!
//! **The graph** is HNSW's (Malkov and Yashunin): node `r` lives on levels `0..=level(r)`, with
//! `level(r) = floor(-ln(u) / ln(M))` for a `u` drawn from a seeded hash of `r`; each node keeps up
//! to `M` neighbours on the upper levels and `2M` on level 0, chosen by HNSW's heuristic (a
//! candidate is kept only if it is closer to the node than to every neighbour kept before it),
//! both when the node is inserted and when a full list of an older node is shrunk.
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

use crate::dot::Dot;
use crate::error::{Error, Result};
use crate::graph::{GraphData, MAX_LEVEL, MAX_STRIDE};
use crate::kernel::KernelFamily;
use crate::score::desc_key;
use crate::topk::{key, key_row};

/// Largest batch of rows inserted together.
const MAX_BATCH: usize = 1024;

/// Unit-length float vectors compared by dot product (cosine similarity).
#[derive(Debug, Clone, Copy)]
pub(crate) struct UnitVectors<'a> {
    data: &'a [f32],
    dim: usize,
    dot: Dot,
}

impl<'a> UnitVectors<'a> {
    /// `data` holds `n * dim` floats of unit-length rows (zero rows are allowed: similarity 0).
    pub(crate) fn new(data: &'a [f32], dim: usize, family: KernelFamily) -> Self {
        UnitVectors {
            data,
            dim,
            dot: Dot::select(family),
        }
    }

    fn len(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }

    fn row(&self, r: u32) -> &'a [f32] {
        let r = r as usize;
        &self.data[r * self.dim..(r + 1) * self.dim]
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

/// The graph while it grows: per node, its lists from level 0 up.
struct Graph {
    lists: Vec<Vec<Vec<u32>>>,
    entry: u32,
    max_level: usize,
}

/// Per-thread search scratch: visited marks by epoch, reused across searches.
struct Scratch {
    visited: Vec<u32>,
    epoch: u32,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { visited: Vec::new(), epoch: 0 }) };
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
/// `max` of them.
fn select(space: &UnitVectors<'_>, candidates: &[u64], max: usize) -> Vec<u32> {
    let mut kept: Vec<u64> = Vec::with_capacity(max);
    for &c in candidates {
        if kept.len() == max {
            break;
        }
        let (ck, cr) = ((c >> 32) as u32, key_row(c));
        if kept.iter().all(|&k| ck < space.key(cr, key_row(k))) {
            kept.push(c);
        }
    }
    kept.into_iter().map(key_row).collect()
}

impl Graph {
    /// The rows closest to `q` on `level` found from `entry` with a candidate list of `ef`:
    /// keys relative to `q`, sorted closest first.
    fn search_level(
        &self,
        space: &UnitVectors<'_>,
        q: u32,
        entry: &[u64],
        ef: usize,
        level: usize,
        s: &mut Scratch,
    ) -> Vec<u64> {
        let n = self.lists.len();
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
            for &nb in &self.lists[key_row(c) as usize][level] {
                if s.visited[nb as usize] == epoch {
                    continue;
                }
                s.visited[nb as usize] = epoch;
                let k = key(space.key(q, nb), nb);
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
        space: &UnitVectors<'_>,
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
            out[level] = select(space, &found, p.m);
            eps = found;
        }
        out
    }
}

/// Builds the HNSW graph of `space`'s rows (in the current rayon pool); `progress(done)` is
/// called after each batch.
pub(crate) fn build(
    space: &UnitVectors<'_>,
    p: &BuildParams,
    mut progress: impl FnMut(usize),
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
    let mut g = Graph {
        lists: levels.iter().map(|&l| vec![Vec::new(); l + 1]).collect(),
        entry: 0,
        max_level: levels[0],
    };
    let mut done = 1usize;
    progress(done);
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
                let mut list = g.lists[node as usize][level].clone();
                list.extend(grp.iter().map(|&(_, _, q)| q));
                if list.len() > cap(level) {
                    let mut cands: Vec<u64> =
                        list.iter().map(|&r| key(space.key(node, r), r)).collect();
                    cands.sort_unstable();
                    list = select(space, &cands, cap(level));
                }
                (node, level, list)
            })
            .collect();
        // 4. Apply: the batch's own lists, the old nodes' new lists, the entry point.
        for (&q, lists) in rows.iter().zip(links) {
            for (level, list) in lists.into_iter().enumerate() {
                g.lists[q as usize][level] = list;
            }
        }
        for (node, level, list) in updates {
            g.lists[node as usize][level] = list;
        }
        for &q in &rows {
            // The smallest row of the highest level is the entry point (as graph.bin says).
            if levels[q as usize] > g.max_level {
                g.max_level = levels[q as usize];
                g.entry = q;
            }
        }
        done += batch;
        progress(done);
    }
    let mut layer0 = Vec::with_capacity(n);
    let mut upper = Vec::with_capacity(n);
    for mut lists in g.lists {
        let rest = lists.split_off(1);
        layer0.push(lists.pop().unwrap_or_default());
        upper.push(rest);
    }
    Ok(GraphData {
        layer0,
        upper,
        stride0: (2 * p.m) as u32,
        stride_upper: p.m as u32,
    })
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
                let space = UnitVectors::new(&data, dim, family);
                let g = pool.install(|| build(&space, &p, |_| {})).unwrap();
                graphs.push(g.to_payload().unwrap());
            }
        }
        assert!(graphs.windows(2).all(|w| w[0] == w[1]));
    }
}
