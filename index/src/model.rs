//! The query side of a bsa model, without BLAS: float vectors to codes, and the per-query tables
//! of the `adc` and `soft` scores, bit for bit as `bsa search` computes them.
//!
//! An index built with a model (`bsa build --model`) holds a copy of the model file. A query
//! server that receives float embeddings needs its encoder to search by code, and its decoder for
//! the asymmetric scores; [`QueryModel`] reads that file and does both with the fixed-order
//! products of [`crate::deterministic`], so its codes and tables are the ones `bsa search` and the
//! Python package compute, on every CPU and thread count, and this crate still links no BLAS and
//! no trainer. [`crate::live::Snapshot::query_model`] opens an index's model and checks that it
//! fits the index.
//!
//! The model (`shared/method.md`): rows are vectors, `H = X We^T + be` the pre-activations, and a
//! code has the bits its [`Rule`] picks from `H`; `Wd^T` (`N x D`, one row per bit) and `bd`
//! decode it: `xhat = sum of the rows of Wd^T at the set bits + bd`.
//!
//! ```
//! use bsa_index::model::{QueryModel, Rule};
//! // 3 bits on 2 dimensions: the encoder is the identity's rows and their sum; no biases.
//! let we = ndarray::array![[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]];
//! let wd_t = we.clone();
//! let model = QueryModel::new("topk", Rule::TopK(1), we, ndarray::Array1::zeros(3),
//!                             wd_t, ndarray::Array1::zeros(2))?;
//! let q = ndarray::array![[0.9f32, 0.2], [-1.0, 0.5]];
//! assert_eq!(model.encode(q.view())?, vec![vec![2], vec![1]]); // the largest H of each row
//! let (tables, offsets) = model.weights().adc_tables(q.view())?;
//! assert_eq!(tables[..3], [0.9, 0.2, 1.1]); // q . (row j of Wd^T), one entry per bit
//! assert_eq!(offsets, vec![0.0, 0.0]); // q . bd
//! # Ok::<(), bsa_index::Error>(())
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use rayon::prelude::*;
use safetensors::tensor::{Dtype, SafeTensors};

use crate::deterministic::{self, Packed};
use crate::error::{Error, Result, check_stop};
use crate::int_tables::IntDecoder;
use crate::manifest::FileInfo;
use crate::memo::LastFor;
use crate::pursuit::{GramCache, fixed_codes, fixed_codes_with};

pub use crate::error::MODEL_DIM;

/// Value of a bsa model file's `format` metadata key.
pub const FORMAT: &str = "bsa-model";
/// Version of the model file layout bsa writes; readers take `1..=FORMAT_VERSION`.
pub const FORMAT_VERSION: u32 = 1;

/// How a model picks a code's bits from the pre-activations `H` of a row.
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// use ndarray::{array, Array1};
/// use bsa_index::model::{QueryModel, Rule};
/// // Three bits over two dimensions: x = [1, 0] has pre-activations 1.0, -1.0 and 0.5.
/// let we = array![[1.0f32, 0.0], [-1.0, 0.0], [0.5, 0.0]];
/// let model = |rule| QueryModel::new("demo", rule, we.clone(), Array1::zeros(3), we.clone(), Array1::zeros(2));
/// let x = array![[1.0f32, 0.0]];
/// assert_eq!(model(Rule::Positive)?.encode(x.view())?, [vec![0, 2]]); // H > 0
/// assert_eq!(model(Rule::TopK(1))?.encode(x.view())?, [vec![0]]); // the largest H
/// # Ok(()) }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The bits with `H > 0` (`sigmoid(H) > 0.5`): methods `bsa`, `sign`, `lsh` and `itq`.
    Positive,
    /// The `k` largest `H`, ties to the lower bit: method `topk`.
    TopK(usize),
    /// The `k` atoms greedy binary matching pursuit picks ([`crate::pursuit`]), whose initial
    /// correlations are `H` (the encoder is the dictionary, `be = -Wd^T bd`): method `pursuit`.
    Pursuit(usize),
}

impl Rule {
    /// The rule of a model trained by `method` (the name a model file records) with `k` set
    /// bits; `None` for a name bsa does not know.
    ///
    /// ```
    /// use bsa_index::model::Rule;
    /// assert_eq!(Rule::of_method("bsa", 32), Some(Rule::Positive));
    /// assert_eq!(Rule::of_method("pursuit", 32), Some(Rule::Pursuit(32)));
    /// assert_eq!(Rule::of_method("pca", 32), None);
    /// ```
    pub fn of_method(method: &str, k: usize) -> Option<Rule> {
        match method {
            "bsa" | "sign" | "lsh" | "itq" => Some(Rule::Positive),
            "topk" => Some(Rule::TopK(k)),
            "pursuit" => Some(Rule::Pursuit(k)),
            _ => None,
        }
    }
}

/// What the products derive from a model's matrices once (the encoder and decoder packed for
/// the fixed-order kernels, the decoder's 8-bit copy, the pursuit Gram matrix or its rows),
/// kept beside a model whose matrices do not change ([`QueryModel`], `bsa::model::FrozenModel`):
/// a process serving several models makes each once, where the shared one-slot memo would make
/// them again at every switch of model (a hundred times a query's cost).
///
/// Only matrices listed as unchanging for as long as they live (by the crate-internal
/// `memo::freeze`: a [`QueryModel`]'s and a `FrozenModel`'s are) use it. Each entry remembers
/// the listing of the matrix it was made from; asked for any other matrix (another listing,
/// whatever its address: weights put together from two models, a matrix freed and another
/// made where it was) or one not listed (a caller's own arrays), it is not used and the
/// product goes through the memo, which compares the whole matrix: slower, never wrong. The
/// memory is the owner's for its lifetime: for `N` bits and `D` dimensions, up to three packed
/// copies of `N x D` floats and one of bytes, and for a pursuit model the Gram rows its queries
/// picked, the whole `N x N` floats once a batch picks a quarter of them (64 MiB at 4096 bits).
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// use ndarray::{array, Array1, Array2};
/// use bsa_index::model::{Derived, Weights};
/// let (we, wd_t) = (Array2::<f32>::eye(3), Array2::<f32>::eye(3));
/// let (be, bd) = (Array1::<f32>::zeros(3), Array1::<f32>::zeros(3));
/// let derived = Derived::default();
/// let x = array![[1.0f32, 2.0, 3.0]];
/// // A caller's own matrices, which nothing lists as unchanging: the memo answers, not it.
/// let w = Weights { we: we.view(), be: be.view(), wd_t: wd_t.view(), bd: bd.view(), derived: Some(&derived) };
/// w.pre_activations(x.view())?;
/// assert!(format!("{derived:?}").contains("encoder: false"));
/// // A model's, listed as unchanging while it lives: made once, used again at the next call.
/// let model = bsa_index::model::QueryModel::new("bsa", bsa_index::model::Rule::Positive, we, be, wd_t, bd)?;
/// model.weights().pre_activations(x.view())?;
/// assert!(format!("{:?}", model.weights().derived.unwrap()).contains("encoder: true"));
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct Derived {
    encoder: OnceLock<(MatrixKey, Arc<Packed>)>,
    decoder: OnceLock<(MatrixKey, Arc<Packed>)>,
    int_decoder: OnceLock<(MatrixKey, Arc<IntDecoder>)>,
    gram: OnceLock<(MatrixKey, Arc<GramCache>)>,
}

/// Which matrix a [`Derived`] entry was made from: its listing as unchanging
/// ([`crate::memo::freeze`], an id no other listing gets), shape and strides.
type MatrixKey = (u64, (usize, usize), [isize; 2]);

/// The value in `slot` for the matrix `m`, made now if the slot is empty; `None` if `m` is not
/// listed as unchanging, or the slot was filled from another matrix.
fn derived_for<T>(
    slot: &OnceLock<(MatrixKey, Arc<T>)>,
    m: ArrayView2<f32>,
    make: impl FnOnce() -> T,
) -> Option<Arc<T>> {
    let st = m.strides();
    let key = (crate::memo::frozen_id(m)?, m.dim(), [st[0], st[1]]);
    let (made_from, value) = slot.get_or_init(|| (key, Arc::new(make())));
    (*made_from == key).then(|| Arc::clone(value))
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Derived")
            .field("encoder", &self.encoder.get().is_some())
            .field("decoder", &self.decoder.get().is_some())
            .field("int_decoder", &self.int_decoder.get().is_some())
            .field("gram", &self.gram.get().is_some())
            .finish()
    }
}

/// A model's weights, borrowed: `we` (`N x D`), `be` (`N`), `wd_t` (`N x D`, the decoder
/// transposed: one row per bit) and `bd` (`D`). Every product here is fixed bit for bit by its
/// inputs ([`crate::deterministic`]); what a product derives from a matrix once (its packed
/// layout, its 8-bit copy, a Gram matrix) is kept for the next call: in `derived`, the model's
/// own, or else in the process's one-slot memo of the last matrix used.
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// use ndarray::{array, Array1};
/// use bsa_index::model::{Rule, Weights};
/// // Two bits over two dimensions; bit 0 decodes to [1, 0], bit 1 to [0, 2], plus bd.
/// let we = array![[1.0f32, 0.0], [0.0, 1.0]];
/// let (be, bd) = (Array1::<f32>::zeros(2), array![0.5f32, 0.0]);
/// let wd_t = array![[1.0f32, 0.0], [0.0, 2.0]];
/// let w = Weights { we: we.view(), be: be.view(), wd_t: wd_t.view(), bd: bd.view(), derived: None };
/// let q = array![[3.0f32, 4.0]];
/// assert_eq!(w.codes(Rule::Positive, q.view(), None)?, [vec![0, 1]]);
/// // q . xhat for the code {0, 1}: the offset plus the table entries of its set bits.
/// let (table, offset) = w.adc_tables(q.view())?;
/// assert_eq!((table, offset), (vec![3.0, 8.0], vec![1.5]));
/// assert_eq!(1.5 + 3.0 + 8.0, 3.0 * (1.0 + 0.5) + 4.0 * 2.0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Weights<'a> {
    /// Encoder weights, `N x D`.
    pub we: ArrayView2<'a, f32>,
    /// Encoder bias, `N`.
    pub be: ArrayView1<'a, f32>,
    /// Decoder weights transposed, `N x D`.
    pub wd_t: ArrayView2<'a, f32>,
    /// Decoder bias, `D`.
    pub bd: ArrayView1<'a, f32>,
    /// Where the derived matrices of these weights are kept, if their owner keeps them: used
    /// for matrices listed as unchanging (a [`QueryModel`]'s; [`Derived`] says when), the
    /// process's memo for others, as with `None`.
    pub derived: Option<&'a Derived>,
}

impl Weights<'_> {
    /// Bits per code, `N`.
    pub fn bits(&self) -> usize {
        self.we.nrows()
    }

    /// Input dimension, `D`.
    pub fn dim(&self) -> usize {
        self.we.ncols()
    }

    /// Refuses rows (queries, base rows) that are not `D` wide, with the words every caller
    /// that gives rows to a model uses (the products would read past them or stop short), and
    /// weights whose shapes disagree (`we` and `wd_t` `N x D`, `be` of `N`, `bd` of `D`: the
    /// fields are public), which would give codes without an error.
    ///
    /// ```
    /// # use ndarray::{array, Array1, Array2};
    /// # use bsa_index::model::Weights;
    /// # let (we, wd_t) = (Array2::<f32>::eye(2), array![[1.0f32, 0.0], [0.0, 2.0]]);
    /// # let (be, bd) = (Array1::<f32>::zeros(2), Array1::<f32>::zeros(2));
    /// let w = Weights { we: we.view(), be: be.view(), wd_t: wd_t.view(), bd: bd.view(), derived: None };
    /// assert!(w.check_dim(2).is_ok());
    /// let e = w.check_dim(3).unwrap_err();
    /// assert!(matches!(e, bsa_index::Error::DimMismatch { .. }), "{e}");
    /// ```
    pub fn check_dim(&self, width: usize) -> Result<()> {
        let (n, d) = self.we.dim();
        if self.wd_t.dim() != (n, d) || self.be.len() != n || self.bd.len() != d {
            return Err(Error::InvalidArgument(format!(
                "model weights: the encoder is {n} x {d} but the decoder (transposed) is {:?}, \
                 the encoder's bias has {} values and the decoder's {}",
                self.wd_t.dim(),
                self.be.len(),
                self.bd.len()
            )));
        }
        if width == self.dim() {
            return Ok(());
        }
        Err(Error::DimMismatch {
            what: MODEL_DIM.into(),
            expected: self.dim(),
            got: width,
        })
    }

    /// Refuses rows a product cannot use: not `D` wide ([`Weights::check_dim`]), or holding a
    /// value that is not finite ([`check_rows`]'s [`Error::BadRow`], naming the matrix
    /// `what`), which would give codes or tables with no error. All-zero rows are rows (their
    /// code is the biases').
    fn check_input(&self, what: &str, x: ArrayView2<f32>) -> Result<()> {
        self.check_dim(x.ncols())?;
        check_rows(what, x, false)
    }

    /// Pre-activations `H = X We^T + be`, `H[i][j] = `[`deterministic::dot`]`(x_i, We_j) +
    /// be_j`: the same bits on any CPU and thread count. An [`Error::DimMismatch`] for rows
    /// that are not `D` wide, and an [`Error::BadRow`] for a row holding NaN or infinity (as
    /// for every product here).
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// use ndarray::{array, Array1, Array2};
    /// use bsa_index::model::Weights;
    /// let (we, wd_t) = (Array2::<f32>::eye(2), Array2::<f32>::eye(2));
    /// let (be, bd) = (Array1::<f32>::zeros(2), Array1::<f32>::zeros(2));
    /// let w = Weights { we: we.view(), be: be.view(), wd_t: wd_t.view(), bd: bd.view(), derived: None };
    /// assert_eq!(w.pre_activations(array![[0.5f32, -1.0]].view())?, array![[0.5f32, -1.0]]);
    /// let nan = w.pre_activations(array![[0.5f32, -1.0], [f32::NAN, 0.0]].view()).unwrap_err();
    /// assert!(nan.to_string().starts_with("rows: row 1: column 0 is NaN"), "{nan}");
    /// assert!(w.adc_tables(array![[f32::INFINITY, 0.0]].view()).is_err());
    /// # Ok(()) }
    /// ```
    pub fn pre_activations(&self, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        self.check_input("rows", x)?;
        Ok(self.pre_activations_of(x))
    }

    /// [`Weights::pre_activations`] of rows already checked ([`Weights::check_input`]).
    fn pre_activations_of(&self, x: ArrayView2<f32>) -> Array2<f32> {
        // The packed encoder is the same for every batch of this model.
        static ENCODER: LastFor<Packed> = LastFor::new();
        let make = || Packed::new(self.we);
        let own = self
            .derived
            .and_then(|d| derived_for(&d.encoder, self.we, make));
        let we = own.unwrap_or_else(|| ENCODER.get(self.we, make));
        let mut h = deterministic::matmul_nt_packed(x, &we);
        h += &self.be;
        h
    }

    /// The set bits of each row's code under `rule`, ascending, decided on
    /// [`Weights::pre_activations`]: the codes `bsa build` gives base rows and `bsa search`
    /// gives queries. [`Error::Stopped`] once `stop` is set, checked between chunks of rows (the
    /// codes do not depend on the chunks).
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// use std::sync::atomic::AtomicBool;
    /// use bsa_index::model::Rule;
    /// # use ndarray::{array, Array1, Array2};
    /// # use bsa_index::model::Weights;
    /// # let (we, wd_t) = (Array2::<f32>::eye(2), array![[1.0f32, 0.0], [0.0, 2.0]]);
    /// # let (be, bd) = (Array1::<f32>::zeros(2), Array1::<f32>::zeros(2));
    /// let w = Weights { we: we.view(), be: be.view(), wd_t: wd_t.view(), bd: bd.view(), derived: None };
    /// let x = array![[0.5f32, -1.0], [2.0, 1.0], [0.0, 0.0]];
    /// let codes = w.codes(Rule::TopK(1), x.view(), None)?;
    /// assert_eq!(codes, [vec![0], vec![0], vec![0]]); // ties (the zero row) to the lower bit
    /// assert_eq!(w.codes(Rule::Positive, x.view(), None)?, [vec![0], vec![0, 1], vec![]]);
    /// let stop = AtomicBool::new(true); // Ctrl-C, say
    /// let stopped = w.codes(Rule::Positive, x.view(), Some(&stop));
    /// assert!(matches!(stopped, Err(bsa_index::Error::Stopped)));
    /// # Ok(()) }
    /// ```
    pub fn codes(
        &self,
        rule: Rule,
        x: ArrayView2<f32>,
        stop: Option<&AtomicBool>,
    ) -> Result<Vec<Vec<u32>>> {
        self.check_input("rows", x)?;
        // Chunks bound the pre-activations held at once (rows x N floats): 4096 x 4096 floats
        // (64 MiB) for pursuit, whose Gram rows are kept too.
        let rows = if matches!(rule, Rule::Pursuit(_)) {
            1 << 12
        } else {
            1 << 14
        };
        let mut out = Vec::with_capacity(x.nrows());
        for chunk in x.axis_chunks_iter(Axis(0), rows) {
            check_stop(stop)?;
            let h = self.pre_activations_of(chunk);
            match rule {
                Rule::Pursuit(k) => {
                    let own = self
                        .derived
                        .and_then(|d| derived_for(&d.gram, self.wd_t, GramCache::default));
                    out.extend(match own {
                        Some(gram) => fixed_codes_with(h.view(), self.wd_t, k, &gram),
                        None => fixed_codes(h.view(), self.wd_t, k),
                    })
                }
                Rule::Positive | Rule::TopK(_) => {
                    let mut codes = vec![Vec::new(); h.nrows()];
                    codes
                        .par_iter_mut()
                        .zip(h.axis_iter(Axis(0)).into_par_iter())
                        .for_each(|(code, h)| {
                            let h = h.as_slice().expect("standard layout");
                            *code = match rule {
                                Rule::TopK(k) => crate::topk::largest_f32(h, k),
                                _ => (0..h.len() as u32)
                                    .filter(|&j| h[j as usize] > 0.0)
                                    .collect(),
                            };
                        });
                    out.extend(codes);
                }
            }
        }
        Ok(out)
    }

    /// Per-query tables of the decoder-ADC score (`shared/method.md`): row i is `u = Wd^T q_i`
    /// (one float per bit) and offset i is `q_i . bd`, so that `q . xhat_b` is the offset plus
    /// the sum of `u_j` over the set bits of `b`. Returns `(nq * N tables, nq offsets)`,
    /// row-major; every entry a [`deterministic::dot`]. `bsa search --score adc` divides both
    /// by the query's length ([`per_unit_query`]).
    pub fn adc_tables(&self, q: ArrayView2<f32>) -> Result<(Vec<f32>, Vec<f32>)> {
        self.check_input("queries", q)?;
        // The packed decoder is the same for every batch of this model.
        static DECODER: LastFor<Packed> = LastFor::new();
        let make = || Packed::new(self.wd_t);
        let own = self
            .derived
            .and_then(|d| derived_for(&d.decoder, self.wd_t, make));
        let wd = own.unwrap_or_else(|| DECODER.get(self.wd_t, make));
        let t = deterministic::matmul_nt_packed(q, &wd);
        Ok((t.into_raw_vec_and_offset().0, self.adc_offsets(q)))
    }

    /// Per-query ADC tables for picking candidates that are re-ranked by exact cosine
    /// afterwards (`--rescore`): as [`Weights::adc_tables`], but each entry of `u` is the exact
    /// integer product of the query rounded to 7 bits and the decoder rounded to 8
    /// ([`crate::int_tables`]), two to three times faster to compute; on WordNet the top 40 they
    /// rank are the float tables' in 99.2% of places. The offsets are the float ones.
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// # use ndarray::{array, Array1, Array2};
    /// # use bsa_index::model::Weights;
    /// # let (we, wd_t) = (Array2::<f32>::eye(2), array![[1.0f32, 0.0], [0.0, 2.0]]);
    /// # let (be, bd) = (Array1::<f32>::zeros(2), Array1::<f32>::zeros(2));
    /// let w = Weights { we: we.view(), be: be.view(), wd_t: wd_t.view(), bd: bd.view(), derived: None };
    /// let q = array![[0.6f32, 0.8]];
    /// let (exact, offsets) = w.adc_tables(q.view())?;
    /// let (picked, same_offsets) = w.adc_candidate_tables(q.view())?;
    /// assert_eq!(offsets, same_offsets);
    /// for (a, b) in exact.iter().zip(&picked) {
    ///     assert!((a - b).abs() < 0.02, "{a} {b}"); // within the 7- and 8-bit roundings
    /// }
    /// # Ok(()) }
    /// ```
    pub fn adc_candidate_tables(&self, q: ArrayView2<f32>) -> Result<(Vec<f32>, Vec<f32>)> {
        self.check_input("queries", q)?;
        Ok((self.int_decoder().tables(q), self.adc_offsets(q)))
    }

    /// [`Weights::adc_candidate_tables`] divided by each query's length as [`per_unit_query`]
    /// divides, but the tables in the integer sums' one scale factor
    /// ([`IntDecoder::tables_divided`]): one rounding, and no second pass over them. What a
    /// rescored search (`bsa search --score adc --rescore R`) picks its candidates with.
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// # use ndarray::{array, Array1, Array2};
    /// # use bsa_index::model::{per_unit_query, Weights};
    /// # let (we, wd_t) = (Array2::<f32>::eye(2), array![[1.0f32, 0.0], [0.0, 2.0]]);
    /// # let (be, bd) = (Array1::<f32>::zeros(2), Array1::<f32>::ones(2));
    /// let w = Weights { we: we.view(), be: be.view(), wd_t: wd_t.view(), bd: bd.view(), derived: None };
    /// let q = array![[3.0f32, 4.0]]; // length 5
    /// let (t, offsets) = w.adc_candidate_unit_tables(q.view())?;
    /// let (t5, offsets5) = per_unit_query(w.adc_candidate_tables(q.view())?, q.view());
    /// assert_eq!(offsets, offsets5);
    /// for (a, b) in t.iter().zip(&t5) {
    ///     assert!((a - b).abs() <= 1e-6 * b.abs());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn adc_candidate_unit_tables(&self, q: ArrayView2<f32>) -> Result<(Vec<f32>, Vec<f32>)> {
        self.check_input("queries", q)?;
        let lengths: Vec<Option<f64>> = q.rows().into_iter().map(length).collect();
        let divisors: Vec<f64> = lengths.iter().map(|l| l.unwrap_or(1.0)).collect();
        let t = self.int_decoder().tables_divided(q, &divisors);
        let mut offsets = self.adc_offsets(q);
        for (o, l) in offsets.iter_mut().zip(&lengths) {
            divide(std::slice::from_mut(o), *l);
        }
        Ok((t, offsets))
    }

    /// The decoder rounded for [`crate::int_tables`], made once per model.
    fn int_decoder(&self) -> Arc<IntDecoder> {
        static DECODER: LastFor<IntDecoder> = LastFor::new();
        let make = || IntDecoder::new(self.wd_t);
        let own = self
            .derived
            .and_then(|d| derived_for(&d.int_decoder, self.wd_t, make));
        own.unwrap_or_else(|| DECODER.get(self.wd_t, make))
    }

    /// `q_i . bd` for each query, a [`deterministic::dot`] each.
    fn adc_offsets(&self, q: ArrayView2<f32>) -> Vec<f32> {
        let bd = self.bd.as_standard_layout();
        let bd = bd.as_slice().expect("standard layout");
        q.rows()
            .into_iter()
            .map(|r| deterministic::dot(&r.to_vec(), bd))
            .collect()
    }

    /// Per-query tables of the soft score: the query's sigmoid activations `sigmoid(q We^T +
    /// be)` ([`Weights::pre_activations`] through [`deterministic::sigmoid`]), offsets 0.
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// # use ndarray::{array, Array1, Array2};
    /// # use bsa_index::model::Weights;
    /// # let (we, wd_t) = (Array2::<f32>::eye(2), array![[1.0f32, 0.0], [0.0, 2.0]]);
    /// # let (be, bd) = (Array1::<f32>::zeros(2), Array1::<f32>::zeros(2));
    /// let w = Weights { we: we.view(), be: be.view(), wd_t: wd_t.view(), bd: bd.view(), derived: None };
    /// let (t, offsets) = w.soft_tables(array![[0.0f32, 2.0]].view())?;
    /// let sigmoid = |h: f32| 1.0 / (1.0 + (-h).exp());
    /// assert!((t[0] - 0.5).abs() < 1e-6 && (t[1] - sigmoid(2.0)).abs() < 1e-6);
    /// assert_eq!(offsets, [0.0]);
    /// # Ok(()) }
    /// ```
    pub fn soft_tables(&self, q: ArrayView2<f32>) -> Result<(Vec<f32>, Vec<f32>)> {
        self.check_input("queries", q)?;
        let h = self.pre_activations_of(q);
        Ok((
            h.iter().map(|&v| deterministic::sigmoid(v)).collect(),
            vec![0.0; q.nrows()],
        ))
    }

    /// The decoded vectors `xhat = bd + sum of wd_t[j]` over each code's set bits `j` (ids
    /// below `N`), row-major `codes.len() x D`, summed in `f32` in the order given (ascending
    /// for the codes of [`Weights::codes`]): `bsa`'s decoder bit for bit, so that rows a server
    /// adds to an index with a graph on decoded vectors
    /// ([`NewRows::graph_vectors`](crate::live::NewRows::graph_vectors)) are what `bsa add`
    /// would store. An [`Error::InvalidArgument`] for a bit id of `N` or more.
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// use ndarray::array;
    /// use bsa_index::model::Weights;
    /// let (we, wd_t) = (array![[1.0f32, 0.0], [0.0, 1.0]], array![[1.0f32, 0.0], [0.0, 2.0]]);
    /// let (be, bd) = (array![0.0f32, 0.0], array![0.5f32, 0.0]);
    /// let w = Weights { we: we.view(), be: be.view(), wd_t: wd_t.view(), bd: bd.view(), derived: None };
    /// assert_eq!(w.decode(&[vec![0, 1], vec![]])?, [1.5, 2.0, 0.5, 0.0]);
    /// assert!(w.decode(&[vec![2]]).is_err()); // no bit 2 in a 2-bit code
    /// # Ok(()) }
    /// ```
    pub fn decode<R: AsRef<[u32]>>(&self, codes: &[R]) -> Result<Vec<f32>> {
        let (n, d) = (self.bits(), self.dim());
        self.check_dim(d)?;
        let mut out = Vec::with_capacity(codes.len() * d);
        for (i, code) in codes.iter().enumerate() {
            let start = out.len();
            out.extend(self.bd.iter());
            let row = &mut out[start..];
            for &j in code.as_ref() {
                if j as usize >= n {
                    return Err(Error::InvalidArgument(format!(
                        "code {i}: bit {j} of a {n}-bit code"
                    )));
                }
                for (x, w) in row.iter_mut().zip(self.wd_t.row(j as usize)) {
                    *x += w;
                }
            }
        }
        Ok(out)
    }

    /// The length of each code's decoded vector ([`Weights::decode`]), summed in `f64`: the
    /// norms an index with `adc` stores for every row (`norms.bin`), and that rows a server adds
    /// to one need ([`NewRows::norms`](crate::live::NewRows::norms)), as `bsa add` computes
    /// them, bit for bit.
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// use ndarray::array;
    /// use bsa_index::model::Weights;
    /// let (we, wd_t) = (array![[1.0f32, 0.0], [0.0, 1.0]], array![[3.0f32, 0.0], [0.0, 4.0]]);
    /// let (be, bd) = (array![0.0f32, 0.0], array![0.0f32, 0.0]);
    /// let w = Weights { we: we.view(), be: be.view(), wd_t: wd_t.view(), bd: bd.view(), derived: None };
    /// assert_eq!(w.decoded_norms(&[vec![0, 1], vec![1]])?, [5.0, 4.0]);
    /// # Ok(()) }
    /// ```
    pub fn decoded_norms<R: AsRef<[u32]>>(&self, codes: &[R]) -> Result<Vec<f32>> {
        let d = self.dim();
        let mut norms = Vec::with_capacity(codes.len());
        // In chunks: the decoded rows of a large batch need not all be held at once.
        for chunk in codes.chunks(1 << 12) {
            let xhat = self.decode(chunk)?;
            norms.extend(xhat.chunks_exact(d.max(1)).map(|r| {
                r.iter()
                    .map(|&v| f64::from(v) * f64::from(v))
                    .sum::<f64>()
                    .sqrt() as f32
            }));
        }
        Ok(norms)
    }
}

/// ADC tables and offsets ([`Weights::adc_tables`]) divided by each query's length, so that the
/// score a search reports is `cos(q, xhat_b)` for queries of any length, as rescoring against
/// the stored vectors reports, not `|q|` times it. The order is the same. In `f64`, each query's
/// length summed in row order: the same bits on every CPU and thread count. A query of length 0
/// or beyond `f64` is left as computed (searches refuse it: it has no direction).
///
/// ```
/// let q = ndarray::array![[3.0f32, 4.0]];
/// let (t, off) = bsa_index::model::per_unit_query((vec![5.0, 10.0], vec![2.5]), q.view());
/// assert_eq!((t, off), (vec![1.0, 2.0], vec![0.5]));
/// ```
pub fn per_unit_query(
    (mut t, mut off): (Vec<f32>, Vec<f32>),
    q: ArrayView2<f32>,
) -> (Vec<f32>, Vec<f32>) {
    let bits = t.len() / q.nrows().max(1);
    // Tables of fewer queries than `q` has rows are divided as far as they go; a query of no
    // usable length is left as it is.
    let rows = q.nrows().min(off.len());
    let norms: Vec<Option<f64>> = q.rows().into_iter().take(rows).map(length).collect();
    // In parallel: a division in f64 per entry, 8M of them for 2000 queries of 4096 bits, was
    // a tenth of a rescored graph search's time on one thread. Each entry's bits do not depend
    // on the split.
    if bits > 0 {
        t.par_chunks_mut(bits)
            .zip(norms.par_iter())
            .for_each(|(table, &norm)| divide(table, norm));
    }
    for (o, &norm) in off.iter_mut().zip(&norms) {
        divide(std::slice::from_mut(o), norm);
    }
    (t, off)
}

/// Divides `xs` by a query's `length` in `f64`, rounding each once to `f32`; `None` (a query
/// of no usable length) leaves them as they are.
fn divide(xs: &mut [f32], length: Option<f64>) {
    if let Some(length) = length {
        for v in xs {
            *v = (f64::from(*v) / length) as f32;
        }
    }
}

/// A query's length in `f64`, summed in row order, or `None` when it is 0 or beyond `f64` (a
/// query with no direction: searches refuse it, and [`per_unit_query`] leaves it as it is).
fn length(row: ArrayView1<f32>) -> Option<f64> {
    let norm = row
        .iter()
        .map(|&x| f64::from(x).powi(2))
        .sum::<f64>()
        .sqrt();
    (norm > 0.0 && norm.is_finite()).then_some(norm)
}

/// A model as a search uses it, borrowed: its weights and the [`Rule`] its codes follow
/// ([`QueryModel::view`]; `bsa`'s models give one too), for [`crate::query::search`].
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// use ndarray::{array, Array1};
/// use bsa_index::model::{QueryModel, Rule};
/// let we = array![[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]];
/// let model = QueryModel::new("topk", Rule::TopK(2), we.clone(), Array1::zeros(3), we, Array1::zeros(2))?;
/// let view = model.view(); // what bsa_index::query::search takes
/// assert_eq!((view.bits(), view.dim(), view.rule), (3, 2, Rule::TopK(2)));
/// assert_eq!(view.codes(array![[0.1f32, 0.9]].view())?, [vec![1, 2]]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ModelView<'a> {
    /// Its weights.
    pub weights: Weights<'a>,
    /// How it picks a code's bits.
    pub rule: Rule,
    /// The length and CRC-32 of the model file it was read from, if known
    /// ([`QueryModel::from_bytes`]): a search refuses it for an index whose manifest records
    /// another model file ([`crate::query::search`]).
    pub source: Option<FileInfo>,
}

impl ModelView<'_> {
    /// Bits per code, `N`.
    pub fn bits(&self) -> usize {
        self.weights.bits()
    }

    /// Input dimension, `D`.
    pub fn dim(&self) -> usize {
        self.weights.dim()
    }

    /// Refuses a view no model file would give: a rule's `k` outside `1..=N`.
    ///
    /// ```
    /// # fn main() -> bsa_index::Result<()> {
    /// # use ndarray::{array, Array1};
    /// # use bsa_index::model::{QueryModel, Rule};
    /// # let we = array![[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]];
    /// # let model = QueryModel::new("topk", Rule::TopK(2), we.clone(), Array1::zeros(3), we, Array1::zeros(2))?;
    /// let mut view = model.view();
    /// assert!(view.check().is_ok());
    /// view.rule = Rule::TopK(4); // more set bits than the code has
    /// assert!(view.check().is_err());
    /// # Ok(()) }
    /// ```
    pub fn check(&self) -> Result<()> {
        match self.rule {
            Rule::TopK(k) | Rule::Pursuit(k) if k == 0 || k > self.bits() => {
                Err(Error::InvalidArgument(format!(
                    "model view: k = {k} set bits of {}; it must be 1..={}",
                    self.bits(),
                    self.bits()
                )))
            }
            _ => Ok(()),
        }
    }

    /// The set bits of each row's code ([`Weights::codes`] by its rule): an
    /// [`Error::DimMismatch`] for rows not of the model's dimension. Pack them for a search
    /// with [`crate::pack::pack_set_bits`].
    pub fn codes(&self, x: ArrayView2<f32>) -> Result<Vec<Vec<u32>>> {
        self.check()?;
        self.weights.codes(self.rule, x, None)
    }
}

/// A model for answering float queries: its [`Rule`] and its weights, owned and unchanging, and
/// what the products derive from them, kept with it ([`Derived`]: a process may serve several). Read from a model file with [`QueryModel::open`], or from an index with
/// [`crate::live::Snapshot::query_model`].
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// use ndarray::{array, Array1};
/// use bsa_index::model::{QueryModel, Rule};
/// // A sign-bit model of 2-d rows: bit j is set where row . we_j > 0.
/// let we = array![[1.0f32, 0.0], [0.0, 1.0], [1.0, -1.0]];
/// let model = QueryModel::new("sign", Rule::Positive, we.clone(), Array1::zeros(3), we, Array1::zeros(2))?;
/// assert_eq!((model.method(), model.rule(), model.bits(), model.dim()), ("sign", Rule::Positive, 3, 2));
/// let codes = model.encode(array![[1.0f32, 0.5], [-1.0, 1.0]].view())?;
/// assert_eq!(codes, [vec![0, 1, 2], vec![1]]);
/// let packed = bsa_index::pack::pack_set_bits(&codes, model.bits())?; // a search's query codes
/// assert_eq!(packed, [0b111, 0b010]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct QueryModel {
    method: String,
    rule: Rule,
    we: Array2<f32>,
    be: Array1<f32>,
    wd_t: Array2<f32>,
    bd: Array1<f32>,
    /// The listings of `we` and `wd_t` as unchanging ([`crate::memo::freeze`]; no `&mut` to
    /// them is given), ended when it is dropped: what lets `derived` serve them.
    frozen: [u64; 2],
    derived: Derived,
    /// The length and CRC-32 of the file it was read from.
    source: Option<FileInfo>,
}

impl QueryModel {
    /// A model of `method` (the name its file records) that makes codes by `rule`, from its
    /// weights: `we` and `wd_t` `N x D`, `be` of `N`, `bd` of `D`. An
    /// [`Error::InvalidArgument`] when the shapes disagree, a size is 0, `k` is 0 or above `N`,
    /// or a weight is not finite.
    ///
    /// ```
    /// use ndarray::{Array1, Array2};
    /// use bsa_index::model::{QueryModel, Rule};
    /// let (we, be, bd) = (Array2::<f32>::eye(4), Array1::<f32>::zeros(4), Array1::<f32>::zeros(4));
    /// assert!(QueryModel::new("topk", Rule::TopK(2), we.clone(), be.clone(), we.clone(), bd.clone()).is_ok());
    /// let narrow = Array2::<f32>::zeros((4, 3)); // a decoder of another dimension
    /// assert!(QueryModel::new("topk", Rule::TopK(2), we.clone(), be.clone(), narrow, bd.clone()).is_err());
    /// assert!(QueryModel::new("topk", Rule::TopK(5), we.clone(), be.clone(), we.clone(), bd.clone()).is_err());
    /// let mut nan = we.clone();
    /// nan[[0, 0]] = f32::NAN;
    /// assert!(QueryModel::new("topk", Rule::TopK(2), nan, be, we, bd).is_err());
    /// ```
    pub fn new(
        method: &str,
        rule: Rule,
        we: Array2<f32>,
        be: Array1<f32>,
        wd_t: Array2<f32>,
        bd: Array1<f32>,
    ) -> Result<QueryModel> {
        // Any memory layout is taken; the products read rows.
        let standard = |a: Array2<f32>| {
            if a.is_standard_layout() {
                a
            } else {
                a.as_standard_layout().into_owned()
            }
        };
        let (we, wd_t) = (standard(we), standard(wd_t));
        let (be, bd) = (
            be.as_standard_layout().into_owned(),
            bd.as_standard_layout().into_owned(),
        );
        let (n, d) = we.dim();
        let bad = |what: String| Err(Error::InvalidArgument(format!("model weights: {what}")));
        if n == 0 || d == 0 {
            return bad(format!(
                "the encoder is {n} x {d}; a model has bits and dimensions"
            ));
        }
        if wd_t.dim() != (n, d) || be.len() != n || bd.len() != d {
            return bad(format!(
                "the encoder is {n} x {d} but the decoder (transposed) is {:?}, the encoder's \
                 bias has {} values and the decoder's {}",
                wd_t.dim(),
                be.len(),
                bd.len()
            ));
        }
        if let Rule::TopK(k) | Rule::Pursuit(k) = rule
            && (k == 0 || k > n)
        {
            return bad(format!("k = {k} set bits of {n}; it must be 1..={n}"));
        }
        let finite = |a: &[f32]| a.iter().all(|v| v.is_finite());
        let all = [we.as_slice(), be.as_slice(), wd_t.as_slice(), bd.as_slice()];
        if !all.iter().all(|s| s.is_some_and(finite)) {
            return bad("a weight is not finite".into());
        }
        // Their memory stays where it is when they move into the model.
        let frozen = [
            crate::memo::freeze(we.view()),
            crate::memo::freeze(wd_t.view()),
        ];
        Ok(QueryModel {
            method: method.to_string(),
            rule,
            we,
            be,
            wd_t,
            bd,
            frozen,
            derived: Derived::default(),
            source: None,
        })
    }

    /// Reads a bsa model file (`bsa train`'s, or the PyTorch peer trainer's), checking what a
    /// search needs: the format marker and version, the settings it encodes by, every
    /// tensor's presence, dtype and shape, and that the weights are finite (the training
    /// settings are `bsa`'s to check). A damaged or foreign file is an
    /// [`Error::Model`] naming it.
    ///
    /// ```
    /// use bsa_index::{model::QueryModel, Error};
    /// let dir = tempfile::tempdir().unwrap();
    /// let missing = QueryModel::open(dir.path().join("m.safetensors")).unwrap_err();
    /// assert!(matches!(missing, Error::Io { .. }), "{missing}");
    /// std::fs::write(dir.path().join("m.safetensors"), b"{not a model}").unwrap();
    /// let foreign = QueryModel::open(dir.path().join("m.safetensors")).unwrap_err();
    /// assert!(matches!(foreign, Error::Model { .. }), "{foreign}");
    /// assert!(foreign.to_string().contains("m.safetensors"));
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<QueryModel> {
        let path = path.as_ref();
        let buf = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        QueryModel::from_bytes(&buf, path)
    }

    /// [`QueryModel::open`] of a model file's bytes; `name` is what errors call it.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::collections::HashMap;
    /// use safetensors::{tensor::TensorView, Dtype};
    /// use bsa_index::model::{QueryModel, Rule};
    /// // A 2-bit model of 2-d rows as `bsa train` writes one: its settings in the metadata, the
    /// // decoder in PyTorch's layout (D x N).
    /// let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    /// let (eye, zeros) = (bytes(&[1.0, 0.0, 0.0, 1.0]), bytes(&[0.0, 0.0]));
    /// let tensors = [
    ///     ("encoder.weight", TensorView::new(Dtype::F32, vec![2, 2], &eye)?),
    ///     ("encoder.bias", TensorView::new(Dtype::F32, vec![2], &zeros)?),
    ///     ("decoder.weight", TensorView::new(Dtype::F32, vec![2, 2], &eye)?),
    ///     ("decoder.bias", TensorView::new(Dtype::F32, vec![2], &zeros)?),
    /// ];
    /// let settings = [("format", "bsa-model"), ("format_version", "1"), ("dim", "2"), ("bits", "2"),
    ///                 ("k", "1"), ("method", "topk")];
    /// let meta: HashMap<String, String> =
    ///     settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    /// let file = safetensors::serialize(tensors, Some(meta))?;
    /// let model = QueryModel::from_bytes(&file, "m.safetensors")?;
    /// assert_eq!((model.rule(), model.bits(), model.dim()), (Rule::TopK(1), 2, 2));
    /// assert_eq!(model.encode(ndarray::array![[0.2f32, 0.7]].view())?, [vec![1]]);
    /// // Cut short, the same file is refused, by name.
    /// let cut = QueryModel::from_bytes(&file[..file.len() - 4], "m.safetensors").unwrap_err();
    /// assert!(cut.to_string().contains("m.safetensors"), "{cut}");
    /// # Ok(()) }
    /// ```
    pub fn from_bytes(buf: &[u8], name: impl AsRef<Path>) -> Result<QueryModel> {
        QueryModel::from_checked_bytes(buf, name.as_ref(), crate::files::info_of_bytes(buf))
    }

    /// [`QueryModel::from_bytes`] of bytes whose length and CRC the caller has computed
    /// (checking them against a manifest): `source`.
    pub(crate) fn from_checked_bytes(
        buf: &[u8],
        path: &Path,
        source: FileInfo,
    ) -> Result<QueryModel> {
        let s = ModelSettings::read(buf, path)?;
        let rule = Rule::of_method(&s.method, s.k).ok_or_else(|| {
            Error::model(
                path,
                format!("metadata method = {:?}: not a method bsa knows", s.method),
            )
        })?;
        if s.bits == 0 || s.dim == 0 || s.k == 0 || s.k > s.bits {
            return Err(Error::model(
                path,
                format!(
                    "bad model settings: bits {}, dim {}, k {} (k must be 1..=bits)",
                    s.bits, s.dim, s.k
                ),
            ));
        }
        let w = read_weights(buf, path, s.bits, s.dim)?;
        let mut model = QueryModel::new(&s.method, rule, w.0, w.1, w.2, w.3)
            .map_err(|e| Error::model(path, e.to_string()))?;
        model.source = Some(source);
        Ok(model)
    }

    /// The method the model was trained by, as its file names it (`bsa`, `topk`, `pursuit`, ...).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// How it picks a code's bits.
    pub fn rule(&self) -> Rule {
        self.rule
    }

    /// Bits per code, `N`.
    pub fn bits(&self) -> usize {
        self.we.nrows()
    }

    /// Input dimension, `D`.
    pub fn dim(&self) -> usize {
        self.we.ncols()
    }

    /// Its weights, for the products and tables of [`Weights`].
    pub fn weights(&self) -> Weights<'_> {
        Weights {
            we: self.we.view(),
            be: self.be.view(),
            wd_t: self.wd_t.view(),
            bd: self.bd.view(),
            derived: Some(&self.derived),
        }
    }

    /// The model as a search takes it ([`crate::query::search`]).
    pub fn view(&self) -> ModelView<'_> {
        ModelView {
            weights: self.weights(),
            rule: self.rule,
            source: self.source,
        }
    }

    /// The set bits of each row's code ([`ModelView::codes`]): an [`Error::DimMismatch`] for
    /// rows not of the model's dimension. Pack them for a search with
    /// [`crate::pack::pack_set_bits`].
    pub fn encode(&self, x: ArrayView2<f32>) -> Result<Vec<Vec<u32>>> {
        self.view().codes(x)
    }
}

impl Drop for QueryModel {
    fn drop(&mut self) {
        crate::memo::unfreeze(&self.frozen);
    }
}

/// The settings a model file records in its safetensors metadata, in either dialect: bsa's
/// (`format` = [`FORMAT`], `format_version`, `dim`, `bits`, `k`, `method`, and the training
/// settings) or the PyTorch peer trainer's (`D`, `N`, `K`, `mode`, no `format`).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::collections::HashMap;
/// use bsa_index::model::ModelSettings;
/// // The settings are the header's alone: a file of the PyTorch peer's dialect (no tensors here).
/// let peer = [("D", "384"), ("N", "1024"), ("K", "32"), ("mode", "topk")];
/// let meta: HashMap<String, String> = peer.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
/// let header = safetensors::serialize(Vec::<(&str, safetensors::tensor::TensorView)>::new(), Some(meta))?;
/// let s = ModelSettings::read(&header, "peer.safetensors")?;
/// assert_eq!((s.dim, s.bits, s.k, s.method.as_str(), s.peer), (384, 1024, 32, "topk", true));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ModelSettings {
    /// Input dimension.
    pub dim: usize,
    /// Bits per code.
    pub bits: usize,
    /// Set bits per code (the methods that fix it).
    pub k: usize,
    /// The method's name (the peer's `mode`, `bsa` when absent).
    pub method: String,
    /// Whether the file is the peer trainer's.
    pub peer: bool,
    /// All the metadata, for the settings only a trainer reads (`loss`, `alpha`, `target`,
    /// `training`).
    pub metadata: HashMap<String, String>,
}

impl ModelSettings {
    /// Reads the settings from a model file's bytes (its header alone); `path` is what errors
    /// call it. A missing key, an unparsable number, another format or a newer version is an
    /// [`Error::Model`] that says which.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::collections::HashMap;
    /// use bsa_index::model::ModelSettings;
    /// let meta = |pairs: &[(&str, &str)]| -> Result<Vec<u8>, safetensors::SafeTensorError> {
    ///     let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    ///     safetensors::serialize(Vec::<(&str, safetensors::tensor::TensorView)>::new(), Some(m))
    /// };
    /// let newer = meta(&[("format", "bsa-model"), ("format_version", "99")])?;
    /// let e = ModelSettings::read(&newer, "m.safetensors").unwrap_err();
    /// assert!(e.to_string().contains("model format v99 is newer than this bsa reads"), "{e}");
    /// let zero = meta(&[("format", "bsa-model"), ("format_version", "0")])?;
    /// let e = ModelSettings::read(&zero, "m.safetensors").unwrap_err();
    /// assert!(e.to_string().contains("format_version 0 is no model format"), "{e}");
    /// let no_bits = meta(&[("format", "bsa-model"), ("format_version", "1"), ("dim", "8")])?;
    /// let e = ModelSettings::read(&no_bits, "m.safetensors").unwrap_err();
    /// assert!(e.to_string().contains("\"bits\" is missing"), "{e}");
    /// # Ok(()) }
    /// ```
    pub fn read(buf: &[u8], path: impl AsRef<Path>) -> Result<ModelSettings> {
        let path = path.as_ref();
        let (_, header) = SafeTensors::read_metadata(buf).map_err(|e| {
            Error::model(
                path,
                format!(
                    "not a safetensors model file ({e}): it is truncated, damaged or another \
                     kind of file; retrain it with `bsa train` or copy it again"
                ),
            )
        })?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let peer = !metadata.contains_key("format")
            && ["D", "N", "K"].iter().all(|k| metadata.contains_key(*k));
        let get = |key: &str| -> Result<&str> {
            metadata.get(key).map(String::as_str).ok_or_else(|| {
                Error::model(
                    path,
                    format!("metadata key {key:?} is missing; is this a bsa model file?"),
                )
            })
        };
        let (dim, bits, k, method) = if peer {
            let or = |key: &str, default: &'static str| {
                metadata.get(key).map_or(default, String::as_str)
            };
            // The mode first: a file of another trainer's mode is refused as such.
            let method = match or("mode", "bsa") {
                mode @ ("bsa" | "topk") => mode.to_string(),
                mode => {
                    return Err(Error::model(
                        path,
                        format!(
                            "metadata mode {mode:?} is not one bsa_torch.py trains (bsa or topk)"
                        ),
                    ));
                }
            };
            (
                parse(path, "D", or("D", ""))?,
                parse(path, "N", or("N", ""))?,
                parse(path, "K", or("K", ""))?,
                method,
            )
        } else {
            if get("format")? != FORMAT {
                return Err(Error::model(
                    path,
                    format!(
                        "metadata says format {:?}, expected {FORMAT:?}",
                        get("format")?
                    ),
                ));
            }
            let version: u32 = parse(path, "format_version", get("format_version")?)?;
            if version == 0 {
                return Err(Error::model(
                    path,
                    "format_version 0 is no model format bsa ever wrote (they start at v1): \
                     the file is damaged, or not written by bsa",
                ));
            }
            if version > FORMAT_VERSION {
                return Err(Error::model(
                    path,
                    format!(
                        "model format v{version} is newer than this bsa reads \
                         (v1..=v{FORMAT_VERSION}); upgrade bsa or retrain the model"
                    ),
                ));
            }
            (
                parse(path, "dim", get("dim")?)?,
                parse(path, "bits", get("bits")?)?,
                parse(path, "k", get("k")?)?,
                get("method")?.to_string(),
            )
        };
        Ok(ModelSettings {
            dim,
            bits,
            k,
            method,
            peer,
            metadata,
        })
    }
}

/// A metadata value parsed, or an [`Error::Model`] naming the key and the value.
fn parse<T: std::str::FromStr>(path: &Path, key: &str, value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| Error::model(path, format!("metadata {key} = {value:?}: {e}")))
}

/// A model's weights, owned, in the order of [`Weights`]' fields: `(we, be, wd_t, bd)`.
pub type OwnedWeights = (Array2<f32>, Array1<f32>, Array2<f32>, Array1<f32>);

/// The weights of a model file of `bits` x `dim` (its settings, [`ModelSettings::read`]):
/// `(we, be, wd_t, bd)`, each tensor checked for presence, dtype `F32`, shape and finite values;
/// the decoder (`decoder.weight`, `D x N` in the PyTorch layout) is returned transposed.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::path::Path;
/// use safetensors::{tensor::TensorView, Dtype};
/// use bsa_index::model::read_weights;
/// let one = 1.0f32.to_le_bytes();
/// let tensors = [
///     ("encoder.weight", TensorView::new(Dtype::F32, vec![1, 1], &one)?),
///     ("encoder.bias", TensorView::new(Dtype::F32, vec![1], &one)?),
///     ("decoder.weight", TensorView::new(Dtype::F32, vec![1, 1], &one)?),
/// ];
/// let file = safetensors::serialize(tensors, None)?;
/// let e = read_weights(&file, Path::new("m.safetensors"), 1, 1).unwrap_err();
/// assert!(e.to_string().contains("tensor \"decoder.bias\" is missing"), "{e}");
/// let e = read_weights(&file, Path::new("m.safetensors"), 2, 1).unwrap_err(); // not 2 x 1
/// assert!(e.to_string().contains("expected [2, 1]"), "{e}");
/// # Ok(()) }
/// ```
pub fn read_weights(buf: &[u8], path: &Path, bits: usize, dim: usize) -> Result<OwnedWeights> {
    let bad = |detail: String| Error::model(path, detail);
    let st =
        SafeTensors::deserialize(buf).map_err(|e| bad(format!("corrupt safetensors data: {e}")))?;
    let (n, d) = (bits, dim);
    let tensor = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        let t = st
            .tensor(name)
            .map_err(|_| bad(format!("tensor {name:?} is missing")))?;
        if t.dtype() != Dtype::F32 {
            return Err(bad(format!(
                "tensor {name:?} is {:?}, expected F32",
                t.dtype()
            )));
        }
        if t.shape() != shape {
            return Err(bad(format!(
                "tensor {name:?} has shape {:?}, expected {shape:?} (bits {n}, dim {d})",
                t.shape()
            )));
        }
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!(
                "tensor {name:?} holds a non-finite value at {i}"
            )));
        }
        Ok(v)
    };
    let shape_err = |e: ndarray::ShapeError| bad(format!("tensor shape: {e}"));
    let we =
        Array2::from_shape_vec((n, d), tensor("encoder.weight", &[n, d])?).map_err(shape_err)?;
    let be = Array1::from(tensor("encoder.bias", &[n])?);
    let wd_t = Array2::from_shape_vec((n, d), transposed(&tensor("decoder.weight", &[d, n])?, d))
        .map_err(shape_err)?;
    let bd = Array1::from(tensor("decoder.bias", &[d])?);
    Ok((we, be, wd_t, bd))
}

/// The `cols x rows` transpose of the row-major `rows x cols` matrix `m`, in square tiles: the
/// decoder's 384 x 4096 copied column by column (ndarray's `as_standard_layout` of its
/// transpose) missed the cache on every element, a seventh of opening a 4096-bit index.
fn transposed(m: &[f32], rows: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let cols = m.len() / rows.max(1);
    let mut out = vec![0f32; m.len()];
    for i0 in (0..rows).step_by(TILE) {
        for j0 in (0..cols).step_by(TILE) {
            for i in i0..(i0 + TILE).min(rows) {
                for j in j0..(j0 + TILE).min(cols) {
                    out[j * rows + i] = m[i * cols + j];
                }
            }
        }
    }
    out
}

/// Checks that every value of `x` is finite and, when `nonzero`, that every row has a norm
/// cosine can divide by (not 0, not beyond `f32`), with the words an embedding file's check
/// uses ([`Error::BadRow`]). `what` names the matrix in the error (e.g. `"queries"`).
///
/// ```
/// use bsa_index::query::check_rows;
/// let x = ndarray::array![[0.6f32, 0.8], [0.0, 0.0], [f32::NAN, 1.0]];
/// assert!(check_rows("x", x.slice(ndarray::s![..2, ..]), false).is_ok()); // zeros are finite
/// let zero = check_rows("x", x.view(), true).unwrap_err();
/// assert!(matches!(zero, bsa_index::Error::BadRow { row: 1, .. }), "{zero}");
/// assert!(zero.to_string().starts_with("x: row 1: L2 norm is 0"));
/// let nan = check_rows("x", x.view(), false).unwrap_err();
/// assert!(matches!(nan, bsa_index::Error::BadRow { row: 2, .. }), "{nan}");
/// ```
pub fn check_rows(what: &str, x: ArrayView2<f32>, nonzero: bool) -> Result<()> {
    for (row, values) in x.rows().into_iter().enumerate() {
        let values = match values.as_slice() {
            Some(v) => std::borrow::Cow::Borrowed(v),
            None => std::borrow::Cow::Owned(values.to_vec()),
        };
        if plainly_fine(&values) {
            continue;
        }
        let bad = nonfinite_detail(&values).or_else(|| nonzero.then(|| norm_detail(&values))?);
        if let Some(detail) = bad {
            return Err(Error::BadRow {
                path: what.into(),
                row,
                detail,
            });
        }
    }
    Ok(())
}

/// Whether a row is plainly fine for training and cosine similarity, in one vectorised pass:
/// its `f32` sum of squares (8 lanes) lies in `[1e-30, 1e30]`, so every value is finite and
/// the norm is positive and well within `f32`. Rows that fail it go through the exact checks
/// ([`nonfinite_detail`], [`norm_detail`]), which decide.
///
/// ```
/// use bsa_index::query::plainly_fine;
/// assert!(plainly_fine(&[0.6, 0.8]));
/// assert!(!plainly_fine(&[0.0, 0.0])); // norm 0: the exact checks decide
/// assert!(!plainly_fine(&[1.0, f32::NAN]));
/// assert!(!plainly_fine(&[1e-20, 0.0])); // a tiny norm, yet fine to the exact checks
/// ```
pub fn plainly_fine(values: &[f32]) -> bool {
    let mut s = [0f32; 8];
    let (chunks, tail) = values.as_chunks::<8>();
    for c in chunks {
        for l in 0..8 {
            s[l] += c[l] * c[l];
        }
    }
    for (l, &x) in tail.iter().enumerate() {
        s[l] += x * x;
    }
    (1e-30..=1e30).contains(&s.iter().sum::<f32>())
}

/// What is wrong with a row holding a value that is not finite, if it does: one wording for
/// embedding files and in-memory arrays (build, add, search, Python).
///
/// ```
/// use bsa_index::query::nonfinite_detail;
/// assert_eq!(nonfinite_detail(&[0.0, 1e30]), None);
/// let d = nonfinite_detail(&[0.0, f32::NEG_INFINITY]).unwrap();
/// assert!(d.starts_with("column 1 is -infinity"), "{d}");
/// ```
pub fn nonfinite_detail(values: &[f32]) -> Option<String> {
    let col = values.iter().position(|v| !v.is_finite())?;
    let v = values[col];
    let what = if v.is_nan() {
        "NaN (not a number)"
    } else if v > 0.0 {
        "+infinity"
    } else {
        "-infinity"
    };
    Some(format!(
        "column {col} is {what}; training and search need finite values: fix or drop this row \
         (numpy: x[np.isfinite(x).all(axis=1)])"
    ))
}

/// What is wrong with a row's L2 norm (computed in `f64`, and required to be a positive finite
/// `f32`, as cosine similarity needs), if anything.
///
/// ```
/// use bsa_index::query::norm_detail;
/// assert_eq!(norm_detail(&[1e-20, 0.0]), None); // tiny, but a positive f32
/// assert!(norm_detail(&[0.0, 0.0]).unwrap().starts_with("L2 norm is 0"));
/// assert!(norm_detail(&[3e38, 3e38]).unwrap().contains("outside the float32 range"));
/// ```
pub fn norm_detail(values: &[f32]) -> Option<String> {
    let norm = values
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    let norm32 = norm as f32;
    if norm32 > 0.0 && norm32.is_finite() {
        return None;
    }
    Some(if norm.is_nan() || norm.is_infinite() {
        "L2 norm is not finite (the row holds NaN, infinity or huge values); cosine similarity \
         needs finite vectors: fix or drop this row"
            .to_string()
    } else if norm == 0.0 {
        "L2 norm is 0 (an all-zero vector); cosine similarity is undefined for it: drop this row \
         (numpy: x[np.linalg.norm(x, axis=1) > 0])"
            .to_string()
    } else {
        format!(
            "L2 norm {norm:e} is outside the float32 range, so the row cannot be normalised for \
             cosine similarity: rescale or drop this row"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small pursuit model: its dictionary `atoms` (`n x d`), `bd = 0`, so `be = 0`.
    fn pursuit_model(n: usize, d: usize, seed: u32, k: usize) -> QueryModel {
        let atoms = Array2::from_shape_fn((n, d), |(i, j)| {
            ((i as u32 * 31 + j as u32 * 17 + seed * 7) % 23) as f32 / 11.0 - 1.0
        });
        let (be, bd) = (Array1::zeros(n), Array1::zeros(d));
        QueryModel::new("pursuit", Rule::Pursuit(k), atoms.clone(), be, atoms, bd).unwrap()
    }

    /// A `Derived` serves only the listing as unchanging it was made from: a matrix at the
    /// same address, listed again after the first listing ended (a model dropped and another
    /// made where it was; here the same array, changed between its two listings), gets its
    /// own products through the memo; so does one not listed at all.
    #[test]
    fn derived_matrices_serve_only_the_listing_they_were_made_from() {
        let x = Array2::from_shape_fn((5, 8), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 5.0 - 1.0);
        let fresh = Array2::from_shape_fn((48, 8), |(i, j)| ((i * 13 + j * 5) % 17) as f32 - 8.0);
        let (be, bd) = (Array1::zeros(48), Array1::zeros(8));
        let h = |we: &Array2<f32>, derived: Option<&Derived>| {
            let w = Weights {
                we: we.view(),
                be: be.view(),
                wd_t: fresh.view(),
                bd: bd.view(),
                derived,
            };
            w.pre_activations(x.view()).unwrap()
        };
        let mut we = fresh.clone();
        let derived = Derived::default();
        // Not listed: not used.
        assert_eq!(h(&we, Some(&derived)), h(&we, None));
        assert!(format!("{derived:?}").contains("encoder: false"));
        let first = crate::memo::freeze(we.view());
        let before = h(&we, Some(&derived));
        assert!(format!("{derived:?}").contains("encoder: true"));
        crate::memo::unfreeze(&[first]);
        let address = we.as_ptr();
        we[[20, 4]] += 1.0;
        assert_eq!(we.as_ptr(), address);
        // Unlisted, then listed anew: either way its own products, not the first listing's.
        let after = h(&we, None);
        assert_ne!(after, before);
        assert_eq!(h(&we, Some(&derived)), after);
        let second = crate::memo::freeze(we.view());
        assert_eq!(h(&we, Some(&derived)), after);
        crate::memo::unfreeze(&[second]);
    }

    /// Two models used in turn keep their own derived matrices: each encodes (and tabulates)
    /// as through the process's memo, whatever the order, and as a copy of itself would.
    #[test]
    fn models_used_in_turn_answer_as_alone() {
        let x = Array2::from_shape_fn((7, 8), |(i, j)| ((i * 5 + j * 3) % 13) as f32 / 6.0 - 1.0);
        let (a, b) = (pursuit_model(48, 8, 1, 5), pursuit_model(48, 8, 2, 5));
        let memo = |m: &QueryModel| {
            let w = Weights {
                derived: None,
                ..m.weights()
            };
            (
                w.codes(m.rule(), x.view(), None).unwrap(),
                w.adc_tables(x.view()).unwrap(),
            )
        };
        let (want_a, want_b) = (memo(&a), memo(&b));
        assert_ne!(want_a.0, want_b.0);
        for m in [&a, &b, &a, &b, &a] {
            let got = (
                m.encode(x.view()).unwrap(),
                m.weights().adc_tables(x.view()).unwrap(),
            );
            let want = if std::ptr::eq(m, &a) {
                &want_a
            } else {
                &want_b
            };
            assert_eq!(&got, want);
        }
        // b's matrices with a's derived ones (put together by hand, filled or not yet): b's
        // answers, and a's own stay a's.
        let c = pursuit_model(48, 8, 1, 5);
        for first in [false, true] {
            if first {
                c.encode(x.view()).unwrap();
            }
            let mixed = Weights {
                we: b.weights().we,
                be: b.weights().be,
                wd_t: b.weights().wd_t,
                bd: b.weights().bd,
                ..c.weights()
            };
            let got = mixed.codes(b.rule(), x.view(), None).unwrap();
            assert_eq!((got, mixed.adc_tables(x.view()).unwrap()), want_b);
            let own = (
                c.encode(x.view()).unwrap(),
                c.weights().adc_tables(x.view()).unwrap(),
            );
            assert_eq!(own, want_a);
        }
    }

    /// Bad input is an error, never a panic or a silent answer: rows of another width, weights
    /// whose shapes disagree, k out of range, non-finite weights. Weights in any memory layout
    /// are taken (a transposed matrix's view included).
    #[test]
    fn bad_weights_and_rows_are_errors() {
        let m = pursuit_model(16, 4, 3, 2);
        let wide = Array2::<f32>::zeros((2, 5));
        for e in [
            m.encode(wide.view()).unwrap_err(),
            m.weights().adc_tables(wide.view()).unwrap_err(),
            m.weights().adc_candidate_tables(wide.view()).unwrap_err(),
            m.weights().soft_tables(wide.view()).unwrap_err(),
        ] {
            assert!(e.to_string().contains("expected 4, got 5"), "{e}");
        }
        let short_decoder = Array2::<f32>::zeros((15, 4));
        let w = Weights {
            wd_t: short_decoder.view(),
            ..m.weights()
        };
        let e = w
            .codes(m.rule(), Array2::zeros((1, 4)).view(), None)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("the encoder is 16 x 4 but the decoder"),
            "{e}"
        );
        let ones = |n, d| Array2::<f32>::ones((n, d));
        let new = |rule, we: Array2<f32>| {
            let n = we.nrows();
            QueryModel::new(
                "topk",
                rule,
                we,
                Array1::zeros(n),
                ones(n, 4),
                Array1::zeros(4),
            )
        };
        assert!(new(Rule::TopK(17), ones(16, 4)).is_err());
        assert!(new(Rule::TopK(0), ones(16, 4)).is_err());
        let mut nan = ones(16, 4);
        nan[[3, 1]] = f32::NAN;
        assert!(
            new(Rule::TopK(2), nan)
                .unwrap_err()
                .to_string()
                .contains("not finite")
        );
        // Column-major (a transpose's layout) weights encode as standard ones.
        let we = Array2::from_shape_fn((16, 4), |(i, j)| (i as f32 - 7.5) * (j as f32 + 1.0));
        let mut fortran = Array2::zeros(ndarray::ShapeBuilder::f((16, 4)));
        fortran.assign(&we);
        assert!(!fortran.is_standard_layout());
        let x = Array2::from_shape_fn((3, 4), |(i, j)| (i + j) as f32 - 2.0);
        let a = new(Rule::TopK(3), we).unwrap().encode(x.view()).unwrap();
        assert_eq!(
            new(Rule::TopK(3), fortran)
                .unwrap()
                .encode(x.view())
                .unwrap(),
            a
        );
    }

    /// The tiled transpose is ndarray's, element for element, for shapes that do and do not
    /// fill whole tiles.
    #[test]
    fn transposed_is_the_transpose() {
        for (rows, cols) in [(1, 1), (3, 70), (64, 32), (33, 65), (384, 100)] {
            let m: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 7.0).collect();
            let a = Array2::from_shape_vec((rows, cols), m.clone()).unwrap();
            let want: Vec<f32> = a.t().iter().copied().collect();
            assert_eq!(transposed(&m, rows), want, "{rows} x {cols}");
        }
    }
}
