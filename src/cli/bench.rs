//! `bsa bench`: the benchmark grid (methods x N x K) through the library ([`bsa::bench`]),
//! written as `results.json`, `report.md` and SVG plots.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use bsa::bench::{
    Cache, Cell, Data, HnswCells, PAPER_HEADLINE, Preset, RunInfo, Settings, Variant,
};

/// Benchmark code methods: recall against sparsity and bytes per vector.
///
/// For every cell (method x N x K) the codes are fitted, base and queries encoded, an index built
/// in a temporary folder, and measured: the paper's metrics on the queries, bytes per vector,
/// recall@1/10/100 by Hamming, recall@10 rescored at oversampling 2, 4, 10, with cosine-overlap
/// and ADC scoring with the QPS of each, HNSW recall/QPS sweeps for some cells (--hnsw), train,
/// encode and build seconds. Output in --out: results.json (one object per cell), report.md, and
/// plots (SVG, and PNG when a system font exists), written whole: --out (a folder without
/// folders in it) gets the new report in place of an earlier one, its other files kept (files
/// named as a report's are refused unless they are an earlier report's). QPS are medians of
/// repeated runs. Recall counts the true neighbours' ids found (method.md): on a base with
/// duplicate rows it depends on how the ground truth orders their ties (`bsa groundtruth`: to
/// the lower id). A --gt is checked against exact cosine on a sample of queries before the grid. With --cache,
/// fitted models are kept and reused, and --resume also reuses finished cells, so a long grid
/// can run in pieces; Ctrl-C stops at the next step and removes the cells' temporary indexes
/// (what --cache holds stays for --resume); a second Ctrl-C quits at once, and the next bench
/// removes the temporary indexes that one left.
///
/// Methods: sign, lsh, itq, topk, bsa, bsa-alpha0 (no alignment loss), bsa-mse, bsa-healthy
/// (BSA with quantile bias init and rebalanced bits), pursuit.
/// Presets: quick (one size per method, 3 epochs; about half a minute on 10k x 384 on 2 cores) and
/// paper (N in 512..4096 x K in 8..64, every method and ablation, and an alpha sweep: 107 cells,
/// 10 epochs, 6 pursuit rounds; hours on 2 cores for the 100k WordNet set; not run in CI). --bits and --k replace the preset's sizes; --methods and --epochs the preset's.
///
/// Example:
///   bsa bench --base base.npy --queries query.npy --gt gt_top100.npy --preset quick --out res
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Base vectors, n x D.
    #[arg(long)]
    pub base: PathBuf,
    /// Query vectors, nq x D.
    #[arg(long)]
    pub queries: PathBuf,
    /// Ground truth (int32 nq x k, from `bsa groundtruth`); computed when left out.
    #[arg(long)]
    pub gt: Option<PathBuf>,
    /// quick or paper.
    #[arg(long, default_value = "quick", value_parser = ["quick", "paper"])]
    pub preset: String,
    /// Comma-separated methods (default: the preset's).
    #[arg(long, value_delimiter = ',')]
    pub methods: Option<Vec<String>>,
    /// Comma-separated code lengths N (default: the preset's).
    #[arg(long, value_delimiter = ',')]
    pub bits: Option<Vec<usize>>,
    /// Comma-separated K values (default: the preset's).
    #[arg(long, value_delimiter = ',')]
    pub k: Option<Vec<usize>>,
    /// Epochs of topk and the BSA variants (default: the preset's).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Comma-separated alphas: an alpha sweep of BSA at the grid's N and K (default: the paper
    /// preset sweeps 0.03, 0.1, 0.3, 3, 10 at N=1024, K=32; quick none).
    #[arg(long, value_delimiter = ',')]
    pub alphas: Option<Vec<f64>>,
    /// Which cells also get an HNSW graph and a recall/QPS sweep over ef: preset (sign and
    /// pursuit in the quick grid; in the paper grid one cell per method at N=1024, K=32, and pursuit at N=4096),
    /// all, none.
    #[arg(long, default_value = "preset", value_parser = ["preset", "all", "none"])]
    pub hnsw: String,
    /// Keep every cell's fitted model (and measurements) in this folder, and reuse models that
    /// match the data, the settings and bsa's source (a rebuilt bsa whose source changed fits
    /// again) instead of fitting them again.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// With --cache: reuse finished measurements too, not only the models (resume a grid).
    #[arg(long, requires = "cache")]
    pub resume: bool,
    /// With --resume: run nothing; write the report from the cells the cache has finished and
    /// list the others as not run (a long grid's report while it is still running).
    #[arg(long, requires = "resume")]
    pub cached_only: bool,
    /// Pursuit rounds (default: the preset's).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of every fit.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
    /// Output folder (created with its missing parent folders, as `mkdir -p`; an earlier report
    /// there is replaced, other files kept).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    // A cell's fit would refuse it only in its turn, after the cells before it ran.
    let max = bsa::model::MAX_BITS;
    if let Some(b) = a.bits.iter().flatten().find(|&&b| b == 0 || b > max) {
        anyhow::bail!("--bits: {b} is not a code length bsa makes (1 to {max})");
    }
    let threads = bsa::threads::configure(a.threads)?;
    let base = super::io::open_embeddings(&a.base, super::io::ZeroRows::Refused)?;
    let queries = super::io::open_embeddings(&a.queries, super::io::ZeroRows::Refused)?;
    // Its cells train on the base and evaluate on the queries, in float32 as `bsa train` and
    // `bsa eval` do.
    bsa::io::check_float32_norms(&a.base.display().to_string(), base.view())?;
    bsa::io::check_float32_norms(&a.queries.display().to_string(), queries.view())?;
    // Every cell reports recall@10: it needs ten true neighbours per query.
    if base.n() < 10 {
        anyhow::bail!(
            "{}: {} base vectors; the benchmark's recall@10 needs at least 10",
            a.base.display(),
            base.n()
        );
    }
    super::io::expect_same_dim(&base, &queries)?;
    let preset = if a.preset == "paper" {
        Preset::Paper
    } else {
        Preset::Quick
    };
    let methods = match &a.methods {
        Some(m) => m
            .iter()
            .map(|s| Variant::parse(s.trim()))
            .collect::<Result<Vec<_>, _>>()?,
        None => preset.methods(),
    };
    let (mut cells, notes) = bsa::bench::grid(
        preset,
        &methods,
        a.bits.as_deref(),
        a.k.as_deref(),
        a.alphas.as_deref(),
        match a.hnsw.as_str() {
            "all" => HnswCells::All,
            "none" => HnswCells::None,
            _ => HnswCells::Preset,
        },
        base.dim(),
    );
    if a.alphas.is_some() && !methods.contains(&Variant::Bsa) {
        anyhow::bail!(
            "--alphas sweeps bsa's alpha, but --methods has no bsa; add bsa to --methods or \
             leave --alphas out"
        );
    }
    if let Some(bad) = a
        .alphas
        .iter()
        .flatten()
        .find(|x| !x.is_finite() || **x < 0.0)
    {
        anyhow::bail!("--alphas: {bad} is not a finite alpha >= 0");
    }
    // A method asked for that got no cell is an error; sizes the grid could not take as
    // given are said (the report would otherwise just lack them).
    if let Some(v) = methods
        .iter()
        .find(|&&v| !cells.iter().any(|c| c.variant == v))
    {
        anyhow::bail!(
            "--methods {}: no cell of it fits the sizes given: {}",
            v.name(),
            {
                let own: Vec<&str> = notes
                    .iter()
                    .filter(|l| l.starts_with(&format!("{}:", v.name())))
                    .map(String::as_str)
                    .collect();
                if own.is_empty() {
                    "every --k must be in 1..N-1 (--bits)".to_string()
                } else {
                    own.join("; ")
                }
            }
        );
    }
    for line in &notes {
        errln!("bsa: note: {line}");
    }
    // Codes of every method but sign bits and LSH depend on a row's length, and the recall is
    // against cosine neighbours: rows off unit length are said once per file.
    if let Some(m) = cells
        .iter()
        .map(|c| c.variant.method())
        .find(|m| m.depends_on_length())
    {
        super::io::warn_if_not_unit(&base, m);
        super::io::warn_if_not_unit(&queries, m);
    }
    let settings = Settings {
        preset,
        epochs: a.epochs.unwrap_or(preset.epochs()),
        rounds: a.rounds.unwrap_or(preset.rounds()),
        seed: a.seed,
        threads,
    };
    // What would fail after the ground truth (minutes on a large base) is checked before it.
    if settings.epochs == 0 || settings.rounds == 0 {
        anyhow::bail!("--epochs and --rounds must be at least 1");
    }
    bsa::bench::prepare_report_dir(&a.out).map_err(|e| match &e {
        // A folder above --out that cannot be made or written: named after --out itself.
        bsa::Error::Io { path, .. } if *path != a.out => {
            anyhow::anyhow!("--out {}: {e}", a.out.display())
        }
        _ => anyhow::anyhow!("--out {e}"),
    })?;
    if let Some(cache) = &a.cache {
        // The report replaces --out whole: a cache made inside it would go with it.
        let whole = |p: &std::path::Path| -> anyhow::Result<std::path::PathBuf> {
            Ok(std::path::absolute(p)?.components().collect())
        };
        if whole(cache)?.starts_with(whole(&a.out)?) {
            anyhow::bail!(
                "--cache {} is inside --out {}, which the report replaces whole; give a cache \
                 folder elsewhere",
                cache.display(),
                a.out.display()
            );
        }
    }
    if let Some(d) = a.cache.as_ref().filter(|d| d.exists() && !d.is_dir()) {
        anyhow::bail!(
            "--cache {}: exists and is not a folder; give a folder",
            d.display()
        );
    }

    // From here on the first Ctrl-C stops at the next step and the temporary folder of the
    // cells' indexes is removed (a killed bench left it in $TMPDIR); models and results already
    // in --cache stay for --resume.
    let stop = super::signals::stop_on_signal()?;
    // The cells' indexes go in a temporary folder, and models and results in --cache: both
    // made before the ground truth, so that a place they cannot be made is said at once.
    remove_killed_benches_work();
    let work = super::io::temp_work_dir(&format!("{WORK_PREFIX}{}-", std::process::id()))?;
    // Held while this bench runs: a folder whose marker is not locked is a dead bench's.
    let marker = work.path().join(WORK_MARKER);
    let _alive = std::fs::File::create(&marker)
        .and_then(|f| f.lock().map(|()| f))
        .with_context(|| format!("locking {}", marker.display()))?;
    // (--cached-only reads it only: a mistyped one is not made.)
    let _cache = match a.cache.as_ref().filter(|_| !a.cached_only) {
        Some(dir) => MadeFolder::make(dir).context("--cache")?,
        None => MadeFolder(None),
    };
    let (truth, gt_source) = match &a.gt {
        Some(p) => {
            let t = super::io::read_ground_truth(p, queries.n(), base.n())?;
            bsa::bench::check_ground_truth(base.view(), queries.view(), &t, p)?;
            (t, p.display().to_string())
        }
        None => {
            errln!("bsa: computing exact ground truth...");
            let truth = bsa::bench::ground_truth(base.view(), queries.view(), &stop)?;
            // The top 100, or the whole base when it has fewer rows.
            let k = truth.first().map_or(0, Vec::len);
            (truth, format!("computed (exact cosine top-{k})"))
        }
    };
    let data = Data::new(base.view(), queries.view(), &truth);
    let cache = a.cache.as_ref().map(|dir| Cache {
        dir: dir.clone(),
        reuse_results: a.resume,
    });
    let mut not_run = Vec::new();
    if a.cached_only {
        // `requires = "resume"` (which requires --cache) guarantees the cache.
        let c = cache.as_ref().context("--cached-only needs --cache")?;
        let (done, rest): (Vec<Cell>, Vec<Cell>) = cells
            .iter()
            .partition(|cell| c.has_finished(cell, &data, &settings));
        not_run = rest.iter().map(Cell::label).collect();
        // An empty report would replace the one in --out: a mistyped --cache, or settings
        // other than the runs', should not cost the earlier report.
        if done.is_empty() {
            anyhow::bail!(
                "--cached-only: none of the {} cells is finished in {} with these inputs and \
                 settings (another cache folder, or other --epochs, --rounds, --seed or \
                 --gt?); nothing to report, {} is left as it was",
                cells.len(),
                c.dir.display(),
                a.out.display()
            );
        }
        errln!(
            "bsa: {} of {} cells finished in {}; reporting those",
            done.len(),
            cells.len(),
            c.dir.display()
        );
        cells = done;
    }
    let pb = super::io::bar(
        cells.len() as u64,
        a.quiet,
        "{elapsed_precise} [{bar:30}] {pos}/{len} cells {msg}",
    );
    let mut results = Vec::with_capacity(cells.len());
    let mut hist: Option<(Cell, bsa::metrics::CodeStats)> = None;
    for cell in &cells {
        let label = cell.label();
        pb.set_message(label.clone());
        let (r, stats) = bsa::bench::run_cell(
            cell,
            &data,
            &settings,
            work.path(),
            cache.as_ref(),
            &mut |done, total| {
                pb.set_message(format!("{label}: fitting {done}/{total}"));
            },
            &stop,
        )
        .with_context(|| format!("bench cell {label}"))?;
        let line = format!(
            "{label}: recall@10 {:.3} (rescored x10 {:.3}, ADC {:.3}), active {:.1}, train {:.1}s",
            r.recall_at_10,
            r.recall_at_10_rescored.x10,
            r.recall_at_10_adc,
            r.metrics.active_mean,
            r.train_seconds
        );
        if !pb.is_hidden() {
            pb.println(line);
        } else if !a.quiet {
            errln!("{line}");
        }
        if shows_histograms_over(cell, hist.as_ref().map(|(c, _)| c)) {
            hist = Some((*cell, stats));
        }
        results.push(r);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let info = RunInfo {
        settings,
        base_rows: base.n(),
        query_rows: queries.n(),
        dim: base.dim(),
        ground_truth: gt_source,
        inputs: format!(
            "{} (base), {} (queries)",
            a.base.display(),
            a.queries.display()
        ),
        date: bsa::bench::utc_now(),
        machine: bsa::bench::machine_info(),
        total_seconds: started.elapsed().as_secs_f64(),
        not_run,
    };
    let hist_label = hist.as_ref().map(|(c, _)| c.label());
    bsa::bench::write_report(
        &a.out,
        &info,
        &results,
        hist.as_ref()
            .zip(hist_label.as_deref())
            .map(|((_, s), l)| (l, s)),
    )?;
    errln!(
        "bsa: {} cells in {:.1}s; wrote {}/results.json, report.md and plots",
        results.len(),
        info.total_seconds,
        a.out.display()
    );
    Ok(())
}

/// Whether the report's histograms show `cell` rather than `shown`, the cell they show so far:
/// the paper's BSA at its headline size, or else the first BSA cell, or else the first trained
/// one (a cell with a K).
fn shows_histograms_over(cell: &Cell, shown: Option<&Cell>) -> bool {
    let headline = |c: &Cell| {
        c.variant == Variant::Bsa
            && c.alpha.is_none()
            && (c.bits, c.k) == (PAPER_HEADLINE.0, Some(PAPER_HEADLINE.1))
    };
    match shown {
        None => cell.variant.uses_k() || cell.variant == Variant::Bsa,
        Some(c) => {
            !headline(c)
                && (headline(cell) || (c.variant != Variant::Bsa && cell.variant == Variant::Bsa))
        }
    }
}

/// A folder this run made, removed when the run ends if it is still empty: a bench stopped or
/// failed before its first cell wrote there leaves no new empty `--cache` behind.
struct MadeFolder(Option<std::path::PathBuf>);

impl MadeFolder {
    /// Makes `dir` with any missing parents; remembers it if it did not exist.
    fn make(dir: &std::path::Path) -> bsa::Result<MadeFolder> {
        let made = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|e| bsa::Error::io(dir, e))?;
        Ok(MadeFolder(made.then(|| dir.to_path_buf())))
    }
}

impl Drop for MadeFolder {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            // Fails, and keeps it, once anything is in it.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The name a bench's temporary folder (its cells' indexes) starts with, then its process id.
const WORK_PREFIX: &str = "bsa-bench-";

/// The file in a bench's temporary folder that the bench holds locked while it runs.
const WORK_MARKER: &str = ".bsa-bench-lock";

/// Removes the temporary folders that benches killed before their clean-up (a second Ctrl-C
/// quits at once) left in the temporary directory, saying so: their cells' indexes, gigabytes
/// for a large grid, stayed there for good. A folder is a dead bench's when its name is a
/// bench's (`bsa-bench-PID-` and tempfile's six characters) and its marker file exists and is
/// not locked: the lock ends with its process, whatever process namespace or host that ran in
/// (a process id alone says nothing across containers sharing a temporary directory).
fn remove_killed_benches_work() {
    let tmp = std::env::temp_dir();
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let bench_named = name
            .to_str()
            .and_then(|n| n.strip_prefix(WORK_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(pid, suffix)| {
                !pid.is_empty()
                    && pid.bytes().all(|b| b.is_ascii_digit())
                    && suffix.len() == 6
                    && suffix.bytes().all(|b| b.is_ascii_alphanumeric())
            });
        if !bench_named || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let marker = std::fs::File::open(e.path().join(WORK_MARKER));
        let dead = marker.is_ok_and(|f| f.try_lock().is_ok());
        if dead && std::fs::remove_dir_all(e.path()).is_ok() {
            errln!(
                "bsa: note: removed {}, left by a bench that was killed",
                e.path().display()
            );
        }
    }
}
