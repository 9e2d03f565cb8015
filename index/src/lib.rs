//! # bsa-index: search packed binary codes by Hamming distance
//!
//! `bsa-index` stores binary codes (e.g. the sparse codes learned by bsa, or sign-quantized
//! embeddings) in a memory-mapped index directory and answers k-nearest-neighbour queries by
//! Hamming distance: an exact scan that is fast for one query and for large batches, an HNSW
//! graph for approximate search, and rescoring of candidates by cosine similarity against stored
//! float vectors; it encodes float queries with the index's model. It has no BLAS and no training
//! code; the `bsa` crate builds on it.
//!
//! ## Build, open, search
//!
//! ```
//! use bsa_index::{pack, Index, IndexBuilder, SearchParams};
//!
//! # fn main() -> bsa_index::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("my-index");
//!
//! // Four 12-bit codes, as numpy's packbits(bitorder="little") would give them (2 bytes each).
//! let bytes = [0b0000_0111, 0x00, 0b0000_0110, 0x00, 0xff, 0x0f, 0b0000_0011, 0x00];
//! let codes = pack::pack_le_bytes(&bytes, 4, 2, 12)?;
//! IndexBuilder::new(12, &codes).ids(&[10, 11, 12, 13]).build(&path)?;
//!
//! let index = Index::open(&path)?; // maps the files and verifies their checksums
//! let query = pack::pack_le_bytes(&[0b0000_0111, 0x00], 1, 2, 12)?;
//! let hits = index.search_flat(&query, 3, &SearchParams::default())?;
//! assert_eq!(hits[0].ids, vec![10, 11, 13]); // rows 1 and 3 tie at distance 1: smaller row first
//! assert_eq!(hits[0].distances, vec![0, 1, 1]);
//! # Ok(()) }
//! ```
//!
//! ## Serving an index that changes
//!
//! [`Index`] reads an index as `bsa build` writes it, one segment. Once `bsa add`, `delete` or
//! `compact` (or a [`live::Writer`]) has changed it, it has several segments: open it with
//! [`live::Snapshot`], which reads both forms and is what `bsa search` uses, so a query server
//! should start there. A snapshot is `Send + Sync` and answers from the generation it opened
//! while writers commit new ones; [`live::Snapshot::is_current`] says when to open the index
//! again. Float queries are encoded with the index's model, and the `adc` and `soft` tables made
//! from it, by [`live::Snapshot::query_model`] ([`model`]): the codes and tables `bsa search`
//! computes, bit for bit, without BLAS. So are the norms and decoded vectors that rows added to
//! an index built with a model need ([`model::Weights::decoded_norms`],
//! [`model::Weights::decode`]), which `bsa add` (`bsa::live`) computes the same way.
//!
//! ```
//! use bsa_index::live::{SearchOptions, Snapshot};
//! use bsa_index::{pack, IndexBuilder, Mode, Score};
//! # fn main() -> bsa_index::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("idx");
//! let codes = pack::pack_le_bytes(&[0b0111, 0b0110, 0b1111], 3, 1, 4)?;
//! IndexBuilder::new(4, &codes).ids(&[7, 8, 9]).build(&path)?;
//! let snap = std::sync::Arc::new(Snapshot::open(&path)?); // one per generation, shared
//! let flat = Mode::parse("flat")?;
//! let (hits, _) = snap.search(&[0b0111], 2, &Score::Hamming, &flat, &SearchOptions::default())?;
//! assert_eq!(hits[0].ids, vec![7, 8]);
//! assert!(snap.is_current()?);
//! # Ok(()) }
//! ```
//!
//! ## Features
//!
//! * `float-queries` (on by default): float queries encoded with the index's model and the
//!   `adc` and `soft` tables made from it, without BLAS ([`model`], [`query`],
//!   [`live::Snapshot::query_model`]; with [`deterministic`], [`int_tables`] and [`pursuit`]):
//!   [ndarray](https://crates.io/crates/ndarray) (without its `blas` feature) and
//!   [safetensors](https://crates.io/crates/safetensors), 21 crates. A server that searches
//!   only packed codes can leave it out.
//! * `hnsw-rs` (on by default): [hnsw_rs](https://crates.io/crates/hnsw_rs) (with both
//!   features, the crate depends on 112 crates; without `hnsw-rs`, 58; without either, 37), for
//!   building HNSW graphs over the codes by Hamming distance ([`IndexBuilder::hnsw`] without
//!   [`IndexBuilder::graph_on`], and the segments a [`live::Writer`] builds or merges in such an
//!   index). A query server can leave it out (`bsa-index = { version = "0.1",
//!   default-features = false, features = ["float-queries"] }`): it still opens and searches
//!   every index and its graph (`graph.bin`, Hamming graphs built elsewhere included, or the
//!   hnsw_rs dump of an index written before `graph.bin` existed, read by bsa), builds
//!   indexes without graphs and graphs on float vectors; what needs hnsw_rs is an
//!   [`Error::InvalidArgument`] that says so, returned before anything is written.
//!   `cargo test -p bsa-index --no-default-features` tests the crate without either feature (the
//!   test files whose fixtures build graphs over the codes need `hnsw-rs` and are left out).
//!
//! ## The index directory
//!
//! | file | content |
//! |---|---|
//! | `manifest.json` | format version, n, bits, parts present, each file's length and CRC-32, build settings, model, `extra`; written last |
//! | `codes.bin` | 64-byte header, then `n * words_per_code` little-endian `u64` words, 64-byte aligned |
//! | `ids.bin` | 64-byte header, then `n` `u64` external ids (row numbers if none were given) |
//! | `vectors.bin` | optional: 64-byte header, then `n * dim` `f32` or `f16` values for rescoring |
//! | `hnsw.hnsw.graph`, `hnsw.hnsw.data` | optional: the HNSW graph in hnsw_rs's dump format |
//! | `graph.bin` | optional (with the HNSW graph): the same graph as flat neighbour lists, searched in place |
//! | `model.*` | optional: the model file copied in (float queries: [`model`]) |
//! | `inverted.bin` | optional: posting lists per bit (exact inverted search) |
//! | `norms.bin` | optional: one `f32` per code, divisor of normalised table scores |
//! | `sparse.bin` | optional: the set bits of each code (fast table scores on sparse codes) |
//! | `bitmaps.bin` | optional: the posting lists as bitmaps over rows (inverted Hamming search on codes with frequent bits) |
//!
//! The byte-level specification, versioning rules and changelog are in `index/FORMAT.md`.
//! [`Index::open`] checks magic, versions, header checksums, sizes and alignment, and by default
//! every payload checksum (see [`OpenOptions`]); [`Index::verify`] checks every byte of every file.
//!
//! ## Layers
//!
//! Each module uses only modules of the layers below it (a test, `tests/layering.rs`, checks
//! that no `use crate::` edge points upwards or closes a circle):
//!
//! ```text
//!  live       live::{copy, snapshot, summary, writer} ─ segments, deletes, Snapshot, Writer
//!             query ─ search(): float queries or codes in, bsa search's hits out
//!  ───────────────────────────────────────────────────────────────────────────────
//!  index      mode ─ Index::searcher(&Mode)           builder ─ IndexBuilder
//!             live::meta ─ the segmented format's manifest and the names bsa writes
//!             index ─ Index: opens the files, hands out views and searchers
//!             graph_build ─ the native HNSW builder    hnsw ─ parameters, loads graph.bin
//!             hnsw::with_hnsw_rs ─ hnsw_rs build (feature `hnsw-rs`)
//!             hnsw::dump ─ reads the hnsw_rs dumps of indexes older than graph.bin
//!  ───────────────────────────────────────────────────────────────────────────────
//!  searchers  search ─ Searcher, Hits, SearchParams, CodesView, keys → hits
//!             search::{flat, inverted (+ blocked), graph, rescore}
//!  ───────────────────────────────────────────────────────────────────────────────
//!  views      sparse · postings · bitmaps · graph · vectors · adc · adc_wide   (validated, borrowed)
//!  ───────────────────────────────────────────────────────────────────────────────
//!  files      manifest · files (mapped sections, CRCs) · format (headers)
//!             model ─ QueryModel: a model file's encoder and decoder for float queries
//!  ───────────────────────────────────────────────────────────────────────────────
//!  kernels    hamming · slabs · dot · score · pack      (raw slices in, numbers out)
//!             deterministic · int_tables · pursuit      (fixed-order float and integer products)
//!  ───────────────────────────────────────────────────────────────────────────────
//!  leaves     kernel (KernelFamily) · topk · bits · counters · rowset (RowSet) · error · memo
//!             lock_note (LockHolder: who holds a writers' lock)
//! ```
//!
//! * [`search`]: the [`Searcher`] of each mode — [`search::flat`] (exact scan),
//!   [`search::inverted`] (exact, posting lists), [`search::graph`] (approximate, HNSW) — and
//!   [`search::rescore`] (cosine re-ranking against stored vectors). [`Mode`] lists the modes;
//!   [`Index::searcher`] opens one. [`Index::search_flat`] and its siblings are shortcuts.
//! * [`live`]: an index that changes: segments added by [`live::Writer::add`], rows deleted
//!   or upserted, segments compacted, all searched as one [`live::Snapshot`] with id filters
//!   and range search; every change one atomic commit.
//! * [`query`]: `bsa search` as a call: float queries (encoded with the index's model) or
//!   packed codes, any score, mode and rescoring, checked as `bsa search` checks them.
//! * [`pack`]: numpy `packbits` bytes, booleans or set-bit lists to packed `u64` rows and back.
//! * [`hamming`]: XOR + popcount kernels (portable, AVX2 and AVX-512 `VPOPCNTDQ`).
//! * [`kernel`]: which kernel family runs, chosen at run time from the CPU (one binary runs on
//!   every x86-64 CPU), or forced with `BSA_KERNEL=portable|avx2|avx512`.
//! * [`topk`]: exact top-k with deterministic ties (distance, then row).
//! * [`score`]: scores beyond Hamming ([`Score`] with its per-query tables, [`ScoreKind`]).
//! * [`sparse`], [`postings`], [`bitmaps`], [`graph`], [`vectors`]: the optional files'
//!   validated views: per-code set bits, posting lists, the lists as bitmaps over rows, the
//!   HNSW graph's flat lists, and the stored float vectors.
//! * [`adc`]: the fast exact table-score scan (`--score adc`): the codes in blocks for SIMD
//!   gathers, quantised per-query tables, a bound, and exact re-scoring of the few codes that
//!   may reach the top k. [`adc_wide`]: its batch kernel, 64 queries per plain load.
//! * [`model`]: the query side of a model, read from its file: float queries to codes, and the
//!   `adc` and `soft` tables, on [`deterministic`] products (the same bits on every CPU and
//!   thread count), the integer products of [`int_tables`] and the greedy pursuit of
//!   [`pursuit`].
//! * [`format`](mod@format), [`manifest`]: the on-disk format.
//!
//! Searches run on the rayon pool they are called from: size it with
//! `bsa_index::rayon::ThreadPoolBuilder::new().num_threads(t).build()?.install(|| ...)` (the
//! crate re-exports the `rayon` it runs on, so a server needs no dependency of its own for it).
//!
//! The crate targets 64-bit little-endian machines (the codes are mapped in place).

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(all(target_endian = "little", target_pointer_width = "64")))]
compile_error!(
    "bsa-index maps little-endian u64 words in place and needs a 64-bit little-endian target"
);

// Leaves.
mod bits;
mod counters;
mod error;
pub mod kernel;
mod lock_note;
#[cfg(feature = "float-queries")]
#[doc(hidden)]
pub mod memo;
mod rowset;
pub mod topk;
// Kernels on raw slices.
#[cfg(feature = "float-queries")]
pub mod deterministic;
pub mod dot;
pub mod hamming;
#[cfg(feature = "float-queries")]
pub mod int_tables;
pub mod pack;
#[cfg(feature = "float-queries")]
pub mod pursuit;
pub mod score;
mod slabs;
// Files.
mod files;
pub mod format;
pub mod manifest;
#[cfg(feature = "float-queries")]
pub mod model;
// Views.
pub mod adc;
pub mod adc_wide;
pub mod bitmaps;
pub mod graph;
pub mod postings;
pub mod sparse;
pub mod vectors;
// Searchers.
pub mod search;
// The index directory.
mod builder;
mod graph_build;
pub mod hnsw;
mod index;
pub mod live;
mod mode;
#[cfg(feature = "float-queries")]
pub mod query;

pub use builder::{
    IndexBuilder, build_leftovers, check_outside_index, check_replaceable, leftover_advice,
    replace_dir, replace_index_dir,
};
pub use error::{Error, Result, check_stop, io_hint, lacks_resources};
pub use files::{LockWait, not_a_file, output_target, parent_dir};
pub use graph_build::GraphVectors;
pub use index::{Index, OpenOptions};
pub use kernel::KernelFamily;
pub use manifest::{HnswParams, Manifest, VectorDtype};
pub use mode::Mode;
pub use postings::{InvertedLists, InvertedView};
/// The rayon this crate's searches run on: size their pool with its `ThreadPoolBuilder`.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bsa_index::live::{SearchOptions, Snapshot};
/// use bsa_index::{rayon::ThreadPoolBuilder, IndexBuilder, Mode, Score};
/// let dir = tempfile::tempdir()?;
/// IndexBuilder::new(64, &[1, 2, 3]).build(dir.path().join("idx"))?;
/// let index = Snapshot::open(dir.path().join("idx"))?;
/// let one = ThreadPoolBuilder::new().num_threads(1).build()?;
/// let (flat, options) = (Mode::parse("flat")?, SearchOptions::default());
/// let (hits, _) = one.install(|| index.search(&[1], 1, &Score::Hamming, &flat, &options))?;
/// assert_eq!(hits[0].ids, [0]);
/// # Ok(()) }
/// ```
pub use rayon;
pub use rowset::RowSet;
pub use score::{Score, ScoreKind};
pub use search::{Hit, Hits, InvertedStats, SearchParams, SearchStats, Searcher, Split};
pub use sparse::{SparseCodes, SparseView};
pub use vectors::Vectors;
