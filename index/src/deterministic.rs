//! Float products whose every bit is fixed by their inputs: the same on every CPU, SIMD width and
//! thread count.
//!
//! A BLAS GEMM is fast, but it does not promise how it sums: OpenBLAS picks its kernel by CPU
//! (AVX2 or AVX-512), splits the output among its threads by the thread count, and handles the
//! edges of its blocks with other kernels, so the same dot product can round differently from run
//! to run. Training does not mind; printed search output and promised orders do (issue 12).
//!
//! Here an entry of a product is **always** the plain left-to-right `f32` sum
//!
//! ```text
//! s = 0.0;  for t in 0..D { s = s + a[t] * b[t] }      (each * and + rounded to f32)
//! ```
//!
//! which is what [`dot`] computes (not [`crate::dot::dot`]'s 64-lane order, which the graph
//! builder keeps to: the two give other bits for the same inputs). [`matmul_nt`] computes many such sums at once, vectorised
//! *across* output entries (each SIMD lane holds a different entry, so no lane ever sums in
//! another order) and parallelised over rows of the output (each entry is computed by one thread
//! from start to end). Rust never contracts `a * b + c` into a fused multiply-add and nothing here
//! asks for one, so the AVX-512, AVX2, SSE and scalar code paths perform the same IEEE operations
//! on every entry and agree bit for bit (tested). [`gram`] is `matmul_nt(a, a)` at half the cost.
//!
//! The cost: without fused multiply-adds these kernels peak at half a BLAS GEMM's rate; measured
//! at 1000 x 4096 x 384 on 2 threads, about 35-40 ms against 16-18 ms for OpenBLAS's AVX-512
//! kernel and 34 ms for its AVX2 one.
//!
//! [`sigmoid`] is the logistic function from `+`, `*` and `/` only (its `exp` is written out), so
//! it does not depend on which variant of the C library's `exp` the CPU selects.
//!
//! [`f32_dot_error_bound`] bounds how far *any* `f32` evaluation of a dot product (BLAS or this
//! module) can be from the exact value, so a fast BLAS result can be used wherever it is provably
//! on the same side of a decision, and the deterministic value recomputed only near the boundary.

use crate::KernelFamily;
use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

/// Output columns per packed panel of `b`: one AVX-512 register, two AVX2 registers.
const W: usize = 16;

/// Rows of the output per parallel task: enough work to amortise the task, and the panels of `b`
/// are streamed from cache once per task.
const ROWS_PER_TASK: usize = 48;

/// Panels visited per pass over a task's rows: `PANELS_PER_PASS * W * D` floats of `b` (96 KiB
/// at D = 384) stay in L2 while all of the task's rows use them.
const PANELS_PER_PASS: usize = 4;

/// `sum_t a[t] * b[t]` in `f32`, left to right from `0.0`: the reference every entry of
/// [`matmul_nt`] equals bit for bit.
///
/// The order shows: `1e8 + 1` rounds back to `1e8` in `f32`, so the `1` is lost before `-1e8`
/// cancels, where a pairwise or SIMD sum could keep it.
///
/// ```
/// use bsa_index::deterministic::dot;
/// assert_eq!(dot(&[1e8, 1.0, -1e8], &[1.0, 1.0, 1.0]), 0.0);
/// assert_eq!(dot(&[1.0, -1e8, 1e8], &[1.0, 1.0, 1.0]), 0.0);
/// assert_eq!(dot(&[1e8, -1e8, 1.0], &[1.0, 1.0, 1.0]), 1.0);
/// ```
///
/// # Panics
/// If the lengths differ.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(
        a.len(),
        b.len(),
        "dot product of slices of different lengths"
    );
    let mut s = 0.0f32;
    for (&x, &y) in a.iter().zip(b) {
        s += x * y;
    }
    s
}

/// `a b^T` (`m x d` times the transpose of `n x d`, so `m x n`): entry `(i, j)` is exactly
/// [`dot`]`(a.row(i), b.row(j))`, whatever the CPU or the size of rayon's pool.
///
/// ```
/// use bsa_index::deterministic::{dot, matmul_nt};
/// use ndarray::Array2;
/// // 70 x 37 times (50 x 37)^T: more rows than one task and columns than one panel.
/// let a = Array2::from_shape_fn((70, 37), |(i, t)| ((i * 31 + t * 7) % 19) as f32 / 7.0 - 1.3);
/// let b = Array2::from_shape_fn((50, 37), |(j, t)| ((j * 13 + t * 5) % 23) as f32 / 9.0 - 1.1);
/// let c = matmul_nt(a.view(), b.view());
/// assert_eq!(c.dim(), (70, 50));
/// for ((i, j), &x) in c.indexed_iter() {
///     let want = dot(a.row(i).as_slice().unwrap(), b.row(j).as_slice().unwrap());
///     assert_eq!(x.to_bits(), want.to_bits());
/// }
/// ```
///
/// # Panics
/// If the numbers of columns differ.
pub fn matmul_nt(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
    matmul_nt_packed(a, &Packed::new(b))
}

/// The right operand of [`matmul_nt`] laid out for its kernels, for a caller that multiplies
/// many batches by the same matrix (a model's encoder or decoder).
///
/// ```
/// use bsa_index::deterministic::{matmul_nt, matmul_nt_packed, Packed};
/// let a = ndarray::array![[1.0f32, 2.0], [3.0, 4.0]];
/// let b = ndarray::array![[0.5f32, -1.0], [2.0, 0.25], [1.0, 1.0]];
/// assert_eq!(matmul_nt_packed(a.view(), &Packed::new(b.view())), matmul_nt(a.view(), b.view()));
/// ```
#[derive(Clone, Debug)]
pub struct Packed {
    panels: Vec<f32>,
    n: usize,
    d: usize,
}

impl Packed {
    /// `b` (`n x d`) packed.
    pub fn new(b: ArrayView2<f32>) -> Packed {
        let (n, d) = b.dim();
        Packed {
            panels: pack_panels(b),
            n,
            d,
        }
    }
}

/// [`matmul_nt`] with its right operand packed: the same bits.
///
/// # Panics
/// If the numbers of columns differ.
pub fn matmul_nt_packed(a: ArrayView2<f32>, b: &Packed) -> Array2<f32> {
    let (m, d) = a.dim();
    let n = b.n;
    assert_eq!(b.d, d, "matmul_nt: inner dimensions differ");
    let mut out = Array2::<f32>::zeros((m, n));
    if m == 0 || n == 0 || d == 0 {
        // Empty sums are 0.0, as `dot` gives.
        return out;
    }
    let a = a.as_standard_layout();
    let family = KernelFamily::current();
    out.axis_chunks_iter_mut(Axis(0), ROWS_PER_TASK)
        .into_par_iter()
        .zip(a.axis_chunks_iter(Axis(0), ROWS_PER_TASK))
        .for_each(|(mut out_rows, a_rows)| {
            let a_rows = a_rows.as_slice().expect("standard layout");
            let out_rows = out_rows.as_slice_mut().expect("standard layout");
            rows(family, a_rows, &b.panels, d, n, 0, out_rows);
        });
    out
}

/// `a a^T` (`m x m`): exactly [`matmul_nt`]`(a, a)`, in about half the time. Each pair is
/// computed once and mirrored, which changes nothing: `dot(x, y)` and `dot(y, x)` multiply the
/// same numbers (`*` commutes) and add the products in the same order.
///
/// ```
/// use bsa_index::deterministic::{gram, matmul_nt};
/// use ndarray::Array2;
/// let a = Array2::from_shape_fn((33, 20), |(i, t)| ((i * 17 + t * 3) % 11) as f32 / 3.0 - 1.7);
/// let g = gram(a.view());
/// assert_eq!(g, matmul_nt(a.view(), a.view()));
/// assert_eq!(g, g.t()); // symmetric, bit for bit
/// ```
pub fn gram(a: ArrayView2<f32>) -> Array2<f32> {
    let (m, d) = a.dim();
    let mut out = Array2::<f32>::zeros((m, m));
    if m == 0 || d == 0 {
        return out;
    }
    let a = a.as_standard_layout();
    let panels = pack_panels(a.view());
    let family = KernelFamily::current();
    // Task c holds rows c R.. of the output; it computes their columns from the panel holding
    // column c R on (ROWS_PER_TASK is a multiple of W, so that is column c R exactly).
    out.axis_chunks_iter_mut(Axis(0), ROWS_PER_TASK)
        .into_par_iter()
        .zip(a.axis_chunks_iter(Axis(0), ROWS_PER_TASK))
        .enumerate()
        .for_each(|(c, (mut out_rows, a_rows))| {
            let a_rows = a_rows.as_slice().expect("standard layout");
            let out_rows = out_rows.as_slice_mut().expect("standard layout");
            rows(
                family,
                a_rows,
                &panels,
                d,
                m,
                c * ROWS_PER_TASK / W,
                out_rows,
            );
        });
    // The rest, left of each task's first column, from the other side (in 32 x 32 tiles, so
    // the column reads stay in cache).
    const TILE: usize = 32;
    let o = out.as_slice_mut().expect("standard layout");
    for i0 in (ROWS_PER_TASK..m).step_by(TILE) {
        let last = (i0 + TILE).min(m) - 1;
        for j0 in (0..last - last % ROWS_PER_TASK).step_by(TILE) {
            for i in i0..(i0 + TILE).min(m) {
                let start = i - i % ROWS_PER_TASK;
                for j in j0..(j0 + TILE).min(start) {
                    o[i * m + j] = o[j * m + i];
                }
            }
        }
    }
    out
}

const _: () = assert!(ROWS_PER_TASK.is_multiple_of(W));

/// `b` (`n x d`) as `ceil(n / W)` panels, each `d x W` (row `t` of panel `p` holds
/// `b[p W + c][t]` for `c < W`), zero-padded at the end: one step of the kernel reads `W`
/// contiguous floats.
fn pack_panels(b: ArrayView2<f32>) -> Vec<f32> {
    let (n, d) = b.dim();
    let mut data = vec![0.0f32; n.div_ceil(W) * d * W];
    for (j, row) in b.axis_iter(Axis(0)).enumerate() {
        let (p, c) = (j / W, j % W);
        let panel = &mut data[p * d * W..(p + 1) * d * W];
        for (t, &v) in row.iter().enumerate() {
            panel[t * W + c] = v;
        }
    }
    data
}

/// Rows `a_rows` (`r x d`, row-major) against all `n` packed columns, into `out` (`r x n`).
/// Columns before panel `first_panel` are left as they are.
fn rows(
    family: KernelFamily,
    a_rows: &[f32],
    panels: &[f32],
    d: usize,
    n: usize,
    first_panel: usize,
    out: &mut [f32],
) {
    match family {
        // Registers: 16 for SSE2 (x86-64-v2) and 32 for NEON; 2 rows x 16 columns is 8 SSE
        // accumulators, 4 rows 16 NEON ones.
        // SAFETY: the callers pass KernelFamily::current() or a supported family, whose
        // features `is_x86_feature_detected!` confirmed (AVX-512 implies F).
        #[cfg(target_arch = "x86_64")]
        KernelFamily::Avx2 => unsafe { rows_avx2(a_rows, panels, d, n, first_panel, out) },
        #[cfg(target_arch = "x86_64")]
        KernelFamily::Avx512 => unsafe { rows_avx512(a_rows, panels, d, n, first_panel, out) },
        #[cfg(target_arch = "x86_64")]
        _ => rows_impl::<2>(a_rows, panels, d, n, first_panel, out),
        #[cfg(not(target_arch = "x86_64"))]
        _ => rows_impl::<4>(a_rows, panels, d, n, first_panel, out),
    }
}

/// 6 rows x 16 columns = 12 of the 16 `ymm` registers as accumulators. AVX2 only, no FMA: the
/// multiply and the add stay two roundings, as in [`dot`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rows_avx2(
    a_rows: &[f32],
    panels: &[f32],
    d: usize,
    n: usize,
    first_panel: usize,
    out: &mut [f32],
) {
    rows_impl::<6>(a_rows, panels, d, n, first_panel, out)
}

/// 12 rows x 16 columns = 12 of the 32 `zmm` registers as accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn rows_avx512(
    a_rows: &[f32],
    panels: &[f32],
    d: usize,
    n: usize,
    first_panel: usize,
    out: &mut [f32],
) {
    rows_impl::<12>(a_rows, panels, d, n, first_panel, out)
}

/// All rows of `a_rows` against all panels, `R` rows at a time (then one at a time for the
/// remainder), a few panels per pass so they stay in cache.
#[inline(always)]
fn rows_impl<const R: usize>(
    a_rows: &[f32],
    panels: &[f32],
    d: usize,
    n: usize,
    first_panel: usize,
    out: &mut [f32],
) {
    debug_assert!(d > 0 && n > 0);
    let r_total = a_rows.len() / d;
    debug_assert_eq!(out.len(), r_total * n);
    let n_panels = n.div_ceil(W);
    for p0 in (first_panel..n_panels).step_by(PANELS_PER_PASS) {
        let p1 = (p0 + PANELS_PER_PASS).min(n_panels);
        let mut r0 = 0;
        while r0 < r_total {
            let rows = if r_total - r0 >= R { R } else { 1 };
            for p in p0..p1 {
                let panel = &panels[p * d * W..(p + 1) * d * W];
                let j0 = p * W;
                let w = (n - j0).min(W);
                if rows == R {
                    let acc = tile::<R>(&a_rows[r0 * d..(r0 + R) * d], panel, d);
                    for (r, acc_r) in acc.iter().enumerate() {
                        out[(r0 + r) * n + j0..][..w].copy_from_slice(&acc_r[..w]);
                    }
                } else {
                    let acc = tile::<1>(&a_rows[r0 * d..(r0 + 1) * d], panel, d);
                    out[r0 * n + j0..][..w].copy_from_slice(&acc[0][..w]);
                }
            }
            r0 += rows;
        }
    }
}

/// `R` rows (`R x d`, row-major) against one panel (`d x W`): `R x W` sums, each accumulated in
/// its own lane in increasing `t`, exactly as [`dot`] does.
#[inline(always)]
fn tile<const R: usize>(a: &[f32], panel: &[f32], d: usize) -> [[f32; W]; R] {
    assert!(a.len() == R * d && panel.len() == d * W);
    let mut acc = [[0.0f32; W]; R];
    for (t, bv) in panel.chunks_exact(W).enumerate() {
        let bv: &[f32; W] = bv.try_into().expect("chunks of W");
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: r < R and t < d, and a.len() == R * d (asserted above).
            let av = unsafe { *a.get_unchecked(r * d + t) };
            for c in 0..W {
                acc_r[c] += av * bv[c];
            }
        }
    }
    acc
}

/// Unit roundoff of `f32`, `2^-24`.
const U32: f64 = f32::EPSILON as f64 / 2.0;

/// A bound on `|fl(x . y) - x . y|` over every order of evaluation of a `dim`-term `f32` dot
/// product plus one added term (a bias), as a multiple of `sum |x_t y_t| + |bias|`:
/// `gamma_(dim+1) = (dim+1) u / (1 - (dim+1) u)` with `u = 2^-24` (Higham, *Accuracy and Stability
/// of Numerical Algorithms*, 2nd ed., section 3.1: the bound holds for any summation order, with
/// or without fused multiply-adds, which only remove roundings). Underflow is covered separately
/// by [`F32_UNDERFLOW_PER_TERM`].
///
/// A BLAS product and [`dot`] may differ, but both lie within the bound of the exact value:
///
/// ```
/// use bsa_index::deterministic::{dot, f32_dot_error_bound};
/// let x: Vec<f32> = (0..384).map(|t| ((t * 37 % 101) as f32 - 50.0) / 51.0).collect();
/// let y: Vec<f32> = (0..384).map(|t| ((t * 53 % 97) as f32 - 48.0) / 49.0).collect();
/// let exact: f64 = x.iter().zip(&y).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
/// let scale: f64 = x.iter().zip(&y).map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs()).sum();
/// let bound = f32_dot_error_bound(x.len()) * scale;
/// let reversed = x.iter().rev().zip(y.iter().rev()).fold(0.0f32, |s, (&a, &b)| s + a * b);
/// for value in [dot(&x, &y), reversed] {
///     assert!((f64::from(value) - exact).abs() <= bound);
/// }
/// assert!(bound < 1e-4 * scale); // 385 roundings of 2^-24 at the most
/// ```
pub fn f32_dot_error_bound(dim: usize) -> f64 {
    let nu = (dim as f64 + 1.0) * U32;
    nu / (1.0 - nu)
}

/// The absolute error one product may add by underflowing (half the smallest subnormal `f32`,
/// rounded up to the whole of it).
pub const F32_UNDERFLOW_PER_TERM: f64 = 1.401_298_464_324_817e-45;

/// The logistic function `1 / (1 + e^-h)`, computed in `f64` with `+`, `*`, `/` only and rounded
/// once to `f32`: identical on every CPU (the C library's `exp` has CPU-specific variants).
/// Within one `f32` ulp of the exact value (tested). `NaN` gives `NaN`.
///
/// ```
/// use bsa_index::deterministic::sigmoid;
/// assert_eq!(sigmoid(0.0), 0.5);
/// assert_eq!((sigmoid(-200.0), sigmoid(200.0)), (0.0, 1.0));
/// assert!((sigmoid(2.0) + sigmoid(-2.0) - 1.0).abs() <= f32::EPSILON);
/// assert!((f64::from(sigmoid(1.0)) - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-7);
/// assert!(sigmoid(f32::NAN).is_nan());
/// ```
pub fn sigmoid(h: f32) -> f32 {
    let h = f64::from(h);
    if h.is_nan() {
        return f32::NAN;
    }
    // e^-|h| <= 1, no overflow; the two branches are the two stable forms of the logistic.
    let e = exp_nonpositive(-h.abs());
    let s = if h >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    };
    s as f32
}

/// `e^x` for `x <= 0` (or `-inf`), to about 1e-16 relative error, from basic operations only.
/// Below -110 the result (< 2e-48) rounds to 0 in `f32` anyway, so 0 is returned.
fn exp_nonpositive(x: f64) -> f64 {
    if x < -110.0 {
        return 0.0;
    }
    // x = k ln2 + r with |r| <= ln2 / 2 (Cody and Waite): ln2 split as in fdlibm, LN2_HI with
    // its low 32 bits zero, so k * LN2_HI is exact for the |k| <= 159 used here.
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    let k = (x * std::f64::consts::LOG2_E).round();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Taylor series to degree 13: the remainder at |r| = 0.35 is below 3e-18.
    let mut p = 1.0f64;
    for i in (1..=13).rev() {
        p = 1.0 + p * r / f64::from(i);
    }
    // 2^k for -159 <= k <= 0 is a normal f64, built from its bits.
    let two_k = f64::from_bits(((1023 + k as i64) as u64) << 52);
    p * two_k
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn random(n: usize, d: usize, seed: u64) -> Array2<f32> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        Array2::from_shape_simple_fn((n, d), || rng.sample::<f32, _>(StandardNormal))
    }

    /// The product through one kernel, with the same task split as `matmul_nt`.
    fn with_kernel(k: KernelFamily, a: &Array2<f32>, b: &Array2<f32>) -> Array2<f32> {
        let (m, d) = a.dim();
        let n = b.nrows();
        let panels = pack_panels(b.view());
        let mut out = Array2::<f32>::zeros((m, n));
        for (mut o, r) in out
            .axis_chunks_iter_mut(Axis(0), ROWS_PER_TASK)
            .zip(a.axis_chunks_iter(Axis(0), ROWS_PER_TASK))
        {
            rows(
                k,
                r.as_slice().unwrap(),
                &panels,
                d,
                n,
                0,
                o.as_slice_mut().unwrap(),
            );
        }
        out
    }

    fn assert_bits_eq(got: &Array2<f32>, want: &Array2<f32>, what: &str) {
        assert_eq!(got.dim(), want.dim(), "{what}");
        for ((i, j), &g) in got.indexed_iter() {
            let w = want[[i, j]];
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{what}: entry ({i}, {j}) {g} != {w}"
            );
        }
    }

    #[test]
    fn every_kernel_equals_the_scalar_dot_bit_for_bit() {
        // Shapes around the tile sizes: rows not a multiple of 2, 6, 12 or 48, columns not a
        // multiple of 16 or of a pass, odd inner dimensions (and 1).
        for (m, n, d, seed) in [
            (1, 1, 1, 1),
            (5, 17, 3, 2),
            (13, 33, 31, 3),
            (50, 70, 384, 4),
            (100, 129, 50, 5),
            (97, 16, 17, 6),
        ] {
            // Values of very different sizes make the sum order matter at every step.
            let mut a = random(m, d, seed);
            a.indexed_iter_mut()
                .for_each(|((i, t), v)| *v *= 10f32.powi(((i + 3 * t) % 7) as i32 - 3));
            let b = random(n, d, seed + 100);
            let want = Array2::from_shape_fn((m, n), |(i, j)| {
                dot(a.row(i).as_slice().unwrap(), b.row(j).as_slice().unwrap())
            });
            for k in KernelFamily::supported() {
                assert_bits_eq(
                    &with_kernel(k, &a, &b),
                    &want,
                    &format!("{k:?} {m}x{n}x{d}"),
                );
            }
            assert_bits_eq(&matmul_nt(a.view(), b.view()), &want, "matmul_nt");
        }
    }

    #[test]
    fn the_sum_order_is_visible_so_the_kernel_test_can_fail() {
        // 1 + 2^-24 + 2^-24: left to right each small term is lost (ties to even), pairwise the
        // two add up to 2^-23 and survive. A kernel summing in another order would differ.
        let tiny = 2f32.powi(-24);
        assert_eq!(dot(&[1.0, 1.0, 1.0], &[1.0, tiny, tiny]), 1.0);
        assert_ne!(1.0 + (tiny + tiny), 1.0);
        let a = Array2::from_shape_vec((1, 3), vec![1.0f32, 1.0, 1.0]).unwrap();
        let b = Array2::from_shape_vec((1, 3), vec![1.0f32, tiny, tiny]).unwrap();
        for k in KernelFamily::supported() {
            assert_eq!(with_kernel(k, &a, &b)[[0, 0]], 1.0, "{k:?}");
        }
    }

    #[test]
    fn gram_equals_the_full_product() {
        for (m, d) in [
            (1, 3),
            (47, 5),
            (48, 9),
            (49, 1),
            (200, 33),
            (300, 7),
            (97, 384),
        ] {
            let a = random(m, d, m as u64);
            let want = matmul_nt(a.view(), a.view());
            assert_bits_eq(&gram(a.view()), &want, &format!("{m} x {d}"));
        }
        assert_eq!(gram(Array2::<f32>::zeros((0, 3)).view()).dim(), (0, 0));
    }

    #[test]
    fn matmul_does_not_depend_on_the_thread_count() {
        let a = random(300, 40, 7);
        let b = random(90, 40, 8);
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| matmul_nt(a.view(), b.view()))
        };
        let one = run(1);
        for t in [2, 4] {
            assert_bits_eq(&run(t), &one, &format!("{t} threads"));
        }
    }

    #[test]
    fn empty_products() {
        let a = Array2::<f32>::zeros((3, 0));
        let b = Array2::<f32>::zeros((2, 0));
        assert_eq!(matmul_nt(a.view(), b.view()), Array2::<f32>::zeros((3, 2)));
        let e = Array2::<f32>::zeros((0, 4));
        assert_eq!(matmul_nt(e.view(), random(5, 4, 1).view()).dim(), (0, 5));
        assert_eq!(matmul_nt(random(5, 4, 1).view(), e.view()).dim(), (5, 0));
    }

    #[test]
    fn sigmoid_is_within_one_ulp_of_the_f64_logistic() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        let mut values: Vec<f32> = (0..20_000)
            .map(|_| rng.sample::<f32, _>(StandardNormal) * 8.0)
            .collect();
        values.extend([
            0.0, -0.0, 1e-30, -1e-30, 17.0, -17.0, 88.0, -88.0, -103.0, -104.5,
        ]);
        values.extend([
            -110.0,
            -1e6,
            1e6,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
        ]);
        for h in values {
            let x = f64::from(h);
            let want = if x >= 0.0 {
                1.0 / (1.0 + (-x).exp())
            } else {
                x.exp() / (1.0 + x.exp())
            };
            let got = sigmoid(h);
            let ulp = (want as f32).next_up() - (want as f32);
            assert!(
                (f64::from(got) - want).abs() <= f64::from(ulp),
                "sigmoid({h}) = {got}, want {want}"
            );
        }
        assert_eq!(sigmoid(0.0), 0.5);
        assert!(sigmoid(f32::NAN).is_nan());
    }

    #[test]
    fn exp_matches_the_library_closely() {
        for i in 0..=11_000 {
            let x = -f64::from(i) / 100.0;
            let (got, want) = (exp_nonpositive(x), x.exp());
            assert!(
                (got - want).abs() <= 4.0 * f64::EPSILON * want,
                "exp({x}) = {got:e}, want {want:e}"
            );
        }
        assert_eq!(exp_nonpositive(-200.0), 0.0);
        assert_eq!(exp_nonpositive(f64::NEG_INFINITY), 0.0);
    }
}
