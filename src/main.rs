//! The `bsa` command line: parse, dispatch, report errors. Each subcommand lives in `cli/`.

use std::io::Write as _;
use std::process::ExitCode;

use clap::FromArgMatches;

mod cli;

fn main() -> ExitCode {
    // A write past the file size limit (`ulimit -f`) fails with EFBIG, an error bsa reports and
    // cleans up after, rather than killing the process by SIGXFSZ with its temporary files left.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to "ignore" before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let matches = cli::command().get_matches();
    let args = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // OpenBLAS's AVX2/AVX-512 kernels on CPUs newer than its table (speed only; the results
    // do not depend on it).
    // SAFETY: no thread has started and no BLAS product has run: the command runs after it.
    unsafe {
        bsa::threads::fix_blas_core(bsa::simd::Family::current());
    }
    let (code, finished) = match cli::run(args, &matches) {
        Ok(code) => (code, true),
        // A closed stdout (e.g. `bsa search ... | head`) is not an error worth reporting.
        Err(err) if broken_pipe(&err) => (ExitCode::SUCCESS, true),
        Err(err) => {
            // Not eprintln!, which panics when stderr is gone (a closed terminal's SIGHUP).
            let _ = writeln!(std::io::stderr(), "bsa: {err:#}");
            (ExitCode::from(exit_status(&err)), false)
        }
    };
    // A command that took a Ctrl-C or SIGTERM (`cli::signals::stop_on_signal`) and stopped, having
    // cleaned up, ends by that signal, as the signal's default action would have, so that a
    // shell stops a script running it. One that had finished its work when the signal came
    // (an add committed, say) says so and exits as it would have: a script that reran a
    // command killed by a signal would add its rows twice.
    if finished {
        cli::note_late_signal();
    } else {
        cli::end_by_signal();
    }
    code
}

/// The exit status of a failed command: 75 (`EX_TEMPFAIL` of sysexits.h) when another writer
/// held the index past `--lock-timeout` (nothing was changed: a script may try again later),
/// 2 for every other error.
fn exit_status(err: &anyhow::Error) -> u8 {
    use bsa::bsa_index::Error as IndexError;
    let busy = err.chain().any(|e| {
        matches!(e.downcast_ref(), Some(IndexError::LockTimeout { .. }))
            || matches!(
                e.downcast_ref(),
                Some(bsa::Error::Index(IndexError::LockTimeout { .. }))
            )
    });
    if busy { 75 } else { 2 }
}

/// Whether `err` is a write to a closed pipe: stdout's, or one given as `--out /dev/stdout`
/// (a `bsa::Error::Io` naming it).
fn broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        let kind = match (
            e.downcast_ref::<std::io::Error>(),
            e.downcast_ref::<bsa::Error>(),
        ) {
            (Some(io), _) => Some(io.kind()),
            (_, Some(bsa::Error::Io { error, .. })) => Some(error.kind()),
            _ => None,
        };
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}
