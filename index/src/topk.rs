//! Exact top-k of small-integer distances with deterministic ties.
//!
//! Results are ordered by `(distance, row)` ascending: among equal distances the smaller row
//! number comes first. This is the order of a stable sort of all `(distance, row)` pairs, so the
//! result equals a brute-force reference exactly.
//!
//! [`TopK`] is a *threshold collector*. A candidate is a `u64` key `distance << 32 | row`, so
//! comparing keys compares `(distance, row)`. Candidates are appended to a buffer; when the
//! buffer holds `2k` of them it is cut back to the `k` smallest keys with a linear-time selection,
//! and the largest kept distance becomes the threshold. Because one collector sees rows in
//! increasing order, a later row with a distance equal to the threshold can never displace a kept
//! one, so the scan only needs the test `distance < threshold`, which almost always fails after
//! the first few thousand rows: the hot loop is a compare and a predictable branch.

/// Packs `(distance, row)` into one sortable key.
///
/// ```
/// use bsa_index::topk::key;
/// // Keys compare as (distance, row).
/// assert!(key(1, 900) < key(2, 0));
/// assert!(key(3, 4) < key(3, 5));
/// ```
#[inline(always)]
pub fn key(distance: u32, row: u32) -> u64 {
    (u64::from(distance) << 32) | u64::from(row)
}

/// Distance part of a key.
///
/// ```
/// use bsa_index::topk::{key, key_distance};
/// assert_eq!(key_distance(key(7, 123)), 7);
/// ```
#[inline(always)]
pub fn key_distance(key: u64) -> u32 {
    (key >> 32) as u32
}

/// Row part of a key.
///
/// ```
/// use bsa_index::topk::{key, key_row};
/// assert_eq!(key_row(key(7, 123)), 123);
/// ```
#[inline(always)]
pub fn key_row(key: u64) -> u32 {
    key as u32
}

/// Collects the `k` smallest `(distance, row)` pairs of rows offered in increasing row order.
///
/// ```
/// use bsa_index::topk::{key, TopK};
/// let distances = [5, 1, 3, 1, 0, 3];
/// let mut top = TopK::new(3, None);
/// for (row, &d) in distances.iter().enumerate() {
///     top.offer(d, row as u32); // rows in increasing order
/// }
/// // The 3 smallest (distance, row): ties by the smaller row.
/// assert_eq!(top.into_sorted_keys(), vec![key(0, 4), key(1, 1), key(1, 3)]);
/// ```
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    cap: usize,
    /// Offer a candidate only if its distance is below this.
    threshold: u32,
    /// The largest distance kept, once `k` rows are kept (as of the last compaction).
    kth: Option<u32>,
    buf: Vec<u64>,
}

impl TopK {
    /// A collector for the `k` best rows whose distance is at most `max_distance` (if given).
    ///
    /// ```
    /// use bsa_index::topk::{key, TopK};
    /// let mut top = TopK::new(10, Some(2)); // at most 10 rows, within distance 2
    /// for (row, d) in [4, 2, 0, 3].into_iter().enumerate() {
    ///     top.offer(d, row as u32);
    /// }
    /// assert_eq!(top.into_sorted_keys(), vec![key(0, 2), key(2, 1)]);
    /// ```
    pub fn new(k: usize, max_distance: Option<u32>) -> Self {
        let threshold = match (k, max_distance) {
            (0, _) => 0,
            (_, Some(m)) => m.saturating_add(1),
            (_, None) => u32::MAX,
        };
        let cap = k.saturating_mul(2).max(k.saturating_add(32));
        TopK {
            k,
            cap,
            threshold,
            kth: None,
            buf: Vec::with_capacity(cap.min(1 << 16)),
        }
    }

    /// Rows with a distance `>= threshold()` cannot enter the result; skip them without calling
    /// [`push`](Self::push).
    ///
    /// ```
    /// use bsa_index::topk::TopK;
    /// assert_eq!(TopK::new(5, Some(2)).threshold(), 3);
    /// assert_eq!(TopK::new(5, None).threshold(), u32::MAX);
    /// assert_eq!(TopK::new(0, None).threshold(), 0); // k = 0 takes nothing
    /// // The threshold falls to the worst kept distance once the buffer is cut back.
    /// let mut top = TopK::new(1, None);
    /// for row in 0..100 {
    ///     if 7 < top.threshold() {
    ///         top.push(7, row);
    ///     }
    /// }
    /// assert_eq!(top.threshold(), 7);
    /// ```
    #[inline(always)]
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// Offers `(distance, row)`. Requires `distance < self.threshold()` and `row` greater than every
    /// row offered before.
    ///
    /// ```
    /// use bsa_index::topk::{key, TopK};
    /// let distances = [9, 4, 6, 1];
    /// let mut top = TopK::new(2, None);
    /// for (row, &d) in distances.iter().enumerate() {
    ///     // The hot loop: one compare, and `push` only for the rare candidate.
    ///     if d < top.threshold() {
    ///         top.push(d, row as u32);
    ///     }
    /// }
    /// assert_eq!(top.into_sorted_keys(), vec![key(1, 3), key(4, 1)]);
    /// ```
    #[inline]
    pub fn push(&mut self, distance: u32, row: u32) {
        debug_assert!(distance < self.threshold);
        self.buf.push(key(distance, row));
        if self.buf.len() >= self.cap {
            self.compact();
        }
    }

    /// Offers a distance if it passes the threshold.
    ///
    /// ```
    /// use bsa_index::topk::{key, TopK};
    /// let mut top = TopK::new(1, Some(3));
    /// top.offer(5, 0); // beyond max_distance: ignored
    /// top.offer(2, 1);
    /// assert_eq!(top.into_sorted_keys(), vec![key(2, 1)]);
    /// ```
    #[inline(always)]
    pub fn offer(&mut self, distance: u32, row: u32) {
        if distance < self.threshold {
            self.push(distance, row);
        }
    }

    #[cold]
    fn compact(&mut self) {
        if self.buf.len() > self.k {
            self.buf.select_nth_unstable(self.k - 1);
            self.buf.truncate(self.k);
        }
        if self.buf.len() == self.k {
            // Keys are unique (rows are), so the k-th smallest key has the largest kept distance.
            let worst = self.buf.iter().copied().max().map_or(0, key_distance);
            self.threshold = self.threshold.min(worst);
            self.kth = Some(worst);
        }
    }

    /// Once `k` rows are kept: a distance that `k` of them are within. Another chunk of the same
    /// codes may then skip rows beyond it ([`limit`](Self::limit) with one more, since its rows
    /// may come first in ties); the merge of the chunks' results is the same.
    pub(crate) fn known_kth(&self) -> Option<u32> {
        self.kth
    }

    /// Skips rows whose distance is `threshold` or more from now on (the threshold only falls).
    pub(crate) fn limit(&mut self, threshold: u32) {
        self.threshold = self.threshold.min(threshold);
    }

    /// The sorted result: at most `k` keys, ascending by `(distance, row)`.
    ///
    /// ```
    /// use bsa_index::topk::{key_distance, key_row, TopK};
    /// let mut top = TopK::new(2, None);
    /// for (row, d) in [3, 1, 2].into_iter().enumerate() {
    ///     top.offer(d, row as u32);
    /// }
    /// let best: Vec<(u32, u32)> = top.into_sorted_keys().into_iter().map(|k| (key_distance(k), key_row(k))).collect();
    /// assert_eq!(best, vec![(1, 1), (2, 2)]);
    /// ```
    pub fn into_sorted_keys(mut self) -> Vec<u64> {
        if self.buf.len() > self.k {
            self.buf.select_nth_unstable(self.k - 1);
            self.buf.truncate(self.k);
        }
        self.buf.sort_unstable();
        self.buf
    }
}

/// Collects the `k` smallest keys offered in *any* order (keys must be distinct).
///
/// [`TopK`] relies on rows arriving in increasing order; the inverted search visits rows in
/// posting-list order, so it compares whole keys instead: a key enters while it is smaller than
/// the largest key kept. The result is the same as a sort of all offered keys.
///
/// ```
/// use bsa_index::topk::{key, KeyTopK};
/// // Rows in posting-list order, not row order.
/// let mut top = KeyTopK::new(2, u64::MAX);
/// for (row, d) in [(5, 2), (1, 0), (9, 2), (3, 1)] {
///     top.offer(key(d, row));
/// }
/// assert_eq!(top.into_sorted_keys(), vec![key(0, 1), key(1, 3)]);
/// ```
#[derive(Debug, Clone)]
pub struct KeyTopK {
    k: usize,
    cap: usize,
    /// Offer a key only if it is below this.
    threshold: u64,
    buf: Vec<u64>,
}

impl KeyTopK {
    /// A collector for the `k` smallest keys below `limit` (use `u64::MAX` for no limit).
    ///
    /// ```
    /// use bsa_index::topk::{key, KeyTopK};
    /// // Distances up to 1: keys below (2, row 0).
    /// let mut top = KeyTopK::new(5, key(2, 0));
    /// assert!(top.offer(key(1, 8)));
    /// assert!(!top.offer(key(2, 3)));
    /// assert_eq!(top.into_sorted_keys(), vec![key(1, 8)]);
    /// ```
    pub fn new(k: usize, limit: u64) -> Self {
        let cap = k.saturating_mul(2).max(k.saturating_add(32));
        KeyTopK {
            k,
            cap,
            threshold: if k == 0 { 0 } else { limit },
            buf: Vec::with_capacity(cap.min(1 << 16)),
        }
    }

    /// Keys `>= threshold()` cannot enter the result.
    ///
    /// ```
    /// use bsa_index::topk::KeyTopK;
    /// let mut top = KeyTopK::new(1, 100);
    /// assert_eq!(top.threshold(), 100);
    /// top.offer(40);
    /// top.compact();
    /// assert_eq!(top.threshold(), 40); // the largest key kept
    /// ```
    #[inline(always)]
    pub fn threshold(&self) -> u64 {
        self.threshold
    }

    /// Whether `k` keys are held, so that [`threshold`](Self::threshold) is the largest kept key
    /// (after the next compaction) rather than the initial limit.
    ///
    /// ```
    /// use bsa_index::topk::KeyTopK;
    /// let mut top = KeyTopK::new(2, u64::MAX);
    /// top.offer(10);
    /// assert!(!top.is_full());
    /// top.offer(20);
    /// assert!(top.is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        self.k == 0 || self.buf.len() >= self.k
    }

    /// Offers a key; returns whether it passed the threshold.
    ///
    /// ```
    /// use bsa_index::topk::KeyTopK;
    /// let mut top = KeyTopK::new(1, u64::MAX);
    /// assert!(top.offer(50));
    /// top.compact(); // threshold now 50
    /// assert!(!top.offer(60));
    /// assert!(top.offer(30));
    /// ```
    #[inline(always)]
    pub fn offer(&mut self, key: u64) -> bool {
        if key < self.threshold {
            self.buf.push(key);
            if self.buf.len() >= self.cap {
                self.compact();
            }
            true
        } else {
            false
        }
    }

    /// Cuts the buffer back to the `k` smallest keys and lowers the threshold to the largest.
    ///
    /// ```
    /// use bsa_index::topk::KeyTopK;
    /// let mut top = KeyTopK::new(2, u64::MAX);
    /// for k in [9, 3, 7, 5] {
    ///     top.offer(k);
    /// }
    /// top.compact();
    /// assert_eq!(top.threshold(), 5);
    /// assert_eq!(top.into_sorted_keys(), vec![3, 5]);
    /// ```
    pub fn compact(&mut self) {
        if self.k == 0 {
            self.buf.clear();
            return;
        }
        if self.buf.len() > self.k {
            self.buf.select_nth_unstable(self.k - 1);
            self.buf.truncate(self.k);
        }
        if self.buf.len() == self.k {
            let worst = self.buf.iter().copied().max().unwrap_or(0);
            self.threshold = self.threshold.min(worst);
        }
    }

    /// The sorted result: at most `k` keys, ascending.
    ///
    /// ```
    /// use bsa_index::topk::KeyTopK;
    /// let mut top = KeyTopK::new(3, u64::MAX);
    /// for k in [8, 1, 6, 4, 2] {
    ///     top.offer(k);
    /// }
    /// assert_eq!(top.into_sorted_keys(), vec![1, 2, 4]);
    /// ```
    pub fn into_sorted_keys(mut self) -> Vec<u64> {
        self.compact();
        self.buf.sort_unstable();
        self.buf
    }
}

/// Merges per-chunk results (each sorted or not) into the global sorted top-k.
///
/// Exact as long as each part holds its chunk's exact top-k and rows are distinct across parts.
///
/// ```
/// use bsa_index::topk::{key, merge_keys, TopK};
/// // Two chunks of rows searched apart (e.g. on two threads), then merged.
/// let distances = [4, 1, 3, 0, 1, 2];
/// let mut parts = Vec::new();
/// for (start, chunk) in [(0, &distances[..3]), (3, &distances[3..])] {
///     let mut top = TopK::new(2, None);
///     for (i, &d) in chunk.iter().enumerate() {
///         top.offer(d, (start + i) as u32);
///     }
///     parts.extend(top.into_sorted_keys());
/// }
/// assert_eq!(merge_keys(parts, 3), vec![key(0, 3), key(1, 1), key(1, 4)]);
/// ```
pub fn merge_keys(mut all: Vec<u64>, k: usize) -> Vec<u64> {
    if k == 0 {
        return Vec::new();
    }
    if all.len() > k {
        all.select_nth_unstable(k - 1);
        all.truncate(k);
    }
    all.sort_unstable();
    all
}

/// The order key of an `f32`: keys compare as the values do (`-0.0` as `+0.0`; NaNs above
/// `+inf` or below `-inf` by their sign), so the largest values are the largest keys.
///
/// ```
/// use bsa_index::topk::f32_order_key as key;
/// assert!(key(-1.5) < key(-0.0) && key(-0.0) == key(0.0) && key(0.0) < key(1e-40));
/// assert!(key(3.0) < key(f32::INFINITY));
/// ```
#[inline(always)]
pub fn f32_order_key(v: f32) -> u64 {
    // Adding +0 turns -0 into +0. Flipping the sign bit of positive values and every bit of
    // negative ones makes the bit patterns sort like the values.
    let b = (v + 0.0).to_bits();
    u64::from(if b >> 31 == 1 { !b } else { b | 1 << 31 })
}

/// Indices of the `k` largest values of `row`, ties to the lower index, ascending: a model's
/// TopK code ([`crate::model::Rule::TopK`]). [`largest_keys_into`] on [`f32_order_key`]s.
///
/// ```
/// assert_eq!(bsa_index::topk::largest_f32(&[0.5, 2.0, -1.0, 2.0, 0.5], 3), vec![0, 1, 3]);
/// ```
pub fn largest_f32(row: &[f32], k: usize) -> Vec<u32> {
    let mut keys: Vec<u64> = row.iter().map(|&v| f32_order_key(v)).collect();
    let mut out = Vec::with_capacity(k.min(row.len()));
    largest_keys_into(&mut keys, k, &mut out);
    out
}

/// Indices of the `k` largest of the `n` keys in `keys` (a row's order keys), ties to the lower
/// index, ascending, into `out` (cleared first). `keys` is scratch too: the selection appends a
/// copy of the candidates' keys, so no allocation is made once both have grown to size. Selects
/// the k-th largest key, then one pass takes every index above it and the lowest indices equal
/// to it; O(n) on average.
///
/// ```
/// use bsa_index::topk::{f32_order_key, largest_f32, largest_keys_into};
/// let rows = [[0.5f32, 2.0, -1.0, 2.0, 0.5], [9.0, 0.0, 0.0, 0.0, 8.0]];
/// let (mut keys, mut out) = (Vec::new(), Vec::new()); // reused across rows
/// for row in &rows {
///     keys.clear();
///     keys.extend(row.iter().map(|&v| f32_order_key(v)));
///     largest_keys_into(&mut keys, 2, &mut out);
///     assert_eq!(out, largest_f32(row, 2));
/// }
/// assert_eq!(out, [0, 4]); // the last row's two largest
/// ```
#[inline(always)]
pub fn largest_keys_into(keys: &mut Vec<u64>, k: usize, out: &mut Vec<u32>) {
    out.clear();
    let n = keys.len();
    let k = k.min(n);
    if k == 0 {
        return;
    }
    // Usually a strided sample of the row gives a threshold that only a few times K entries
    // reach; the K largest are then selected among those candidates alone. When fewer than K
    // reach it (unlikely), all entries are candidates. Exact either way: with at least K
    // candidates, the K-th largest key is at least the threshold, so every entry that can be
    // among the K largest is a candidate.
    let mut threshold = 0;
    if n >= 256 && k * 8 <= n {
        let mut sample: [u64; TOPK_SAMPLE] = std::array::from_fn(|i| keys[i * n / TOPK_SAMPLE]);
        let expected = k * TOPK_SAMPLE / n;
        let rank = (expected + 3 * expected.isqrt() + 3).min(TOPK_SAMPLE - 1);
        threshold = *sample.select_nth_unstable(TOPK_SAMPLE - 1 - rank).1;
    }
    // Candidate indices, ascending, into `out`: a mask of 64 comparisons at a time (vector
    // compares), then only the candidates are visited.
    for (c, chunk) in keys.chunks(64).enumerate() {
        let mut mask = 0u64;
        for (l, &key) in chunk.iter().enumerate() {
            mask |= u64::from(key >= threshold) << l;
        }
        while mask != 0 {
            out.push((c * 64) as u32 + mask.trailing_zeros());
            mask &= mask - 1;
        }
    }
    if out.len() < k {
        out.clear();
        out.extend(0..n as u32);
    }
    let len = out.len();
    // The K-th largest candidate key, selected on a copy after the row's keys.
    keys.reserve(len);
    for &j in out.iter() {
        let key = keys[j as usize];
        keys.push(key);
    }
    let kth = *keys[n..].select_nth_unstable(len - k).1;
    let above = keys[n..].iter().filter(|&&key| key > kth).count();
    // Keep, in place and in order, the candidates above it and the first equal ones.
    let mut ties = k - above;
    let mut kept = 0;
    for c in 0..len {
        let j = out[c];
        let key = keys[j as usize];
        let take = key > kth || (key == kth && ties > 0);
        ties -= usize::from(take && key == kth);
        out[kept] = j;
        kept += usize::from(take);
    }
    out.truncate(kept);
}

/// Entries of a row sampled by [`largest_keys_into`] to guess its threshold.
const TOPK_SAMPLE: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn brute(d: &[u32], k: usize, max: Option<u32>) -> Vec<u64> {
        let mut all: Vec<u64> = d
            .iter()
            .enumerate()
            .filter(|&(_, &x)| max.is_none_or(|m| x <= m))
            .map(|(r, &x)| key(x, r as u32))
            .collect();
        all.sort();
        all.truncate(k);
        all
    }

    proptest! {
        #[test]
        fn equals_brute_force(d in proptest::collection::vec(0u32..20, 0..600), k in 0usize..80, max in proptest::option::of(0u32..20)) {
            let mut t = TopK::new(k, max);
            for (r, &x) in d.iter().enumerate() {
                t.offer(x, r as u32);
            }
            prop_assert_eq!(t.into_sorted_keys(), brute(&d, k, max));
        }

        #[test]
        fn key_topk_in_any_order_equals_brute_force(d in proptest::collection::vec(0u32..6, 0..500), k in 0usize..60, max in proptest::option::of(0u32..6), seed in any::<u64>()) {
            let mut order: Vec<usize> = (0..d.len()).collect();
            // A seeded shuffle: rows arrive out of order, as in the inverted search.
            let mut x = seed | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let limit = max.map_or(u64::MAX, |m| key(m + 1, 0));
            let mut t = KeyTopK::new(k, limit);
            for &r in &order {
                t.offer(key(d[r], r as u32));
            }
            prop_assert_eq!(t.into_sorted_keys(), brute(&d, k, max));
        }

        #[test]
        fn merge_of_chunks_equals_brute_force(d in proptest::collection::vec(0u32..8, 0..400), k in 0usize..50, chunk in 1usize..100) {
            let mut all = Vec::new();
            for (c, part) in d.chunks(chunk).enumerate() {
                let mut t = TopK::new(k, None);
                for (i, &x) in part.iter().enumerate() {
                    t.offer(x, (c * chunk + i) as u32);
                }
                all.extend(t.into_sorted_keys());
            }
            prop_assert_eq!(merge_keys(all, k), brute(&d, k, None));
        }
    }

    #[test]
    fn key_parts() {
        let k = key(7, 123_456);
        assert_eq!((key_distance(k), key_row(k)), (7, 123_456));
        assert!(key(1, u32::MAX) < key(2, 0));
    }
}
