//! Run-time selected vector code for the trainer's elementwise loops.
//!
//! The build targets the x86-64-v2 baseline, so the compiler may only use SSE in plain code.
//! The trainer's hot loops are written once, as plain Rust over slices (`#[inline(always)]`
//! bodies), and `multiversion!` compiles each of them three times: for AVX-512, for AVX2 and
//! for the baseline. A call picks the copy for the [`Family`] the CPU (or `BSA_KERNEL`) allows.
//!
//! The copies give bit-identical results: the bodies use only exactly rounded operations
//! (`+ - * /`, `sqrt`, comparisons; never `mul_add`, and Rust never fuses a multiply and an add
//! on its own), and every sum runs over a fixed number of lanes ([`LANES`]) in a fixed order,
//! whatever the register width. So a model trained with `BSA_KERNEL=avx2` has the same bytes as
//! one trained with the AVX-512 copies (the BLAS products aside: OpenBLAS's kernels round
//! differently on different cores).

use bsa_index::KernelFamily;

use crate::config::{LossKind, Target};
use crate::error::Result;
use crate::real::{NORM_FLOOR, Real};

/// Which copy of the trainer's vector loops runs: the [`KernelFamily`] of the search kernels
/// (`BSA_KERNEL`, else the best the CPU has), narrowed to what the copies are compiled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// The x86-64-v2 baseline (SSE4.2), or plain code on other architectures.
    Portable,
    /// AVX2 and FMA (Haswell, Zen and later).
    Avx2,
    /// AVX-512 F, BW, DQ and VL (Skylake-X, Ice Lake, Zen 4 and later).
    Avx512,
}

impl Family {
    /// The name of the kernel family it runs under (`BSA_KERNEL`'s names).
    pub fn name(self) -> &'static str {
        match self {
            Family::Portable => KernelFamily::Portable.name(),
            Family::Avx2 => KernelFamily::Avx2.name(),
            Family::Avx512 => KernelFamily::Avx512.name(),
        }
    }

    /// Whether this CPU runs the family's copies.
    pub fn is_supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Family::Portable => true,
                Family::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
                Family::Avx512 => {
                    Family::Avx2.is_supported()
                        && is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512bw")
                        && is_x86_feature_detected!("avx512dq")
                        && is_x86_feature_detected!("avx512vl")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Family::Portable
        }
    }

    /// The copies for kernel family `k`: the same width when the CPU has every feature they are
    /// compiled with, else the next narrower.
    pub fn for_kernel(k: KernelFamily) -> Family {
        match k {
            KernelFamily::Avx512 if Family::Avx512.is_supported() => Family::Avx512,
            KernelFamily::Avx512 | KernelFamily::Avx2 if Family::Avx2.is_supported() => {
                Family::Avx2
            }
            _ => Family::Portable,
        }
    }

    /// The copies for [`KernelFamily::active`]: an error when `BSA_KERNEL` names an unknown
    /// family or one the CPU lacks.
    pub fn active() -> Result<Family> {
        Ok(Self::for_kernel(KernelFamily::active()?))
    }

    /// For infallible callers: [`active`](Self::active), or the best copies when `BSA_KERNEL`
    /// is invalid (the command line reports that as an error before anything runs).
    pub fn current() -> Family {
        Self::for_kernel(KernelFamily::current())
    }
}

/// Lanes of every vectorised sum: 16 `f32` fill one AVX-512 register, two AVX2 or four SSE
/// registers, and the sum is the same in all three.
pub const LANES: usize = 16;

/// Defines `fn $name(family: Family, args...) -> ret` that runs the `#[inline(always)]` function
/// `$body(args...)` compiled for `family`'s instruction set.
macro_rules! multiversion {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident $(<$($g:ident : $bound:path),+>)? ( $($arg:ident : $ty:ty),* $(,)? )
            $(-> $ret:ty)? = $body:ident;
    ) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name $(<$($g: $bound),+>)? (
            family: $crate::simd::Family, $($arg: $ty),*
        ) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx512 $(<$($g: $bound),+>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx2 $(<$($g: $bound),+>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                // `is_supported` is a few cached atomic loads: checking it on every call keeps a
                // wrongly chosen family from running instructions the CPU lacks.
                match family {
                    // SAFETY: the CPU has every feature the copy is compiled with.
                    $crate::simd::Family::Avx512 if family.is_supported() => {
                        return unsafe { avx512($($arg),*) }
                    }
                    // SAFETY: as above.
                    $crate::simd::Family::Avx2 | $crate::simd::Family::Avx512
                        if $crate::simd::Family::Avx2.is_supported() =>
                    {
                        return unsafe { avx2($($arg),*) }
                    }
                    _ => {}
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = family;
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// `e^x` for `x <= 0` in `f32` (defined with [`Real`]'s other elementwise math).
pub use crate::real::exp_nonpositive;

/// The logistic function as the trainer computes it: `1 / (1 + e^-h)` for `h >= 0` and
/// `e^h / (1 + e^h)` below (the same two stable forms as [`crate::model::sigmoid`]), with `e`
/// from [`Real::exp_nonpositive`].
#[inline(always)]
pub fn sigmoid<F: Real>(h: F) -> F {
    let e = (-h.abs()).exp_nonpositive();
    // One division for both forms: the numerator is 1 or e.
    let num = if h >= F::zero() { F::one() } else { e };
    num / (F::one() + e)
}

/// `sum a_i b_i` over [`LANES`] partial sums in a fixed order.
#[inline(always)]
pub fn dot<F: Real>(a: &[F], b: &[F]) -> F {
    lane_sum(a, b, |x, y| x * y)
}

/// `sum (a_i - b_i)^2` over [`LANES`] partial sums in a fixed order.
#[inline(always)]
pub fn squared_distance<F: Real>(a: &[F], b: &[F]) -> F {
    lane_sum(a, b, |x, y| {
        let d = x - y;
        d * d
    })
}

/// `sum term(a_i, b_i)`: element i goes to partial sum `i % LANES`, and the partial sums are
/// folded pairwise, the same order for every instruction set.
#[inline(always)]
fn lane_sum<F: Real>(a: &[F], b: &[F], term: impl Fn(F, F) -> F) -> F {
    assert_eq!(a.len(), b.len());
    let mut acc = [F::zero(); LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (at, bt) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] += term(x[l], y[l]);
        }
    }
    for (l, (x, y)) in at.iter().zip(bt).enumerate() {
        acc[l] += term(*x, *y);
    }
    fold_lanes(acc)
}

#[inline(always)]
fn fold_lanes<F: Real>(acc: [F; LANES]) -> F {
    // Pairwise, in a fixed order.
    let mut w = acc;
    let mut half = LANES / 2;
    while half > 0 {
        for l in 0..half {
            w[l] += w[l + half];
        }
        half /= 2;
    }
    w[0]
}

/// Columns of an output row block held in registers while rows are added to it: 64 `f32` are
/// 4 AVX-512, 8 AVX2 or 16 SSE registers.
const BLOCK: usize = 64;

/// A sum of table rows per output row: row `i` of the output is `base + sum of table[r]` over
/// the table rows `r in ids[offsets[i]..offsets[i + 1]]`, added in that order (`offsets` holds
/// one more entry than the output has rows; the rows of `table` are `width` wide, as the
/// output's).
///
/// ```
/// use bsa::simd::{gather_sum_rows_body, Gather};
/// // A table of three rows of width 2; output row 0 sums table rows 0 and 2, row 1 row 1.
/// let table = [1.0f32, 2.0, 10.0, 20.0, 100.0, 200.0];
/// let g = Gather {
///     base: Some(&[0.5f32, 0.5][..]),
///     offsets: &[0, 2, 3],
///     ids: &[0, 2, 1],
///     table: &table,
///     width: 2,
/// };
/// let mut out = [0.0f32; 4];
/// gather_sum_rows_body(g, &mut out);
/// assert_eq!(out, [101.5, 202.5, 10.5, 20.5]);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Gather<'a, F> {
    /// Added first to every output row, else zeros.
    pub base: Option<&'a [F]>,
    /// Where each output row's ids start in `ids`, and where the last ends.
    pub offsets: &'a [usize],
    /// Table row ids, output row by output row.
    pub ids: &'a [u32],
    /// The rows, `width` floats each.
    pub table: &'a [F],
    /// Floats per row of the table and of the output.
    pub width: usize,
}

/// Computes the output rows of `g` into `out`.
///
/// Each block of `BLOCK` columns stays in registers while a row's table rows are added, so they
/// are only read and `out` is written once. The column blocks are the outer loop: the block of
/// every table row (256 KiB for 1,024 rows of `f32`) then stays in the core's L2 cache while all
/// the output rows gather from it, where a row-by-row loop would stream the whole table (1.5 MiB
/// at 1,024 x 384) from L3 for every row. The order of the sums is the same either way.
#[inline(always)]
pub fn gather_sum_rows_body<F: Real>(g: Gather<'_, F>, out: &mut [F]) {
    debug_assert_eq!(out.len(), (g.offsets.len() - 1) * g.width);
    for start in (0..g.width).step_by(BLOCK) {
        let end = (start + BLOCK).min(g.width);
        gather_sum_block(g, start..end, out);
    }
}

/// Columns `cols` (at most [`BLOCK`]) of [`gather_sum_rows_body`].
#[inline(always)]
fn gather_sum_block<F: Real>(g: Gather<'_, F>, cols: std::ops::Range<usize>, out: &mut [F]) {
    let (start, end) = (cols.start, cols.end);
    for (row, o) in out.chunks_exact_mut(g.width).enumerate() {
        let rows = &g.ids[g.offsets[row]..g.offsets[row + 1]];
        let o = &mut o[start..end];
        if end - start == BLOCK {
            let mut acc = [F::zero(); BLOCK];
            if let Some(b) = g.base {
                acc.copy_from_slice(&b[start..end]);
            }
            for &r in rows {
                let src = &g.table[r as usize * g.width + start..][..BLOCK];
                for l in 0..BLOCK {
                    acc[l] += src[l];
                }
            }
            o.copy_from_slice(&acc);
        } else {
            match g.base {
                Some(b) => o.copy_from_slice(&b[start..end]),
                None => o.fill(F::zero()),
            }
            for &r in rows {
                let src = &g.table[r as usize * g.width + start..][..end - start];
                for (a, &v) in o.iter_mut().zip(src) {
                    *a += v;
                }
            }
        }
    }
}

multiversion! {
    /// [`gather_sum_rows_body`] for `family`, as the compiler vectorises it.
    fn gather_sum_rows_generic<F: Real>(g: Gather<'_, F>, out: &mut [F]) = gather_sum_rows_body;
}

/// [`gather_sum_rows_body`] for `family`: for `f32` on x86-64 with AVX2 or AVX-512, the
/// hand-written kernels of [`gather_f32`] (same sums in the same order, so the same bits),
/// else the compiled body.
pub(crate) fn gather_sum_rows<F: Real>(family: Family, g: Gather<'_, F>, out: &mut [F]) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(table), Some(o)) = (F::as_f32(g.table), F::as_f32_mut(out)) {
        let g32 = Gather {
            base: g
                .base
                .map(|b| F::as_f32(b).expect("base and table have one type")),
            offsets: g.offsets,
            ids: g.ids,
            table,
            width: g.width,
        };
        if gather_f32::run(family, g32, o) {
            return;
        }
    }
    gather_sum_rows_generic(family, g, out)
}

/// The gathers of `f32` rows with AVX2 and AVX-512 intrinsics: each table row's block is
/// prefetched a few rows ahead, and AVX2's loads are single instructions.
///
/// Why not the compiled body: the rows are scattered (the set bits of a code), so the hardware
/// prefetcher cannot follow them, but their ids are known ahead; and under the x86-64-v2
/// baseline's tuning LLVM splits each unaligned 256-bit load into two 128-bit loads and a
/// `vinsertf128` (see `bsa_index`'s `bits::load_ymm`). Measured on the trainer's decode shape
/// (1,024 rows of 384 gathering 200 of 1,024 table rows each, one thread, Zen 5): AVX2 6.5-7.8
/// -> 4.3-4.6 ms, AVX-512 5.0-5.5 -> 4.5 ms.
#[cfg(target_arch = "x86_64")]
mod gather_f32 {
    use super::{BLOCK, Family, Gather, gather_sum_block};
    use std::arch::x86_64::*;

    /// Table rows ahead of the one being added whose block is prefetched (4 and 8 measured
    /// alike; none is 1.1-1.3x slower).
    const AHEAD: usize = 4;

    /// Runs the kernel for `family` and returns true, or returns false when there is none
    /// (the portable family, or a CPU without the features).
    pub(super) fn run(family: Family, g: Gather<'_, f32>, out: &mut [f32]) -> bool {
        match family {
            // SAFETY: the CPU has every feature the kernel is compiled with.
            Family::Avx512 if family.is_supported() => unsafe { avx512(g, out) },
            // SAFETY: as above.
            Family::Avx2 | Family::Avx512 if Family::Avx2.is_supported() => unsafe { avx2(g, out) },
            _ => return false,
        }
        true
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(g: Gather<'_, f32>, out: &mut [f32]) {
        // SAFETY (loads and stores): each pointer is into a slice of `BLOCK` floats, at 8 l for
        // l < 8. `vlddqu` rather than `vmovups`: see the module's doc.
        let load = |p: *const f32| unsafe { _mm256_castsi256_ps(_mm256_lddqu_si256(p.cast())) };
        let store = |p: *mut f32, v| unsafe { _mm256_storeu_ps(p, v) };
        let add = |a, b| _mm256_add_ps(a, b);
        unsafe { blocks::<__m256, 8>(g, out, _mm256_setzero_ps(), load, add, store) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    unsafe fn avx512(g: Gather<'_, f32>, out: &mut [f32]) {
        // SAFETY (loads and stores): each pointer is into a slice of `BLOCK` floats, at 16 l
        // for l < 4.
        let load = |p: *const f32| unsafe { _mm512_loadu_ps(p) };
        let store = |p: *mut f32, v| unsafe { _mm512_storeu_ps(p, v) };
        let add = |a, b| _mm512_add_ps(a, b);
        unsafe { blocks::<__m512, 4>(g, out, _mm512_setzero_ps(), load, add, store) }
    }

    /// The loop of both kernels, `R` registers of `BLOCK / R` lanes per block of columns
    /// (inlined into each, so compiled with its features); the last, narrower block (when
    /// `width` is not a multiple of `BLOCK`) by the compiled body.
    ///
    /// # Safety
    /// The CPU has the features `load`, `add` and `store` use.
    #[inline(always)]
    unsafe fn blocks<V: Copy, const R: usize>(
        g: Gather<'_, f32>,
        out: &mut [f32],
        zero: V,
        load: impl Fn(*const f32) -> V,
        add: impl Fn(V, V) -> V,
        store: impl Fn(*mut f32, V),
    ) {
        let Gather {
            base,
            offsets,
            ids,
            table,
            width,
        } = g;
        debug_assert_eq!(out.len(), (offsets.len() - 1) * width);
        let lanes = BLOCK / R;
        let full = width - width % BLOCK;
        for start in (0..full).step_by(BLOCK) {
            for (row, o) in out.chunks_exact_mut(width).enumerate() {
                let rows = &ids[offsets[row]..offsets[row + 1]];
                let mut acc = [zero; R];
                if let Some(b) = base {
                    let b = &b[start..start + BLOCK];
                    for (l, a) in acc.iter_mut().enumerate() {
                        *a = load(b[l * lanes..].as_ptr());
                    }
                }
                for (i, &r) in rows.iter().enumerate() {
                    if let Some(&next) = rows.get(i + AHEAD) {
                        let p = table[next as usize * width + start..][..BLOCK].as_ptr();
                        for line in 0..BLOCK * 4 / 64 {
                            // SAFETY: a prefetch never faults; the address is in `table`.
                            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(line * 16).cast()) };
                        }
                    }
                    let src = &table[r as usize * width + start..][..BLOCK];
                    for (l, a) in acc.iter_mut().enumerate() {
                        *a = add(*a, load(src[l * lanes..].as_ptr()));
                    }
                }
                let o = &mut o[start..start + BLOCK];
                for (l, a) in acc.iter().enumerate() {
                    store(o[l * lanes..].as_mut_ptr(), *a);
                }
            }
        }
        if full < width {
            gather_sum_block(g, full..width, out);
        }
    }
}

/// Adds `be` to each row of the pre-activations `h` (rows of `be.len()`), writes the code of
/// each row into `codes` when given (BSA: the bits with `H > 0`; TopK: the K largest `H`), and
/// turns `h` into `S = sigmoid(H)` in place.
#[inline(always)]
fn encode_rows_body<F: Real>(
    h: &mut [F],
    be: &[F],
    topk: Option<usize>,
    codes: Option<&mut [Vec<u32>]>,
    keys: &mut Vec<u64>,
) {
    let n = be.len();
    let mut codes = codes.map(|c| c.iter_mut());
    for row in h.chunks_exact_mut(n) {
        for (v, &b) in row.iter_mut().zip(be) {
            *v += b;
        }
        if let Some(code) = codes.as_mut().and_then(|c| c.next()) {
            match topk {
                Some(k) => crate::real::top_k_into(row, k, keys, code),
                None => {
                    // A mask of 64 comparisons at a time (one vector compare per register),
                    // then only the set bits are visited.
                    code.clear();
                    for (c, chunk) in row.chunks(64).enumerate() {
                        let mut mask = 0u64;
                        for (l, &v) in chunk.iter().enumerate() {
                            mask |= u64::from(v > F::zero()) << l;
                        }
                        while mask != 0 {
                            code.push((c * 64) as u32 + mask.trailing_zeros());
                            mask &= mask - 1;
                        }
                    }
                }
            }
        }
        for v in row.iter_mut() {
            *v = sigmoid(*v);
        }
    }
}

multiversion! {
    /// [`encode_rows_body`] for `family`.
    pub(crate) fn encode_rows<F: Real>(
        h: &mut [F],
        be: &[F],
        topk: Option<usize>,
        codes: Option<&mut [Vec<u32>]>,
        keys: &mut Vec<u64>,
    ) = encode_rows_body;
}

/// One row's distance `d(u, v)` and what its gradient needs.
#[derive(Debug, Clone, Copy)]
pub struct RowDistance<F> {
    /// `1 - cos(u, v)` or `mean (u - v)^2`.
    pub loss: F,
    nu: F,
    nv: F,
    cos: F,
}

impl<F: Real> RowDistance<F> {
    /// A placeholder, overwritten before it is read.
    pub fn zero() -> Self {
        RowDistance {
            loss: F::zero(),
            nu: F::zero(),
            nv: F::zero(),
            cos: F::zero(),
        }
    }
}

/// `d(u, v)` of one row pair (cosine or MSE, as [`crate::loss::distance_rows`] defines them).
#[inline(always)]
pub fn row_distance<F: Real>(kind: LossKind, u: &[F], v: &[F]) -> RowDistance<F> {
    match kind {
        LossKind::Cosine => {
            let floor = F::from(NORM_FLOOR).unwrap();
            let nu = dot(u, u).sqrt().max(floor);
            let nv = dot(v, v).sqrt().max(floor);
            let cos = dot(u, v) / (nu * nv);
            RowDistance {
                loss: F::one() - cos,
                nu,
                nv,
                cos,
            }
        }
        LossKind::Mse => RowDistance {
            loss: squared_distance(u, v) / F::from(u.len()).unwrap(),
            nu: F::zero(),
            nv: F::zero(),
            cos: F::zero(),
        },
    }
}

/// Writes `d mean_rows d(u, v) / d u` for one row into `g`, `batch` rows in the mean:
/// cosine `-(v / |v| - cos u / |u|) / (B |u|)`, MSE `2 (u - v) / (B D)` (method.md).
#[inline(always)]
pub fn row_distance_grad<F: Real>(
    kind: LossKind,
    d: &RowDistance<F>,
    u: &[F],
    v: &[F],
    batch: F,
    g: &mut [F],
) {
    match kind {
        LossKind::Cosine => {
            let (nu, nv, cos) = (d.nu, d.nv, d.cos);
            for ((g, &a), &c) in g.iter_mut().zip(u).zip(v) {
                *g = -(c / nv - cos * a / nu) / (batch * nu);
            }
        }
        LossKind::Mse => {
            let two = F::one() + F::one();
            let cols = F::from(u.len()).unwrap();
            for ((g, &a), &c) in g.iter_mut().zip(u).zip(v) {
                *g = two * (a - c) / (batch * cols);
            }
        }
    }
}

/// Row by row over `u` and `v` (rows of `width`): each row's distance into `losses` and, when
/// `grad` is given, its gradient row (`batch` rows in the mean).
#[inline(always)]
fn distance_rows_body<F: Real>(
    kind: LossKind,
    u: &[F],
    v: &[F],
    width: usize,
    batch: F,
    losses: &mut [F],
    grad: Option<&mut [F]>,
) {
    let rows = u.chunks_exact(width).zip(v.chunks_exact(width));
    match grad {
        None => {
            for ((ui, vi), l) in rows.zip(losses) {
                *l = row_distance(kind, ui, vi).loss;
            }
        }
        Some(g) => {
            for (((ui, vi), l), gi) in rows.zip(losses).zip(g.chunks_exact_mut(width)) {
                let d = row_distance(kind, ui, vi);
                *l = d.loss;
                row_distance_grad(kind, &d, ui, vi, batch, gi);
            }
        }
    }
}

multiversion! {
    /// [`distance_rows_body`] for `family`.
    pub(crate) fn distance_rows_chunk<F: Real>(
        kind: LossKind,
        u: &[F],
        v: &[F],
        width: usize,
        batch: F,
        losses: &mut [F],
        grad: Option<&mut [F]>,
    ) = distance_rows_body;
}

/// Writes the TopK target row of `s` into `t`: 1 (k-hot) or `s` (masked) at the indices `top`,
/// 0 elsewhere.
#[inline(always)]
pub fn target_row<F: Real>(s: &[F], top: &[u32], target: Target, t: &mut [F]) {
    t.fill(F::zero());
    for &j in top {
        let j = j as usize;
        t[j] = match target {
            Target::Khot => F::one(),
            Target::Masked => s[j],
        };
    }
}

/// The alignment term of rows of `S` (rows of `width`): each row's K largest entries into
/// `top` (K per row, ascending) and its distance to its target into `dist`.
#[inline(always)]
fn align_rows_body<F: Real>(
    s: &[F],
    width: usize,
    k: usize,
    target: Target,
    kind: LossKind,
    top: &mut [u32],
    dist: &mut [RowDistance<F>],
) {
    let mut keys = Vec::with_capacity(width);
    let mut idx = Vec::with_capacity(k);
    let mut t = vec![F::zero(); width];
    for ((si, topi), di) in s.chunks_exact(width).zip(top.chunks_exact_mut(k)).zip(dist) {
        crate::real::top_k_into(si, k, &mut keys, &mut idx);
        topi.copy_from_slice(&idx);
        target_row(si, topi, target, &mut t);
        *di = row_distance(kind, si, &t);
    }
}

multiversion! {
    /// [`align_rows_body`] for `family`.
    pub(crate) fn align_rows<F: Real>(
        s: &[F],
        width: usize,
        k: usize,
        target: Target,
        kind: LossKind,
        top: &mut [u32],
        dist: &mut [RowDistance<F>],
    ) = align_rows_body;
}

/// What [`backward_rows`] adds to `G_C` before the sigmoid's derivative.
pub(crate) struct AlignGrad<'a, F> {
    /// `alpha`.
    pub weight: F,
    /// Rows in the batch mean.
    pub batch: F,
    pub target: Target,
    pub kind: LossKind,
    /// TopK indices per row.
    pub k: usize,
    /// K indices per row, this chunk's rows.
    pub top: &'a [u32],
    /// Per row, this chunk's rows.
    pub dist: &'a [RowDistance<F>],
}

/// In place over rows of `g` (rows of `s.len() / rows`): `G_H = (G_C + alpha G_align
/// [+ w G_nb]) * S (1 - S)`, the alignment gradient rebuilt per row from its TopK indices and
/// distance (never stored as a matrix), `nb` the neighbourhood gradient of the first rows.
#[inline(always)]
fn backward_rows_body<F: Real>(
    g: &mut [F],
    s: &[F],
    width: usize,
    align: Option<&AlignGrad<'_, F>>,
    nb: Option<(F, &[F])>,
) {
    let mut t = vec![F::zero(); if align.is_some() { width } else { 0 }];
    let mut g_al = t.clone();
    for (i, (gi, si)) in g
        .chunks_exact_mut(width)
        .zip(s.chunks_exact(width))
        .enumerate()
    {
        if let Some(a) = align {
            target_row(si, &a.top[i * a.k..][..a.k], a.target, &mut t);
            row_distance_grad(a.kind, &a.dist[i], si, &t, a.batch, &mut g_al);
            for (g, &v) in gi.iter_mut().zip(&g_al) {
                *g += a.weight * v;
            }
        }
        if let Some((w, rows)) = nb
            && let Some(r) = rows.get(i * width..(i + 1) * width)
        {
            for (g, &v) in gi.iter_mut().zip(r) {
                *g += w * v;
            }
        }
        for (g, &sv) in gi.iter_mut().zip(si) {
            *g = *g * sv * (F::one() - sv);
        }
    }
}

multiversion! {
    /// [`backward_rows_body`] for `family`.
    pub(crate) fn backward_rows<F: Real>(
        g: &mut [F],
        s: &[F],
        width: usize,
        align: Option<&AlignGrad<'_, F>>,
        nb: Option<(F, &[F])>,
    ) = backward_rows_body;
}

/// `out[c] = sum over rows r of m[r][c]` for the columns `out` covers, starting at column
/// `first` of rows of `width`, rows added in order (so the result does not depend on how the
/// columns are split between threads).
#[inline(always)]
fn column_sums_body<F: Real>(m: &[F], width: usize, first: usize, out: &mut [F]) {
    out.fill(F::zero());
    let cols = out.len();
    for row in m.chunks_exact(width) {
        for (o, &v) in out.iter_mut().zip(&row[first..first + cols]) {
            *o += v;
        }
    }
}

multiversion! {
    /// [`column_sums_body`] for `family`.
    pub(crate) fn column_sums_chunk<F: Real>(
        m: &[F],
        width: usize,
        first: usize,
        out: &mut [F],
    ) = column_sums_body;
}

/// Column sums of a row-major matrix, in parallel over blocks of columns.
pub(crate) fn column_sums<F: Real>(family: Family, m: &[F], width: usize, out: &mut [F]) {
    use rayon::prelude::*;
    out.par_chunks_mut(256).enumerate().for_each(|(c, o)| {
        column_sums_chunk(family, m, width, c * 256, o);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// Every family the CPU runs, slowest first.
    fn families() -> Vec<Family> {
        [Family::Portable, Family::Avx2, Family::Avx512]
            .into_iter()
            .filter(|f| f.is_supported())
            .collect()
    }

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_and_keeps_the_edges() {
        let mut x = 0.0f32;
        while x > -110.0 {
            let want = (x as f64).exp() as f32;
            let got = exp_nonpositive(x);
            assert!(ulps(got, want) <= 2, "exp({x}) = {got}, want {want}");
            x -= 0.0137;
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-200.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert!(exp_nonpositive(f32::NAN).is_nan());
        // The trainer's sigmoid against the exact one.
        for h in [
            -90.0f32, -20.0, -3.5, -1e-3, 0.0, 1e-7, 0.7, 16.0, 17.5, 90.0,
        ] {
            let exact = 1.0 / (1.0 + (-(h as f64)).exp());
            assert!(ulps(sigmoid(h), exact as f32) <= 3, "sigmoid({h})");
        }
        assert!(sigmoid(f32::NAN).is_nan());
    }

    /// The copies of every loop give the same bits (what makes a model independent of the
    /// kernel family).
    #[test]
    fn every_family_gives_the_same_bits() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        // d: two whole column blocks of the gathers and a narrower one.
        let (rows, n, d, k) = (7, 300, 2 * BLOCK + 6, 9);
        let h: Vec<f32> = (0..rows * n).map(|_| rng.random_range(-4.0..4.0)).collect();
        let be: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let u: Vec<f32> = (0..rows * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let v: Vec<f32> = (0..rows * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let table: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let run = |f: Family| {
            let mut s = h.clone();
            let mut codes = vec![Vec::new(); rows];
            encode_rows(f, &mut s, &be, None, Some(&mut codes), &mut Vec::new());
            let mut topk = vec![Vec::new(); rows];
            encode_rows(
                f,
                &mut h.clone(),
                &be,
                Some(k),
                Some(&mut topk),
                &mut Vec::new(),
            );
            let mut top = vec![0u32; rows * k];
            let mut dist = vec![RowDistance::zero(); rows];
            align_rows(
                f,
                &s,
                n,
                k,
                Target::Khot,
                LossKind::Cosine,
                &mut top,
                &mut dist,
            );
            let mut g = vec![0.5f32; rows * n];
            let al = AlignGrad {
                weight: 1.0,
                batch: rows as f32,
                target: Target::Khot,
                kind: LossKind::Cosine,
                k,
                top: &top,
                dist: &dist,
            };
            backward_rows(f, &mut g, &s, n, Some(&al), None);
            let mut losses = vec![0.0f32; rows];
            let mut gx = vec![0.0f32; rows * d];
            for kind in [LossKind::Cosine, LossKind::Mse] {
                distance_rows_chunk(f, kind, &u, &v, d, 3.0, &mut losses, Some(&mut gx));
            }
            let offsets: Vec<usize> = std::iter::once(0)
                .chain(codes.iter().scan(0, |end, c| {
                    *end += c.len();
                    Some(*end)
                }))
                .collect();
            let ids = codes.concat();
            let mut out = vec![0.0f32; rows * d];
            let gather = Gather {
                base: Some(&v[..d]),
                offsets: &offsets,
                ids: &ids,
                table: &table,
                width: d,
            };
            gather_sum_rows(f, gather, &mut out);
            let mut sums_of_rows = vec![0.0f32; rows * d];
            gather_sum_rows(
                f,
                Gather {
                    base: None,
                    ..gather
                },
                &mut sums_of_rows,
            );
            out.extend(sums_of_rows);
            let mut sums = vec![0.0f32; n];
            column_sums(f, &g, n, &mut sums);
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            (
                bits(&s),
                codes,
                topk,
                top,
                bits(&g),
                bits(&losses),
                bits(&gx),
                bits(&out),
                bits(&sums),
            )
        };
        let want = run(Family::Portable);
        for f in families() {
            assert!(run(f) == want, "{f:?} differs from the portable copy");
        }
    }
}
