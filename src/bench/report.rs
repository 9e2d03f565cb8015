//! The report of `bsa bench`: `results.json`, `report.md` (settings, machine, one table per metric
//! group) and the plots (SVG, and PNG when a font is installed).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::grid::{Preset, Settings};
use super::result::{CellResult, OtherScores};
use super::run::HNSW_EFS;
use crate::error::{Error, Result};
use crate::metrics::CodeStats;
use crate::plot::{Series, Style, chart, histogram};

/// What `report.md` says about the run besides the results.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// Settings of every cell.
    pub settings: Settings,
    /// Base rows, query rows, dimension.
    pub base_rows: usize,
    /// Query rows.
    pub query_rows: usize,
    /// Dimension D.
    pub dim: usize,
    /// Where the ground truth came from (a file, or "computed").
    pub ground_truth: String,
    /// Input files.
    pub inputs: String,
    /// UTC date and time of the run.
    pub date: String,
    /// CPU model and core count.
    pub machine: String,
    /// Wall-clock seconds of the whole grid.
    pub total_seconds: f64,
    /// Cells of the grid left out because they had not run yet (`--cached-only`).
    pub not_run: Vec<String>,
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// CPU model (from /proc/cpuinfo where there is one), cores and OS.
pub fn machine_info() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!(
        "{cpu}, {cores} cores, {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// The method column: the alpha of a sweep cell is part of its name.
fn method_name(r: &CellResult) -> String {
    match (r.alpha_sweep, r.alpha) {
        (true, Some(a)) => format!("{} alpha={a}", r.method),
        _ => r.method.clone(),
    }
}

fn label(r: &CellResult) -> String {
    match r.k {
        Some(k) => format!("{} | {} | {k}", method_name(r), r.bits),
        None => format!("{} | {} | -", method_name(r), r.bits),
    }
}

/// The sentence under the Retrieval table naming the cells whose ADC figures come from the first
/// queries only, with their counts (`(label, ADC queries)` per cell, `queries` in all): ADC
/// reads every set bit, so for dense codes bench caps its table lookups
/// ([`ADC_LOOKUP_BUDGET`](super::ADC_LOOKUP_BUDGET)). `None` when every cell used all queries
/// (a count of 0 comes from results written before the count was kept: not said).
fn adc_subset_note(cells: &[(String, usize)], queries: usize) -> Option<String> {
    let partial: Vec<String> = cells
        .iter()
        .filter(|(_, n)| (1..queries).contains(n))
        .map(|(label, n)| format!("{label} ({n})"))
        .collect();
    (!partial.is_empty()).then(|| {
        format!(
            "The ADC and ADC rescored columns of {} are on the first queries only (as many as \
             in parentheses, of {queries}): ADC reads every set bit of a code, so bench caps its \
             table lookups for dense codes. The other columns use all the queries.",
            partial.join(", ")
        )
    })
}

/// The markdown report: settings, machine, and one table per metric group.
pub fn report_markdown(info: &RunInfo, results: &[CellResult], plots: &[(&str, &str)]) -> String {
    let mut s = String::new();
    let st = &info.settings;
    let _ = writeln!(s, "# bsa bench report\n");
    let _ = writeln!(s, "- date: {}", info.date);
    let _ = writeln!(s, "- machine: {}", info.machine);
    let _ = writeln!(
        s,
        "- bsa {} (source {})",
        env!("CARGO_PKG_VERSION"),
        env!("BSA_SOURCE_ID")
    );
    let _ = writeln!(s, "- data: {}", info.inputs);
    let _ = writeln!(
        s,
        "- {} base vectors, {} queries, dimension {}; ground truth: {}",
        info.base_rows, info.query_rows, info.dim, info.ground_truth
    );
    let _ = writeln!(
        s,
        "- preset {}, epochs {}, pursuit rounds {}, seed {}, threads {}",
        match st.preset {
            Preset::Quick => "quick",
            Preset::Paper => "paper",
        },
        st.epochs,
        st.rounds,
        st.seed,
        st.threads
    );
    let _ = writeln!(
        s,
        "- total time {:.1} s (cells reused from a cache keep their own train, build and search \
         times)\n",
        info.total_seconds
    );
    if !info.not_run.is_empty() {
        let _ = writeln!(
            s,
            "**Not run yet** ({} cells of the grid, assembled with `--cached-only`): {}.\n",
            info.not_run.len(),
            info.not_run.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "Recall is k-NN recall against exact cosine neighbours, averaged over the queries; Hamming \
         ties go to the lower row. The paper's metrics are measured on the queries. `bytes \
         dense` is N / 8, `bytes sparse` the size of K ids of log2 N bits (codes with exactly K \
         bits): what each code holds; bsa's index stores the bitsets and, for sparse codes, \
         their ids as 2-byte numbers too.\n"
    );

    let _ = writeln!(s, "## Retrieval (recall@10 unless noted)\n");
    let _ = writeln!(
        s,
        "| method | N | K | bytes dense | bytes sparse | R@1 | R@10 | R@100 | rescored x2 | x4 | x10 | cosine | ADC | ADC rescored x4 |"
    );
    let _ = writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {:.1} | {} | {:.3} | {:.3} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            label(r),
            r.bytes_dense,
            opt(r.bytes_sparse, 1),
            r.recall_at_1,
            r.recall_at_10,
            opt(r.recall_at_100, 3),
            r.recall_at_10_rescored.x2,
            r.recall_at_10_rescored.x4,
            r.recall_at_10_rescored.x10,
            r.recall_at_10_cosine,
            r.recall_at_10_adc,
            r.recall_at_10_adc_rescored_x4
        );
    }
    let subsets: Vec<(String, usize)> = results
        .iter()
        .map(|r| (label(r).replace(" | ", " "), r.adc_queries))
        .collect();
    if let Some(note) = adc_subset_note(&subsets, info.query_rows) {
        let _ = writeln!(s, "\n{note}");
    }
    let _ = writeln!(s, "\n## The paper's metrics (on the queries)\n");
    let _ = writeln!(
        s,
        "| method | N | K | reconstruction (cos) | reconstruction (mse) | fixed-TopK | active mean | active std | dead bits | max bit freq |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let m = &r.metrics;
        let _ = writeln!(
            s,
            "| {} | {:.4} | {:.6} | {:.4} | {:.1} | {:.1} | {} | {:.3} |",
            label(r),
            m.reconstruction_loss,
            m.reconstruction_mse,
            m.fixed_topk_reconstruction_loss,
            m.active_mean,
            m.active_std,
            m.dead_features,
            m.feature_frequency_quantiles.max
        );
    }
    let _ = writeln!(
        s,
        "\n## Search modes: recall@10 and queries per second (flat index)\n"
    );
    let _ = writeln!(
        s,
        "All queries as one batch on {} threads; ADC includes building the per-query tables and \
         runs on the first `ADC queries` queries (fewer than all for dense codes, whose ADC reads \
         every set bit) and reads a 4-byte norm per vector besides the code (not in the bytes \
         columns); rescoring re-ranks the top 40 by exact cosine over the stored float vectors. Posting lists are built when they pay for a Hamming search (as `bsa build` does, \
         except that for pursuit codes it builds them only with --inverted); the inverted search \
         returns exactly the flat results (checked per cell) and answers a query from the lists \
         only when they cost less than the scan. Hamming, cosine and inverted QPS search the \
         query codes, encoded beforehand (the queries' encoding rate is under Timings). Each \
         QPS is the median of timed runs after an untimed first run (at least {}, until they \
         add up to {} s, at most {}): runs of a few milliseconds vary several-fold on a \
         shared machine, so compare QPS within one report.\n",
        st.threads,
        super::run::TIMING_MIN_RUNS,
        super::run::TIMING_SECONDS,
        super::run::TIMING_RUNS
    );
    let _ = writeln!(
        s,
        "| method | N | K | Hamming | QPS | cosine overlap | QPS | ADC | QPS | Hamming + rescore | QPS | ADC + rescore | QPS | ADC queries | inverted Hamming QPS (answered from lists) | inverted ADC QPS |"
    );
    let _ = writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in results {
        let q = &r.qps;
        let _ = writeln!(
            s,
            "| {} | {:.3} | {:.0} | {:.3} | {:.0} | {:.3} | {:.0} | {:.3} | {:.0} | {:.3} | {:.0} | {} | {} | {} |",
            label(r),
            r.recall_at_10,
            q.hamming,
            r.recall_at_10_cosine,
            q.cosine,
            r.recall_at_10_adc,
            q.adc,
            r.recall_at_10_rescored.x4,
            q.hamming_rescored_x4,
            r.recall_at_10_adc_rescored_x4,
            q.adc_rescored_x4,
            r.adc_queries,
            r.inverted
                .map(|i| format!(
                    "{:.0} ({:.0}%){}",
                    i.hamming_qps,
                    100.0 * i.hamming_inverted_fraction,
                    if i.identical_to_flat {
                        ""
                    } else {
                        " NOT EQUAL TO FLAT"
                    }
                ))
                .unwrap_or_else(|| "no lists".into()),
            r.inverted
                .map(|i| format!("{:.0}", i.adc_qps))
                .unwrap_or_else(|| "-".into())
        );
    }
    let others: Vec<(&CellResult, &OtherScores)> = results
        .iter()
        .filter_map(|r| r.other_scores.as_ref().map(|o| (r, o)))
        .collect();
    if !others.is_empty() {
        let _ = writeln!(s, "\n## Other scores: recall@10 and QPS\n");
        let _ = writeln!(
            s,
            "The scores method.md lists beside Hamming, binary cosine and ADC, each a flat top-10 \
             search: Jaccard `|q and b| / |q or b|` on every query's code; the intersection \
             `|q and b|` (`--score overlap`) and the soft asymmetric score, the query's sigmoid \
             activations against the bits (`--score soft`), on the `ADC queries`, tables \
             included.\n"
        );
        let _ = writeln!(
            s,
            "| method | N | K | Jaccard | QPS | intersection | QPS | soft | QPS | ADC queries |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (r, o) in others {
            let _ = writeln!(
                s,
                "| {} | {:.3} | {:.0} | {:.3} | {:.0} | {:.3} | {:.0} | {} |",
                label(r),
                o.jaccard,
                o.jaccard_qps,
                o.overlap,
                o.overlap_qps,
                o.soft,
                o.soft_qps,
                r.adc_queries
            );
        }
    }
    let graphs: Vec<&CellResult> = results.iter().filter(|r| r.hnsw.is_some()).collect();
    if !graphs.is_empty() {
        let _ = writeln!(s, "\n## HNSW graphs: recall@10 and QPS against ef\n");
        let _ = writeln!(
            s,
            "Each cell: the graph's build seconds (hnsw_rs, M and ef_construction as given), then per \
             ef the Hamming top 10 and the top 40 rescored by exact cosine, as recall / QPS.\n"
        );
        let mut head = String::from("| method | N | K | M | ef_c | build s |");
        let mut rule = String::from("|---|---:|---:|---:|---:|---:|");
        for ef in HNSW_EFS {
            let _ = write!(head, " ef {ef} | rescored |");
            rule.push_str("---:|---:|");
        }
        let _ = writeln!(s, "{head}\n{rule}");
        for r in graphs {
            let h = r.hnsw.as_ref().expect("filtered");
            let mut row = format!(
                "| {} | {} | {} | {:.1} |",
                label(r),
                h.max_connections,
                h.ef_construction,
                h.build_seconds
            );
            for p in &h.points {
                let _ = write!(
                    row,
                    " {:.3} / {:.0} | {:.3} / {:.0} |",
                    p.recall_at_10, p.qps, p.recall_at_10_rescored_x4, p.qps_rescored_x4
                );
            }
            let _ = writeln!(s, "{row}");
        }
    }
    let _ = writeln!(s, "\n## Timings\n");
    let _ = writeln!(
        s,
        "| method | N | K | fit s | encode + build s | base vectors encoded / s | queries encoded / s |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {:.2} | {:.2} | {:.0} | {:.0} |",
            label(r),
            r.train_seconds,
            r.build_seconds,
            r.encode_per_second,
            r.qps.encode_queries
        );
    }
    if !plots.is_empty() {
        let _ = writeln!(s, "\n## Plots\n");
        for (file, title) in plots {
            let _ = writeln!(s, "![{title}]({file})\n");
        }
    }
    s
}

/// The plots a report may hold (each as `.svg`, and `.png` when a font is installed).
const PLOTS: [&str; 8] = [
    "recall_vs_bytes",
    "recall_vs_k",
    "loss_vs_k",
    "recall_vs_qps",
    "alpha_recall",
    "alpha_sparsity",
    "active_bits_hist",
    "bit_frequency",
];

/// Whether a file name is one a report writes: `results.json`, `report.md` or one of its
/// [`PLOTS`] (a user's own image beside them is kept).
fn is_report_file(name: &str) -> bool {
    let plot = |ext: &str| {
        name.strip_suffix(ext)
            .is_some_and(|stem| PLOTS.contains(&stem))
    };
    matches!(name, "results.json" | "report.md") || plot(".svg") || plot(".png")
}

/// The folder a report for `out` goes to: `out` with `.` components dropped and, when it is a
/// symbolic link, the folder it points to (replaced, the link kept). An `out` without a name
/// of its own (`.`, `..`, `/`) is refused: the report replaces its folder.
fn report_dir(out: &Path) -> Result<PathBuf> {
    let dir = bsa_index::output_target(out).map_err(|e| Error::io(out, e))?;
    bsa_index::check_outside_index(&dir)?;
    match dir.components().next_back() {
        Some(std::path::Component::Normal(_)) => Ok(dir),
        _ => Err(Error::format(
            out,
            "not a folder of its own (the report replaces its folder whole): give one by \
             name, e.g. ./report",
        )),
    }
}

/// Checks, before a benchmark runs, that its report can go to the folder `out`: `out` has a
/// name ([`write_report`] replaces it whole), is absent or a folder holding no folders (its
/// files other than an earlier report's are kept; files named as a report's are allowed only
/// beside an earlier report's `results.json`), and its parent can be created and written
/// (a temporary folder is made there and removed), so that an unusable `out` fails now, not
/// after hours of grid.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let out = dir.path().join("report");
/// assert!(bsa::bench::prepare_report_dir(&out).is_ok()); // absent: fine
/// std::fs::create_dir_all(out.join("cache")).unwrap();
/// let err = bsa::bench::prepare_report_dir(&out).unwrap_err().to_string();
/// assert!(err.contains("holds the folder cache"), "{err}");
/// std::fs::remove_dir(out.join("cache")).unwrap();
/// std::fs::write(out.join("notes.txt"), "kept beside the report").unwrap();
/// assert!(bsa::bench::prepare_report_dir(&out).is_ok());
/// std::fs::write(out.join("report.md"), "my own notes").unwrap(); // no bsa report's
/// let err = bsa::bench::prepare_report_dir(&out).unwrap_err().to_string();
/// assert!(err.contains("holds report.md but no results.json"), "{err}");
/// assert!(bsa::bench::prepare_report_dir(std::path::Path::new(".")).is_err());
/// ```
pub fn prepare_report_dir(out: &Path) -> Result<()> {
    let dir = report_dir(out)?;
    if dir.exists() {
        if !dir.is_dir() {
            return Err(Error::format(
                out,
                "exists and is not a folder; give a folder",
            ));
        }
        let mut report_named = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // An index's folder: the report would join its files, which a `bsa build
            // --force` there then removed without a word.
            if name == bsa_index::manifest::MANIFEST_FILE {
                return Err(Error::format(
                    out,
                    "holds manifest.json: an index directory, whose files only bsa's writers \
                     change; give the report a folder of its own",
                ));
            }
            if !entry.path().is_file() {
                return Err(Error::format(
                    out,
                    format!(
                        "holds the folder {name} (or another non-file); the report replaces \
                         its folder whole, keeping only files: give a folder without folders \
                         (a --cache inside --out, for one)"
                    ),
                ));
            }
            if is_report_file(&name) {
                report_named.push(name);
            }
        }
        // The report replaces its own files only: files of those names that no bsa bench
        // wrote (a user's report.md) would be lost.
        if !report_named.is_empty() && !holds_earlier_report(&dir) {
            report_named.sort();
            return Err(Error::format(
                out,
                format!(
                    "holds {} but no results.json that bsa bench wrote (or one this version \
                     cannot read): the report would replace them; move them, or give another \
                     --out",
                    report_named.join(", ")
                ),
            ));
        }
    }
    let parent = bsa_index::parent_dir(&dir);
    if parent.exists() && !parent.is_dir() {
        return Err(Error::format(
            out,
            format!("{} is not a folder to make it in", parent.display()),
        ));
    }
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    crate::io::temp_dir_in(parent, ".bsa-bench-probe-")?;
    Ok(())
}

/// Whether `dir` holds a `results.json` that reads as bsa bench results (an earlier report).
fn holds_earlier_report(dir: &Path) -> bool {
    std::fs::read(dir.join("results.json"))
        .ok()
        .is_some_and(|b| serde_json::from_slice::<Vec<CellResult>>(&b).is_ok())
}

/// Writes `results.json`, the plots (SVG, and PNG when a font is installed) and `report.md`
/// as the folder `out`, whole: into a temporary folder beside it, with `out`'s other files
/// (a README, a script: not an earlier report's) linked in (or copied), which then replaces
/// `out` ([`bsa_index::replace_dir`]). So `out` holds one run's report (no plots of an earlier
/// run), its other files as they were, and a process killed while writing leaves the earlier
/// report as it was. `out` must pass [`prepare_report_dir`], which is checked again. `stats`
/// is the cell whose code statistics the two histograms show (its label and statistics), if
/// any.
pub fn write_report(
    out: &Path,
    info: &RunInfo,
    results: &[CellResult],
    stats: Option<(&str, &CodeStats)>,
) -> Result<()> {
    prepare_report_dir(out)?;
    let out = report_dir(out)?;
    let parent = bsa_index::parent_dir(&out);
    let name = out
        .file_name()
        .map_or("report".into(), |n| n.to_string_lossy().into_owned());
    let tmp = crate::io::temp_dir_in(parent, &format!(".{name}.tmp-"))?;
    if out.exists() {
        for entry in std::fs::read_dir(&out).map_err(|e| Error::io(&out, e))? {
            let entry = entry.map_err(|e| Error::io(&out, e))?;
            if is_report_file(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let to = tmp.path().join(entry.file_name());
            if std::fs::hard_link(entry.path(), &to).is_err() {
                std::fs::copy(entry.path(), &to).map_err(|e| Error::io(entry.path(), e))?;
            }
        }
    }
    write_report_files(tmp.path(), info, results, stats)?;
    let tmp = tmp.keep();
    bsa_index::replace_dir(&tmp, &out).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&tmp);
    })?;
    Ok(())
}

/// [`write_report`]'s files, written into the existing folder `out`.
fn write_report_files(
    out: &Path,
    info: &RunInfo,
    results: &[CellResult],
    stats: Option<(&str, &CodeStats)>,
) -> Result<()> {
    write_results_json(out, results)?;
    // Each plot step adds the files it wrote, with their titles, for report.md.
    let mut plots: Vec<(&str, &str)> = Vec::new();
    // The alpha sweep has its own plot; the others show the grid.
    let grid: Vec<&CellResult> = results.iter().filter(|r| !r.alpha_sweep).collect();
    let methods: Vec<&str> = {
        let mut m: Vec<&str> = grid.iter().map(|r| r.method.as_str()).collect();
        m.dedup();
        m
    };
    plot_recall_vs_bytes(out, &grid, &methods, &mut plots)?;
    plot_against_k(out, &grid, &methods, &mut plots)?;
    plot_recall_vs_qps(out, &grid, &mut plots)?;
    plot_alpha_sweep(out, results, &mut plots)?;
    if let Some((name, st)) = stats {
        plot_code_stats(out, name, st, &mut plots)?;
    }
    // A plot missing from PLOTS would be kept as a user's file by the next report.
    debug_assert!(plots.iter().all(|(f, _)| is_report_file(f)), "{plots:?}");
    let png = write_pngs(out, &plots)?;
    write_markdown(out, info, results, &plots, png)
}

/// `results.json`: every cell's results, pretty-printed.
fn write_results_json(out: &Path, results: &[CellResult]) -> Result<()> {
    let json =
        serde_json::to_string_pretty(results).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let p = out.join("results.json");
    std::fs::write(&p, json + "\n").map_err(|e| Error::io(&p, e))?;
    Ok(())
}

/// `recall_vs_bytes.svg`: recall@10 against bytes per vector (the smallest storage of each
/// code), per method of the grid.
fn plot_recall_vs_bytes(
    out: &Path,
    grid: &[&CellResult],
    methods: &[&str],
    plots: &mut Vec<(&'static str, &'static str)>,
) -> Result<()> {
    let mut series: Vec<Series> = Vec::new();
    for (mi, m) in methods.iter().enumerate() {
        let rs: Vec<&CellResult> = grid.iter().copied().filter(|r| r.method == *m).collect();
        let bytes = |r: &CellResult| r.bytes_sparse.unwrap_or(r.bytes_dense).min(r.bytes_dense);
        series.push(Series::new(
            format!("{m} Hamming"),
            rs.iter()
                .map(|r| (bytes(r).log2(), r.recall_at_10))
                .collect(),
            mi,
        ));
        series.push(
            Series::new(
                format!("{m} best of cosine / ADC (hollow)"),
                rs.iter()
                    .map(|r| {
                        (
                            bytes(r).log2(),
                            r.recall_at_10_cosine.max(r.recall_at_10_adc),
                        )
                    })
                    .collect(),
                mi,
            )
            .hollow(),
        );
    }
    chart(
        &out.join("recall_vs_bytes.svg"),
        "recall@10 against bytes per vector",
        (
            "bytes per vector (log scale; sparse ids where smaller)",
            "recall@10",
        ),
        &series,
        Style::markers().log2_x().unit_y(),
    )?;
    plots.push((
        "recall_vs_bytes.svg",
        "recall@10 against bytes per vector (hollow: the better of cosine and ADC, ADC on the \
         queries the Retrieval table says)",
    ));
    Ok(())
}

/// `recall_vs_k.svg` and `loss_vs_k.svg`: recall@10 and the losses against K, per method and N
/// of the grid (none when no cell has a K).
fn plot_against_k(
    out: &Path,
    grid: &[&CellResult],
    methods: &[&str],
    plots: &mut Vec<(&'static str, &'static str)>,
) -> Result<()> {
    let has_sweep = grid.iter().any(|a| {
        grid.iter()
            .any(|b| a.method == b.method && a.bits == b.bits && a.k.is_some() && b.k > a.k)
    });
    let mut by_k: Vec<Series> = Vec::new();
    let mut losses: Vec<Series> = Vec::new();
    let mut color = 0;
    for m in methods {
        let mut ns: Vec<usize> = grid
            .iter()
            .filter(|r| r.method == *m && r.k.is_some())
            .map(|r| r.bits)
            .collect();
        ns.sort_unstable();
        ns.dedup();
        for n in ns {
            let mut rs: Vec<&CellResult> = grid
                .iter()
                .copied()
                .filter(|r| r.method == *m && r.bits == n && r.k.is_some())
                .collect();
            // A line against K needs two K: when some method has a K sweep, single cells are
            // left to the recall-against-bytes plot (with 16 or more series the colours would
            // repeat for nothing).
            if rs.len() < 2 && has_sweep {
                continue;
            }
            rs.sort_by_key(|r| r.k);
            let kx = |r: &CellResult| r.k.unwrap_or(0) as f64;
            by_k.push(Series::new(
                format!("{m} N={n}"),
                rs.iter().map(|r| (kx(r), r.recall_at_10)).collect(),
                color,
            ));
            losses.push(Series::new(
                format!("{m} N={n} reconstruction"),
                rs.iter()
                    .map(|r| (kx(r), r.metrics.reconstruction_loss))
                    .collect(),
                color,
            ));
            losses.push(
                Series::new(
                    format!("{m} N={n} fixed-TopK (hollow)"),
                    rs.iter()
                        .map(|r| (kx(r), r.metrics.fixed_topk_reconstruction_loss))
                        .collect(),
                    color,
                )
                .hollow(),
            );
            color += 1;
        }
    }
    // Only methods with a K (topk, bsa, pursuit) have these plots' points.
    if !by_k.is_empty() {
        chart(
            &out.join("recall_vs_k.svg"),
            "recall@10 (Hamming) against K, per method and N",
            ("K (target active bits)", "recall@10"),
            &by_k,
            Style::lines().unit_y(),
        )?;
        plots.push(("recall_vs_k.svg", "recall@10 against K"));
        chart(
            &out.join("loss_vs_k.svg"),
            "reconstruction and fixed-TopK loss against K (queries)",
            ("K (target active bits)", "cosine distance"),
            &losses,
            Style::lines(),
        )?;
        plots.push((
            "loss_vs_k.svg",
            "reconstruction and fixed-TopK loss against K",
        ));
    }
    Ok(())
}

/// `recall_vs_qps.svg`: recall@10 against QPS of the grid's HNSW sweeps (Hamming and
/// rescored) and flat modes (none when no cell has a graph).
fn plot_recall_vs_qps(
    out: &Path,
    grid: &[&CellResult],
    plots: &mut Vec<(&'static str, &'static str)>,
) -> Result<()> {
    let graphs: Vec<&CellResult> = grid.iter().copied().filter(|r| r.hnsw.is_some()).collect();
    if !graphs.is_empty() {
        let mut series = Vec::new();
        for (i, r) in graphs.iter().enumerate() {
            let h = r.hnsw.as_ref().expect("filtered");
            let name = match r.k {
                Some(k) => format!("{} {}/{k}", method_name(r), r.bits),
                None => format!("{} {}", method_name(r), r.bits),
            };
            // One legend row per code: its colour; the marker says which search.
            series.push(Series::new(
                name,
                h.points
                    .iter()
                    .map(|p| (p.qps.log2(), p.recall_at_10))
                    .collect(),
                i,
            ));
            series.push(
                Series::new(
                    String::new(),
                    h.points
                        .iter()
                        .map(|p| (p.qps_rescored_x4.log2(), p.recall_at_10_rescored_x4))
                        .collect(),
                    i,
                )
                .hollow(),
            );
            let q = &r.qps;
            series.push(
                Series::new(
                    String::new(),
                    vec![
                        (q.hamming.log2(), r.recall_at_10),
                        (q.hamming_rescored_x4.log2(), r.recall_at_10_rescored.x4),
                        (q.adc.log2(), r.recall_at_10_adc),
                        (q.adc_rescored_x4.log2(), r.recall_at_10_adc_rescored_x4),
                    ],
                    i,
                )
                .joined(false)
                .crosses(),
            );
        }
        chart(
            &out.join("recall_vs_qps.svg"),
            "recall@10 against QPS: HNSW, ef 10..320 (filled: Hamming, hollow: rescored); flat (crosses)",
            ("queries per second (log scale)", "recall@10"),
            &series,
            Style::lines().log2_x().unit_y(),
        )?;
        plots.push((
            "recall_vs_qps.svg",
            "recall@10 against QPS; HNSW over ef 10..320 (filled: Hamming top 10, hollow: top 40 rescored), flat scans as crosses (Hamming, Hamming rescored, ADC, ADC rescored); Hamming QPS leaves out encoding the queries, ADC QPS includes building their tables",
        ));
    }
    Ok(())
}

/// `alpha_recall.svg` and `alpha_sparsity.svg`: the alpha sweep's recall and sparsity against
/// alpha, with the grid's alpha 0 and 1 cells (none when nothing was swept).
fn plot_alpha_sweep(
    out: &Path,
    results: &[CellResult],
    plots: &mut Vec<(&'static str, &'static str)>,
) -> Result<()> {
    let sweep: Vec<&CellResult> = {
        let swept: Vec<(usize, Option<usize>)> = results
            .iter()
            .filter(|r| r.alpha_sweep)
            .map(|r| (r.bits, r.k))
            .collect();
        let mut v: Vec<&CellResult> = results
            .iter()
            .filter(|r| {
                matches!(r.method.as_str(), "bsa" | "bsa-alpha0") && swept.contains(&(r.bits, r.k))
            })
            .collect();
        v.sort_by(|a, b| {
            (a.bits, a.k)
                .cmp(&(b.bits, b.k))
                .then(a.alpha.unwrap_or(0.0).total_cmp(&b.alpha.unwrap_or(0.0)))
        });
        v
    };
    if !sweep.is_empty() {
        let mut sizes: Vec<(usize, Option<usize>)> = sweep.iter().map(|r| (r.bits, r.k)).collect();
        sizes.dedup();
        // log10(alpha) with alpha 0 drawn one decade left of the smallest positive alpha.
        let positive = sweep
            .iter()
            .filter_map(|r| r.alpha.filter(|&a| a > 0.0))
            .fold(f64::INFINITY, f64::min);
        let ax = |a: f64| {
            if a > 0.0 {
                a.log10()
            } else if positive.is_finite() {
                positive.log10() - 1.0
            } else {
                0.0
            }
        };
        let mut recall = Vec::new();
        let mut sparsity = Vec::new();
        for (i, &(n, k)) in sizes.iter().enumerate() {
            let rs: Vec<&&CellResult> = sweep.iter().filter(|r| (r.bits, r.k) == (n, k)).collect();
            let kk = k.unwrap_or(1) as f64;
            let name = format!("N={n} K={}", k.unwrap_or(0));
            let pts = |f: &dyn Fn(&CellResult) -> f64| -> Vec<(f64, f64)> {
                rs.iter()
                    .map(|r| (ax(r.alpha.unwrap_or(0.0)), f(r)))
                    .collect()
            };
            recall.push(Series::new(
                format!("{name} Hamming"),
                pts(&|r| r.recall_at_10),
                3 * i,
            ));
            recall.push(Series::new(
                format!("{name} ADC"),
                pts(&|r| r.recall_at_10_adc),
                3 * i + 1,
            ));
            recall.push(Series::new(
                format!("{name} ADC + rescore x4"),
                pts(&|r| r.recall_at_10_adc_rescored_x4),
                3 * i + 2,
            ));
            sparsity.push(Series::new(
                format!("{name} active mean / K"),
                pts(&|r| r.metrics.active_mean / kk),
                3 * i,
            ));
            sparsity.push(Series::new(
                format!("{name} active std / K"),
                pts(&|r| r.metrics.active_std / kk),
                3 * i + 1,
            ));
            sparsity.push(Series::new(
                format!("{name} dead bits / 100"),
                pts(&|r| r.metrics.dead_features as f64 / 100.0),
                3 * i + 2,
            ));
        }
        chart(
            &out.join("alpha_recall.svg"),
            "BSA alpha sweep: recall@10 against alpha (leftmost point: alpha = 0)",
            ("alpha (log10)", "recall@10"),
            &recall,
            Style::lines().unit_y(),
        )?;
        plots.push(("alpha_recall.svg", "alpha sweep: recall@10 against alpha"));
        chart(
            &out.join("alpha_sparsity.svg"),
            "BSA alpha sweep: active bits and dead bits against alpha (leftmost point: alpha = 0)",
            ("alpha (log10)", "ratio"),
            &sparsity,
            Style::lines(),
        )?;
        plots.push(("alpha_sparsity.svg", "alpha sweep: sparsity against alpha"));
    }
    Ok(())
}

/// `active_bits_hist.svg` and `bit_frequency.svg`: the code statistics of the cell `name`.
fn plot_code_stats(
    out: &Path,
    name: &str,
    st: &CodeStats,
    plots: &mut Vec<(&'static str, &'static str)>,
) -> Result<()> {
    let max = st.active_counts.iter().copied().max().unwrap_or(0) as usize;
    let mut hist = vec![0.0; max + 1];
    for &c in &st.active_counts {
        hist[c as usize] += 1.0;
    }
    let bars: Vec<(f64, f64)> = hist
        .iter()
        .enumerate()
        .map(|(i, &c)| (i as f64, c))
        .collect();
    histogram(
        &out.join("active_bits_hist.svg"),
        &format!("active bits per vector, {name} (queries)"),
        "set bits per code",
        "vectors",
        &bars,
    )?;
    plots.push((
        "active_bits_hist.svg",
        "histogram of active bits per vector",
    ));
    let mut f = st.bit_frequency.clone();
    f.sort_by(|a, b| b.total_cmp(a));
    let dead = f.iter().filter(|&&v| v == 0.0).count();
    chart(
        &out.join("bit_frequency.svg"),
        &format!("per-bit firing frequency, sorted, {name} ({dead} dead bits)"),
        (
            "bit rank (most to least frequent)",
            "fraction of vectors with the bit set",
        ),
        &[Series::new(
            name.to_string(),
            f.iter().enumerate().map(|(i, &v)| (i as f64, v)).collect(),
            0,
        )],
        Style::lines().unit_y(),
    )?;
    plots.push(("bit_frequency.svg", "per-bit firing frequency distribution"));
    Ok(())
}

/// PNG copies of every plot, when a font for their text exists (else says so once): whether
/// they were all made.
fn write_pngs(out: &Path, plots: &[(&str, &str)]) -> Result<bool> {
    let mut png = true;
    for (file, _) in plots {
        png &= crate::plot::to_png(&out.join(file))?.is_some();
    }
    if !png {
        eprintln!(
            "bsa: no system font found, so the plots are SVG only (Debian: apt-get install \
             fonts-dejavu-core)"
        );
    }
    Ok(png)
}

/// `report.md`, naming the plots, and saying so when each has a PNG beside it.
fn write_markdown(
    out: &Path,
    info: &RunInfo,
    results: &[CellResult],
    plots: &[(&str, &str)],
    png: bool,
) -> Result<()> {
    let mut md = report_markdown(info, results, plots);
    if png && !plots.is_empty() {
        md.push_str("Every plot is also a PNG beside its SVG (same name, `.png`).\n");
    }
    let p = out.join("report.md");
    std::fs::write(&p, md).map_err(|e| Error::io(&p, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adc_on_fewer_queries_is_said_under_the_table() {
        let cells = [
            ("sign 384 -".to_string(), 5200),
            ("pursuit 1024 16".to_string(), 10_000),
            ("itq 256 -".to_string(), 0), // an old result: its count unknown
        ];
        let note = adc_subset_note(&cells, 10_000).unwrap();
        assert!(note.contains("sign 384 - (5200)"), "{note}");
        assert!(note.contains("of 10000"), "{note}");
        assert!(!note.contains("pursuit") && !note.contains("itq"), "{note}");
        assert_eq!(adc_subset_note(&cells[1..], 10_000), None);
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(utc_now().len(), "2026-11-28 15:38:45 UTC".len());
    }
}
