//! `bsa add`, `bsa delete`, `bsa compact`: change an index in place, one atomic commit each
//! (`bsa_index::live`). Encoding, norms and graph vectors come from the index's own model.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bsa::model::Autoencoder;
use bsa::pipeline::{active_bits, GraphOn};
use bsa_index::live::{NewRows, Snapshot, Writer};
use bsa_index::pack;

/// Add rows to an index as a new segment (encoded with the index's model).
///
/// Ids must be new unless --upsert, which replaces the rows holding them. Without --ids, the
/// rows get ids after the largest id so far. The new segment gets what the index holds for
/// every row (vectors, norms, posting lists, the graph), so an index with stored vectors or a
/// graph on the data needs --data. Searches that opened the index before keep their view; new
/// ones see the rows. A crash leaves the index as it was before or after.
///
/// Examples:
///   bsa add --index idx --data new.npy --ids new_ids.npy
///   bsa add --index idx --data changed.npy --ids changed_ids.npy --upsert
///   bsa add --index idx --codes new_codes.npy          (an index built with --codes)
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct AddArgs {
    /// Index directory from `bsa build`.
    #[arg(long)]
    pub index: PathBuf,
    /// Float rows to encode with the index's model (.npy or .fvecs).
    #[arg(long, required_unless_present = "codes", conflicts_with = "codes")]
    pub data: Option<PathBuf>,
    /// Packed codes (uint8 .npy, numpy little bit order) for an index built from codes.
    #[arg(long)]
    pub codes: Option<PathBuf>,
    /// Ids of the new rows (.npy, 1-D integers); default: after the largest id so far.
    #[arg(long)]
    pub ids: Option<PathBuf>,
    /// Store the rows' vectors (required, and implied, when the index stores vectors).
    #[arg(long)]
    pub vectors: bool,
    /// Replace the rows whose ids are already in the index instead of refusing them.
    #[arg(long)]
    pub upsert: bool,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Mark rows deleted: searches in every mode skip them; `bsa compact` drops them for good.
///
/// Ids not in the index are reported on stderr, not an error.
///
/// Example:
///   bsa delete --index idx --ids gone.npy
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct DeleteArgs {
    /// Index directory.
    #[arg(long)]
    pub index: PathBuf,
    /// Ids to delete (.npy, 1-D integers).
    #[arg(long)]
    pub ids: PathBuf,
}

/// Merge segments and drop deleted rows.
///
/// Merges the smallest segments until at most --max-segments remain, and rewrites every
/// segment with deleted rows without them; graphs of merged segments are rebuilt (on the
/// decoded codes with the index's model, or on the stored vectors for a graph on the data).
///
/// Example:
///   bsa compact --index idx --max-segments 1
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct CompactArgs {
    /// Index directory.
    #[arg(long)]
    pub index: PathBuf,
    /// Segments to keep at most.
    #[arg(long, default_value_t = 1)]
    pub max_segments: usize,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

fn model_of(snap: &Snapshot) -> anyhow::Result<Option<Autoencoder>> {
    snap.model_path()
        .map(|p| bsa::io::model::load(&p))
        .transpose()
        .map_err(Into::into)
}

/// What the index's graph is built on.
fn graph_on(snap: &Snapshot) -> Option<GraphOn> {
    GraphOn::of_index(snap.extra(), snap.graph_metric())
}

pub fn add(a: &AddArgs) -> anyhow::Result<()> {
    bsa::threads::configure(a.threads)?;
    let dir = &a.index;
    // The writer waits for the lock, then reads the current generation.
    let mut writer = Writer::open(dir)?;
    let snap = Snapshot::open_with(dir, bsa_index::OpenOptions::verify_checksums(false))?;
    let bits = snap.bits();
    let t = snap.template().clone();
    let model = model_of(&snap)?;
    let data = match &a.data {
        Some(p) => Some(super::io::open_embeddings(
            p,
            t.vectors.is_some() || a.vectors,
        )?),
        None => None,
    };
    if t.vectors.is_some() && data.is_none() {
        bail!(
            "{}: the index stores vectors for every row: add with --data",
            dir.display()
        );
    }
    if a.vectors && t.vectors.is_none() {
        bail!(
            "{}: the index stores no vectors (it was built without --vectors); add without \
             --vectors",
            dir.display()
        );
    }
    let on = graph_on(&snap);
    let (codes, norms, graph_vectors, n) = match (&data, &a.codes) {
        (Some(d), _) => {
            let m = model.as_ref().with_context(|| {
                format!(
                    "{}: the index has no model to encode --data (it was built from codes): add \
                     with --codes",
                    dir.display()
                )
            })?;
            d.expect_dim(m.config.dim)?;
            let active = m.encode_active(d.view());
            let codes = pack::pack_set_bits(&active, bits)?;
            let norms = t.norms.then(|| m.params.decoded_norms(&active));
            let gv = match on {
                Some(GraphOn::Decoded) => {
                    Some(m.params.decode_sparse(&active).into_raw_vec_and_offset().0)
                }
                Some(GraphOn::Data) => Some(d.as_slice().to_vec()),
                _ => None,
            };
            (codes, norms, gv, d.n())
        }
        (None, Some(p)) => {
            if t.norms || matches!(on, Some(GraphOn::Decoded | GraphOn::Data)) {
                bail!(
                    "{}: the index was built with a model (norms, a graph on float vectors): add \
                     float rows with --data",
                    dir.display()
                );
            }
            let (n, cols, bytes) = bsa::io::read_u8(p)?;
            if cols != pack::bytes_per_code(bits) {
                bail!(
                    "{}: {cols} bytes per code, but the index holds {bits}-bit codes ({} bytes)",
                    p.display(),
                    pack::bytes_per_code(bits)
                );
            }
            (pack::pack_le_bytes(&bytes, n, cols, bits)?, None, None, n)
        }
        (None, None) => bail!("give --data or --codes"),
    };
    let ids = match &a.ids {
        Some(p) => {
            let ids = bsa::io::read_u64_ids(p)?;
            if ids.len() != n {
                bail!("{}: {} ids for {n} new rows", p.display(), ids.len());
            }
            Some(ids)
        }
        None => None,
    };
    let mut rows = NewRows::codes(&codes);
    if let Some(ids) = &ids {
        rows = rows.ids(ids);
    }
    if let (Some(d), Some(_)) = (&data, t.vectors) {
        rows = rows.vectors(d.as_slice());
    }
    if let Some(nm) = &norms {
        rows = rows.norms(nm);
    }
    if let Some(gv) = &graph_vectors {
        rows = rows.graph_vectors(gv);
    }
    let r = writer.add(&rows, a.upsert)?;
    eprintln!(
        "bsa: added {} rows (ids {}..={}) to {} as {}{}; generation {}",
        r.added,
        r.id_range.0,
        r.id_range.1,
        dir.display(),
        r.segment,
        if r.replaced > 0 {
            format!(", replacing {}", r.replaced)
        } else {
            String::new()
        },
        r.generation
    );
    Ok(())
}

pub fn delete(a: &DeleteArgs) -> anyhow::Result<()> {
    let ids = bsa::io::read_u64_ids(&a.ids)?;
    let mut writer = Writer::open(&a.index)?;
    let r = writer.delete(&ids)?;
    if !r.unknown.is_empty() {
        let shown: Vec<String> = r.unknown.iter().take(10).map(u64::to_string).collect();
        eprintln!(
            "bsa: {} ids were not in the index: {}{}",
            r.unknown.len(),
            shown.join(", "),
            if r.unknown.len() > 10 { ", ..." } else { "" }
        );
    }
    eprintln!(
        "bsa: deleted {} rows from {}; generation {}",
        r.deleted,
        a.index.display(),
        r.generation
    );
    Ok(())
}

pub fn compact(a: &CompactArgs) -> anyhow::Result<()> {
    bsa::threads::configure(a.threads)?;
    let dir: &Path = &a.index;
    let mut writer = Writer::open(dir)?;
    let snap = Snapshot::open_with(dir, bsa_index::OpenOptions::verify_checksums(false))?;
    let bits = snap.bits();
    let model = model_of(&snap)?;
    let on = graph_on(&snap);
    let stored = snap.has_vectors();
    drop(snap);
    let decode = |codes: &[u64], vectors: Option<&[f32]>| -> bsa_index::Result<Vec<f32>> {
        match (on, &model, vectors) {
            (Some(GraphOn::Data), _, Some(v)) => Ok(v.to_vec()),
            (Some(GraphOn::Decoded), Some(m), _) => Ok(m
                .params
                .decode_sparse(&active_bits(codes, bits))
                .into_raw_vec_and_offset()
                .0),
            _ => Err(bsa_index::Error::InvalidArgument(
                "the graph is built on float vectors this index cannot give back (on the data \
                 without stored vectors, or decoded without a model); rebuild the index with \
                 `bsa build`"
                    .into(),
            )),
        }
    };
    let needs = matches!(on, Some(GraphOn::Decoded | GraphOn::Data));
    if needs && on == Some(GraphOn::Data) && !stored {
        bail!(
            "{}: the graph is built on the data, which the index does not store: compacting \
             cannot rebuild it; rebuild the index with `bsa build`",
            dir.display()
        );
    }
    let r = writer.compact(
        a.max_segments,
        needs.then_some(&decode as &bsa_index::live::GraphVectorsFn<'_>),
    )?;
    if r.merged == 0 {
        eprintln!(
            "bsa: {} has {} segments and no deleted rows: nothing to compact",
            dir.display(),
            r.segments
        );
    } else {
        eprintln!(
            "bsa: merged {} segments into {} rows (dropped {} deleted); {} segments now; \
             generation {}",
            r.merged, r.rows, r.dropped, r.segments, r.generation
        );
    }
    Ok(())
}
