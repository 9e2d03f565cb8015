//! What a process derives from a dictionary once per dictionary instead of once per call: the
//! pursuit Gram matrix (`A A^T`, 0.1-0.15 s for 4096 atoms of 384 dimensions on two cores) and
//! the 8-bit decoder of the ADC candidate tables (a few ms). A one-shot `bsa search` pays them
//! once either way; the Python package and any other long-lived caller encoding queries a few at
//! a time paid them on every call, which made a one-query search cost about as much as the
//! Gram matrix.
//!
//! Reuse is decided by comparing the dictionary with a copy, byte for byte: about 0.15 ms for
//! 4096 atoms of 384 dimensions, half of a one-query graph search. A model wrapped in a
//! `bsa::model::FrozenModel` cannot change ([`freeze`]), so its dictionaries skip the
//! comparison once one has passed. (A [`crate::model::QueryModel`] keeps its own derived
//! matrices instead, [`crate::model::Derived`].)
//!
//! For the `bsa` crate's use: not part of this crate's stable API.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ndarray::{Array2, ArrayView2};

/// Dictionaries that cannot change while listed: `(address, length in elements, id)`, each id
/// used once (an address freed and reused later gets a new one).
static FROZEN: Mutex<Vec<(usize, usize, u64)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Lists `a` as unchanging and returns the id to [`unfreeze`] it with. The caller promises that
/// `a`'s elements do not change, and its memory is not freed, until then
/// (`bsa::model::FrozenModel` owns the matrices it lists and gives no `&mut` to them).
pub fn freeze(a: ArrayView2<f32>) -> u64 {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    FROZEN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((a.as_ptr() as usize, a.len(), id));
    id
}

/// Ends the listings `ids` of [`freeze`].
pub fn unfreeze(ids: &[u64]) {
    FROZEN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|e| !ids.contains(&e.2));
}

/// The id under which `a` (its exact address and length, contiguous) is listed as unchanging.
pub(crate) fn frozen_id(a: ArrayView2<f32>) -> Option<u64> {
    a.as_slice()?;
    let (at, len) = (a.as_ptr() as usize, a.len());
    let frozen = FROZEN.lock().unwrap_or_else(|e| e.into_inner());
    frozen
        .iter()
        .find(|&&(p, l, _)| p == at && l == len)
        .map(|e| e.2)
}

/// A remembered dictionary: its copy, the value derived from it, and the [`freeze`]
/// registration (if any) under which the copy was last found equal to the dictionary asked for.
type Entry<T> = (Array2<f32>, Arc<T>, Option<u64>);

/// The value derived from the last dictionary asked for, beside an exact copy of that
/// dictionary: a later call reuses the value only when its dictionary has the same shape and
/// the same bits (compared in full, so a dictionary changed in place is never mistaken for the
/// old one), or when it is the same frozen dictionary that was compared before. One entry, so
/// the memory held is one dictionary and one value.
pub struct LastFor<T> {
    slot: Mutex<Option<Entry<T>>>,
}

impl<T> LastFor<T> {
    /// An empty memo, for a `static`.
    pub const fn new() -> Self {
        LastFor {
            slot: Mutex::new(None),
        }
    }

    /// The value for `atoms`: the remembered one if `atoms` is bit for bit the dictionary it
    /// was made from, else `make()`, remembered in its place.
    pub fn get(&self, atoms: ArrayView2<f32>, make: impl FnOnce() -> T) -> Arc<T> {
        let frozen = frozen_id(atoms);
        {
            // A panic elsewhere while the lock was held leaves a complete entry or none.
            let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((seen, value, seen_frozen)) = slot.as_mut() {
                // Equal when last compared under this registration, and unchanged since.
                if frozen.is_some() && *seen_frozen == frozen && seen.dim() == atoms.dim() {
                    return Arc::clone(value);
                }
                if same_bits(seen.view(), atoms) {
                    *seen_frozen = frozen;
                    return Arc::clone(value);
                }
            }
        }
        let value = Arc::new(make());
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((atoms.to_owned(), Arc::clone(&value), frozen));
        value
    }
}

impl<T> Default for LastFor<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Same shape and the same bits in every element (`0.0` and `-0.0` differ, a NaN equals itself).
fn same_bits(a: ArrayView2<f32>, b: ArrayView2<f32>) -> bool {
    if a.dim() != b.dim() {
        return false;
    }
    match (a.as_slice(), b.as_slice()) {
        // Contiguous (the usual case): one comparison of the bytes, at memcmp speed.
        (Some(x), Some(y)) => {
            bytemuck::cast_slice::<f32, u8>(x) == bytemuck::cast_slice::<f32, u8>(y)
        }
        _ => a
            .iter()
            .zip(b.iter())
            .all(|(x, y)| x.to_bits() == y.to_bits()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn reuses_only_for_the_same_bits() {
        let memo = LastFor::new();
        let calls = std::cell::Cell::new(0);
        let mut a = array![[1.0f32, 2.0], [3.0, 4.0]];
        let sum = |m: &Array2<f32>| {
            calls.set(calls.get() + 1);
            m.sum()
        };
        assert_eq!(*memo.get(a.view(), || sum(&a)), 10.0);
        assert_eq!(*memo.get(a.view(), || sum(&a)), 10.0);
        assert_eq!(calls.get(), 1, "the same dictionary is not derived twice");
        // Changed in place (same allocation, same shape): derived anew.
        a[[0, 0]] = 5.0;
        assert_eq!(*memo.get(a.view(), || sum(&a)), 14.0);
        // The sign of a zero counts; another shape with the same elements too.
        let z = array![[0.0f32, 0.0]];
        let nz = array![[-0.0f32, 0.0]];
        assert_eq!(*memo.get(z.view(), || 1.0), 1.0);
        assert_eq!(*memo.get(nz.view(), || 2.0), 2.0);
        let t = array![[0.0f32], [0.0]];
        assert_eq!(*memo.get(t.view(), || 3.0), 3.0);
        // The same shape and bits through a transposed (non-contiguous) view: reused.
        assert_eq!(*memo.get(z.t(), || 4.0), 3.0);
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn frozen_dictionaries_are_reused_and_never_confused() {
        let memo = LastFor::new();
        let a = Array2::from_shape_fn((8, 4), |(i, j)| (i * 4 + j) as f32);
        let id = freeze(a.view());
        assert_eq!(frozen_id(a.view()), Some(id));
        assert_eq!(*memo.get(a.view(), || 1), 1);
        assert_eq!(*memo.get(a.view(), || 2), 1, "reused without a comparison");
        // A copy of the same bits at another address is compared, and reused.
        let copy = a.clone();
        assert_eq!(frozen_id(copy.view()), None);
        assert_eq!(*memo.get(copy.view(), || 3), 1);
        // Unlisted, the old address is compared again; a new listing gets a new id, so only
        // a comparison can match what another listing derived.
        unfreeze(&[id]);
        assert_eq!(frozen_id(a.view()), None);
        let b = Array2::from_shape_fn((8, 4), |(i, j)| (i + j) as f32);
        let id_b = freeze(b.view());
        assert_ne!(id_b, id);
        assert_eq!(*memo.get(b.view(), || 4), 4);
        assert_eq!(*memo.get(b.view(), || 5), 4);
        // The same bits as `a`: compared in full, derived anew (the entry is `b`'s now).
        assert_eq!(*memo.get(copy.view(), || 6), 6);
        unfreeze(&[id_b]);
    }
}
