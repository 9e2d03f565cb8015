//! Ctrl-C, SIGTERM and SIGHUP: the flag a long command stops by, the message that it is
//! stopping, a second signal that quits at once, and the end by the signal once it has stopped.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
#[cfg(unix)]
use std::sync::atomic::Ordering;

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
