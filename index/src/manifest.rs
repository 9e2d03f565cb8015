//! `manifest.json`: what an index directory contains. Written last; its rename is the commit.
//!
//! The file is a small JSON envelope around the manifest body:
//!
//! ```json
//! { "format": "bsa-index", "format_version": 1, "crc32": 123456789, "manifest": { ... } }
//! ```
//!
//! `crc32` is the CRC-32 (IEEE) of the exact bytes of the `manifest` value as they appear in the
//! file, so any edit of the body is detected. See FORMAT.md for every field.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::format::{FORMAT_VERSION, OLDEST_READABLE};

/// Name of the manifest file inside an index directory.
pub const MANIFEST_FILE: &str = "manifest.json";

pub use crate::lock_note::LOCK_FILE;
/// Value of the envelope's `format` field.
pub const FORMAT_NAME: &str = "bsa-index";
/// Format version of a segmented index directory ([`crate::live`]): its `manifest.json` lists
/// segments, each a directory in the single-segment format ([`FORMAT_VERSION`]). Readers that
/// predate it refuse it by its version, so they never miss rows or return deleted ones.
pub const SEGMENTED_FORMAT_VERSION: u32 = 2;
/// Largest manifest this build reads (guards against reading a huge wrong file).
pub const MAX_MANIFEST_LEN: u64 = 64 << 20;
/// Incompatible features this build understands (none in format v1). A manifest listing any other
/// name in `incompat_features` is refused.
pub const KNOWN_INCOMPAT_FEATURES: &[&str] = &[];

/// Length and checksum of one file of the index.
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("idx");
/// let m = bsa_index::IndexBuilder::new(64, &[1, 2, 3]).build(&path)?;
/// for (name, info) in &m.files {
///     // The manifest knows every file's length, so a truncated copy is caught at open.
///     assert_eq!(std::fs::metadata(path.join(name)).unwrap().len(), info.len);
/// }
/// assert_eq!(m.files["codes.bin"].len, 64 + 3 * 8); // header + three one-word codes
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FileInfo {
    /// File length in bytes.
    pub len: u64,
    /// CRC-32 (IEEE) of the whole file.
    pub crc32: u32,
}

/// One immutable run of rows. Format v1 writes (and reads) exactly one segment; the list exists so
/// that appending codes can later add segments without rewriting the existing files.
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let m = bsa_index::IndexBuilder::new(64, &[1, 2, 3]).build(dir.path().join("idx"))?;
/// assert_eq!(m.segments.len(), 1);
/// let seg = &m.segments[0];
/// assert_eq!(seg.rows, m.n);
/// assert_eq!((seg.codes.as_str(), seg.ids.as_str()), ("codes.bin", "ids.bin"));
/// assert_eq!(seg.vectors, None); // no vectors given
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Segment {
    /// Number of rows in the segment.
    pub rows: u64,
    /// File name of the segment's codes.
    pub codes: String,
    /// File name of the segment's external ids.
    pub ids: String,
    /// File name of the segment's float vectors, if stored.
    pub vectors: Option<String>,
}

/// Element type of the stored float vectors.
///
/// ```
/// use bsa_index::{IndexBuilder, VectorDtype};
/// # fn main() -> bsa_index::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let vectors = [0.6f32, 0.8, 1.0, 0.0]; // two 2-d vectors
/// let m = IndexBuilder::new(64, &[1, 2])
///     .vectors(&vectors, 2)
///     .vector_dtype(VectorDtype::F16)
///     .build(dir.path().join("idx"))?;
/// assert_eq!(m.vectors.unwrap().dtype, VectorDtype::F16);
/// assert_eq!(m.files["vectors.bin"].len, 64 + 2 * 2 * 2); // two bytes per element
/// assert_eq!(VectorDtype::F16.to_string(), "f16");
/// # Ok(()) }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorDtype {
    /// 32-bit floats.
    F32,
    /// 16-bit floats (half the size; scores differ from f32 by the rounding of the stored values).
    F16,
}

impl VectorDtype {
    /// The element kind of `vectors.bin`'s header for vectors of this type.
    pub(crate) fn elem_kind(self) -> crate::format::ElemKind {
        match self {
            VectorDtype::F32 => crate::format::ElemKind::F32,
            VectorDtype::F16 => crate::format::ElemKind::F16,
        }
    }
}

impl std::fmt::Display for VectorDtype {
    /// As the manifest spells it: `f32` or `f16`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VectorDtype::F32 => "f32",
            VectorDtype::F16 => "f16",
        })
    }
}

/// The stored float vectors.
///
/// ```
/// use bsa_index::{IndexBuilder, VectorDtype};
/// # fn main() -> bsa_index::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let vectors = [1.0f32, 0.0, 0.0, /* row 1 */ 0.0, 1.0, 0.0];
/// let m = IndexBuilder::new(64, &[1, 2]).vectors(&vectors, 3).build(dir.path().join("idx"))?;
/// let info = m.vectors.unwrap();
/// assert_eq!((info.dim, info.dtype), (3, VectorDtype::F32)); // f32 unless asked otherwise
/// assert_eq!(m.segments[0].vectors.as_deref(), Some("vectors.bin"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VectorsInfo {
    /// Dimension of each vector.
    pub dim: u32,
    /// Element type on disk.
    pub dtype: VectorDtype,
}

/// HNSW graph parameters.
///
/// ```
/// use bsa_index::{HnswParams, IndexBuilder};
/// # fn main() -> bsa_index::Result<()> {
/// let params = HnswParams { max_connections: 8, ..HnswParams::default() };
/// assert_eq!((params.ef_construction, params.ef_search), (200, 64));
/// let codes: Vec<u64> = (0..50u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
/// let dir = tempfile::tempdir().unwrap();
/// let m = IndexBuilder::new(64, &codes).hnsw(params).build(dir.path().join("idx"))?;
/// assert_eq!(m.hnsw.unwrap().params, params); // recorded for rebuilds and searches
/// assert_eq!(m.build.hnsw, Some(params));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Maximum connections per node and layer (`M`; layer 0 keeps up to 2M). 2..=255.
    pub max_connections: usize,
    /// Candidate list size while building (`ef_construction`).
    pub ef_construction: usize,
    /// Default candidate list size while searching (`ef_search`), overridable per search.
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            max_connections: 32,
            ef_construction: 200,
            ef_search: 64,
        }
    }
}

/// The stored HNSW graph.
///
/// ```
/// use bsa_index::{HnswParams, IndexBuilder};
/// use bsa_index::manifest::GraphMetric;
/// # fn main() -> bsa_index::Result<()> {
/// let codes: Vec<u64> = (0..50u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("idx");
/// let m = IndexBuilder::new(64, &codes).hnsw(HnswParams::default()).build(&path)?;
/// let info = m.hnsw.unwrap();
/// assert_eq!(info.native.as_deref(), Some("graph.bin")); // searched in place
/// assert!(m.files.contains_key(&info.graph) && m.files.contains_key(&info.data));
/// assert!(m.graph.is_none()); // a graph over the codes, not over float vectors
/// let index = bsa_index::Index::open(&path)?;
/// assert_eq!(index.graph_metric(), Some(GraphMetric::Hamming));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HnswInfo {
    /// hnsw_rs dump basename (files `<basename>.hnsw.graph` and `<basename>.hnsw.data`).
    pub basename: String,
    /// Graph file name.
    pub graph: String,
    /// Data file name.
    pub data: String,
    /// Parameters used to build the graph.
    pub params: HnswParams,
    /// The same graph as flat neighbour lists (`graph.bin`, searched in place), if stored.
    /// Absent from indexes written before it existed; those convert the hnsw_rs dump on load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<String>,
}

/// A graph built natively on float vectors (`graph.bin`), searched with table scores such as
/// bsa's decoder ADC. Old readers ignore this field (they see no graph).
///
/// ```
/// use bsa_index::manifest::GraphMetric;
/// use bsa_index::{HnswParams, IndexBuilder};
/// # fn main() -> bsa_index::Result<()> {
/// let vectors: Vec<f32> = (0..40).map(|i| ((i * 7) % 11) as f32 - 5.0).collect(); // 10 x 4
/// let codes: Vec<u64> = (0..10).collect();
/// let dir = tempfile::tempdir().unwrap();
/// let m = IndexBuilder::new(64, &codes)
///     .hnsw(HnswParams::default())
///     .graph_on(&vectors, 4)
///     .build(dir.path().join("idx"))?;
/// let g = m.graph.unwrap();
/// assert_eq!((g.file.as_str(), g.metric, g.dim), ("graph.bin", GraphMetric::Cosine, 4));
/// assert!(m.hnsw.is_none()); // an index has at most one graph
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GraphInfo {
    /// Graph file name (`graph.bin`).
    pub file: String,
    /// What the graph's neighbours are nearest by.
    pub metric: GraphMetric,
    /// Dimension of the vectors it was built on.
    pub dim: u32,
    /// Parameters used to build the graph.
    pub params: HnswParams,
}

/// What a graph's neighbours are nearest by, so a search can refuse a score the graph was not
/// built for.
///
/// ```
/// use bsa_index::manifest::GraphMetric;
/// use bsa_index::{HnswParams, Index, IndexBuilder};
/// # fn main() -> bsa_index::Result<()> {
/// let vectors: Vec<f32> = (0..40).map(|i| ((i * 7) % 11) as f32 - 5.0).collect(); // 10 x 4
/// let codes: Vec<u64> = (0..10).collect();
/// let dir = tempfile::tempdir().unwrap();
/// let (plain, on_vectors) = (dir.path().join("plain"), dir.path().join("cosine"));
/// IndexBuilder::new(64, &codes).build(&plain)?;
/// IndexBuilder::new(64, &codes)
///     .hnsw(HnswParams::default())
///     .graph_on(&vectors, 4)
///     .build(&on_vectors)?;
/// assert_eq!(Index::open(&plain)?.graph_metric(), None);
/// assert_eq!(Index::open(&on_vectors)?.graph_metric(), Some(GraphMetric::Cosine));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum GraphMetric {
    /// Hamming distance between the codes (the hnsw_rs graph).
    Hamming,
    /// Cosine similarity between float vectors (decoded codes or embeddings): the graph for
    /// table scores (ADC).
    Cosine,
}

/// The model file copied into the index (read by [`crate::model`] for float queries).
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let src = dir.path().join("encoder-v3.safetensors");
/// std::fs::write(&src, b"model bytes").unwrap(); // copied as it is: read only by queries
/// let path = dir.path().join("idx");
/// let m = bsa_index::IndexBuilder::new(64, &[1, 2]).model_file(&src).build(&path)?;
/// let info = m.model.unwrap();
/// assert_eq!(info.file, "model.safetensors");
/// assert_eq!(info.original_name, "encoder-v3.safetensors");
/// assert_eq!(std::fs::read(path.join(&info.file)).unwrap(), b"model bytes");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ModelInfo {
    /// File name inside the index directory.
    pub file: String,
    /// File name of the source the model was copied from.
    pub original_name: String,
}

/// The stored posting lists (`inverted.bin`), optional.
///
/// Old v1 readers ignore this field and the file (it is listed under `files`, so their `verify`
/// still checks its checksum).
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// let codes = [0b1011u64, 1 << 63, 0, 0b1];
/// let dir = tempfile::tempdir().unwrap();
/// let m = bsa_index::IndexBuilder::new(64, &codes).inverted(true).build(dir.path().join("i"))?;
/// let info = m.inverted.unwrap();
/// assert_eq!(info.file, "inverted.bin");
/// // One posting per set bit: 3 + 1 + 0 + 1.
/// let set_bits: u32 = codes.iter().map(|c| c.count_ones()).sum();
/// assert_eq!(info.postings, u64::from(set_bits));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InvertedInfo {
    /// File name inside the index directory.
    pub file: String,
    /// Total number of postings (set bits over all codes).
    pub postings: u64,
}

/// The stored set bits of each code (`sparse.bin`), optional (see [`crate::sparse`]).
///
/// Old v1 readers ignore this field and the file (it is listed under `files`).
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// let codes = [0b1011u64, 0, /* row 1 */ 0, 1 << 63]; // two 128-bit codes
/// let dir = tempfile::tempdir().unwrap();
/// let m = bsa_index::IndexBuilder::new(128, &codes)
///     .sparse(Some(true))
///     .build(dir.path().join("i"))?;
/// let info = m.sparse.unwrap();
/// assert_eq!((info.file.as_str(), info.set_bits), ("sparse.bin", 4));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SparseInfo {
    /// File name inside the index directory.
    pub file: String,
    /// Total number of set bits over all codes.
    pub set_bits: u64,
}

/// Posting lists stored as bitmaps over rows (`bitmaps.bin`), optional (see
/// [`crate::bitmaps`]). Old v1 readers ignore this field and the file (it is listed under
/// `files`).
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// let codes = [0b1011u64, 1 << 63, 0, 0b1];
/// let dir = tempfile::tempdir().unwrap();
/// let m = bsa_index::IndexBuilder::new(64, &codes)
///     .inverted(true)
///     .bitmaps(Some(true))
///     .build(dir.path().join("i"))?;
/// let info = m.bitmaps.unwrap();
/// assert_eq!((info.file.as_str(), info.set_bits), ("bitmaps.bin", 5));
/// assert_eq!(info.set_bits, m.inverted.unwrap().postings); // the same bits, another layout
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BitmapsInfo {
    /// File name inside the index directory.
    pub file: String,
    /// Total number of set bits over all codes.
    pub set_bits: u64,
}

/// The stored per-code norms (`norms.bin`), optional: one `f32` per code, used by normalised
/// table scores (bsa stores the norm of each code's decoded vector, for ADC).
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("i");
/// let m = bsa_index::IndexBuilder::new(64, &[1, 3]).norms(&[1.0, 1.5]).build(&path)?;
/// assert_eq!(m.norms.unwrap().file, "norms.bin");
/// assert_eq!(bsa_index::Index::open(&path)?.norms(), Some(&[1.0f32, 1.5][..]));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NormsInfo {
    /// File name inside the index directory.
    pub file: String,
}

/// Settings the index was built with, for reproducibility.
///
/// ```
/// # fn main() -> bsa_index::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let m = bsa_index::IndexBuilder::new(64, &[5, 6]).ids(&[100, 200]).build(dir.path().join("i"))?;
/// assert!(m.build.ids_given);
/// assert_eq!(m.build.hnsw, None);
/// assert!(m.build.threads >= 1);
/// let m = bsa_index::IndexBuilder::new(64, &[5, 6]).build(dir.path().join("j"))?;
/// assert!(!m.build.ids_given); // the ids are the row numbers
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct BuildInfo {
    /// Whether external ids were given (otherwise ids are row numbers).
    pub ids_given: bool,
    /// HNSW parameters, if a graph was built.
    pub hnsw: Option<HnswParams>,
    /// Threads in the rayon pool that built the index.
    pub threads: usize,
}

/// The manifest body. Fields marked optional are absent when the part is not stored.
///
/// The manifest [`IndexBuilder::build`](crate::IndexBuilder::build) returns is the one
/// `manifest.json` holds and [`Index::manifest`](crate::Index::manifest) reads back:
///
/// ```
/// use bsa_index::manifest::{Manifest, MANIFEST_FILE};
/// use bsa_index::{Index, IndexBuilder};
/// # fn main() -> bsa_index::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("idx");
/// let codes = [1u64, 0, /* row 1 */ 2, 0, /* row 2 */ 3, 0]; // three 100-bit codes
/// let built = IndexBuilder::new(100, &codes)
///     .extra(serde_json::json!({"encoder": "bsa-v1"}))
///     .build(&path)?;
/// assert_eq!((built.n, built.bits, built.words_per_code), (3, 100, 2));
/// assert_eq!(built.extra["encoder"], "bsa-v1");
/// assert!(built.vectors.is_none() && built.inverted.is_none());
/// assert_eq!(Index::open(&path)?.manifest(), &built);
/// let bytes = std::fs::read(path.join(MANIFEST_FILE)).unwrap();
/// assert_eq!(Manifest::from_bytes(&bytes, &path)?, built);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Manifest {
    /// Format version of the index (from the envelope).
    #[serde(skip)]
    pub format_version: u32,
    /// Version of bsa-index that wrote the index.
    pub bsa_index_version: String,
    /// Number of codes.
    pub n: u64,
    /// Bits per code.
    pub bits: u32,
    /// `u64` words per code, `ceil(bits / 64)`.
    pub words_per_code: u32,
    /// Features a reader must understand to read this index correctly (empty in v1).
    #[serde(default)]
    pub incompat_features: Vec<String>,
    /// Runs of rows; exactly one in v1.
    pub segments: Vec<Segment>,
    /// Stored float vectors, if any.
    pub vectors: Option<VectorsInfo>,
    /// Stored HNSW graph over the codes (Hamming), if any.
    pub hnsw: Option<HnswInfo>,
    /// Stored graph over float vectors (cosine), if any; an index has at most one graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<GraphInfo>,
    /// Model file copied into the index, if any.
    pub model: Option<ModelInfo>,
    /// Posting lists, if stored (absent from manifests written before they existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inverted: Option<InvertedInfo>,
    /// Per-code norms, if stored (absent from manifests written before they existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norms: Option<NormsInfo>,
    /// Per-code set bits, if stored (absent from manifests written before they existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse: Option<SparseInfo>,
    /// Posting lists as bitmaps, if stored (absent from manifests written before they existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitmaps: Option<BitmapsInfo>,
    /// Every file of the index except the manifest, with its length and CRC-32.
    pub files: BTreeMap<String, FileInfo>,
    /// Build settings.
    pub build: BuildInfo,
    /// Free-form JSON set by the application (the bsa CLI records its encoder settings here).
    #[serde(default)]
    pub extra: serde_json::Value,
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    format: &'a str,
    format_version: u32,
    crc32: u32,
    manifest: &'a RawValue,
}

#[derive(Deserialize)]
struct EnvelopeVersion {
    format: Option<String>,
    format_version: Option<u32>,
}

#[derive(Deserialize)]
struct EnvelopeIn<'a> {
    crc32: u32,
    #[serde(borrow)]
    manifest: &'a RawValue,
}

/// The first of `features` outside `known`, as the error that says so: the manifest's checksum
/// held, so it is a newer bsa's feature.
fn unknown_feature(features: &[String], known: &[&str], path: &Path) -> Option<Error> {
    let f = features.iter().find(|f| !known.contains(&f.as_str()))?;
    Some(Error::UnknownFeature {
        path: path.to_path_buf(),
        feature: format!("feature {f:?}"),
    })
}

/// The error of a manifest `body` that did not parse (`e`): a newer bsa's, when the body names
/// an incompatible feature outside `known` (which may bring values this bsa cannot read, a new
/// vector type say), else a corrupt one.
pub(crate) fn unparsed_body(
    body: &str,
    known: &[&str],
    e: serde_json::Error,
    path: &Path,
) -> Error {
    #[derive(Deserialize)]
    struct Features {
        #[serde(default)]
        incompat_features: Vec<String>,
    }
    let features =
        serde_json::from_str::<Features>(body).map_or(Vec::new(), |f| f.incompat_features);
    unknown_feature(&features, known, path)
        .unwrap_or_else(|| Error::corrupt(path, format!("bad manifest body: {e}")))
}

/// The checks every manifest body starts with: no incompatible feature outside `known`, and a
/// code size whose words hold its bits.
pub(crate) fn check_features_and_size(
    features: &[String],
    known: &[&str],
    bits: u32,
    words_per_code: u32,
    path: &Path,
) -> Result<()> {
    if let Some(e) = unknown_feature(features, known, path) {
        return Err(e);
    }
    if bits == 0 || u64::from(words_per_code) != u64::from(bits).div_ceil(64) {
        return Err(Error::corrupt(
            path,
            format!("{words_per_code} words per code cannot hold {bits}-bit codes"),
        ));
    }
    Ok(())
}

/// Checks that a name from the manifest is a plain file name inside the directory. No `:`
/// either (bsa never writes one): on Windows `dir.join("C:x")` leaves `dir`, and `codes.bin:s`
/// names an NTFS stream of another file.
pub(crate) fn check_file_name(name: &str, path: &Path) -> Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name != MANIFEST_FILE
        && !name.contains(['/', '\\', '\0', ':'])
        && name.len() <= 255;
    if ok {
        Ok(())
    } else {
        Err(Error::corrupt(
            path,
            format!("file name {name:?} is not a plain file name"),
        ))
    }
}

/// `body` as JSON inside the checksummed envelope of format version `version`.
pub(crate) fn seal<T: Serialize>(body: &T, version: u32) -> Result<Vec<u8>> {
    let body = serde_json::to_string_pretty(body)
        .map_err(|e| Error::InvalidArgument(format!("manifest cannot be serialised: {e}")))?;
    let crc32 = crc32fast::hash(body.as_bytes());
    let raw = RawValue::from_string(body)
        .map_err(|e| Error::InvalidArgument(format!("manifest cannot be serialised: {e}")))?;
    let env = EnvelopeOut {
        format: FORMAT_NAME,
        format_version: version,
        crc32,
        manifest: &raw,
    };
    let mut out = serde_json::to_vec(&env)
        .map_err(|e| Error::InvalidArgument(format!("manifest cannot be serialised: {e}")))?;
    out.push(b'\n');
    // Refused here, before it is written: a manifest no reader opens would make the index
    // unreadable from this commit on (about 10^5 segments, from many adds kept apart).
    if out.len() as u64 > MAX_MANIFEST_LEN {
        return Err(Error::InvalidArgument(format!(
            "the index's manifest would be {} bytes, more than the {MAX_MANIFEST_LEN} bsa reads; \
             nothing was changed: for an index of many segments, merge them first (bsa \
             compact) or add rows in larger batches; for a build, give it less `extra` metadata",
            out.len()
        )));
    }
    Ok(out)
}

/// The format version an index directory's manifest bytes declare (read from `path`), after
/// checking the envelope's `format` name and that this build reads the version: the single
/// segment format ([`FORMAT_VERSION`]) or the segmented one ([`SEGMENTED_FORMAT_VERSION`]).
///
/// ```
/// use bsa_index::manifest::{manifest_version, Manifest};
/// use bsa_index::Error;
/// use std::path::Path;
/// # fn main() -> bsa_index::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let m = bsa_index::IndexBuilder::new(64, &[1]).build(dir.path().join("i"))?;
/// let path = Path::new("manifest.json");
/// assert_eq!(manifest_version(&m.to_bytes()?, path)?, bsa_index::format::FORMAT_VERSION);
/// let other = br#"{"format": "something-else", "format_version": 1}"#;
/// assert!(matches!(manifest_version(other, path), Err(Error::NotAnIndex { .. })));
/// let future = br#"{"format": "bsa-index", "format_version": 99}"#;
/// assert!(matches!(manifest_version(future, path), Err(Error::Version { found: 99, .. })));
/// # Ok(()) }
/// ```
pub fn manifest_version(bytes: &[u8], path: &Path) -> Result<u32> {
    let head: EnvelopeVersion = serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(path, format!("not valid manifest JSON: {e}")))?;
    if head.format.as_deref() != Some(FORMAT_NAME) {
        return Err(Error::NotAnIndex {
            path: path.to_path_buf(),
        });
    }
    let version = head
        .format_version
        .ok_or_else(|| Error::corrupt(path, "missing format_version"))?;
    if !(OLDEST_READABLE..=SEGMENTED_FORMAT_VERSION).contains(&version) {
        return Err(Error::Version {
            path: path.to_path_buf(),
            found: version,
            oldest: OLDEST_READABLE,
            newest: SEGMENTED_FORMAT_VERSION,
        });
    }
    Ok(version)
}

/// The body of a checksummed envelope (read from `path`), its CRC checked.
pub(crate) fn unseal<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a str> {
    let env: EnvelopeIn = serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(path, format!("bad manifest envelope: {e}")))?;
    let got = crc32fast::hash(env.manifest.get().as_bytes());
    if got != env.crc32 {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            expected: env.crc32,
            got,
        });
    }
    Ok(env.manifest.get())
}

impl Manifest {
    /// The name of the graph's flat neighbour lists (`graph.bin`), if the index has them: a
    /// graph built by this version, or an hnsw_rs dump converted by a later one.
    pub(crate) fn graph_file(&self) -> Option<&String> {
        match (&self.graph, &self.hnsw) {
            (Some(g), _) => Some(&g.file),
            (None, Some(h)) => h.native.as_ref(),
            (None, None) => None,
        }
    }

    /// Serialises the manifest inside its checksummed envelope.
    ///
    /// ```
    /// use bsa_index::manifest::Manifest;
    /// use std::path::Path;
    /// # fn main() -> bsa_index::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let m = bsa_index::IndexBuilder::new(64, &[1, 2]).build(dir.path().join("i"))?;
    /// let bytes = m.to_bytes()?;
    /// assert!(bytes.starts_with(br#"{"format":"bsa-index","format_version":1,"crc32":"#));
    /// assert_eq!(Manifest::from_bytes(&bytes, Path::new("manifest.json"))?, m);
    /// # Ok(()) }
    /// ```
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        seal(self, FORMAT_VERSION)
    }

    /// Parses and validates manifest bytes (read from `path`, used in messages).
    ///
    /// Checks, in order: JSON envelope, `format` name, format version range, body checksum, body
    /// fields, unknown incompatible features, file names, and the internal consistency of
    /// counts and sizes.
    ///
    /// ```
    /// use bsa_index::manifest::Manifest;
    /// use bsa_index::Error;
    /// use std::path::Path;
    /// # fn main() -> bsa_index::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let m = bsa_index::IndexBuilder::new(64, &[1, 2]).build(dir.path().join("i"))?;
    /// let path = Path::new("manifest.json");
    /// let text = String::from_utf8(m.to_bytes()?).unwrap();
    /// // An edit of the body, even one that leaves valid JSON, fails the checksum.
    /// let edited = text.replacen("\"n\": 2", "\"n\": 3", 1);
    /// assert_ne!(edited, text);
    /// let err = Manifest::from_bytes(edited.as_bytes(), path).unwrap_err();
    /// assert!(matches!(err, Error::Checksum { .. }), "{err}");
    /// # Ok(()) }
    /// ```
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Manifest> {
        let version = manifest_version(bytes, path)?;
        if version == SEGMENTED_FORMAT_VERSION {
            return Err(Error::InvalidArgument(format!(
                "{}: a segmented index (format v{version}, grown by `bsa add`); open it with \
                 bsa_index::live::Snapshot, which reads both formats",
                path.display()
            )));
        }
        let body = unseal(bytes, path)?;
        let mut m: Manifest = serde_json::from_str(body)
            .map_err(|e| unparsed_body(body, KNOWN_INCOMPAT_FEATURES, e, path))?;
        m.format_version = version;
        m.validate(path)?;
        Ok(m)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |d: String| Err(Error::corrupt(path, d));
        check_features_and_size(
            &self.incompat_features,
            KNOWN_INCOMPAT_FEATURES,
            self.bits,
            self.words_per_code,
            path,
        )?;
        if self.n > u64::from(u32::MAX) {
            return bad(format!("{} codes exceed the limit of {}", self.n, u32::MAX));
        }
        if self.segments.len() != 1 {
            return bad(format!(
                "{} segments; this bsa-index reads single-segment indexes only",
                self.segments.len()
            ));
        }
        let seg = &self.segments[0];
        if seg.rows != self.n {
            return bad(format!("segment has {} rows but n is {}", seg.rows, self.n));
        }
        let mut names: Vec<&str> = vec![&seg.codes, &seg.ids];
        if seg.vectors.is_some() != self.vectors.is_some() {
            return bad("vectors listed in the segment and the manifest disagree".into());
        }
        if let Some(v) = &seg.vectors {
            names.push(v);
        }
        if let Some(v) = &self.vectors
            && v.dim == 0
        {
            return bad("vector dimension 0".into());
        }
        if let Some(h) = &self.hnsw {
            h.params.validate().or_else(|e| bad(format!("hnsw: {e}")))?;
            names.push(&h.graph);
            names.push(&h.data);
            if let Some(g) = &h.native {
                names.push(g);
            }
            if h.graph != format!("{}.hnsw.graph", h.basename)
                || h.data != format!("{}.hnsw.data", h.basename)
            {
                return bad("hnsw file names do not follow the basename".into());
            }
        }
        if let Some(g) = &self.graph {
            if self.hnsw.is_some() {
                return bad("two graphs (hnsw and graph); an index has at most one".into());
            }
            if g.dim == 0 {
                return bad("graph built on vectors of dimension 0".into());
            }
            // No writer lists a graph on the codes here (that one is "hnsw"): a Hamming walk
            // of a graph built by cosine would answer, wrongly, without a word.
            if g.metric != GraphMetric::Cosine {
                return bad(format!(
                    "graph: metric {:?}, but a graph on float vectors is built by cosine (a \
                     graph on the codes is listed under \"hnsw\")",
                    g.metric
                ));
            }
            g.params
                .validate()
                .or_else(|e| bad(format!("graph: {e}")))?;
            names.push(&g.file);
        }
        if let Some(mo) = &self.model {
            names.push(&mo.file);
        }
        if let Some(i) = &self.inverted {
            names.push(&i.file);
        }
        if let Some(nm) = &self.norms {
            names.push(&nm.file);
        }
        if let Some(sp) = &self.sparse {
            names.push(&sp.file);
        }
        if let Some(b) = &self.bitmaps {
            names.push(&b.file);
        }
        for name in &names {
            check_file_name(name, path)?;
            if !self.files.contains_key(*name) {
                return bad(format!("file {name:?} is not listed under \"files\""));
            }
        }
        for name in self.files.keys() {
            check_file_name(name, path)?;
        }
        Ok(())
    }

    /// The single segment (validated to exist by [`from_bytes`](Self::from_bytes)).
    pub(crate) fn segment(&self) -> &Segment {
        &self.segments[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::PathBuf;

    /// A manifest larger than any reader opens is refused before it is written (a commit of
    /// ~10^5 segments wrote one, and the index could not be opened again).
    #[test]
    fn a_manifest_too_large_to_read_is_not_sealed() {
        let body = "x".repeat(MAX_MANIFEST_LEN as usize);
        let err = seal(&body, SEGMENTED_FORMAT_VERSION)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bsa compact") && err.contains("nothing was changed"),
            "{err}"
        );
        let fits = "x".repeat(MAX_MANIFEST_LEN as usize - 200);
        assert!(seal(&fits, SEGMENTED_FORMAT_VERSION).is_ok());
    }

    pub(crate) fn sample() -> Manifest {
        let mut files = BTreeMap::new();
        files.insert(
            "codes.bin".to_string(),
            FileInfo {
                len: 64 + 80,
                crc32: 1,
            },
        );
        files.insert(
            "ids.bin".to_string(),
            FileInfo {
                len: 64 + 80,
                crc32: 2,
            },
        );
        Manifest {
            format_version: FORMAT_VERSION,
            bsa_index_version: "0.1.0".into(),
            n: 10,
            bits: 64,
            words_per_code: 1,
            incompat_features: vec![],
            segments: vec![Segment {
                rows: 10,
                codes: "codes.bin".into(),
                ids: "ids.bin".into(),
                vectors: None,
            }],
            vectors: None,
            hnsw: None,
            graph: None,
            model: None,
            inverted: None,
            norms: None,
            sparse: None,
            bitmaps: None,
            files,
            build: BuildInfo::default(),
            extra: serde_json::json!({"encoder": "sign", "note": "héllo"}),
        }
    }

    fn p() -> PathBuf {
        PathBuf::from("idx/manifest.json")
    }

    #[test]
    fn roundtrip() {
        let m = sample();
        let b = m.to_bytes().unwrap();
        assert_eq!(Manifest::from_bytes(&b, &p()).unwrap(), m);
    }

    #[test]
    fn specific_errors() {
        let b = sample().to_bytes().unwrap();
        let s = String::from_utf8(b.clone()).unwrap();
        let newer = s.replace("\"format_version\":1", "\"format_version\":9");
        assert!(matches!(
            Manifest::from_bytes(newer.as_bytes(), &p()),
            Err(Error::Version { found: 9, .. })
        ));
        let other = s.replace("\"bsa-index\"", "\"other\"");
        assert!(matches!(
            Manifest::from_bytes(other.as_bytes(), &p()),
            Err(Error::NotAnIndex { .. })
        ));
        let edited = s.replace("\"sign\"", "\"lsh!\"");
        assert!(matches!(
            Manifest::from_bytes(edited.as_bytes(), &p()),
            Err(Error::Checksum { .. })
        ));
        assert!(matches!(
            Manifest::from_bytes(&b[..b.len() / 2], &p()),
            Err(Error::Corrupt { .. })
        ));
        let mut m = sample();
        m.incompat_features.push("deletes".into());
        let e = Manifest::from_bytes(&m.to_bytes().unwrap(), &p()).unwrap_err();
        crate::error::assert_unknown_feature(&e, "feature \"deletes\"");
        // A newer bsa's feature may bring values this one cannot parse: said as the feature.
        // Without one, such a value is a corrupt body.
        let mut body = serde_json::to_value(sample()).unwrap();
        body["bits"] = "many".into();
        let e = Manifest::from_bytes(&seal(&body, FORMAT_VERSION).unwrap(), &p()).unwrap_err();
        assert!(
            matches!(&e, Error::Corrupt { .. }) && e.to_string().contains("bad manifest body"),
            "{e}"
        );
        body["incompat_features"] = serde_json::json!(["wide-bits"]);
        let e = Manifest::from_bytes(&seal(&body, FORMAT_VERSION).unwrap(), &p()).unwrap_err();
        crate::error::assert_unknown_feature(&e, "feature \"wide-bits\"");
        // Names that leave the directory, listed under `files` as well (so that only the
        // name's own check can refuse them).
        for outside in ["../x", "C:x", "codes.bin:stream"] {
            let mut m = sample();
            let codes = std::mem::replace(&mut m.segments[0].codes, outside.into());
            let info = m.files.remove(&codes).unwrap();
            m.files.insert(outside.into(), info);
            let e = Manifest::from_bytes(&m.to_bytes().unwrap(), &p()).unwrap_err();
            assert!(e.to_string().contains("is not a plain file name"), "{e}");
        }
        let mut m = sample();
        m.words_per_code = 2;
        assert!(matches!(
            Manifest::from_bytes(&m.to_bytes().unwrap(), &p()),
            Err(Error::Corrupt { .. })
        ));
        // A graph on vectors said to be on the codes (resealed).
        let mut m = sample();
        let info = FileInfo { len: 64, crc32: 3 };
        m.files.insert("graph.bin".into(), info);
        m.graph = Some(GraphInfo {
            file: "graph.bin".into(),
            metric: GraphMetric::Cosine,
            dim: 4,
            params: HnswParams::default(),
        });
        assert_eq!(
            Manifest::from_bytes(&m.to_bytes().unwrap(), &p()).unwrap(),
            m
        );
        m.graph.as_mut().unwrap().metric = GraphMetric::Hamming;
        let e = Manifest::from_bytes(&m.to_bytes().unwrap(), &p()).unwrap_err();
        assert!(e.to_string().contains("metric Hamming"), "{e}");
    }

    /// Resealed with a valid checksum, a segment whose rows are not the manifest's `n` (either
    /// way: more, or fewer), and vectors listed by the segment or the manifest but not both,
    /// are refused: searches size their arrays by `n` and read the vectors the segment names.
    /// So is an `n` past u32::MAX, and not one at it.
    #[test]
    fn counts_and_vectors_that_disagree_are_refused() {
        let refused = |m: &Manifest| {
            let e = Manifest::from_bytes(&m.to_bytes().unwrap(), &p()).unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{e}");
            e.to_string()
        };
        for rows in [9, 11] {
            let mut m = sample();
            m.segments[0].rows = rows;
            let e = refused(&m);
            assert!(
                e.contains(&format!("segment has {rows} rows but n is 10")),
                "{e}"
            );
        }
        let vectors = VectorsInfo {
            dim: 4,
            dtype: VectorDtype::F32,
        };
        let mut both = sample();
        both.files
            .insert("vectors.bin".into(), FileInfo { len: 224, crc32: 4 });
        both.vectors = Some(vectors);
        both.segments[0].vectors = Some("vectors.bin".into());
        assert_eq!(
            Manifest::from_bytes(&both.to_bytes().unwrap(), &p()).unwrap(),
            both
        );
        let mut only_manifest = both.clone();
        only_manifest.segments[0].vectors = None;
        let mut only_segment = both.clone();
        only_segment.vectors = None;
        for m in [only_manifest, only_segment] {
            let e = refused(&m);
            assert!(
                e.contains("vectors listed in the segment and the manifest disagree"),
                "{e}"
            );
        }
        // The limit on codes is u32::MAX itself (row numbers are u32): at it a manifest reads
        // back, one past it is refused.
        let mut at = sample();
        (at.n, at.segments[0].rows) = (u64::from(u32::MAX), u64::from(u32::MAX));
        assert_eq!(
            Manifest::from_bytes(&at.to_bytes().unwrap(), &p()).unwrap(),
            at
        );
        let mut past = at.clone();
        (past.n, past.segments[0].rows) = (past.n + 1, past.n + 1);
        let e = refused(&past);
        assert!(
            e.contains("4294967296 codes exceed the limit of 4294967295"),
            "{e}"
        );
    }

    proptest! {
        #[test]
        fn any_byte_flip_is_an_error_or_harmless(at in any::<prop::sample::Index>(), x in 1u8..=255) {
            let m = sample();
            let mut b = m.to_bytes().unwrap();
            let i = at.index(b.len());
            b[i] ^= x;
            match Manifest::from_bytes(&b, &p()) {
                Err(_) => {}
                // Only bytes outside the checksummed body can change without an error, and then
                // the meaning must be unchanged.
                Ok(back) => prop_assert_eq!(back, m),
            }
        }

        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Manifest::from_bytes(&b, &p());
        }
    }
}
