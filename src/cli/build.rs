//! `bsa build`: pack codes into an index directory (written to a temporary folder beside the
//! target and renamed into place when complete).

use std::path::PathBuf;

use anyhow::{bail, Context};
use bsa::pipeline::GraphOn;
use bsa_index::{pack, HnswParams, IndexBuilder, VectorDtype};

/// Build a search index from embeddings (encoded with a model) or from packed codes.
///
/// Examples:
///   bsa build --model model.safetensors --data base.npy --vectors --hnsw --out idx
///   bsa build --codes codes.npy --out idx      # uint8 n x bytes, packbits(bitorder="little")
///   bsa build --model m.safetensors --data base.npy --inverted --out idx
///
/// Posting lists (`--mode inverted` in `bsa search`) are built with --inverted, skipped with
/// --no-inverted, and otherwise built when the codes are sparse enough: when a query drawn like
/// the base codes would visit, on average, at most 1/10 of the words a flat scan reads, in
/// postings (sum over bits of count_j^2 / n) or in bitmap words (mean popcount x n / 64); see
/// index/RESULTS-inverted.md. The lists are also stored as bitmaps over rows (bitmaps.bin, as
/// large as the codes) when a typical query's bitmap words are at most twice its postings (the
/// search then picks per query); --bitmaps and --no-bitmaps override that.
/// With --model, the norm of each code's decoded vector is stored too (for `--score adc`).
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
    /// Bits per code for --codes (default: 8 x bytes per row).
    #[arg(long, requires = "codes")]
    pub bits: Option<usize>,
    /// External ids, one per row (.npy, 1-D integers); default: row numbers.
    #[arg(long)]
    pub ids: Option<PathBuf>,
    /// Store the float vectors of --data for rescoring.
    #[arg(long, requires = "data")]
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
    /// neighbourhoods) or `codes` (by Hamming distance: the graph for `--score hamming`; the
    /// default without a model).
    #[arg(long, value_enum, requires = "hnsw")]
    pub hnsw_on: Option<GraphOn>,
    /// Always store posting lists for `--mode inverted` (default: only when the codes are sparse enough).
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
    #[arg(long, visible_alias = "hnsw-m", default_value_t = 32)]
    pub m: usize,
    /// HNSW: candidate list size while building.
    #[arg(long, default_value_t = 200)]
    pub ef_construction: usize,
    /// HNSW: default candidate list size while searching.
    #[arg(long, default_value_t = 64)]
    pub ef_search: usize,
    /// Replace an existing index at --out (only an index or an empty directory is replaced;
    /// the build waits for the index's writers, if any, and replaces it only once the new one
    /// is complete).
    #[arg(long)]
    pub force: bool,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Index directory to create.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    let graph_on = a.hnsw_on.unwrap_or(if a.model.is_some() {
        GraphOn::Decoded
    } else {
        GraphOn::Codes
    });
    if a.hnsw && graph_on != GraphOn::Codes && a.model.is_none() {
        bail!(
            "a graph on the decoded codes or the data is searched by --score adc: it needs --model"
        );
    }
    super::io::refuse_clobbering(
        &a.out,
        &[
            ("--model", a.model.as_deref()),
            ("--data", a.data.as_deref()),
            ("--codes", a.codes.as_deref()),
            ("--ids", a.ids.as_deref()),
        ],
    )?;
    bsa::threads::configure(a.threads)?;
    let data = match &a.data {
        Some(p) => Some(super::io::open_embeddings(p, a.vectors)?),
        None => None,
    };
    let mut norms: Option<Vec<f32>> = None;
    // The decoded codes, when the graph is built on them.
    let mut decoded: Option<(Vec<f32>, usize)> = None;
    let (bits, codes, n) = match (&a.model, &a.codes) {
        (Some(model_path), _) => {
            let model = bsa::io::model::load(model_path)?;
            let data = data.as_ref().context("--model needs --data")?;
            data.expect_dim(model.config.dim)?;
            let active = model.encode_active(data.view());
            let words = pack::pack_set_bits(&active, model.config.bits)?;
            norms = Some(model.params.decoded_norms(&active));
            if a.hnsw && graph_on == GraphOn::Decoded {
                let xhat = model.params.decode_sparse(&active);
                decoded = Some((xhat.into_raw_vec_and_offset().0, model.config.dim));
            }
            (model.config.bits, words, data.n())
        }
        (None, Some(codes_path)) => {
            if let Some(d) = &a.data {
                // As bsa::pipeline refuses it: float queries (rescoring) and a graph on the
                // data both need a model.
                bail!(
                    "{}: float data beside --codes is used only with a model (encoded, stored \
                     for rescoring, the graph built on it); an index of codes alone cannot use \
                     it: leave the data out, or give --model",
                    d.display()
                );
            }
            let (n, cols, bytes) = bsa::io::read_u8(codes_path)?;
            let bits = a.bits.unwrap_or(cols * 8);
            if bits.div_ceil(8) != cols {
                bail!(
                    "{}: {cols} bytes per code cannot hold {bits}-bit codes; pass --bits between {} and {}",
                    codes_path.display(),
                    cols.saturating_sub(1) * 8 + 1,
                    cols * 8
                );
            }
            let words = pack::pack_le_bytes(&bytes, n, cols, bits)
                .with_context(|| format!("packing {}", codes_path.display()))?;
            (bits, words, n)
        }
        (None, None) => bail!(
            "give --model M --data X (float embeddings, encoded with the model) or --codes C \
             (packed codes made elsewhere)"
        ),
    };
    if n == 0 {
        let input = a.data.as_ref().or(a.codes.as_ref()).expect("one was read");
        bail!("{}: 0 rows; there is nothing to index", input.display());
    }
    if let Some(d) = &data {
        if d.n() != n {
            bail!(
                "{} has {} rows but there are {n} codes",
                d.path().display(),
                d.n()
            );
        }
    }
    let ids = match &a.ids {
        Some(p) => {
            let ids = bsa::io::read_u64_ids(p)?;
            if ids.len() != n {
                bail!("{}: {} ids for {n} codes", p.display(), ids.len());
            }
            Some(ids)
        }
        None => None,
    };

    let (auto_inverted, touched, scan_words) = bsa_index::postings::pays_off(&codes, bits);
    let inverted = !a.no_inverted
        && bits <= bsa_index::format::MAX_INVERTED_BITS as usize
        && (a.inverted || auto_inverted);
    if a.inverted && bits > bsa_index::format::MAX_INVERTED_BITS as usize {
        bail!(
            "--inverted needs codes of at most {} bits, these have {bits}",
            bsa_index::format::MAX_INVERTED_BITS
        );
    }
    if a.bitmaps && !inverted {
        bail!("--bitmaps stores the posting lists as bitmaps: it needs posting lists (add --inverted)");
    }
    let set_bits: u64 = codes.iter().map(|x| u64::from(x.count_ones())).sum();
    let bitmaps = inverted
        && !a.no_bitmaps
        && (a.bitmaps || bsa_index::bitmaps::worth_storing(n, set_bits, touched));

    let pb = super::io::bar(0, a.quiet, "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}");
    pb.set_message("building");
    let mut builder = IndexBuilder::new(bits, &codes)
        .overwrite(a.force)
        .on_wait(|| super::io::say_waiting(&a.out))
        .progress(|done, total| {
            pb.set_length(total);
            pb.set_position(done);
        })
        .extra(serde_json::json!({
            "bsa_version": env!("CARGO_PKG_VERSION"),
            "source": a.model.as_ref().map(|_| "model").unwrap_or("codes"),
            "data": a.data.as_ref().map(|p| p.display().to_string()),
            "graph_on": a.hnsw.then(|| graph_on.name()),
            "inverted": {
                "built": inverted,
                "requested": if a.inverted { "yes" } else if a.no_inverted { "no" } else { "auto" },
                "expected_postings_per_query": touched,
                "flat_words_per_query": scan_words,
                "bitmaps": bitmaps,
            },
        }))
        .inverted(inverted)
        .bitmaps(Some(bitmaps));
    if let Some(v) = &norms {
        builder = builder.norms(v);
    }
    if let Some(ids) = &ids {
        builder = builder.ids(ids);
    }
    if let Some(model) = &a.model {
        builder = builder.model_file(model);
    }
    if a.vectors {
        // `requires = "data"` guarantees data is present.
        let d = data.as_ref().context("--vectors needs --data")?;
        builder = builder
            .vectors(d.as_slice(), d.dim())
            .vector_dtype(if a.f16 {
                VectorDtype::F16
            } else {
                VectorDtype::F32
            });
    }
    if a.hnsw {
        builder = builder.hnsw(HnswParams {
            max_connections: a.m,
            ef_construction: a.ef_construction,
            ef_search: a.ef_search,
        });
    }
    if let Some((xhat, dim)) = &decoded {
        builder = builder.graph_on(xhat, *dim);
    }
    if a.hnsw && graph_on == GraphOn::Data {
        let d = data.as_ref().context("--hnsw-on data needs --data")?;
        builder = builder.graph_on(d.as_slice(), d.dim());
    }
    // The builder checks the ids (unique) and codes against each other: name the inputs.
    let inputs: Vec<String> = [&a.data, &a.codes, &a.ids]
        .into_iter()
        .flatten()
        .map(|p| p.display().to_string())
        .collect();
    builder
        .build(&a.out)
        .with_context(|| format!("building {} from {}", a.out.display(), inputs.join(" and ")))?;
    pb.finish_and_clear();
    eprintln!(
        "bsa: built {} with {n} codes of {bits} bits{}",
        a.out.display(),
        match (inverted, bitmaps) {
            (true, true) => " and posting lists (also as bitmaps)",
            (true, false) => " and posting lists",
            _ => "",
        }
    );
    Ok(())
}
