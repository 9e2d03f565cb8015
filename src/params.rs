//! The weights of the autoencoder ([`Params`]) and the products on them: pre-activations and
//! decoding. Below [`crate::model`] (which re-exports it) so that the pursuit encoder
//! ([`crate::pursuit::encode`]) and the optimiser can use the weights without the model.

use ndarray::{Array1, Array2, ArrayView2, Zip};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::real::Real;

/// The weights: encoder `We` (`N x D`), `be` (`N`), decoder transposed `wd_t = Wd^T` (`N x D`),
/// `bd` (`D`). Also used to hold gradients and optimiser moments of the same shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Params<F> {
    /// Encoder weight `We`, `N x D`.
    pub we: Array2<F>,
    /// Encoder bias `be`, length `N`.
    pub be: Array1<F>,
    /// Decoder weight transposed, `Wd^T`, `N x D`: row j is the vector bit j adds.
    pub wd_t: Array2<F>,
    /// Decoder bias `bd`, length `D`.
    pub bd: Array1<F>,
}

impl<F: Real> Params<F> {
    /// All-zero parameters for a model of `bits` codes over `dim` inputs.
    pub fn zeros(bits: usize, dim: usize) -> Self {
        Params {
            we: Array2::zeros((bits, dim)),
            be: Array1::zeros(bits),
            wd_t: Array2::zeros((bits, dim)),
            bd: Array1::zeros(dim),
        }
    }

    /// PyTorch's default `nn.Linear` initialisation (uniform in `±1/sqrt(fan_in)` for weights
    /// and biases), what a PyTorch model gets unless told otherwise (the paper does not say).
    /// The peer trainer `bsa_torch.py` uses Xavier-uniform weights and zero biases instead: the
    /// speed comparison is unaffected (same shapes and work), its first losses differ.
    pub fn init(bits: usize, dim: usize, seed: u64) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut uniform = |bound: f64| F::from(rng.random_range(-bound..bound)).unwrap();
        let enc = 1.0 / (dim as f64).sqrt();
        let dec = 1.0 / (bits as f64).sqrt();
        let we = Array2::from_shape_simple_fn((bits, dim), || uniform(enc));
        let be = Array1::from_shape_simple_fn(bits, || uniform(enc));
        let wd_t = Array2::from_shape_simple_fn((bits, dim), || uniform(dec));
        let bd = Array1::from_shape_simple_fn(dim, || uniform(dec));
        Params { we, be, wd_t, bd }
    }

    /// Code length N.
    pub fn bits(&self) -> usize {
        self.we.nrows()
    }

    /// Input dimension D.
    pub fn dim(&self) -> usize {
        self.we.ncols()
    }

    /// Pre-activations `H = X We^T + be` (`B x N`), by a BLAS GEMM: fast, but its rounding
    /// depends on the CPU and the thread count (see [`Params::pre_activations_fixed`]).
    pub fn pre_activations(&self, x: ArrayView2<F>) -> Array2<F> {
        let mut h = x.dot(&self.we.t());
        h += &self.be;
        h
    }

    /// Decodes binary codes given as lists of set bits: row i of the result is
    /// `bd + sum of wd_t[j] for j in active[i]`. Costs `B K D` instead of a `B N D` GEMM.
    pub fn decode_sparse(&self, active: &[Vec<u32>]) -> Array2<F> {
        let mut out = Array2::zeros((active.len(), self.dim()));
        Zip::from(out.rows_mut())
            .and(active)
            .par_for_each(|mut row, bits| {
                row.assign(&self.bd);
                for &j in bits {
                    row += &self.wd_t.row(j as usize);
                }
            });
        out
    }

    /// Norm of each code's decoded vector, `|bd + sum of wd_t[j] over its set bits|` (the divisor
    /// of the ADC score), in f64 and in chunks to bound memory.
    pub fn decoded_norms(&self, active: &[Vec<u32>]) -> Vec<f32> {
        let mut out = Vec::with_capacity(active.len());
        for chunk in active.chunks(1 << 15) {
            out.extend(Self::row_norms(self.decode_sparse(chunk).view()));
        }
        out
    }

    /// The norm of each row of `xhat` (decoded vectors, from [`Params::decode_sparse`]),
    /// summed in f64: what [`Params::decoded_norms`] gives for their codes.
    pub fn row_norms(xhat: ArrayView2<F>) -> Vec<f32> {
        xhat.rows()
            .into_iter()
            .map(|r| {
                r.iter()
                    .map(|&v| v.to_f64().unwrap_or(f64::NAN).powi(2))
                    .sum::<f64>()
                    .sqrt() as f32
            })
            .collect()
    }

    /// Decodes a dense (possibly non-binary) code matrix `C` (`B x N`): `C Wd^T + bd`.
    pub fn decode_dense(&self, c: ArrayView2<F>) -> Array2<F> {
        let mut out = c.dot(&self.wd_t);
        out += &self.bd;
        out
    }

    /// Applies `f` to every pair of corresponding arrays of `self` and `other`.
    pub fn zip_mut_with(&mut self, other: &Params<F>, f: impl Fn(&mut F, &F) + Sync + Send) {
        Zip::from(&mut self.we).and(&other.we).par_for_each(&f);
        Zip::from(&mut self.be).and(&other.be).for_each(&f);
        Zip::from(&mut self.wd_t).and(&other.wd_t).par_for_each(&f);
        Zip::from(&mut self.bd).and(&other.bd).for_each(&f);
    }

    /// True when every parameter is finite.
    pub fn all_finite(&self) -> bool {
        self.we.iter().all(|v| v.is_finite())
            && self.be.iter().all(|v| v.is_finite())
            && self.wd_t.iter().all(|v| v.is_finite())
            && self.bd.iter().all(|v| v.is_finite())
    }
}

impl Params<f32> {
    /// [`decode_sparse`](Self::decode_sparse) summed in `f64`: finite where `f32` sums overflow
    /// (a decoder whose weights approach `f32::MAX`, from a training that ran away), for the
    /// metrics.
    pub fn decode_sparse_f64(&self, active: &[Vec<u32>]) -> Array2<f64> {
        let mut out = Array2::zeros((active.len(), self.dim()));
        Zip::from(out.rows_mut())
            .and(active)
            .par_for_each(|mut row, bits| {
                row.zip_mut_with(&self.bd, |o, &b| *o = f64::from(b));
                for &j in bits {
                    row.zip_mut_with(&self.wd_t.row(j as usize), |o, &w| *o += f64::from(w));
                }
            });
        out
    }

    /// Pre-activations `H = X We^T + be` with every entry fixed bit for bit by the inputs:
    /// `H[i][j] = `[`bsa_index::deterministic::dot`]`(x_i, We_j) + be_j`, on any CPU and thread count
    /// ([`bsa_index::model::Weights::pre_activations`]).
    ///
    /// # Panics
    ///
    /// If `x` is not `D` wide (the search crate's form returns an error).
    pub fn pre_activations_fixed(&self, x: ArrayView2<f32>) -> Array2<f32> {
        self.weights()
            .pre_activations(x)
            .expect("rows of the model's input dimension")
    }

    /// The weights borrowed as the search crate's query side takes them: its codes and score
    /// tables ([`bsa_index::model::Weights`]) are the ones `bsa search` computes.
    pub fn weights(&self) -> bsa_index::model::Weights<'_> {
        bsa_index::model::Weights {
            we: self.we.view(),
            be: self.be.view(),
            wd_t: self.wd_t.view(),
            bd: self.bd.view(),
            derived: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Params;

    /// The search crate decodes codes and takes their norms (for a BLAS-free server adding
    /// rows) with the same bits as the trainer's decoder: what `bsa add` stores.
    #[test]
    fn the_search_crates_decoder_and_norms_are_these_bit_for_bit() {
        let mut p = Params::<f32>::init(96, 40, 7);
        // A decoder bias too (init leaves it zero).
        p.bd.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i as f32 * 0.37).sin());
        let codes: Vec<Vec<u32>> = (0..300u32)
            .map(|i| (0..96).filter(|j| (i * 31 + j * 17) % 7 < 2).collect())
            .collect();
        let w = p.weights();
        let ours = p.decode_sparse(&codes);
        let theirs = w.decode(&codes).unwrap();
        let same = |a: &[f32], b: &[f32]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
        };
        assert!(same(ours.as_slice().unwrap(), &theirs));
        assert!(same(
            &p.decoded_norms(&codes),
            &w.decoded_norms(&codes).unwrap()
        ));
    }
}
