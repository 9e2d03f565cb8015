//! Greedy binary matching pursuit, the encoding half of [`crate::pursuit`]: the K atoms of each
//! vector, given a dictionary's [`Params`]. Below [`crate::model`], which encodes pursuit models
//! with it, while the fitting half ([`crate::pursuit`]) builds models and so sits above it; the
//! items are re-exported there. The greedy steps themselves are the search crate's
//! ([`bsa_index::pursuit`]), which encodes queries without BLAS.

use std::sync::atomic::{AtomicBool, Ordering};

use ndarray::{Array1, Array2, ArrayView2, Axis};

pub use bsa_index::pursuit::greedy_codes;

use crate::params::Params;

/// Rows encoded per chunk on BLAS products: bounds the `chunk x N` correlation matrix (4096 x
/// 4096 f32 = 64 MiB), as the fixed-order encoder's chunks do.
const CHUNK: usize = 4096;

/// Encodes rows of `x` with a pursuit model's parameters (`we = wd_t`, `be = -wd_t bd`).
///
/// The greedy steps carry float sums from one step to the next, so a last-bit difference in the
/// correlations or the Gram matrix can change which atom is picked. Both therefore come from
/// [`bsa_index::deterministic`] ([`bsa_index::model::Weights::codes`]): a vector gets the same
/// atoms on every CPU and for every thread count (base rows in `bsa build` and queries in
/// `bsa search` alike).
pub fn encode(params: &Params<f32>, k: usize, x: ArrayView2<f32>) -> Vec<Vec<u32>> {
    encode_with(params, k, x, true, &AtomicBool::new(false)).expect("never stopped")
}

/// [`encode`] with the products from the deterministic kernels (`fixed`) or from BLAS. The rounds
/// of [`crate::pursuit::PursuitParams::fit`] keep BLAS, like the rest of training (whose results
/// are promised for a given thread count only), and its speed with a well-tuned OpenBLAS (about
/// 2x the deterministic kernels with OpenBLAS's AVX-512 GEMM). `None` when `stop` was set
/// (checked between chunks of rows).
pub(crate) fn encode_with(
    params: &Params<f32>,
    k: usize,
    x: ArrayView2<f32>,
    fixed: bool,
    stop: &AtomicBool,
) -> Option<Vec<Vec<u32>>> {
    if fixed {
        let rule = bsa_index::model::Rule::Pursuit(k);
        return match params.weights().codes(rule, x, Some(stop)) {
            Ok(codes) => Some(codes),
            Err(bsa_index::Error::Stopped) => None,
            // The callers give rows of the model's dimension to its own weights.
            Err(e) => panic!("pursuit encoding of checked rows: {e}"),
        };
    }
    let gram = params.wd_t.dot(&params.wd_t.t());
    let mut out = Vec::with_capacity(x.nrows());
    for chunk in x.axis_chunks_iter(Axis(0), CHUNK) {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        out.extend(greedy_codes(
            params.pre_activations(chunk).view(),
            gram.view(),
            k,
        ));
    }
    Some(out)
}

/// Model parameters for a dictionary: decoder `(wd_t, bd)`, and the encoder that yields the
/// initial pursuit correlations, `We = wd_t`, `be = -wd_t bd`.
pub fn dictionary_params(wd_t: Array2<f32>, bd: Array1<f32>) -> Params<f32> {
    let be = -wd_t.dot(&bd);
    Params {
        we: wd_t.clone(),
        be,
        wd_t,
        bd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encoding with one dictionary, another, then the first changed in place gives each time
    /// the codes of its own Gram matrix (the remembered one is never another dictionary's).
    #[test]
    fn encodings_use_their_own_dictionarys_gram_matrix() {
        let atoms = |seed: u32| {
            Array2::from_shape_fn((48, 8), |(i, j)| {
                ((i as u32 * 31 + j as u32 * 17 + seed * 7) % 23) as f32 / 11.0 - 1.0
            })
        };
        let x = Array2::from_shape_fn((20, 8), |(i, j)| ((i * 5 + j * 3) % 13) as f32 / 6.0 - 1.0);
        let direct = |p: &Params<f32>| {
            let gram = bsa_index::deterministic::gram(p.wd_t.view());
            greedy_codes(p.pre_activations_fixed(x.view()).view(), gram.view(), 5)
        };
        let a = dictionary_params(atoms(1), Array1::zeros(8));
        let b = dictionary_params(atoms(2), Array1::zeros(8));
        for p in [&a, &b, &a] {
            assert_eq!(encode(p, 5, x.view()), direct(p));
        }
        // Atom 6 (in most codes) twice as long, in place: a's Gram matrix would give other codes.
        let mut c = a.clone();
        c.wd_t.row_mut(6).mapv_inplace(|v| 2.0 * v);
        c.we.row_mut(6).mapv_inplace(|v| 2.0 * v);
        assert_eq!(encode(&c, 5, x.view()), direct(&c));
        let stale = bsa_index::deterministic::gram(a.wd_t.view());
        let h = c.pre_activations_fixed(x.view());
        assert_ne!(greedy_codes(h.view(), stale.view(), 5), direct(&c));
    }
}
