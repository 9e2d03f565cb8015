//! `bsa groundtruth`: exact top-k neighbours by cosine, the ground truth of recall.

use anyhow::Context;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

/// Compute exact nearest neighbours by cosine similarity.
///
/// Writes an int32 .npy of shape n_queries x k: the ids (row numbers) of the k base vectors most
/// similar to each query, best first, equal scores to the lower id. Base rows are L2-normalised;
/// a blocked float32 GEMM picks candidates (memory stays bounded for any base size) and their
/// scores are recomputed in float64 in a fixed order, so the output is the same on every CPU and
/// for every --threads.
///
/// Example:
///   bsa groundtruth --base base.npy --queries query.npy --k 100 --out gt.npy
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Base vectors, n x D (.npy f32/f16/f64, or .fvecs).
    #[arg(long)]
    pub base: PathBuf,
    /// Query vectors, nq x D.
    #[arg(long)]
    pub queries: PathBuf,
    /// Neighbours per query (past the base's rows, each row ends in -1s, as Python's search
    /// results are padded; bsa search's JSON lists are just shorter).
    #[arg(long, default_value_t = 100)]
    pub k: usize,
    /// Output .npy (int32, nq x k).
    #[arg(long)]
    pub out: PathBuf,
    /// Threads for rayon and OpenBLAS (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print a JSON summary on stdout at the end.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    super::io::refuse_clobbering(
        &a.out,
        true,
        &[("--base", Some(&a.base)), ("--queries", Some(&a.queries))],
    )?;
    let threads = bsa::threads::configure(a.threads)?;
    let base = super::io::open_embeddings(&a.base, super::io::ZeroRows::Refused)?;
    let queries = super::io::open_embeddings(&a.queries, super::io::ZeroRows::Refused)?;
    super::io::expect_same_dim(&base, &queries)?;
    if a.k == 0 {
        anyhow::bail!("--k must be at least 1");
    }
    // Fewer base rows than k: the rest of each row is -1, as a search pads its results (and
    // as recall reads a padded ground truth), and as Python's bsa.groundtruth does.
    let found = a.k.min(base.n());
    if i32::try_from(base.n()).is_err() {
        anyhow::bail!(
            "{} has {} rows: ids above 2^31 - 1 do not fit the int32 output",
            a.base.display(),
            base.n()
        );
    }
    // The output is allocated first, so that a k too large for memory is refused at once,
    // not after the search.
    let mut ids: Vec<i32> = Vec::new();
    queries
        .n()
        .checked_mul(a.k)
        .and_then(|len| ids.try_reserve_exact(len).ok())
        .with_context(|| {
            format!(
                "--k {}: {} queries x {} ids do not fit in memory; ask for fewer neighbours",
                a.k,
                queries.n(),
                a.k
            )
        })?;
    // Ctrl-C stops the search at its next block of scores, and nothing is written.
    let stop = super::signals::stop_on_signal()?;
    let start = Instant::now();
    let pb = super::io::bar(
        0,
        a.quiet,
        "{elapsed_precise} [{bar:30}] {pos}/{len} blocks",
    );
    let top = bsa::groundtruth::exact_top_k_blocked(
        base.view(),
        queries.view(),
        found,
        bsa::groundtruth::Blocks::default(),
        &mut |done, total| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        },
        &stop,
    )?;
    pb.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    for row in &top {
        ids.extend(row.iter().map(|&i| i as i32));
        ids.extend(std::iter::repeat_n(-1, a.k - row.len()));
    }
    bsa::io::write_i32(&a.out, queries.n(), a.k, &ids)?;
    if a.json {
        super::io::print_json(&json!({
            "type": "summary",
            "out": a.out.display().to_string(),
            "base": a.base.display().to_string(),
            "queries": a.queries.display().to_string(),
            "n_base": base.n(),
            "n_queries": queries.n(),
            "dim": base.dim(),
            "k": a.k,
            "threads": threads,
            "seconds": seconds,
        }))?;
    } else {
        errln!(
            "bsa: exact top-{} of {} queries over {} base vectors in {:.1}s; wrote {}",
            a.k,
            queries.n(),
            base.n(),
            seconds,
            a.out.display()
        );
    }
    Ok(())
}
