//! Run-time selected vector code for the trainer's elementwise loops.
//!
//! The build targets the x86-64-v2 baseline, so the compiler may only use SSE in plain code.
//! The trainer's hot loops are written once, as plain Rust over slices (`#[inline(always)]`
//! bodies), and [`multiversion!`] compiles each of them three times: for AVX-512, for AVX2 and
//! for the baseline. A call picks the copy for the [`Family`] the CPU (or `BSA_KERNEL`) allows.
//!
//! The copies give bit-identical results: the bodies use only exactly rounded operations
//! (`+ - * /`, `sqrt`, comparisons; never `mul_add`, and Rust never fuses a multiply and an add
//! on its own), and every sum runs over a fixed number of lanes ([`LANES`]) in a fixed order,
//! whatever the register width. So a model trained with `BSA_KERNEL=avx2` has the same bytes as
//! one trained with the AVX-512 copies (the BLAS products aside: OpenBLAS's kernels round
//! differently on different cores).

use crate::error::{Error, Result};

/// The environment variable that forces a kernel family (shared with the search kernels).
pub const ENV_VAR: &str = "BSA_KERNEL";

/// Which copy of the trainer's vector loops runs.
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
    /// The name `BSA_KERNEL` uses.
    pub fn name(self) -> &'static str {
        match self {
            Family::Portable => "portable",
            Family::Avx2 => "avx2",
            Family::Avx512 => "avx512",
        }
    }

    /// Whether this CPU runs the family's copies.
    pub fn is_supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Family::Portable => true,
                Family::Avx2 => {
                    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
                }
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

    /// The fastest family this CPU runs.
    pub fn best() -> Family {
        [Family::Avx512, Family::Avx2]
            .into_iter()
            .find(|f| f.is_supported())
            .unwrap_or(Family::Portable)
    }

    /// `BSA_KERNEL` if set (an error when it names an unknown family or one this CPU lacks),
    /// else [`best`](Self::best).
    pub fn active() -> Result<Family> {
        let v = match std::env::var(ENV_VAR) {
            Ok(v) if !v.trim().is_empty() => v,
            _ => return Ok(Self::best()),
        };
        let f = match v.trim() {
            "portable" => Family::Portable,
            "avx2" => Family::Avx2,
            "avx512" => Family::Avx512,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "{ENV_VAR}: unknown kernel family {other:?}; expected portable, avx2 or avx512"
                )))
            }
        };
        if !f.is_supported() {
            return Err(Error::InvalidArgument(format!(
                "{ENV_VAR}={}: this CPU cannot run that kernel family",
                f.name()
            )));
        }
        Ok(f)
    }

    /// For infallible callers: [`active`](Self::active), or [`best`](Self::best) when
    /// `BSA_KERNEL` is invalid (the fallible entry points report that as an error first).
    pub fn current() -> Family {
        Self::active().unwrap_or_else(|_| Self::best())
    }
}
