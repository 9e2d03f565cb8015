//! Embedding file I/O: `.npy` (via [`npyz`]) and `.fvecs`.
//!
//! * [`Embeddings::open`] loads a 2-D float matrix. Little-endian C-order `float32` `.npy` files
//!   are memory-mapped with zero copy; `float16`, `float64`, big-endian and Fortran-order files are
//!   converted into an owned row-major `f32` buffer; `.fvecs` files are read into memory.
//! * [`write_f32`], [`write_u8`] and [`write_i32`] write 2-D `.npy` files atomically (a temporary
//!   file beside the target, then a rename), so readers never see a half-written file.
//! * [`read_u8`], [`read_i32`] and [`read_u64_ids`] read packed codes, ground truth and ids.
//!
//! Every malformed input (garbage bytes, a truncated file, the wrong dtype or rank, ...) is reported
//! as an [`Error`] naming the file, the problem and what to do; no input makes these functions panic.
//!
//! ```
//! # fn main() -> bsa::error::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("emb.npy");
//! bsa::io::write_f32(&path, 2, 3, &[1.0, 0.0, 0.0, 0.0, 2.0, 0.0])?;
//! let emb = bsa::io::Embeddings::open(&path)?;
//! assert_eq!((emb.n(), emb.dim()), (2, 3));
//! assert!(emb.is_mapped());
//! emb.check_finite()?;
//! emb.check_nonzero_norms()?;
//! emb.expect_dim(3)?;
//! # Ok(()) }
//! ```

pub(crate) mod embeddings;
mod file;
mod fvecs;
pub mod model;
mod npy;

pub use embeddings::{
    Embeddings, FLOAT32_NORMS, OffUnit, UNIT_TOLERANCE, check_float32_norms, off_unit_length,
};
pub use file::{abandon_writes_on, read_file, temp_dir_in, writable_target, write_atomic};
pub use npy::{
    check_float32_range, read_i32, read_u8, read_u64_ids, write_f32, write_i32, write_u8,
    write_u8_rows,
};

use std::path::Path;

use crate::error::{Error, Result};

// `open` is the one method defined here rather than beside the type: it calls the readers, which
// build `Embeddings`, so beside the type it would tie `embeddings.rs` and the readers in a circle.
impl Embeddings {
    /// Opens an embedding file, choosing the format by extension: `.npy` or `.fvecs`
    /// (case-insensitive). Any other extension is an error.
    ///
    /// `.npy` files must hold a 2-D `float32`, `float16` or `float64` array with at least one row.
    /// Fortran-order arrays are transposed into an owned row-major buffer.
    ///
    /// ```no_run
    /// let emb = bsa::io::Embeddings::open("corpus.npy")?;
    /// println!("{} vectors of dimension {}", emb.n(), emb.dim());
    /// # Ok::<(), bsa::error::Error>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Embeddings> {
        let path = path.as_ref();
        if path.is_dir() {
            return Err(Error::format(
                path,
                "a directory; give an embedding file in it (*.npy or *.fvecs)",
            ));
        }
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("npy") => npy::open_embeddings(path),
            Some("fvecs") => fvecs::read_fvecs(path),
            Some("npz") => Err(Error::format(
                path,
                "unsupported extension '.npz' (a zip of arrays); extract the embedding array and \
                 save it alone with numpy.save('emb.npy', arr), or convert to .fvecs",
            )),
            Some(other) => Err(Error::format(
                path,
                format!(
                    "unsupported embedding file extension '.{other}'; expected .npy \
                     (float32/float16/float64, shape n x dim) or .fvecs"
                ),
            )),
            None => Err(Error::format(
                path,
                "the file name has no extension, so its format is unknown; name it *.npy \
                 (float32/float16/float64, shape n x dim) or *.fvecs",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

    fn emb(n: usize, dim: usize, data: Vec<f32>) -> Embeddings {
        Embeddings::from_vec(n, dim, data).unwrap()
    }

    #[test]
    fn from_vec_accessors() {
        let e = emb(2, 3, vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!((e.n(), e.dim()), (2, 3));
        assert_eq!(e.path(), Path::new("<memory>"));
        assert_eq!(e.row(1), &[4., 5., 6.]);
        assert_eq!(e.view()[[1, 2]], 6.0);
        assert!(!e.is_mapped());
        assert!(format!("{e:?}").contains("dim: 3"));
    }

    #[test]
    fn embeddings_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Embeddings>();
    }

    #[test]
    fn from_vec_rejects_bad_sizes() {
        assert!(matches!(
            Embeddings::from_vec(2, 3, vec![0.0; 5]),
            Err(Error::DimMismatch {
                expected: 6,
                got: 5,
                ..
            })
        ));
        assert!(matches!(
            Embeddings::from_vec(0, 3, vec![]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            Embeddings::from_vec(3, 0, vec![]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            Embeddings::from_vec(usize::MAX, 2, vec![]),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn row_out_of_range_panics() {
        emb(1, 1, vec![1.0]).row(1);
    }

    #[test]
    fn check_finite_names_nan_row() {
        let e = emb(3, 2, vec![1., 2., 3., 4., 5., f32::NAN]);
        let err = e.check_finite().unwrap_err();
        assert!(matches!(err, Error::BadRow { row: 2, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("row 2") && msg.contains("column 1") && msg.contains("NaN"),
            "{msg}"
        );
        assert!(msg.contains("<memory>"), "{msg}");
    }

    #[test]
    fn check_finite_names_inf_row() {
        let e = emb(3, 2, vec![1., 2., f32::NEG_INFINITY, 4., 5., f32::INFINITY]);
        let msg = e.check_finite().unwrap_err().to_string();
        assert!(msg.contains("row 1") && msg.contains("-infinity"), "{msg}");
        let e = emb(1, 2, vec![1., f32::INFINITY]);
        let msg = e.check_finite().unwrap_err().to_string();
        assert!(msg.contains("row 0") && msg.contains("+infinity"), "{msg}");
        emb(2, 1, vec![f32::MAX, f32::MIN_POSITIVE])
            .check_finite()
            .unwrap();
    }

    #[test]
    fn check_nonzero_norms_names_zero_row() {
        let e = emb(3, 2, vec![1., 0., 0., 0., 0., 1.]);
        let err = e.check_nonzero_norms().unwrap_err();
        assert!(matches!(err, Error::BadRow { row: 1, .. }), "{err:?}");
        assert!(err.to_string().contains("L2 norm is 0"), "{err}");
        // Not finite.
        let e = emb(2, 1, vec![1., f32::NAN]);
        let msg = e.check_nonzero_norms().unwrap_err().to_string();
        assert!(msg.contains("row 1") && msg.contains("not finite"), "{msg}");
        // Large and tiny values whose squares overflow/underflow f32 are still fine.
        emb(2, 2, vec![1e30, 1e30, 1e-30, 0.0])
            .check_nonzero_norms()
            .unwrap();
        // Norm above f32::MAX.
        let e = emb(1, 4, vec![f32::MAX; 4]);
        let msg = e.check_nonzero_norms().unwrap_err().to_string();
        assert!(msg.contains("outside the float32 range"), "{msg}");
    }

    #[test]
    fn expect_dim_names_file_and_sizes() {
        let e = emb(1, 128, vec![1.0; 128]);
        e.expect_dim(128).unwrap();
        let err = e.expect_dim(384).unwrap_err();
        assert!(
            matches!(
                err,
                Error::DimMismatch {
                    expected: 384,
                    got: 128,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("the columns of <memory> against the model's input dimension")
                && msg.ends_with("expected 384, got 128"),
            "{msg}"
        );
    }

    #[test]
    fn open_rejects_unknown_extensions() {
        for name in ["emb.txt", "emb.npz", "emb"] {
            let err = Embeddings::open(name).unwrap_err();
            assert!(matches!(err, Error::Format { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains(".npy") && msg.contains(".fvecs"), "{msg}");
        }
    }

    #[test]
    fn open_missing_file_is_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Embeddings::open(dir.path().join("missing.npy")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.npy"));
    }

    #[test]
    fn write_atomic_leaves_no_temp_file_and_keeps_target_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write_atomic(&path, |w| w.write_all(b"first")).unwrap();
        write_atomic(&path, |w| w.write_all(b"second")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let err = write_atomic(&path, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("boom"));
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.bin")]);
    }

    /// A stop asked for while a file is written (a signal, in `bsa`) leaves the old file and no
    /// temporary one; asked for before, nothing is written at all.
    #[test]
    fn a_write_stopped_midway_leaves_the_old_file_and_no_temporary_one() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write_atomic(&path, |w| w.write_all(b"old")).unwrap();
        let stop = AtomicBool::new(false);
        let err = file::write_atomic_unless(&path, Some(&stop), |w| {
            w.write_all(b"new, whole")?;
            stop.store(true, Ordering::SeqCst); // the signal, as the write ends
            Ok(())
        })
        .unwrap_err();
        assert!(matches!(err, crate::Error::Stopped), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        let err = file::write_atomic_unless(&dir.path().join("other.bin"), Some(&stop), |_| {
            panic!("a write asked to stop before it began must not begin")
        })
        .unwrap_err();
        assert!(matches!(err, crate::Error::Stopped), "{err}");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.bin")]);
        // Not asked to stop, the same write is put in place.
        stop.store(false, Ordering::SeqCst);
        file::write_atomic_unless(&path, Some(&stop), |w| w.write_all(b"new")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }

    /// A replaced file keeps its mode: a 0600 result is not made world-readable by the next
    /// write of it.
    #[cfg(unix)]
    #[test]
    fn write_atomic_keeps_the_mode_of_the_file_it_replaces() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private.jsonl");
        write_atomic(&path, |w| w.write_all(b"first")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        // Not readable by others while it is written either.
        write_atomic(&path, |w| {
            let tmp = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.file_name().unwrap().to_string_lossy().contains(".tmp-"))
                .unwrap();
            let mode = fs::metadata(&tmp).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            w.write_all(b"second")
        })
        .unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(
            (fs::read(&path).unwrap(), mode & 0o7777),
            (b"second".to_vec(), 0o600)
        );
        // Set-id bits are not copied; the rest of the mode is, readable by all included, and
        // a read-only one.
        for (old, new) in [(0o4755, 0o755), (0o444, 0o444)] {
            fs::set_permissions(&path, fs::Permissions::from_mode(old)).unwrap();
            write_atomic(&path, |w| w.write_all(b"third")).unwrap();
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o7777, new);
        }
        // A new file gets the mode any new file gets (the umask's), not a private one.
        let (fresh, plain) = (dir.path().join("fresh.jsonl"), dir.path().join("plain"));
        write_atomic(&fresh, |w| w.write_all(b"x")).unwrap();
        fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&fresh), mode(&plain));
    }

    #[test]
    fn write_atomic_refuses_paths_inside_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let idx = dir.path().join("idx");
        let codes = bsa_index::pack::pack_le_bytes(&[0b0001, 0b0011], 2, 1, 4).unwrap();
        bsa_index::IndexBuilder::new(4, &codes).build(&idx).unwrap();
        let before = fs::read(idx.join("codes.bin")).unwrap();
        for inside in [idx.join("codes.bin"), idx.join("model.safetensors")] {
            let err = write_atomic(&inside, |w| w.write_all(b"x")).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("inside the index directory"), "{msg}");
            assert!(
                msg.contains("codes.bin") || msg.contains("model.safetensors"),
                "{msg}"
            );
        }
        assert_eq!(fs::read(idx.join("codes.bin")).unwrap(), before);
        assert!(!idx.join("model.safetensors").exists());
        // Beside the index is fine.
        write_atomic(&dir.path().join("model.safetensors"), |w| w.write_all(b"x")).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn write_atomic_removes_the_temporary_files_of_ended_processes_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let ended = child.id();
        child.wait().unwrap();
        let me = std::process::id();
        let parent = std::os::unix::process::parent_id();
        let name = |pid: u32, n: &str| format!(".out.bin.tmp-{pid}-{n}");
        // An ended process's; this one's and a running one's (writes in progress), a recent
        // one (its writer may not have locked it yet), a locked one (its writer runs where
        // this process cannot see it); names that are not a write's temporary file of out.bin.
        let stale = name(ended, "3");
        let (recent, locked) = (name(ended, "4"), name(ended, "5"));
        let kept = [
            name(me, "99"),
            name(parent, "0"),
            recent.clone(),
            locked.clone(),
            name(ended, "x"),
            format!(".other.bin.tmp-{ended}-0"),
            format!(".out.bin.tmp-{ended}"),
        ];
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for n in kept.iter().chain([&stale]) {
            let f = fs::File::create(dir.path().join(n)).unwrap();
            if *n != recent {
                f.set_modified(hour_ago).unwrap();
            }
        }
        let holder = fs::File::open(dir.path().join(&locked)).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: flock on an open descriptor.
        assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) }, 0);
        // The write holds its own temporary file's lock while it writes (what keeps a process
        // that cannot see this one from removing it).
        let mine = format!(".out.bin.tmp-{me}-");
        write_atomic(&path, |w| {
            let own = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&mine))
                .find(|p| !p.ends_with(name(me, "99")))
                .expect("the write's temporary file");
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(own)
                .unwrap();
            // SAFETY: flock on an open descriptor.
            let taken = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            assert_eq!(taken, -1, "the writer holds its lock");
            w.write_all(b"done")
        })
        .unwrap();
        drop(holder);
        assert_eq!(fs::read(&path).unwrap(), b"done");
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut want: Vec<String> = kept.to_vec();
        want.push("out.bin".into());
        want.sort();
        assert_eq!(names, want);
    }
}
