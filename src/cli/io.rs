//! What every subcommand reads and writes: embedding files in, JSON lines out, a progress bar on
//! stderr. Below every subcommand file, so that `cli/mod.rs` only parses and dispatches.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
#[cfg(unix)]
use std::sync::atomic::Ordering;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar on stderr, hidden when `quiet` or when stderr is not a terminal.
pub fn bar(len: u64, quiet: bool, template: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if quiet {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    } else {
        pb.set_draw_target(ProgressDrawTarget::stderr());
    }
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// Opens an embedding file and checks it can be used: finite values and, for cosine, no zero rows.
pub fn open_embeddings(
    path: &std::path::Path,
    need_nonzero: bool,
) -> anyhow::Result<bsa::io::Embeddings> {
    let e = bsa::io::Embeddings::open(path)?;
    e.check_finite()?;
    if need_nonzero {
        e.check_nonzero_norms()?;
    }
    Ok(e)
}

/// Checks that `queries` have the columns of `base` (no model is involved: both are searched
/// against each other).
pub fn expect_same_dim(
    base: &bsa::io::Embeddings,
    queries: &bsa::io::Embeddings,
) -> anyhow::Result<()> {
    if queries.dim() != base.dim() {
        anyhow::bail!(
            "{} has {} columns but {} has {}: queries and base must come from the same encoder",
            queries.path().display(),
            queries.dim(),
            base.path().display(),
            base.dim()
        );
    }
    Ok(())
}

/// A duration given in seconds (`30`, `0.5`, `0`), for clap: 0 or more, and one a
/// `Duration` holds (leaving the flag out is how to wait as long as it takes).
pub fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    std::time::Duration::try_from_secs_f64(secs).map_err(|_| {
        if secs >= 0.0 {
            format!("{s} seconds is too long: leave the flag out to wait as long as it takes")
        } else {
            format!("{s}: give a number of seconds, 0 or more")
        }
    })
}

/// Says on stderr that a change of the index `dir` waits for another writer's lock (a wait
/// behind a long compaction looks like a hang otherwise).
pub fn say_waiting(dir: &std::path::Path) {
    let holder = match bsa::bsa_index::live::LockHolder::of(dir) {
        Some(h) => format!("{h}: "),
        None => String::new(),
    };
    errln!(
        "bsa: waiting for another writer of {} to finish ({holder}an add, delete, compact or \
         build --force holds its lock)",
        dir.display()
    )
}

/// The flag that the first Ctrl-C (SIGINT), SIGTERM or SIGHUP sets from now on, for a command
/// that stops cleanly when it is set (`bsa build` removes its unfinished index, `bsa add`,
/// `delete` and `compact` what they wrote before their commit); a second signal ends the
/// process at once. Call it just before the long work: until then the signals end the process
/// as usual. From then on every output written through [`bsa::io::write_atomic`] is abandoned
/// once the flag is set ([`bsa::io::abandon_writes_on`]): a signal during the write leaves the
/// old file and no temporary one. `main` then ends the process by the signal
/// ([`end_by_signal`]) if the command stopped, or says the signal came late
/// ([`note_late_signal`]) if it had finished.
pub fn stop_on_signal() -> anyhow::Result<Arc<AtomicBool>> {
    #[cfg(unix)]
    {
        static INSTALLED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        let s = signals();
        INSTALLED
            .get_or_init(|| {
                install(s).map_err(|e| e.to_string())?;
                // Nothing else in the process sets it: this is the first and only flag.
                let first = bsa::io::abandon_writes_on(Arc::clone(&s.stop));
                debug_assert!(first, "another flag abandons bsa's writes");
                Ok(())
            })
            .clone()
            .map_err(|e| anyhow::anyhow!("installing the Ctrl-C handler: {e}"))?;
        Ok(Arc::clone(&s.stop))
    }
    #[cfg(not(unix))]
    {
        Ok(Arc::new(AtomicBool::new(false)))
    }
}

/// A signal this soon after the first is the same request, not the second that quits at once.
#[cfg(unix)]
const REPEAT_MS: u64 = 200;

/// When the first signal came, in [`monotonic_ms`] (0: none yet).
#[cfg(unix)]
static FIRST_SIGNAL_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Milliseconds of `CLOCK_MONOTONIC`, plus one (never 0). `clock_gettime` is async-signal-safe.
#[cfg(unix)]
fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000 + 1
}

/// Registers the handlers of [`stop_on_signal`] (once per process), and a thread that says on
/// stderr that the command is stopping, so that the first Ctrl-C is seen to have worked.
#[cfg(unix)]
fn install(s: &'static Signals) -> std::io::Result<()> {
    for (signal, seen) in &s.seen {
        // An ignored signal stays ignored: a job a script started in the background (SIGINT
        // ignored) goes on when Ctrl-C stops the script, and so does one under `nohup`.
        if ignored(*signal) {
            continue;
        }
        // On a second signal the default action (the end of the process), unless it came
        // within REPEAT_MS of the first: GNU `timeout` sends its signal twice, to the process
        // and to its group, microseconds apart, and that one request ended a build mid-write
        // about one time in six, leaving its unfinished folder. Then the flags are set.
        let (sig, seen, stop) = (*signal, Arc::clone(seen), Arc::clone(&s.stop));
        // SAFETY: the action only reads the monotonic clock, loads and stores atomics and, to
        // quit, runs the signal's default action: all async-signal-safe.
        unsafe {
            signal_hook::low_level::register(sig, move || {
                let now = monotonic_ms();
                let first = FIRST_SIGNAL_MS.load(Ordering::SeqCst);
                if first == 0 {
                    FIRST_SIGNAL_MS.store(now, Ordering::SeqCst);
                } else if now.saturating_sub(first) >= REPEAT_MS {
                    signal_hook::low_level::emulate_default_handler(sig).ok();
                }
                seen.store(true, Ordering::SeqCst);
                stop.store(true, Ordering::SeqCst);
            })?;
        }
    }
    // Not thread::spawn, which panics when no thread can start (memory or threads exhausted,
    // as under a `ulimit -v` that BLAS's buffers fill): the stop works without the message.
    let _ = std::thread::Builder::new().spawn(move || {
        while !s.stop.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // Not eprintln!, which panics when stderr is gone (a closed terminal's SIGHUP).
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"\nbsa: stopping; removing what is unfinished (the signal again, Ctrl-C say, quits at once)\n",
        );
    });
    Ok(())
}

/// Ends the process by the signal that set [`stop_on_signal`]'s flag, as its default action
/// would have, and returns if there was none. A shell then sees a command killed by Ctrl-C
/// (and stops a script running it), not one that chose to exit.
pub fn end_by_signal() {
    #[cfg(unix)]
    for (signal, seen) in &signals().seen {
        if seen.load(Ordering::Relaxed) {
            // Falls back to abort: it does not return for these signals.
            let _ = signal_hook::low_level::emulate_default_handler(*signal);
        }
    }
}

/// `n` and `noun`, plural unless `n` is 1: "1 row", "2 rows".
pub fn counted(n: impl Into<u64>, noun: &str) -> String {
    match n.into() {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// Says on stderr that a signal of [`stop_on_signal`]'s came too late to stop the command, which
/// had finished (its result stands), if one came.
pub fn note_late_signal() {
    #[cfg(unix)]
    if signals()
        .seen
        .iter()
        .any(|(_, seen)| seen.load(Ordering::Relaxed))
    {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"bsa: the signal came after the command had finished its work, which stands\n",
        );
    }
}

/// Whether `signal`'s disposition is "ignore" (inherited from the parent process).
#[cfg(unix)]
fn ignored(signal: i32) -> bool {
    // SAFETY: a null new action only reads the current one into `old`, a plain C struct for
    // which all zeros is a valid value.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// The flags the signal handlers set: any of the signals, and each one.
#[cfg(unix)]
struct Signals {
    stop: Arc<AtomicBool>,
    seen: [(i32, Arc<AtomicBool>); 3],
}

#[cfg(unix)]
fn signals() -> &'static Signals {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    static SIGNALS: std::sync::OnceLock<Signals> = std::sync::OnceLock::new();
    SIGNALS.get_or_init(|| Signals {
        stop: Arc::default(),
        seen: [SIGTERM, SIGHUP, SIGINT].map(|s| (s, Arc::default())),
    })
}

/// Warns on stderr when every byte of the packed codes read from `path` (`rows x cols`) is 0 or
/// 1 over many bytes: one byte per bit (`x.astype(np.uint8)` of 0/1 values), not packed codes;
/// packed ones would have other bits set somewhere.
pub fn warn_if_unpacked(path: &std::path::Path, rows: usize, cols: usize, bytes: &[u8]) {
    if cols > 1 && rows * cols >= 64 && bytes.iter().all(|&b| b <= 1) {
        errln!(
            "bsa: warning: every byte of {} is 0 or 1: if these are bits, one per byte, pack them \
             (np.packbits(x, axis=1, bitorder=\"little\")); as given they are {}-bit codes",
            path.display(),
            cols * 8
        );
    }
}

/// Warns on stderr when rows of `e` are not of unit length and `method`'s codes depend on a
/// row's length ([`bsa::model::Method::depends_on_length`]): rows of one direction and two
/// lengths would get two codes. Once per file; the command goes on.
pub fn warn_if_not_unit(e: &bsa::io::Embeddings, method: bsa::model::Method) {
    if !method.depends_on_length() {
        return;
    }
    if let Some(off) = e.off_unit_length() {
        let what = e.path().display().to_string();
        errln!("bsa: warning: {}", off.warning(&what, e.n(), method));
    }
}

/// Writes one JSON value as a line on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    // Serialised first, so that a closed stdout is the write's `io::Error` (which `main` takes
    // as a quiet end), not a serde_json error wrapping it.
    let line = serde_json::to_string(value)?;
    writeln!(std::io::stdout().lock(), "{line}").map_err(on_stdout)?;
    Ok(())
}

/// A failed write to stdout, said as one ("writing to standard output: No space left on
/// device"); its kind is kept, so that a closed pipe still ends `bsa` quietly.
pub fn on_stdout(e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("writing to standard output: {e}"))
}

// The `--model` and `--data` of `bsa encode` and `bsa eval`, flattened into their `Args`. (A plain
// comment: clap must not take a doc comment here for help text.)
#[derive(Debug, clap::Args)]
pub struct ModelData {
    /// Model file from `bsa train`.
    #[arg(long)]
    pub model: std::path::PathBuf,
    /// Float embeddings, n x D.
    #[arg(long)]
    pub data: std::path::PathBuf,
}

impl ModelData {
    /// Loads the model and opens the data (checked for zero rows when `need_nonzero`), which
    /// must have the model's dimension.
    pub fn open(
        &self,
        need_nonzero: bool,
    ) -> anyhow::Result<(bsa::model::Autoencoder, bsa::io::Embeddings)> {
        let model = bsa::io::model::load(&self.model)?;
        let data = open_embeddings(&self.data, need_nonzero)?;
        data.expect_dim(model.config.dim)?;
        Ok((model, data))
    }
}

/// Whether writing `out` writes this process's stdout (`--out /dev/stdout`, `/dev/fd/1`, or the
/// file the shell redirected stdout to), where a command may print something else too.
pub fn is_stdout(out: &std::path::Path) -> bool {
    same_file(out, std::path::Path::new("/dev/stdout"))
}

/// Whether `a` and `b` name the same file, from their metadata: opening them (as the
/// `same-file` crate does) would wait forever on a pipe.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        #[cfg(unix)]
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt;
            (a.dev(), a.ino()) == (b.dev(), b.ino())
        }
        #[cfg(not(unix))]
        (Ok(_), Ok(_)) => a.canonicalize().ok() == b.canonicalize().ok(),
        _ => false,
    }
}

/// Refuses an `--out` that would destroy one of the command's inputs: the same file as an input
/// (`bsa encode --data x.npy --out x.npy`; hard and symbolic links included), a path inside an
/// input directory (`bsa search --out idx/manifest.json`), or, for an output directory that is
/// replaced whole (`bsa build --force`), a folder holding an input. Each input is `(flag,
/// path)`; inputs that do not exist are left to their reader's error. An `--out` that is a
/// file (`out_is_file`) must be a regular file if it exists (not a directory, device or pipe:
/// [`bsa::io::writable_target`]); checked here, before the command's work.
pub fn refuse_clobbering(
    out: &std::path::Path,
    out_is_file: bool,
    inputs: &[(&str, Option<&std::path::Path>)],
) -> anyhow::Result<()> {
    // The inputs first: an --out inside the command's own --index is said as that.
    refuse_over_inputs(out, out_is_file, inputs)?;
    if out_is_file {
        bsa::io::writable_target(out).map_err(|e| match e {
            bsa::Error::InvalidArgument(m) => anyhow::anyhow!("--out {m}"),
            e => anyhow::anyhow!("--out {e}"),
        })?;
    }
    Ok(())
}

/// [`refuse_clobbering`]'s check of `out` against the command's inputs.
fn refuse_over_inputs(
    out: &std::path::Path,
    out_is_file: bool,
    inputs: &[(&str, Option<&std::path::Path>)],
) -> anyhow::Result<()> {
    // `out` may not exist yet: resolve its folder and keep its name.
    let folder = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let resolved = match out.canonicalize() {
        Ok(p) => p,
        Err(_) => match (folder.canonicalize(), out.file_name()) {
            (Ok(d), Some(name)) => d.join(name),
            _ => return Ok(()),
        },
    };
    for &(flag, input) in inputs {
        let Some(input) = input else { continue };
        let Ok(input_resolved) = input.canonicalize() else {
            continue;
        };
        let what = if same_file(out, input) {
            "is the same file as"
        } else if input_resolved.is_dir() && resolved.starts_with(&input_resolved) {
            "lies inside"
        } else if !out_is_file && resolved.is_dir() && input_resolved.starts_with(&resolved) {
            // A folder replaced whole (a file output there is refused as a folder below).
            "is the folder holding"
        } else {
            continue;
        };
        anyhow::bail!(
            "--out {} {what} {flag} {}: writing there would destroy the input; choose another \
             --out",
            out.display(),
            input.display()
        );
    }
    Ok(())
}

/// Ground-truth ids (`nq x k` integers, best first, as `bsa groundtruth` writes them) as one list
/// per query, checked against the queries and base they are for: a row per query, at least 10
/// neighbours each (recall@10), every id a row of the `base_n` base vectors.
pub fn read_ground_truth(
    path: &std::path::Path,
    nq: usize,
    base_n: usize,
) -> anyhow::Result<Vec<Vec<u64>>> {
    let (rows, cols, ids) = bsa::io::read_i32(path)?;
    if rows != nq {
        anyhow::bail!(
            "{}: {rows} rows of ground truth for {nq} queries",
            path.display()
        );
    }
    if cols < 10 {
        anyhow::bail!(
            "{}: {cols} neighbours per query; recall@10 needs at least 10",
            path.display()
        );
    }
    if ids.contains(&-1) {
        anyhow::bail!(
            "{}: padded with -1 past the base's {base_n} rows (a ground truth of more \
             neighbours than there are base vectors); recall needs the true neighbours only: \
             make it with a --k of at most {base_n}",
            path.display()
        );
    }
    if let Some(bad) = ids.iter().find(|&&i| i < 0 || i as usize >= base_n) {
        anyhow::bail!(
            "{}: id {bad} is not a row of the {base_n} base vectors",
            path.display()
        );
    }
    Ok(ids
        .chunks(cols)
        .map(|r| r.iter().map(|&i| i as u64).collect())
        .collect())
}
