//! Where and how calls run: off the GIL ([`detached`], [`without_gil`]), on a thread pool of
//! the size a call asks for ([`call_pool`], [`pool_of`]: kept across calls, started anew in a
//! forked child, see [`FORKS`]) with OpenBLAS's thread count to match ([`with_blas_threads`]),
//! interruptible by Ctrl-C ([`interruptible`], [`interruptible_if`]), and one at a time per
//! index directory for the calls that change it ([`changing`], [`Changing`], which warns with
//! [`warn_waiting`] as a writer's lock does). Kept apart from the classes because every call of
//! the module goes through them, and their rules (which thread waits where, and for what) are
//! what keeps calls from several Python threads, or from a forked child, from hanging.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::exceptions::{PyRuntimeError, PyUserWarning, PyValueError};
use pyo3::prelude::*;

use crate::errors::py_err;

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
pub(crate) fn detached<T: Send>(
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
pub(crate) fn without_gil<T: Send>(
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
pub(crate) struct Changing(PathBuf);

impl Changing {
    /// Waits (checking `stop` every 100 ms) until no other call of this process changes `dir`,
    /// as a writer waits for another's lock: calling `on_wait` first (unless `timeout` is
    /// zero; a change warns), and for
    /// at most `timeout` (then [`bsa_index::Error::LockTimeout`]). Returns what is left of
    /// `timeout` for the lock itself.
    pub(crate) fn wait(
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
pub(crate) fn interruptible<T: Send>(
    py: Python<'_>,
    threads: Option<usize>,
    f: impl FnOnce(&Arc<AtomicBool>) -> bsa::Result<T> + Send,
) -> PyResult<T> {
    run_interruptible(py, threads, None, |stop, _| f(stop))
}

/// [`interruptible`] for a change of (or a build over) the index directory `dir`: other calls
/// of this process changing it are waited for first ([`Changing`]), for at most `lock_timeout`,
/// and `f` gets what is left of it for the writers' lock.
pub(crate) fn changing<T: Send>(
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
pub(crate) fn run_interruptible<T: Send>(
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

/// [`interruptible`] when the work is `long`, else [`without_gil`] on this thread with a flag
/// never set: a short call (one query, a few rows) does not pay for the waiting thread.
pub(crate) fn interruptible_if<T: Send>(
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
pub(crate) fn with_blas_threads<T>(threads: Option<usize>, f: impl FnOnce() -> T) -> T {
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
pub(crate) fn after_fork_in_child() {
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

/// Warns (`UserWarning`) that a change of the index `dir` waits for another writer's lock.
/// Called with the GIL released, before the wait.
pub(crate) fn warn_waiting(dir: &Path) {
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
