//! Subcommands, one per file, each with `Args` (clap) and `run`. Conventions: results on stdout
//! (or `--out`), progress and errors on stderr, exit code 0 on success, 2 on error. A command
//! that stops cleanly on Ctrl-C (`bsa build`: see `signals::stop_on_signal`) then ends by the signal
//! (unless it had finished its work, which stands).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` that returns the write's `io::Result` instead of panicking when stdout is closed
/// (`bsa demo | head -1`): with `?`, the broken pipe reaches `main`, which exits quietly; other
/// failures say they were standard output's ([`io::on_stdout`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::cli::io::on_stdout)
    }};
}

/// `eprintln!` that ignores a closed stderr (a terminal closed under the command, its SIGHUP
/// caught): `eprintln!` panics there, and a change already committed would exit 101 as if it
/// had failed, for a wrapper to make it again.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod bench;
mod build;
mod demo;
mod encode;
mod eval;
mod export;
mod groundtruth;
mod info;
mod io;
mod live;
mod milvus_search;
mod search;
mod search_common;
mod search_local;
mod signals;
mod train;
mod verify;

pub use signals::{end_by_signal, note_late_signal};

/// Learn sparse binary codes for dense embeddings (Binary Sparsity Alignment) and search them.
#[derive(Debug, Parser)]
#[command(name = "bsa", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Train(train::Args),
    Encode(encode::Args),
    Eval(eval::Args),
    Build(build::Args),
    Add(live::AddArgs),
    Delete(live::DeleteArgs),
    Compact(live::CompactArgs),
    Search(search::Args),
    Groundtruth(groundtruth::Args),
    Bench(bench::Args),
    Verify(verify::Args),
    Info(info::Args),
    Export(export::Args),
    Demo(demo::Args),
}

/// The command line's parser: [`Cli`]'s, with every flag that takes a value reading a negative
/// number as its value (`--min-score -0.5`; `--epochs -1` is then refused as an invalid value of
/// `--epochs`, not as an unknown argument `-1`).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let negative = |a: clap::Arg| {
        let takes = a.get_action().takes_values();
        a.allow_negative_numbers(takes)
    };
    let mut cmd = Cli::command();
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    for name in names {
        cmd = cmd.mut_subcommand(name, |c| c.mut_args(negative));
    }
    cmd
}

/// The arguments of the subcommand in `matches` given on the command line (not defaults), by
/// their ids (field names).
fn given_flags(matches: &clap::ArgMatches) -> Vec<String> {
    use clap::CommandFactory;
    let Some((name, sub)) = matches.subcommand() else {
        return Vec::new();
    };
    // The matches also hold argument groups (derive names one after the `Args` struct).
    let command = Cli::command();
    let Some(args) = command.find_subcommand(name) else {
        return Vec::new();
    };
    args.get_arguments()
        .map(|a| a.get_id().as_str())
        .filter(|id| sub.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
        .map(str::to_string)
        .collect()
}

/// Runs the parsed command line (`matches`: what was parsed, to tell flags given from defaults).
pub fn run(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<ExitCode> {
    // A bad BSA_KERNEL fails every command at once, not a long `bench` at its first search.
    bsa_index::KernelFamily::from_env()?;
    match cli.command {
        Command::Train(a) => train::run(&a, &given_flags(matches)),
        Command::Encode(a) => encode::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Build(a) => build::run(&a),
        Command::Add(a) => live::add(&a),
        Command::Delete(a) => live::delete(&a),
        Command::Compact(a) => live::compact(&a),
        Command::Search(a) => search::run(&a),
        Command::Groundtruth(a) => groundtruth::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Demo(a) => demo::run(&a),
        Command::Export(a) => export::run(&a),
        Command::Info(a) => info::run(&a),
        Command::Verify(a) => return verify::run(&a),
    }
    .map(|()| ExitCode::SUCCESS)
}
