//! Exact nearest neighbours by cosine similarity: the ground truth recall is measured against
//! (`shared/method.md`, "Retrieval metrics").
//!
//! Queries are not normalised: a query's scale does not change its ranking.
//!
//! **The order.** The score of base row `b` for query `q` is their cosine times `|q|`, computed
//! in `f64` from the `f32` rows as given: `s = (sum_t f64(q_t) * f64(b_t)) / |b|`, the sum left
//! to right (each product exact), `|b|` the `f64` square root of the `f64` sum of squares.
//! Results are best first by that score; equal scores go to the lower base id (identical base
//! rows always tie, and so do a row and a copy scaled by a power of two, `x` and `2x`, whose sums
//! and norms scale exactly; copies scaled otherwise tie where rounding makes their scores equal).
//! This order is a function of the input values alone: the same on every CPU and for every block
//! size and thread count. A query that equals a base row ranks it first among rows whose exact
//! cosines are more than about `D * 1e-16` below 1, however close the near-duplicates are (a
//! normalisation in `f32` would blur them at `1e-7`).
//!
//! **The computation.** Computing `s` for every pair would be slow, so a BLAS GEMM (`f32`) scores
//! blocks of queries against blocks of base rows (memory stays bounded: a [`Blocks::queries`] x
//! [`Blocks::base`] score matrix) and only picks candidates. A GEMM's rounding depends on the CPU
//! and on where a row falls in its blocks (OpenBLAS's AVX2 kernel gives two identical rows
//! different scores), so each query keeps every row whose GEMM score is within a margin of its
//! k-th best GEMM score, the margin being twice a proven bound on how far the GEMM and the `f64`
//! score can disagree (`margin`). The candidates, usually a few more than k, are then rescored
//! in `f64` and sorted.
//!
//! The `f64` scores are within about `D * 1e-16 * |q|` of the exact `|q| cos(q, b)` of the `f32`
//! rows, so only rows whose exact cosines are that close can come out in an order exact arithmetic
//! would not give. (The GEMM scores base rows normalised in `f32`; only the candidates' choice
//! depends on them, and the margin covers that normalisation's rounding too.)
//!
//! ```
//! use ndarray::array;
//! let base = array![[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]];
//! let queries = array![[1.0f32, 0.1], [-1.0, 2.0]];
//! let top = bsa::groundtruth::exact_top_k(base.view(), queries.view(), 2).unwrap();
//! // Rows 0 and 3 have the same direction (a tie): the lower id comes first.
//! assert_eq!(top, vec![vec![0, 3], vec![1, 2]]);
//! ```

use std::cmp::Ordering;
use std::sync::atomic::AtomicBool;

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView1, ArrayView2, Axis, Zip, s};
use rayon::prelude::*;

use crate::error::{Error, Result};
use bsa_index::deterministic::{F32_UNDERFLOW_PER_TERM, f32_dot_error_bound};

/// Block sizes of the blocked search. The score buffer holds `queries x base` floats
/// (the default 2048 x 8192 is 64 MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocks {
    /// Queries per block.
    pub queries: usize,
    /// Base rows per block.
    pub base: usize,
}

impl Default for Blocks {
    fn default() -> Self {
        Blocks {
            queries: 2048,
            base: 8192,
        }
    }
}

/// The `k` base rows of highest cosine similarity to each query, best first, ties to the lower
/// id, with the default [`Blocks`]. See [`exact_top_k_blocked`].
pub fn exact_top_k(
    base: ArrayView2<f32>,
    queries: ArrayView2<f32>,
    k: usize,
) -> Result<Vec<Vec<u32>>> {
    top_k(base, queries, k, Blocks::default(), &mut |_, _| {}, None)
}

/// The `k` base rows of highest cosine similarity to each query (one list per query row, best
/// first, equal scores to the lower id), computed block by block. `progress(done, total)` is
/// called after each block of (queries x base) scores, on the calling thread; once `stop` is
/// set, the next block returns [`Error::Stopped`] instead.
///
/// Errors: `k` is 0 or more than the base rows, the dimensions differ, a row has a zero or
/// non-finite norm (cosine is undefined), or the base has more than `u32::MAX` rows.
///
/// ```
/// use bsa::groundtruth::{exact_top_k_blocked, Blocks};
/// use std::sync::atomic::AtomicBool;
/// let x = ndarray::array![[1.0f32, 0.0], [0.6, 0.8], [0.0, 1.0]];
/// let small = Blocks { queries: 2, base: 2 };
/// let mut blocks = 0;
/// let never = AtomicBool::new(false);
/// let top = exact_top_k_blocked(x.view(), x.view(), 2, small, &mut |_, _| blocks += 1, &never)?;
/// assert_eq!(top, vec![vec![0, 1], vec![1, 2], vec![2, 1]]);
/// assert_eq!(blocks, 4); // 2 x 2 blocks of queries x base rows
/// let stop = AtomicBool::new(true); // e.g. set by Ctrl-C
/// let stopped = exact_top_k_blocked(x.view(), x.view(), 2, small, &mut |_, _| {}, &stop);
/// assert!(matches!(stopped, Err(bsa::Error::Stopped)));
/// # Ok::<(), bsa::Error>(())
/// ```
pub fn exact_top_k_blocked(
    base: ArrayView2<f32>,
    queries: ArrayView2<f32>,
    k: usize,
    blocks: Blocks,
    progress: &mut dyn FnMut(usize, usize),
    stop: &AtomicBool,
) -> Result<Vec<Vec<u32>>> {
    top_k(base, queries, k, blocks, progress, Some(stop))
}

fn top_k(
    base: ArrayView2<f32>,
    queries: ArrayView2<f32>,
    k: usize,
    blocks: Blocks,
    progress: &mut dyn FnMut(usize, usize),
    stop: Option<&AtomicBool>,
) -> Result<Vec<Vec<u32>>> {
    let (n, dim) = base.dim();
    if queries.ncols() != dim {
        return Err(Error::DimMismatch {
            what: "queries and base vectors must have the same dimension".into(),
            expected: dim,
            got: queries.ncols(),
        });
    }
    if k == 0 || k > n {
        return Err(Error::InvalidArgument(format!(
            "--k must be between 1 and the number of base vectors ({n}), got {k}"
        )));
    }
    if u32::try_from(n).is_err() {
        return Err(Error::InvalidArgument(format!(
            "{n} base vectors: ids above u32::MAX are not supported"
        )));
    }
    if blocks.queries == 0 || blocks.base == 0 {
        return Err(Error::InvalidArgument(
            "block sizes must be positive".into(),
        ));
    }
    let base_norms = norms(base, "base")?;
    let query_norms = norms(queries, "query")?;
    // The GEMM's scores reach a query's norm, which f32 may not hold: queries beyond 2^32 enter
    // it scaled by a power of two (exact, bar components that become subnormal, which the
    // margin's underflow term covers). A query's scale does not change its order, and the
    // final f64 scores use the queries as given.
    let scaled = scaled_queries(queries, &query_norms);
    let gemm_queries = scaled.as_ref().map_or(queries, |q| q.view());

    let nq = queries.nrows();
    let mut tops: Vec<TopK> = gemm_queries
        .axis_iter(Axis(0))
        .map(|q| TopK::new(k, margin(q)))
        .collect();
    let qb = blocks.queries.min(nq.max(1));
    let bb = blocks.base.min(n);
    let total = nq.div_ceil(qb) * n.div_ceil(bb);
    let mut done = 0;
    let mut scores = Array2::<f32>::zeros((qb, bb));
    let mut base_block = Array2::<f32>::zeros((bb, dim));
    for q0 in (0..nq).step_by(qb) {
        let q1 = (q0 + qb).min(nq);
        let q = gemm_queries.slice(s![q0..q1, ..]);
        for b0 in (0..n).step_by(bb) {
            let b1 = (b0 + bb).min(n);
            let mut bblk = base_block.slice_mut(s![..b1 - b0, ..]);
            bblk.assign(&base.slice(s![b0..b1, ..]));
            normalise(&mut bblk, &base_norms[b0..b1]);
            let mut sc = scores.slice_mut(s![..q1 - q0, ..b1 - b0]);
            // BLAS runs its own threads here; the selection below uses rayon's.
            general_mat_mul(1.0, &q, &bblk.t(), 0.0, &mut sc);
            Zip::from(sc.axis_iter(Axis(0)))
                .and(&mut tops[q0..q1])
                .par_for_each(|row, top| {
                    let row = row.as_slice().expect("score rows are contiguous");
                    top.push_block(row, b0 as u32);
                });
            done += 1;
            progress(done, total);
            bsa_index::check_stop(stop)?;
        }
    }
    // The final order, from the f64 scores of the candidates.
    Ok(tops
        .into_par_iter()
        .zip(queries.axis_iter(Axis(0)))
        .map(|(top, q)| top.into_sorted_ids(q, base, &base_norms))
        .collect())
}

/// How far apart a GEMM score and the `f64` score of one pair may be allowed to be for query `q`,
/// so that every row of the final top k stays a candidate.
///
/// With `e` a bound on `|GEMM - exact| + |f64 - exact|` (exact: `|q| cos(q, b)` of the same `f32`
/// rows, in real arithmetic): if `v` is the k-th best GEMM score, k rows have GEMM scores `>= v`, so `f64`
/// scores `>= v - e`, so the k-th best `f64` score is `>= v - e`. A row of the final top k has an
/// `f64` score at least that, so a GEMM score `>= v - 2e`. Rows below `v - 2e` (or below the k-th
/// best so far minus `2e`, which is lower) can be dropped. We drop below twice that, `v - 4e`.
///
/// The bound: a dot product of `D` `f32` terms evaluated in any order (BLAS blocks, SIMD lanes,
/// fused multiply-adds) is within `gamma_D |q| |b|` of the exact value
/// ([`f32_dot_error_bound`], Cauchy-Schwarz for `sum |q_t b_t|`), plus underflow; the `f64` sum
/// within `gamma_D` for `f64` (and its norm and division add less than that again). The GEMM's
/// rows are normalised in `f64` and rounded once to `f32` (`b^_t = f32(b_t / |b|)`, within
/// `u + 2^-53 < 2u` relative, whatever the row's scale: a norm rounded to `f32` first would be
/// subnormal, and off by percents, for rows below `1e-38`), so they have `|b^| <= 1 + 2u` and
/// `|q . b^ - q . b / |b|| < 2u |q|`; a quotient that underflows is off by at most `2^-150`
/// per term, `2^-150 |q_t|` on its product. The margin takes `4u` for both.
fn margin(q: ArrayView1<f32>) -> f64 {
    let dim = q.len();
    let u = f64::from(f32::EPSILON) / 2.0;
    let q_norm = q
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    let b_norm = 1.0 + 4.0 * u;
    let nu64 = (dim as f64 + 1.0) * f64::EPSILON / 2.0;
    let gamma64 = nu64 / (1.0 - nu64);
    let e = (f32_dot_error_bound(dim) * b_norm + 2.0 * gamma64 + 4.0 * u) * q_norm
        + dim as f64 * F32_UNDERFLOW_PER_TERM * (1.0 + q_norm);
    4.0 * e
}

/// The `f64` score of a base row for a query: `sum_t f64(q_t) * f64(b_t)` left to right (each
/// product exact in `f64`), divided by the row's `f64` norm.
fn score_f64(q: ArrayView1<f32>, b: ArrayView1<f32>, norm: f64) -> f64 {
    let mut s = 0.0f64;
    for (&x, &y) in q.iter().zip(b) {
        s += f64::from(x) * f64::from(y);
    }
    s / norm
}

/// `queries` with the rows whose norm passes 2^32 divided by a power of two that brings it to at
/// most 1 (`None` when no row does).
fn scaled_queries(queries: ArrayView2<f32>, norms: &[f64]) -> Option<Array2<f32>> {
    let big = |n: f64| n > (1u64 << 32) as f64;
    if !norms.iter().any(|&n| big(n)) {
        return None;
    }
    let mut q = queries.to_owned();
    for (mut row, &n) in q
        .axis_iter_mut(Axis(0))
        .zip(norms)
        .filter(|&(_, &n)| big(n))
    {
        // e in 33..200 for the norm of a row of f32 values over 2^32; the factor must be an
        // exact power of two, to scale every product without rounding.
        let e = n.log2().ceil() as i32;
        let f = bsa_index::score::pow2(-e);
        row.mapv_inplace(|v| (f64::from(v) * f) as f32);
    }
    Some(q)
}

/// L2 norms of the rows in `f64` (sums of squares left to right, which neither overflow nor
/// underflow for `f32` values), each checked positive and finite.
fn norms(x: ArrayView2<f32>, what: &str) -> Result<Vec<f64>> {
    x.axis_iter(Axis(0))
        .enumerate()
        .map(|(i, row)| {
            let norm = row
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                .sqrt();
            if norm > 0.0 && norm.is_finite() {
                Ok(norm)
            } else {
                Err(Error::InvalidArgument(format!(
                    "{what} row {i} has L2 norm {norm}; cosine similarity needs nonzero, finite rows"
                )))
            }
        })
        .collect()
}

/// Rows divided by their `f64` norms, each quotient rounded once to `f32`.
fn normalise<S: ndarray::DataMut<Elem = f32>>(
    x: &mut ndarray::ArrayBase<S, ndarray::Ix2>,
    norms: &[f64],
) {
    for (mut row, &norm) in x.axis_iter_mut(Axis(0)).zip(norms) {
        row.mapv_inplace(|v| (f64::from(v) / norm) as f32);
    }
}

/// Best first: higher score, then lower id. Scores are finite, so `partial_cmp` never fails
/// (and `-0.0 == 0.0`, a tie, as it should be).
fn better<S: PartialOrd>(a: &(S, u32), b: &(S, u32)) -> Ordering {
    b.0.partial_cmp(&a.0)
        .unwrap_or(Ordering::Equal)
        .then(a.1.cmp(&b.1))
}

/// The largest `f32` not above `x`.
fn f32_at_most(x: f64) -> f32 {
    let f = x as f32;
    if f64::from(f) > x { f.next_down() } else { f }
}

/// The candidates of one query: every row whose GEMM score is at least `floor`, the k-th best
/// GEMM score so far minus the query's [`margin`] (`-inf` until there are k). Pruned to that when
/// the buffer fills; the buffer doubles when a prune does not free half of it (many rows within
/// the margin, e.g. duplicates).
struct TopK {
    k: usize,
    margin: f64,
    items: Vec<(f32, u32)>,
    cap: usize,
    floor: f32,
}

impl TopK {
    fn new(k: usize, margin: f64) -> Self {
        TopK {
            k,
            margin,
            items: Vec::with_capacity(2 * k),
            cap: 2 * k,
            floor: f32::NEG_INFINITY,
        }
    }

    fn push_block(&mut self, scores: &[f32], first_id: u32) {
        for (j, &s) in scores.iter().enumerate() {
            if s >= self.floor {
                self.items.push((s, first_id + j as u32));
                if self.items.len() >= self.cap {
                    self.prune();
                }
            }
        }
    }

    fn prune(&mut self) {
        let k = self.k;
        if self.items.len() >= k {
            self.items.select_nth_unstable_by(k - 1, better);
            let kth = self.items[k - 1].0;
            self.floor = f32_at_most(f64::from(kth) - self.margin);
            let floor = self.floor;
            self.items.retain(|p| p.0 >= floor);
        }
        if 2 * self.items.len() > self.cap {
            self.cap = 2 * self.items.len();
        }
    }

    /// The final top k: the candidates rescored in `f64` ([`score_f64`]), best first, ties to
    /// the lower id.
    fn into_sorted_ids(
        mut self,
        q: ArrayView1<f32>,
        base: ArrayView2<f32>,
        norms: &[f64],
    ) -> Vec<u32> {
        self.prune();
        let mut scored: Vec<(f64, u32)> = self
            .items
            .iter()
            .map(|&(_, id)| {
                let i = id as usize;
                (score_f64(q, base.row(i), norms[i]), id)
            })
            .collect();
        scored.sort_unstable_by(better);
        scored.truncate(self.k);
        scored.into_iter().map(|p| p.1).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// A stop flag nobody sets.
    fn never() -> AtomicBool {
        AtomicBool::new(false)
    }

    fn random(n: usize, dim: usize, seed: u64) -> Array2<f32> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        Array2::from_shape_simple_fn((n, dim), || rng.sample::<f32, _>(StandardNormal))
    }

    /// The order the module promises, computed directly, without a GEMM or candidates: for each
    /// base row the f64 inner product summed left to right over its f64 norm (written out here,
    /// not `norms` and `score_f64`, which it checks), a stable sort by decreasing score (equal
    /// scores keep the lower id first). Also returns the sorted scores.
    fn brute(base: &Array2<f32>, queries: &Array2<f32>, k: usize) -> Vec<(Vec<u32>, Vec<f64>)> {
        let norm: Vec<f64> = base
            .rows()
            .into_iter()
            .map(|r| r.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt())
            .collect();
        queries
            .rows()
            .into_iter()
            .map(|q| {
                let s: Vec<f64> = base
                    .rows()
                    .into_iter()
                    .zip(&norm)
                    .map(|(b, &n)| {
                        let mut s = 0.0f64;
                        for (&x, &y) in q.iter().zip(b) {
                            s += f64::from(x) * f64::from(y);
                        }
                        s / n
                    })
                    .collect();
                let mut order: Vec<u32> = (0..s.len() as u32).collect();
                order.sort_by(|&a, &c| s[c as usize].partial_cmp(&s[a as usize]).unwrap());
                order.truncate(k);
                let scores = order.iter().map(|&i| s[i as usize]).collect();
                (order, scores)
            })
            .collect()
    }

    /// `got == want`, naming the first query that differs.
    #[track_caller]
    fn assert_same(got: &[Vec<u32>], want: &[Vec<u32>], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g, w, "{what}: query {i}");
        }
    }

    use crate::threads::with_threads;

    /// The blocked search equals `want` for every block shape of `shapes` and 1, 2 and 4 threads.
    fn assert_every_split(
        base: &Array2<f32>,
        queries: &Array2<f32>,
        k: usize,
        want: &[Vec<u32>],
        shapes: &[(usize, usize)],
    ) {
        for threads in [1, 2, 4] {
            for &(qb, bb) in shapes {
                let blocks = Blocks {
                    queries: qb,
                    base: bb,
                };
                let got = with_threads(threads, || {
                    exact_top_k_blocked(
                        base.view(),
                        queries.view(),
                        k,
                        blocks,
                        &mut |_, _| {},
                        &never(),
                    )
                })
                .unwrap();
                assert_same(&got, want, &format!("{blocks:?}, {threads} threads"));
            }
        }
    }

    /// Block shapes whose boundaries fall on and next to the duplicated rows of the fixtures.
    const SHAPES: [(usize, usize); 12] = [
        (2048, 8192),
        (1, 1),
        (7, 64),
        (90, 129),
        (3, 63),
        (5, 65),
        (64, 127),
        (2, 128),
        (33, 255),
        (16, 256),
        (1, 511),
        (4, 700),
    ];

    /// Counts the exact ties and the near ties (distinct f64 scores closer than f32 rounding can
    /// tell apart) between neighbours of the expected top k.
    fn ties(want: &[(Vec<u32>, Vec<f64>)]) -> (usize, usize) {
        let gaps = want
            .iter()
            .flat_map(|(_, s)| s.windows(2).map(|w| w[0] - w[1]));
        gaps.fold((0, 0), |(t, n), g| {
            (
                t + usize::from(g == 0.0),
                n + usize::from(g > 0.0 && g < 1e-6),
            )
        })
    }

    #[test]
    fn equals_brute_force_with_exact_ties_and_near_ties_for_every_block_shape_and_thread_count() {
        let dim = 24;
        let mut base = random(700, dim, 1);
        // Exact duplicates on both sides of block boundaries (63/64/65, 127/128/129, 255/256,
        // 511/512, 699), so identical rows land in different blocks and at different places of
        // a block: their scores tie exactly, and the lower id must come first.
        for (dst, src) in [
            (650, 3),
            (300, 3),
            (64, 3),
            (129, 128),
            (127, 128),
            (63, 600),
        ] {
            let row = base.row(src).to_owned();
            base.row_mut(dst).assign(&row);
        }
        for dst in [255, 256, 512, 699] {
            let row = base.row(5).to_owned();
            base.row_mut(dst).assign(&row);
        }
        // The same direction at another length: scores of 4x tie exactly with x's (sums and
        // norms scale exactly by powers of two), and those of 3x are a near tie, or a tie.
        let row = base.row(10).mapv(|v| v * 4.0);
        base.row_mut(400).assign(&row);
        let row = base.row(10).mapv(|v| v * 3.0);
        base.row_mut(65).assign(&row);
        // Near duplicates: one element one ulp away. Their f64 scores differ by about 1e-8,
        // below what an f32 GEMM can resolve, so only the f64 rescoring orders them right.
        for (dst, src, t) in [(511, 20, 0), (128 + 256, 20, 5), (66, 21, 3), (257, 21, 7)] {
            let mut row = base.row(src).to_owned();
            row[t] = row[t].next_up();
            base.row_mut(dst).assign(&row);
        }
        let mut queries = random(90, dim, 2);
        // Queries equal (or close) to duplicated rows, so they are surely in the top k.
        for (q, b) in [
            (0, 3),
            (1, 128),
            (2, 600),
            (3, 5),
            (4, 10),
            (5, 20),
            (6, 21),
        ] {
            let row = base.row(b).to_owned();
            queries.row_mut(q).assign(&row);
        }
        for q in 7..12 {
            let row = base.row(20).mapv(|v| v * 0.5) + base.row(q).mapv(|v| v * 1e-3);
            queries.row_mut(q).assign(&row);
        }
        let k = 20;
        let want = brute(&base, &queries, k);
        let (exact, near) = ties(&want);
        assert!(
            exact >= 10 && near >= 5,
            "the fixture should hold ties: {exact} exact, {near} near"
        );
        let want: Vec<Vec<u32>> = want.into_iter().map(|(ids, _)| ids).collect();
        assert_every_split(&base, &queries, k, &want, &SHAPES);
        let all: Vec<Vec<u32>> = brute(&base, &queries, 700)
            .into_iter()
            .map(|(ids, _)| ids)
            .collect();
        assert_same(
            &exact_top_k(base.view(), queries.view(), 700).unwrap(),
            &all,
            "k = n",
        );
    }

    #[test]
    fn equals_brute_force_on_wide_rows_with_many_duplicates() {
        // A wider GEMM (long sums, BLAS's inner blocking), 40 copies of one row spread over the
        // ids, queries close to it: the top k is mostly one tie, decided by id.
        let dim = 300;
        let mut base = random(1000, dim, 11);
        let row = base.row(7).to_owned();
        for dst in (13..1000).step_by(25) {
            base.row_mut(dst).assign(&row);
        }
        let mut queries = random(40, dim, 12);
        for q in 0..20 {
            let near = &row + &queries.row(q).mapv(|v| v * 1e-2);
            queries.row_mut(q).assign(&near);
        }
        let k = 50;
        let want = brute(&base, &queries, k);
        assert!(ties(&want).0 >= 20 * 39, "{:?}", ties(&want));
        let want: Vec<Vec<u32>> = want.into_iter().map(|(ids, _)| ids).collect();
        assert_every_split(
            &base,
            &queries,
            k,
            &want,
            &[(2048, 8192), (3, 100), (40, 64), (1, 999)],
        );
    }

    #[test]
    fn candidates_survive_any_gemm_error_within_the_bound() {
        // The margin logic alone: GEMM scores replaced by the f64 scores plus an error `e` as
        // large as the margin allows (a quarter of it), adversarially signed: the rows of the
        // top k pushed down, the others up. The candidates must still hold the top k of the f64
        // scores. Besides the real margin, large made-up ones (with errors to match) put many
        // rows on both sides of the cut, which a margin too small for its error would lose.
        let dim = 16;
        let base = random(400, dim, 21);
        let queries = random(30, dim, 22);
        let norms = norms(base.view(), "base").unwrap();
        let k = 10;
        let want = brute(&base, &queries, k);
        for (qi, q) in queries.rows().into_iter().enumerate() {
            let exact: Vec<f64> = (0..400)
                .map(|i| score_f64(q, base.row(i), norms[i]))
                .collect();
            let kth = want[qi].1[k - 1];
            for (m, block) in [
                (margin(q), 1),
                (margin(q), 400),
                (0.1, 7),
                (0.4, 1),
                (2.0, 33),
            ] {
                let e = m / 4.0;
                let mut top = TopK::new(k, m);
                for b0 in (0..400).step_by(block) {
                    let scores: Vec<f32> = (b0..(b0 + block).min(400))
                        .map(|i| {
                            let s = exact[i];
                            let err = if s >= kth { e } else { -e };
                            f32_at_most(s - err)
                        })
                        .collect();
                    top.push_block(&scores, b0 as u32);
                }
                assert_eq!(
                    top.into_sorted_ids(q, base.view(), &norms),
                    want[qi].0,
                    "query {qi}"
                );
            }
        }
    }

    #[test]
    fn all_equal_scores_give_ids_in_order() {
        let base = Array2::from_elem((50, 3), 1.0f32);
        let queries = Array2::from_elem((2, 3), 0.5f32);
        let got = exact_top_k_blocked(
            base.view(),
            queries.view(),
            10,
            Blocks {
                queries: 1,
                base: 7,
            },
            &mut |_, _| {},
            &never(),
        )
        .unwrap();
        assert_eq!(got, vec![(0..10).collect::<Vec<u32>>(); 2]);
    }

    /// A query equal to a base row finds it first among hundreds of near-duplicates whose
    /// cosines are within `1e-10` of 1 (found by a user: rows normalised in `f32` ranked them by
    /// their rounding, and the identical row fell out of the top 100), at every block shape.
    #[test]
    fn a_row_equal_to_the_query_comes_first_among_near_duplicates() {
        let dim = 48;
        let v = random(1, dim, 21).row(0).to_owned();
        let noise = random(400, dim, 22);
        let mut base = Array2::<f32>::zeros((400, dim));
        for (i, mut row) in base.rows_mut().into_iter().enumerate() {
            // Lengths around 1 and 3, directions 1e-5 apart: cosines 1 - 1e-10 or so.
            let scale = if i % 2 == 0 { 1.0 } else { 3.0 } / v.dot(&v).sqrt();
            row.assign(&((&v + &(&noise.row(i) * 1e-5f32)) * scale));
        }
        base.row_mut(237).assign(&v);
        let queries = ndarray::stack(Axis(0), &[v.view(), (&v * 0.5f32).view()]).unwrap();
        for blocks in [
            Blocks::default(),
            Blocks {
                queries: 1,
                base: 7,
            },
        ] {
            let got = exact_top_k_blocked(
                base.view(),
                queries.view(),
                100,
                blocks,
                &mut |_, _| {},
                &never(),
            )
            .unwrap();
            assert_eq!(got[0][0], 237, "{got:?}");
            assert_eq!(got[0], got[1], "the query's length changes nothing");
        }
    }

    /// Rows at the ends of f32's range rank by their cosines: a row of subnormal values (whose
    /// norm rounded to f32 would be off by percents: found by a review) and one whose norm
    /// passes f32's largest value (finite values, so a cosine; refused before).
    #[test]
    fn tiny_and_huge_rows_rank_by_their_cosines() {
        let tiny = 2.0 * f32::from_bits(1); // 2 x 2^-149
        let base = ndarray::array![
            [tiny, tiny],
            [0.7, 0.51f32.sqrt()],
            [3e38, 1e38],
            [-3e38, 3e38]
        ];
        let queries = ndarray::array![[1.0f32, 0.0], [1.0, 1.0]];
        let got = exact_top_k(base.view(), queries.view(), 4).unwrap();
        // Cosines with query 0: 0.7071, 0.7, 0.9487, -0.7071; with query 1: 1, 0.99995,
        // 0.8944, 0.
        assert_eq!(got, vec![vec![2, 0, 1, 3], vec![0, 1, 2, 3]]);
        // With k = 1 the tiny row must survive the GEMM's choice of candidates.
        let two = base.slice(s![..2, ..]);
        assert_eq!(
            exact_top_k(two, queries.slice(s![..1, ..]), 1).unwrap(),
            vec![vec![0]]
        );
        // Queries of any finite values rank rows by their directions (the GEMM takes them
        // scaled by a power of two: as they are, its f32 scores can overflow to inf, and a
        // review found a best row dropped so).
        let huge = ndarray::array![[3e38f32, 1e38], [3.3589181e38, 5.4486396e37]];
        let got = exact_top_k(base.view(), huge.view(), 1).unwrap();
        assert_eq!(got[0], vec![2]);
        // A query of norm just under f32's largest, its own direction among near ones.
        let q = huge.row(1).to_owned();
        let norm = q.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
        let own = q.mapv(|v| (f64::from(v) / norm) as f32);
        let mut near = Array2::<f32>::zeros((40, 2));
        for (i, mut row) in near.axis_iter_mut(Axis(0)).enumerate() {
            let t = (i as f64 - 20.0) * 1e-4;
            let (c, s) = (t.cos(), t.sin());
            let (x, y) = (f64::from(own[0]), f64::from(own[1]));
            row.assign(&ndarray::array![
                (c * x - s * y) as f32,
                (s * x + c * y) as f32
            ]);
        }
        let top = exact_top_k(near.view(), huge.slice(s![1.., ..]), 1).unwrap();
        assert_eq!(top, vec![vec![20]], "the query's own direction, row 20");
    }

    /// A row and its copies scaled by powers of two have the same score, so they come out in
    /// id order, whichever comes first in the base (found by a review: `x` came after `2x`).
    #[test]
    fn copies_scaled_by_powers_of_two_tie_to_the_lower_id() {
        let rows = random(40, 24, 11);
        let unit = &rows
            / &rows
                .map_axis(Axis(1), |r| r.dot(&r).sqrt())
                .insert_axis(Axis(1));
        let queries = random(8, 24, 12);
        for (what, one) in [("unit", &unit), ("raw", &rows)] {
            // Rows 0..40 scaled by 2, then the rows, then by 0.25, then by 8.
            let scaled = |f: f32| one.mapv(|v| v * f);
            let base = ndarray::concatenate(
                Axis(0),
                &[
                    scaled(2.0).view(),
                    one.view(),
                    scaled(0.25).view(),
                    scaled(8.0).view(),
                ],
            )
            .unwrap();
            let got = exact_top_k(base.view(), queries.view(), 12).unwrap();
            for (q, ids) in got.iter().enumerate() {
                for group in ids.chunks(4) {
                    let mut want: Vec<u32> = (0..4).map(|c| group[0] % 40 + 40 * c).collect();
                    want.truncate(group.len());
                    assert_eq!(group, &want[..], "{what} query {q}: {ids:?}");
                }
            }
        }
    }

    #[test]
    fn progress_counts_blocks() {
        let base = random(100, 4, 3);
        let queries = random(10, 4, 4);
        let mut calls = Vec::new();
        exact_top_k_blocked(
            base.view(),
            queries.view(),
            5,
            Blocks {
                queries: 4,
                base: 30,
            },
            &mut |d, t| calls.push((d, t)),
            &never(),
        )
        .unwrap();
        assert_eq!(calls.len(), 12);
        assert_eq!(calls.last(), Some(&(12, 12)));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let base = random(10, 4, 5);
        let q = random(3, 4, 6);
        assert!(exact_top_k(base.view(), q.view(), 0).is_err());
        let e = exact_top_k(base.view(), q.view(), 11)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("between 1 and the number of base vectors (10)"),
            "{e}"
        );
        let q5 = random(3, 5, 6);
        assert!(exact_top_k(base.view(), q5.view(), 3).is_err());
        let mut zero = base.clone();
        zero.row_mut(7).fill(0.0);
        let e = exact_top_k(zero.view(), q.view(), 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("base row 7"), "{e}");
    }

    /// The candidates' floor is rounded down into `f32`, never to nearest: an `f64` floor just
    /// below an `f32` value rounds up to it by `as f32`, and a row scored exactly at the floor's
    /// `f32` neighbour below would be pruned although its `f64` score may make the top k. No
    /// other test reaches a floor that `as f32` rounds up, so rounding to nearest passed.
    #[test]
    fn the_floor_rounds_down_into_f32() {
        for x in [1.0 - 2f64.powi(-30), -(1.0 + 2f64.powi(-30)), 3.0 - 1e-12] {
            let f = f32_at_most(x);
            assert!(f64::from(f) <= x, "{x} gave {f}");
            assert!(
                f64::from(f.next_up()) > x,
                "{x} gave {f}, not the largest below"
            );
        }
        assert_eq!(f32_at_most(1.0 - 2f64.powi(-30)), 1.0f32.next_down());
        // Values an f32 holds are kept.
        for v in [0.0f32, 1.0, -2.5, f32::MIN_POSITIVE] {
            assert_eq!(f32_at_most(f64::from(v)), v);
        }
    }
}
