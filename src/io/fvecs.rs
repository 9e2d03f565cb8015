//! `.fvecs` reading: each row is a little-endian `i32` dimension followed by that many
//! little-endian `f32` values; all rows must have the same dimension.

use std::path::Path;

use super::embeddings::Embeddings;
use super::file::map_file;
use crate::error::{Error, Result};

/// Reads a whole `.fvecs` file into owned memory (see [`Embeddings::open`]).
pub(crate) fn read_fvecs(path: &Path) -> Result<Embeddings> {
    let map = map_file(path)?;
    let (n, dim, data) = parse(path, &map)?;
    Ok(Embeddings::owned(path.to_path_buf(), n, dim, data))
}

/// Parses `.fvecs` bytes into `(n, dim, row-major data)`; `n >= 1` and `dim >= 1` on success.
fn parse(path: &Path, bytes: &[u8]) -> Result<(usize, usize, Vec<f32>)> {
    let read_dim =
        |at: usize| i32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if bytes.len() < 4 {
        return Err(Error::format(
            path,
            format!(
                "no rows: the file has only {} bytes, too few for one .fvecs row (a 4-byte \
                 dimension followed by the values); it was probably cut short: re-create it",
                bytes.len()
            ),
        ));
    }
    if bytes.starts_with(b"\x93NUMPY") {
        return Err(Error::format(
            path,
            "this is a .npy file (numpy's magic), not .fvecs: rename it to *.npy",
        ));
    }
    let first = read_dim(0);
    let dim = match usize::try_from(first) {
        Ok(d) if d > 0 && d <= (bytes.len() - 4) / 4 => d,
        Ok(d) if d > 0 => {
            return Err(Error::format(
                path,
                format!(
                    "truncated .fvecs file: row 0 declares dimension {d}, which needs {} bytes, \
                     but the file has only {}; it was cut short (or is not .fvecs): re-create it",
                    4 + 4 * (d as u64),
                    bytes.len()
                ),
            ));
        }
        _ => {
            return Err(Error::format(
                path,
                format!(
                    "row 0 declares dimension {first}; .fvecs rows start with a positive int32 \
                     dimension, so this is not an .fvecs file (.ivecs/.bvecs are not supported)"
                ),
            ));
        }
    };
    // dim <= len / 4, so this cannot overflow.
    let row_bytes = 4 + 4 * dim;
    let n = bytes.len().div_ceil(row_bytes);
    let mut data = Vec::with_capacity(n * dim);
    for (row, chunk) in bytes.chunks(row_bytes).enumerate() {
        if chunk.len() >= 4 {
            let d = i32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            if usize::try_from(d).ok() != Some(dim) {
                return Err(Error::BadRow {
                    path: path.to_path_buf(),
                    row,
                    detail: format!(
                        "declares dimension {d} but row 0 declares {dim}; all rows of an .fvecs \
                         file must have the same dimension (is the file corrupt or a \
                         concatenation of different embeddings?)"
                    ),
                });
            }
        }
        if chunk.len() < row_bytes {
            return Err(Error::format(
                path,
                format!(
                    "truncated .fvecs file: row {row} needs {row_bytes} bytes (dimension {dim}) \
                     but only {} remain (file size {} is not a multiple of {row_bytes}); it was \
                     cut short: re-create it",
                    chunk.len(),
                    bytes.len()
                ),
            ));
        }
        data.extend(
            chunk[4..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
    Ok((n, dim, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fs;

    fn fvecs_bytes(rows: &[Vec<f32>]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in rows {
            out.extend_from_slice(&(r.len() as i32).to_le_bytes());
            for x in r {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        out
    }

    fn open_bytes(bytes: &[u8]) -> Result<Embeddings> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.fvecs");
        fs::write(&path, bytes).unwrap();
        Embeddings::open(&path)
    }

    #[test]
    fn round_trip() {
        let rows = vec![vec![1.0, 2.0, 3.0], vec![-4.0, 5.5, 0.0]];
        let e = open_bytes(&fvecs_bytes(&rows)).unwrap();
        assert_eq!((e.n(), e.dim()), (2, 3));
        assert!(!e.is_mapped());
        assert_eq!(e.as_slice(), &[1.0, 2.0, 3.0, -4.0, 5.5, 0.0]);
        assert!(e.path().ends_with("x.fvecs"));
    }

    /// A `.npy` file named `.fvecs`, or a directory, is said to be one.
    #[test]
    fn npy_bytes_or_a_directory_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let npy = dir.path().join("x.npy");
        crate::io::write_f32(&npy, 1, 2, &[1.0, 2.0]).unwrap();
        let msg = open_bytes(&fs::read(&npy).unwrap())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("this is a .npy file"), "{msg}");
        let msg = Embeddings::open(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("a directory"), "{msg}");
    }

    #[test]
    fn upper_case_extension() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.FVECS");
        fs::write(&path, fvecs_bytes(&[vec![1.0]])).unwrap();
        assert_eq!(Embeddings::open(&path).unwrap().n(), 1);
    }

    #[test]
    fn inconsistent_dims_name_the_row() {
        let rows = vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0, 7.0]];
        let mut bytes = fvecs_bytes(&rows);
        // Make the total a multiple of the first row size so only the dim check can catch it.
        bytes.extend_from_slice(&[0; 8]);
        let err = open_bytes(&bytes).unwrap_err();
        assert!(matches!(err, Error::BadRow { row: 2, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("row 2") && msg.contains("dimension 3"),
            "{msg}"
        );
    }

    #[test]
    fn truncation_is_reported() {
        let bytes = fvecs_bytes(&[vec![1.0, 2.0], vec![3.0, 4.0]]);
        for cut in [bytes.len() - 1, bytes.len() - 8, 13, 14] {
            let err = open_bytes(&bytes[..cut]).unwrap_err();
            assert!(matches!(err, Error::Format { .. }), "{cut}: {err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains("truncated") && msg.contains("row 1"),
                "{cut}: {msg}"
            );
        }
        // Cut inside the first row.
        let msg = open_bytes(&bytes[..7]).unwrap_err().to_string();
        assert!(msg.contains("truncated") && msg.contains("row 0"), "{msg}");
    }

    #[test]
    fn empty_and_nonsense_dims() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.fvecs");
        fs::write(&path, b"").unwrap();
        assert!(
            Embeddings::open(&path)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(
            open_bytes(&[1, 0])
                .unwrap_err()
                .to_string()
                .contains("no rows")
        );
        for d in [0i32, -3] {
            let mut bytes = d.to_le_bytes().to_vec();
            bytes.extend_from_slice(&[0; 8]);
            let msg = open_bytes(&bytes).unwrap_err().to_string();
            assert!(msg.contains("positive"), "{msg}");
        }
        let msg = open_bytes(&i32::MAX.to_le_bytes()).unwrap_err().to_string();
        assert!(msg.contains("truncated"), "{msg}");
    }

    #[test]
    fn values_are_checked_by_embeddings_methods() {
        let e = open_bytes(&fvecs_bytes(&[vec![1.0, 0.0], vec![0.0, f32::NAN]])).unwrap();
        let msg = e.check_finite().unwrap_err().to_string();
        assert!(msg.contains("x.fvecs") && msg.contains("row 1"), "{msg}");
        e.expect_dim(2).unwrap();
        assert!(e.expect_dim(3).unwrap_err().to_string().ends_with(
            "x.fvecs against the model's input dimension (embed with the same encoder the \
             model was trained on, or train a model for this dimension): expected 3, got 2"
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let path = Path::new("p.fvecs");
            if let Ok((n, dim, data)) = parse(path, &bytes) {
                prop_assert!(n >= 1 && dim >= 1);
                prop_assert_eq!(data.len(), n * dim);
                prop_assert_eq!(bytes.len(), n * (4 + 4 * dim));
            }
        }

        #[test]
        fn round_trips(n in 1usize..6, dim in 1usize..6, seed in any::<u32>()) {
            let rows: Vec<Vec<f32>> = (0..n)
                .map(|i| (0..dim).map(|j| (seed as f32) * 0.001 + (i * dim + j) as f32).collect())
                .collect();
            let (gn, gd, data) = parse(Path::new("p.fvecs"), &fvecs_bytes(&rows)).unwrap();
            prop_assert_eq!((gn, gd), (n, dim));
            prop_assert_eq!(data, rows.concat());
        }
    }
}
