//! Subcommands, one per file, each with `Args` (clap) and `run`. Conventions: results on stdout
//! (or `--out`), progress and errors on stderr, exit code 0 on success, 2 on error.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

mod bench;
mod build;
mod demo;
mod encode;
mod eval;
mod export;
mod groundtruth;
mod milvus_search;
mod search;
mod train;
mod verify;

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
    Search(search::Args),
    Groundtruth(groundtruth::Args),
    Bench(bench::Args),
    Verify(verify::Args),
    Export(export::Args),
    Demo(demo::Args),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // A bad BSA_KERNEL fails every command at once, not a long `bench` at its first search.
    bsa_index::KernelFamily::from_env()?;
    match cli.command {
        Command::Train(a) => train::run(&a),
        Command::Encode(a) => encode::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Build(a) => build::run(&a),
        Command::Search(a) => search::run(&a),
        Command::Groundtruth(a) => groundtruth::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Demo(a) => demo::run(&a),
        Command::Export(a) => export::run(&a),
        Command::Verify(a) => return verify::run(&a),
    }
    .map(|()| ExitCode::SUCCESS)
}

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

/// Writes one JSON value as a line on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}
