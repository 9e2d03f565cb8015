//! Which family of SIMD kernels runs: chosen at run time, never by the build machine.
//!
//! One binary runs on every x86-64 CPU: the portable kernels need only the x86-64-v2 baseline
//! (`popcnt`), and the vector kernels are compiled with `#[target_feature]` and called only after
//! `is_x86_feature_detected!` has confirmed the CPU has what they need. Every family gives
//! exactly the same results; they differ only in speed.
//!
//! | family | needs | used for |
//! | --- | --- | --- |
//! | [`Portable`](KernelFamily::Portable) | nothing (any CPU, aarch64 too) | `u64::count_ones` loops |
//! | [`Avx2`](KernelFamily::Avx2) | AVX2 | nibble-lookup popcount (`vpshufb`) with Harley-Seal sums, 256-bit bit-sliced counters |
//! | [`Avx512`](KernelFamily::Avx512) | AVX-512 F, BW and `VPOPCNTDQ` | `vpopcntq` on 512-bit registers |
//!
//! The environment variable `BSA_KERNEL=portable|avx2|avx512` forces a family (for benchmarks,
//! tests and bug reports); asking for one the CPU lacks is an error, not a silent fallback.
//! [`SearchParams::kernel`](crate::SearchParams::kernel) does the same for one search.
//!
//! ```
//! use bsa_index::KernelFamily;
//!
//! // The family a search would use now (BSA_KERNEL if set, else the fastest this CPU has).
//! let active = KernelFamily::active()?;
//! assert!(active.is_supported());
//! // Every CPU runs the portable kernels.
//! assert!(KernelFamily::supported().contains(&KernelFamily::Portable));
//! assert_eq!("avx2".parse::<KernelFamily>()?, KernelFamily::Avx2);
//! # Ok::<(), bsa_index::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The environment variable that forces a kernel family.
///
/// ```
/// use bsa_index::kernel::{KernelFamily, ENV_VAR};
/// assert_eq!(ENV_VAR, "BSA_KERNEL");
/// // Whatever it names (if anything) is what `from_env` reads.
/// if std::env::var(ENV_VAR).map_or(true, |v| v.trim().is_empty()) {
///     assert_eq!(KernelFamily::from_env()?, None);
/// }
/// # Ok::<(), bsa_index::Error>(())
/// ```
pub const ENV_VAR: &str = "BSA_KERNEL";

/// A family of search kernels (see the [module docs](self)).
///
/// ```
/// use bsa_index::{Index, IndexBuilder, KernelFamily, SearchParams};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// let codes: Vec<u64> = (0..100).map(|i: u64| i * 0x0123_4567_89ab).collect();
/// IndexBuilder::new(64, &codes).build(&path)?;
/// let index = Index::open(&path)?;
/// // Every family the CPU runs answers identically; they differ only in speed.
/// let portable = SearchParams::default().with_kernel(Some(KernelFamily::Portable));
/// let expected = index.search_flat(&codes[..3], 4, &portable)?;
/// for family in KernelFamily::supported() {
///     let p = SearchParams::default().with_kernel(Some(family));
///     assert_eq!(index.search_flat(&codes[..3], 4, &p)?, expected);
/// }
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelFamily {
    /// Plain Rust over `u64` words: runs everywhere.
    Portable,
    /// 256-bit AVX2 kernels (x86-64).
    Avx2,
    /// 512-bit AVX-512 kernels with `VPOPCNTDQ` (x86-64).
    Avx512,
}

impl KernelFamily {
    /// Every family, slowest first.
    ///
    /// ```
    /// use bsa_index::KernelFamily;
    /// let names: Vec<&str> = KernelFamily::ALL.iter().map(|f| f.name()).collect();
    /// assert_eq!(names, ["portable", "avx2", "avx512"]);
    /// ```
    pub const ALL: [KernelFamily; 3] = [
        KernelFamily::Portable,
        KernelFamily::Avx2,
        KernelFamily::Avx512,
    ];

    /// The name used by `BSA_KERNEL` and `--stats`: `portable`, `avx2` or `avx512`.
    ///
    /// ```
    /// use bsa_index::KernelFamily;
    /// assert_eq!(KernelFamily::Avx512.name(), "avx512");
    /// assert_eq!(KernelFamily::Avx2.to_string(), "avx2"); // Display is the name
    /// assert_eq!("AVX512".parse::<KernelFamily>()?, KernelFamily::Avx512);
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            KernelFamily::Portable => "portable",
            KernelFamily::Avx2 => "avx2",
            KernelFamily::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the family.
    ///
    /// ```
    /// use bsa_index::KernelFamily;
    /// assert!(KernelFamily::Portable.is_supported()); // on every CPU
    /// assert_eq!(KernelFamily::Avx2.is_supported(), KernelFamily::Avx2.check().is_ok());
    /// ```
    pub fn is_supported(self) -> bool {
        self.missing_feature().is_none()
    }

    /// The first CPU feature the family needs that this CPU lacks.
    fn missing_feature(self) -> Option<&'static str> {
        #[cfg(target_arch = "x86_64")]
        {
            let needs: &[(&str, bool)] = match self {
                KernelFamily::Portable => &[],
                KernelFamily::Avx2 => &[("avx2", is_x86_feature_detected!("avx2"))],
                // AVX2 too: the AVX-512 kernels call AVX2 ones on their 256-bit halves, which
                // the compiler allows (AVX-512F implies AVX2) but a CPU check must still see (a
                // virtual machine may hide one and not the other).
                KernelFamily::Avx512 => &[
                    ("avx2", is_x86_feature_detected!("avx2")),
                    ("avx512f", is_x86_feature_detected!("avx512f")),
                    ("avx512bw", is_x86_feature_detected!("avx512bw")),
                    (
                        "avx512vpopcntdq",
                        is_x86_feature_detected!("avx512vpopcntdq"),
                    ),
                ],
            };
            needs.iter().find(|(_, has)| !has).map(|(name, _)| *name)
        }
        #[cfg(not(target_arch = "x86_64"))]
        match self {
            KernelFamily::Portable => None,
            KernelFamily::Avx2 | KernelFamily::Avx512 => Some("an x86-64 CPU"),
        }
    }

    /// The families this CPU runs, slowest first (always starts with `Portable`).
    ///
    /// ```
    /// use bsa_index::KernelFamily;
    /// let families = KernelFamily::supported();
    /// assert_eq!(families[0], KernelFamily::Portable);
    /// assert!(families.iter().all(|f| f.is_supported()));
    /// assert_eq!(families.last(), Some(&KernelFamily::best()));
    /// ```
    pub fn supported() -> Vec<KernelFamily> {
        Self::ALL.into_iter().filter(|f| f.is_supported()).collect()
    }

    /// The fastest family this CPU runs.
    ///
    /// ```
    /// use bsa_index::KernelFamily;
    /// let best = KernelFamily::best();
    /// assert!(best.is_supported());
    /// assert!(KernelFamily::supported().iter().all(|&f| f <= best)); // ordered slowest first
    /// ```
    pub fn best() -> KernelFamily {
        *Self::supported()
            .last()
            .expect("the portable family is always supported")
    }

    /// The family forced by `BSA_KERNEL`, if it is set (and not empty).
    ///
    /// Errors when the value is not a family name or names one this CPU lacks.
    ///
    /// ```
    /// use bsa_index::KernelFamily;
    /// match KernelFamily::from_env() {
    ///     Ok(Some(forced)) => assert!(forced.is_supported()),
    ///     Ok(None) => {} // BSA_KERNEL unset: searches pick the fastest family
    ///     Err(e) => assert!(e.to_string().contains("BSA_KERNEL")), // a bad value, named
    /// }
    /// ```
    pub fn from_env() -> Result<Option<KernelFamily>> {
        match std::env::var(ENV_VAR) {
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => v
                .parse::<KernelFamily>()
                .and_then(KernelFamily::check)
                .map(Some)
                .map_err(|e| match e {
                    Error::InvalidArgument(m) => Error::InvalidArgument(format!("{ENV_VAR}: {m}")),
                    e => e,
                }),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::InvalidArgument(format!(
                "{ENV_VAR} is not valid UTF-8; use portable, avx2 or avx512"
            ))),
        }
    }

    /// The family a search uses when it names none: `BSA_KERNEL` if set, else [`best`](Self::best).
    ///
    /// ```
    /// use bsa_index::KernelFamily;
    /// if let Ok(active) = KernelFamily::active() {
    ///     assert_eq!(active, KernelFamily::from_env()?.unwrap_or_else(KernelFamily::best));
    /// }
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn active() -> Result<KernelFamily> {
        Ok(Self::from_env()?.unwrap_or_else(Self::best))
    }

    /// For code that cannot fail (e.g. [`crate::hamming::distances`], or the trainer's vector
    /// loops): the family `BSA_KERNEL` names if it is valid and supported, else
    /// [`best`](Self::best). Searches and the command line report a bad `BSA_KERNEL` as an error
    /// instead.
    ///
    /// ```
    /// use bsa_index::KernelFamily;
    /// // Never fails: a bad BSA_KERNEL falls back to the fastest family.
    /// let family = KernelFamily::current();
    /// assert!(family.is_supported());
    /// assert_eq!(family, KernelFamily::active().unwrap_or_else(|_| KernelFamily::best()));
    /// ```
    pub fn current() -> KernelFamily {
        Self::active().unwrap_or_else(|_| Self::best())
    }

    /// `requested` if given (checked against the CPU), else [`active`](Self::active).
    ///
    /// ```
    /// use bsa_index::KernelFamily;
    /// // A family asked for wins over BSA_KERNEL.
    /// assert_eq!(KernelFamily::resolve(Some(KernelFamily::Portable))?, KernelFamily::Portable);
    /// if let Ok(active) = KernelFamily::active() {
    ///     assert_eq!(KernelFamily::resolve(None)?, active);
    /// }
    /// # Ok::<(), bsa_index::Error>(())
    /// ```
    pub fn resolve(requested: Option<KernelFamily>) -> Result<KernelFamily> {
        match requested {
            Some(f) => f.check(),
            None => Self::active(),
        }
    }

    /// The family itself if the CPU runs it, else an error naming the missing feature.
    ///
    /// ```
    /// use bsa_index::KernelFamily;
    /// for family in KernelFamily::ALL {
    ///     match family.check() {
    ///         Ok(f) => assert_eq!(f, family),
    ///         // Names what the CPU lacks and the families it has.
    ///         Err(e) => assert!(!family.is_supported() && e.to_string().contains("portable")),
    ///     }
    /// }
    /// ```
    pub fn check(self) -> Result<KernelFamily> {
        match self.missing_feature() {
            None => Ok(self),
            Some(feature) => Err(Error::InvalidArgument(format!(
                "kernel family {self} needs {feature}, which this CPU lacks; use one of: {}",
                Self::supported()
                    .iter()
                    .map(|f| f.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

impl fmt::Display for KernelFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KernelFamily {
    type Err = Error;

    fn from_str(s: &str) -> Result<KernelFamily> {
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown kernel family {s:?}; use portable, avx2 or avx512"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in KernelFamily::ALL {
            assert_eq!(f.name().parse::<KernelFamily>().unwrap(), f);
            assert_eq!(f.to_string(), f.name());
        }
        assert_eq!(
            " AVX2 ".parse::<KernelFamily>().unwrap(),
            KernelFamily::Avx2
        );
        let e = "sse9".parse::<KernelFamily>().unwrap_err().to_string();
        assert!(e.contains("sse9") && e.contains("avx512"), "{e}");
    }

    #[test]
    fn portable_always_supported_and_best_is_supported() {
        assert!(KernelFamily::Portable.is_supported());
        assert_eq!(KernelFamily::supported()[0], KernelFamily::Portable);
        assert!(KernelFamily::best().is_supported());
        assert_eq!(
            KernelFamily::resolve(Some(KernelFamily::Portable)).unwrap(),
            KernelFamily::Portable
        );
    }

    #[test]
    fn unsupported_family_is_a_clear_error() {
        for f in KernelFamily::ALL {
            match f.check() {
                Ok(g) => assert_eq!(g, f),
                Err(e) => {
                    let m = e.to_string();
                    assert!(m.contains(f.name()) && m.contains("portable"), "{m}");
                }
            }
        }
    }
}
