//! Small bit-level helpers every layer shares: the one set-bit walk, the one prefetch hint, and
//! the one rule for when per-row counters fit in a byte.

/// Largest number of query bits whose per-row overlap counts fit in `u8` counters (a row
/// overlaps the query in at most as many bits as the query has).
pub(crate) const U8_COUNTER_MAX_BITS: u32 = u8::MAX as u32;

/// Whether the overlap counts of `query` with any code fit in `u8` counters.
#[inline]
pub(crate) fn fits_u8_counters(query: &[u64]) -> bool {
    popcount(query) <= U8_COUNTER_MAX_BITS
}

/// Number of set bits of a packed code.
#[inline]
pub(crate) fn popcount(code: &[u64]) -> u32 {
    code.iter().map(|x| x.count_ones()).sum()
}

/// Calls `f(j)` for every set bit `j < bits` of a packed code, in ascending order.
#[inline]
pub(crate) fn for_each_set_bit(code: &[u64], bits: usize, mut f: impl FnMut(usize)) {
    for (wi, &word) in code.iter().enumerate() {
        let mut x = word;
        while x != 0 {
            let j = wi * 64 + x.trailing_zeros() as usize;
            if j >= bits {
                return;
            }
            f(j);
            x &= x - 1;
        }
    }
}

/// Asks the CPU to load every cache line that `items` overlaps (a hint: it never faults and
/// has no effect on results; nothing on other architectures).
#[inline(always)]
pub(crate) fn prefetch<T>(items: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let len = std::mem::size_of_val(items);
        if len == 0 {
            return;
        }
        let p = items.as_ptr().cast::<i8>();
        let first = p.wrapping_sub(p as usize % 64);
        let lines = (p as usize % 64 + len).div_ceil(64);
        for i in 0..lines {
            // SAFETY: prefetching is only a hint: it never faults and has no visible effect,
            // for any address. The addresses are the cache lines overlapping `items`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(first.wrapping_add(64 * i)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = items;
}

/// One 64-byte cache line, 64-byte aligned: storage for data whose vector loads must not
/// straddle two lines (an allocator's large blocks start 16 bytes into a page). Cast to words or
/// floats with `bytemuck`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(64))]
pub(crate) struct Line([u64; 8]);

// SAFETY: `Line` is eight `u64`s with no padding (size 64, align 64): any bits are a value.
unsafe impl bytemuck::Zeroable for Line {}
// SAFETY: as above; `Copy` and `'static`, no padding or pointers.
unsafe impl bytemuck::Pod for Line {}

impl Line {
    /// A line of zero bits (also `0.0` as floats).
    pub(crate) const ZERO: Line = Line([0; 8]);
}

/// An unaligned 256-bit load as one instruction.
///
/// The x86-64-v2 baseline builds with Sandy Bridge's tuning, under which LLVM splits every
/// unaligned 256-bit load (`_mm256_loadu_si256`) into two 128-bit loads and a `vinserti128`:
/// right for Sandy Bridge, which has no AVX2, and three operations instead of one on every CPU
/// that runs these kernels. `vlddqu` is the same unaligned load but not a plain load to LLVM, so
/// it is emitted as it is (measured: the AVX2 counting loops had hundreds of `vinserti128`).
///
/// # Safety
/// The CPU has AVX (callers are compiled with AVX2); `p` is valid for 32 bytes of reads.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn load_ymm<T>(p: *const T) -> std::arch::x86_64::__m256i {
    // SAFETY: the caller's contract.
    unsafe { std::arch::x86_64::_mm256_lddqu_si256(p.cast()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_bits_ascending_and_cut_at_bits() {
        let code = [0b1001u64, 1 << 3 | 1 << 63];
        let mut got = Vec::new();
        for_each_set_bit(&code, 128, |j| got.push(j));
        assert_eq!(got, vec![0, 3, 67, 127]);
        got.clear();
        for_each_set_bit(&code, 100, |j| got.push(j));
        assert_eq!(got, vec![0, 3, 67]);
        assert_eq!(popcount(&code), 4);
        assert!(fits_u8_counters(&[u64::MAX; 3]));
        assert!(!fits_u8_counters(&[u64::MAX; 4]));
        prefetch::<u64>(&[]);
        prefetch(&code);
    }
}
