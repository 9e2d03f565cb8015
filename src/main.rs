//! The `bsa` command line: parse, dispatch, report errors. Each subcommand lives in `cli/`.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

mod cli;

fn main() -> ExitCode {
    let matches = cli::Cli::command().get_matches();
    let args = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli::run(args, &matches) {
        Ok(code) => code,
        Err(err) => {
            // A closed stdout (e.g. `bsa search ... | head`) is not an error worth reporting.
            if let Some(io) = err.root_cause().downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("bsa: {err:#}");
            // Stopped by Ctrl-C or SIGTERM (`cli::io::stop_on_signal`), having cleaned up: end
            // by that signal, as its default action would have.
            if matches!(err.downcast_ref::<bsa::Error>(), Some(bsa::Error::Stopped))
                || matches!(
                    err.downcast_ref::<bsa_index::Error>(),
                    Some(bsa_index::Error::Stopped)
                )
            {
                cli::end_by_signal();
            }
            ExitCode::from(2)
        }
    }
}
