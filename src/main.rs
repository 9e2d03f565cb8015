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
        Err(err)
            if err
                .root_cause()
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
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
