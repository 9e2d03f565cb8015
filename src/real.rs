//! The float types the model is evaluated in, and the elementwise math that the model, the
//! losses and the trainer's vector loops ([`crate::simd`]) all use: `e^x` for `x <= 0`, the
//! sigmoid and the top-k selection. A leaf (no `crate::` imports), so that each of them can use it
//! without importing the others; [`crate::model`] and [`crate::simd`] re-export its items.

use ndarray::{LinalgScalar, ScalarOperand};
use num_traits::{Float, NumAssign};
use std::fmt;
use std::iter::Sum;

/// A float type the model can be evaluated in: `f32` for training, `f64` for gradient checks.
pub trait Real:
    Float + NumAssign + LinalgScalar + ScalarOperand + Send + Sync + fmt::Debug + Sum + 'static
{
    /// `e^x` for `x <= 0` (and NaN for NaN), as the trainer's vector loops compute it: a
    /// polynomial that vectorises for `f32` ([`crate::simd::exp_nonpositive`], within 2 ulp),
    /// the exact `exp` for `f64` (gradient checks).
    fn exp_nonpositive(self) -> Self;

    /// A key whose integer order is the value order (`-0 = +0`; NaN above infinity), for fast
    /// selections.
    fn order_key(self) -> u64;

    /// `s` as `f32`s when `Self` is `f32`: lets a loop take a hand-written `f32` kernel
    /// ([`crate::simd`]'s gathers) and keep the generic code for `f64`.
    fn as_f32(s: &[Self]) -> Option<&[f32]>;

    /// [`as_f32`](Self::as_f32) for a mutable slice.
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]>;
}

impl Real for f32 {
    #[inline(always)]
    fn exp_nonpositive(self) -> f32 {
        exp_nonpositive(self)
    }

    #[inline(always)]
    fn order_key(self) -> u64 {
        bsa_index::topk::f32_order_key(self)
    }

    #[inline(always)]
    fn as_f32(s: &[f32]) -> Option<&[f32]> {
        Some(s)
    }

    #[inline(always)]
    fn as_f32_mut(s: &mut [f32]) -> Option<&mut [f32]> {
        Some(s)
    }
}

impl Real for f64 {
    #[inline(always)]
    fn exp_nonpositive(self) -> f64 {
        self.exp()
    }

    #[inline(always)]
    fn order_key(self) -> u64 {
        let b = (self + 0.0).to_bits();
        if b >> 63 == 1 { !b } else { b | 1 << 63 }
    }

    #[inline(always)]
    fn as_f32(_: &[f64]) -> Option<&[f32]> {
        None
    }

    #[inline(always)]
    fn as_f32_mut(_: &mut [f64]) -> Option<&mut [f32]> {
        None
    }
}

/// `e^x` for `x <= 0` in `f32`, within 2 ulp of the exact value (subnormal results included;
/// 0 below -104; NaN stays NaN). Plain operations only, so it vectorises in every copy of a loop
/// and gives the same bits in all of them (libm's `expf` is a call per element).
///
/// Cephes' `expf`: `x = n ln2 + r` with `|r| <= ln2 / 2`, a degree-7 polynomial for `e^r`, then
/// `2^n` applied as two factors so that results below `2^-126` round correctly.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    // `if`, not `max`: NaN must pass through.
    let x = if x < -104.0 { -104.0 } else { x };
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    // ln2 in two parts; `n * 0.693359375` is exact (the constant has 9 significant bits).
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * (r * r) + r + 1.0;
    // n is a whole number in [-150, 0]: adding 1.5 * 2^23 puts it in the low mantissa bits, an
    // integer conversion that vectorises (`as i32` on a float is a saturating conversion, which
    // the compiler does lane by lane). A NaN gives some integer here, but y is NaN then.
    let n = (n + 12_582_912.0).to_bits() as i32 - 0x4b40_0000;
    // Each half is a normal power of two.
    let (n1, n2) = (n / 2, n - n / 2);
    let pow2 = |i: i32| f32::from_bits(((i + 127) as u32) << 23);
    y * pow2(n1) * pow2(n2)
}

/// The logistic function, computed stably for large `|h|`.
#[inline]
pub fn sigmoid<F: Real>(h: F) -> F {
    if h >= F::zero() {
        F::one() / (F::one() + (-h).exp())
    } else {
        let e = h.exp();
        e / (F::one() + e)
    }
}

/// Indices of the `k` largest values of `row`, ties broken by lower index, in ascending index
/// order. Deterministic, O(N) on average. [`top_k_into`] takes the buffers that avoid
/// allocations.
pub fn top_k_indices<F: Real>(row: &[F], k: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(k.min(row.len()));
    top_k_into(row, k, &mut Vec::new(), &mut out);
    out
}

/// [`top_k_indices`] into `out` (cleared first), with `keys` as scratch: no allocation once both
/// have grown to size. The selection of [`bsa_index::topk::largest_keys_into`] on integer keys
/// ([`Real::order_key`]), so a TopK code is the same here and in the search crate's encoder.
#[inline(always)]
pub fn top_k_into<F: Real>(row: &[F], k: usize, keys: &mut Vec<u64>, out: &mut Vec<u32>) {
    keys.clear();
    keys.extend(row.iter().map(|v| v.order_key()));
    bsa_index::topk::largest_keys_into(keys, k, out);
}

/// Norms below this are treated as this by the cosine losses (`crate::loss` and the vector loops
/// of `crate::simd` alike), so a zero reconstruction gives a large but finite gradient instead of
/// NaN.
pub(crate) const NORM_FLOOR: f64 = 1e-12;
