//! Bit-sliced counters: one counter per bit lane, many one-bit columns added up at once.
//!
//! A counter's value is spread over *planes*: plane `p` holds bit `p` of every lane's counter,
//! `L` words (`64 L` lanes) each. Adding a one-bit column to all counters is a few logic
//! instructions per plane, whatever the number of lanes, which is how the bitmap lists
//! ([`crate::bitmaps`]) and the code slabs ([`crate::slabs`]) count a query's overlap with 256 or
//! 512 codes per instruction. Columns are added sixteen at a time through a Harley-Seal
//! carry-save tree (fifteen adders into planes 0 to 3, one carry rippling into the planes
//! above), the rest one by one.
//!
//! The functions are `#[inline(always)]` portable loops over `[u64; L]`: each caller compiles
//! them inside its own `#[target_feature]` function, where they become vector instructions.

/// Number of planes that hold counts up to `m`.
pub(crate) fn planes_for(m: usize) -> usize {
    (usize::BITS - m.leading_zeros()) as usize
}

/// A register's worth of bit lanes and the logic a counter needs. `[u64; L]` is the portable
/// form (the compiler vectorises its loops); [`x86`] has the vector registers, so that a counter
/// step is one instruction (measured: the compiler's vectoriser turned word arrays into lane
/// shuffles, scalar extractions and stack copies in the hot loops).
///
/// Making a value is `unsafe` (`zero`, `ones`, `load`: the CPU must have the lanes'
/// instructions); the logic on values that exist is safe.
pub(crate) trait Lanes: Copy {
    /// `u64` words (64 lanes each) in a value.
    const WORDS: usize;
    /// Every lane clear.
    ///
    /// # Safety
    /// The CPU has the lanes' instructions.
    unsafe fn zero() -> Self;
    /// Every lane set.
    ///
    /// # Safety
    /// The CPU has the lanes' instructions.
    unsafe fn ones() -> Self;
    /// `self & o`.
    fn and(self, o: Self) -> Self;
    /// `self | o`.
    fn or(self, o: Self) -> Self;
    /// `self ^ o`.
    fn xor(self, o: Self) -> Self;
    /// `self & !o`.
    fn and_not(self, o: Self) -> Self;
    /// `self ^ b ^ c`.
    #[inline(always)]
    fn xor3(self, b: Self, c: Self) -> Self {
        self.xor(b).xor(c)
    }
    /// Each lane's majority of `self`, `b` and `c`.
    #[inline(always)]
    fn majority(self, b: Self, c: Self) -> Self {
        self.and(b).or(self.xor(b).and(c))
    }
    /// Reads `WORDS` words.
    ///
    /// # Safety
    /// `p` points to `WORDS` readable words, and the CPU has the lanes' instructions.
    unsafe fn load(p: *const u64) -> Self;
    /// Writes the value's `WORDS` words to the start of `out`.
    fn store(self, out: &mut [u64]);
}

impl<const L: usize> Lanes for [u64; L] {
    const WORDS: usize = L;
    #[inline(always)]
    unsafe fn zero() -> Self {
        [0; L]
    }
    #[inline(always)]
    unsafe fn ones() -> Self {
        [u64::MAX; L]
    }
    #[inline(always)]
    fn and(mut self, o: Self) -> Self {
        for l in 0..L {
            self[l] &= o[l];
        }
        self
    }
    #[inline(always)]
    fn or(mut self, o: Self) -> Self {
        for l in 0..L {
            self[l] |= o[l];
        }
        self
    }
    #[inline(always)]
    fn xor(mut self, o: Self) -> Self {
        for l in 0..L {
            self[l] ^= o[l];
        }
        self
    }
    #[inline(always)]
    fn and_not(mut self, o: Self) -> Self {
        for l in 0..L {
            self[l] &= !o[l];
        }
        self
    }
    #[inline(always)]
    unsafe fn load(p: *const u64) -> Self {
        // SAFETY: L readable words at `p` (the caller's contract); no alignment needed.
        unsafe { p.cast::<[u64; L]>().read_unaligned() }
    }
    #[inline(always)]
    fn store(self, out: &mut [u64]) {
        out[..L].copy_from_slice(&self);
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    //! Vector registers as [`Lanes`]: [`Ymm`] (256 lanes) and [`Ymm2`] (512) for AVX2, [`Zmm`]
    //! (512) for AVX-512, whose ternary logic makes a carry-save adder two instructions.
    //!
    //! Safety: a value is made only by the `unsafe` constructors (`zero`, `ones`, `load`),
    //! whose callers guarantee the CPU has the type's instructions; so a value's existence
    //! proves it, and the logic on values is safe. Every method is inlined into the
    //! `#[target_feature]` function that uses it.

    use super::Lanes;
    use std::arch::x86_64::*;

    /// One AVX2 register: 256 lanes.
    #[derive(Clone, Copy)]
    pub(crate) struct Ymm(__m256i);

    /// Two AVX2 registers: 512 lanes.
    #[derive(Clone, Copy)]
    pub(crate) struct Ymm2([__m256i; 2]);

    /// One AVX-512 register: 512 lanes.
    #[derive(Clone, Copy)]
    pub(crate) struct Zmm(__m512i);

    // SAFETY (every `unsafe` block below): the CPU has the type's instructions (a value exists,
    // or the caller of a constructor guarantees it; module docs), and `load`'s caller
    // guarantees `WORDS` readable words at `p`.

    impl Lanes for Ymm {
        const WORDS: usize = 4;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Ymm(unsafe { _mm256_setzero_si256() })
        }
        #[inline(always)]
        unsafe fn ones() -> Self {
            Ymm(unsafe { _mm256_set1_epi64x(-1) })
        }
        #[inline(always)]
        fn and(self, o: Self) -> Self {
            Ymm(unsafe { _mm256_and_si256(self.0, o.0) })
        }
        #[inline(always)]
        fn or(self, o: Self) -> Self {
            Ymm(unsafe { _mm256_or_si256(self.0, o.0) })
        }
        #[inline(always)]
        fn xor(self, o: Self) -> Self {
            Ymm(unsafe { _mm256_xor_si256(self.0, o.0) })
        }
        #[inline(always)]
        fn and_not(self, o: Self) -> Self {
            // `andnot(a, b)` is `!a & b`.
            Ymm(unsafe { _mm256_andnot_si256(o.0, self.0) })
        }
        #[inline(always)]
        unsafe fn load(p: *const u64) -> Self {
            Ymm(unsafe { crate::bits::load_ymm(p) })
        }
        #[inline(always)]
        fn store(self, out: &mut [u64]) {
            let out = &mut out[..4];
            unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), self.0) };
        }
    }

    impl Lanes for Ymm2 {
        const WORDS: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            let z = unsafe { Ymm::zero().0 };
            Ymm2([z, z])
        }
        #[inline(always)]
        unsafe fn ones() -> Self {
            let o = unsafe { Ymm::ones().0 };
            Ymm2([o, o])
        }
        #[inline(always)]
        fn and(self, o: Self) -> Self {
            Ymm2([
                Ymm(self.0[0]).and(Ymm(o.0[0])).0,
                Ymm(self.0[1]).and(Ymm(o.0[1])).0,
            ])
        }
        #[inline(always)]
        fn or(self, o: Self) -> Self {
            Ymm2([
                Ymm(self.0[0]).or(Ymm(o.0[0])).0,
                Ymm(self.0[1]).or(Ymm(o.0[1])).0,
            ])
        }
        #[inline(always)]
        fn xor(self, o: Self) -> Self {
            Ymm2([
                Ymm(self.0[0]).xor(Ymm(o.0[0])).0,
                Ymm(self.0[1]).xor(Ymm(o.0[1])).0,
            ])
        }
        #[inline(always)]
        fn and_not(self, o: Self) -> Self {
            Ymm2([
                Ymm(self.0[0]).and_not(Ymm(o.0[0])).0,
                Ymm(self.0[1]).and_not(Ymm(o.0[1])).0,
            ])
        }
        #[inline(always)]
        unsafe fn load(p: *const u64) -> Self {
            unsafe { Ymm2([Ymm::load(p).0, Ymm::load(p.add(4)).0]) }
        }
        #[inline(always)]
        fn store(self, out: &mut [u64]) {
            Ymm(self.0[0]).store(&mut out[..4]);
            Ymm(self.0[1]).store(&mut out[4..8]);
        }
    }

    impl Lanes for Zmm {
        const WORDS: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Zmm(unsafe { _mm512_setzero_si512() })
        }
        #[inline(always)]
        unsafe fn ones() -> Self {
            Zmm(unsafe { _mm512_set1_epi64(-1) })
        }
        #[inline(always)]
        fn and(self, o: Self) -> Self {
            Zmm(unsafe { _mm512_and_si512(self.0, o.0) })
        }
        #[inline(always)]
        fn or(self, o: Self) -> Self {
            Zmm(unsafe { _mm512_or_si512(self.0, o.0) })
        }
        #[inline(always)]
        fn xor(self, o: Self) -> Self {
            Zmm(unsafe { _mm512_xor_si512(self.0, o.0) })
        }
        #[inline(always)]
        fn and_not(self, o: Self) -> Self {
            Zmm(unsafe { _mm512_andnot_si512(o.0, self.0) })
        }
        #[inline(always)]
        fn xor3(self, b: Self, c: Self) -> Self {
            // Truth table of a ^ b ^ c.
            Zmm(unsafe { _mm512_ternarylogic_epi64::<0x96>(self.0, b.0, c.0) })
        }
        #[inline(always)]
        fn majority(self, b: Self, c: Self) -> Self {
            // Truth table of the majority of a, b, c.
            Zmm(unsafe { _mm512_ternarylogic_epi64::<0xE8>(self.0, b.0, c.0) })
        }
        #[inline(always)]
        unsafe fn load(p: *const u64) -> Self {
            Zmm(unsafe { _mm512_loadu_si512(p.cast()) })
        }
        #[inline(always)]
        fn store(self, out: &mut [u64]) {
            let out = &mut out[..8];
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), self.0) };
        }
    }
}

/// Where a count adds its columns from: `len()` columns of one bit per lane.
pub(crate) trait Columns<T: Lanes> {
    /// Whether a group's sixteen columns are loaded before they are added (fastest when the
    /// loads fold into the adders; a value wider than a register, e.g. `x86::Ymm2`, would go
    /// through the stack, so such sources load each column where it is added).
    const LOAD_AHEAD: bool = true;
    /// Number of columns.
    fn len(&self) -> usize;
    /// Column `i`.
    ///
    /// # Safety
    /// `i < self.len()` (implementations may skip their bounds checks: this is the hot loop).
    unsafe fn column(&self, i: usize) -> T;
}

/// Adds every column of `cols` to the counters `planes` (bit `p` of each lane's counter in
/// `planes[p]`), which may start at any value; the sums must stay below `2^P`. `P >= 5`.
///
/// # Safety
/// The CPU has `T`'s instructions.
///
/// Sixteen columns at a time go through a Harley-Seal tree of fifteen carry-save adders into
/// planes 0 to 3 and one carry into the planes above; then eight through seven adders, and the
/// rest ripple in one by one.
#[inline(always)]
pub(crate) unsafe fn add_columns<T: Lanes, C: Columns<T>, const P: usize>(
    planes: &mut [T; P],
    cols: &C,
) {
    const { assert!(P >= 5, "planes 0 to 3 and at least one above") };
    let m = cols.len();
    let groups = m / 16;
    for g in 0..groups {
        let [ones, twos, fours, eights, high @ ..] = planes.as_mut_slice() else {
            unreachable!("P >= 5 planes")
        };
        let i = g * 16;
        let (eights_a, eights_b) = if C::LOAD_AHEAD {
            // SAFETY: the caller's contract.
            let mut d = [unsafe { T::zero() }; 16];
            for (j, x) in d.iter_mut().enumerate() {
                // SAFETY: i + j < groups * 16 <= m = cols.len().
                *x = unsafe { cols.column(i + j) };
            }
            (
                add_eight(ones, twos, fours, |j| d[j]),
                add_eight(ones, twos, fours, |j| d[8 + j]),
            )
        } else {
            // SAFETY (each `column`): i + j < i + 16 <= groups * 16 <= m = cols.len().
            (
                add_eight(ones, twos, fours, |j| unsafe { cols.column(i + j) }),
                add_eight(ones, twos, fours, |j| unsafe { cols.column(i + 8 + j) }),
            )
        };
        let sixteens = csa(eights, eights_a, eights_b);
        ripple(high, sixteens);
    }
    let mut i = groups * 16;
    if m - i >= 8 {
        let [ones, twos, fours, high @ ..] = planes.as_mut_slice() else {
            unreachable!("P >= 5 planes")
        };
        // SAFETY: i + j < i + 8 <= m = cols.len().
        let eights = add_eight(ones, twos, fours, |j| unsafe { cols.column(i + j) });
        ripple(high, eights);
        i += 8;
    }
    for i in i..m {
        // SAFETY: i < m = cols.len().
        ripple(planes.as_mut_slice(), unsafe { cols.column(i) });
    }
}

/// Adds the eight columns `col(0..8)` to planes 0 to 2 and returns the carries into plane 3.
#[inline(always)]
fn add_eight<T: Lanes>(ones: &mut T, twos: &mut T, fours: &mut T, col: impl Fn(usize) -> T) -> T {
    let twos_a = csa(ones, col(0), col(1));
    let twos_b = csa(ones, col(2), col(3));
    let fours_a = csa(twos, twos_a, twos_b);
    let twos_a = csa(ones, col(4), col(5));
    let twos_b = csa(ones, col(6), col(7));
    let fours_b = csa(twos, twos_a, twos_b);
    csa(fours, fours_a, fours_b)
}

/// Carry-save adder: `acc + a + b` as the new `acc` (the sum bits) and the returned carries.
#[inline(always)]
pub(crate) fn csa<T: Lanes>(acc: &mut T, a: T, b: T) -> T {
    let carry = acc.majority(a, b);
    *acc = acc.xor3(a, b);
    carry
}

/// Adds the one-bit numbers `x` to the counters `planes` (carries ripple upward).
#[inline(always)]
pub(crate) fn ripple<T: Lanes>(planes: &mut [T], mut x: T) {
    for plane in planes.iter_mut() {
        let t = plane.and(x);
        *plane = plane.xor(x);
        x = t;
    }
}

/// The lanes whose counter in `planes` is at least `c`.
///
/// # Safety
/// The CPU has `T`'s instructions.
#[inline(always)]
pub(crate) unsafe fn at_least<T: Lanes>(planes: &[T], c: u64) -> T {
    // SAFETY (each constructor): the caller's contract.
    let (zero, ones) = unsafe { (T::zero(), T::ones()) };
    if c == 0 {
        return ones;
    }
    if planes.len() < 64 && c >> planes.len() != 0 {
        return zero;
    }
    let mut gt = zero;
    let mut eq = ones;
    for p in (0..planes.len()).rev() {
        if (c >> p) & 1 == 1 {
            eq = eq.and(planes[p]);
        } else {
            gt = gt.or(eq.and(planes[p]));
            eq = eq.and_not(planes[p]);
        }
    }
    gt.or(eq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Rows(Vec<[u64; 2]>);

    impl Columns<[u64; 2]> for Rows {
        fn len(&self) -> usize {
            self.0.len()
        }
        unsafe fn column(&self, i: usize) -> [u64; 2] {
            self.0[i]
        }
    }

    /// Lane `i`'s counter read back from the planes.
    fn lane(planes: &[[u64; 2]], i: usize) -> u64 {
        planes
            .iter()
            .enumerate()
            .map(|(p, x)| ((x[i / 64] >> (i % 64)) & 1) << p)
            .sum()
    }

    proptest! {
        #[test]
        fn counts_and_compares_every_lane(
            cols in proptest::collection::vec(any::<[u64; 2]>(), 0..70),
            start in proptest::collection::vec(0u64..64, 128),
            c in 0u64..200,
        ) {
            let mut planes = [[0u64; 2]; 8];
            for (i, &s) in start.iter().enumerate() {
                for (p, plane) in planes.iter_mut().enumerate() {
                    plane[i / 64] |= ((s >> p) & 1) << (i % 64);
                }
            }
            // SAFETY: word lanes need no CPU feature.
            let ge = unsafe {
                add_columns(&mut planes, &Rows(cols.clone()));
                at_least(&planes, c)
            };
            for i in 0..128 {
                let want = start[i]
                    + cols.iter().filter(|x| (x[i / 64] >> (i % 64)) & 1 == 1).count() as u64;
                prop_assert_eq!(lane(&planes, i), want);
                prop_assert_eq!((ge[i / 64] >> (i % 64)) & 1 == 1, want >= c, "lane {}", i);
            }
        }
    }

    #[test]
    fn planes_hold_their_counts() {
        assert_eq!(planes_for(0), 0);
        assert_eq!(planes_for(1), 1);
        assert_eq!(planes_for(255), 8);
        assert_eq!(planes_for(256), 9);
        // SAFETY: word lanes need no CPU feature.
        unsafe {
            assert_eq!(at_least(&[[0u64; 1]; 3], 8), [0]);
            assert_eq!(at_least(&[[0u64; 1]; 3], 0), [u64::MAX]);
        }
        assert_eq!([0b1100u64].and_not([0b0110]), [0b1000]);
    }
}
