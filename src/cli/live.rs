//! `bsa add`, `bsa delete`, `bsa compact`: change an index in place, one atomic commit each
//! (`bsa::live`, over `bsa_index::live`).

use std::path::{Path, PathBuf};

use super::io::counted;
use anyhow::{Context, bail};
use bsa::live::AddSource;
use bsa_index::live::{MergePolicy, Writer};

/// Add rows to an index as a new segment (encoded with the index's model).
///
/// Ids must be new unless --upsert, which replaces the rows holding them. Without --ids, the
/// rows get ids after the largest id so far. The new segment gets what the index holds for
/// every row (vectors, norms, posting lists, the graph), so an index with stored vectors or a
/// graph on the data needs --data. Searches that opened the index before keep their view; new
/// ones see the rows. A crash leaves the index as it was before or after.
///
/// Segments merge as the index grows: when --merge-factor segments (default 2) are in one size
/// tier (tiers --merge-factor times apart: with 2, fewer than 2000 live rows, 2000-3999,
/// 4000-7999, ...), the add merges them into one in the same commit, so an index that grows by
/// many small adds keeps about one segment per tier and searches near the speed of a compacted
/// one. Segments of --merge-max-rows rows or more
/// (default 1M) are left alone, so that no add rewrites a large segment. --merge-factor 0 never
/// merges (bsa compact still does).
///
/// Examples:
///   bsa add --index idx --data new.npy --ids new_ids.npy
///   bsa add --index idx --data changed.npy --ids changed_ids.npy --upsert
///   bsa add --index idx --codes new_codes.npy          (an index built with --codes)
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
// One of the two is required: the usage error names both ("<--data <DATA>|--codes <CODES>>").
#[command(group(clap::ArgGroup::new("rows").required(true).args(["data", "codes"])))]
pub struct AddArgs {
    /// Index directory from `bsa build`.
    #[arg(long)]
    pub index: PathBuf,
    /// Float rows to encode with the index's model (.npy or .fvecs).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Packed codes (uint8 .npy, numpy little bit order) for an index built from codes.
    #[arg(long)]
    pub codes: Option<PathBuf>,
    /// Ids of the new rows (.npy, 1-D integers); default: after the largest id so far.
    #[arg(long)]
    pub ids: Option<PathBuf>,
    /// The new rows' vectors are stored: as `bsa build --vectors`. An index that stores
    /// vectors stores the new rows' whether this is given or not; one that stores none refuses
    /// it (vectors for some rows only could not be rescored).
    #[arg(long)]
    pub vectors: bool,
    /// Replace the rows whose ids are already in the index instead of refusing them.
    #[arg(long)]
    pub upsert: bool,
    /// Merge this many segments of about the same size into one (0: never merge).
    #[arg(long, default_value_t = MergePolicy::default().factor)]
    pub merge_factor: usize,
    /// Segments of this many rows or more are not merged by adds (bsa compact merges them).
    #[arg(long, default_value_t = MergePolicy::default().max_rows)]
    pub merge_max_rows: u64,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub check: ChangeCheck,
}

/// How `bsa add`, `bsa delete` and `bsa compact` wait for the index and check it before they
/// change it.
#[derive(Debug, clap::Args)]
pub struct ChangeCheck {
    /// Change the index without checking its files' checksums first (an index with a damaged
    /// file is refused otherwise: a change would carry the damage into a new generation;
    /// graphs are checked at their first search, not here).
    #[arg(long)]
    pub no_verify: bool,
    /// Wait at most this many seconds for another writer of the index (an add, delete,
    /// compact or build --force) to finish, then fail with nothing changed and exit status 75
    /// (EX_TEMPFAIL: try again later); 0 does not wait. Default: wait as long as it takes.
    #[arg(long, value_name = "SECONDS", value_parser = super::io::parse_seconds)]
    pub lock_timeout: Option<std::time::Duration>,
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
    #[command(flatten)]
    pub check: ChangeCheck,
}

/// Merge segments and drop deleted rows.
///
/// Merges the smallest segments until at most --max-segments remain, and every segment with
/// deleted rows (or rows not in id order, from indexes of older versions) into the same merge,
/// without the deleted rows (so fewer segments may remain);
/// graphs of merged segments are rebuilt (on the decoded codes with the index's model, or on
/// the stored vectors for a graph on the data).
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
    #[command(flatten)]
    pub check: ChangeCheck,
}

pub fn add(a: &AddArgs) -> anyhow::Result<()> {
    bsa::threads::configure(a.threads)?;
    let ids = a.ids.as_deref().map(bsa::io::read_u64_ids).transpose()?;
    let data = match &a.data {
        Some(p) => Some(super::io::open_embeddings(p, super::io::ZeroRows::Allowed)?),
        None => None,
    };
    let packed = a.codes.as_deref().map(bsa::io::read_u8).transpose()?;
    if let (Some(p), Some((rows, cols, bytes))) = (&a.codes, &packed) {
        if *rows == 0 {
            // As `--data` says it (the library's message also covers ragged words).
            bail!(
                "{}: no rows: the array has shape (0, {cols}); there is nothing to add",
                p.display()
            );
        }
        super::io::warn_if_unpacked(p, *rows, *cols, bytes);
    }
    let source = match (&data, &packed) {
        (Some(d), _) => AddSource::Floats(d.view()),
        (None, Some((rows, cols, bytes))) => AddSource::Packed {
            bytes,
            rows: *rows,
            cols: *cols,
        },
        (None, None) => bail!("give --data or --codes"),
    };
    let n = source.rows();
    if let (Some(ids), Some(p)) = (&ids, &a.ids)
        && ids.len() != n
    {
        bail!("{}: {} ids for {n} new rows", p.display(), ids.len());
    }
    let merge = MergePolicy::tiered(a.merge_factor).with_max_rows(a.merge_max_rows);
    let mut writer = open_writer(&a.index, &a.check)?;
    // The index's model is read for rows that may be warned of only (the add reads it again).
    if let Some(d) = &data
        && d.off_unit_length().is_some()
        && let Some(m) = bsa::query::index_model(writer.snapshot()?)?
        && d.dim() == m.config.dim
    {
        super::io::warn_if_not_unit(d, m.config.method);
    }
    let r = bsa::live::add(
        &mut writer,
        source,
        ids.as_deref(),
        a.upsert,
        a.vectors,
        merge,
    )
    .with_context(|| {
        let from = a.data.as_ref().or(a.codes.as_ref()).expect("checked above");
        format!("adding {} to {}", from.display(), a.index.display())
    })?;
    errln!(
        "bsa: added {} ({}) to {} as {}{}{}{}; generation {}",
        counted(r.added as u64, "row"),
        match r.id_range {
            (a, b) if a == b => format!("id {a}"),
            (a, b) => format!("ids {a}..={b}"),
        },
        a.index.display(),
        r.segment,
        if r.replaced > 0 {
            format!(", replacing {}", r.replaced)
        } else {
            String::new()
        },
        if r.merged > 0 {
            format!(
                ", merging {} ({})",
                counted(r.merged as u64, "segment"),
                counted(r.merged_rows as u64, "row")
            )
        } else {
            String::new()
        },
        bridged_note(r.bridged, r.bridge_edges),
        r.generation
    );
    Ok(())
}

/// Opens `dir` for writing, saying on stderr when another writer holds it (else a wait behind
/// a long compaction looks like a hang), and waiting for it no longer than --lock-timeout.
/// Ctrl-C from here on stops the wait or the change before its commit, and removes what it
/// wrote. Unless --no-verify, an index whose files fail their checksums (every file's but the
/// graphs') is refused before anything is written.
fn open_writer(dir: &Path, check: &ChangeCheck) -> anyhow::Result<Writer> {
    let stop = super::signals::stop_on_signal()?;
    let wait = bsa_index::LockWait::new()
        .on_wait(|| super::io::say_waiting(dir))
        .stop(stop)
        .timeout(check.lock_timeout);
    let mut writer = Writer::open_waiting(dir, wait)?;
    if !check.no_verify {
        // Under the writers' lock: the generation checked is the one the change starts from.
        writer.verify_checksums().with_context(|| {
            format!(
                "{} is damaged, so it was not changed (pass --no-verify to change it anyway)",
                dir.display()
            )
        })?;
    }
    Ok(writer)
}

/// ", bridging N segments (E edges)" when segments were bridged from the largest graph.
fn bridged_note(segments: usize, edges: usize) -> String {
    match segments {
        0 => String::new(),
        _ => format!(
            ", bridging {} from the largest one's graph ({})",
            counted(segments as u64, "segment"),
            counted(edges as u64, "edge")
        ),
    }
}

pub fn delete(a: &DeleteArgs) -> anyhow::Result<()> {
    let ids = bsa::io::read_u64_ids(&a.ids)?;
    let r = open_writer(&a.index, &a.check)?.delete(&ids)?;
    if !r.unknown.is_empty() {
        let shown: Vec<String> = r.unknown.iter().take(10).map(u64::to_string).collect();
        errln!(
            "bsa: {} not in the index: {}{}",
            match r.unknown.len() {
                1 => "1 id was".to_string(),
                n => format!("{n} ids were"),
            },
            shown.join(", "),
            if r.unknown.len() > 10 { ", ..." } else { "" }
        );
    }
    errln!(
        "bsa: deleted {} from {}; generation {}",
        counted(r.deleted as u64, "row"),
        a.index.display(),
        r.generation
    );
    Ok(())
}

pub fn compact(a: &CompactArgs) -> anyhow::Result<()> {
    if a.max_segments == 0 {
        bail!("--max-segments must be at least 1 (the segments left after compacting)");
    }
    bsa::threads::configure(a.threads)?;
    let r = bsa::live::compact(&mut open_writer(&a.index, &a.check)?, a.max_segments)
        .with_context(|| format!("compacting {}", a.index.display()))?;
    if r.merged == 0 {
        errln!(
            "bsa: {} has {} and no deleted rows: nothing to compact{}",
            a.index.display(),
            counted(r.segments as u64, "segment"),
            bridged_note(r.bridged, r.bridge_edges)
        );
    } else {
        errln!(
            "bsa: merged {} into {} (dropped {} deleted); {} now{}; generation {}",
            counted(r.merged as u64, "segment"),
            counted(r.rows as u64, "row"),
            r.dropped,
            counted(r.segments as u64, "segment"),
            bridged_note(r.bridged, r.bridge_edges),
            r.generation
        );
    }
    Ok(())
}
