//! HNSW graphs: their parameters, and the graph a search walks.
//!
//! Every search walks flat neighbour lists ([`crate::graph`]), mapped from `graph.bin`. Graphs on
//! float vectors are built natively (`graph_build.rs`); graphs over the codes by Hamming distance
//! are built with hnsw_rs, which also wrote an hnsw_rs dump (`hnsw.hnsw.graph`,
//! `hnsw.hnsw.data`) beside `graph.bin`. Indexes written before `graph.bin` existed have only
//! that dump, read by bsa (`hnsw/dump.rs`) and converted to the same flat lists in memory on
//! first use. hnsw_rs is in the submodule `with_hnsw_rs` (`hnsw/with_hnsw_rs.rs`), compiled only
//! with the `hnsw-rs` feature (on by default); without it, building a graph over the codes is an
//! error that says so, and everything else (parameters, `graph.bin`, dumps) works.

use std::path::Path;

use crate::error::{Error, Result};
use crate::files::Section;
use crate::format::FileKind;
use crate::graph::{GraphLayout, GraphView};
use crate::manifest::{HnswParams, Manifest};

mod dump;
#[cfg(feature = "hnsw-rs")]
mod with_hnsw_rs;
pub(crate) use dump::{check_dump_layout, is_dump_file};
#[cfg(feature = "hnsw-rs")]
#[cfg_attr(docsrs, doc(cfg(feature = "hnsw-rs")))]
pub use with_hnsw_rs::DistHammingBits;
#[cfg(feature = "hnsw-rs")]
pub(crate) use with_hnsw_rs::build_and_dump;

/// Basename of the hnsw_rs dump inside an index directory.
pub const HNSW_BASENAME: &str = "hnsw";
/// Largest accepted `max_connections`. hnsw_rs exits the process above 256 and stores the value
/// in one byte in its dump (256 would reload as 0), so the limit here is 255.
pub const MAX_CONNECTIONS_LIMIT: usize = 255;

/// The largest `ef_construction` and `ef_search` accepted: far above any useful value (a
/// candidate list as large as the graph makes the walk a scan), low enough that the lists
/// allocated for it always fit in memory.
pub const MAX_EF: usize = 1 << 20;

impl HnswParams {
    /// Checks the parameters (`max_connections` in 2..=255, `ef_construction` and `ef_search` in
    /// 1..=[`MAX_EF`]).
    ///
    /// ```
    /// use bsa_index::HnswParams;
    /// assert!(HnswParams::default().validate().is_ok());
    /// let huge = HnswParams { ef_construction: 1 << 40, ..HnswParams::default() };
    /// assert!(huge.validate().unwrap_err().to_string().contains("ef_construction"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        if !(2..=MAX_CONNECTIONS_LIMIT).contains(&self.max_connections) {
            return Err(Error::InvalidArgument(format!(
                "HNSW max_connections (M) must be in 2..={MAX_CONNECTIONS_LIMIT}, got {}",
                self.max_connections
            )));
        }
        for (name, ef) in [
            ("ef_construction", self.ef_construction),
            ("ef_search", self.ef_search),
        ] {
            if !(1..=MAX_EF).contains(&ef) {
                return Err(Error::InvalidArgument(format!(
                    "HNSW {name} must be in 1..={MAX_EF}, got {ef}"
                )));
            }
        }
        Ok(())
    }
}

/// `Ok` when this build of bsa-index can build HNSW graphs over the codes by Hamming distance
/// (with hnsw_rs: the `hnsw-rs` feature); otherwise the error saying so, after `what` (what would
/// have built one). Checked before any work, so that nothing is written and no long job runs
/// first.
pub(crate) fn require_hamming_builder(what: &str) -> Result<()> {
    if cfg!(feature = "hnsw-rs") {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "{what}: building an HNSW graph over the codes by Hamming distance needs bsa-index's \
         `hnsw-rs` feature (on by default), which this build of bsa-index leaves out; a graph \
         on float vectors is built without it (IndexBuilder::graph_on; bsa build --hnsw-on \
         decoded or data), and so is an index without a graph"
    )))
}

/// Without the `hnsw-rs` feature: the error of [`require_hamming_builder`] (the builder has
/// refused the graph before calling this).
#[cfg(not(feature = "hnsw-rs"))]
pub(crate) fn build_and_dump(
    _codes: &[u64],
    _w: usize,
    _params: &HnswParams,
    _dir: &Path,
    _basename: &str,
    _progress: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<(String, (String, crate::manifest::FileInfo))> {
    require_hamming_builder("an HNSW graph over the codes")?;
    unreachable!("require_hamming_builder refuses without the hnsw-rs feature")
}

/// Where the flat graph lives: mapped from `graph.bin`, or converted in memory from an hnsw_rs dump.
enum GraphStore {
    Mapped(Section),
    Owned(Vec<u64>),
}

/// A loaded HNSW graph: the flat neighbour lists and their validated layout.
pub(crate) struct HnswGraph {
    store: GraphStore,
    layout: GraphLayout,
}

impl HnswGraph {
    /// Loads the graph of the index in `dir` described by `manifest`, from `opened` (its
    /// `graph.bin`, opened with the index) if given.
    pub(crate) fn load(
        dir: &Path,
        manifest: &Manifest,
        opened: Option<&std::fs::File>,
    ) -> Result<HnswGraph> {
        let no_graph = || {
            Error::InvalidArgument(format!(
                "{}: the index has no HNSW graph; rebuild it with one (bsa build --hnsw; hnsw=True from Python)",
                dir.display()
            ))
        };
        if manifest.graph.is_none() && manifest.hnsw.is_none() {
            return Err(no_graph());
        }
        let native = manifest.graph_file();
        let n = manifest.n;
        if let Some(name) = native {
            // Listed under `files` (checked by Manifest::from_bytes). The graph is small next to
            // the codes, and its structure is checked byte by byte below anyway, so its checksum
            // is always verified, whatever OpenOptions said.
            let finfo = manifest.files[name];
            let s = match opened {
                Some(file) => Section::of_file(file, dir.join(name), FileKind::Graph, &finfo)?,
                None => Section::open(dir.join(name), FileKind::Graph, &finfo)?,
            };
            s.verify(&finfo)?;
            if s.header.count != n {
                return Err(Error::corrupt(
                    &s.path,
                    format!(
                        "holds a graph of {} nodes but the index has {n} codes",
                        s.header.count
                    ),
                ));
            }
            let layout = GraphView::validate(s.payload(), n, &s.path)?;
            if GraphView::from_layout(s.payload(), &layout).level0_stride()
                != s.header.width as usize
            {
                return Err(Error::corrupt(
                    &s.path,
                    format!(
                        "header says {} level-0 slots per node, the graph disagrees",
                        s.header.width
                    ),
                ));
            }
            return Ok(HnswGraph {
                store: GraphStore::Mapped(s),
                layout,
            });
        }
        // An index from before graph.bin: read the hnsw_rs dump and convert it in memory.
        let info = manifest.hnsw.as_ref().ok_or_else(no_graph)?;
        let (payload, layout) = dump::load_dump(dir, manifest, info)?;
        Ok(HnswGraph {
            store: GraphStore::Owned(payload),
            layout,
        })
    }

    /// Verifies a loaded `graph.bin`'s checksum again, from the file mapped at its load (the
    /// index's check of every byte, [`Index::verify`](crate::Index::verify)); a graph read from
    /// an hnsw_rs dump was checked as it was converted.
    pub(crate) fn verify_again(&self, info: &crate::manifest::FileInfo) -> Result<()> {
        match &self.store {
            GraphStore::Mapped(s) => s.verify(info),
            GraphStore::Owned(_) => Ok(()),
        }
    }

    /// The graph's flat lists.
    pub(crate) fn view(&self) -> GraphView<'_> {
        let payload: &[u8] = match &self.store {
            GraphStore::Mapped(s) => s.payload(),
            GraphStore::Owned(v) => bytemuck::cast_slice(v),
        };
        GraphView::from_layout(payload, &self.layout)
    }
}
