//! Exact nearest neighbours by cosine similarity: the ground truth recall is measured against
//! (`shared/method.md`, "Retrieval metrics").
//!
//! Base rows are L2-normalised (in `f32`, `x / |x|`; rows already of unit length to within 4 ulp
//! are left as they are, so that on normalised data the scores are the plain inner products
//! everyone else computes). Queries are not normalised: a query's scale does not change its
//! ranking. Scores are inner products computed by a BLAS GEMM (`f32`) over blocks of queries and
//! blocks of base rows, so memory stays bounded (a [`Blocks::queries`] x [`Blocks::base`] score
//! matrix) whatever the sizes. Each query keeps a running top-k across base blocks. Results are
//! best first; equal scores go to the lower base id, so the output is deterministic and
//! independent of the block sizes and thread count.
//!
//! Scores are `f32`: two neighbours whose exact cosines differ by less than about `1e-7` may come
//! out in either order (a reference computed another way can swap them).
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

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, ArrayView2, Axis, Zip};

use crate::error::{Error, Result};

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
    exact_top_k_blocked(base, queries, k, Blocks::default(), &mut |_, _| {})
}

/// The `k` base rows of highest cosine similarity to each query (one list per query row, best
/// first, equal scores to the lower id), computed block by block. `progress(done, total)` is
/// called after each block of (queries x base) scores, on the calling thread.
///
/// Errors: `k` is 0 or more than the base rows, the dimensions differ, a row has a zero or
/// non-finite norm (cosine is undefined), or the base has more than `u32::MAX` rows.
pub fn exact_top_k_blocked(
    base: ArrayView2<f32>,
    queries: ArrayView2<f32>,
    k: usize,
    blocks: Blocks,
    progress: &mut dyn FnMut(usize, usize),
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
    norms(queries, "query")?;

    let nq = queries.nrows();
    let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
    let qb = blocks.queries.min(nq.max(1));
    let bb = blocks.base.min(n);
    let total = nq.div_ceil(qb) * n.div_ceil(bb);
    let mut done = 0;
    let mut scores = Array2::<f32>::zeros((qb, bb));
    let mut base_block = Array2::<f32>::zeros((bb, dim));
    for q0 in (0..nq).step_by(qb) {
        let q1 = (q0 + qb).min(nq);
        let q = queries.slice(s![q0..q1, ..]);
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
        }
    }
    Ok(tops.into_iter().map(TopK::into_sorted_ids).collect())
}

/// L2 norms of the rows as `f32` (computed in `f64`), each checked positive and finite, with
/// norms within 4 ulp of 1 given as exactly 1 (the row is already normalised).
fn norms(x: ArrayView2<f32>, what: &str) -> Result<Vec<f32>> {
    x.axis_iter(Axis(0))
        .enumerate()
        .map(|(i, row)| {
            let norm = row
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                .sqrt() as f32;
            if (norm - 1.0).abs() <= 4.0 * f32::EPSILON {
                Ok(1.0)
            } else if norm > 0.0 && norm.is_finite() {
                Ok(norm)
            } else {
                Err(Error::InvalidArgument(format!(
                    "{what} row {i} has L2 norm {norm}; cosine similarity needs nonzero, finite rows"
                )))
            }
        })
        .collect()
}

fn normalise<S: ndarray::DataMut<Elem = f32>>(
    x: &mut ndarray::ArrayBase<S, ndarray::Ix2>,
    norms: &[f32],
) {
    for (mut row, &norm) in x.axis_iter_mut(Axis(0)).zip(norms) {
        if norm != 1.0 {
            row.mapv_inplace(|v| v / norm);
        }
    }
}

/// Best first: higher score, then lower id. Scores are finite, so `partial_cmp` never fails
/// (and `-0.0 == 0.0`, a tie, as it should be).
fn better(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    b.0.partial_cmp(&a.0)
        .unwrap_or(Ordering::Equal)
        .then(a.1.cmp(&b.1))
}

/// A running top-k of one query: candidates in a buffer of up to `2k`, pruned to the best `k`
/// when full. Blocks arrive in increasing id order, so a new score equal to the current k-th best
/// loses to it (its id is higher): only strictly greater scores are kept.
struct TopK {
    k: usize,
    items: Vec<(f32, u32)>,
    /// Score of the k-th best after the last prune (`-inf` until there are k).
    worst: f32,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            k,
            items: Vec::with_capacity(2 * k),
            worst: f32::NEG_INFINITY,
        }
    }

    fn push_block(&mut self, scores: &[f32], first_id: u32) {
        for (j, &s) in scores.iter().enumerate() {
            if s > self.worst {
                self.items.push((s, first_id + j as u32));
                if self.items.len() >= 2 * self.k {
                    self.prune();
                }
            }
        }
    }

    fn prune(&mut self) {
        let k = self.k;
        if self.items.len() > k {
            self.items.select_nth_unstable_by(k - 1, better);
            self.items.truncate(k);
        }
        if self.items.len() == k {
            self.worst = self.items.iter().map(|p| p.0).fold(f32::INFINITY, f32::min);
        }
    }

    fn into_sorted_ids(mut self) -> Vec<u32> {
        self.items.sort_unstable_by(better);
        self.items.truncate(self.k);
        self.items.into_iter().map(|p| p.1).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn random(n: usize, dim: usize, seed: u64) -> Array2<f32> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        Array2::from_shape_simple_fn((n, dim), || rng.sample::<f32, _>(StandardNormal))
    }

    /// Brute force in f64: every cosine, a stable sort by decreasing score (so ties keep the
    /// lower id first). Also returns the sorted scores.
    fn brute(base: &Array2<f32>, queries: &Array2<f32>, k: usize) -> Vec<(Vec<u32>, Vec<f64>)> {
        let unit = |r: ndarray::ArrayView1<f32>| {
            let v: Vec<f64> = r.iter().map(|&x| f64::from(x)).collect();
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.into_iter().map(|x| x / n).collect::<Vec<f64>>()
        };
        let b: Vec<Vec<f64>> = base.rows().into_iter().map(unit).collect();
        queries
            .rows()
            .into_iter()
            .map(|q| {
                let q = unit(q);
                let s: Vec<f64> = b
                    .iter()
                    .map(|r| r.iter().zip(&q).map(|(a, c)| a * c).sum())
                    .collect();
                let mut order: Vec<u32> = (0..s.len() as u32).collect();
                order.sort_by(|&a, &c| s[c as usize].partial_cmp(&s[a as usize]).unwrap());
                order.truncate(k);
                let scores = order.iter().map(|&i| s[i as usize]).collect();
                (order, scores)
            })
            .collect()
    }

    #[test]
    fn equals_brute_force_with_exact_ties() {
        let dim = 24;
        let mut base = random(700, dim, 1);
        // Exact duplicates (and a scaled copy, the same direction) far apart in id and across
        // block boundaries: their cosines tie exactly, and the lower id must come first.
        for (dst, src) in [(650, 3), (300, 3), (129, 128), (64, 600), (512, 5)] {
            let row = base.row(src).to_owned();
            base.row_mut(dst).assign(&row);
        }
        let row = base.row(10).mapv(|v| v * 4.0); // powers of two keep x / |x| exact
        base.row_mut(400).assign(&row);
        let mut queries = random(90, dim, 2);
        // Queries equal to base rows, so duplicates are surely in their top-k.
        for (q, b) in [(0, 3), (1, 128), (2, 600), (3, 5), (4, 10)] {
            let row = base.row(b).to_owned();
            queries.row_mut(q).assign(&row);
        }
        let k = 20;
        let want = brute(&base, &queries, k);
        // The f32 computation can only be compared exactly where no two distinct scores near
        // the top are within f32 rounding: check the fixture has none (else change the seed).
        for (ids, scores) in &want {
            for (i, w) in scores.windows(2).enumerate() {
                let gap = w[0] - w[1];
                let tie = gap == 0.0;
                assert!(tie || gap > 1e-5, "near tie {gap:e} at {i} in {ids:?}");
            }
        }
        let ties = want
            .iter()
            .map(|(_, s)| s.windows(2).filter(|w| w[0] == w[1]).count())
            .sum::<usize>();
        assert!(
            ties >= 5,
            "the fixture should hold exact ties, found {ties}"
        );
        let want: Vec<Vec<u32>> = want.into_iter().map(|(ids, _)| ids).collect();
        for blocks in [
            Blocks::default(),
            Blocks {
                queries: 7,
                base: 64,
            },
            Blocks {
                queries: 1,
                base: 1,
            },
            Blocks {
                queries: 90,
                base: 129,
            },
        ] {
            let got = exact_top_k_blocked(base.view(), queries.view(), k, blocks, &mut |_, _| {})
                .unwrap();
            assert_eq!(got, want, "{blocks:?}");
        }
        assert_eq!(
            exact_top_k(base.view(), queries.view(), 700).unwrap().len(),
            90
        );
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
        )
        .unwrap();
        assert_eq!(got, vec![(0..10).collect::<Vec<u32>>(); 2]);
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
}
