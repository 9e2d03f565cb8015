//! `bsa build`: pack codes into an index directory (written to a temporary folder beside the
//! target and renamed into place when complete).

use std::path::PathBuf;

use anyhow::{Context, bail};
use bsa::pipeline::{BuildRequest, BuildSource, GraphOn, build_index_notifying};
use bsa_index::{HnswParams, VectorDtype};

/// Build a search index from embeddings (encoded with a model) or from packed codes.
///
/// Examples:
///   bsa build --model model.safetensors --data base.npy --vectors --hnsw --out idx
///   bsa build --codes codes.npy --out idx      # uint8 n x bytes, packbits(bitorder="little")
///   bsa build --codes codes.npy --hnsw --out idx          # a graph on the codes, by Hamming
///   bsa build --model m.safetensors --data base.npy --inverted --vectors --out idx
///
/// Posting lists (`--mode inverted` in `bsa search`) are built with --inverted, skipped with
/// --no-inverted, and otherwise built when the codes are sparse enough: when a query drawn like
/// the base codes would visit, on average, at most 1/10 of the words a flat scan reads, in
/// postings (sum over bits of count_j^2 / n) or in bitmap words (mean popcount x n / 64); see
/// index/RESULTS-inverted.md. The lists are also stored as bitmaps over rows (bitmaps.bin, as
/// large as the codes) when a typical query's bitmap words are at most twice its postings (the
/// search then picks per query); --bitmaps and --no-bitmaps override that. A pursuit model's
/// codes (--preset retrieval) get lists only with --inverted: they are searched with
/// --score adc, which does not read the lists, and the lists would more than double the index.
/// With --model, the norm of each code's decoded vector is stored too (for `--score adc`).
///
/// Ctrl-C (or SIGTERM, SIGHUP) stops the build within about a second: the unfinished
/// directory is removed and an index it would have replaced (--force) stays as it was.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Model file: encode --data with it, and copy it into the index so float queries work.
    #[arg(long, requires = "data", conflicts_with = "codes")]
    pub model: Option<PathBuf>,
    /// Float embeddings, n x D: encoded with --model, and stored with --vectors.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Packed codes made elsewhere: uint8 .npy, n x ceil(bits/8), numpy little bit order.
    #[arg(long)]
    pub codes: Option<PathBuf>,
    /// Bits per code for --codes (default: 8 x bytes per row). Codes of float embeddings
    /// come from a model: `bsa train --bits N` sets their width.
    #[arg(long)]
    pub bits: Option<usize>,
    /// External ids, one per row (.npy, 1-D integers); default: row numbers.
    #[arg(long)]
    pub ids: Option<PathBuf>,
    /// Store the float vectors of --data for rescoring (with --model: rescoring ranks float
    /// queries, which the model encodes).
    #[arg(long)]
    pub vectors: bool,
    /// Store the vectors as float16 (half the size).
    #[arg(long, requires = "vectors")]
    pub f16: bool,
    /// Also build an HNSW graph.
    #[arg(long)]
    pub hnsw: bool,
    /// What the graph is built on: `decoded` (the codes as the model decodes them, nearest by
    /// cosine: a graph for `--score adc`; the default with --model), `data` (the --data
    /// embeddings themselves, by cosine: also a graph for `--score adc`, from exact
    /// neighbourhoods; keep them with --vectors, or segments added later never merge and
    /// `bsa compact` cannot rebuild the graph) or `codes` (by Hamming distance: the graph for
    /// `--score hamming`; the default without a model).
    #[arg(long, value_enum, requires = "hnsw")]
    pub hnsw_on: Option<GraphOn>,
    /// Always store posting lists for `--mode inverted` (default: only when the codes are sparse
    /// enough, and not for a pursuit model's codes).
    #[arg(long, conflicts_with = "no_inverted")]
    pub inverted: bool,
    /// Never store posting lists.
    #[arg(long)]
    pub no_inverted: bool,
    /// Also store the posting lists as bitmaps (default: when a typical query's bitmap words are
    /// at most twice its postings).
    #[arg(long, conflicts_with = "no_bitmaps")]
    pub bitmaps: bool,
    /// Never store bitmap lists.
    #[arg(long)]
    pub no_bitmaps: bool,
    /// HNSW: maximum connections per node (M), 2..=255.
    #[arg(
        long,
        visible_alias = "hnsw-m",
        default_value_t = 32,
        requires = "hnsw"
    )]
    pub m: usize,
    /// HNSW: candidate list size while building.
    #[arg(long, default_value_t = 200, requires = "hnsw")]
    pub ef_construction: usize,
    /// HNSW: default candidate list size while searching.
    #[arg(long, default_value_t = 64, requires = "hnsw")]
    pub ef_search: usize,
    /// Replace an existing index at --out (only an index holding nothing but bsa's files, or an
    /// empty directory, is replaced; the build waits for the index's writers, if any, and
    /// replaces it only once the new one is complete; rows other writers added before then go
    /// with the index replaced, those added after are in the new one). A symbolic link at --out
    /// is kept: the index it names is replaced.
    #[arg(long)]
    pub force: bool,
    /// With --force: wait at most this many seconds for the writers of the index replaced,
    /// then fail with nothing changed and exit status 75 (EX_TEMPFAIL); 0 does not wait. The
    /// wait comes once the new index is complete, to put it in place: a build that times out
    /// has done its work for nothing. Default: wait as long as they take.
    #[arg(long, value_name = "SECONDS", value_parser = super::io::parse_seconds, requires = "force")]
    pub lock_timeout: Option<std::time::Duration>,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Index directory to create (with its missing parent folders, as `mkdir -p`).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    if a.bits.is_some() && a.codes.is_none() {
        // Said here rather than as clap's "--codes is required": `--data X --bits N` is most
        // likely a request for N-bit codes of X, which a model makes.
        bail!(
            "--bits gives the width of --codes (packed codes made elsewhere); codes of float \
             embeddings come from a model: bsa train --data X --bits N --k K --out M, then bsa \
             build --model M --data X --out {}",
            a.out.display()
        );
    }
    if a.vectors && a.model.is_none() {
        // Said here rather than as clap's "--data is required", which --codes then refuses.
        bail!(
            "--vectors stores the --data vectors for rescoring float queries, which need a \
             model to be encoded: build with --model M --data X --vectors (an index of --codes \
             cannot use stored vectors)"
        );
    }
    super::io::refuse_clobbering(
        &a.out,
        false,
        &[
            ("--model", a.model.as_deref()),
            ("--data", a.data.as_deref()),
            ("--codes", a.codes.as_deref()),
            ("--ids", a.ids.as_deref()),
        ],
    )?;
    bsa::threads::configure(a.threads)?;
    // Its values are checked by the build (finite; nonzero rows when stored): one pass.
    let data = match &a.data {
        Some(p) => Some(bsa::io::Embeddings::open(p)?),
        None => None,
    };
    let model = match &a.model {
        Some(p) => Some(bsa::io::model::load(p)?),
        None => None,
    };
    // Rows of another width are the build's error, said without this warning first.
    if let (Some(d), Some(m)) = (&data, &model)
        && d.dim() == m.config.dim
    {
        super::io::warn_if_not_unit(d, m.config.method);
    }
    let codes = match &a.codes {
        Some(p) => Some(bsa::io::read_u8(p)?),
        None => None,
    };
    if let (Some(p), Some((rows, cols, bytes))) = (&a.codes, &codes) {
        super::io::warn_if_unpacked(p, *rows, *cols, bytes);
    }
    let source = match (&model, &a.model, &codes) {
        (Some(model), Some(file), _) => BuildSource::Model { model, file },
        (None, None, Some((rows, _, bytes))) => BuildSource::Codes {
            bytes,
            rows: *rows,
            bits: a.bits,
        },
        _ => bail!(
            "give --model M --data X (float embeddings, encoded with the model; bsa train \
             --data X --bits N --k K --out M makes one) or --codes C (packed codes made elsewhere)"
        ),
    };
    // Every check of the inputs against each other is the library's (one set of rules for the
    // command line and Python); its errors are put in context here, naming the files.
    let mut request = BuildRequest::new(source);
    request.data = data.as_ref().map(|d| d.view());
    request.data_name = a.data.as_ref().map(|p| p.display().to_string());
    let ids = a.ids.as_ref().map(bsa::io::read_u64_ids).transpose()?;
    request.ids = ids.as_deref();
    request.vectors = a.vectors.then_some(if a.f16 {
        VectorDtype::F16
    } else {
        VectorDtype::F32
    });
    request.hnsw = a.hnsw.then_some(HnswParams {
        max_connections: a.m,
        ef_construction: a.ef_construction,
        ef_search: a.ef_search,
    });
    request.graph_on = a.hnsw_on;
    if a.hnsw_on == Some(GraphOn::Data) && !a.vectors && a.model.is_some() {
        // Allowed (a static index need not keep its floats), but the index cannot change well.
        // (Without a model the build refuses such a graph: no advice before that error.)
        errln!(
            "bsa: warning: the graph is built on the data, which the index will not keep \
             (no --vectors): segments added later never merge and `bsa compact` cannot \
             rebuild it; build with --vectors to keep them"
        );
    }
    request.inverted = flag(a.inverted, a.no_inverted);
    request.bitmaps = flag(a.bitmaps, a.no_bitmaps);
    request.overwrite = a.force;
    request.lock_timeout = a.lock_timeout;

    let pb = super::io::bar(0, a.quiet, "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}");
    pb.set_message("building");
    let inputs: Vec<String> = [&a.model, &a.data, &a.codes, &a.ids]
        .into_iter()
        .flatten()
        .map(|p| p.display().to_string())
        .collect();
    note_leftovers(&a.out);
    // Ctrl-C from here on stops the build, which removes its unfinished directory.
    let stop = super::signals::stop_on_signal()?;
    request.stop = Some(&stop);
    let built = build_index_notifying(
        &request,
        &a.out,
        |done, total| {
            pb.set_length(total);
            pb.set_position(done);
        },
        || super::io::say_waiting(&a.out),
    )
    .with_context(|| format!("building {} from {}", a.out.display(), inputs.join(" and ")))?;
    pb.finish_and_clear();
    let lists = match (built.inverted, built.bitmaps) {
        (true, true) => Some("posting lists (also as bitmaps)"),
        (true, false) => Some("posting lists"),
        _ => None,
    };
    let parts: Vec<&str> = [lists, a.hnsw.then_some("an HNSW graph")]
        .into_iter()
        .flatten()
        .collect();
    errln!(
        "bsa: built {} with {} codes of {} bits{}{}",
        a.out.display(),
        built.n,
        built.bits,
        if parts.is_empty() { "" } else { " and " },
        parts.join(" and ")
    );
    Ok(())
}

/// Says on stderr which directories builds of `out` that were killed left beside it
/// ([`bsa_index::build_leftovers`]); they are not removed (another build may be writing one).
fn note_leftovers(out: &std::path::Path) {
    for left in bsa_index::build_leftovers(out) {
        errln!("bsa: note: {}", bsa_index::leftover_advice(&left, out));
    }
}

/// A pair of `--x` / `--no-x` flags: always, never, or the library's choice.
fn flag(yes: bool, no: bool) -> Option<bool> {
    match (yes, no) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}
