//! What every subcommand reads and writes: embedding files in, JSON lines out, a progress bar on
//! stderr. Below every subcommand file, so that `cli/mod.rs` only parses and dispatches.

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

/// Writes one JSON value as a line on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}
