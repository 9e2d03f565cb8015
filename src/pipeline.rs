//! The decisions of `bsa build` and `bsa train --preset` as library calls, shared by the command
//! line and the Python binding so that both make the same index and the same model from the same
//! inputs: which optional files an index stores, the norms `adc` divides by, the extra manifest
//! entry; the settings a preset names; and decoding packed codes.
//!
//! ```
//! use bsa::pipeline::{build_index, BuildRequest, BuildSource};
//! # fn main() -> bsa::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let bytes = [0b0000_0111u8, 0b0000_0110, 0b1111_0000]; // three 8-bit codes
//! let source = BuildSource::Codes { bytes: &bytes, rows: 3, bits: None };
//! let built = build_index(&BuildRequest::new(source), dir.path().join("idx"), |_, _| {})?;
//! assert_eq!((built.n, built.bits), (3, 8));
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::atomic::AtomicBool;

use bsa_index::{GraphVectors, HnswParams, IndexBuilder, VectorDtype, pack};
use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result};
use crate::model::{Autoencoder, Params};
use crate::pursuit::PursuitParams;
use crate::query::check_rows;

/// Where the codes of a new index come from.
#[derive(Debug, Clone, Copy)]
pub enum BuildSource<'a> {
    /// Encode the data with `model`; `file` is the model's file, copied into the index so that
    /// float queries can be encoded at search time, and the decoded codes' norms are stored for
    /// `--score adc`.
    Model {
        /// The model.
        model: &'a Autoencoder,
        /// Its file (as saved by [`crate::io::model::save`]).
        file: &'a Path,
    },
    /// Packed codes made elsewhere: `rows x ceil(bits / 8)` bytes, numpy
    /// `packbits(bitorder="little")`.
    Codes {
        /// The bytes, row-major.
        bytes: &'a [u8],
        /// Number of codes.
        rows: usize,
        /// Bits per code (default: 8 x bytes per row).
        bits: Option<usize>,
    },
}

pub use crate::graph_on::GraphOn;

/// `bsa build`'s options.
#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    /// The codes.
    pub source: BuildSource<'a>,
    /// Float vectors, one row per code: encoded by a model source, stored with `vectors`.
    pub data: Option<ArrayView2<'a, f32>>,
    /// Where `data` came from, recorded in the manifest's `extra` (e.g. its file name).
    pub data_name: Option<String>,
    /// External ids, one per code (default: row numbers).
    pub ids: Option<&'a [u64]>,
    /// Store `data` for rescoring, in this precision.
    pub vectors: Option<VectorDtype>,
    /// Also build an HNSW graph.
    pub hnsw: Option<HnswParams>,
    /// What the graph is built on (default: the decoded codes with a model source, the codes
    /// otherwise).
    pub graph_on: Option<GraphOn>,
    /// Posting lists: `Some(true)` always, `Some(false)` never, `None` when they pay off and
    /// the codes are not a pursuit model's (searched by ADC, which does not read them).
    pub inverted: Option<bool>,
    /// Bitmap lists: `Some(true)` always (needs posting lists), `Some(false)` never, `None` when
    /// worth it.
    pub bitmaps: Option<bool>,
    /// Replace an existing index at the target.
    pub overwrite: bool,
    /// Stop once this is set (a Ctrl-C handler's flag): checked while the data is encoded and
    /// at every step of the build ([`IndexBuilder::stop_when`]); the build then returns
    /// [`Error::Stopped`], having written nothing.
    pub stop: Option<&'a AtomicBool>,
    /// With `overwrite`: wait at most this long for the writers of the index replaced
    /// ([`IndexBuilder::lock_timeout`]; `None`: as long as they take).
    pub lock_timeout: Option<std::time::Duration>,
}

impl<'a> BuildRequest<'a> {
    /// An index of `source` alone: no data, ids, vectors or graph; lists when they pay off
    /// (not for a pursuit model's codes).
    pub fn new(source: BuildSource<'a>) -> BuildRequest<'a> {
        BuildRequest {
            source,
            data: None,
            data_name: None,
            ids: None,
            vectors: None,
            hnsw: None,
            graph_on: None,
            inverted: None,
            bitmaps: None,
            overwrite: false,
            stop: None,
            lock_timeout: None,
        }
    }
}

/// What [`build_index`] built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Built {
    /// Number of codes.
    pub n: usize,
    /// Bits per code.
    pub bits: usize,
    /// Whether posting lists were stored.
    pub inverted: bool,
    /// Whether the posting lists were also stored as bitmaps.
    pub bitmaps: bool,
}

/// Builds the index directory `out` as `bsa build` does (atomically: see [`IndexBuilder`]);
/// `progress(done, total)` reports the builder's steps.
pub fn build_index(
    request: &BuildRequest<'_>,
    out: impl AsRef<Path>,
    progress: impl FnMut(u64, u64),
) -> Result<Built> {
    build_index_notifying(request, out, progress, || {})
}

/// [`build_index`], calling `on_wait` once, before the build waits, if the index it replaces
/// (`overwrite`) has a writer holding its lock ([`IndexBuilder::on_wait`]).
pub fn build_index_notifying(
    request: &BuildRequest<'_>,
    out: impl AsRef<Path>,
    progress: impl FnMut(u64, u64),
    on_wait: impl FnOnce(),
) -> Result<Built> {
    let r = request;
    let data = match &r.data {
        Some(d) => {
            // Vectors are rescored by cosine: a zero row has none.
            check_rows("data", *d, r.vectors.is_some())?;
            Some(d.as_standard_layout())
        }
        None => None,
    };
    if r.vectors.is_some() && data.is_none() {
        return Err(Error::InvalidArgument(
            "storing vectors needs the float data".into(),
        ));
    }
    let model_source = matches!(r.source, BuildSource::Model { .. });
    if !model_source && data.is_some() {
        // Stored vectors serve rescoring, whose float queries need a model to encode them, and
        // a graph on the data needs one too: nothing could use them.
        return Err(Error::InvalidArgument(
            "float data beside codes is used only with a model (encoded, stored for \
             rescoring, the graph built on it); an index of codes alone cannot use it: leave \
             the data out, or give the model"
                .into(),
        ));
    }
    let graph_on = r.graph_on.unwrap_or(if model_source {
        GraphOn::Decoded
    } else {
        GraphOn::Codes
    });
    if r.hnsw.is_some() && graph_on != GraphOn::Codes && !model_source {
        return Err(Error::InvalidArgument(
            "a graph on the decoded codes or the data is searched by score adc: it needs a model"
                .into(),
        ));
    }
    let mut norms: Option<Vec<f32>> = None;
    let mut decoded: Option<GraphVectors> = None;
    let (bits, codes, n) = match r.source {
        BuildSource::Model { model, .. } => {
            let d = data.as_ref().ok_or_else(|| {
                Error::InvalidArgument("building from a model needs the float data".into())
            })?;
            if d.nrows() == 0 {
                return Err(nothing_to_index());
            }
            if d.ncols() != model.config.dim {
                return Err(Error::model_dim("the data", model.config.dim, d.ncols()));
            }
            // The graph's vectors, made unit length chunk by chunk (not held whole twice).
            let keep = r.hnsw.is_some() && graph_on == GraphOn::Decoded;
            let mut kept = keep.then(|| GraphVectors::new(model.config.dim, d.nrows()));
            let (words, norm_list) =
                encode_rows(model, d.view(), r.stop, &mut |xhat| match &mut kept {
                    Some(kept) => Ok(kept.push(xhat.as_slice().expect("standard layout"))?),
                    None => Ok(()),
                })?;
            norms = Some(norm_list);
            decoded = kept;
            (model.config.bits, words, d.nrows())
        }
        BuildSource::Codes { bytes, rows, bits } => {
            if rows == 0 {
                return Err(nothing_to_index());
            }
            if bytes.len() % rows != 0 {
                return Err(Error::InvalidArgument(format!(
                    "{} bytes are not {rows} whole codes",
                    bytes.len()
                )));
            }
            let cols = bytes.len() / rows;
            if cols == 0 {
                return Err(Error::InvalidArgument(
                    "the codes have 0 bytes per row: there are no bits to index".into(),
                ));
            }
            let bits = bits.unwrap_or(cols * 8);
            if bits.div_ceil(8) != cols {
                return Err(Error::InvalidArgument(format!(
                    "{cols} bytes per code cannot hold {bits}-bit codes; the bits per code must be \
                     between {} and {}",
                    cols.saturating_sub(1) * 8 + 1,
                    cols * 8
                )));
            }
            (bits, pack::pack_le_bytes(bytes, rows, cols, bits)?, rows)
        }
    };
    if let Some(d) = &data
        && d.nrows() != n
    {
        return Err(Error::InvalidArgument(format!(
            "the data has {} rows but there are {n} codes",
            d.nrows()
        )));
    }
    if let Some(ids) = r.ids {
        if ids.len() != n {
            return Err(Error::InvalidArgument(format!(
                "{} ids for {n} codes",
                ids.len()
            )));
        }
        check_ids_fit_int64("ids", ids)?;
    }

    let max_bits = bsa_index::format::MAX_INVERTED_BITS as usize;
    if r.inverted == Some(true) && bits > max_bits {
        return Err(Error::InvalidArgument(format!(
            "posting lists need codes of at most {max_bits} bits, these have {bits}"
        )));
    }
    let (pays, touched, scan_words) = bsa_index::postings::pays_off(&codes, bits);
    // Matching-pursuit codes are made to be searched by ADC, which scores them from their ids
    // (sparse.bin) and never reads posting lists at their density: lists (and bitmaps, as large
    // as the codes) would more than double the index for Hamming-family searches only, which
    // rank these codes poorly. They are built when asked for.
    let searched_by_adc = matches!(
        r.source,
        BuildSource::Model { model, .. } if model.config.method == crate::model::Method::Pursuit
    );
    let auto_inverted = pays && !searched_by_adc;
    let inverted =
        r.inverted != Some(false) && bits <= max_bits && r.inverted.unwrap_or(auto_inverted);
    if r.bitmaps == Some(true) && !inverted {
        return Err(Error::InvalidArgument(
            "bitmap lists (--bitmaps; bitmaps=True in Python) store the posting lists as \
             bitmaps: ask for posting lists too (--inverted; inverted=True)"
                .into(),
        ));
    }
    let set_bits: u64 = codes.iter().map(|x| u64::from(x.count_ones())).sum();
    let bitmaps = inverted
        && r.bitmaps
            .unwrap_or_else(|| bsa_index::bitmaps::worth_storing(n, set_bits, touched));

    let mut builder = IndexBuilder::new(bits, &codes)
        .overwrite(r.overwrite)
        .on_wait(on_wait)
        .progress(progress)
        .extra(serde_json::json!({
            "bsa_version": env!("CARGO_PKG_VERSION"),
            "source": if model_source { "model" } else { "codes" },
            "data": r.data_name,
            "graph_on": r.hnsw.map(|_| graph_on.name()),
            "inverted": {
                "built": inverted,
                "requested": match r.inverted { Some(true) => "yes", Some(false) => "no", None => "auto" },
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
    if let Some(ids) = r.ids {
        builder = builder.ids(ids);
    }
    if let BuildSource::Model { file, .. } = r.source {
        builder = builder.model_file(file);
    }
    if let (Some(dtype), Some(d)) = (r.vectors, &data) {
        let values = d.as_slice().expect("standard layout");
        builder = builder.vectors(values, d.ncols()).vector_dtype(dtype);
    }
    if let Some(h) = r.hnsw {
        builder = builder.hnsw(h);
        match (graph_on, decoded, &data) {
            (GraphOn::Decoded, Some(x), _) => builder = builder.graph_on_vectors(x),
            (GraphOn::Data, _, Some(d)) => {
                builder = builder.graph_on(d.as_slice().expect("standard layout"), d.ncols());
            }
            _ => {}
        }
    }
    if let Some(stop) = r.stop {
        builder = builder.stop_when(stop);
    }
    if let Some(timeout) = r.lock_timeout {
        builder = builder.lock_timeout(timeout);
    }
    builder.build(out)?;
    Ok(Built {
        n,
        bits,
        inverted,
        bitmaps,
    })
}

/// Encodes the rows of `x` with `model` as an index stores them, a chunk of rows at a time
/// ([`Autoencoder::encode_chunks_until`]): their packed codes and the norms of their decoded
/// vectors, what `bsa build` and `bsa add` store. `decoded` gets each chunk's decoded vectors
/// (for a graph on them) before the next chunk is encoded, so neither the set-bit lists of
/// every row (~790 bytes a row of sign codes, 48 packed) nor every decoded row are held at
/// once. A stop is noticed between chunks: dense codes take seconds per 100,000 rows.
pub(crate) fn encode_rows(
    model: &Autoencoder,
    x: ArrayView2<f32>,
    stop: Option<&AtomicBool>,
    decoded: &mut dyn FnMut(ArrayView2<f32>) -> Result<()>,
) -> Result<(Vec<u64>, Vec<f32>)> {
    let bits = model.config.bits;
    let mut words = Vec::with_capacity(x.nrows() * pack::words_per_code(bits));
    let mut norms = Vec::with_capacity(x.nrows());
    let never = AtomicBool::new(false);
    model.encode_chunks_until(x, stop.unwrap_or(&never), &mut |chunk| {
        words.extend(pack::pack_set_bits(chunk, bits)?);
        let xhat = model.params.decode_sparse(chunk);
        norms.extend(Params::row_norms(xhat.view()));
        decoded(xhat.view())
    })?;
    Ok((words, norms))
}

fn nothing_to_index() -> Error {
    Error::InvalidArgument("0 rows; there is nothing to index".into())
}

/// The settings `bsa train --preset retrieval` names: binary matching pursuit with N = 4096
/// atoms, K = 32 per code, 6 rounds (each overridable).
pub fn retrieval_preset(bits: Option<usize>, k: Option<usize>) -> PursuitParams {
    PursuitParams::new(bits.unwrap_or(4096), k.unwrap_or(32))
}

/// The vectors `model` decodes from packed codes (`rows x cols` bytes, row-major, numpy
/// `packbits(bitorder="little")`; `cols` must be `ceil(bits / 8)`), `rows x dim`.
pub fn decode_packed(
    model: &Autoencoder,
    bytes: &[u8],
    rows: usize,
    cols: usize,
) -> Result<Array2<f32>> {
    decode_packed_until(model, bytes, rows, cols, &AtomicBool::new(false))
}

/// [`decode_packed`] that returns [`Error::Stopped`] once `stop` is set (checked before each
/// block of 8192 rows), so that a long decoding can be interrupted (Python's `Model.decode` on
/// Ctrl-C). Each row's vector depends on that row's code alone: blocks change nothing.
///
/// ```
/// use std::sync::atomic::AtomicBool;
/// let x = ndarray::Array2::from_shape_fn((40, 8), |(i, j)| ((i * 7 + j * 3) % 5) as f32 - 2.0);
/// let params = bsa::baselines::BaselineParams::new(bsa::model::Method::Lsh, 16);
/// let (model, _) = params.fit(x.view()).unwrap();
/// let codes = vec![0b1010_0001u8, 0x0f].repeat(3); // 3 codes of 16 bits
/// let all = bsa::pipeline::decode_packed(&model, &codes, 3, 2).unwrap();
/// assert_eq!(all.dim(), (3, 8));
/// let stop = AtomicBool::new(true);
/// let stopped = bsa::pipeline::decode_packed_until(&model, &codes, 3, 2, &stop);
/// assert!(matches!(stopped, Err(bsa::Error::Stopped)));
/// ```
pub fn decode_packed_until(
    model: &Autoencoder,
    bytes: &[u8],
    rows: usize,
    cols: usize,
    stop: &AtomicBool,
) -> Result<Array2<f32>> {
    let bits = model.config.bits;
    let want = pack::bytes_per_code(bits);
    if cols != want {
        return Err(Error::DimMismatch {
            what: format!("bytes per code (the model makes {bits}-bit codes)"),
            expected: want,
            got: cols,
        });
    }
    let words = pack::pack_le_bytes(bytes, rows, cols, bits)?;
    const BLOCK: usize = 8192;
    let mut out = Array2::zeros((rows, model.config.dim));
    let per_block = BLOCK * pack::words_per_code(bits);
    for (block, mut out) in words
        .chunks(per_block.max(1))
        .zip(out.axis_chunks_iter_mut(ndarray::Axis(0), BLOCK))
    {
        bsa_index::check_stop(Some(stop))?;
        out.assign(&model.params.decode_sparse(&active_bits(block, bits)));
    }
    Ok(out)
}

/// The set bits of each packed code (`ceil(bits / 64)` words each), ascending: the codes as
/// the model's sparse decoder takes them.
pub fn active_bits(words: &[u64], bits: usize) -> Vec<Vec<u32>> {
    words
        .chunks_exact(pack::words_per_code(bits))
        .map(|code| {
            (0..bits)
                .filter(|&j| pack::get_bit(code, j))
                .map(|j| j as u32)
                .collect()
        })
        .collect()
}

/// Refuses ids above `i64::MAX`: bsa returns ids as int64 (to Python and numpy; FAISS and
/// Milvus ids are int64 too), so an index holding one could not be searched or changed from
/// Python. The library below (`bsa_index`) takes any `u64`. `name` is what the caller calls
/// the ids (`ids`, `--ids`'s file).
///
/// ```
/// assert!(bsa::pipeline::check_ids_fit_int64("ids", &[0, 7, i64::MAX as u64]).is_ok());
/// let e = bsa::pipeline::check_ids_fit_int64("ids", &[3, 1 << 63]).unwrap_err();
/// assert!(e.to_string().contains("ids[1] is 9223372036854775808"));
/// ```
pub fn check_ids_fit_int64(name: &str, ids: &[u64]) -> Result<()> {
    match ids.iter().position(|&v| v > i64::MAX as u64) {
        None => Ok(()),
        Some(i) => Err(Error::InvalidArgument(format!(
            "{name}[{i}] is {}; ids must be below 2^63 (searches return them as int64)",
            ids[i]
        ))),
    }
}

/// `bsa::query` on an index built here (a test of the query module that needs this one's
/// builder, kept here so that `query` does not import `pipeline`).
#[cfg(test)]
mod query_tests {
    use super::{BuildRequest, BuildSource, build_index};
    use std::sync::atomic::AtomicBool;

    use crate::error::{Error, Result};
    use crate::model::Autoencoder;
    use crate::pursuit::PursuitParams;
    use crate::query::{Queries, Request, index_model, search, search_until};
    use bsa_index::live::{IdFilter, Snapshot};
    use bsa_index::{HnswParams, VectorDtype};
    use ndarray::Array2;
    use rand::{Rng, SeedableRng};

    fn unit_rows(n: usize, dim: usize, seed: u64) -> Array2<f32> {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut x = Array2::from_shape_fn((n, dim), |_| rng.random::<f32>() - 0.5);
        for mut r in x.rows_mut() {
            let norm = r.dot(&r).sqrt();
            r /= norm;
        }
        x
    }

    #[test]
    fn decoding_in_blocks_gives_each_rows_vector() -> Result<()> {
        // More rows than a block (8192): the blocks' vectors are those of one whole decode.
        let x = unit_rows(300, 16, 3);
        let (model, _) =
            crate::baselines::BaselineParams::new(crate::model::Method::Lsh, 24).fit(x.view())?;
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(4);
        let rows = 8192 * 2 + 5;
        let bytes: Vec<u8> = (0..rows * 3).map(|_| rng.random()).collect();
        let whole = {
            let words = bsa_index::pack::pack_le_bytes(&bytes, rows, 3, 24)?;
            model.params.decode_sparse(&super::active_bits(&words, 24))
        };
        assert_eq!(super::decode_packed(&model, &bytes, rows, 3)?, whole);
        Ok(())
    }

    /// An index of 400 pursuit codes (64 bits, K = 4) of 16-d rows with vectors, posting lists
    /// and a graph on the decoded codes, in the returned folder, opened, with its model.
    fn pursuit_index() -> Result<(tempfile::TempDir, Snapshot, Autoencoder)> {
        let base = unit_rows(400, 16, 1);
        let params = PursuitParams::new(64, 4);
        let (dictionary, _) = params.fit(base.view(), &mut |_| {})?;
        let model = params.model(16, dictionary);
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join("m.safetensors");
        crate::io::model::save(&file, &model, &serde_json::Value::Null)?;
        let mut build = BuildRequest::new(BuildSource::Model {
            model: &model,
            file: &file,
        });
        build.data = Some(base.view());
        build.vectors = Some(VectorDtype::F32);
        build.inverted = Some(true);
        build.hnsw = Some(HnswParams {
            max_connections: 8,
            ef_construction: 32,
            ef_search: 32,
        });
        build_index(&build, dir.path().join("idx"), |_, _| {})?;
        let index = Snapshot::open(dir.path().join("idx"))?;
        let model = index_model(&index)?.expect("the index keeps its model");
        Ok((dir, index, model))
    }

    /// Posting lists are built by default when they pay, except for matching-pursuit codes,
    /// which ADC searches without them: such an index keeps its codes, ids and norms only,
    /// unless lists are asked for.
    #[test]
    fn pursuit_codes_get_posting_lists_only_when_asked() -> Result<()> {
        let base = unit_rows(400, 16, 5);
        let (dictionary, _) = PursuitParams::new(256, 4).fit(base.view(), &mut |_| {})?;
        let pursuit = PursuitParams::new(256, 4).model(16, dictionary);
        let mut topk = pursuit.clone();
        topk.config.method = crate::model::Method::Topk;
        let dir = tempfile::tempdir().expect("temporary directory");
        let built = |model: &Autoencoder, inverted: Option<bool>, name: &str| {
            let file = dir.path().join(format!("{name}.safetensors"));
            crate::io::model::save(&file, model, &serde_json::Value::Null)?;
            let mut build = BuildRequest::new(BuildSource::Model { model, file: &file });
            build.data = Some(base.view());
            build.inverted = inverted;
            build_index(&build, dir.path().join(name), |_, _| {})
        };
        // The rule would build lists for these codes: the test can fail.
        let codes = bsa_index::pack::pack_set_bits(&pursuit.encode_active(base.view()), 256)?;
        assert!(bsa_index::postings::pays_off(&codes, 256).0);
        let plain = built(&pursuit, None, "pursuit")?;
        assert!(!plain.inverted && !plain.bitmaps);
        let files: Vec<String> = std::fs::read_dir(dir.path().join("pursuit"))
            .expect("the index folder")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert!(
            !files
                .iter()
                .any(|f| f.starts_with("inverted") || f.starts_with("bitmaps"))
        );
        assert!(built(&pursuit, Some(true), "asked")?.inverted);
        assert!(built(&topk, None, "topk")?.inverted);
        Ok(())
    }

    /// A query server on the search crate alone (`Snapshot::query_model`: codes and tables
    /// without BLAS, then `Snapshot::search` and `rescore`) answers float queries as
    /// [`search`] does, bit for bit: Hamming by code, ADC and soft by their tables, with and
    /// without rescoring, in the exact modes and on the graph.
    #[test]
    fn the_search_crate_alone_answers_float_queries_as_bsa_search() -> Result<()> {
        use bsa_index::live::SearchOptions;
        use bsa_index::model::per_unit_query;
        use bsa_index::{Mode, Score, pack};
        let (_dir, index, model) = pursuit_index()?;
        let server = index.query_model()?.expect("the index keeps its model");
        let q = unit_rows(12, 16, 3);
        let w = server.weights();
        let codes = pack::pack_set_bits(&server.encode(q.view())?, index.bits())?;
        let cases = [
            ("hamming", "flat", None),
            ("hamming", "inverted", None),
            ("adc", "flat", None),
            ("adc", "hnsw", None),
            ("adc", "flat", Some(3)),
            ("adc", "hnsw", Some(3)),
            ("soft", "flat", None),
        ];
        for (score, mode, rescore) in cases {
            let request = Request::new(5).score(score)?.mode(mode)?.rescore(rescore);
            let want = search(&index, Some(&model), Queries::Floats(q.view()), &request)?;
            // The search crate's own search with its own model: the same bytes.
            let floats = Queries::Floats(q.view());
            let alone = bsa_index::query::search(&index, Some(server.view()), floats, &request)?;
            assert_eq!(alone.hits, want.hits, "{score} {mode} {rescore:?}");
            let (tables, offsets) = match (score, rescore) {
                ("adc", None) => per_unit_query(w.adc_tables(q.view())?, q.view()),
                ("adc", Some(_)) => w.adc_candidate_unit_tables(q.view())?,
                ("soft", _) => w.soft_tables(q.view())?,
                _ => (Vec::new(), Vec::new()),
            };
            let by = match score {
                "hamming" => Score::Hamming,
                _ => Score::Table {
                    tables: &tables,
                    offsets: &offsets,
                    normalise: score == "adc",
                },
            };
            let fetch = 5 * rescore.unwrap_or(1);
            let mode = Mode::parse(mode)?;
            let (mut got, _) =
                index.search(&codes, fetch, &by, &mode, &SearchOptions::default())?;
            if rescore.is_some() {
                got = index.rescore_batch(q.as_slice().unwrap(), &got, 5)?;
            }
            let case = format!("{score} {mode:?} rescore {rescore:?}");
            for (a, b) in got.iter().zip(&want.hits) {
                assert_eq!(a.ids, b.ids, "{case}");
                let bits = |s: &Option<Vec<f32>>| {
                    s.as_ref()
                        .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
                };
                assert_eq!(bits(&a.scores), bits(&b.scores), "{case}");
                if score == "hamming" {
                    assert_eq!(a.distances, b.distances, "{case}");
                }
            }
            assert_eq!(got.len(), want.hits.len());
        }
        Ok(())
    }

    /// A snapshot's query model is the model its manifest names: after a rebuild put another
    /// model of the same size in its place, the old snapshot refuses to encode with it (and
    /// says to open the index again) while a new snapshot reads it; a model damaged in place is
    /// a checksum error.
    #[test]
    fn a_snapshots_query_model_is_the_one_its_manifest_names() -> Result<()> {
        let (dir, old, _) = pursuit_index()?;
        let before = old.query_model()?.expect("a model");
        let unread = Snapshot::open(dir.path().join("idx"))?;
        // A change that keeps the model file: the snapshot reopened shares the model read.
        bsa_index::live::Writer::open(dir.path().join("idx"))?.delete(&[0])?;
        let skim = bsa_index::OpenOptions::verify_checksums(false);
        let fresh = old.reopen(skim)?.expect("a new generation");
        assert!(std::sync::Arc::ptr_eq(
            &fresh.query_model()?.unwrap(),
            &before
        ));
        let params = PursuitParams::new(64, 4);
        let (dictionary, _) = params.fit(unit_rows(400, 16, 9).view(), &mut |_| {})?;
        let other = params.model(16, dictionary);
        let file = dir.path().join("other.safetensors");
        crate::io::model::save(&file, &other, &serde_json::Value::Null)?;
        let base = unit_rows(400, 16, 1);
        let mut build = BuildRequest::new(BuildSource::Model {
            model: &other,
            file: &file,
        });
        build.data = Some(base.view());
        build.overwrite = true;
        build_index(&build, dir.path().join("idx"), |_, _| {})?;
        // The old snapshot keeps the model it read (its codes' model, shared by later calls);
        // one that had not read it yet, and the check of the file, say the file is now the
        // rebuild's, not "damaged".
        assert!(std::sync::Arc::ptr_eq(
            &old.query_model()?.unwrap(),
            &before
        ));
        // bsa's own reader of it (bsa search, Python) too: it read the rebuild's model, of
        // the same shape, and encoded queries the old codes do not answer.
        let bsa_reader = index_model(&unread).map(|m| m.is_some()).unwrap_err();
        for e in [
            unread.query_model().unwrap_err().to_string(),
            bsa_reader.to_string(),
            old.verify_model().unwrap_err().to_string(),
            old.verify_checksums().unwrap_err().to_string(),
        ] {
            assert!(
                e.contains(
                    "after this snapshot of it was opened (a rebuild); open the index again"
                ),
                "{e}"
            );
        }
        let new = Snapshot::open(dir.path().join("idx"))?;
        let model = new.query_model()?.expect("a model");
        assert_eq!(model.weights().wd_t, other.params.wd_t.view());
        // A search refuses the other index's model (same size: only its file tells), and a
        // hand-made view no model file gives; the new model searches.
        let q = unit_rows(3, 16, 4);
        let floats = Queries::Floats(q.view());
        let request = Request::new(5).score("adc")?;
        let search = |m| bsa_index::query::search(&new, Some(m), floats, &request);
        let e = search(before.view()).unwrap_err().to_string();
        assert!(
            e.contains("the model given is not this index's model"),
            "{e}"
        );
        assert_eq!(search(model.view())?.hits.len(), 3);
        // Without it: the index has one, so the caller is told to pass it, not to rebuild.
        let e = bsa_index::query::search(&new, None, floats, &request).unwrap_err();
        assert!(
            e.to_string()
                .contains("need the index's model, and none was given"),
            "{e}"
        );
        let mut view = model.view();
        view.rule = bsa_index::model::Rule::Pursuit(0);
        let e = search(view).unwrap_err().to_string();
        assert!(e.contains("k = 0 set bits of 64"), "{e}");
        let zero = Request::new(0);
        let e = bsa_index::query::search(&new, Some(model.view()), floats, &zero).unwrap_err();
        assert!(e.to_string().contains("k must be at least 1"), "{e}");
        // Queries of no columns are of the wrong width, not "zero vectors", under every score.
        let empty = ndarray::Array2::<f32>::zeros((2, 0));
        for score in ["adc", "soft", "hamming"] {
            let request = Request::new(5).score(score)?.rescore(Some(2));
            let e = bsa_index::query::search(
                &new,
                Some(model.view()),
                Queries::Floats(empty.view()),
                &request,
            )
            .unwrap_err();
            assert!(
                matches!(
                    e,
                    bsa_index::Error::DimMismatch {
                        expected: 16,
                        got: 0,
                        ..
                    }
                ),
                "{score}: {e}"
            );
        }
        let path = new.model_path().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        // Read before the damage: kept. Read after it: refused.
        assert!(new.query_model().is_ok());
        let later = Snapshot::open_with(dir.path().join("idx"), skim)?;
        let e = later.query_model().unwrap_err();
        assert!(matches!(e, bsa_index::Error::Checksum { .. }), "{e}");
        // The whole directory removed: said so, not blamed on a compaction.
        std::fs::remove_dir_all(dir.path().join("idx")).unwrap();
        let e = later.verify_checksums().unwrap_err().to_string();
        assert!(
            e.contains("was removed (or moved) after this snapshot"),
            "{e}"
        );
        Ok(())
    }

    /// Without distances, a table score of float queries skips encoding them: the same ids and
    /// scores in every mode (rescored or not), and no distance pretends to be one.
    #[test]
    fn table_scores_without_distances_rank_the_same() -> Result<()> {
        let (_dir, index, model) = pursuit_index()?;
        let queries = unit_rows(12, 16, 2);
        let cases = [
            ("adc", "flat", None),
            ("adc", "flat", Some(3)),
            ("adc", "inverted", None),
            ("adc", "hnsw", None),
            ("adc", "hnsw", Some(3)),
            ("soft", "flat", None),
        ];
        let run = |r: &Request| search(&index, Some(&model), Queries::Floats(queries.view()), r);
        for (score, mode, rescore) in cases {
            let request = Request::new(5).score(score)?.mode(mode)?.rescore(rescore);
            let with = run(&request)?;
            let without = run(&request.distances(false))?;
            let case = format!("{score} {mode} {rescore:?}");
            assert!(with.encode_seconds > 0.0, "{case}");
            assert_eq!(without.encode_seconds, 0.0, "{case}");
            for (a, b) in with.hits.iter().zip(&without.hits) {
                assert_eq!((&a.ids, &a.scores), (&b.ids, &b.scores), "{case}");
                assert_eq!(a.ids.len(), 5, "{case}");
                assert!(a.distances.iter().all(|&d| d <= 64), "{case}");
                assert!(b.distances.iter().all(|&d| d == u32::MAX), "{case}");
            }
        }
        // Scores that rank by the query's code still encode it.
        let found = run(&Request::new(5).distances(false))?;
        assert!(found.hits[0].distances.iter().all(|&d| d <= 64));
        Ok(())
    }

    /// A search given a stop flag runs in batches of queries (a graph search in groups per
    /// thread): the hits of one whole batch, in every mode and score, filtered or in a range; a
    /// set flag stops it.
    #[test]
    fn batched_searches_give_the_hits_of_one_batch() -> Result<()> {
        let (_dir, index, model) = pursuit_index()?;
        // 700 queries: three batches of 256 (the size a stoppable search takes over about 1M
        // codes).
        let queries = unit_rows(700, 16, 3);
        let deny: Vec<u64> = (0..400).step_by(3).collect();
        let filters = [None, Some(IdFilter::Deny(&deny))];
        let cases = [
            Request::new(5),
            Request::new(5).score("adc")?,
            Request::new(5).score("adc")?.rescore(Some(3)),
            Request::new(5).score("adc")?.mode("hnsw")?,
            Request::new(5).score("adc")?.mode("hnsw")?.rescore(Some(3)),
            Request::new(5).score("soft")?.mode("inverted")?,
            Request::new(5).score("cosine")?.min_score(Some(0.3)),
            Request::new(usize::MAX).max_distance(Some(6)),
        ];
        let never = AtomicBool::new(false);
        crate::threads::with_threads(2, || -> Result<()> {
            for (request, filter) in cases.iter().flat_map(|r| filters.map(|f| (r, f))) {
                let q = Queries::Floats(queries.view());
                let one = search_until(&index, Some(&model), q, request, filter, None)?;
                // Graph searches hand each thread groups of at most the batch (13: groups
                // that end inside another's rows).
                for batch in [256, 13] {
                    let batched = bsa_index::query::search_batched(
                        &index,
                        Some(model.view()),
                        q,
                        request,
                        filter,
                        Some(&never),
                        Some(batch),
                    )?;
                    assert_eq!(one.hits, batched.hits, "{request:?} {filter:?} {batch}");
                    for counter in ["postings_visited", "nodes_visited"] {
                        assert_eq!(
                            one.stats.counter(counter),
                            batched.stats.counter(counter),
                            "{request:?} {filter:?} {batch} {counter}"
                        );
                    }
                }
            }
            let stop = AtomicBool::new(true);
            let q = Queries::Floats(queries.view());
            let stopped = search_until(&index, Some(&model), q, &cases[0], None, Some(&stop));
            assert!(matches!(stopped, Err(Error::Stopped)), "{stopped:?}");
            Ok(())
        })
    }
}
