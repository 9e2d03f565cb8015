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

/// Whether [`open_embeddings`] refuses all-zero rows: where rows are compared as directions
/// (cosine, the adc and soft scores, rescoring), one has none to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroRows {
    /// An all-zero row is an error naming the file and the row.
    Refused,
    /// All-zero rows are read as any other.
    Allowed,
}

/// Opens an embedding file and checks it can be used: finite values and, unless `zero_rows` are
/// allowed, no all-zero rows.
pub fn open_embeddings(
    path: &std::path::Path,
    zero_rows: ZeroRows,
) -> anyhow::Result<bsa::io::Embeddings> {
    let e = bsa::io::Embeddings::open(path)?;
    e.check_finite()?;
    if zero_rows == ZeroRows::Refused {
        e.check_nonzero_norms()?;
    }
    Ok(e)
}

/// A temporary folder for a command's working files in the system's (`TMPDIR`), named `prefix`
/// and random characters, removed with what it holds when dropped.
pub fn temp_work_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    use anyhow::Context;
    bsa::io::temp_dir_in(&std::env::temp_dir(), prefix)
        .context("creating a temporary folder (set TMPDIR to choose where)")
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

/// `n` and `noun`, plural unless `n` is 1: "1 row", "2 rows".
pub fn counted(n: impl Into<u64>, noun: &str) -> String {
    match n.into() {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
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
    /// Loads the model and opens the data ([`open_embeddings`]), which must have the model's
    /// dimension.
    pub fn open(
        &self,
        zero_rows: ZeroRows,
    ) -> anyhow::Result<(bsa::model::Autoencoder, bsa::io::Embeddings)> {
        let model = bsa::io::model::load(&self.model)?;
        let data = open_embeddings(&self.data, zero_rows)?;
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
