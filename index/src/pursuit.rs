//! Greedy binary matching pursuit on fixed-order products: the K atoms of each row, given its
//! initial correlations and the dictionary. [`crate::model`] encodes pursuit models' queries
//! with it; `bsa` encodes base rows with it too, and fits dictionaries with [`greedy_codes`] on
//! BLAS products (training's results are promised per CPU kind only).
//!
//! The greedy steps carry float sums from one step to the next, so a last-bit difference in the
//! correlations or the Gram matrix can change which atom is picked. Both therefore come from
//! [`crate::deterministic`]: a vector gets the same atoms on every CPU and for every thread count
//! (base rows in `bsa build` and queries in `bsa search` alike).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ndarray::{Array2, ArrayView2, Axis, Zip};
use rayon::prelude::*;

use crate::deterministic::{Packed, matmul_nt_packed};
use crate::memo::LastFor;

/// Greedy binary matching pursuit: exactly `k` distinct atoms for each row of `h`, where `h`
/// holds the initial correlations `(x - bd) . a_j` and `gram = A A^T`. Returns the chosen atoms
/// of each row in ascending order. Ties go to the lower atom index, so encoding is deterministic.
///
/// With orthonormal atoms (`gram` the identity) each atom's gain is its own correlation, so the
/// pursuit keeps the `k` largest:
///
/// ```
/// use bsa_index::pursuit::greedy_codes;
/// let gram = ndarray::Array2::<f32>::eye(6);
/// let h = ndarray::array![[0.1f32, 0.9, -0.3, 0.5, 0.9, 0.2], [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]];
/// let codes = greedy_codes(h.view(), gram.view(), 3);
/// assert_eq!(codes[0], vec![1, 3, 4]); // ascending atom order
/// assert_eq!(codes[1], vec![0, 1, 5]); // exactly k atoms; ties to the lower atom
/// ```
///
/// Correlated atoms change the picks: the second atom's gain drops by what it shares with the
/// first (`2 gram[i][j]`), so a near-copy of a chosen atom is passed over.
///
/// ```
/// use bsa_index::pursuit::greedy_codes;
/// let atoms = ndarray::array![[1.0f32, 0.0], [0.99, 0.141], [0.0, 1.0]];
/// let gram = bsa_index::deterministic::gram(atoms.view());
/// let x = ndarray::array![[1.0f32, 0.3]];
/// let h = bsa_index::deterministic::matmul_nt(x.view(), atoms.view()); // 1.0, 1.03, 0.3
/// // Atom 1 first; then atom 0 correlates better than atom 2, but is nearly atom 1.
/// assert_eq!(greedy_codes(h.view(), gram.view(), 2), vec![vec![1, 2]]);
/// ```
pub fn greedy_codes(h: ArrayView2<f32>, gram: ArrayView2<f32>, k: usize) -> Vec<Vec<u32>> {
    let n_atoms = gram.nrows();
    let k = k.min(n_atoms);
    let gram = gram.as_standard_layout();
    let diag: Vec<f32> = gram.diag().to_vec();
    let mut out = vec![Vec::new(); h.nrows()];
    Zip::from(h.axis_iter(Axis(0)))
        .and(&mut out)
        .par_for_each(|row, code| {
            // gain_j = 2 c_j - |a_j|^2; chosen atoms are set to -inf so they are not picked again.
            let mut gain: Vec<f32> = row.iter().zip(&diag).map(|(&c, &d)| 2.0 * c - d).collect();
            let mut chosen = Vec::with_capacity(k);
            let mut best_gain = lane_max(&gain);
            for _ in 0..k {
                // First index holding the maximum: ties go to the lower atom.
                let best = next_atom(&gain, best_gain, &chosen);
                chosen.push(best as u32);
                gain[best] = f32::NEG_INFINITY;
                // c_i -= G[best, i] for all i, i.e. gain_i -= 2 G[best, i]; the maximum for the
                // next step is taken in the same pass.
                best_gain = update_and_max(
                    &mut gain,
                    &gram.as_slice().expect("standard layout")
                        [best * n_atoms..(best + 1) * n_atoms],
                );
            }
            chosen.sort_unstable();
            *code = chosen;
        });
    out
}

/// The atom a pursuit step picks: the first holding the largest gain `best_gain` (ties to the
/// lower atom). Chosen atoms hold `-inf`, below every gain of a sane dictionary; where no gain
/// left is above it (a dictionary whose norms or correlations overflow `f32`: every gain `-inf`
/// or NaN), the chosen would tie with the rest and be picked again, so the lowest atom not in
/// `chosen` is: a code always has `k` distinct atoms.
fn next_atom(gain: &[f32], best_gain: f32, chosen: &[u32]) -> usize {
    if best_gain > f32::NEG_INFINITY {
        return first_index_of(gain, best_gain);
    }
    (0..gain.len())
        .find(|&j| !chosen.contains(&(j as u32)))
        .expect("k is at most the number of atoms")
}

/// Maximum of `v`, in 16 independent lanes so that the compiler can vectorise it (a single
/// running maximum is a serial dependency chain).
fn lane_max(v: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = v.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l = if x > *l { x } else { *l };
        }
    }
    tail.iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// The first index of `v` holding `m` (0 if none): 16 values are compared at once, which the
/// compiler vectorises, and only the chunk that holds `m` is searched one by one (a plain
/// `position` compares one value at a time, half of a pursuit step's time).
fn first_index_of(v: &[f32], m: f32) -> usize {
    let mut chunks = v.chunks_exact(16);
    for (c, chunk) in (&mut chunks).enumerate() {
        if chunk.iter().fold(false, |any, &x| any | (x == m)) {
            return c * 16 + chunk.iter().position(|&x| x == m).unwrap_or(0);
        }
    }
    let start = v.len() - chunks.remainder().len();
    chunks
        .remainder()
        .iter()
        .position(|&x| x == m)
        .map_or(0, |i| start + i)
}

/// `gain -= 2 g_row` and the maximum of the result, in one pass. `g_row` is the Gram row of
/// the atom just chosen (contiguous: the Gram matrix is built in standard layout).
fn update_and_max(gain: &mut [f32], g_row: &[f32]) -> f32 {
    debug_assert_eq!(gain.len(), g_row.len());
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = gain.chunks_exact_mut(16);
    let mut rows = g_row.chunks_exact(16);
    for (c, r) in (&mut chunks).zip(&mut rows) {
        for ((l, x), &g) in lanes.iter_mut().zip(c.iter_mut()).zip(r) {
            *x -= 2.0 * g;
            *l = if *x > *l { *x } else { *l };
        }
    }
    let mut m = lanes
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    for (x, &g) in chunks.into_remainder().iter_mut().zip(rows.remainder()) {
        *x -= 2.0 * g;
        m = if *x > m { *x } else { m };
    }
    m
}

/// [`greedy_codes`] of rows whose fixed initial correlations are `h` (`(x - bd) . a_j` from
/// [`crate::deterministic`]), with the fixed Gram matrix of the dictionary `atoms` (`N x D`,
/// one atom per row): the same atoms on every CPU and thread count.
///
/// The Gram matrix, whole or the rows made so far, is the same for every call with this
/// dictionary (queries encoded a few at a time by a long-lived process): kept
/// (the process's one-slot memo). Rows a step at a time cost about as much as the whole matrix (made by
/// halves, it is symmetric, in large blocks) once a batch could pick a quarter of them: 4096
/// atoms, K = 32, one `bsa search --score adc`: 5 queries encoded in 0.034 s against 0.087, 20
/// in 0.061 against 0.088, 40 (rows) in 0.08-0.09 against 0.09.
///
/// ```
/// use bsa_index::pursuit::{fixed_codes, greedy_codes};
/// let atoms = ndarray::array![[1.0f32, 0.0], [0.0, 1.0], [0.6, 0.8]];
/// // x = (0.6, 0.8), bd = 0: the correlations x . a_j.
/// let h = ndarray::array![[0.6f32, 0.8, 1.0]];
/// assert_eq!(fixed_codes(h.view(), atoms.view(), 1), vec![vec![2]]);
/// let gram = bsa_index::deterministic::gram(atoms.view());
/// assert_eq!(fixed_codes(h.view(), atoms.view(), 2), greedy_codes(h.view(), gram.view(), 2));
/// ```
pub fn fixed_codes(h: ArrayView2<f32>, atoms: ArrayView2<f32>, k: usize) -> Vec<Vec<u32>> {
    static GRAM: LastFor<GramCache> = LastFor::new();
    fixed_codes_with(h, atoms, k, &GRAM.get(atoms, GramCache::default))
}

/// [`fixed_codes`] with the Gram matrix (or its rows) kept in `cache`, which must be the cache
/// of the dictionary `atoms` alone: an owner of unchanging atoms keeps its own
/// ([`crate::model::QueryModel`]), so that several dictionaries in one process do not take
/// turns in [`fixed_codes`]' one slot.
///
/// ```
/// use bsa_index::pursuit::{fixed_codes, fixed_codes_with, GramCache};
/// let atoms = ndarray::Array2::from_shape_fn((64, 8), |(j, t)| ((j * 5 + t * 3) % 7) as f32 - 3.0);
/// let x = ndarray::Array2::from_shape_fn((3, 8), |(i, t)| ((i + t * t) % 5) as f32 - 2.0);
/// let h = bsa_index::deterministic::matmul_nt(x.view(), atoms.view()); // correlations, bd = 0
/// let cache = GramCache::default(); // kept beside `atoms`, reused for every call
/// let codes = fixed_codes_with(h.view(), atoms.view(), 4, &cache);
/// assert_eq!(codes, fixed_codes(h.view(), atoms.view(), 4));
/// assert!(codes.iter().all(|c| c.len() == 4 && c.windows(2).all(|p| p[0] < p[1])));
/// assert_eq!(fixed_codes_with(h.view(), atoms.view(), 4, &cache), codes); // same cache, same atoms
/// ```
pub fn fixed_codes_with(
    h: ArrayView2<f32>,
    atoms: ArrayView2<f32>,
    k: usize,
    cache: &GramCache,
) -> Vec<Vec<u32>> {
    match cache.full() {
        Some(gram) => greedy_codes(h, gram.view(), k),
        None if h.nrows().saturating_mul(k).saturating_mul(4) >= atoms.nrows() => {
            greedy_codes(h, cache.make_full(atoms).view(), k)
        }
        None => greedy_codes_by_rows(h, k, cache, atoms),
    }
}

/// A dictionary's Gram matrix `A A^T` as the fixed-kernel pursuit uses it: whole, for a batch
/// that picks most of its rows, or row by row as a few queries pick atoms (a one-query search
/// needs K rows of 4096, where the whole matrix took 0.13 s of a 0.2 s `bsa search`). A row is
/// [`crate::deterministic::matmul_nt`] of its atom and the dictionary, the same bits as that row
/// of [`crate::deterministic::gram`], so the atoms chosen do not depend on which was used.
///
/// Nothing is locked while a matrix or a row is computed (they run on rayon, whose threads may
/// take up another call's work meanwhile): two calls may make the same row, and keep one.
///
/// One query reads a few rows, a batch the whole matrix; the picks are the same:
///
/// ```
/// use bsa_index::pursuit::{fixed_codes_with, GramCache};
/// let atoms = ndarray::Array2::from_shape_fn((64, 8), |(j, t)| ((j * 5 + t * 3) % 7) as f32 - 3.0);
/// let x = ndarray::Array2::from_shape_fn((20, 8), |(i, t)| ((i + t * t) % 5) as f32 - 2.0);
/// let h = bsa_index::deterministic::matmul_nt(x.view(), atoms.view());
/// let by_rows = GramCache::default();
/// let one = fixed_codes_with(h.slice(ndarray::s![..1, ..]), atoms.view(), 2, &by_rows);
/// let whole = GramCache::default();
/// let batch = fixed_codes_with(h.view(), atoms.view(), 2, &whole); // 20 x 2 x 4 >= 64 atoms
/// assert_eq!(one[0], batch[0]);
/// ```
#[derive(Default)]
pub struct GramCache {
    full: Mutex<Option<Arc<Array2<f32>>>>,
    packed: Mutex<Option<Arc<PackedAtoms>>>,
    rows: Mutex<HashMap<u32, Arc<[f32]>>>,
}

/// The dictionary packed for the row products, and the diagonal `|a_j|^2`.
type PackedAtoms = (Packed, Vec<f32>);

impl GramCache {
    fn full(&self) -> Option<Arc<Array2<f32>>> {
        self.full.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn make_full(&self, atoms: ArrayView2<f32>) -> Arc<Array2<f32>> {
        let gram = Arc::new(crate::deterministic::gram(atoms));
        *self.full.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&gram));
        // The rows made one by one are in it.
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).clear();
        gram
    }

    fn packed(&self, atoms: ArrayView2<f32>) -> Arc<PackedAtoms> {
        if let Some(p) = self
            .packed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return p;
        }
        let atoms = atoms.as_standard_layout();
        let diag = atoms
            .rows()
            .into_iter()
            .map(|a| {
                let a = a.as_slice().expect("standard layout");
                crate::deterministic::dot(a, a)
            })
            .collect();
        let p = Arc::new((Packed::new(atoms.view()), diag));
        *self.packed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&p));
        p
    }

    /// The rows of `picked` (distinct atoms), made now if not yet.
    fn rows(&self, atoms: ArrayView2<f32>, picked: &[u32]) -> HashMap<u32, Arc<[f32]>> {
        let mut found = HashMap::with_capacity(picked.len());
        let mut missing = Vec::new();
        {
            let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
            for &j in picked {
                match rows.get(&j) {
                    Some(r) => drop(found.insert(j, Arc::clone(r))),
                    None => missing.push(j),
                }
            }
        }
        if missing.is_empty() {
            return found;
        }
        let packed = self.packed(atoms);
        let chosen = atoms.select(
            Axis(0),
            &missing.iter().map(|&j| j as usize).collect::<Vec<_>>(),
        );
        let made = matmul_nt_packed(chosen.view(), &packed.0);
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        for (&j, row) in missing.iter().zip(made.rows()) {
            let row: Arc<[f32]> = row.iter().copied().collect();
            rows.insert(j, Arc::clone(&row));
            found.insert(j, row);
        }
        found
    }
}

/// [`greedy_codes`] with the Gram rows from `cache`, made as the rows of `h` pick their atoms
/// (all rows take a step, then the new atoms' rows are made at once): the same codes, the same
/// steps in the same order.
fn greedy_codes_by_rows(
    h: ArrayView2<f32>,
    k: usize,
    cache: &GramCache,
    atoms: ArrayView2<f32>,
) -> Vec<Vec<u32>> {
    let n_atoms = atoms.nrows();
    let k = k.min(n_atoms);
    let diag = cache.packed(atoms);
    let diag = &diag.1;
    struct Pursuit {
        gain: Vec<f32>,
        chosen: Vec<u32>,
        best_gain: f32,
    }
    let mut all: Vec<Pursuit> = h
        .outer_iter()
        .map(|row| {
            let gain: Vec<f32> = row.iter().zip(diag).map(|(&c, &d)| 2.0 * c - d).collect();
            let best_gain = lane_max(&gain);
            Pursuit {
                gain,
                chosen: Vec::with_capacity(k),
                best_gain,
            }
        })
        .collect();
    for _ in 0..k {
        let mut picked: Vec<u32> = all
            .iter_mut()
            .map(|p| {
                let best = next_atom(&p.gain, p.best_gain, &p.chosen);
                p.chosen.push(best as u32);
                p.gain[best] = f32::NEG_INFINITY;
                best as u32
            })
            .collect();
        picked.sort_unstable();
        picked.dedup();
        let rows = cache.rows(atoms, &picked);
        all.par_iter_mut().for_each(|p| {
            let best = *p.chosen.last().expect("picked above");
            p.best_gain = update_and_max(&mut p.gain, &rows[&best]);
        });
    }
    all.into_iter()
        .map(|mut p| {
            p.chosen.sort_unstable();
            p.chosen
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first index of the maximum, the way a plain scan finds it.
    fn reference(v: &[f32]) -> (f32, usize) {
        let m = v
            .iter()
            .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
        (m, v.iter().position(|&x| x == m).unwrap_or(0))
    }

    /// A review's finding: a dictionary whose squared norms overflow `f32` (finite weights
    /// scaled by 1e37) made every gain `-inf`, and the first `-inf`, an atom already chosen,
    /// was picked K times: codes of one bit. Both ways of taking the Gram rows give K distinct
    /// atoms, the lowest ones.
    #[test]
    fn gains_that_overflow_still_give_k_distinct_atoms() {
        let atoms = Array2::from_shape_fn((40, 4), |(j, t)| if j % 4 == t { 2e19f32 } else { 0.0 });
        let cache = GramCache::default();
        let h = Array2::from_elem((3, 40), 1.0f32);
        let by_rows = greedy_codes_by_rows(h.view(), 5, &cache, atoms.view());
        let gram = crate::deterministic::gram(atoms.view());
        assert!(gram[[0, 0]].is_infinite());
        let whole = greedy_codes(h.view(), gram.view(), 5);
        for codes in [by_rows, whole] {
            assert_eq!(codes, vec![vec![0, 1, 2, 3, 4]; 3]);
        }
    }

    #[test]
    fn first_index_of_the_maximum_is_a_plain_scan() {
        // Few distinct values (ties everywhere), lengths around the 16 lanes, -inf (chosen
        // atoms) and signed zeros (equal to each other).
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let palette = [-1.0, 0.5, 2.0, -0.0, 0.0, f32::NEG_INFINITY, 3.0];
        for len in [1, 2, 15, 16, 17, 31, 32, 33, 100, 4096] {
            for _ in 0..50 {
                let v: Vec<f32> = (0..len)
                    .map(|_| palette[(next() % palette.len() as u64) as usize])
                    .collect();
                let m = lane_max(&v);
                let (rm, ri) = reference(&v);
                assert_eq!(m.to_bits(), rm.to_bits(), "{v:?}");
                assert_eq!(first_index_of(&v, m), ri, "{v:?}");
                let g: Vec<f32> = (0..len)
                    .map(|_| palette[(next() % 5) as usize] / 2.0)
                    .collect();
                let mut updated = v.clone();
                let m = update_and_max(&mut updated, &g);
                let want: Vec<f32> = v.iter().zip(&g).map(|(&x, &g)| x - 2.0 * g).collect();
                assert_eq!(
                    updated.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                );
                let (rm, ri) = reference(&want);
                assert_eq!(m.to_bits(), rm.to_bits(), "{want:?}");
                assert_eq!(first_index_of(&updated, m), ri, "{want:?}");
            }
        }
        // A value that is not there: 0, as a plain scan's `unwrap_or(0)` gave.
        assert_eq!(first_index_of(&[1.0; 40], 2.0), 0);
    }

    /// A few rows are encoded with Gram rows made as their atoms are picked (and kept): the same
    /// codes as with the whole matrix, ties included (duplicate atoms), whether the rows were
    /// made now, kept from an earlier call, or the whole matrix exists already.
    #[test]
    fn gram_rows_made_on_demand_give_the_whole_matrixs_codes() {
        let mut atoms = Array2::from_shape_fn((64, 8), |(i, j)| {
            ((i as u32 * 37 + j as u32 * 11) % 29) as f32 / 14.0 - 1.0
        });
        // Atoms 40..48 repeat 0..8: equal gains, decided by the lower index.
        for i in 40..48 {
            let a = atoms.row(i - 40).to_owned();
            atoms.row_mut(i).assign(&a);
        }
        let x = Array2::from_shape_fn((9, 8), |(i, j)| ((i * 7 + j * 5) % 11) as f32 / 5.0 - 1.0);
        // The correlations x . a_j (bd = 0), fixed.
        let h = crate::deterministic::matmul_nt(x.view(), atoms.view());
        let gram = crate::deterministic::gram(atoms.view());
        let want = greedy_codes(h.view(), gram.view(), 6);
        let cache = GramCache::default();
        for rows in [1, 3, 1, 9] {
            let got =
                greedy_codes_by_rows(h.slice(ndarray::s![..rows, ..]), 6, &cache, atoms.view());
            assert_eq!(got, want[..rows], "{rows} rows");
        }
        // Through `fixed_codes`: one row at a time (rows on demand), then all at once (the whole
        // matrix: 9 x 6 x 4 >= 64), then one again (from the whole matrix).
        for i in 0..9 {
            assert_eq!(
                fixed_codes(h.slice(ndarray::s![i..i + 1, ..]), atoms.view(), 6),
                want[i..i + 1]
            );
        }
        assert_eq!(fixed_codes(h.view(), atoms.view(), 6), want);
        assert_eq!(
            fixed_codes(h.slice(ndarray::s![4..5, ..]), atoms.view(), 6),
            want[4..5]
        );
    }
}
