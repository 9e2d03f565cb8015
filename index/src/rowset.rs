//! [`RowSet`]: a set of rows of one segment as a bitmap, the shape every filter takes by the
//! time it reaches a searcher (deleted rows, `--allow-ids`, `--deny-ids`).

use bitvec::prelude::*;

/// A set of rows `0..len` as one bit per row (bit `r % 64` of word `r / 64`, as the deletes
/// files store it).
///
/// ```
/// use bsa_index::RowSet;
/// let mut s = RowSet::empty(100);
/// s.insert(3);
/// s.insert(70);
/// assert!(s.contains(70) && !s.contains(4));
/// assert_eq!((s.count(), s.len()), (2, 100));
/// assert_eq!(s.complement().count(), 98);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RowSet {
    bits: BitVec<u64, Lsb0>,
    count: usize,
}

impl std::fmt::Debug for RowSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowSet")
            .field("len", &self.len())
            .field("count", &self.count)
            .finish()
    }
}

impl RowSet {
    /// No rows of `len`.
    ///
    /// ```
    /// let s = bsa_index::RowSet::empty(10);
    /// assert_eq!((s.len(), s.count()), (10, 0));
    /// assert!(!s.contains(3));
    /// ```
    pub fn empty(len: usize) -> RowSet {
        RowSet {
            bits: BitVec::repeat(false, len),
            count: 0,
        }
    }

    /// Every row of `len`.
    ///
    /// ```
    /// let s = bsa_index::RowSet::full(10);
    /// assert_eq!(s.count(), 10);
    /// assert!(s.contains(9) && !s.contains(10)); // nothing beyond len
    /// ```
    pub fn full(len: usize) -> RowSet {
        RowSet {
            bits: BitVec::repeat(true, len),
            count: len,
        }
    }

    /// The set whose words are `words` (bit `r % 64` of word `r / 64`) over `len` rows, or
    /// `None` if the words are not `ceil(len / 64)` or have bits set at or above `len`.
    ///
    /// ```
    /// use bsa_index::RowSet;
    /// let s = RowSet::from_words(&[0b1010, 1], 70).unwrap(); // rows 1, 3 and 64
    /// assert_eq!(s.iter().collect::<Vec<_>>(), vec![1, 3, 64]);
    /// assert!(RowSet::from_words(&[0, 1 << 6], 70).is_none()); // row 70 is past len
    /// assert!(RowSet::from_words(&[0], 70).is_none()); // 70 rows take 2 words
    /// ```
    pub fn from_words(words: &[u64], len: usize) -> Option<RowSet> {
        if words.len() != len.div_ceil(64) {
            return None;
        }
        let mut bits = BitVec::<u64, Lsb0>::from_slice(words);
        if bits[len..].any() {
            return None;
        }
        bits.truncate(len);
        let count = bits.count_ones();
        Some(RowSet { bits, count })
    }

    /// The words (bit `r % 64` of word `r / 64`; bits at or above [`len`](Self::len) zero).
    ///
    /// ```
    /// let mut s = bsa_index::RowSet::empty(70);
    /// s.insert(1);
    /// s.insert(64);
    /// assert_eq!(s.words(), &[0b10, 1]);
    /// assert_eq!(s.complement().words(), &[!0b10, 0b11_1110]); // bits past row 69 stay zero
    /// ```
    pub fn words(&self) -> &[u64] {
        self.bits.as_raw_slice()
    }

    /// Number of rows the set ranges over.
    ///
    /// ```
    /// let s = bsa_index::RowSet::empty(70);
    /// assert_eq!((s.len(), s.count()), (70, 0));
    /// ```
    pub fn len(&self) -> usize {
        self.bits.len()
    }

    /// Whether the set ranges over no rows.
    ///
    /// ```
    /// use bsa_index::RowSet;
    /// assert!(RowSet::full(0).is_empty());
    /// assert!(!RowSet::empty(5).is_empty()); // ranges over 5 rows, holds none
    /// ```
    pub fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }

    /// Number of rows in the set.
    ///
    /// ```
    /// let mut s = bsa_index::RowSet::full(5);
    /// s.remove(2);
    /// assert_eq!(s.count(), 4);
    /// ```
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether `row` is in the set (`false` beyond [`len`](Self::len)).
    ///
    /// ```
    /// let mut s = bsa_index::RowSet::empty(5);
    /// s.insert(2);
    /// assert!(s.contains(2) && !s.contains(3));
    /// assert!(!s.contains(1000));
    /// ```
    #[inline]
    pub fn contains(&self, row: usize) -> bool {
        self.bits.get(row).is_some_and(|b| *b)
    }

    /// Adds `row` (`< len`); returns whether it was new.
    ///
    /// # Panics
    /// If `row >= len`, as indexing a slice past its end does.
    ///
    /// ```
    /// let mut s = bsa_index::RowSet::empty(5);
    /// assert!(s.insert(2));
    /// assert!(!s.insert(2)); // already there
    /// assert_eq!(s.count(), 1);
    /// ```
    pub fn insert(&mut self, row: usize) -> bool {
        let new = !self.bits[row];
        if new {
            self.bits.set(row, true);
            self.count += 1;
        }
        new
    }

    /// Removes `row` (`< len`); returns whether it was there.
    ///
    /// # Panics
    /// If `row >= len`.
    ///
    /// ```
    /// let mut s = bsa_index::RowSet::full(5);
    /// assert!(s.remove(2));
    /// assert!(!s.remove(2)); // already gone
    /// assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 1, 3, 4]);
    /// ```
    pub fn remove(&mut self, row: usize) -> bool {
        let was = self.bits[row];
        if was {
            self.bits.set(row, false);
            self.count -= 1;
        }
        was
    }

    /// The rows not in the set.
    ///
    /// ```
    /// // The deleted rows of a segment, and the rows a search may return.
    /// let mut deleted = bsa_index::RowSet::empty(5);
    /// deleted.insert(1);
    /// let live = deleted.complement();
    /// assert_eq!(live.iter().collect::<Vec<_>>(), vec![0, 2, 3, 4]);
    /// assert_eq!(live.complement(), deleted);
    /// ```
    pub fn complement(&self) -> RowSet {
        let mut bits = !self.bits.clone();
        // Keep the words past `len` zero, as `words` promises.
        bits.set_uninitialized(false);
        RowSet {
            count: self.len() - self.count,
            bits,
        }
    }

    /// The rows in both sets (of equal `len`).
    ///
    /// # Panics
    /// If the sets range over different numbers of rows (the answer would range over the
    /// first's while counting only the rows of the shorter).
    ///
    /// ```
    /// use bsa_index::RowSet;
    /// let (mut a, mut b) = (RowSet::empty(8), RowSet::empty(8));
    /// for r in [1, 2, 5] { a.insert(r); }
    /// for r in [2, 5, 7] { b.insert(r); }
    /// assert_eq!(a.intersect(&b).iter().collect::<Vec<_>>(), vec![2, 5]);
    /// ```
    pub fn intersect(&self, other: &RowSet) -> RowSet {
        assert_eq!(
            self.len(),
            other.len(),
            "RowSet::intersect of sets over different numbers of rows"
        );
        let mut bits = self.bits.clone();
        bits &= &other.bits;
        let count = bits.count_ones();
        RowSet { bits, count }
    }

    /// The rows in the set, ascending.
    ///
    /// ```
    /// let mut s = bsa_index::RowSet::empty(200);
    /// for r in [150, 3, 64] { s.insert(r); }
    /// assert_eq!(s.iter().collect::<Vec<_>>(), vec![3, 64, 150]);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter_ones()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `words()` promises zero bits past `len`: a complement must not set them.
    #[test]
    fn a_complement_keeps_the_bits_past_len_zero() {
        let mut s = RowSet::empty(70);
        s.insert(3);
        let c = s.complement();
        assert_eq!(c.count(), 69);
        assert_eq!(c.words()[1], (1u64 << 6) - 1, "{:#x}", c.words()[1]);
    }

    proptest! {
        #[test]
        fn set_operations_agree_with_a_vec_of_bools(a in proptest::collection::vec(any::<bool>(), 0..200), seed in any::<u64>()) {
            let n = a.len();
            let b: Vec<bool> = (0..n).map(|i| (seed >> (i % 64)) & 1 == 1).collect();
            let mut sa = RowSet::empty(n);
            let mut sb = RowSet::full(n);
            for i in 0..n {
                if a[i] { sa.insert(i); }
                if !b[i] { sb.remove(i); }
            }
            prop_assert_eq!(sa.count(), a.iter().filter(|&&x| x).count());
            prop_assert_eq!(sa.iter().collect::<Vec<_>>(), (0..n).filter(|&i| a[i]).collect::<Vec<_>>());
            let both = sa.intersect(&sb);
            prop_assert_eq!(both.iter().collect::<Vec<_>>(), (0..n).filter(|&i| a[i] && b[i]).collect::<Vec<_>>());
            prop_assert_eq!(both.count(), both.iter().count());
            let not_a = sa.complement();
            prop_assert_eq!(not_a.iter().collect::<Vec<_>>(), (0..n).filter(|&i| !a[i]).collect::<Vec<_>>());
            prop_assert_eq!(not_a.count(), not_a.iter().count());
            let back = RowSet::from_words(sa.words(), n).unwrap();
            prop_assert_eq!(back, sa);
        }
    }

    /// Sets over different numbers of rows do not intersect (it gave a set of the first's
    /// length counting the shorter's rows).
    #[test]
    #[should_panic(expected = "different numbers of rows")]
    fn intersecting_sets_of_other_lengths_panics() {
        let _ = RowSet::full(70).intersect(&RowSet::full(5));
    }

    #[test]
    fn from_words_refuses_bits_past_the_end() {
        assert!(RowSet::from_words(&[1 << 10], 10).is_none());
        assert!(RowSet::from_words(&[1 << 9], 10).is_some());
        assert!(RowSet::from_words(&[0, 0], 10).is_none());
    }
}
