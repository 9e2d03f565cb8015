//! The `bsa` command line: parse, dispatch, report errors. Each subcommand lives in `cli/`.

use std::io::Write as _;
use std::process::ExitCode;

use clap::FromArgMatches;

mod cli;

fn main() -> ExitCode {
    let matches = cli::command().get_matches();
    let args = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let code = match cli::run(args, &matches) {
        Ok(code) => code,
        // A closed stdout (e.g. `bsa search ... | head`) is not an error worth reporting.
        Err(err) if broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // Not eprintln!, which panics when stderr is gone (a closed terminal's SIGHUP).
            let _ = writeln!(std::io::stderr(), "bsa: {err:#}");
            ExitCode::from(2)
        }
    };
    // A command that took a Ctrl-C or SIGTERM (`cli::io::stop_on_signal`) has stopped and
    // cleaned up, or finished just before it could stop: either way it ends by that signal, as
    // the signal's default action would have, so that a shell stops a script running it.
    cli::end_by_signal();
    code
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
