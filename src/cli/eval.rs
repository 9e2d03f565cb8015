//! `bsa eval`: the paper's reconstruction and sparsity metrics of a model on a set of vectors.

/// Report the paper's metrics of a model on embeddings.
///
/// Computed in float32, as training is: rows whose L2 norm is outside 1.1e-19 to 1.8e19 are
/// refused, naming the row.
///
/// JSON keys: n bits k reconstruction_loss reconstruction_mse fixed_topk_reconstruction_loss
/// active_mean active_std dead_features feature_frequency_quantiles.
///
/// Example:
///   bsa eval --model model.safetensors --data query.npy --json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    #[command(flatten)]
    pub input: super::io::ModelData,
    /// Print the metrics as one JSON object on stdout (else a table).
    #[arg(long)]
    pub json: bool,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    bsa::threads::configure(a.threads)?;
    let (model, data) = a.input.open(super::io::ZeroRows::Refused)?;
    bsa::io::check_float32_norms(&a.input.data.display().to_string(), data.view())?;
    let (m, _) = bsa::metrics::evaluate(&model, data.view());
    if a.json {
        super::io::print_json(&m)?;
    } else {
        print_table(&m)?;
    }
    Ok(())
}

/// The metrics as an aligned two-column table.
pub fn print_table(m: &bsa::metrics::PaperMetrics) -> std::io::Result<()> {
    let q = &m.feature_frequency_quantiles;
    let rows = [
        ("vectors", m.n.to_string()),
        ("bits / k", format!("{} / {}", m.bits, m.k)),
        (
            "reconstruction loss (cosine)",
            format!("{:.4}", m.reconstruction_loss),
        ),
        (
            "reconstruction mse",
            // Six decimals for a trained model's error; a run-away decoder's in powers of ten.
            if m.reconstruction_mse < 1e6 {
                format!("{:.6}", m.reconstruction_mse)
            } else {
                format!("{:.3e}", m.reconstruction_mse)
            },
        ),
        (
            "fixed-TopK reconstruction loss",
            format!("{:.4}", m.fixed_topk_reconstruction_loss),
        ),
        (
            "active bits mean / std",
            format!("{:.2} / {:.2}", m.active_mean, m.active_std),
        ),
        ("dead features", m.dead_features.to_string()),
        (
            "bit frequency min/1/10/50/90/99/max %",
            [q.min, q.p01, q.p10, q.p50, q.p90, q.p99, q.max]
                .iter()
                .map(|v| format!("{:.2}", v * 100.0))
                .collect::<Vec<_>>()
                .join(" "),
        ),
    ];
    for (k, v) in rows {
        outln!("{k:<38} {v}")?;
    }
    Ok(())
}
