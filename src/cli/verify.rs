//! `bsa verify`: check every checksum of an index directory; print what it holds.

use std::path::PathBuf;
use std::process::ExitCode;

use bsa_index::OpenOptions;
use bsa_index::live::Snapshot;

/// Verify an index: every checksum, and what checksums cannot vouch for.
///
/// Beyond the checksums: ids unique (over every segment's live rows), finite vectors and
/// norms, posting lists, bitmaps and sparse codes equal to what the codes imply (built again
/// from them: about as much memory as building them), and the index's model loading and
/// fitting its codes and vectors.
///
/// Exit code 0 when the index is intact, 1 when a check fails (the message names the file:
/// damaged, missing, or from another index; a manifest that is there but damaged too), 2 when
/// there is no index to check (no such folder, no manifest in it, one that is not a bsa
/// index's, or one of a newer format version than this bsa reads) or when the check could not
/// be made (a file it may not read, no file descriptor left, no address space to map a file).
///
/// Example:
///   bsa verify --index idx
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Index directory from `bsa build`.
    #[arg(long)]
    pub index: PathBuf,
    /// Print the manifest as JSON on stdout after a successful check.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &Args) -> anyhow::Result<ExitCode> {
    // Open with the cheap checks only, so that a bad payload checksum is reported by verify()
    // (exit 1) rather than as an open error.
    let index = match Snapshot::open_with(&a.index, OpenOptions::verify_checksums(false)) {
        Ok(i) => i,
        Err(e) if unreadable(&e, &a.index) || environmental(&e) => return Err(e.into()),
        Err(e) => {
            errln!("bsa: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    match index.verify() {
        Err(e) if environmental(&e) => return Err(e.into()),
        Err(e) => {
            errln!("bsa: {e}");
            return Ok(ExitCode::from(1));
        }
        Ok(()) => {}
    }
    // The model's checksum is the manifest's word for it; loading it checks that it is a model
    // and that it fits the index, which searches with float queries rely on.
    match bsa::query::index_model(&index) {
        Err(bsa::Error::Index(e)) if environmental(&e) => return Err(e.into()),
        Err(bsa::Error::Io { path, error }) if bsa_index::lacks_resources(&error) => {
            return Err(bsa::Error::Io { path, error }.into());
        }
        Err(e) => {
            errln!("bsa: {e}");
            return Ok(ExitCode::from(1));
        }
        Ok(_) => {}
    }
    if a.json {
        if index.is_segmented() {
            let path = a.index.join(bsa_index::manifest::MANIFEST_FILE);
            let bytes = std::fs::read(&path)?;
            super::io::print_json(&bsa_index::live::LiveManifest::from_bytes(&bytes, &path)?)?;
        } else {
            super::io::print_json(index.segments()[0].index().manifest())?;
        }
    } else {
        let deleted = index.rows() - index.len();
        outln!(
            "{}: ok, {} codes of {} bits{}{}{}{}",
            a.index.display(),
            index.len(),
            index.bits(),
            if index.is_segmented() {
                format!(
                    " in {}{}, generation {}",
                    super::io::counted(index.segments().len() as u64, "segment"),
                    match deleted {
                        0 => String::new(),
                        n => format!(
                            " ({} not counted)",
                            super::io::counted(n as u64, "deleted row")
                        ),
                    },
                    index.generation()
                )
            } else {
                String::new()
            },
            if index.has_vectors() { ", vectors" } else { "" },
            match index.graph_metric() {
                None => String::new(),
                Some(_) => {
                    let bridged = index
                        .segments()
                        .iter()
                        .filter(|s| s.bridged_from().is_some())
                        .count();
                    match bridged {
                        0 => ", hnsw graph".to_string(),
                        n => format!(
                            ", hnsw graph ({} bridged)",
                            super::io::counted(n as u64, "segment")
                        ),
                    }
                }
            },
            if index.model_path().is_some() {
                ", model"
            } else {
                ""
            },
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether `e` failed for want of something of this process or machine (a permission, a file
/// descriptor, address space; [`bsa_index::lacks_resources`]), not for damage: exit 2, so that a
/// script that rebuilds or restores a damaged index leaves an intact one alone.
fn environmental(e: &bsa_index::Error) -> bool {
    matches!(e, bsa_index::Error::Io { error, .. } if bsa_index::lacks_resources(error))
}

/// Whether `e`, from opening the index `dir`, says that there is no index to check (exit 2):
/// the folder or its manifest cannot be read, or the manifest is not a bsa index's, or is a
/// newer bsa's (a format version or a feature this one does not know). A damaged manifest or
/// any other file is a failed check (exit 1).
fn unreadable(e: &bsa_index::Error, dir: &std::path::Path) -> bool {
    let manifest = dir.join(bsa_index::manifest::MANIFEST_FILE);
    match e {
        bsa_index::Error::Io { path, .. } => *path == dir || *path == manifest,
        bsa_index::Error::NotAnIndex { path }
        | bsa_index::Error::Version { path, .. }
        | bsa_index::Error::UnknownFeature { path, .. } => *path == manifest,
        bsa_index::Error::Corrupt { .. }
        | bsa_index::Error::Checksum { .. }
        | bsa_index::Error::Truncated { .. } => false,
        _ => true,
    }
}
