//! Conversions between the ways binary codes are handed around and the index's packed rows.
//!
//! A *code* of `bits` bits is stored as `words_per_code = ceil(bits / 64)` little-endian `u64`
//! words: bit `j` lives in word `j / 64` at position `j % 64`, and the unused high bits of the last
//! word are zero. This is exactly numpy's `np.packbits(x, axis=1, bitorder="little")` (bit `j` in
//! byte `j / 8` at position `j % 8`) read as little-endian `u64`s, so conversion is a byte copy.

use bitvec::prelude::*;

use crate::error::{Error, Result};

/// Number of `u64` words that hold a code of `bits` bits (`ceil(bits / 64)`).
///
/// ```
/// use bsa_index::pack::{bytes_per_code, words_per_code};
/// assert_eq!(words_per_code(64), 1);
/// assert_eq!(words_per_code(65), 2);
/// assert_eq!(words_per_code(768), 12); // the sign bits of a 768-d embedding
/// assert_eq!(bytes_per_code(768), 96);
/// assert_eq!(bytes_per_code(10), 2); // numpy pads a row to whole bytes, the index to whole words
/// ```
pub const fn words_per_code(bits: usize) -> usize {
    bits.div_ceil(64)
}

/// Number of bytes numpy's `packbits` uses for a code of `bits` bits (`ceil(bits / 8)`).
pub const fn bytes_per_code(bits: usize) -> usize {
    bits.div_ceil(8)
}

fn check_bits(bits: usize) -> Result<()> {
    if bits == 0 || bits > u32::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "bits per code must be in 1..={}, got {bits}",
            u32::MAX
        )));
    }
    Ok(())
}

/// Converts `n` rows of numpy `packbits(bitorder="little")` bytes into packed `u64` rows.
///
/// `bytes` holds `n * bytes_per_code` bytes, row after row. `bytes_per_code` must be
/// `ceil(bits / 8)`. Padding bits (positions `bits..8 * bytes_per_code`) must be zero: a set
/// padding bit means the code size is wrong, so it is reported rather than dropped.
///
/// Returns `n * words_per_code(bits)` words.
///
/// ```
/// use bsa_index::pack::{pack_le_bytes, unpack_to_le_bytes};
/// let rows = [0b0000_0101u8, 0x01, 0xff, 0x00]; // two 12-bit codes, 2 bytes each
/// let words = pack_le_bytes(&rows, 2, 2, 12).unwrap();
/// assert_eq!(words, vec![0x0105, 0x00ff]);
/// assert_eq!(unpack_to_le_bytes(&words, 2, 12).unwrap(), rows);
/// ```
pub fn pack_le_bytes(
    bytes: &[u8],
    n: usize,
    bytes_per_code: usize,
    bits: usize,
) -> Result<Vec<u64>> {
    check_bits(bits)?;
    if bytes_per_code != self::bytes_per_code(bits) {
        return Err(Error::DimMismatch {
            what: format!("bytes per code for {bits}-bit codes"),
            expected: self::bytes_per_code(bits),
            got: bytes_per_code,
        });
    }
    let total = n.checked_mul(bytes_per_code).ok_or_else(|| {
        Error::InvalidArgument(format!("{n} rows x {bytes_per_code} bytes overflows"))
    })?;
    if bytes.len() != total {
        return Err(Error::DimMismatch {
            what: format!("packed code bytes ({n} rows x {bytes_per_code})"),
            expected: total,
            got: bytes.len(),
        });
    }
    let wpc = words_per_code(bits);
    let mut out = vec![0u64; n * wpc];
    let pad_mask: u8 = if bits.is_multiple_of(8) {
        0
    } else {
        !((1u8 << (bits % 8)) - 1)
    };
    for (r, (row, dst)) in bytes
        .chunks_exact(bytes_per_code.max(1))
        .zip(out.chunks_exact_mut(wpc))
        .enumerate()
    {
        if let Some(&last) = row.last()
            && last & pad_mask != 0
        {
            return Err(Error::InvalidArgument(format!(
                "row {r}: bits beyond bit {bits} are set in the last byte; \
                     the codes have more than {bits} bits"
            )));
        }
        for (w, chunk) in dst.iter_mut().zip(row.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            *w = u64::from_le_bytes(b);
        }
    }
    Ok(out)
}

/// Inverse of [`pack_le_bytes`]: packed rows of `bits`-bit codes to numpy little-bit-order bytes.
///
/// `words` holds `n` rows of `words_per_code(bits)` words each (checked: a mismatch is an
/// error, not a guess); the result is `n` rows of `bytes_per_code(bits)` bytes. Bits at or
/// above `bits` must be zero (they would be lost otherwise).
///
/// ```
/// use bsa_index::pack::{pack_le_bytes, unpack_to_le_bytes};
/// let bytes = [0b0000_0101u8, 0b1, 0xff, 0b10];
/// let words = pack_le_bytes(&bytes, 2, 2, 10)?; // two 10-bit codes of 2 bytes
/// assert_eq!(unpack_to_le_bytes(&words, 2, 10)?, bytes);
/// assert!(unpack_to_le_bytes(&words, 3, 10).is_err());
/// # Ok::<(), bsa_index::Error>(())
/// ```
pub fn unpack_to_le_bytes(words: &[u64], n: usize, bits: usize) -> Result<Vec<u8>> {
    check_bits(bits)?;
    let wpc = words_per_code(bits);
    let bpc = bytes_per_code(bits);
    let expected = n
        .checked_mul(wpc)
        .ok_or_else(|| Error::InvalidArgument(format!("{n} rows x {wpc} words overflows")))?;
    if words.len() != expected {
        return Err(Error::DimMismatch {
            what: format!("code words ({n} rows x {wpc})"),
            expected,
            got: words.len(),
        });
    }
    check_high_bits_zero(words, bits)?;
    let mut out = Vec::with_capacity(n * bpc);
    for row in words.chunks_exact(wpc) {
        let start = out.len();
        for w in row {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.truncate(start + bpc);
    }
    Ok(out)
}

/// Checks that the unused high bits of every row's last word are zero.
pub(crate) fn check_high_bits_zero(words: &[u64], bits: usize) -> Result<()> {
    let wpc = words_per_code(bits);
    if bits.is_multiple_of(64) || wpc == 0 {
        return Ok(());
    }
    let mask = !((1u64 << (bits % 64)) - 1);
    for (r, row) in words.chunks_exact(wpc).enumerate() {
        if row[wpc - 1] & mask != 0 {
            return Err(Error::InvalidArgument(format!(
                "row {r}: bits at or above bit {bits} are set; codes must have their unused high bits zero"
            )));
        }
    }
    Ok(())
}

/// Packs `n` rows of `bits` booleans each (row-major, `bools.len() == n * bits`).
///
/// ```
/// let words = bsa_index::pack::pack_bools(&[true, false, true, false, false, true], 2, 3).unwrap();
/// assert_eq!(words, vec![0b101, 0b100]);
/// ```
pub fn pack_bools(bools: &[bool], n: usize, bits: usize) -> Result<Vec<u64>> {
    check_bits(bits)?;
    let expected = n
        .checked_mul(bits)
        .ok_or_else(|| Error::InvalidArgument(format!("{n} rows x {bits} bits overflows")))?;
    if bools.len() != expected {
        return Err(Error::DimMismatch {
            what: format!("booleans ({n} rows x {bits} bits)"),
            expected,
            got: bools.len(),
        });
    }
    let wpc = words_per_code(bits);
    let mut out = vec![0u64; n * wpc];
    for (src, dst) in bools.chunks_exact(bits).zip(out.chunks_exact_mut(wpc)) {
        let dst = dst.view_bits_mut::<Lsb0>();
        for (j, &b) in src.iter().enumerate() {
            dst.set(j, b);
        }
    }
    Ok(out)
}

/// Packs rows given as lists of set-bit indices (e.g. the active units of a sparse code).
///
/// Every index must be `< bits`; repeated indices are allowed (setting a bit twice).
///
/// ```
/// let words = bsa_index::pack::pack_set_bits(&[vec![0u32, 65], vec![1]], 70).unwrap();
/// assert_eq!(words, vec![1, 2, 2, 0]);
/// ```
pub fn pack_set_bits<R: AsRef<[u32]>>(rows: &[R], bits: usize) -> Result<Vec<u64>> {
    check_bits(bits)?;
    let wpc = words_per_code(bits);
    let mut out = vec![0u64; rows.len() * wpc];
    for (r, (src, dst)) in rows.iter().zip(out.chunks_exact_mut(wpc)).enumerate() {
        let dst = dst.view_bits_mut::<Lsb0>();
        for &j in src.as_ref() {
            let j = j as usize;
            if j >= bits {
                return Err(Error::InvalidArgument(format!(
                    "row {r}: set-bit index {j} is out of range for {bits}-bit codes"
                )));
            }
            dst.set(j, true);
        }
    }
    Ok(out)
}

/// Reads bit `j` of a packed code.
///
/// # Panics
/// If `j / 64 >= code.len()`.
///
/// ```
/// use bsa_index::pack::{get_bit, pack_set_bits};
/// # fn main() -> bsa_index::Result<()> {
/// let code = pack_set_bits(&[[3u32, 64, 99]], 100)?; // one 100-bit code, two words
/// let set: Vec<usize> = (0..100).filter(|&j| get_bit(&code, j)).collect();
/// assert_eq!(set, [3, 64, 99]);
/// # Ok(()) }
/// ```
#[inline]
pub fn get_bit(code: &[u64], j: usize) -> bool {
    (code[j / 64] >> (j % 64)) & 1 == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference: numpy packbits(bitorder="little") written out bit by bit.
    fn np_packbits_little(bools: &[bool], n: usize, bits: usize) -> Vec<u8> {
        let bpc = bytes_per_code(bits);
        let mut out = vec![0u8; n * bpc];
        for r in 0..n {
            for j in 0..bits {
                if bools[r * bits + j] {
                    out[r * bpc + j / 8] |= 1 << (j % 8);
                }
            }
        }
        out
    }

    fn rows_strategy() -> impl Strategy<Value = (usize, usize, Vec<bool>)> {
        (1usize..300, 0usize..6).prop_flat_map(|(bits, n)| {
            (
                Just(bits),
                Just(n),
                proptest::collection::vec(any::<bool>(), n * bits),
            )
        })
    }

    proptest! {
        #[test]
        fn bytes_roundtrip((bits, n, bools) in rows_strategy()) {
            let bytes = np_packbits_little(&bools, n, bits);
            let words = pack_le_bytes(&bytes, n, bytes_per_code(bits), bits).unwrap();
            prop_assert_eq!(words.len(), n * words_per_code(bits));
            prop_assert_eq!(&words, &pack_bools(&bools, n, bits).unwrap());
            for r in 0..n {
                for j in 0..bits {
                    prop_assert_eq!(get_bit(&words[r * words_per_code(bits)..], j), bools[r * bits + j]);
                }
            }
            check_high_bits_zero(&words, bits).unwrap();
            prop_assert_eq!(unpack_to_le_bytes(&words, n, bits).unwrap(), bytes);
        }

        #[test]
        fn set_bits_equal_bools((bits, n, bools) in rows_strategy()) {
            let idx: Vec<Vec<u32>> = (0..n)
                .map(|r| (0..bits).filter(|&j| bools[r * bits + j]).map(|j| j as u32).collect())
                .collect();
            prop_assert_eq!(pack_set_bits(&idx, bits).unwrap(), pack_bools(&bools, n, bits).unwrap());
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(matches!(
            pack_le_bytes(&[0; 3], 1, 3, 12),
            Err(Error::DimMismatch { .. })
        ));
        assert!(matches!(
            pack_le_bytes(&[0; 3], 2, 2, 12),
            Err(Error::DimMismatch { .. })
        ));
        assert!(matches!(
            pack_le_bytes(&[0; 2], 1, 2, 0),
            Err(Error::InvalidArgument(_))
        ));
        // bit 12 set in a 12-bit code
        assert!(matches!(
            pack_le_bytes(&[0, 0x10], 1, 2, 12),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            unpack_to_le_bytes(&[1 << 12], 1, 12),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            unpack_to_le_bytes(&[1, 2], 1, 12),
            Err(Error::DimMismatch { .. })
        ));
        assert!(matches!(
            pack_set_bits(&[vec![12u32]], 12),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            pack_bools(&[true; 5], 2, 3),
            Err(Error::DimMismatch { .. })
        ));
    }
}
