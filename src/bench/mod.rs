//! The benchmark behind `bsa bench`: for every cell of a grid (method x N x K) fit the codes,
//! encode base and queries, build an index in a temporary folder and measure the paper's
//! metrics, bytes per vector, recall by Hamming, rescored, cosine-overlap and ADC scoring, and
//! timings. [`write_report`] writes `results.json`, `report.md` and SVG plots.
//!
//! Recall is [`crate::metrics::recall_at_k`] against exact cosine ground truth; Hamming ties are
//! broken by lower row (the index's order), so every figure is deterministic.
//!
//! One file per part, each private and re-exported here (so the paths stay `bsa::bench::*`):
//! `grid.rs` (the cells and their settings), `run.rs` (one cell: fit, build, measure; the cache),
//! `result.rs` (the measurements, as `results.json` holds them) and `report.rs` (the markdown
//! report and plots).

mod grid;
mod report;
mod result;
mod run;

pub use grid::{Cell, HnswCells, PAPER_ALPHAS, PAPER_HEADLINE, Preset, Settings, Variant, grid};
pub use report::{
    RunInfo, machine_info, prepare_report_dir, report_markdown, utc_now, write_report,
};
pub use result::{
    CellResult, HnswPoint, HnswResult, InvertedResult, OtherScores, Rescored, Throughput,
};
pub use run::{
    ADC_LOOKUP_BUDGET, Cache, Data, GT_SAMPLE, GT_TOLERANCE, HNSW_EFS, RESULT_VERSION,
    check_ground_truth, fit, ground_truth, run_cell,
};
