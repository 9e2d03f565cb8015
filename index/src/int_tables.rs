//! Per-query ADC tables from exact 8-bit integer products: the candidate tables of a rescored
//! search.
//!
//! The decoder-ADC table of a query `q` has one entry per bit, `u_j = q . Wd[:, j]`
//! ([`crate::model::Weights::adc_tables`]). At `N = 4096` bits and `D = 384` dimensions that
//! is 1.5 M multiply-adds per query, and in `f32` with a fixed summation order
//! ([`crate::deterministic`]) it costs about as much as the graph walk it feeds. When the
//! candidates are re-ranked by exact cosine afterwards (`--rescore`), the table only has to
//! *pick* them, and a coarse table picks the same ones. On WordNet (pursuit N = 4096, K = 32,
//! 400 queries, flat scan; a numpy model of this module), the top 40 by these tables are the
//! exact table's top 40 in 99.2% of places, raw recall@10 is 0.7905 against 0.7910 and recall@10
//! after rescoring the 40 is the same, 0.9945.
//!
//! The query is rounded to 7-bit integers (`-63..=63`, its own scale) and the decoder to 8-bit
//! ones (`-127..=127`, one scale for the matrix, once per model). Every entry is then the
//! **exact** integer sum `sum_t qi_t wi_tj`, so it does not depend on the order of summation:
//! the AMX, AVX-512 (VNNI or not), AVX2 and portable kernels return the same integers whatever
//! the CPU or thread count. `vpdpbusd` adds 64 byte products per instruction, about seven times
//! the rate of the `f32` kernel on an AMD Zen 4 core. Where the CPU has AMX-INT8 and Linux grants
//! the tile state, `tdpbusd` adds 16 x 16 x 64 at once (written with `asm!`: Rust's AMX
//! intrinsics and feature detection are not stable): on an Intel Xeon the tables of a rescored
//! graph search took 8% of its CPU instead of 13.5% with VNNI. The query is fed to the byte kernels unsigned,
//! `qi + 64` (`0..=127`, so that `vpmaddubsw`'s pair sums, at most `2 * 127 * 127`, never
//! saturate), and `64 sum_t wi_tj` is subtracted back. An entry is reported as
//! `sum as f32 * (1 / (s_q s_w))` (the sum is below `2^24` in magnitude up to `D = 2097`, so its
//! conversion is exact there; beyond, it rounds the same way everywhere).

use crate::KernelFamily;
use ndarray::{ArrayView2, Axis};
use rayon::prelude::*;

/// Atoms per packed panel: one `zmm` of `i32` sums (two `ymm`).
const W: usize = 16;

/// Dimensions per step: the four bytes each `i32` lane of `vpdpbusd` sums.
const STEP: usize = 4;

/// Bytes of one panel step: `W` atoms x `STEP` dimensions.
const STEP_BYTES: usize = W * STEP;

/// Queries per parallel task.
const ROWS_PER_TASK: usize = 48;

/// The query's integer range, `-Q..=Q`, and the offset that makes it unsigned.
const Q: i32 = 63;
const Q_OFFSET: i32 = 64;

/// The decoder's integer range, `-WL..=WL`.
const WL: i32 = 127;

/// `a` rounded to integers in `-level..=level` with the scale `level / max |a|` (1 if `a` is all
/// zeros): `(values, scale)`, `values[t] = round(a[t] * scale)` (ties to even). In `f64`: for a
/// query whose largest entry is below `level / f32::MAX` (about 1e-37) the scale overflowed
/// `f32`, every entry became +-level and every table entry 0.
fn quantise(a: &[f32], level: i32) -> (Vec<i8>, f64) {
    let max = a.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
    let scale = if max > 0.0 {
        f64::from(level) / f64::from(max)
    } else {
        1.0
    };
    let level = f64::from(level);
    // |v * scale| <= level up to one rounding of the product, which the clamp absorbs.
    let q = a
        .iter()
        .map(|&v| {
            (f64::from(v) * scale)
                .round_ties_even()
                .clamp(-level, level) as i8
        })
        .collect();
    (q, scale)
}

/// A decoder `Wd^T` (`N x D`, one row per bit) rounded to 8-bit integers and packed for the
/// table kernels: made once per model, used for every query batch.
///
/// The integer tables pick the candidates the exact `f32` tables pick:
///
/// ```
/// use bsa_index::int_tables::IntDecoder;
/// use bsa_index::topk::largest_f32;
/// let (bits, dim) = (64, 24);
/// let wd_t = ndarray::Array2::from_shape_fn((bits, dim), |(j, t)| ((j * 7 + t * 13) % 17) as f32 - 8.0);
/// let q = ndarray::Array2::from_shape_fn((1, dim), |(_, t)| ((t * 5) % 11) as f32 / 10.0 - 0.5);
/// let dec = IntDecoder::new(wd_t.view());
/// assert_eq!(dec.bits(), bits);
/// let coarse = dec.tables(q.view());
/// let q0 = q.row(0).to_vec();
/// let exact: Vec<f32> = wd_t.rows().into_iter().map(|r| bsa_index::deterministic::dot(&r.to_vec(), &q0)).collect();
/// assert_eq!(largest_f32(&coarse, 5), largest_f32(&exact, 5));
/// ```
#[derive(Clone, Debug)]
pub struct IntDecoder {
    /// `ceil(N / W)` panels of `ceil(D / 4)` steps, each `W` atoms x 4 dimensions
    /// (`[a0 t..t+4, a1 t..t+4, ...]`, the operand order of `vpdpbusd`).
    panels: Vec<i8>,
    /// `Q_OFFSET * sum_t wi_tj` per atom: what the unsigned query adds.
    offset_sums: Vec<i32>,
    scale: f64,
    bits: usize,
    dim: usize,
}

impl IntDecoder {
    /// Rounds `wd_t` (`N x D`) to 8-bit integers.
    ///
    /// ```
    /// use bsa_index::int_tables::IntDecoder;
    /// let wd_t = ndarray::array![[1.0f32, 0.0], [0.5, -1.0], [0.0, 0.25]];
    /// let dec = IntDecoder::new(wd_t.view());
    /// let q = ndarray::array![[1.0f32, 2.0]];
    /// let t = dec.tables(q.view());
    /// // q . row j is 1.0, -1.5, 0.5; the 8-bit rounding is within 1% of them here.
    /// for (got, want) in t.iter().zip([1.0f32, -1.5, 0.5]) {
    ///     assert!((got - want).abs() < 0.02, "{got} vs {want}");
    /// }
    /// ```
    pub fn new(wd_t: ArrayView2<f32>) -> IntDecoder {
        let (bits, dim) = wd_t.dim();
        let wd_t = wd_t.as_standard_layout();
        let flat = wd_t.as_slice().expect("standard layout");
        let (wi, scale) = quantise(flat, WL);
        let steps = dim.div_ceil(STEP);
        let mut panels = vec![0i8; bits.div_ceil(W) * steps * STEP_BYTES];
        let mut offset_sums = vec![0i32; bits];
        for (j, row) in wi.chunks_exact(dim.max(1)).enumerate().take(bits) {
            let (p, c) = (j / W, j % W);
            let panel = &mut panels[p * steps * STEP_BYTES..(p + 1) * steps * STEP_BYTES];
            for (t, &v) in row.iter().enumerate() {
                panel[(t / STEP) * STEP_BYTES + STEP * c + t % STEP] = v;
            }
            offset_sums[j] = Q_OFFSET * row.iter().map(|&v| i32::from(v)).sum::<i32>();
        }
        IntDecoder {
            panels,
            offset_sums,
            scale,
            bits,
            dim,
        }
    }

    /// Bits (table entries per query).
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// Each query of `q_rows` rounded and made unsigned, four dimensions per `i32` (the broadcast
    /// operand of the kernels), and `1 / (s_q s_w)`.
    fn query_quads(&self, q_rows: ArrayView2<f32>, divisors: &[f64]) -> (Vec<i32>, Vec<f32>) {
        let steps = self.dim.div_ceil(STEP);
        // Padding dimensions hold the offset alone, against zero decoder bytes.
        let pad = i32::from_le_bytes([Q_OFFSET as u8; 4]);
        let mut quads = vec![pad; q_rows.nrows() * steps];
        let mut inv = Vec::with_capacity(q_rows.nrows());
        for (r, (row, out)) in q_rows
            .rows()
            .into_iter()
            .zip(quads.chunks_exact_mut(steps.max(1)))
            .enumerate()
        {
            let row = row.as_standard_layout();
            let (qi, s_q) = quantise(row.as_slice().expect("standard layout"), Q);
            for (quad, chunk) in out.iter_mut().zip(qi.chunks(STEP)) {
                let mut b = [Q_OFFSET as u8; 4];
                for (b, &v) in b.iter_mut().zip(chunk) {
                    *b = (i32::from(v) + Q_OFFSET) as u8;
                }
                *quad = i32::from_le_bytes(b);
            }
            inv.push(match divisors.get(r) {
                Some(&d) => (1.0 / (s_q * self.scale * d)) as f32,
                None => (1.0 / (s_q * self.scale)) as f32,
            });
        }
        (quads, inv)
    }

    /// The tables of queries `q` (`nq x D`), row-major `nq x N`: entry `(i, j)` is the exact
    /// integer dot product of the rounded query and decoder row, times `1 / (s_q s_w)` in `f32`, the
    /// same bits on every CPU and thread count.
    ///
    /// # Panics
    /// If `q` does not have `D` columns.
    ///
    /// Inputs that the rounding keeps as they are (decoder entries in `-127..=127` times one
    /// scale, query entries in `-63..=63` times another) give the exact products; and a query's
    /// entries do not depend on the batch it came in:
    ///
    /// ```
    /// use bsa_index::int_tables::IntDecoder;
    /// let wd_t = ndarray::array![[127.0f32, -127.0, 5.0], [64.0, 0.0, -1.0]]; // N = 2, D = 3
    /// let dec = IntDecoder::new(wd_t.view());
    /// let q = ndarray::array![[63.0f32, -21.0, 0.0], [0.0, 0.0, 0.5]];
    /// let t = dec.tables(q.view()); // 2 queries x 2 entries
    /// assert_eq!(t[..2], [63.0 * 127.0 + 21.0 * 127.0, 63.0 * 64.0]);
    /// assert_eq!(t[2..], dec.tables(q.slice(ndarray::s![1..2, ..]))[..]);
    /// ```
    pub fn tables(&self, q: ArrayView2<f32>) -> Vec<f32> {
        self.tables_divided(q, &[])
    }

    /// [`IntDecoder::tables`] with query `i`'s entries also divided by `divisors[i]` (queries
    /// past its end by 1), in the one factor that scales its integer sums: `1 / (s_q s_w d)`,
    /// rounded once to `f32`. A search divides by the query's length so ([`per_unit_query`]
    /// after the fact takes a second rounding and a pass over the tables).
    ///
    /// [`per_unit_query`]: crate::model::per_unit_query
    ///
    /// ```
    /// use bsa_index::int_tables::IntDecoder;
    /// let dec = IntDecoder::new(ndarray::array![[127.0f32, -127.0], [64.0, 0.0]].view());
    /// let q = ndarray::array![[63.0f32, -21.0], [0.0, 0.5]];
    /// let t = dec.tables_divided(q.view(), &[2.0]); // the second query is not divided
    /// assert_eq!(t[..2], [(63.0 * 127.0 + 21.0 * 127.0) / 2.0, 63.0 * 64.0 / 2.0]);
    /// assert_eq!(t[2..], dec.tables(q.slice(ndarray::s![1..2, ..]))[..]);
    /// ```
    pub fn tables_divided(&self, q: ArrayView2<f32>, divisors: &[f64]) -> Vec<f32> {
        assert_eq!(
            q.ncols(),
            self.dim,
            "IntDecoder::tables: wrong query dimension"
        );
        let n = self.bits;
        // Zeroed in parallel: one thread's memset of 32 MB (2000 queries of 4096 atoms) was 2%
        // of a rescored graph search.
        let mut out = Vec::new();
        out.par_extend(rayon::iter::repeat_n(0.0f32, q.nrows() * n));
        if out.is_empty() || self.dim == 0 {
            return out;
        }
        let family = KernelFamily::current();
        out.par_chunks_mut(ROWS_PER_TASK * n)
            .zip(q.axis_chunks_iter(Axis(0), ROWS_PER_TASK).into_par_iter())
            .enumerate()
            .for_each(|(task, (out_rows, q_rows))| {
                let first = (task * ROWS_PER_TASK).min(divisors.len());
                let (quads, inv) = self.query_quads(q_rows, &divisors[first..]);
                let mut emit = |r: usize, j0: usize, sums: &[i32]| {
                    let o = &mut out_rows[r * n + j0..][..sums.len()];
                    let inv = inv[r];
                    for ((o, &s), &off) in o.iter_mut().zip(sums).zip(&self.offset_sums[j0..]) {
                        *o = (s - off) as f32 * inv;
                    }
                };
                let steps = self.dim.div_ceil(STEP);
                int_rows(family, &quads, &self.panels, steps, n, &mut emit);
            });
        out
    }
}

/// Receives one query's sums for the atoms of one panel: `(query, first atom, sums)`. Generic,
/// not `dyn`: called once per 16 sums, it is inlined into each kernel and compiled with its
/// features (as a `dyn` call it was 3% of a rescored graph search).
trait Emit: FnMut(usize, usize, &[i32]) {}
impl<F: FnMut(usize, usize, &[i32])> Emit for F {}

/// The integer kernels (all but the portable one x86-64 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum Kernel {
    Amx,
    Vnni,
    Avx512,
    Avx2,
    Portable,
}

/// The kernel for queries of `steps` steps under `family`: AMX where the CPU and the OS offer it
/// ([`x86::amx_ready`]) and the dimension fills whole tiles, else `vpdpbusd` where the CPU has
/// VNNI, else the family's own. Every one gives the same exact sums.
fn kernel(family: KernelFamily, steps: usize) -> Kernel {
    let _ = steps; // (elsewhere than x86-64 every family is portable)
    match family {
        #[cfg(target_arch = "x86_64")]
        KernelFamily::Avx512 if std::arch::is_x86_feature_detected!("avx512vnni") => {
            if x86::rows_amx_fit(steps) && x86::amx_ready() {
                Kernel::Amx
            } else {
                Kernel::Vnni
            }
        }
        #[cfg(target_arch = "x86_64")]
        KernelFamily::Avx512 => Kernel::Avx512,
        #[cfg(target_arch = "x86_64")]
        KernelFamily::Avx2 => Kernel::Avx2,
        _ => Kernel::Portable,
    }
}

/// The kernel that makes the integer tables of `dim`-dimensional queries on this CPU under
/// [`KernelFamily::current`]: `"amx"`, `"avx512-vnni"`, `"avx512"`, `"avx2"` or `"portable"`
/// (`bsa search --stats` reports it as `adc_tables_kernel`).
///
/// ```
/// let name = bsa_index::int_tables::kernel_name(384);
/// assert!(["amx", "avx512-vnni", "avx512", "avx2", "portable"].contains(&name));
/// // AMX takes whole tiles of 64 dimensions only.
/// assert_ne!(bsa_index::int_tables::kernel_name(385), "amx");
/// ```
pub fn kernel_name(dim: usize) -> &'static str {
    match kernel(KernelFamily::current(), dim.div_ceil(STEP)) {
        Kernel::Amx => "amx",
        Kernel::Vnni => "avx512-vnni",
        Kernel::Avx512 => "avx512",
        Kernel::Avx2 => "avx2",
        Kernel::Portable => "portable",
    }
}

/// Unsigned query quads (`r x steps`) against every panel: the exact sums
/// `sum_t qu_t wi_tj`, handed to `emit` a panel at a time.
fn int_rows(
    family: KernelFamily,
    quads: &[i32],
    panels: &[i8],
    steps: usize,
    n: usize,
    emit: &mut impl Emit,
) {
    // SAFETY (the four x86 kernels): `kernel` names one whose features the CPU has
    // (KernelFamily::current() or the tests name a supported family, detected by
    // is_x86_feature_detected!, AVX-512 implying F and BW; VNNI is detected there, and AMX by
    // amx_ready with rows_amx_fit).
    match kernel(family, steps) {
        #[cfg(target_arch = "x86_64")]
        Kernel::Amx => unsafe { x86::rows_amx(quads, panels, steps, n, emit) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Vnni => unsafe { x86::rows_vnni(quads, panels, steps, n, emit) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe { x86::rows_avx512(quads, panels, steps, n, emit) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { x86::rows_avx2(quads, panels, steps, n, emit) },
        _ => rows_portable(quads, panels, steps, n, emit),
    }
}

/// The reference: plain `i32` arithmetic (exact, so any order gives these sums).
fn rows_portable(quads: &[i32], panels: &[i8], steps: usize, n: usize, emit: &mut impl Emit) {
    let r_total = quads.len() / steps;
    for (p, panel) in panels.chunks_exact(steps * STEP_BYTES).enumerate() {
        let j0 = p * W;
        let w = (n - j0).min(W);
        for r in 0..r_total {
            let mut acc = [0i32; W];
            for (&quad, step) in quads[r * steps..(r + 1) * steps]
                .iter()
                .zip(panel.chunks_exact(STEP_BYTES))
            {
                let qu = quad.to_le_bytes().map(i32::from);
                for (c, a) in acc.iter_mut().enumerate() {
                    let w = &step[STEP * c..STEP * (c + 1)];
                    *a += (0..STEP).map(|k| qu[k] * i32::from(w[k])).sum::<i32>();
                }
            }
            emit(r, j0, &acc[..w]);
        }
    }
}

/// Tiles of `R` queries x `P` panels over all rows and panels: `tile` computes one tile's sums
/// over every step, and the edges use the `(1, P)`, `(R, 1)` and `(1, 1)` tiles.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn drive<const R: usize, const P: usize>(
    quads: &[i32],
    panels: &[i8],
    steps: usize,
    n: usize,
    emit: &mut impl Emit,
    tile: impl Fn([&[i32]; R], [&[i8]; P]) -> [[[i32; W]; P]; R],
    tile_1p: impl Fn([&[i32]; 1], [&[i8]; P]) -> [[[i32; W]; P]; 1],
    tile_r1: impl Fn([&[i32]; R], [&[i8]; 1]) -> [[[i32; W]; 1]; R],
    tile_11: impl Fn([&[i32]; 1], [&[i8]; 1]) -> [[[i32; W]; 1]; 1],
) {
    let r_total = quads.len() / steps;
    let row = |r: usize| &quads[r * steps..(r + 1) * steps];
    let panel_len = steps * STEP_BYTES;
    let n_panels = panels.len() / panel_len;
    let panel = |p: usize| &panels[p * panel_len..(p + 1) * panel_len];
    let mut out = |r: usize, p: usize, acc: &[i32; W]| {
        let j0 = p * W;
        emit(r, j0, &acc[..(n - j0).min(W)]);
    };
    let mut p0 = 0;
    while p0 < n_panels {
        let whole = p0 + P <= n_panels;
        let mut r0 = 0;
        while r0 < r_total {
            let rows = if r0 + R <= r_total { R } else { 1 };
            match (rows == R, whole) {
                (true, true) => {
                    let acc = tile(
                        std::array::from_fn(|i| row(r0 + i)),
                        std::array::from_fn(|k| panel(p0 + k)),
                    );
                    for (i, a) in acc.iter().enumerate() {
                        for (k, a) in a.iter().enumerate() {
                            out(r0 + i, p0 + k, a);
                        }
                    }
                }
                (false, true) => {
                    let acc = tile_1p([row(r0)], std::array::from_fn(|k| panel(p0 + k)));
                    for (k, a) in acc[0].iter().enumerate() {
                        out(r0, p0 + k, a);
                    }
                }
                (true, false) => {
                    let acc = tile_r1(std::array::from_fn(|i| row(r0 + i)), [panel(p0)]);
                    for (i, a) in acc.iter().enumerate() {
                        out(r0 + i, p0, &a[0]);
                    }
                }
                (false, false) => out(r0, p0, &tile_11([row(r0)], [panel(p0)])[0][0]),
            }
            r0 += rows;
        }
        p0 += if whole { P } else { 1 };
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Emit, STEP_BYTES, W, drive};
    use std::arch::asm;
    use std::arch::x86_64::*;

    /// Checks a tile's slices: every query has `steps` quads, every panel `steps` steps.
    #[inline(always)]
    fn check<const R: usize, const P: usize>(q: &[&[i32]; R], w: &[&[i8]; P]) -> usize {
        let steps = q[0].len();
        assert!(q.iter().all(|q| q.len() == steps));
        assert!(w.iter().all(|w| w.len() == steps * STEP_BYTES));
        steps
    }

    /// One tile of `R` queries x `P` panels on `zmm` registers, over every step: `dot4(acc, q, w)`
    /// adds the four byte products of each lane (VNNI's `vpdpbusd`, or its three-instruction
    /// equivalent). Inlined into the callers below, which enable the features.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BW (and whatever `dot4` uses).
    #[inline(always)]
    unsafe fn tile512<const R: usize, const P: usize>(
        q: [&[i32]; R],
        w: [&[i8]; P],
        dot4: impl Fn(__m512i, __m512i, __m512i) -> __m512i,
    ) -> [[[i32; W]; P]; R] {
        let steps = check(&q, &w);
        // SAFETY (every block): the features are the caller's promise; t < steps, and every
        // slice's length is checked above; each output array holds W = 16 i32.
        let mut acc = [[unsafe { _mm512_setzero_si512() }; P]; R];
        for t in 0..steps {
            // (Plain loops, not closures: closures here were left out of line.)
            let mut wv = acc[0];
            for (v, w) in wv.iter_mut().zip(&w) {
                *v = unsafe { _mm512_loadu_si512(w.as_ptr().add(t * STEP_BYTES).cast()) };
            }
            for (acc_r, q_r) in acc.iter_mut().zip(&q) {
                let qv = unsafe { _mm512_set1_epi32(*q_r.get_unchecked(t)) };
                for (a, &wv) in acc_r.iter_mut().zip(&wv) {
                    *a = dot4(*a, qv, wv);
                }
            }
        }
        let mut out = [[[0i32; W]; P]; R];
        for (o, a) in out.iter_mut().zip(&acc) {
            for (o, &v) in o.iter_mut().zip(a) {
                unsafe { _mm512_storeu_si512(o.as_mut_ptr().cast(), v) };
            }
        }
        out
    }

    /// One tile by `vpdpbusd` ([`tile512`]).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn tile_vnni<const R: usize, const P: usize>(
        q: [&[i32]; R],
        w: [&[i8]; P],
    ) -> [[[i32; W]; P]; R] {
        // SAFETY: this function's features.
        unsafe { tile512(q, w, |a, q, w| _mm512_dpbusd_epi32(a, q, w)) }
    }

    /// 4 queries x 4 panels: 16 `zmm` accumulators, 4 panel registers, one broadcast;
    /// unsigned query bytes times signed decoder bytes, four per lane, by `vpdpbusd`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn rows_vnni(
        quads: &[i32],
        panels: &[i8],
        steps: usize,
        n: usize,
        emit: &mut impl Emit,
    ) {
        drive::<4, 4>(
            quads,
            panels,
            steps,
            n,
            emit,
            |q, w| tile_vnni(q, w),
            |q, w| tile_vnni(q, w),
            |q, w| tile_vnni(q, w),
            |q, w| tile_vnni(q, w),
        );
    }

    /// Steps (4 dimensions each) per AMX tile: a tile row holds 64 bytes.
    const AMX_STEPS: usize = 16;

    /// Whether [`rows_amx`] takes queries of `steps` steps: whole tiles of 64 dimensions.
    pub(super) fn rows_amx_fit(steps: usize) -> bool {
        steps > 0 && steps.is_multiple_of(AMX_STEPS)
    }

    /// Whether AMX-INT8 can run here: the CPU has AMX-TILE and AMX-INT8 (CPUID leaf 7), and
    /// Linux gave this process the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`, which
    /// fails where the kernel does not save it). Asked once per process. (Rust's
    /// `is_x86_feature_detected!` does not yet answer for AMX on stable.)
    pub(super) fn amx_ready() -> bool {
        static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *READY.get_or_init(|| {
            let leaf7 = __cpuid_count(7, 0);
            let (tile, int8) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 25) != 0);
            #[cfg(target_os = "linux")]
            {
                const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
                const XFEATURE_XTILEDATA: libc::c_long = 18;
                // SAFETY: a request for a permission; it reads and writes no memory of ours.
                tile && int8
                    && unsafe {
                        libc::syscall(
                            libc::SYS_arch_prctl,
                            ARCH_REQ_XCOMP_PERM,
                            XFEATURE_XTILEDATA,
                        )
                    } == 0
            }
            #[cfg(not(target_os = "linux"))]
            {
                let _ = (tile, int8);
                false
            }
        })
    }

    /// The tile configuration of [`rows_amx`]: palette 1; tiles 0-3 the sums of 16 queries x
    /// 16 atoms (`i32`), tile 4 the 16 queries' bytes of 16 steps, tiles 5 and 6 a panel's 16
    /// steps of 16 atoms; every tile 16 rows of 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    static AMX_CONFIG: TileConfig = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 7 {
            c[16 + 2 * t] = 64; // bytes per row (u16, little-endian)
            c[48 + t] = 16; // rows
            t += 1;
        }
        TileConfig(c)
    };

    /// 16 queries x 4 panels on AMX: `tdpbusd` adds, for 16 queries and 16 atoms at once, the
    /// products of 16 steps (64 unsigned query bytes and 64 signed decoder bytes); the edges
    /// (fewer than 16 queries or 4 panels left) by `vpdpbusd`. The exact `i32` sums of
    /// [`rows_vnni`], 6-8x as many products per instruction.
    ///
    /// # Safety
    /// [`amx_ready`], [`rows_amx_fit`]`(steps)`, and AVX-512 F, BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn rows_amx(
        quads: &[i32],
        panels: &[i8],
        steps: usize,
        n: usize,
        emit: &mut impl Emit,
    ) {
        assert!(rows_amx_fit(steps));
        // SAFETY: AMX is ready (the caller's promise); the configuration is 64 aligned bytes.
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) AMX_CONFIG.0.as_ptr(), options(nostack, readonly))
        };
        drive::<16, 4>(
            quads,
            panels,
            steps,
            n,
            emit,
            |q, w| {
                // SAFETY: the tiles are configured above; rows_amx_fit(steps).
                unsafe { tile_amx(q, w) }
            },
            |q, w| tile_vnni(q, w),
            |q, w| tile_vnni(q, w),
            |q, w| tile_vnni(q, w),
        );
        // SAFETY: gives the tile state back (the next user configures its own).
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    /// One tile of 16 queries x 4 panels on AMX.
    ///
    /// # Safety
    /// [`AMX_CONFIG`] is loaded, and the queries' steps are whole tiles ([`rows_amx_fit`]).
    #[inline(always)]
    unsafe fn tile_amx(q: [&[i32]; 16], w: [&[i8]; 4]) -> [[[i32; W]; 4]; 16] {
        let steps = check(&q, &w);
        // The 16 queries are consecutive rows of one array (drive's), read as one tile of
        // stride `steps * 4` bytes.
        let stride = steps * 4;
        for (i, r) in q.iter().enumerate() {
            assert_eq!(r.as_ptr(), q[0].as_ptr().wrapping_add(i * steps));
        }
        let mut out = [[[0i32; W]; 4]; 16];
        let (a0, b) = (q[0].as_ptr().cast::<u8>(), w.map(|w| w.as_ptr()));
        // SAFETY (every block): the configuration is loaded (the caller's promise). Tile 4
        // reads 16 rows of 64 bytes at `a0 + 64 c + stride * row`: within the 16 queries'
        // `steps * 4` bytes each, as c < steps / 16. Tiles 5 and 6 read 1024 bytes of a panel
        // at `64 * 16 c`, within its `steps * 64`. The stores write 16 rows of 64 bytes,
        // `out[row][k]`, 256 bytes apart.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            for c in 0..steps / AMX_STEPS {
                let (a, off) = (a0.add(64 * c), 64 * AMX_STEPS * c);
                asm!(
                    "tileloadd tmm4, [{a} + {sa}*1]",
                    "tileloadd tmm5, [{b0} + {s64}*1]",
                    "tdpbusd tmm0, tmm4, tmm5",
                    "tileloadd tmm6, [{b1} + {s64}*1]",
                    "tdpbusd tmm1, tmm4, tmm6",
                    "tileloadd tmm5, [{b2} + {s64}*1]",
                    "tdpbusd tmm2, tmm4, tmm5",
                    "tileloadd tmm6, [{b3} + {s64}*1]",
                    "tdpbusd tmm3, tmm4, tmm6",
                    a = in(reg) a,
                    sa = in(reg) stride,
                    b0 = in(reg) b[0].add(off),
                    b1 = in(reg) b[1].add(off),
                    b2 = in(reg) b[2].add(off),
                    b3 = in(reg) b[3].add(off),
                    s64 = in(reg) 64usize,
                    options(nostack, readonly)
                );
            }
            let o = out.as_mut_ptr().cast::<[i32; W]>();
            asm!(
                "tilestored [{o0} + {s}*1], tmm0",
                "tilestored [{o1} + {s}*1], tmm1",
                "tilestored [{o2} + {s}*1], tmm2",
                "tilestored [{o3} + {s}*1], tmm3",
                o0 = in(reg) o,
                o1 = in(reg) o.add(1),
                o2 = in(reg) o.add(2),
                o3 = in(reg) o.add(3),
                s = in(reg) 4 * W * 4,
                options(nostack)
            );
        }
        out
    }

    /// AVX-512 without VNNI: `vpmaddubsw` (pair sums in `i16`, which the query's 7-bit range
    /// keeps from saturating), `vpmaddwd` by ones, `vpaddd`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn rows_avx512(
        quads: &[i32],
        panels: &[i8],
        steps: usize,
        n: usize,
        emit: &mut impl Emit,
    ) {
        #[target_feature(enable = "avx512f,avx512bw")]
        fn tile<const R: usize, const P: usize>(
            q: [&[i32]; R],
            w: [&[i8]; P],
        ) -> [[[i32; W]; P]; R] {
            let ones = _mm512_set1_epi16(1);
            let dot4 =
                |a, q, w| _mm512_add_epi32(a, _mm512_madd_epi16(_mm512_maddubs_epi16(q, w), ones));
            // SAFETY: this function's features.
            unsafe { tile512(q, w, dot4) }
        }
        drive::<4, 4>(
            quads,
            panels,
            steps,
            n,
            emit,
            |q, w| tile(q, w),
            |q, w| tile(q, w),
            |q, w| tile(q, w),
            |q, w| tile(q, w),
        );
    }

    /// 2 queries x 2 panels: 8 `ymm` accumulators (a panel is two), 4 panel registers;
    /// `vpmaddubsw`, `vpmaddwd` by ones, `vpaddd`.
    #[target_feature(enable = "avx2")]
    pub(super) fn rows_avx2(
        quads: &[i32],
        panels: &[i8],
        steps: usize,
        n: usize,
        emit: &mut impl Emit,
    ) {
        #[target_feature(enable = "avx2")]
        fn tile<const R: usize, const P: usize>(
            q: [&[i32]; R],
            w: [&[i8]; P],
        ) -> [[[i32; W]; P]; R] {
            let steps = check(&q, &w);
            let ones = _mm256_set1_epi16(1);
            let mut acc = [[[_mm256_setzero_si256(); 2]; P]; R];
            for t in 0..steps {
                // SAFETY: t < steps, and every slice's length is checked above.
                let mut wv = [[_mm256_setzero_si256(); 2]; P];
                for (v, w) in wv.iter_mut().zip(&w) {
                    let p = w.as_ptr().wrapping_add(t * STEP_BYTES);
                    *v = unsafe {
                        [
                            _mm256_loadu_si256(p.cast()),
                            _mm256_loadu_si256(p.add(32).cast()),
                        ]
                    };
                }
                for (acc_r, q_r) in acc.iter_mut().zip(&q) {
                    let qv = _mm256_set1_epi32(unsafe { *q_r.get_unchecked(t) });
                    for (a, wv) in acc_r.iter_mut().zip(&wv) {
                        for h in 0..2 {
                            let pairs = _mm256_maddubs_epi16(qv, wv[h]);
                            a[h] = _mm256_add_epi32(a[h], _mm256_madd_epi16(pairs, ones));
                        }
                    }
                }
            }
            let mut out = [[[0i32; W]; P]; R];
            for (o, a) in out.iter_mut().zip(&acc) {
                for (o, v) in o.iter_mut().zip(a) {
                    // SAFETY: o holds W = 16 i32, two ymm.
                    unsafe {
                        _mm256_storeu_si256(o.as_mut_ptr().cast(), v[0]);
                        _mm256_storeu_si256(o.as_mut_ptr().add(8).cast(), v[1]);
                    }
                }
            }
            out
        }
        drive::<2, 2>(
            quads,
            panels,
            steps,
            n,
            emit,
            |q, w| tile(q, w),
            |q, w| tile(q, w),
            |q, w| tile(q, w),
            |q, w| tile(q, w),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn random(n: usize, d: usize, seed: u64) -> Array2<f32> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        Array2::from_shape_simple_fn((n, d), || rng.sample::<f32, _>(StandardNormal))
    }

    /// The signed sums `sum_t qi_t wi_tj` through one kernel family, for every query.
    fn sums_with(family: KernelFamily, dec: &IntDecoder, q: &Array2<f32>) -> Vec<i32> {
        let (quads, _) = dec.query_quads(q.view(), &[]);
        let n = dec.bits;
        let mut sums = vec![i32::MIN; q.nrows() * n];
        let mut emit = |r: usize, j0: usize, s: &[i32]| {
            for (c, &v) in s.iter().enumerate() {
                sums[r * n + j0 + c] = v - dec.offset_sums[j0 + c];
            }
        };
        int_rows(
            family,
            &quads,
            &dec.panels,
            dec.dim.div_ceil(STEP),
            n,
            &mut emit,
        );
        sums
    }

    #[test]
    fn every_kernel_family_gives_the_exact_integer_sums() {
        // Dimensions not a multiple of 4 (padded steps), atoms not a multiple of 16, queries
        // not a multiple of any tile, and extreme values (operands at +-level, the query at
        // -63 and +63, the unsigned bytes at 1 and 127, the pair sums at their largest).
        // AMX takes whole tiles of 64 dimensions and 16 queries x 64 atoms (the rest by
        // VNNI): (40, 100, 384) and (48, 256, 128) have both, (35, 64, 448) seven tiles deep.
        // Their peaks are twice the data's, not 100 times, so that the other entries do not
        // round to 0 and every tile's sums are tested.
        let shapes = [
            (29, 37, 7, 1e3),
            (13, 16, 384, 1e3),
            (50, 100, 385, 1e3),
            (6, 70, 1, 1e3),
            (40, 100, 384, 8.0),
            (48, 256, 128, 8.0),
            (35, 64, 448, 8.0),
        ];
        for &(nq, n, d, peak) in &shapes {
            let mut wd = random(n, d, 1);
            wd[[0, 0]] = peak;
            wd[[1, d - 1]] = -peak;
            let mut q = random(nq, d, 2);
            q[[0, 0]] = -peak / 20.0;
            q[[nq - 1, d - 1]] = peak / 20.0;
            let dec = IntDecoder::new(wd.view());
            // The reference: i64 sums of the rounded operands, unpacked the plain way.
            let (wi, _) = quantise(wd.as_slice().unwrap(), WL);
            let mut want = vec![0i32; nq * n];
            for i in 0..nq {
                let (qi, _) = quantise(&q.row(i).to_vec(), Q);
                for j in 0..n {
                    let s: i64 = (0..d)
                        .map(|t| i64::from(qi[t]) * i64::from(wi[j * d + t]))
                        .sum();
                    want[i * n + j] = i32::try_from(s).unwrap();
                }
            }
            for family in KernelFamily::supported() {
                assert_eq!(
                    sums_with(family, &dec, &q),
                    want,
                    "{family} at {nq}x{n}x{d}"
                );
            }
            #[cfg(target_arch = "x86_64")]
            if KernelFamily::Avx512.is_supported() {
                // The AVX-512 path without VNNI, which CPUs with VNNI never take on their own.
                let (quads, _) = dec.query_quads(q.view(), &[]);
                let mut got = vec![0i32; nq * n];
                let mut emit = |r: usize, j0: usize, s: &[i32]| {
                    for (c, &v) in s.iter().enumerate() {
                        got[r * n + j0 + c] = v - dec.offset_sums[j0 + c];
                    }
                };
                // SAFETY: AVX-512 (F and BW) is supported, checked above.
                unsafe { x86::rows_avx512(&quads, &dec.panels, d.div_ceil(STEP), n, &mut emit) };
                assert_eq!(got, want, "avx512 without vnni at {nq}x{n}x{d}");
                // VNNI and AMX each, where the CPU has them (the family takes AMX when it can).
                let steps = d.div_ceil(STEP);
                let vnni = std::arch::is_x86_feature_detected!("avx512vnni");
                let amx = vnni && x86::amx_ready() && x86::rows_amx_fit(steps);
                for (name, run) in [("vnni", vnni), ("amx", amx)] {
                    if !run {
                        continue;
                    }
                    let mut got = vec![0i32; nq * n];
                    let mut emit = |r: usize, j0: usize, s: &[i32]| {
                        for (c, &v) in s.iter().enumerate() {
                            got[r * n + j0 + c] = v - dec.offset_sums[j0 + c];
                        }
                    };
                    // SAFETY: AVX-512 F, BW and VNNI are supported, and for AMX amx_ready and
                    // rows_amx_fit hold, checked above.
                    unsafe {
                        match name {
                            "vnni" => x86::rows_vnni(&quads, &dec.panels, steps, n, &mut emit),
                            _ => x86::rows_amx(&quads, &dec.panels, steps, n, &mut emit),
                        }
                    }
                    assert_eq!(got, want, "{name} at {nq}x{n}x{d}");
                }
            }
        }
    }

    /// A query scaled by a power of two gives the same per-unit tables, bit for bit, down to
    /// entries near `f32`'s smallest normal (the query's scale once overflowed `f32` there, and
    /// every table entry came out 0) and up to entries near its largest.
    #[test]
    fn divided_tables_do_not_depend_on_the_query_scale() {
        let dec = IntDecoder::new(random(40, 24, 5).view());
        // Entries with a short mantissa, so that scaling them by 2^-124 or 2^124 is exact.
        let q = Array2::from_shape_fn((3, 24), |(i, t)| ((i * 7 + t * 5) % 17) as f32 / 16.0 - 0.5);
        let length = |q: &Array2<f32>| -> Vec<f64> {
            q.rows()
                .into_iter()
                .map(|r| r.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt())
                .collect()
        };
        let want = dec.tables_divided(q.view(), &length(&q));
        assert!(want.iter().all(|x| x.is_finite()) && want.iter().any(|&x| x != 0.0));
        for e in [-124, 124] {
            let f = crate::score::pow2(e);
            let scaled = q.mapv(|x| (f64::from(x) * f) as f32);
            assert_eq!(
                dec.tables_divided(scaled.view(), &length(&scaled)),
                want,
                "query times 2^{e}"
            );
        }
    }

    #[test]
    fn tables_are_close_to_the_float_products_and_thread_independent() {
        let wd = random(300, 96, 3);
        let q = random(70, 96, 4);
        let dec = IntDecoder::new(wd.view());
        let t = dec.tables(q.view());
        // Each operand is off by at most half a step (max |a| / (2 level)), so an entry is off
        // by at most sum_t |q_t| e_w + |w_t| e_q + e_q e_w (plus f32 rounding, far smaller).
        let max_abs = |a: &[f32]| a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let e_w = max_abs(wd.as_slice().unwrap()) / (2.0 * WL as f32);
        for i in 0..70 {
            let qr = q.row(i).to_vec();
            let e_q = max_abs(&qr) / (2.0 * Q as f32);
            for j in 0..300 {
                let wr = wd.row(j);
                let exact: f64 = (0..96).map(|t| f64::from(qr[t]) * f64::from(wr[t])).sum();
                let bound: f64 = (0..96)
                    .map(|t| f64::from(qr[t].abs() * e_w + wr[t].abs() * e_q + e_q * e_w))
                    .sum::<f64>()
                    * 1.001;
                let got = f64::from(t[i * 300 + j]);
                assert!(
                    (got - exact).abs() <= bound,
                    "({i}, {j}): {got} vs {exact}, bound {bound}"
                );
            }
        }
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let three = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        assert_eq!(one.install(|| dec.tables(q.view())), t);
        assert_eq!(three.install(|| dec.tables(q.view())), t);
    }

    #[test]
    fn zero_queries_and_empty_inputs() {
        let wd = random(5, 4, 5);
        let dec = IntDecoder::new(wd.view());
        assert_eq!(
            dec.tables(Array2::<f32>::zeros((2, 4)).view()),
            vec![0.0; 10]
        );
        assert!(dec.tables(Array2::<f32>::zeros((0, 4)).view()).is_empty());
    }
}
