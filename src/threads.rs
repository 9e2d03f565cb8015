//! Thread counts for the two pools bsa uses: rayon's (our own parallel loops) and OpenBLAS's
//! (inside GEMMs). They never nest: BLAS is only called from the thread that drives a step.

use crate::error::{Error, Result};

extern "C" {
    // Provided by libopenblas, which blas-src links.
    fn openblas_set_num_threads(num_threads: std::ffi::c_int);
}

/// Sizes both pools to `threads` (`None`: all cores). Call once, before any parallel work.
pub fn configure(threads: Option<usize>) -> Result<usize> {
    let threads = threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if threads == 0 {
        return Err(Error::InvalidArgument(
            "--threads must be at least 1".into(),
        ));
    }
    // An error here means the global pool was already built (by an earlier call in the same
    // process, e.g. in tests); keeping the existing pool is the right thing then.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    set_blas_threads(threads);
    Ok(threads)
}

/// Sets the number of threads OpenBLAS uses inside one GEMM.
pub fn set_blas_threads(threads: usize) {
    let n = std::ffi::c_int::try_from(threads.max(1)).unwrap_or(std::ffi::c_int::MAX);
    // SAFETY: a plain setter of OpenBLAS's global thread count; it takes an int and touches no
    // memory of ours.
    unsafe { openblas_set_num_threads(n) };
}
