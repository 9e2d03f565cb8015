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
            // Stopped by Ctrl-C (`cli::io::stop_on_signal`): the shell's code for SIGINT.
            if matches!(err.downcast_ref::<bsa::Error>(), Some(bsa::Error::Stopped)) {
                return ExitCode::from(130);
            }
            ExitCode::from(2)
        }
    }
}
