//! `bsa export`: write an index's codes into a Milvus collection (cargo feature `milvus`).

use std::path::PathBuf;

/// Export an index to a Milvus collection, for serving it from a Milvus cluster.
///
/// Creates the collection (fields `id`, `code` binary vector, `bits` sparse vector of the set
/// bits with weight 1, and `norm` when the index was built with a model), inserts the rows in
/// batches, flushes, builds the indexes (BIN_FLAT/HAMMING, SPARSE_INVERTED_INDEX/IP) and loads it.
/// Search it with `bsa search --milvus URL --collection NAME`. Needs a build with
/// `--features milvus`. See README "Scaling out" for the layout and the bulk-import path.
///
/// Example (a local server: milvus-lite's binary, see README):
///   bsa export --index idx --milvus http://127.0.0.1:19530 --collection wordnet --as both
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Index directory from `bsa build`.
    #[arg(long)]
    pub index: PathBuf,
    /// Milvus server URL, e.g. http://127.0.0.1:19530.
    #[arg(long)]
    pub milvus: String,
    /// Collection to create.
    #[arg(long)]
    pub collection: String,
    /// Vector fields: binary (Hamming), sparse (overlap, ADC) or both.
    #[arg(long = "as", default_value = "both", value_parser = ["binary", "sparse", "both"])]
    pub forms: String,
    /// Shards (Milvus shards_num): parallel write channels, fixed when the collection is created.
    #[arg(long, default_value_t = 1)]
    pub shards: i32,
    /// In-memory replicas when loading (at most one per query node).
    #[arg(long, default_value_t = 1)]
    pub replicas: i32,
    /// Rows per insert request.
    #[arg(long, default_value_t = 5000)]
    pub batch: usize,
    /// Drop and rewrite the collection if it exists.
    #[arg(long)]
    pub replace: bool,
    /// Skip the full payload checksums when opening the index.
    #[arg(long)]
    pub no_verify: bool,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
}

#[cfg(feature = "milvus")]
pub fn run(a: &Args) -> anyhow::Result<()> {
    use bsa::milvus::{Client, ExportOptions, Forms};
    use bsa_index::OpenOptions;
    use bsa_index::live::Snapshot;

    // The export reads one segment's files: a grown index is compacted first.
    let snap = Snapshot::open_with(&a.index, OpenOptions::verify_checksums(!a.no_verify))?;
    if snap.segments().len() != 1 || snap.segments()[0].deleted().is_some() {
        anyhow::bail!(
            "{}: the index has {} segments or deleted rows; run `bsa compact --index {} \
             --max-segments 1` first (the export reads one segment)",
            a.index.display(),
            snap.segments().len(),
            a.index.display()
        );
    }
    let index = snap.segments()[0].index();
    let opts = ExportOptions {
        forms: Forms::parse(&a.forms)?,
        shards: a.shards,
        replicas: a.replicas,
        batch: a.batch,
        replace: a.replace,
    };
    let client = Client::connect(&a.milvus)?;
    let pb = super::io::bar(
        index.len() as u64,
        a.quiet,
        "exporting [{bar:40}] {pos}/{len} rows {per_sec} eta {eta}",
    );
    let started = std::time::Instant::now();
    let meta = client.export(&a.collection, index, &opts, |done| {
        pb.set_position(done as u64)
    })?;
    pb.finish_and_clear();
    super::io::print_json(&serde_json::json!({
        "collection": a.collection,
        "rows": meta.rows,
        "bits": meta.bits,
        "forms": meta.forms,
        "norms": meta.norm_range.is_some(),
        "shards": a.shards,
        "replicas": a.replicas,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

#[cfg(not(feature = "milvus"))]
pub fn run(_: &Args) -> anyhow::Result<()> {
    anyhow::bail!("{}", super::milvus_search::NOT_BUILT)
}
