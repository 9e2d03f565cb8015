//! Thread counts for the two pools bsa uses: rayon's (our own parallel loops) and OpenBLAS's
//! (inside GEMMs). They never nest: BLAS is only called from the thread that drives a step.
//! Also the choice of OpenBLAS's kernels when its CPU table is older than the CPU
//! ([`fix_blas_core`]).

use crate::error::{Error, Result};

unsafe extern "C" {
    // Provided by libopenblas, which blas-src links.
    fn openblas_set_num_threads(num_threads: std::ffi::c_int);
    fn openblas_get_num_threads() -> std::ffi::c_int;
}

/// The most threads [`configure`] accepts: many times the cores of any machine bsa runs on
/// (more only adds switching), and far below where starting them fails or takes long.
pub const MAX_THREADS: usize = 1024;

/// Sizes both pools to `threads` (`None`: all cores). Call once, before any parallel work (and
/// after [`fix_blas_core`], which a program calls first).
pub fn configure(threads: Option<usize>) -> Result<usize> {
    let threads = threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if !(1..=MAX_THREADS).contains(&threads) {
        return Err(Error::InvalidArgument(format!(
            "--threads must be in 1..={MAX_THREADS}, got {threads} (this machine has {} cores)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        )));
    }
    // The global pool can be built once per process: a later call (tests run many commands
    // in one process) keeps the existing pool, which is right. Any other error (the threads
    // could not be started) is the caller's.
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        && !e.to_string().contains("already been initialized")
    {
        return Err(Error::InvalidArgument(format!(
            "could not start {threads} threads: {e}; give fewer with --threads"
        )));
    }
    set_blas_threads(threads);
    Ok(threads)
}

/// OpenBLAS cores with AVX2 (or AVX-512) kernels, as `openblas_get_corename` names them.
const VECTOR_CORES: [&str; 5] = ["haswell", "zen", "skylakex", "cooperlake", "sapphirerapids"];

/// Makes OpenBLAS use AVX2 or AVX-512 kernels when it fell back to old SSE ones on a CPU that
/// has them, and returns the core it now uses (`None` when nothing was changed).
///
/// A `DYNAMIC_ARCH` OpenBLAS picks its kernels from a table of CPU models; a CPU newer than the
/// library gets the generic `Prescott` (SSE3) kernels. Debian 12's OpenBLAS 0.3.21 does that on
/// Emerald Rapids Xeons (family 6, model 207), which makes every GEMM about 3 times slower. Here
/// the choice follows the trainer's [`Family`](crate::simd::Family) (so `BSA_KERNEL` caps it):
/// `SkylakeX` for AVX-512, `Haswell` for AVX2. Left alone: a user's `OPENBLAS_CORETYPE`, a
/// core OpenBLAS recognised as having AVX2, the portable family, and an OpenBLAS without
/// dynamic kernels (static, or not found by `dlsym`: nothing to do).
///
/// The first call decides: later calls return its result and change nothing.
///
/// ```
/// // At the start of a program, before it starts threads (the command line's `main` does).
/// // SAFETY: no other thread runs yet.
/// let core = unsafe { bsa::threads::fix_blas_core(bsa::simd::Family::current()) };
/// if let Some(core) = core {
///     println!("OpenBLAS now runs its {core} kernels");
/// }
/// ```
///
/// # Safety
///
/// No BLAS product may run in any thread during the call (OpenBLAS's kernel table is swapped,
/// not locked), and no other thread may read or write the environment (`OPENBLAS_CORETYPE` is
/// set and removed, as [`std::env::set_var`] does it): call it at the start of a program,
/// before it starts threads.
pub unsafe fn fix_blas_core(family: crate::simd::Family) -> Option<String> {
    static FIXED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    // SAFETY: the caller's.
    FIXED
        .get_or_init(|| unsafe { swap_blas_core(family) })
        .clone()
}

/// [`fix_blas_core`]'s work, each time it is called. Safety: [`fix_blas_core`]'s.
unsafe fn swap_blas_core(family: crate::simd::Family) -> Option<String> {
    use crate::simd::Family;
    if std::env::var_os("OPENBLAS_CORETYPE").is_some() {
        return None;
    }
    let want = match family {
        Family::Avx512 => "SkylakeX",
        Family::Avx2 => "Haswell",
        Family::Portable => return None,
    };
    let now = blas_core_name()?;
    if VECTOR_CORES.contains(&now.to_ascii_lowercase().as_str()) {
        return None;
    }
    let (init, quit) = (
        dynamic_symbol(c"gotoblas_dynamic_init")?,
        dynamic_symbol(c"gotoblas_dynamic_quit")?,
    );
    // OpenBLAS reads OPENBLAS_CORETYPE when it picks its kernels: set it, make it pick again,
    // then remove it so that child processes see the environment they were given.
    // SAFETY: no other thread reads or writes the environment meanwhile (the caller's promise).
    unsafe { std::env::set_var("OPENBLAS_CORETYPE", want) };
    // SAFETY: both are `void f(void)` in every DYNAMIC_ARCH OpenBLAS: `quit` clears the kernel
    // table pointer, `init` reads the variable and installs (and initialises) that core's table.
    // No BLAS call is running (the caller's promise).
    unsafe {
        let quit: extern "C" fn() = std::mem::transmute(quit);
        let init: extern "C" fn() = std::mem::transmute(init);
        quit();
        init();
    }
    // SAFETY: as for `set_var` above.
    unsafe { std::env::remove_var("OPENBLAS_CORETYPE") };
    blas_core_name()
}

/// The kernels OpenBLAS uses (`openblas_get_corename`), e.g. `Haswell`, when the linked OpenBLAS
/// exports that function.
pub fn blas_core_name() -> Option<String> {
    let f = dynamic_symbol(c"openblas_get_corename")?;
    // SAFETY: `char *openblas_get_corename(void)` returns a static NUL-terminated string.
    unsafe {
        let f: extern "C" fn() -> *const std::ffi::c_char = std::mem::transmute(f);
        let p = f();
        (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
    }
}

/// Looks a function up among the loaded libraries, so that an OpenBLAS without it still links.
#[cfg(target_os = "linux")]
fn dynamic_symbol(name: &std::ffi::CStr) -> Option<*mut std::ffi::c_void> {
    unsafe extern "C" {
        fn dlsym(
            handle: *mut std::ffi::c_void,
            symbol: *const std::ffi::c_char,
        ) -> *mut std::ffi::c_void;
    }
    // RTLD_DEFAULT is the null handle on Linux: search the global scope.
    // SAFETY: dlsym only reads the NUL-terminated name.
    let p = unsafe { dlsym(std::ptr::null_mut(), name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

#[cfg(not(target_os = "linux"))]
fn dynamic_symbol(_name: &std::ffi::CStr) -> Option<*mut std::ffi::c_void> {
    None
}

/// The number of threads OpenBLAS uses inside one GEMM.
pub fn blas_threads() -> usize {
    // SAFETY: a plain getter of OpenBLAS's global thread count.
    usize::try_from(unsafe { openblas_get_num_threads() })
        .unwrap_or(1)
        .max(1)
}

/// Sets the number of threads OpenBLAS uses inside one GEMM.
pub fn set_blas_threads(threads: usize) {
    let n = std::ffi::c_int::try_from(threads.max(1)).unwrap_or(std::ffi::c_int::MAX);
    // SAFETY: a plain setter of OpenBLAS's global thread count; it takes an int and touches no
    // memory of ours.
    unsafe { openblas_set_num_threads(n) };
}

/// Tests: `f` in a rayon pool of `threads` threads, with OpenBLAS also at `threads` (reset to
/// one after), so a test sees every thread-count-dependent path of both.
#[cfg(test)]
pub(crate) fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    set_blas_threads(threads);
    let out = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f);
    set_blas_threads(1);
    out
}
