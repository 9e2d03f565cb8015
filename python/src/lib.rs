//! The `bsa` Python module: numpy arrays in, numpy arrays out, over the `bsa` and `bsa-index`
//! crates. Nothing is computed here: this file converts arguments, releases the GIL around the
//! library calls and converts results and errors. Search and build go through `bsa::query` and
//! `bsa::pipeline`, the same calls as `bsa search` and `bsa build`, so the results are the same
//! bytes. The docstrings are the Python documentation (`help(bsa.Index.search)`); the signatures
//! are repeated in `bsa.pyi` for type checkers.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bsa::baselines::BaselineParams;
use bsa::live::AddSource;
use bsa::model::{Autoencoder, FrozenModel, LossKind, Method, Target};
use bsa::pipeline::{build_index_notifying, BuildRequest, BuildSource, GraphOn};
use bsa::query::{check_rows, Queries, Request};
use bsa::train::{Progress, TrainParams};
use bsa_index::live::{IdFilter, Snapshot, Writer};
use bsa_index::{HnswParams, LockWait, OpenOptions, VectorDtype};
use ndarray::{Array2, ArrayView2};
use numpy::{
    PyArray1, PyArray2, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray2, PyUntypedArray,
    PyUntypedArrayMethods, ToPyArray,
};
use pyo3::exceptions::{
    PyFileExistsError, PyFileNotFoundError, PyMemoryError, PyOSError, PyPermissionError,
    PyRuntimeError, PyTypeError, PyUserWarning, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

pyo3::create_exception!(
    bsa,
    FormatError,
    PyValueError,
    "A file is not what bsa expects: a damaged, truncated or foreign index or model file. The \
     message names the file and what to do."
);

/// A bsa error as the Python exception a caller would catch for it: bad arguments as
/// `ValueError`, missing or unreadable files as `OSError` (`FileNotFoundError`, ...), damaged
/// files as `bsa.FormatError` (a `ValueError`), a writer's lock held past `lock_timeout` as
/// `TimeoutError`, a diverged fit as `RuntimeError`; the message is
/// bsa's, which names the file, the row or the numbers that disagree.
fn py_err(e: bsa::Error) -> PyErr {
    use bsa::Error as E;
    use bsa_index::Error as I;
    match &e {
        E::Io { error, .. } | E::Index(I::Io { error, .. }) => io_err(error, e.to_string()),
        E::InvalidArgument(_)
        | E::Index(I::InvalidArgument(_))
        | E::DimMismatch { .. }
        | E::BadRow { .. }
        | E::Index(I::DimMismatch { .. }) => PyValueError::new_err(bare(e)),
        E::Index(I::LockTimeout { .. }) => pyo3::exceptions::PyTimeoutError::new_err(bare(e)),
        E::Format { .. } | E::Index(_) => FormatError::new_err(e.to_string()),
        _ => PyRuntimeError::new_err(e.to_string()),
    }
}

/// The `OSError` of `error`: with the system's error number when there is one (`e.errno ==
/// errno.ENOSPC`; Python picks the subclass, `FileNotFoundError` for `ENOENT`), else the subclass
/// of its kind (bsa's own errors of a kind, "no such index directory" say, have no number).
fn io_err(error: &std::io::Error, msg: String) -> PyErr {
    use std::io::ErrorKind as K;
    if let Some(errno) = error.raw_os_error() {
        return PyOSError::new_err((errno, msg));
    }
    match error.kind() {
        K::NotFound => PyFileNotFoundError::new_err(msg),
        K::AlreadyExists => PyFileExistsError::new_err(msg),
        K::PermissionDenied => PyPermissionError::new_err(msg),
        K::NotADirectory => pyo3::exceptions::PyNotADirectoryError::new_err(msg),
        K::IsADirectory => pyo3::exceptions::PyIsADirectoryError::new_err(msg),
        _ => PyOSError::new_err(msg),
    }
}

fn index_err(e: bsa_index::Error) -> PyErr {
    py_err(bsa::Error::Index(e))
}

/// The pool a call of `threads` threads runs on: that size's (see [`pool_of`]), or for the
/// default, all cores, none: the call runs on its own thread and its parallel loops on rayon's
/// global pool, so that what it waits for (an index's writers, a lock another call holds while
/// its loops run) is waited for on no pool's worker. A worker waiting inside a loop takes on
/// other calls' jobs; one that waited there for a lock its own loop's caller held never
/// returned. In a process forked after bsa ran, the global pool has no threads (and cannot be
/// replaced): there the default is the all-cores pool of [`pool_of`].
fn call_pool(threads: Option<usize>) -> PyResult<Option<Arc<rayon::ThreadPool>>> {
    match threads {
        Some(t) => pool_of(t).map(Some),
        None if FORKS.load(Ordering::Relaxed) > 0 => pool_of(default_threads()).map(Some),
        None => Ok(None),
    }
}

/// All cores (at most [`bsa::threads::MAX_THREADS`]), found once: the cgroup files behind
/// `available_parallelism` cost tens of microseconds a call.
fn default_threads() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(bsa::threads::MAX_THREADS)
    })
}

/// Runs `f` without the GIL, so that other Python threads run meanwhile, on the pool of
/// [`call_pool`].
fn detached<T: Send>(
    py: Python<'_>,
    threads: Option<usize>,
    f: impl FnOnce() -> T + Send,
) -> PyResult<T> {
    let pool = call_pool(threads)?;
    Ok(py.detach(|| match pool {
        Some(p) => p.install(f),
        None => f(),
    }))
}

/// [`detached`] for the library's fallible calls.
fn without_gil<T: Send>(
    py: Python<'_>,
    threads: Option<usize>,
    f: impl FnOnce() -> bsa::Result<T> + Send,
) -> PyResult<T> {
    detached(py, threads, f)?.map_err(py_err)
}

/// The index directories this process's calls are changing (or building over), one call each:
/// a second waits here, on its own thread, before it runs on a pool. Two changes of one index
/// sent to one pool met inside it: the second, taken on by a worker of the first's loops, found
/// the writers' lock held by its own thread ("this thread already holds ...") or waited for it
/// there for ever. Other processes' writers are waited for by the lock itself.
struct Changing(PathBuf);

impl Changing {
    /// Waits (checking `stop` every 100 ms) until no other call of this process changes `dir`,
    /// as a writer waits for another's lock: calling `on_wait` first (unless `timeout` is
    /// zero; a change warns), and for
    /// at most `timeout` (then [`bsa_index::Error::LockTimeout`]). Returns what is left of
    /// `timeout` for the lock itself.
    fn wait(
        dir: &Path,
        stop: &AtomicBool,
        timeout: Option<std::time::Duration>,
        on_wait: impl FnOnce(),
    ) -> bsa::Result<(Changing, Option<std::time::Duration>)> {
        let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let started = std::time::Instant::now();
        let mut on_wait = Some(on_wait);
        let mut busy = CHANGING.0.lock().unwrap_or_else(PoisonError::into_inner);
        while busy.contains(&key) {
            bsa_index::check_stop(Some(stop))?;
            let mut nap = std::time::Duration::from_millis(100);
            if let Some(t) = timeout {
                let waited = started.elapsed();
                if waited >= t {
                    return Err(bsa_index::Error::LockTimeout {
                        dir: dir.to_path_buf(),
                        timeout: t,
                        holder: bsa::bsa_index::live::LockHolder::of(dir),
                    }
                    .into());
                }
                nap = nap.min(t - waited);
            }
            if let Some(f) = on_wait
                .take()
                .filter(|_| timeout != Some(std::time::Duration::ZERO))
            {
                // Not under the set's lock: a warning takes the GIL.
                drop(busy);
                f();
                busy = CHANGING.0.lock().unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            busy = CHANGING
                .1
                .wait_timeout(busy, nap)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        busy.insert(key.clone());
        let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
        Ok((Changing(key), left))
    }

    /// [`Changing::wait`] for each of `dirs` (a copy's source and destination), one after the
    /// other in the order of their keys, whatever the order given: two calls waiting for the
    /// same two directories (a save of A to B and one of B to A) would otherwise each hold
    /// one and wait for the other for ever. A directory given twice is waited for once.
    fn wait_all(
        dirs: &[&Path],
        stop: &AtomicBool,
        timeout: Option<std::time::Duration>,
    ) -> bsa::Result<(Vec<Changing>, Option<std::time::Duration>)> {
        let mut keyed: Vec<(PathBuf, &Path)> = dirs
            .iter()
            .map(|d| (d.canonicalize().unwrap_or_else(|_| d.to_path_buf()), *d))
            .collect();
        keyed.sort();
        keyed.dedup_by(|a, b| a.0 == b.0);
        let (mut held, mut left) = (Vec::with_capacity(keyed.len()), timeout);
        for (_, dir) in keyed {
            let (guard, rest) = Changing::wait(dir, stop, left, || warn_waiting(dir))?;
            held.push(guard);
            left = rest;
        }
        Ok((held, left))
    }
}

impl Drop for Changing {
    fn drop(&mut self) {
        let mut busy = CHANGING.0.lock().unwrap_or_else(PoisonError::into_inner);
        busy.remove(&self.0);
        CHANGING.1.notify_all();
    }
}

/// The directories of [`Changing`] and the condition their ends signal.
static CHANGING: (Mutex<BTreeSet<PathBuf>>, std::sync::Condvar) =
    (Mutex::new(BTreeSet::new()), std::sync::Condvar::new());

/// [`without_gil`] for long computations that poll `stop`: `f` runs on another thread (in the
/// pool of [`call_pool`]) while this one waits, checking for signals every 100 ms. Ctrl-C (a
/// `KeyboardInterrupt`, or whatever a signal handler raises) sets `stop` and is raised once `f`
/// has returned (unless `f` made a change: see [`run_interruptible`]). Python runs signal
/// handlers only on its main thread, which a computation run there would keep busy until it
/// ends.
fn interruptible<T: Send>(
    py: Python<'_>,
    threads: Option<usize>,
    f: impl FnOnce(&Arc<AtomicBool>) -> bsa::Result<T> + Send,
) -> PyResult<T> {
    run_interruptible(py, threads, None, |stop, _| f(stop))
}

/// [`interruptible`] for a change of (or a build over) the index directory `dir`: other calls
/// of this process changing it are waited for first ([`Changing`]), for at most `lock_timeout`,
/// and `f` gets what is left of it for the writers' lock.
fn changing<T: Send>(
    py: Python<'_>,
    threads: Option<usize>,
    dir: &Path,
    lock_timeout: Option<std::time::Duration>,
    f: impl FnOnce(&Arc<AtomicBool>, Option<std::time::Duration>) -> bsa::Result<T> + Send,
) -> PyResult<T> {
    run_interruptible(py, threads, Some((&[dir], lock_timeout)), f)
}

/// [`interruptible`] and [`changing`]: `changes` is the directories the call holds (the one it
/// changes first: a copy also holds its source, see [`Changing::wait_all`]) and the lock
/// timeout.
fn run_interruptible<T: Send>(
    py: Python<'_>,
    threads: Option<usize>,
    changes: Option<(&[&Path], Option<std::time::Duration>)>,
    f: impl FnOnce(&Arc<AtomicBool>, Option<std::time::Duration>) -> bsa::Result<T> + Send,
) -> PyResult<T> {
    use std::sync::mpsc::{channel, RecvTimeoutError};
    let pool = call_pool(threads)?;
    // Shared (an `Arc`) for the writers of the live index, which keep it.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, finished) = channel::<()>();
    std::thread::scope(|s| {
        let (stop, pool) = (&stop, &pool);
        let worker = s.spawn(move || {
            let out = changes
                .map(|(dirs, timeout)| Changing::wait_all(dirs, stop, timeout))
                .transpose()
                .and_then(|changing| {
                    // The guards live until `f` has returned: the next change waits for them.
                    let (_changing, left) = match changing {
                        Some((guards, left)) => (guards, left),
                        None => (Vec::new(), None),
                    };
                    let out = match pool {
                        Some(p) => p.install(|| f(stop, left)),
                        None => f(stop, left),
                    };
                    // The lock's wait had what was left of the timeout: the message says the
                    // caller's, as the whole wait took it.
                    match (out, changes.and_then(|(_, t)| t)) {
                        (
                            Err(bsa::Error::Index(bsa_index::Error::LockTimeout {
                                dir,
                                holder,
                                ..
                            })),
                            Some(timeout),
                        ) => Err(bsa::Error::Index(bsa_index::Error::LockTimeout {
                            dir,
                            timeout,
                            holder,
                        })),
                        (out, _) => out,
                    }
                });
            drop(done);
            out
        });
        let mut interrupted = None;
        let mut finished = finished;
        // Ends when `done` is dropped: `f` returned or panicked.
        loop {
            // The receiver goes into the GIL-free closure and back (it is not `Sync`).
            let (waited, back) = py.detach(move || {
                let waited = finished.recv_timeout(std::time::Duration::from_millis(100));
                (waited, finished)
            });
            finished = back;
            if waited != Err(RecvTimeoutError::Timeout) {
                break;
            }
            if interrupted.is_none() {
                if let Err(e) = py.check_signals() {
                    stop.store(true, Ordering::Relaxed);
                    interrupted = Some(e);
                }
            }
        }
        let out = py.detach(|| worker.join());
        if let (Some((&[dir, ..], _)), Ok(Ok(_))) = (changes, &out) {
            // A change made: a Ctrl-C that came too late to stop it (during its commit, or in
            // a call shorter than the 100 ms between checks, still pending now) does not turn
            // it into a KeyboardInterrupt, which says "not made", so that code retrying
            // interrupted changes does not add the rows twice. As `bsa add` notes such a
            // signal on stderr, it is a warning here. What other signal handlers raise (a
            // SIGTERM handler's SystemExit, an alarm's timeout) is raised, as Python would.
            match interrupted.or_else(|| py.check_signals().err()) {
                Some(e) if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) => {
                    warn_made_anyway(py, dir)
                }
                Some(e) => return Err(e),
                None => {}
            }
        } else if let Some(e) = interrupted {
            return Err(e);
        }
        match out {
            Ok(out) => out.map_err(py_err),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The warning of a change to `dir` that a Ctrl-C (`KeyboardInterrupt`) came too late to
/// stop.
fn warn_made_anyway(py: Python<'_>, dir: &Path) {
    let msg = format!(
        "Ctrl-C (KeyboardInterrupt) came once the change to {} was committed: it is made, and \
         the call returns as without it",
        dir.display()
    );
    if let Ok(msg) = std::ffi::CString::new(msg) {
        // A warnings filter set to "error" makes this fail: the change is made regardless.
        let _ = PyErr::warn(py, &py.get_type::<PyUserWarning>(), &msg, 1);
    }
}

/// Rows above which a model's encode, decode or eval runs [`interruptible`] (Ctrl-C stops
/// it); fewer make a short call, not worth the thread that waits for the signal.
const INTERRUPTIBLE_ROWS: usize = 4096;

/// [`interruptible`] when the work is `long`, else [`without_gil`] on this thread with a flag
/// never set: a short call (one query, a few rows) does not pay for the waiting thread.
fn interruptible_if<T: Send>(
    py: Python<'_>,
    threads: Option<usize>,
    long: bool,
    f: impl FnOnce(&Arc<AtomicBool>) -> bsa::Result<T> + Send,
) -> PyResult<T> {
    if long {
        interruptible(py, threads, f)
    } else {
        without_gil(py, threads, || f(&Arc::new(AtomicBool::new(false))))
    }
}

/// Runs `f` (a computation with BLAS products) with OpenBLAS's thread count set to `threads`
/// (`None`: as it is), as `bsa train --threads` sets it for its process, and puts it back.
/// The count is one per process: such computations run one at a time, so that two of them in
/// Python threads cannot set and restore it out of order (each uses every core it is given
/// anyway). Called with the GIL released (a fit reports progress through Python).
fn with_blas_threads<T>(threads: Option<usize>, f: impl FnOnce() -> T) -> T {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let before = bsa::threads::blas_threads();
    if let Some(t) = threads {
        bsa::threads::set_blas_threads(t);
    }
    let out = f();
    bsa::threads::set_blas_threads(before);
    out
}

/// Forks this process has been through, counted in each child (`os.register_at_fork`, set up
/// by the module): a pool started before a fork has no threads in the child, where a call sent
/// to it would wait forever (`multiprocessing`'s "fork" start method).
static FORKS: AtomicU64 = AtomicU64::new(0);

/// Called by Python in the child of each `os.fork`.
#[pyfunction]
fn after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// The pool of `threads` threads a call given them runs on ([`call_pool`]), started at its first
/// use and kept: starting and joining threads at every call cost a one-query search (0.43 ms
/// with `threads=1` against 0.24 ms on a kept pool, 1M-row ADC graph at ef 64) about as much
/// again as the search. A pool of one thread is kept per calling thread: Python threads that
/// each search with `threads=1` (a server's pattern) all queued on one shared worker (four
/// threads searching a quarter of a batch each took as long as one thread doing all four
/// quarters); larger pools are shared by size, so that many Python threads do not each keep
/// several.
///
/// A child forked after the parent started a pool inherits it without its threads: pools
/// started before a fork are abandoned in the child (leaked: dropping one signals threads that
/// are not there), and new ones started. The pools' lock is only taken with the GIL held, as
/// `os.fork` holds it, so a fork never leaves it locked (other locks, held by calls running in
/// other threads without the GIL, can be: fork while no other thread is inside bsa).
fn pool_of(threads: usize) -> PyResult<Arc<rayon::ThreadPool>> {
    const MAX_POOLS: usize = 8;
    type Pools = (u64, BTreeMap<usize, Arc<rayon::ThreadPool>>);
    static POOLS: Mutex<Pools> = Mutex::new((0, BTreeMap::new()));
    thread_local! {
        static ONE: RefCell<Option<(u64, Arc<rayon::ThreadPool>)>> = const { RefCell::new(None) };
    }
    if !(1..=bsa::threads::MAX_THREADS).contains(&threads) {
        return Err(PyValueError::new_err(format!(
            "threads must be in 1..={}, got {threads}",
            bsa::threads::MAX_THREADS
        )));
    }
    let forks = FORKS.load(Ordering::Relaxed);
    let kept = if threads == 1 {
        ONE.with_borrow_mut(|one| match one.take() {
            Some((f, p)) if f == forks => {
                *one = Some((f, Arc::clone(&p)));
                Some(p)
            }
            Some(stale) => {
                std::mem::forget(stale);
                None
            }
            None => None,
        })
    } else {
        let mut pools = POOLS.lock().unwrap_or_else(PoisonError::into_inner);
        if pools.0 != forks {
            std::mem::forget(std::mem::take(&mut pools.1));
            pools.0 = forks;
        }
        pools.1.get(&threads).cloned()
    };
    if let Some(p) = kept {
        return Ok(p);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("bsa-{threads}-{i}"))
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start {threads} threads: {e}")))?;
    let pool = Arc::new(pool);
    if threads == 1 {
        ONE.set(Some((forks, Arc::clone(&pool))));
    } else {
        // A panic elsewhere while the lock was held leaves the map whole (inserts are single
        // calls). A program that tries many sizes keeps the threads of the last few only, and
        // no more threads than a few per core (eight calls with threads=1000..1007 on two
        // cores kept 8,000 threads: a review's finding): a pool past that serves its call and
        // ends with it (a pool still in use by a call lives on until that call ends: the call
        // holds it).
        let budget = (4 * default_threads()).max(16);
        if threads <= budget {
            let mut pools = POOLS.lock().unwrap_or_else(PoisonError::into_inner);
            let kept: usize = pools.1.keys().sum();
            if pools.1.len() >= MAX_POOLS || kept + threads > budget {
                pools.1.clear();
            }
            pools.1.insert(threads, Arc::clone(&pool));
        }
    }
    Ok(pool)
}

/// An `nq x k` matrix of `v`, or `MemoryError` (not an abort) when it cannot be allocated.
fn filled<T: Clone>(nq: usize, k: usize, v: T) -> PyResult<Array2<T>> {
    let too_large = || {
        PyMemoryError::new_err(format!(
            "{nq} queries x k = {k} results do not fit in memory; ask for fewer neighbours"
        ))
    };
    let n = nq.checked_mul(k).ok_or_else(too_large)?;
    let mut data = Vec::new();
    data.try_reserve_exact(n).map_err(|_| too_large())?;
    data.resize(n, v);
    Ok(Array2::from_shape_vec((nq, k), data).expect("nq x k values"))
}

/// `obj` as a numpy array (lists and objects with `__array__` go through `numpy.asarray`).
fn as_array<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Bound<'py, PyUntypedArray>> {
    if let Ok(a) = obj.cast::<PyUntypedArray>() {
        return Ok(a.clone());
    }
    // numpy makes None a 0-d object array, whose dtype the checks below would name: say None.
    if obj.is_none() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a numpy array, got None"
        )));
    }
    let py = obj.py();
    let not_an_array = || {
        PyTypeError::new_err(format!(
            "{name} must be a numpy array, got {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    };
    let array = py
        .import("numpy")?
        .call_method1("asarray", (obj,))
        .map_err(|e| {
            // Ctrl-C, and memory and I/O errors, in an `__array__` (a lazy tensor's, a file
            // reader's) go on as they are; anything else is said as this argument's type, with
            // numpy's error as its cause.
            let as_is = e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
                || e.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
                || e.is_instance_of::<PyMemoryError>(py)
                || e.is_instance_of::<PyOSError>(py);
            if as_is {
                return e;
            }
            let t = not_an_array();
            t.set_cause(py, Some(e));
            t
        })?;
    array
        .cast_into::<PyUntypedArray>()
        .map_err(|_| not_an_array())
}

/// How many rows an input array may have.
#[derive(Clone, Copy, PartialEq)]
enum Rows {
    /// Data to fit, build or evaluate from: at least one row.
    Some,
    /// A batch to answer row by row (queries, rows to encode or decode): an empty batch gets
    /// empty answers, as FAISS gives them, so that a caller's last batch needs no special case.
    Any,
}

/// Checks that `a` is 2-D with at least one column and the rows `rows` asks for.
fn check_2d(a: &Bound<'_, PyUntypedArray>, name: &str, what: &str, rows: Rows) -> PyResult<()> {
    let shape = a.shape();
    if a.ndim() != 2 {
        let hint = if a.ndim() == 1 {
            format!("; for a single vector use {name}.reshape(1, -1)")
        } else {
            String::new()
        };
        return Err(PyValueError::new_err(format!(
            "{name} must be a 2-D array ({what}), got shape {}{hint}",
            shape_str(shape)
        )));
    }
    if (shape[0] == 0 && rows == Rows::Some) || shape[1] == 0 {
        return Err(PyValueError::new_err(format!(
            "{name} is empty (shape {}); it needs at least one row and one column",
            shape_str(shape)
        )));
    }
    Ok(())
}

fn shape_str(shape: &[usize]) -> String {
    match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn dtype_str(a: &Bound<'_, PyUntypedArray>) -> String {
    a.dtype().to_string()
}

/// `a` as a C-contiguous, aligned array of `dtype`: `numpy.require` copies it only when it is
/// not one already (`ascontiguousarray` keeps a misaligned array as it is, and a view of
/// misaligned values is undefined behaviour in Rust).
fn contiguous<'py>(
    a: Bound<'py, PyAny>,
    dtype: Bound<'py, numpy::PyArrayDescr>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = a.py();
    py.import("numpy")?
        .call_method1("require", (a, dtype, ["C", "A"]))
}

/// `a` as a C-contiguous native float32 matrix: the array itself when it is one (zero copy),
/// else a converted copy (float16, float64, other byte orders and layouts).
fn float32_matrix<'py>(
    a: Bound<'py, PyUntypedArray>,
    name: &str,
    rows: Rows,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let py = a.py();
    if a.dtype().kind() != b'f' {
        return Err(PyTypeError::new_err(format!(
            "{name} must hold floats (float32; float16 and float64 are converted), got dtype {}",
            dtype_str(&a)
        )));
    }
    check_2d(&a, name, "n vectors x dimension", rows)?;
    // Any float wider than float32 (float64 of either byte order, longdouble).
    if a.dtype().itemsize() > 4 {
        // Checked before numpy's conversion, which makes such values inf (with its own
        // warning) for bsa to report as "+infinity", a value the array does not hold.
        let cols = a.shape()[1];
        let wide = contiguous(a.clone().into_any(), numpy::dtype::<f64>(py))?;
        let wide = wide.cast_into::<PyArray2<f64>>()?;
        bsa::io::check_float32_range(wide.readonly().as_slice()?, cols)
            .map_err(|d| PyValueError::new_err(format!("{name}: {d}")))?;
    }
    let native = a.dtype().is_equiv_to(&numpy::dtype::<f32>(py));
    // A view of misaligned floats (e.g. `buf[1:].view(np.float32)`) is undefined behaviour in
    // Rust: numpy copies those too.
    let aligned: bool = a.getattr("flags")?.getattr("aligned")?.extract()?;
    let a = if native && aligned && a.is_c_contiguous() {
        a.into_any()
    } else {
        contiguous(a.into_any(), numpy::dtype::<f32>(py))?
    };
    Ok(a.cast_into::<PyArray2<f32>>()?)
}

/// `a` as a C-contiguous uint8 matrix of packed codes (zero copy when it is one).
fn code_matrix<'py>(
    a: Bound<'py, PyUntypedArray>,
    name: &str,
    rows: Rows,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let py = a.py();
    if !a.dtype().is_equiv_to(&numpy::dtype::<u8>(py)) {
        let hint = if a.dtype().kind() == b'b' {
            "; pack booleans with numpy.packbits(b, axis=1, bitorder=\"little\")"
        } else {
            ""
        };
        return Err(PyTypeError::new_err(format!(
            "{name} must be packed codes of dtype uint8 (numpy.packbits(..., bitorder=\"little\") \
             rows), got dtype {}{hint}",
            dtype_str(&a)
        )));
    }
    check_2d(&a, name, "n codes x bytes per code", rows)?;
    let a = if a.is_c_contiguous() {
        a.into_any()
    } else {
        py.import("numpy")?
            .call_method1("ascontiguousarray", (a,))?
    };
    Ok(a.cast_into::<PyArray2<u8>>()?)
}

/// A borrowed matrix view of a C-contiguous array.
fn view2<'a, T: numpy::Element>(a: &'a PyReadonlyArray2<'_, T>) -> ArrayView2<'a, T> {
    a.as_array()
}

/// An integer argument: a Python int, or anything with `__index__` (numpy's integers), but not
/// a bool, which Python counts as an int (`index.search(q, True)` searched for the top 1).
/// Taken as `i128`, so that a Python int past int64 is the argument's own check's `ValueError`
/// naming it, not pyo3's nameless `OverflowError`. Functions with an `Int` default give their
/// `text_signature`: pyo3 shows a default that is not a literal (`Int(10)`) as `...`.
#[derive(Clone, Copy, Debug)]
struct Int(i128);

impl<'a, 'py> FromPyObject<'a, 'py> for Int {
    type Error = PyErr;

    fn extract(obj: pyo3::Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_instance_of::<pyo3::types::PyBool>() {
            // pyo3 names the argument in a note ("while processing 'k'"), on Python 3.11 and
            // later (exception notes); earlier ones show this message alone.
            return Err(PyTypeError::new_err("an integer is required, got a bool"));
        }
        obj.extract::<i128>().map(Int)
    }
}

/// An optional positive integer argument ([`Int`]).
fn positive(name: &str, v: Option<Int>) -> PyResult<Option<usize>> {
    match v.map(|v| v.0) {
        None => Ok(None),
        Some(v) if v >= 1 => usize::try_from(v).map(Some).map_err(|_| {
            PyValueError::new_err(format!(
                "{name} is {v}, past any size this machine can hold"
            ))
        }),
        Some(v) => Err(PyValueError::new_err(format!(
            "{name} must be a positive integer, got {v}"
        ))),
    }
}

/// A duration in seconds given as `name`: 0 or more, and one a `Duration` holds (`None`: none
/// given, so no limit).
fn seconds(name: &str, v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<std::time::Duration>> {
    let Some(v) = v.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    // A bool is an int to Python (and numpy's converts to float), so True would quietly mean
    // one second.
    let numpy_bool = v.py().import("numpy")?.getattr("bool_")?;
    let secs: f64 =
        match v.is_instance_of::<pyo3::types::PyBool>() || v.is_instance(&numpy_bool)? {
            true => None,
            false => v.extract().ok(),
        }
        .ok_or_else(|| {
            let kind = v
                .get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string());
            PyTypeError::new_err(format!(
            "{name} must be a number of seconds (or None to wait as long as it takes), got {kind}"
        ))
        })?;
    std::time::Duration::try_from_secs_f64(secs)
        .map(Some)
        .map_err(|_| {
            PyValueError::new_err(if secs >= 0.0 {
                format!("{name}={secs} is too long: pass None to wait as long as it takes")
            } else {
                format!("{name} must be a number of seconds, 0 or more, got {secs}")
            })
        })
}

/// A JSON value as the Python object `json.loads` makes of it.
fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (v.to_string(),))
}

/// Writes a line to Python's `sys.stderr` (so notebooks show it), taking the GIL for it.
fn progress_line(line: String) {
    Python::attach(|py| {
        if let Ok(err) = py.import("sys").and_then(|s| s.getattr("stderr")) {
            let _ = err.call_method1("write", (line + "\n",));
            let _ = err.call_method0("flush");
        }
    });
}

/// Opens the index at `dir` for writing; if another writer holds it, warns (`UserWarning`)
/// before waiting, as `bsa add` says so on stderr: else a wait behind a long compaction in
/// another process looks like a hang. `stop` (Ctrl-C) ends the wait and the change, and
/// `lock_timeout` the wait (``TimeoutError``). `verify`:
/// the checksums of the generation changed are checked first, as ``bsa add`` and ``bsa delete``
/// check them (a change on a damaged file would carry the damage into a new generation).
fn open_writer(
    index: &Index,
    dir: &Path,
    stop: &Arc<AtomicBool>,
    verify: bool,
    lock_timeout: Option<std::time::Duration>,
) -> bsa::Result<Writer> {
    // Closed while this change waited for the in-process slot (`Index::close` takes it): the
    // change is not made, rather than made and then reported as failed.
    index.current()?;
    let wait = LockWait::new()
        .on_wait(|| warn_waiting(dir))
        .stop(Arc::clone(stop))
        .timeout(lock_timeout);
    let mut writer = Writer::open_waiting(dir, wait)?;
    if verify {
        writer.verify_checksums()?;
    }
    Ok(writer)
}

/// Warns (`UserWarning`) that a change of the index `dir` waits for another writer's lock.
/// Called with the GIL released, before the wait.
fn warn_waiting(dir: &Path) {
    let holder = match bsa::bsa_index::live::LockHolder::of(dir) {
        Some(h) => format!("{h}: "),
        None => String::new(),
    };
    let msg = format!(
        "waiting for another writer of {} to finish ({holder}an add, delete, compact or a \
         build with overwrite=True holds its lock)",
        dir.display()
    );
    if let Ok(msg) = std::ffi::CString::new(msg) {
        // A warnings filter set to "error" makes this fail: the wait goes on regardless.
        Python::attach(|py| {
            let _ = PyErr::warn(py, &py.get_type::<PyUserWarning>(), &msg, 1);
        });
    }
}

/// Warns (`UserWarning`) when rows of `x` (the argument `what`) are not of unit length and
/// `method`'s codes depend on a row's length, with `bsa`'s words ([`bsa::io::OffUnit::warning`]).
/// A warnings filter set to "error" makes it the call's exception. Rows of another width than
/// the model's `dim` are left to the call's own error.
fn warn_if_not_unit(
    py: Python<'_>,
    x: ArrayView2<'_, f32>,
    what: &str,
    (method, dim): (Method, usize),
) -> PyResult<()> {
    if !method.depends_on_length() || x.ncols() != dim {
        return Ok(());
    }
    if let Some(off) = bsa::io::off_unit_length(x) {
        if let Ok(msg) = std::ffi::CString::new(off.warning(what, x.nrows(), method)) {
            PyErr::warn(py, &py.get_type::<PyUserWarning>(), &msg, 1)?;
        }
    }
    Ok(())
}

/// Warns (`UserWarning`) of each directory a killed build of `dir` left beside it
/// ([`bsa_index::build_leftovers`], as `bsa build` says on stderr): an index-sized folder
/// nothing else points out. Not removed: another build may be writing it.
fn warn_leftovers(py: Python<'_>, dir: &Path) {
    for left in bsa_index::build_leftovers(dir) {
        let msg = bsa_index::leftover_advice(&left, dir);
        if let Ok(msg) = std::ffi::CString::new(msg) {
            let _ = PyErr::warn(py, &py.get_type::<PyUserWarning>(), &msg, 1);
        }
    }
}

/// A trained model: it encodes float vectors into sparse binary codes and decodes them back.
///
/// Make one with :func:`bsa.train` or :meth:`Model.load`.
///
/// Example::
///
///     import numpy as np, bsa
///     x = np.random.default_rng(0).standard_normal((2000, 64)).astype(np.float32)
///     x /= np.linalg.norm(x, axis=1, keepdims=True)  # compared by direction: unit rows
///     model = bsa.train(x, method="itq", bits=32)
///     codes = model.encode(x)          # uint8, (2000, 4): numpy.packbits(bitorder="little") rows
///     xhat = model.decode(codes)       # float32, (2000, 64)
///     model.save("itq.safetensors")
#[pyclass(frozen, module = "bsa", name = "Model")]
struct Model {
    /// Frozen: what searches derive from it (tables, Gram matrix) is kept without re-checking.
    inner: Arc<FrozenModel>,
    /// The `training` metadata saved with the model.
    training: serde_json::Value,
}

#[pymethods]
impl Model {
    /// Loads a model file written by :meth:`Model.save` or ``bsa train``.
    ///
    /// Example: ``model = bsa.Model.load("model.safetensors")``
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Model> {
        let (model, training) = py
            .detach(|| {
                // Read once: a pipe cannot be read twice, and a file replaced in between would
                // give another model's training record.
                let bytes = bsa::io::read_file(&path)?;
                let m = bsa::io::model::from_bytes(&bytes, &path)?;
                Ok::<_, bsa::Error>((m, bsa::io::model::training_info_from_bytes(&bytes, &path)?))
            })
            .map_err(py_err)?;
        Ok(Model {
            inner: Arc::new(FrozenModel::new(model)),
            training,
        })
    }

    /// Writes the model as a safetensors file (the same file ``bsa train`` writes; it opens
    /// with ``bsa encode --model``, ``bsa build --model`` and ``safetensors.numpy.load_file``).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        without_gil(py, None, || {
            bsa::io::model::save(&path, &self.inner, &self.training)
        })
    }

    /// The model file's bytes (what :meth:`save` writes), e.g. to keep a model in a database;
    /// :meth:`from_bytes` reads them back. Pickling (``pickle``, ``multiprocessing``) uses them.
    ///
    /// Example: ``same = bsa.Model.from_bytes(model.to_bytes())``
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = py
            .detach(|| bsa::io::model::to_bytes(&self.inner, &self.training))
            .map_err(py_err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Reads a model from the bytes of a model file (:meth:`to_bytes`, or a file's contents;
    /// ``bytes``, ``bytearray`` or ``memoryview``),
    /// with the checks of :meth:`load`.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Model> {
        // Any buffer of bytes: bytes, bytearray, memoryview (what database drivers return).
        let buffer = pyo3::buffer::PyBuffer::<u8>::get(data).map_err(|e| {
            let kind = data.get_type().name().map_or("?".into(), |n| n.to_string());
            PyTypeError::new_err(format!(
                "data must be a model file's bytes (bytes, bytearray, or a memoryview of bytes), \
                 not {kind}: {e}"
            ))
        })?;
        let data = buffer.to_vec(py)?;
        let data = data.as_slice();
        let (model, training) = py
            .detach(|| {
                let m = bsa::io::model::from_bytes(data, "<bytes>")?;
                Ok::<_, bsa::Error>((
                    m,
                    bsa::io::model::training_info_from_bytes(data, "<bytes>")?,
                ))
            })
            .map_err(py_err)?;
        Ok(Model {
            inner: Arc::new(FrozenModel::new(model)),
            training,
        })
    }

    /// Pickling: a model travels as its file's bytes.
    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        let from_bytes = py.get_type::<Model>().getattr("from_bytes")?;
        Ok((from_bytes, (self.to_bytes(py)?,)))
    }

    /// The codes of the rows of ``x`` (float, n x dim): uint8, n x ceil(bits / 8), bit j of a
    /// code in byte j // 8 at bit j % 8 (``numpy.packbits(bitorder="little")``, the layout of
    /// ``bsa encode`` and FAISS's binary indexes). ``threads``: default all cores. Ctrl-C stops
    /// the encoding of a large batch (``KeyboardInterrupt``).
    ///
    /// Example: ``codes = model.encode(x); bits = numpy.unpackbits(codes, axis=1, bitorder="little")``
    #[pyo3(signature = (x, *, threads=None))]
    fn encode<'py>(
        &self,
        x: &Bound<'py, PyAny>,
        threads: Option<Int>,
    ) -> PyResult<Bound<'py, PyArray2<u8>>> {
        let py = x.py();
        let threads = positive("threads", threads)?;
        let x = float32_matrix(as_array(x, "x")?, "x", Rows::Any)?;
        let x = x.readonly();
        let xv = view2(&x);
        let m = &self.inner;
        if xv.ncols() != m.config.dim {
            let e = bsa::Error::model_dim("x", m.config.dim, xv.ncols());
            return Err(PyValueError::new_err(e.to_string()));
        }
        warn_if_not_unit(py, xv, "x", (m.config.method, m.config.dim))?;
        let n = xv.nrows();
        let encode = |stop: &Arc<AtomicBool>| {
            check_rows("x", xv, false)?;
            m.encode_packed_until(xv, stop)
        };
        // Ctrl-C can stop a large batch (minutes for a million rows of a pursuit model).
        let codes = interruptible_if(py, threads, n > INTERRUPTIBLE_ROWS, encode)?;
        let cols = m.config.bits.div_ceil(8);
        let codes = Array2::from_shape_vec((n, cols), codes).expect("n x bytes per code");
        Ok(numpy::IntoPyArray::into_pyarray(codes, py))
    }

    /// The vectors the decoder rebuilds from packed ``codes`` (uint8, n x ceil(bits / 8), as
    /// :meth:`encode` makes them): float32, n x dim. Ctrl-C stops the decoding of a large batch
    /// (``KeyboardInterrupt``).
    fn decode<'py>(&self, codes: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let py = codes.py();
        let c = code_matrix(as_array(codes, "codes")?, "codes", Rows::Any)?;
        let c = c.readonly();
        let (rows, cols) = c.as_array().dim();
        let bytes = c.as_slice()?;
        let m = &self.inner;
        // Ctrl-C can stop a large batch (tens of seconds for half a million rows).
        let x = interruptible_if(py, None, rows > INTERRUPTIBLE_ROWS, |stop| {
            bsa::pipeline::decode_packed_until(m, bytes, rows, cols, stop)
                .map_err(|e| code_row_of(e, "codes"))
        })?;
        Ok(numpy::IntoPyArray::into_pyarray(x, py))
    }

    /// The paper's metrics of the model on ``x`` (as ``bsa eval --json``): a dict with ``n``,
    /// ``bits``, ``k``, ``reconstruction_loss``, ``reconstruction_mse``,
    /// ``fixed_topk_reconstruction_loss``, ``active_mean``, ``active_std``, ``dead_features`` and
    /// ``feature_frequency_quantiles``. ``threads``: default all cores. Ctrl-C stops the
    /// evaluation of a large set (``KeyboardInterrupt``).
    ///
    /// Example: ``model.eval(queries)["reconstruction_loss"]``
    #[pyo3(signature = (x, *, threads=None))]
    fn eval<'py>(
        &self,
        x: &Bound<'py, PyAny>,
        threads: Option<Int>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = x.py();
        let threads = positive("threads", threads)?;
        let x = float32_matrix(as_array(x, "x")?, "x", Rows::Some)?;
        let x = x.readonly();
        let xv = view2(&x);
        let m = &self.inner;
        if xv.ncols() != m.config.dim {
            let e = bsa::Error::model_dim("x", m.config.dim, xv.ncols());
            return Err(PyValueError::new_err(e.to_string()));
        }
        // Ctrl-C can stop a large set (it is encoded and decoded twice).
        let metrics = interruptible_if(py, threads, xv.nrows() > INTERRUPTIBLE_ROWS, |stop| {
            check_rows("x", xv, true)?;
            bsa::io::check_float32_norms("x", xv)?;
            Ok(bsa::metrics::evaluate_until(m, xv, stop)?.0)
        })?;
        let v = serde_json::to_value(metrics)
            .map_err(|e| PyRuntimeError::new_err(format!("metrics as JSON: {e}")))?;
        json_to_py(py, &v)
    }

    /// Code length N.
    #[getter]
    fn bits(&self) -> usize {
        self.inner.config.bits
    }

    /// Target number of set bits K.
    #[getter]
    fn k(&self) -> usize {
        self.inner.config.k
    }

    /// Input dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.config.dim
    }

    /// How the model was made: ``bsa``, ``topk``, ``sign``, ``lsh``, ``itq`` or ``pursuit``.
    #[getter]
    fn method(&self) -> String {
        self.inner.config.method.to_string()
    }

    /// The training settings and report saved with the model (a dict).
    #[getter]
    fn training<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.training)
    }

    fn __repr__(&self) -> String {
        let c = &self.inner.config;
        format!(
            "bsa.Model(method={:?}, bits={}, k={}, dim={})",
            c.method.to_string(),
            c.bits,
            c.k,
            c.dim
        )
    }
}

/// Trains a model on the rows of ``x`` (float, n x dim) and returns it.
///
/// - ``preset="retrieval"``: binary matching pursuit, N = 4096 bits, K = 32 (``bits``, ``k``,
///   ``rounds`` override); the codes that retrieve best, searched with ``score="adc"``.
/// - ``method="bsa"`` (default) or ``"topk"``: the autoencoder by gradient descent; needs
///   ``bits`` and ``k``; ``epochs``, ``batch``, ``lr``, ``loss``, ``val_fraction`` apply, and
///   ``alpha`` and ``target`` to bsa (topk trains without the alignment term: it accepts
///   them with no effect, as ``bsa train --method topk --alpha`` does, and records alpha 0).
/// - ``method="sign" | "lsh" | "itq"``: the closed-form baselines (``bits`` defaults to dim for
///   sign); ``fit_rows`` and ``itq_iterations`` apply.
/// - ``method="pursuit"``: as the preset with explicit ``bits`` and ``k``.
///
/// A setting the method does not use raises ``ValueError`` (the model would not be what was
/// asked); settings left out take ``bsa train``'s defaults.
///
/// The same as ``bsa train`` with the same settings. ``threads`` (default all cores) sizes
/// both the thread pool and OpenBLAS; ``progress`` prints a line per epoch or round on
/// ``sys.stderr``. The GIL is released while training; fits from several Python threads run
/// one after another (OpenBLAS's thread count is one per process).
///
/// Example::
///
///     model = bsa.train(x, preset="retrieval")                # codes of 48 bytes as ids
///     model = bsa.train(x, bits=1024, k=32, epochs=10, seed=1)  # the paper's BSA
///     model = bsa.train(x, method="itq", bits=256)
#[pyfunction]
#[pyo3(signature = (
    x, preset=None, *, method=None, bits=None, k=None, seed=Int(0), threads=None, progress=true,
    epochs=None, batch=None, lr=None, alpha=None, loss=None, target=None, val_fraction=None,
    rounds=None, ridge=None, fit_rows=None, itq_iterations=None
),
    text_signature = "(x, preset=None, *, method=None, bits=None, k=None, seed=0, threads=None, progress=True, epochs=None, batch=None, lr=None, alpha=None, loss=None, target=None, val_fraction=None, rounds=None, ridge=None, fit_rows=None, itq_iterations=None)"
)]
#[allow(clippy::too_many_arguments)]
fn train(
    x: &Bound<'_, PyAny>,
    preset: Option<&str>,
    method: Option<&str>,
    bits: Option<Int>,
    k: Option<Int>,
    seed: Int,
    threads: Option<Int>,
    progress: bool,
    epochs: Option<Int>,
    batch: Option<Int>,
    lr: Option<f64>,
    alpha: Option<f64>,
    loss: Option<&str>,
    target: Option<&str>,
    val_fraction: Option<f64>,
    rounds: Option<Int>,
    ridge: Option<f64>,
    fit_rows: Option<Int>,
    itq_iterations: Option<Int>,
) -> PyResult<Model> {
    let py = x.py();
    let seed = u64::try_from(seed.0)
        .map_err(|_| PyValueError::new_err(format!("seed must be in 0..2**64, got {}", seed.0)))?;
    let arg = |name: &str, e: String| PyValueError::new_err(format!("{name}: {e}"));
    let options = FitOptions {
        bits: positive("bits", bits)?,
        k: positive("k", k)?,
        seed,
        progress,
        epochs: positive("epochs", epochs)?,
        batch: positive("batch", batch)?,
        lr,
        alpha,
        loss: loss
            .map(|l| l.parse::<LossKind>().map_err(|e| arg("loss", bare(e))))
            .transpose()?,
        target: target
            .map(|t| t.parse::<Target>().map_err(|e| arg("target", bare(e))))
            .transpose()?,
        val_fraction,
        rounds: positive("rounds", rounds)?,
        ridge,
        fit_rows: positive("fit_rows", fit_rows)?,
        itq_iterations: positive("itq_iterations", itq_iterations)?,
    };
    let threads = positive("threads", threads)?;
    let method: Method = match (preset, method) {
        (Some(_), Some(_)) => {
            return Err(PyValueError::new_err(
                "give preset or method, not both (a preset names its method)",
            ))
        }
        (Some("retrieval"), None) => Method::Pursuit,
        (Some(p), None) => {
            return Err(PyValueError::new_err(format!(
                "preset must be \"retrieval\", got {p:?}"
            )))
        }
        (None, m) => m
            .unwrap_or("bsa")
            .parse()
            .map_err(|e: bsa::Error| arg("method", bare(e)))?,
    };
    options.refuse_unused(
        method,
        &match preset {
            Some(p) => format!("preset {p:?}"),
            None => format!("method {method}"),
        },
    )?;
    let x = float32_matrix(as_array(x, "x")?, "x", Rows::Some)?;
    let x = x.readonly();
    let xv = view2(&x);
    warn_if_not_unit(py, xv, "x", (method, xv.ncols()))?;
    let (n, dim) = xv.dim();
    // The one-code check encodes a sample: on the call's pool, as the fit (outside it, rayon's
    // global pool would start, which a process forked after the call could not use).
    type Fitted = (Autoencoder, serde_json::Value, Option<String>);
    let fit = |stop: &Arc<AtomicBool>| -> bsa::Result<Fitted> {
        let (model, report) =
            with_blas_threads(threads, || fit_model(xv, preset, method, &options, stop))
                .map_err(as_keywords)?;
        let one_code = model.one_code_warning(xv, "x");
        Ok((model, report, one_code))
    };
    let (model, mut report, one_code) = interruptible(py, threads, fit)?;
    // What made the model likely poor (a learning rate far too large, a loss that did not
    // fall): warned of, as `bsa train` does, and not kept in the model's metadata.
    if let Some(serde_json::Value::Array(warnings)) =
        report.as_object_mut().and_then(|r| r.remove("warnings"))
    {
        for w in warnings.iter().filter_map(|w| w.as_str()) {
            let w = bare(as_keywords(bsa::Error::InvalidArgument(w.to_string())));
            if let Ok(w) = std::ffi::CString::new(w) {
                PyErr::warn(py, &py.get_type::<PyUserWarning>(), &w, 1)?;
            }
        }
    }
    if let Some(w) = one_code.and_then(|w| std::ffi::CString::new(w).ok()) {
        PyErr::warn(py, &py.get_type::<PyUserWarning>(), &w, 1)?;
    }
    // What `bsa train` saves as the model's `training` metadata, with Python as the data.
    let mut training =
        serde_json::json!({"data": "<python>", "rows": n, "dim": dim, "threads": threads});
    if let (Some(t), serde_json::Value::Object(r)) = (training.as_object_mut(), report) {
        t.extend(r);
    }
    Ok(Model {
        inner: Arc::new(FrozenModel::new(model)),
        training,
    })
}

/// `e` with a bad row of the matrix the library calls `library` ("queries", "new rows",
/// "data") said as a row of the Python argument `python` ("q", "x"), which the caller passed.
fn row_of(e: bsa::Error, library: &str, python: &str) -> bsa::Error {
    match e {
        bsa::Error::BadRow { path, row, detail } if path.as_os_str() == library => {
            bsa::Error::BadRow {
                path: python.into(),
                row,
                detail,
            }
        }
        e => e,
    }
}

/// `e` with a bad row of packed codes (padding bits set: "row R: bits beyond ...", from
/// `bsa_index::pack`, which knows no argument names) said as a row of the Python argument
/// `python` ("q", "codes"). For calls given codes, whose other errors name no row.
fn code_row_of(e: bsa::Error, python: &str) -> bsa::Error {
    match e {
        bsa::Error::Index(bsa_index::Error::InvalidArgument(m)) if m.starts_with("row ") => {
            bsa::Error::InvalidArgument(format!("{python}: {m}"))
        }
        e => e,
    }
}

/// The message of `e` without the "invalid argument: " its type prefixes (a Python
/// `ValueError` says it already, and the caller names the argument).
fn bare(e: bsa::Error) -> String {
    match e {
        bsa::Error::InvalidArgument(m)
        | bsa::Error::Index(bsa_index::Error::InvalidArgument(m)) => m,
        e => e.to_string(),
    }
}

/// [`train`]'s settings; `None` where not given (the library's defaults apply).
struct FitOptions {
    bits: Option<usize>,
    k: Option<usize>,
    seed: u64,
    progress: bool,
    epochs: Option<usize>,
    batch: Option<usize>,
    lr: Option<f64>,
    alpha: Option<f64>,
    loss: Option<LossKind>,
    target: Option<Target>,
    val_fraction: Option<f64>,
    rounds: Option<usize>,
    ridge: Option<f64>,
    fit_rows: Option<usize>,
    itq_iterations: Option<usize>,
}

impl FitOptions {
    /// Refuses settings `method` would ignore: the model would not be what was asked.
    fn refuse_unused(&self, method: Method, label: &str) -> PyResult<()> {
        let given = [
            ("epochs", self.epochs.is_some()),
            ("batch", self.batch.is_some()),
            ("lr", self.lr.is_some()),
            ("alpha", self.alpha.is_some()),
            ("loss", self.loss.is_some()),
            ("target", self.target.is_some()),
            ("val_fraction", self.val_fraction.is_some()),
            ("rounds", self.rounds.is_some()),
            ("ridge", self.ridge.is_some()),
            ("fit_rows", self.fit_rows.is_some()),
            ("itq_iterations", self.itq_iterations.is_some()),
        ];
        let given: Vec<&str> = given
            .iter()
            .filter(|&&(_, is_given)| is_given)
            .map(|&(name, _)| name)
            .collect();
        match method.unread(&given, str::to_string) {
            None => Ok(()),
            Some(unread) => Err(PyValueError::new_err(format!(
                "{label} does not read {unread}: leave them out"
            ))),
        }
    }
}

/// `e` with `bsa train`'s flags, which the library's checks and hints name (`--val-fraction
/// must be in [0, 0.5)`, "lower --lr"), said as [`train`]'s keyword arguments (`val_fraction`,
/// `lr`): a Python caller passed no flags.
fn as_keywords(e: bsa::Error) -> bsa::Error {
    fn keywords(m: String) -> String {
        let mut out = String::with_capacity(m.len());
        let mut rest = m.as_str();
        while let Some(at) = rest.find("--") {
            let (before, flag) = rest.split_at(at);
            out.push_str(before);
            let name_len = flag[2..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
                .unwrap_or(flag.len() - 2);
            let name = &flag[2..2 + name_len];
            let starts_word = !out.ends_with(|c: char| c.is_alphanumeric());
            match name.starts_with(|c: char| c.is_ascii_lowercase()) && starts_word {
                true => out.push_str(&name.replace('-', "_")),
                false => out.push_str(&flag[..2 + name_len]),
            }
            rest = &flag[2 + name_len..];
        }
        out.push_str(rest);
        out
    }
    use bsa::Error as E;
    match e {
        E::InvalidArgument(m) => E::InvalidArgument(keywords(m)),
        E::Diverged(m) => E::Diverged(keywords(m)),
        E::Linalg(m) => E::Linalg(keywords(m)),
        e => e,
    }
}

/// The fit behind [`train`], without the GIL: the same three paths as `bsa train` (gradient
/// descent, closed-form baselines, pursuit). Returns the model and its training metadata.
fn fit_model(
    x: ArrayView2<f32>,
    preset: Option<&str>,
    method: Method,
    o: &FitOptions,
    stop: &AtomicBool,
) -> bsa::Result<(Autoencoder, serde_json::Value)> {
    let dim = x.ncols();
    let arg = |e: String| bsa::Error::InvalidArgument(e);
    bsa::io::check_float32_norms("x", x)?;
    if method == Method::Pursuit {
        check_rows("x", x, true)?;
        let mut params = match (preset, o.bits, o.k) {
            (Some(_), b, k) => bsa::pipeline::retrieval_preset(b, k),
            (None, Some(b), Some(k)) => bsa::pursuit::PursuitParams::new(b, k),
            _ => {
                return Err(arg(
                    "method pursuit needs bits and k (or use preset=\"retrieval\")".into(),
                ))
            }
        };
        params.rounds = o.rounds.unwrap_or(params.rounds);
        params.ridge = o.ridge.unwrap_or(params.ridge);
        params.seed = o.seed;
        params.fit_rows = o.fit_rows;
        let mut progress = |r: &bsa::pursuit::RoundStats| {
            if o.progress {
                progress_line(format!(
                    "bsa: round {:>2}: reconstruction {:.4}, {} dead atoms re-seeded, {:.1}s",
                    r.round, r.reconstruction_loss, r.dead_atoms_reseeded, r.seconds
                ));
            }
        };
        let (dictionary, _) = params.fit_until(x, None, &mut progress, stop)?;
        // The model's own figure, as `bsa train` records it (not the last round's).
        let rec = params.fit_reconstruction(&dictionary, x, stop)?;
        let info = serde_json::json!({
            "preset": preset, "settings": params, "reconstruction_loss": rec,
        });
        return Ok((params.model(dim, dictionary), info));
    }
    if method.is_baseline() {
        check_rows("x", x, true)?;
        let bits = match (method, o.bits) {
            (_, Some(b)) => b,
            (Method::Sign, None) => dim,
            (m, None) => return Err(arg(format!("method {m} needs bits"))),
        };
        let mut params = BaselineParams::new(method, bits);
        if let Some(k) = o.k {
            params.k = k;
        }
        params.seed = o.seed;
        params.fit_rows = o.fit_rows.unwrap_or(params.fit_rows);
        params.itq_iterations = o.itq_iterations.unwrap_or(params.itq_iterations);
        params.validate(dim)?;
        let (model, report) = params.fit_until(x, stop)?;
        let info = serde_json::json!({
            "settings": params,
            "epochs_run": 0,
            "fit_rows": report.fit_rows,
            "train_reconstruction": report.reconstruction,
            "quantization_loss": report.quantization_loss.last(),
        });
        return Ok((model, info));
    }
    let (Some(bits), Some(k)) = (o.bits, o.k) else {
        return Err(arg(format!("method {method} needs bits and k")));
    };
    let mut params = TrainParams::new(bits, k);
    params.method = method;
    params.loss = o.loss.unwrap_or(params.loss);
    params.target = o.target.unwrap_or(params.target);
    params.alpha = o.alpha.unwrap_or(params.alpha);
    params.epochs = o.epochs.unwrap_or(params.epochs);
    params.batch = o.batch.unwrap_or(params.batch);
    params.lr = o.lr.unwrap_or(params.lr);
    params.seed = o.seed;
    params.val_fraction = o.val_fraction.unwrap_or(params.val_fraction);
    check_rows("x", x, params.loss == LossKind::Cosine)?;
    params.validate(x.nrows(), dim)?;
    let mut progress = |p: &Progress| {
        if let (true, Progress::Epoch(e)) = (o.progress, p) {
            let val = e
                .validation
                .map(|v| format!(", validation loss {:.4}", v.loss))
                .unwrap_or_default();
            progress_line(format!(
                "bsa: epoch {:>3}: loss {:.4} rec {:.4} align {:.4} active {:.1}{val}",
                e.epoch, e.train.loss, e.train.rec, e.train.align, e.train.active_mean
            ));
        }
    };
    let (model, report) = params.fit_until(x, &mut progress, stop)?;
    let last = match report.best_epoch {
        Some(e) => report.epochs.get(e - 1),
        None => report.epochs.last(),
    };
    let info = serde_json::json!({
        "warnings": report.warnings,
        "settings": params.as_trained(),
        "epochs_run": report.epochs.len(),
        "train_loss": last.map(|l| l.train.loss),
        "validation_loss": last.and_then(|l| l.validation.map(|v| v.loss)),
    });
    Ok((model, info))
}

/// A search index: packed codes, memory-mapped, in ``bsa build``'s on-disk format.
///
/// Make one with :meth:`Index.build` (in a private temporary directory unless ``path`` is
/// given; :meth:`save` copies it) or :meth:`Index.open` (an index written by ``bsa build`` or
/// :meth:`save`). One index serves many Python threads at once: searches release the GIL.
/// A large enough batch of Hamming queries makes, once, an in-memory copy of the codes
/// transposed for counting many rows at once (as many bytes as the codes; kept while the
/// index is open).
///
/// Example::
///
///     index = bsa.Index.build(x=base, model=model, vectors=True)
///     D, I = index.search(queries, 10, score="adc", rescore=4)
///     index.save("my-index")            # then: bsa search --index my-index ...
///     index = bsa.Index.open("my-index")
#[pyclass(frozen, module = "bsa", name = "Index")]
struct Index {
    /// What searches read; replaced (not changed) by `add`, `delete` and `compact`, so a
    /// search that took it keeps its generation and that generation's model.
    /// `None` once closed ([`Index::close`]).
    inner: RwLock<Option<Arc<Loaded>>>,
    /// The private directory of an index built without a path; removed with the object, or
    /// by [`Index::close`].
    tmp: Mutex<Option<PrivateDir>>,
    /// Whether `refresh` verifies the checksums of the segments it opens (each before a search
    /// first reads it), as the open did.
    verify: bool,
}

/// The private folder of an index built without a path (`$TMPDIR/bsa-index-XXXX`, the index
/// in its `index` subfolder), removed with its object or by [`Index::close`]: by the process
/// that made it only (a forked child has the object too, and its exit must not remove its
/// parent's index), and only what bsa put there: the index, then the folder if nothing else is
/// in it (a copy saved beside the index, into a path taken from `index.path`, stays, and so
/// does the folder then).
struct PrivateDir {
    dir: Option<tempfile::TempDir>,
    pid: u32,
}

impl PrivateDir {
    fn new(dir: tempfile::TempDir) -> PrivateDir {
        PrivateDir {
            dir: Some(dir),
            pid: std::process::id(),
        }
    }

    /// Removes the index and then the folder, if empty (see the type); `Ok` in a forked child.
    fn remove(mut self) -> bsa::Result<()> {
        self.remove_now()
    }

    fn remove_now(&mut self) -> bsa::Result<()> {
        let Some(dir) = self.dir.take() else {
            return Ok(());
        };
        let folder = dir.keep();
        if std::process::id() != self.pid {
            return Ok(());
        }
        let index = folder.join("index");
        match std::fs::remove_dir_all(&index) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(bsa::Error::io(&index, e));
            }
            _ => {}
        }
        match std::fs::remove_dir(&folder) {
            Err(e) if e.kind() != std::io::ErrorKind::DirectoryNotEmpty => {
                Err(bsa::Error::io(&folder, e))
            }
            _ => Ok(()),
        }
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = self.remove_now();
    }
}

/// One generation of the index as opened: its snapshot and its model, loaded together.
struct Loaded {
    snap: Arc<Snapshot>,
    /// The index's own model (copied in at build time).
    model: Option<Arc<FrozenModel>>,
    /// The training metadata of that model, for `Index.model`.
    model_training: serde_json::Value,
}

impl Loaded {
    /// `snap` with its model: `previous`'s when the manifest records the same model file
    /// (length and CRC), else loaded from the directory (another process may have rebuilt the
    /// index with another model: queries must be encoded with the model of the codes).
    fn new(snap: Snapshot, previous: Option<&Loaded>) -> bsa::Result<Loaded> {
        if let Some(p) = previous.filter(|p| p.snap.model_info() == snap.model_info()) {
            return Ok(Loaded {
                snap: Arc::new(snap),
                model: p.model.clone(),
                model_training: p.model_training.clone(),
            });
        }
        // Both from the bytes the snapshot's manifest names (a rebuild may have put another
        // model at that path since the open).
        let (model, model_training) = match bsa::query::index_model_and_training(&snap)? {
            Some((m, training)) => (Some(Arc::new(FrozenModel::new(m))), training),
            None => (None, serde_json::Value::Null),
        };
        Ok(Loaded {
            snap: Arc::new(snap),
            model,
            model_training,
        })
    }
}

impl Index {
    fn open_dir(dir: &Path, verify: bool, tmp: Option<PrivateDir>) -> bsa::Result<Index> {
        // Absolute: the object opens its directory again after every change (and its writers
        // write there), which a relative path would find under whatever working directory the
        // process has by then: another index of that name.
        let dir = std::path::absolute(dir).map_err(|e| bsa::Error::io(dir, e))?;
        let options = OpenOptions::verify_checksums(verify).lazy(true);
        let index = Snapshot::open_with(&dir, options)?;
        Ok(Index {
            inner: RwLock::new(Some(Arc::new(Loaded::new(index, None)?))),
            tmp: Mutex::new(tmp),
            verify,
        })
    }

    /// The current generation, or an error once the object is closed (as a closed file's
    /// calls raise `ValueError`).
    fn current(&self) -> bsa::Result<Arc<Loaded>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.as_ref().map(Arc::clone).ok_or_else(|| {
            bsa::Error::InvalidArgument(
                "this bsa.Index is closed (close() or the end of its with block): open the \
                 index again"
                    .into(),
            )
        })
    }

    /// [`Index::current`] for Python.
    fn loaded(&self) -> PyResult<Arc<Loaded>> {
        self.current().map_err(py_err)
    }

    /// The current snapshot.
    fn snap(&self) -> PyResult<Arc<Snapshot>> {
        Ok(Arc::clone(&self.loaded()?.snap))
    }

    /// Opens the directory again after this object's change (the new generation, with its
    /// model), sharing the segments it still lists with the generation before.
    fn reopen(&self) -> bsa::Result<()> {
        self.follow(true).map(drop)
    }

    /// Moves to the directory's current generation if it is not the one searched; returns
    /// whether it moved. `own`: after this object's change, made under the writers' lock, so
    /// nothing newer can be in place; otherwise (`refresh`) a generation another thread put in
    /// place meanwhile is not overwritten: the follow starts again from it.
    fn follow(&self, own: bool) -> bsa::Result<bool> {
        // After its own change, the segments it had not opened (its new one, and other
        // writers' it took in under the lock) are the ones the change's writer checked before
        // it changed anything, or whose check the caller waived (`verify=False`, which a
        // damaged index needs: a check now would raise with the change made).
        let options = match own {
            true => OpenOptions::verify_checksums(false),
            false => OpenOptions::verify_checksums(self.verify).lazy(true),
        };
        let mut moved = false;
        loop {
            let old = self.current()?;
            let Some(fresh) = old.snap.reopen(options)? else {
                return Ok(moved);
            };
            let fresh = Arc::new(Loaded::new(fresh, Some(&old))?);
            let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
            match inner.as_ref() {
                // Closed meanwhile: it stays closed.
                None => return Ok(moved),
                Some(now) if own || Arc::ptr_eq(now, &old) => {
                    *inner = Some(fresh);
                    return Ok(true);
                }
                Some(_) => moved = true,
            }
        }
    }
}

#[pymethods]
impl Index {
    /// Opens an index directory (written by ``bsa build`` or :meth:`save`), memory-mapped, its
    /// files' checksums verified, each before a search first reads it (the stored vectors at the
    /// first ``rescore``, the posting lists at the first ``mode="inverted"``, as ``bsa search``
    /// does). ``verify=False`` skips the full checksums (the header
    /// checks still run).
    ///
    /// Example: ``index = bsa.Index.open("idx")``
    #[staticmethod]
    #[pyo3(signature = (path, *, verify=true))]
    fn open(py: Python<'_>, path: PathBuf, verify: bool) -> PyResult<Index> {
        without_gil(py, None, || Index::open_dir(&path, verify, None))
    }

    /// Builds an index, as ``bsa build`` does, and opens it.
    ///
    /// Give either ``codes`` (uint8, n x ceil(bits / 8), ``numpy.packbits(bitorder="little")``
    /// rows; ``bits`` defaults to 8 x the columns) or ``x`` (float, n x dim) with ``model``
    /// (the model is stored in the index, so float queries and ``score="adc"`` work). ``x`` is
    /// also what ``vectors=True`` stores for ``rescore`` (``f16=True``: as float16).
    /// ``ids``: one non-negative integer per row (default: row numbers). ``hnsw=True`` adds a
    /// graph (``m``, ``ef_construction``, ``ef_search``: 32, 200 and 64 unless given), built on ``hnsw_on``: ``"decoded"`` (the
    /// model's decoded codes, searched with ``score="adc"``; the default with a model),
    /// ``"data"`` (``x`` itself, also for ``adc``) or ``"codes"`` (Hamming; the default
    /// without a model). ``inverted`` and ``bitmaps``: ``None``
    /// stores posting lists (and their bitmaps) when they pay off, except for a pursuit model's
    /// codes (searched with ``score="adc"``, which does not read them), ``True`` always,
    /// ``False`` never. ``path``: where to write it (default: a private temporary directory removed with
    /// the object); ``overwrite`` replaces an index there (one holding nothing but bsa's files:
    /// ``FileExistsError`` names anything else in it), once the new one is complete, after
    /// its writers (waiting at most ``lock_timeout`` seconds for them if given, then
    /// ``TimeoutError``, the old index kept, as in :meth:`add`). Ctrl-C stops the build within about
    /// a second (``KeyboardInterrupt``), leaving nothing at ``path`` (an index it would have
    /// replaced stays as it was), unless the new index was complete: a Ctrl-C while it is
    /// put in place lets the call return, with a ``UserWarning`` saying so.
    ///
    /// Example::
    ///
    ///     index = bsa.Index.build(codes=model.encode(base))                # Hamming only
    ///     index = bsa.Index.build(x=base, model=model, vectors=True, hnsw=True)
    #[staticmethod]
    #[pyo3(signature = (
        codes=None, x=None, model=None, ids=None, vectors=false, hnsw=false, *, bits=None,
        f16=false, inverted=None, bitmaps=None, m=None, ef_construction=None, ef_search=None,
        hnsw_on=None, path=None, overwrite=false, threads=None, lock_timeout=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn build(
        py: Python<'_>,
        codes: Option<&Bound<'_, PyAny>>,
        x: Option<&Bound<'_, PyAny>>,
        model: Option<&Bound<'_, Model>>,
        ids: Option<&Bound<'_, PyAny>>,
        vectors: bool,
        hnsw: bool,
        bits: Option<Int>,
        f16: bool,
        inverted: Option<bool>,
        bitmaps: Option<bool>,
        m: Option<Int>,
        ef_construction: Option<Int>,
        ef_search: Option<Int>,
        hnsw_on: Option<String>,
        path: Option<PathBuf>,
        overwrite: bool,
        threads: Option<Int>,
        lock_timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Index> {
        let bits = positive("bits", bits)?;
        let lock_timeout = seconds("lock_timeout", lock_timeout)?;
        let threads = positive("threads", threads)?;
        let graph_on = match hnsw_on.as_deref() {
            None => None,
            Some("decoded") => Some(GraphOn::Decoded),
            Some("data") => Some(GraphOn::Data),
            Some("codes") => Some(GraphOn::Codes),
            Some(other) => {
                return Err(PyValueError::new_err(format!(
                    "hnsw_on: unknown value {other:?}; expected \"decoded\", \"data\" or \"codes\""
                )))
            }
        };
        let graph_settings = [
            ("m", m),
            ("ef_construction", ef_construction),
            ("ef_search", ef_search),
        ];
        if let (false, Some((name, _))) = (hnsw, graph_settings.iter().find(|(_, v)| v.is_some())) {
            // As `bsa build --m` without `--hnsw`: it would be ignored.
            return Err(PyValueError::new_err(format!(
                "{name} is a setting of the graph: it needs hnsw=True"
            )));
        }
        let hnsw = if hnsw {
            let d = HnswParams::default();
            Some(HnswParams {
                max_connections: positive("m", m)?.unwrap_or(d.max_connections),
                ef_construction: positive("ef_construction", ef_construction)?
                    .unwrap_or(d.ef_construction),
                ef_search: positive("ef_search", ef_search)?.unwrap_or(d.ef_search),
            })
        } else {
            None
        };
        match (&codes, &model, &x) {
            (Some(_), Some(_), _) => {
                return Err(PyValueError::new_err(
                    "give codes, or x with model, not both codes and model",
                ))
            }
            (None, Some(_), None) => {
                return Err(PyValueError::new_err(
                    "model needs x, the vectors to encode",
                ))
            }
            (None, None, _) => {
                return Err(PyValueError::new_err(
                    "give codes (packed uint8), or x (float vectors) with model",
                ))
            }
            _ => {}
        }
        if vectors && x.is_none() {
            return Err(PyValueError::new_err("vectors=True stores x: give x"));
        }
        // Options that would be ignored are refused: the index would not be what was asked.
        if bits.is_some() && model.is_some() {
            return Err(PyValueError::new_err(
                "bits is the model's code length: give bits only with codes",
            ));
        }
        if graph_on.is_some() && hnsw.is_none() {
            return Err(PyValueError::new_err(
                "hnsw_on chooses what the graph is built on: it needs hnsw=True",
            ));
        }
        if f16 && !vectors {
            return Err(PyValueError::new_err(
                "f16 is how stored vectors are kept: it needs vectors=True",
            ));
        }
        if codes.is_some() && x.is_some() {
            // Stored vectors are read only by rescoring, whose float queries need a model to
            // encode them, and a graph on the data needs one too.
            return Err(PyValueError::new_err(
                "x is used with a model (encoded, stored, the graph built on it); an index of \
                 codes alone has no use for it (float queries need a model): leave x out, or \
                 give x with model",
            ));
        }
        let x = x
            .map(|x| float32_matrix(as_array(x, "x")?, "x", Rows::Some))
            .transpose()?;
        let x = x.as_ref().map(|x| x.readonly());
        let codes = codes
            .map(|c| code_matrix(as_array(c, "codes")?, "codes", Rows::Some))
            .transpose()?;
        let codes = codes.as_ref().map(|c| c.readonly());
        let ids = ids.map(|i| id_vector(i, "ids", Ids::PerRow)).transpose()?;
        let model = model.map(|m| m.get());
        let code_rows = codes.as_ref().map(|c| c.as_array().nrows());
        let code_bytes = codes.as_ref().map(|c| c.as_slice()).transpose()?;
        let xv = x.as_ref().map(view2);
        if let (Some(xv), Some(m)) = (xv, model) {
            warn_if_not_unit(py, xv, "x", (m.inner.config.method, m.inner.config.dim))?;
        }

        let (dir, tmp) = match path {
            Some(p) if p.exists() && !overwrite => {
                return Err(PyFileExistsError::new_err(format!(
                    "{}: exists; pass overwrite=True to replace it",
                    p.display()
                )))
            }
            Some(p) => (p, None),
            None => {
                let t =
                    bsa::io::temp_dir_in(&std::env::temp_dir(), "bsa-index-").map_err(py_err)?;
                (t.path().join("index"), Some(PrivateDir::new(t)))
            }
        };
        if tmp.is_none() {
            warn_leftovers(py, &dir);
        }
        // Said before the model's copy is written beside it (the check would name that file).
        bsa_index::check_outside_index(&dir).map_err(|e| py_err(e.into()))?;
        // Ctrl-C stops the build (encoding, files, graph): nothing is left at `path`.
        changing(py, threads, &dir, lock_timeout, |stop, lock_timeout| {
            // The index keeps a copy of the model file: write it once, beside the build where
            // its folder exists (a full or small $TMPDIR is not the index's disk).
            let near = (dir.parent())
                .map(|p| {
                    if p.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        p
                    }
                })
                .filter(|p| p.is_dir());
            let system_tmp = std::env::temp_dir();
            let model_dir = bsa::io::temp_dir_in(near.unwrap_or(&system_tmp), ".bsa-model-")?;
            let model_file = model_dir.path().join("model.safetensors");
            let source = match (model, code_bytes) {
                (Some(m), _) => {
                    bsa::io::model::save(&model_file, &m.inner, &m.training)?;
                    BuildSource::Model {
                        model: &m.inner,
                        file: &model_file,
                    }
                }
                (None, Some(bytes)) => BuildSource::Codes {
                    bytes,
                    rows: code_rows.unwrap_or(0),
                    bits,
                },
                (None, None) => unreachable!("checked above"),
            };
            let mut request = BuildRequest::new(source);
            request.data = xv;
            request.data_name = xv.map(|_| "<python>".to_string());
            request.ids = ids.as_deref();
            request.vectors = vectors.then_some(if f16 {
                VectorDtype::F16
            } else {
                VectorDtype::F32
            });
            request.hnsw = hnsw;
            request.graph_on = graph_on;
            request.inverted = inverted;
            request.bitmaps = bitmaps;
            request.overwrite = overwrite;
            request.lock_timeout = lock_timeout;
            request.stop = Some(stop);
            build_index_notifying(&request, &dir, |_, _| {}, || warn_waiting(&dir)).map_err(
                |e| match code_bytes {
                    Some(_) => code_row_of(e, "codes"),
                    None => row_of(e, "data", "x"),
                },
            )?;
            // Its own files were just written: not read again. Other writers' are, by refresh.
            let index = Index::open_dir(&dir, false, tmp)?;
            Ok(Index {
                verify: true,
                ..index
            })
        })
    }

    /// Copies the index to the directory ``path`` (atomically: a temporary directory beside it,
    /// renamed into place), where ``bsa search --index`` and :meth:`open` read it. The copy
    /// holds the rows this object searches, whatever other processes committed since it was
    /// opened (if one removed a file of them meanwhile, ``FileNotFoundError``: open the index
    /// again and save that); changes of this process to the index (this object's ``add`` in
    /// another thread, say) are waited for first, and this object's own leave it at the
    /// generation copied.
    /// ``overwrite`` replaces an index there, one holding nothing but bsa's files
    /// (``FileExistsError`` names anything else in it), after its writers finish; a symbolic
    /// link there is kept and the index it names replaced. Ctrl-C stops the copy
    /// (``KeyboardInterrupt``), leaving ``path`` as it was; one while the copy is put in place
    /// lets the call return, with a ``UserWarning``. ``lock_timeout``: seconds to wait
    /// at most for the writers of an index it replaces (then ``TimeoutError``, that index kept),
    /// as in :meth:`add`.
    #[pyo3(signature = (path, *, overwrite=false, lock_timeout=None))]
    fn save(
        &self,
        py: Python<'_>,
        path: PathBuf,
        overwrite: bool,
        lock_timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let lock_timeout = seconds("lock_timeout", lock_timeout)?;
        let source = self.snap()?.dir().to_path_buf();
        // This process's changes of the index wait for the copy, and it for them: a merge or
        // compaction in another thread would remove files the copy reads. (A path that is the
        // index itself is refused by the copy.)
        let held: [&Path; 2] = [&path, &source];
        run_interruptible(
            py,
            None,
            Some((&held, lock_timeout)),
            |stop, lock_timeout| {
                // The generation once they are done: the object's own, current.
                let index = self.current()?.snap.clone();
                let wait = LockWait::new()
                    .on_wait(|| warn_waiting(&path))
                    .stop(Arc::clone(stop))
                    .timeout(lock_timeout);
                Ok(index.copy_to(&path, overwrite, wait)?)
            },
        )
    }

    /// The ``k`` best rows of the index for each query, as ``(D, I)`` numpy arrays of shape
    /// ``(nq, k)``, best first (FAISS's layout): ``I`` int64 ids, -1 where there are fewer than
    /// ``k`` hits; ``D`` int32 Hamming distances (missing: 2**31 - 1) for ``score="hamming"``,
    /// else float32 scores, higher is better (missing: -inf): the score's values, or exact
    /// cosine similarities after ``rescore``.
    ///
    /// ``q``: float queries (n x dim, encoded with the index's model) or packed query codes
    /// (uint8, as :meth:`Model.encode` makes them). ``score``: ``hamming`` (the default,
    /// ``None``, is Hamming too, with a ``UserWarning`` when the index's codes are a pursuit
    /// model's, made to be searched with ``adc``), ``cosine``,
    /// ``jaccard``, ``overlap`` (code against code), ``adc`` or ``soft`` (float query against
    /// code; need float queries and the model; ``soft`` sums over the code's set bits, so it
    /// ranks codes of a fixed number of bits, topk and pursuit, and not sign, ITQ or BSA codes,
    /// which it ranks by their bit counts). ``mode``: ``flat`` (exact scan), ``inverted``
    /// (exact, posting lists) or ``hnsw`` (graph, approximate, the score it was built for; ``ef`` is its
    /// candidate list size, at least ``k``; by default the build's, raised to the candidates
    /// asked for: ``k``, or ``k x R`` with ``rescore``). ``rescore=R``: the best ``k x R`` by ``score`` (for
    /// ``hnsw``, of every row the walk scored, so ``ef`` may be below ``k x R``; for ``adc``,
    /// picked with 8-bit integer tables, as ``bsa search --rescore``) are re-ranked by exact
    /// cosine against the stored vectors. ``max_distance``: Hamming only, drop hits
    /// farther away. ``threads``: default all cores. The results are those of ``bsa search``
    /// with the same options; the GIL is released while searching.
    ///
    /// Example::
    ///
    ///     D, I = index.search(queries, 10)                                   # Hamming
    ///     D, I = index.search(queries, 10, score="adc", rescore=4)           # best recall
    ///     D, I = index.search(queries, 10, score="adc", mode="hnsw", ef=128)  # graph
    ///
    /// Filters and ranges: ``allow_ids`` (only these ids) or ``deny_ids`` (never these), exact
    /// in the exact modes; ``min_score``: drop hits scoring less (scores other than Hamming; with
    /// ``rescore``, the bound applies to ``score``'s exact value, and the cosines in ``D`` then
    /// order those hits, so they may be below it).
    /// With a range (``max_distance`` or ``min_score``), ``k=None`` returns every hit in range
    /// (as ``bsa search`` without ``--k``): the arrays are as wide as the most hits of a query,
    /// padded as above. Example: ``D, I = index.search(q, None, max_distance=40)``
    ///
    /// Ctrl-C stops a large batch of queries (``KeyboardInterrupt``), checked between batches of
    /// at least 256 queries, sized to about 2**28 query-code pairs of a Hamming scan of short
    /// codes (fewer for wider codes, 2**25 for other scores).
    #[pyo3(signature = (
        q, k=Some(Int(10)), *, score=None, mode="flat", rescore=None, ef=None, max_distance=None,
        min_score=None, allow_ids=None, deny_ids=None, threads=None
    ),
    text_signature = "($self, q, k=10, *, score=None, mode=\"flat\", rescore=None, ef=None, max_distance=None, min_score=None, allow_ids=None, deny_ids=None, threads=None)"
)]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn search<'py>(
        &self,
        q: &Bound<'py, PyAny>,
        k: Option<Int>,
        score: Option<&str>,
        mode: &str,
        rescore: Option<Int>,
        ef: Option<Int>,
        max_distance: Option<Int>,
        min_score: Option<f64>,
        allow_ids: Option<&Bound<'py, PyAny>>,
        deny_ids: Option<&Bound<'py, PyAny>>,
        threads: Option<Int>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyArray2<i64>>)> {
        if allow_ids.is_some() && deny_ids.is_some() {
            return Err(PyValueError::new_err(
                "give allow_ids or deny_ids, not both",
            ));
        }
        // Scores are float32: a bound past its range would become +inf, silently (and no
        // hit); -inf keeps every hit, as such a bound does.
        let min_score = match min_score {
            Some(v) if v > 0.0 && v.is_finite() && !(v as f32).is_finite() => {
                return Err(PyValueError::new_err(format!(
                    "min_score is {v:e}, beyond float32's range (3.4e38), in which scores are"
                )))
            }
            Some(v) if v.is_nan() => {
                return Err(PyValueError::new_err(
                    "min_score is NaN: give a number (-inf keeps every hit)",
                ))
            }
            v => v.map(|v| v as f32),
        };
        let allow = allow_ids
            .map(|i| id_vector(i, "allow_ids", Ids::Set))
            .transpose()?;
        let deny = deny_ids
            .map(|i| id_vector(i, "deny_ids", Ids::Set))
            .transpose()?;
        let py = q.py();
        let k = match k {
            Some(k) => Some(positive("k", Some(k))?.unwrap_or(1)),
            None if max_distance.is_some() || min_score.is_some() => None,
            None => {
                return Err(PyValueError::new_err(
                    "k=None returns every hit in range: give max_distance or min_score too \
                     (or a k)",
                ))
            }
        };
        let rescore = positive("rescore", rescore)?;
        let ef = positive("ef", ef)?;
        let threads = positive("threads", threads)?;
        let max_distance = match max_distance {
            None => None,
            Some(Int(d)) => Some(u32::try_from(d).map_err(|_| {
                PyValueError::new_err(format!(
                    "max_distance must be between 0 and 2**32 - 1, got {d}"
                ))
            })?),
        };
        let request = Request::new(k.unwrap_or(usize::MAX))
            .mode(mode)
            .map_err(|e| PyValueError::new_err(format!("mode: {}", bare(e.into()))))?
            .score(score.unwrap_or("hamming"))
            .map_err(|e| PyValueError::new_err(format!("score: {}", bare(e.into()))))?
            .rescore(rescore)
            .with_ef(ef)
            .max_distance(max_distance)
            .min_score(min_score);
        // D holds scores for every score but Hamming (and after rescoring): the distances are
        // then not read, so adc and soft need not encode the queries.
        let request = request.distances(request.score == bsa::query::ScoreName::Hamming);
        let arr = as_array(q, "q")?;
        let is_codes = arr.dtype().is_equiv_to(&numpy::dtype::<u8>(py));
        if !is_codes && arr.dtype().kind() != b'f' {
            return Err(PyTypeError::new_err(format!(
                "q must be float vectors (float32; float16 and float64 are converted) or packed \
                 codes (uint8, as Model.encode makes them), got dtype {}",
                dtype_str(&arr)
            )));
        }
        let floats = if is_codes {
            None
        } else {
            Some(float32_matrix(arr.clone(), "q", Rows::Any)?)
        };
        let floats = floats.as_ref().map(|f| f.readonly());
        let codes = if is_codes {
            Some(code_matrix(arr, "q", Rows::Any)?)
        } else {
            None
        };
        let codes = codes.as_ref().map(|c| c.readonly());
        let queries = match (&floats, &codes) {
            (Some(f), _) => Queries::Floats(view2(f)),
            (None, Some(c)) => Queries::Packed {
                bytes: c.as_slice()?,
                rows: c.as_array().nrows(),
                cols: c.as_array().ncols(),
            },
            (None, None) => unreachable!("one of the two"),
        };
        let nq = queries.len();
        // Warnings run Python code (a `showwarning` hook may close this object, which waits for
        // the searches holding a generation): given while none is held.
        let model_config = |index: &Index| -> PyResult<Option<(Method, usize)>> {
            let loaded = index.loaded()?;
            Ok(loaded
                .model
                .as_deref()
                .map(|m| (m.config.method, m.config.dim)))
        };
        let method = model_config(self)?;
        // ADC tables and rescoring divide by a query's length; Hamming and soft scores compare
        // its code (or activations), which depend on it.
        if let (Queries::Floats(v), Some(config)) = (queries, method) {
            if request.score != bsa::query::ScoreName::Adc {
                warn_if_not_unit(q.py(), v, "q", config)?;
            }
        }
        let loaded = self.loaded()?;
        // The model's own derived matrices (FrozenModel::view): searches of several indexes
        // in turn do not make them again at each switch.
        let (index, model) = (&loaded.snap, loaded.model.as_deref().map(FrozenModel::view));
        // Both lists were refused above, naming the parameters.
        let filter = IdFilter::from_lists(allow.as_deref(), deny.as_deref())
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        // The results are allocated before the search runs, so that a `k` too large for memory
        // is refused at once.
        let ids = k.map(|k| filled::<i64>(nq, k, -1)).transpose()?;
        // Ctrl-C stops a long search (checked between batches of queries); a short one
        // (under about 64M query-code pairs) does not pay for the waiting thread (0.6 ms).
        let long = nq > 256 && (nq as u64).saturating_mul(index.len() as u64) > 1 << 26;
        let found = interruptible_if(py, threads, long, |stop| {
            bsa_index::query::search_until(index, model, queries, &request, filter, Some(stop))
                .map_err(|e| match queries {
                    Queries::Packed { .. } => code_row_of(e.into(), "q"),
                    _ => row_of(e.into(), "queries", "q"),
                })
        })?;
        let pursuit = (loaded.model.as_deref()).is_some_and(|m| m.config.method == Method::Pursuit);
        drop(loaded);
        // As `bsa search` notes on stderr (a range is a Hamming one, asked for by name): such
        // codes rank poorly by Hamming (WordNet recall@10: 0.38, adc 0.80).
        if score.is_none()
            && max_distance.is_none()
            && matches!(queries, Queries::Floats(_))
            && pursuit
        {
            PyErr::warn(
                py,
                &py.get_type::<PyUserWarning>(),
                c"ranked by Hamming distance (the default score); this index's codes are a \
                  pursuit model's (preset=\"retrieval\"), made to be searched with score=\"adc\" \
                  (and rescore=R with stored vectors); pass score=\"hamming\" to keep Hamming \
                  without this warning",
                1,
            )?;
        }
        let k = k.unwrap_or_else(|| found.hits.iter().map(|h| h.ids.len()).max().unwrap_or(0));
        let mut ids = match ids {
            Some(ids) => ids,
            None => filled::<i64>(nq, k, -1)?,
        };
        let scored = found.hits.iter().any(|h| h.scores.is_some())
            || request.score != bsa::query::ScoreName::Hamming
            || rescore.is_some();
        for (row, h) in ids.rows_mut().into_iter().zip(&found.hits) {
            for (dst, &id) in row.into_iter().zip(&h.ids) {
                *dst = i64::try_from(id)
                    .map_err(|_| PyValueError::new_err(format!("id {id} does not fit int64")))?;
            }
        }
        let d = if scored {
            let mut d = filled::<f32>(nq, k, f32::NEG_INFINITY)?;
            for (row, h) in d.rows_mut().into_iter().zip(&found.hits) {
                for (dst, &s) in row.into_iter().zip(h.scores.iter().flatten()) {
                    *dst = s;
                }
            }
            numpy::IntoPyArray::into_pyarray(d, py).into_any()
        } else {
            let mut d = filled::<i32>(nq, k, i32::MAX)?;
            for (row, h) in d.rows_mut().into_iter().zip(&found.hits) {
                for (dst, &dist) in row.into_iter().zip(&h.distances) {
                    *dst = dist as i32;
                }
            }
            numpy::IntoPyArray::into_pyarray(d, py).into_any()
        };
        Ok((d, numpy::IntoPyArray::into_pyarray(ids, py)))
    }

    /// Adds rows as a new segment, as ``bsa add`` does: ``x`` (float, n x dim, encoded with the
    /// index's model; also stored when the index stores vectors) or ``codes`` (uint8 packed
    /// codes, for an index built from codes). ``ids``: one new id per row (default: after the
    /// largest id so far); ids already in the index raise ``ValueError`` unless ``upsert=True``,
    /// which replaces their rows. Returns the number of rows replaced. The index changes on disk
    /// (one atomic commit); searches already running keep the rows they started with. An empty
    /// batch (0 rows) adds nothing and returns 0, as FAISS's ``add`` of none.
    /// ``merge_factor``: that many segments in one size tier (tiers ``merge_factor`` times apart:
    /// with 2, fewer than 2000 live rows, 2000-3999, ...) are merged in the same commit (as
    /// ``bsa add --merge-factor``; 0 never merges). Ctrl-C stops it before its commit
    /// (``KeyboardInterrupt``; the index stays as it was); one that comes after the commit (or
    /// during a call too short to stop) lets it return, with a ``UserWarning``, so that a
    /// ``KeyboardInterrupt`` always means the rows were not added. ``verify``: the index's
    /// checksums are checked first, and a damaged index is refused (``verify=False`` changes it
    /// anyway, as ``bsa add --no-verify``). ``lock_timeout``: seconds to wait at most for another
    /// writer of the index (another process's add, say) before raising ``TimeoutError`` with
    /// nothing changed (0: do not wait; default: wait as long as it takes), as
    /// ``bsa add --lock-timeout``.
    ///
    /// Example: ``index.add(x=new_vectors, ids=new_ids)``
    #[pyo3(signature = (x=None, codes=None, ids=None, *, upsert=false, merge_factor=Int(2), threads=None, verify=true, lock_timeout=None),
    text_signature = "($self, x=None, codes=None, ids=None, *, upsert=False, merge_factor=2, threads=None, verify=True, lock_timeout=None)"
)]
    #[allow(clippy::too_many_arguments)]
    fn add(
        &self,
        py: Python<'_>,
        x: Option<&Bound<'_, PyAny>>,
        codes: Option<&Bound<'_, PyAny>>,
        ids: Option<&Bound<'_, PyAny>>,
        upsert: bool,
        merge_factor: Int,
        threads: Option<Int>,
        verify: bool,
        lock_timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let threads = positive("threads", threads)?;
        let lock_timeout = seconds("lock_timeout", lock_timeout)?;
        let merge = match (usize::try_from(merge_factor.0), merge_factor.0) {
            (Ok(f), _) => bsa_index::live::MergePolicy::tiered(f),
            (Err(_), f) if f < 0 => {
                let e = format!("merge_factor must be 0 or more, got {f}");
                return Err(PyValueError::new_err(e));
            }
            (Err(_), f) => {
                let e = format!("merge_factor is {f}, past any size this machine can hold");
                return Err(PyValueError::new_err(e));
            }
        };
        let ids = ids.map(|i| id_vector(i, "ids", Ids::PerRow)).transpose()?;
        let floats = match x {
            Some(x) => Some(float32_matrix(as_array(x, "x")?, "x", Rows::Any)?),
            None => None,
        };
        let floats = floats.as_ref().map(|f| f.readonly());
        let packed = match codes {
            Some(c) => Some(code_matrix(as_array(c, "codes")?, "codes", Rows::Any)?),
            None => None,
        };
        let packed = packed.as_ref().map(|c| c.readonly());
        let source = match (&floats, &packed) {
            (Some(_), Some(_)) => return Err(PyValueError::new_err("give x or codes, not both")),
            (Some(f), None) => AddSource::Floats(view2(f)),
            (None, Some(c)) => AddSource::Packed {
                bytes: c.as_slice()?,
                rows: c.as_array().nrows(),
                cols: c.as_array().ncols(),
            },
            (None, None) => return Err(PyValueError::new_err("give x (floats) or codes")),
        };
        if source.rows() == 0 {
            // A pipeline's last batch may be empty: nothing to add, as FAISS's add of none,
            // and no writer's lock to wait for. Its width is checked all the same, as a
            // search checks an empty batch's.
            let loaded = self.loaded()?;
            let model = loaded.model.as_deref().map(|m| &**m);
            bsa::live::check_source(&loaded.snap, model, source, false).map_err(|e| {
                py_err(match source {
                    AddSource::Packed { .. } => code_row_of(e, "codes"),
                    _ => row_of(e, "new rows", "x"),
                })
            })?;
            return match ids.as_deref() {
                Some(i) if !i.is_empty() => Err(PyValueError::new_err(format!(
                    "ids: {} ids for 0 new rows",
                    i.len()
                ))),
                _ => Ok(0),
            };
        }
        if let (AddSource::Floats(v), Some(m)) = (source, self.loaded()?.model.as_deref()) {
            warn_if_not_unit(py, v, "x", (m.config.method, m.config.dim))?;
        }
        let dir = self.snap()?.dir().to_path_buf();
        // Ctrl-C stops the wait for another writer, the encoding, the segment's build and its
        // merges, before the commit: the index stays as it was.
        let report = changing(py, threads, &dir, lock_timeout, |stop, lock_timeout| {
            let mut writer = open_writer(self, &dir, stop, verify, lock_timeout)?;
            let r = bsa::live::add(&mut writer, source, ids.as_deref(), upsert, false, merge)
                .map_err(|e| match source {
                    AddSource::Packed { .. } => code_row_of(e, "codes"),
                    _ => row_of(e, "new rows", "x"),
                })?;
            // Under the lock: two threads changing one Index reopen in commit order.
            self.reopen()?;
            drop(writer);
            Ok(r)
        })?;
        Ok(report.replaced)
    }

    /// Marks the rows holding ``ids`` deleted, as ``bsa delete`` does; ids not in the index are
    /// ignored. Returns the number of rows deleted. ``verify`` and ``lock_timeout`` as in
    /// :meth:`add`.
    ///
    /// Example: ``index.delete(np.array([3, 5]))``
    #[pyo3(signature = (ids, *, verify=true, lock_timeout=None))]
    fn delete(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        verify: bool,
        lock_timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let ids = id_vector(ids, "ids", Ids::Set)?;
        let lock_timeout = seconds("lock_timeout", lock_timeout)?;
        let dir = self.snap()?.dir().to_path_buf();
        let report = changing(py, None, &dir, lock_timeout, |stop, lock_timeout| {
            let mut writer = open_writer(self, &dir, stop, verify, lock_timeout)?;
            let r = writer.delete(&ids)?;
            self.reopen()?;
            drop(writer);
            Ok(r)
        })?;
        Ok(report.deleted)
    }

    /// Merges segments (at most ``max_segments`` remain) and drops deleted rows, as
    /// ``bsa compact`` does. Ctrl-C stops it before its commit (``KeyboardInterrupt``), as in
    /// :meth:`add`.
    /// ``verify`` and ``lock_timeout`` as in :meth:`add`.
    #[pyo3(signature = (max_segments=Int(1), *, threads=None, verify=true, lock_timeout=None),
    text_signature = "($self, max_segments=1, *, threads=None, verify=True, lock_timeout=None)"
)]
    fn compact(
        &self,
        py: Python<'_>,
        max_segments: Int,
        threads: Option<Int>,
        verify: bool,
        lock_timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let lock_timeout = seconds("lock_timeout", lock_timeout)?;
        let max_segments = positive("max_segments", Some(max_segments))?.unwrap_or(1);
        let threads = positive("threads", threads)?;
        let dir = self.snap()?.dir().to_path_buf();
        changing(py, threads, &dir, lock_timeout, |stop, lock_timeout| {
            let mut writer = open_writer(self, &dir, stop, verify, lock_timeout)?;
            bsa::live::compact(&mut writer, max_segments)?;
            self.reopen()?;
            drop(writer);
            Ok(())
        })
    }

    /// Number of rows (deleted rows not counted).
    fn __len__(&self) -> PyResult<usize> {
        Ok(self.snap()?.len())
    }

    /// Number of segments (1 until rows are added).
    #[getter]
    fn segments(&self) -> PyResult<usize> {
        Ok(self.snap()?.segments().len())
    }

    /// Bits per code.
    #[getter]
    fn bits(&self) -> PyResult<usize> {
        Ok(self.snap()?.bits())
    }

    /// The index directory (a temporary one for an index built without ``path``).
    #[getter]
    fn path(&self) -> PyResult<PathBuf> {
        Ok(self.snap()?.dir().to_path_buf())
    }

    /// The index's model (copied in at build time), or ``None``.
    #[getter]
    fn model(&self) -> PyResult<Option<Model>> {
        let loaded = self.loaded()?;
        Ok(loaded.model.as_ref().map(|m| Model {
            inner: Arc::clone(m),
            training: loaded.model_training.clone(),
        }))
    }

    /// The external ids of the rows (int64), deleted rows left out: segment by segment, and in
    /// increasing order within a segment (a build or an add stores its rows sorted by id), not
    /// in the order they were given.
    #[getter]
    fn ids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let snap = self.snap()?;
        let ids = snap
            .segments()
            .iter()
            .flat_map(|s| {
                s.index()
                    .ids()
                    .iter()
                    .enumerate()
                    .filter(|&(r, _)| !s.is_deleted(r))
                    .map(|(_, &i)| i64::try_from(i))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| PyValueError::new_err("an id does not fit int64"))?;
        Ok(ids.to_pyarray(py))
    }

    /// What the index holds and its bytes on disk, as a dict (``bsa info --json``'s summary):
    /// ``format_version``, ``generation`` (counts commits; a rebuild with ``overwrite=True`` or
    /// ``bsa build --force`` starts again at 0, so use :meth:`refresh` to follow an index, not
    /// this number), ``bits``, ``rows`` (deleted ones included),
    /// ``live_rows``, ``next_id``, ``vectors`` (``{"dim", "dtype"}`` or ``None``), ``norms``,
    /// ``inverted``, ``graph``, ``graph_on`` (with a graph: ``"decoded"``, ``"data"`` or
    /// ``"codes"``), ``model`` (its file name), ``segments`` (a dict per segment:
    /// ``name``, ``rows``, ``live_rows``, ``bitmaps``, ``sparse``, ``bridged_from``,
    /// ``bytes``), ``bytes`` by kind of file and ``total_bytes``. The sizes are read from the
    /// disk: ``FileNotFoundError`` when another writer has removed files of the generation
    /// this object searches since it was opened (a compaction); open the index again.
    ///
    /// >>> idx.info()["live_rows"] == len(idx)
    /// True
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let snap = self.snap()?;
        let summary = snap.summary().map_err(index_err)?;
        let mut value =
            serde_json::to_value(&summary).map_err(|e| PyValueError::new_err(e.to_string()))?;
        // As `bsa info --json` says it.
        let graph_on = GraphOn::of_index(snap.extra(), snap.graph_metric());
        if let (Some(on), Some(v)) = (graph_on, value.as_object_mut()) {
            v.insert("graph_on".into(), on.name().into());
        }
        json_to_py(py, &value)
    }

    /// Whether float vectors are stored (``rescore`` needs them).
    #[getter]
    fn has_vectors(&self) -> PyResult<bool> {
        Ok(self.snap()?.has_vectors())
    }

    /// Whether posting lists are stored (``mode="inverted"`` needs them).
    #[getter]
    fn has_inverted(&self) -> PyResult<bool> {
        Ok(self.snap()?.has_inverted())
    }

    /// Whether an HNSW graph is stored (``mode="hnsw"`` needs it).
    #[getter]
    fn has_hnsw(&self) -> PyResult<bool> {
        Ok(self.snap()?.graph_metric().is_some())
    }

    /// Checks every checksum of every file, and the values checksums cannot vouch for (ids
    /// unique over every segment, norms and float32 vectors finite, padding bits zero, posting
    /// lists, bitmaps and sparse codes equal to what the codes imply, the next default id past
    /// every id); raises ``bsa.FormatError`` naming a damaged file. It checks the generation
    /// this object searches: the files it maps stay readable to it when another writer removes
    /// them (a compaction), but those it reads by path (a graph, the model) raise
    /// ``FileNotFoundError`` then: open the index again to check what is there now.
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        let index = self.snap()?;
        detached(py, None, || index.verify())?.map_err(index_err)
    }

    /// Moves this object to the index's current generation when another writer (another
    /// process, ``bsa add`` or another ``Index`` object) has committed since it opened its
    /// own; returns whether it did. Searches see one generation from open (or the last change or
    /// ``refresh``) on: a server that follows a changing index calls this between requests. Its
    /// own changes (``add``, ``delete``, ``compact``) move it at once. Segments both generations
    /// hold are shared, not opened again (their graphs and scan layouts stay warm); new ones
    /// are checked as :meth:`open` checks an index (their checksums, unless it was opened with
    /// ``verify=False``, each before a search first reads the file); a damaged one raises
    /// ``bsa.FormatError`` naming it, and the object stays at its generation.
    ///
    /// Example: ``if index.refresh(): print(len(index), "rows now")``
    fn refresh(&self, py: Python<'_>) -> PyResult<bool> {
        without_gil(py, None, || self.follow(false))
    }

    /// Pickling (``multiprocessing``, say): an index travels as its path and is opened there
    /// again (:meth:`open`, checksums verified), at the generation the folder then holds. An
    /// index built without ``path`` lives only as long as its object: ``TypeError``.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, (PathBuf,))> {
        let tmp = self.tmp.lock().unwrap_or_else(PoisonError::into_inner);
        if tmp.is_some() {
            return Err(PyTypeError::new_err(
                "cannot pickle a bsa.Index built without a path (its folder is removed with \
                 the object): build it with path=... or save() it, then pickle that",
            ));
        }
        let open = py.get_type::<Index>().getattr("open")?;
        Ok((open, (self.snap()?.dir().to_path_buf(),)))
    }

    /// Closes the index: later calls raise ``ValueError``, and the folder of an index built
    /// without ``path`` is removed now rather than when the object goes (a reference kept by a
    /// notebook, a thread or a pool worker ended by SIGTERM kept it on disk), once the calls
    /// under way in other threads have finished with it (a change waiting for its turn is
    /// not made: ``ValueError``). Closing again does nothing. ``with`` closes the index at the
    /// end of its block.
    ///
    /// Example::
    ///
    ///     with bsa.Index.build(codes=codes) as index:
    ///         D, I = index.search(query_codes, 10)
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Ok(loaded) = self.current() else {
            return Ok(());
        };
        let dir = loaded.snap.dir().to_path_buf();
        drop(loaded);
        // After this object's changes under way (they hold the in-process slot of the
        // directory), so that none of them writes into a folder being removed.
        let tmp = interruptible(py, None, |stop| {
            let _changing = Changing::wait(&dir, stop, None, || {})?;
            let taken = self
                .inner
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let tmp = self
                .tmp
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            // The folder goes once the calls under way in other threads (a search, a save, a
            // verify: each holds the generation it reads) have finished with its files.
            if let (Some(loaded), Some(_)) = (&taken, &tmp) {
                while Arc::strong_count(loaded) > 1 || Arc::strong_count(&loaded.snap) > 1 {
                    if bsa_index::check_stop(Some(stop)).is_err() {
                        // Interrupted: closed all the same; the folder goes with the object.
                        *self.tmp.lock().unwrap_or_else(PoisonError::into_inner) = tmp;
                        return Err(bsa::Error::Stopped);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            Ok(tmp)
        })?;
        if let Some(tmp) = tmp {
            tmp.remove().map_err(py_err)?;
        }
        Ok(())
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Closes the index (:meth:`close`); an exception of the block goes on.
    #[pyo3(signature = (exc_type, exc_value, traceback))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc_value: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let _ = (exc_type, exc_value, traceback);
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match self.snap() {
            Ok(snap) => format!(
                "bsa.Index(n={}, bits={}, segments={}, path={:?})",
                snap.len(),
                snap.bits(),
                snap.segments().len(),
                snap.dir().display().to_string()
            ),
            Err(_) => "bsa.Index(closed)".to_string(),
        }
    }
}

/// Whether the ids of [`id_vector`] are a set of ids (to filter on or delete: a Python `set`
/// is taken) or one id per row, in order (a `set` is refused: it has no order).
#[derive(Clone, Copy, PartialEq)]
enum Ids {
    Set,
    PerRow,
}

/// A 1-D array of non-negative integer ids as `u64`.
fn id_vector(obj: &Bound<'_, PyAny>, name: &str, kind: Ids) -> PyResult<Vec<u64>> {
    use pyo3::types::{PyFrozenSet, PySet};
    if obj.is_instance_of::<PySet>() || obj.is_instance_of::<PyFrozenSet>() {
        // numpy makes a set an object array of one element.
        if kind == Ids::PerRow {
            return Err(PyTypeError::new_err(format!(
                "{name} is a set, which has no order: give a list or array with one id per row"
            )));
        }
        let list = obj
            .py()
            .import("builtins")?
            .call_method1("sorted", (obj,))?;
        return id_vector(&list, name, kind);
    }
    let a = as_array(obj, name)?;
    // `[]` is a float64 array to numpy: an empty list is no ids, whatever its dtype.
    if a.ndim() == 1 && a.len() == 0 {
        return Ok(Vec::new());
    }
    let kind = a.dtype().kind();
    if kind != b'i' && kind != b'u' {
        // What numpy made of a Python object, said in the caller's terms: a generator is one
        // object (not read), a float anywhere makes a list float64, and an int past uint64 an
        // object array.
        let hint = if obj.hasattr("dtype")? {
            ""
        } else if a.ndim() == 0 {
            let kind = obj
                .get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string());
            return Err(PyTypeError::new_err(format!(
                "{name} must be a list, range or array of integers, got a {kind}"
            )));
        } else if kind == b'f' {
            " (numpy makes a list float64 when it holds a float, or an int of 2**63 or more: \
             ids are integers below 2**63)"
        } else if kind == b'O' {
            " (numpy makes a list of objects when it holds something other than numbers, or an \
             int of 2**64 or more: ids are integers below 2**63)"
        } else {
            ""
        };
        return Err(PyTypeError::new_err(format!(
            "{name} must hold integers, got dtype {}{hint}",
            dtype_str(&a)
        )));
    }
    if a.ndim() != 1 {
        return Err(PyValueError::new_err(format!(
            "{name} must be 1-D (one id per row), got shape {}",
            shape_str(a.shape())
        )));
    }
    if kind == b'u' {
        let py = a.py();
        let a = contiguous(a.into_any(), numpy::dtype::<u64>(py))?;
        let a = a.cast_into::<PyArray1<u64>>()?;
        let a = a.readonly();
        let ids = a.as_slice()?;
        // Searches return ids as int64: an id they could not return is refused here.
        bsa::pipeline::check_ids_fit_int64(name, ids)
            .map_err(|e| PyValueError::new_err(bare(e)))?;
        return Ok(ids.to_vec());
    }
    let py = a.py();
    let a = contiguous(a.into_any(), numpy::dtype::<i64>(py))?;
    let a = a.cast_into::<PyArray1<i64>>()?;
    let a = a.readonly();
    a.as_slice()?
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            u64::try_from(v).map_err(|_| {
                PyValueError::new_err(format!("{name}[{i}] is {v}; ids must be non-negative"))
            })
        })
        .collect()
}

/// A 2-D integer matrix (results or ground truth) as lists of ids, without negative entries
/// (FAISS's and `Index.search`'s -1 for "no hit").
/// The first `k` ids of each row of the 2-D integer array `obj`, negative entries (-1: no
/// hit) dropped after the cut, so that they stay misses where they stand.
fn id_lists(obj: &Bound<'_, PyAny>, name: &str, k: usize) -> PyResult<Vec<Vec<u64>>> {
    let a = as_array(obj, name)?;
    let kind = a.dtype().kind();
    if kind != b'i' && kind != b'u' {
        return Err(PyTypeError::new_err(format!(
            "{name} must hold integer ids, got dtype {}",
            dtype_str(&a)
        )));
    }
    if a.ndim() != 2 {
        return Err(PyValueError::new_err(format!(
            "{name} must be 2-D (queries x neighbours), got shape {}",
            shape_str(a.shape())
        )));
    }
    let py = a.py();
    if kind == b'u' {
        // Read as they are: through int64, ids of 2**63 or more would become negative misses.
        let a = contiguous(a.into_any(), numpy::dtype::<u64>(py))?.cast_into::<PyArray2<u64>>()?;
        let a = a.readonly();
        return Ok(a
            .as_array()
            .rows()
            .into_iter()
            .map(|r| r.iter().take(k).copied().collect())
            .collect());
    }
    let a = contiguous(a.into_any(), numpy::dtype::<i64>(py))?.cast_into::<PyArray2<i64>>()?;
    let a = a.readonly();
    Ok(a.as_array()
        .rows()
        .into_iter()
        .map(|r| {
            r.iter()
                .take(k)
                .filter_map(|&v| u64::try_from(v).ok())
                .collect()
        })
        .collect())
}

/// The exact ``k`` nearest rows of ``base`` by cosine similarity for each row of ``queries``
/// (both float, same dimension): int64, ``(nq, k)``, best first, ties to the lower row, -1
/// past the last row when ``base`` has fewer than ``k`` (as :meth:`Index.search` pads;
/// ``bsa groundtruth`` refuses such a ``k``). Otherwise the same as ``bsa groundtruth`` (a blocked GEMM picks candidates; float64 rescoring fixes the
/// order on every CPU and thread count). The GIL is released; Ctrl-C stops it
/// (``KeyboardInterrupt``).
///
/// Example: ``gt = bsa.groundtruth(base, queries, 100); print(bsa.recall(I, gt, 10))``
#[pyfunction]
#[pyo3(signature = (base, queries, k=Int(100), *, threads=None),
    text_signature = "(base, queries, k=100, *, threads=None)"
)]
fn groundtruth<'py>(
    base: &Bound<'py, PyAny>,
    queries: &Bound<'py, PyAny>,
    k: Int,
    threads: Option<Int>,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    let py = base.py();
    let k = positive("k", Some(k))?.unwrap_or(1);
    let threads = positive("threads", threads)?;
    let b = float32_matrix(as_array(base, "base")?, "base", Rows::Some)?;
    let q = float32_matrix(as_array(queries, "queries")?, "queries", Rows::Any)?;
    let (b, q) = (b.readonly(), q.readonly());
    let (bv, qv) = (view2(&b), view2(&q));
    if bv.ncols() != qv.ncols() {
        return Err(PyValueError::new_err(format!(
            "queries have {} columns but base has {}: they must come from the same encoder",
            qv.ncols(),
            bv.ncols()
        )));
    }
    // Fewer base rows than k: the rest of each row is -1, as a search pads its results (and
    // as `recall` reads a padded ground truth). An empty batch gets an empty answer.
    let found = k.min(bv.nrows());
    // Allocated first, as a search's results: a `k` too large for memory is refused at once.
    let mut out = filled::<i64>(qv.nrows(), k, -1)?;
    let top = match qv.nrows() {
        0 => Vec::new(),
        // Ctrl-C stops it between blocks (a million rows by thousands of queries take minutes).
        _ => interruptible(py, threads, |stop| {
            check_rows("base", bv, true)?;
            check_rows("queries", qv, true)?;
            with_blas_threads(threads, || {
                let blocks = bsa::groundtruth::Blocks::default();
                bsa::groundtruth::exact_top_k_blocked(bv, qv, found, blocks, &mut |_, _| {}, stop)
            })
        })?,
    };
    for (mut row, ids) in out.rows_mut().into_iter().zip(&top) {
        for (dst, &id) in row.iter_mut().zip(ids) {
            *dst = i64::from(id);
        }
    }
    Ok(numpy::IntoPyArray::into_pyarray(out, py))
}

/// Recall@k: the fraction of each query's first ``k`` true neighbours (``gt``, e.g. from
/// :func:`groundtruth`) found among its first ``k`` results (``I`` from :meth:`Index.search`;
/// -1 entries count as misses), averaged over queries: each query counts ``k`` true
/// neighbours, so a -1 in ``gt`` (a ground truth padded as search results are) is one no
/// result can find. Integer ids of any dtype; a true neighbour repeated in ``I`` counts once.
///
/// Example: ``bsa.recall(I, gt, 10)``  # 0.0 .. 1.0
#[pyfunction]
#[pyo3(name = "recall", signature = (I, gt, k))]
#[allow(non_snake_case)]
fn recall(I: &Bound<'_, PyAny>, gt: &Bound<'_, PyAny>, k: Int) -> PyResult<f64> {
    let k = positive("k", Some(k))?.unwrap_or(1);
    let got = id_lists(I, "I", k)?;
    let truth_shape = as_array(gt, "gt")?.shape().to_vec();
    let truth = id_lists(gt, "gt", k)?;
    if got.len() != truth.len() {
        return Err(PyValueError::new_err(format!(
            "I has {} rows but gt has {}: one row per query in both",
            got.len(),
            truth.len()
        )));
    }
    if truth_shape.get(1).copied().unwrap_or(0) < k {
        return Err(PyValueError::new_err(format!(
            "gt has {} columns, fewer than k = {k} true neighbours",
            truth_shape.get(1).copied().unwrap_or(0)
        )));
    }
    Ok(I.py().detach(|| bsa::metrics::recall_at_k(&got, &truth, k)))
}

/// bsa: sparse binary codes for dense embeddings, and their search.
///
/// ``bsa.train`` fits a :class:`Model` on float embeddings, :meth:`Model.encode` turns vectors
/// into packed binary codes, :class:`Index` stores codes (with the model and optionally the
/// float vectors) in ``bsa build``'s on-disk format and searches them
/// (``D, I = index.search(q, k)``, shaped like FAISS's results). ``bsa.groundtruth`` and
/// ``bsa.recall`` measure recall. Arrays are numpy arrays; C-contiguous float32 and uint8
/// inputs are read in place, other float types and layouts are converted.
#[pymodule]
#[pyo3(name = "bsa")]
fn bsa_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Like the command line at start-up: OpenBLAS's AVX2/AVX-512 kernels on CPUs newer than its
    // table (speed only; the results do not depend on it).
    // SAFETY: at import, bsa's OpenBLAS has run no product (nothing of bsa has run; numpy's
    // wheels carry their own OpenBLAS, under other symbol names), and the import holds the
    // GIL. What is left: a thread outside Python (C code without the GIL) reading the
    // environment while `OPENBLAS_CORETYPE` is set and removed, on a CPU newer than
    // OpenBLAS's table only (elsewhere nothing is written): the risk of any `os.environ`
    // write, which Python programs make freely.
    unsafe {
        bsa::threads::fix_blas_core(bsa::simd::Family::current());
    }
    // See `FORKS`. (On platforms without fork, `os` has no `register_at_fork`.)
    let os = m.py().import("os")?;
    if os.hasattr("register_at_fork")? {
        let kwargs = pyo3::types::PyDict::new(m.py());
        kwargs.set_item("after_in_child", wrap_pyfunction!(after_fork_in_child, m)?)?;
        os.call_method("register_at_fork", (), Some(&kwargs))?;
    }
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("FormatError", m.py().get_type::<FormatError>())?;
    m.add_class::<Model>()?;
    m.add_class::<Index>()?;
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_function(wrap_pyfunction!(groundtruth, m)?)?;
    m.add_function(wrap_pyfunction!(recall, m)?)?;
    Ok(())
}
