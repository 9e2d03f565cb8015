//! `.npy` reading and writing. Header parsing, dtype conversion and header writing are done by
//! [`npyz`]; this module adds the checks (rank, dtype, sizes, truncation) and zero-copy mapping.

use std::io::{Cursor, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use npyz::{DType, NpyFile, NpyHeader, Order, TypeChar, TypeStr, WriteOptions, WriterBuilder};

use super::embeddings::Embeddings;
use super::file::{map_file, write_atomic};
use crate::error::{Error, Result};

/// The `.npy` magic string.
const MAGIC: &[u8] = b"\x93NUMPY";

/// Largest header accepted. numpy writes ~128 bytes for plain arrays and itself refuses headers over
/// 10 000 bytes by default; the cap bounds memory and parser recursion on corrupt files.
const MAX_HEADER_LEN: usize = 1 << 16;

/// Deepest bracket nesting accepted in the header text. npyz parses the header with
/// py_literal's grammar, which parses a nested list (and a dict) twice over when its last
/// element has no trailing comma, so the time doubles with each level: 20 nested `[` took 50
/// seconds, and an 80-byte header of 40 would be parsed for years. numpy writes 2 levels for a
/// plain array (the dict and the shape tuple) and 3 or 4 for a structured dtype (refused by every
/// reader here, and still named as such); at 4, a 64 KiB header parses in a few seconds at worst.
const MAX_HEADER_DEPTH: usize = 4;

/// The deepest nesting of `(`, `[` and `{` in `text` (brackets inside strings count too: the
/// bound is on what the parser may recurse into, and a real header has few of either).
fn nesting_depth(text: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0);
    for &b in text {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A parsed `.npy` header and where its data starts.
struct Parsed {
    header: NpyHeader,
    data_offset: usize,
}

/// Parses the header of the `.npy` file whose bytes are `bytes`.
///
/// Only the fixed-size preamble (magic, version, header length) is inspected here, to reject
/// garbage and absurd header lengths before npyz allocates a buffer for them; npyz parses the rest.
fn parse_header(path: &Path, bytes: &[u8]) -> Result<Parsed> {
    if bytes.len() < 10 && bytes.starts_with(MAGIC) {
        return Err(Error::format(
            path,
            format!(
                "truncated .npy file: {} bytes, fewer than its header's first 10",
                bytes.len()
            ),
        ));
    }
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        let shown = &bytes[..bytes.len().min(8)];
        return Err(Error::format(
            path,
            format!(
                "not a .npy file: it does not start with the \\x93NUMPY magic bytes (starts with \
                 {shown:02x?}); write arrays with numpy.save(path, array)"
            ),
        ));
    }
    let preamble = match bytes[6] {
        1 => 10,
        2 | 3 => 12,
        major => {
            return Err(Error::format(
                path,
                format!(
                    "unsupported .npy format version {major}.{}; versions 1.0 to 3.0 can be read: \
                     re-save the array with numpy.save",
                    bytes[7]
                ),
            ));
        }
    };
    if bytes.len() < preamble {
        return Err(truncated_header(path, preamble, bytes.len()));
    }
    let header_len = if preamble == 10 {
        usize::from(u16::from_le_bytes([bytes[8], bytes[9]]))
    } else {
        // u32 always fits in usize on the 32- and 64-bit targets we build for; saturate otherwise.
        usize::try_from(u32::from_le_bytes([
            bytes[8], bytes[9], bytes[10], bytes[11],
        ]))
        .unwrap_or(usize::MAX)
    };
    if header_len > MAX_HEADER_LEN {
        return Err(Error::format(
            path,
            format!(
                "the .npy header claims to be {header_len} bytes long; at most {MAX_HEADER_LEN} is \
                 supported (numpy writes ~128 bytes for a plain array), so the file is probably \
                 corrupt: re-save it with numpy.save"
            ),
        ));
    }
    let header_end = preamble + header_len;
    if bytes.len() < header_end {
        return Err(truncated_header(path, header_end, bytes.len()));
    }
    // numpy ends the header's text with a newline. One that does not end where the length
    // field says is most likely a damaged length field, which is the thing to say when the
    // text there cannot be read (rather than what the data bytes read as text look like).
    let length_damaged = bytes[header_end - 1] != b'\n';
    let damaged_length = || {
        Error::format(
            path,
            format!(
                "the .npy header's length field says {header_len} bytes, but the header's text does \
                 not end there (numpy ends it with a newline): the file is corrupt: re-save it \
                 with numpy.save"
            ),
        )
    };
    let depth = nesting_depth(&bytes[preamble..header_end]);
    if depth > MAX_HEADER_DEPTH && length_damaged {
        return Err(damaged_length());
    }
    if depth > MAX_HEADER_DEPTH {
        return Err(Error::format(
            path,
            format!(
                "the .npy header nests brackets {depth} deep; at most {MAX_HEADER_DEPTH} is \
                 supported (numpy writes 2 for a plain array), so the file is probably corrupt: \
                 re-save it with numpy.save"
            ),
        ));
    }
    let mut cursor = Cursor::new(&bytes[..header_end]);
    // npyz computes the element count with an unchecked u64 product, which panics (with overflow
    // checks on) for shapes such as (2**40, 2**40) found in corrupt files. Catch that and report it.
    let parsed = catch_unwind(AssertUnwindSafe(|| NpyHeader::from_reader(&mut cursor)));
    let header = match parsed {
        Ok(Ok(header)) => header,
        Ok(Err(_)) if length_damaged => return Err(damaged_length()),
        Ok(Err(e)) => {
            return Err(Error::format(
                path,
                format!(
                    "could not parse the .npy header ({e}); the file is corrupt or was not written \
                     by numpy: re-save the array with numpy.save"
                ),
            ));
        }
        Err(_) => {
            return Err(Error::format(
                path,
                "the .npy header declares a shape with more than 2^64 elements; the file is \
                 corrupt: re-save the array with numpy.save",
            ));
        }
    };
    check_header_keys(path, &bytes[preamble..header_end])?;
    // npyz reads exactly the declared header; use the cursor position rather than trusting that.
    let data_offset = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
    Ok(Parsed {
        header,
        data_offset,
    })
}

/// The keys numpy writes in a `.npy` header, and the only ones `numpy.load` accepts.
const HEADER_KEYS: [&str; 3] = ["descr", "fortran_order", "shape"];

/// Refuses a header (already parsed by npyz, which reads the keys it needs and ignores the rest)
/// whose dict has a key other than numpy's three, or one of them twice (npyz would take the
/// last `shape`): numpy refuses the first, and neither comes from `numpy.save`.
fn check_header_keys(path: &Path, text: &[u8]) -> Result<()> {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let parsed = std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse::<py_literal::Value>().ok());
    // npyz parsed the same text into a dict a moment ago.
    let Some(py_literal::Value::Dict(entries)) = parsed else {
        return Ok(());
    };
    let mut seen: Vec<String> = Vec::with_capacity(entries.len());
    for (key, _) in &entries {
        let key = key
            .as_string()
            .map_or_else(|| format!("{key}"), String::clone);
        let problem = if !HEADER_KEYS.contains(&key.as_str()) {
            format!("has the key {key:?}, which numpy neither writes nor reads")
        } else if seen.contains(&key) {
            format!("has the key {key:?} twice")
        } else {
            seen.push(key);
            continue;
        };
        return Err(Error::format(
            path,
            format!(
                "the .npy header's dict {problem} (numpy.save writes 'descr', 'fortran_order' and \
                 'shape', once each): the file was not written by numpy; re-save the array with \
                 numpy.save"
            ),
        ));
    }
    Ok(())
}

fn truncated_header(path: &Path, need: usize, have: usize) -> Error {
    Error::format(
        path,
        format!(
            "truncated .npy file: the header needs {need} bytes but the file has only {have}; the \
             file was cut short (interrupted write, copy or download?): re-create it"
        ),
    )
}

/// `(2, 3)` / `(10,)`, as numpy prints shapes.
fn shape_str(shape: &[u64]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => {
            let parts: Vec<String> = shape.iter().map(u64::to_string).collect();
            format!("({})", parts.join(", "))
        }
    }
}

/// `'<i4' (int32)`: the dtype as written in the file, plus numpy's name where there is one.
fn dtype_str(dtype: &DType) -> String {
    match dtype {
        DType::Plain(ts) => {
            let bits = ts.size_field().saturating_mul(8);
            let name = match ts.type_char() {
                TypeChar::Bool => Some("bool".to_string()),
                TypeChar::Int => Some(format!("int{bits}")),
                TypeChar::Uint => Some(format!("uint{bits}")),
                TypeChar::Float => Some(format!("float{bits}")),
                TypeChar::Complex => Some(format!("complex{bits}")),
                TypeChar::ByteStr | TypeChar::UnicodeStr => Some("string".to_string()),
                TypeChar::Object => Some("object".to_string()),
                TypeChar::TimeDelta | TypeChar::DateTime => Some("datetime".to_string()),
                _ => None,
            };
            match name {
                Some(name) => format!("'{ts}' ({name})"),
                None => format!("'{ts}'"),
            }
        }
        other => format!("structured {}", other.descr()),
    }
}

/// The scalar type string if the dtype is a plain (non-structured) scalar.
fn plain(dtype: &DType) -> Option<&TypeStr> {
    match dtype {
        DType::Plain(ts) => Some(ts),
        _ => None,
    }
}

/// Converts a shape entry to `usize`.
fn dim_usize(path: &Path, shape: &[u64], v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| {
        Error::format(
            path,
            format!(
                "shape {} does not fit in memory on this platform",
                shape_str(shape)
            ),
        )
    })
}

/// Checks that exactly `count * item_size` data bytes follow the header and returns them.
fn data_bytes<'a>(
    path: &Path,
    bytes: &'a [u8],
    parsed: &Parsed,
    count: usize,
    item_size: usize,
) -> Result<&'a [u8]> {
    let shape = parsed.header.shape();
    let dtype = dtype_str(&parsed.header.dtype());
    let need = count.checked_mul(item_size).ok_or_else(|| {
        Error::format(
            path,
            format!(
                "shape {} of {dtype} needs more bytes than this platform can address; the file is \
                 corrupt",
                shape_str(shape)
            ),
        )
    })?;
    let have = bytes.len().saturating_sub(parsed.data_offset);
    if have < need {
        return Err(Error::format(
            path,
            format!(
                "truncated .npy file: shape {} of {dtype} needs {need} data bytes after the \
                 {}-byte header, but only {have} are present; the file was cut short \
                 (interrupted write, copy or download?): re-create it",
                shape_str(shape),
                parsed.data_offset
            ),
        ));
    }
    if have > need {
        return Err(Error::format(
            path,
            format!(
                "{} unexpected bytes after the array data: shape {} of {dtype} needs {need} data \
                 bytes but {have} follow the header; the file is not a single .npy array: re-save \
                 it with numpy.save",
                have - need,
                shape_str(shape)
            ),
        ));
    }
    Ok(&bytes[parsed.data_offset..])
}

/// Reads all elements with npyz (which handles byte order and, with the `half` feature, `f16`).
fn read_elements<T: npyz::Deserialize>(
    path: &Path,
    parsed: &Parsed,
    data: &[u8],
) -> Result<Vec<T>> {
    NpyFile::with_header(parsed.header.clone(), data)
        .into_vec::<T>()
        .map_err(|e| {
            Error::format(
                path,
                format!("could not decode the .npy data ({e}); re-save the array with numpy.save"),
            )
        })
}

/// Reorders a Fortran-order (column-major) `rows x cols` buffer into row-major order.
fn to_c_order<T: Copy>(v: Vec<T>, rows: usize, cols: usize, order: Order) -> Vec<T> {
    match order {
        Order::C => v,
        Order::Fortran => {
            let mut out = Vec::with_capacity(v.len());
            for i in 0..rows {
                out.extend((0..cols).map(|j| v[j * rows + i]));
            }
            out
        }
    }
}

/// Checks the shape is 2-D and returns `(rows, cols)`. `what` is e.g. "a 2-D float array (n x dim)".
fn shape_2d(path: &Path, parsed: &Parsed, what: &str) -> Result<(usize, usize)> {
    let shape = parsed.header.shape();
    let hint = match shape.len() {
        0 => "; a single number cannot be used: save a 2-D array".to_string(),
        1 => "; reshape to 2-D before saving (numpy: x.reshape(1, -1) for one vector, \
              x.reshape(-1, 1) for one column)"
            .to_string(),
        2 => String::new(),
        _ => "; reshape to 2-D before saving (numpy: x.reshape(-1, x.shape[-1]))".to_string(),
    };
    match *shape {
        [rows, cols] => Ok((dim_usize(path, shape, rows)?, dim_usize(path, shape, cols)?)),
        _ => Err(Error::format(
            path,
            format!("expected {what}, found shape {}{hint}", shape_str(shape)),
        )),
    }
}

/// The number of elements of a `rows x cols` array, refused (the file is corrupt) when it
/// overflows `usize`.
fn element_count(path: &Path, rows: usize, cols: usize) -> Result<usize> {
    rows.checked_mul(cols).ok_or_else(|| {
        Error::format(
            path,
            "the array shape overflows the address space; the file is corrupt",
        )
    })
}

fn check_no_pickle(path: &Path, parsed: &Parsed) -> Result<()> {
    if parsed.header.uses_pickled_array() {
        return Err(Error::format(
            path,
            format!(
                "the array has dtype {} (pickled Python objects), which cannot be read; convert it \
                 to a numeric array (e.g. np.asarray(x, dtype=np.float32)) and save again",
                dtype_str(&parsed.header.dtype())
            ),
        ));
    }
    Ok(())
}

/// Loads embeddings from a `.npy` file (see [`Embeddings::open`]).
pub(crate) fn open_embeddings(path: &Path) -> Result<Embeddings> {
    let map = map_file(path)?;
    let parsed = parse_header(path, &map)?;
    check_no_pickle(path, &parsed)?;
    let dtype = parsed.header.dtype();
    let size = match plain(&dtype) {
        Some(ts) if ts.type_char() == TypeChar::Float && matches!(ts.size_field(), 2 | 4 | 8) => {
            ts.size_field() as usize
        }
        _ => {
            return Err(Error::format(
                path,
                format!(
                    "expected float32, float16 or float64 embeddings, found dtype {}; convert \
                     before saving (numpy: x.astype(np.float32))",
                    dtype_str(&dtype)
                ),
            ));
        }
    };
    let (n, dim) = shape_2d(path, &parsed, "a 2-D float array (n x dim)")?;
    if n == 0 {
        return Err(Error::format(
            path,
            format!(
                "no rows: the array has shape {}; an embedding file needs at least one vector",
                shape_str(parsed.header.shape())
            ),
        ));
    }
    if dim == 0 {
        return Err(Error::format(
            path,
            format!(
                "no columns: the array has shape {}; embeddings need at least one dimension",
                shape_str(parsed.header.shape())
            ),
        ));
    }
    let count = element_count(path, n, dim)?;
    let data = data_bytes(path, &map, &parsed, count, size)?;
    let endianness = plain(&dtype).map(TypeStr::endianness);
    let order = parsed.header.order();
    let native_f32 =
        size == 4 && order == Order::C && endianness == Some(npyz::Endianness::of_machine());
    if native_f32 {
        if bytemuck::try_cast_slice::<u8, f32>(data).is_ok() {
            let offset = parsed.data_offset;
            return Ok(Embeddings::mapped(path.to_path_buf(), n, dim, map, offset));
        }
        // Misaligned data (a hand-made header whose length is not a multiple of 4): copy.
        let v = data
            .chunks_exact(4)
            .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        return Ok(Embeddings::owned(path.to_path_buf(), n, dim, v));
    }
    let v: Vec<f32> = match size {
        2 => read_elements::<half::f16>(path, &parsed, data)?
            .into_iter()
            .map(f32::from)
            .collect(),
        4 => read_elements::<f32>(path, &parsed, data)?,
        _ => {
            let wide = to_c_order(read_elements::<f64>(path, &parsed, data)?, n, dim, order);
            check_float32_range(&wide, dim).map_err(|d| Error::format(path, d))?;
            let v = wide.iter().map(|&x| x as f32).collect();
            return Ok(Embeddings::owned(path.to_path_buf(), n, dim, v));
        }
    };
    Ok(Embeddings::owned(
        path.to_path_buf(),
        n,
        dim,
        to_c_order(v, n, dim, order),
    ))
}

/// Checks that float64 rows (`dim` values each, C order) survive bsa's float32, and says where
/// they do not: a finite value beyond float32's range would become infinite, and a row of
/// values below its smallest would become all zeros. Either would then be reported as such
/// ("+infinity", "an all-zero vector"), which the data does not hold and numpy's checks of it
/// would not find. Used for float64 `.npy` files and Python's float64 arrays.
///
/// ```
/// assert!(bsa::io::check_float32_range(&[1.0, -2.5, 1e-30, 0.0], 2).is_ok());
/// let e = bsa::io::check_float32_range(&[1.0, 2.0, 3.0, 1e300], 2).unwrap_err();
/// assert!(e.starts_with("row 1, column 1 is 1e300, beyond the range of float32"));
/// ```
pub fn check_float32_range(x: &[f64], dim: usize) -> std::result::Result<(), String> {
    for (row, values) in x.chunks_exact(dim.max(1)).enumerate() {
        if let Some((col, v)) = values
            .iter()
            .enumerate()
            .find(|(_, v)| v.is_finite() && !(**v as f32).is_finite())
        {
            return Err(format!(
                "row {row}, column {col} is {v:e}, beyond the range of float32 (3.4e38), which \
                 bsa computes in: scale the rows down (embeddings are compared by direction)"
            ));
        }
        if values.iter().any(|&v| v != 0.0) && values.iter().all(|&v| v as f32 == 0.0) {
            return Err(format!(
                "row {row}'s values are all below float32's smallest (1.4e-45 in magnitude), \
                 which bsa computes in: it would be an all-zero row; scale the rows up \
                 (embeddings are compared by direction)"
            ));
        }
    }
    Ok(())
}

/// Checks `data.len() == rows * cols` for the writers.
fn check_len(path: &Path, rows: usize, cols: usize, len: usize) -> Result<()> {
    let expected = rows.checked_mul(cols).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "a {rows} x {cols} array overflows the address space"
        ))
    })?;
    if len != expected {
        return Err(Error::DimMismatch {
            what: format!(
                "number of values passed to write a {rows} x {cols} array to {}",
                path.display()
            ),
            expected,
            got: len,
        });
    }
    Ok(())
}

/// Writes a 2-D `.npy` array with type string `descr`; values are encoded by `to_le`.
fn write_2d<T: Copy, const N: usize>(
    path: &Path,
    rows: usize,
    cols: usize,
    data: &[T],
    descr: &str,
    to_le: impl Fn(T) -> [u8; N],
) -> Result<()> {
    check_len(path, rows, cols, data.len())?;
    let ts: TypeStr = descr
        .parse()
        .map_err(|e| Error::InvalidArgument(format!("bad dtype {descr}: {e}")))?;
    write_atomic(path, |w| {
        WriteOptions::<T>::new()
            .dtype(DType::Plain(ts))
            .shape(&[rows as u64, cols as u64])
            .writer(&mut *w)
            .write_header_only()?;
        let mut buf = Vec::with_capacity(N * 16384);
        for chunk in data.chunks(16384) {
            buf.clear();
            for &x in chunk {
                buf.extend_from_slice(&to_le(x));
            }
            w.write_all(&buf)?;
        }
        Ok(())
    })
}

/// Writes an `n x dim` row-major `float32` matrix (`<f4`) as `.npy`, atomically.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("x.npy");
/// bsa::io::write_f32(&path, 1, 2, &[0.5, -1.0]).unwrap();
/// assert_eq!(bsa::io::Embeddings::open(&path).unwrap().row(0), &[0.5, -1.0]);
/// ```
pub fn write_f32(path: impl AsRef<Path>, n: usize, dim: usize, data: &[f32]) -> Result<()> {
    write_2d(path.as_ref(), n, dim, data, "<f4", f32::to_le_bytes)
}

/// Writes an `n x cols` row-major `uint8` matrix (`|u1`, e.g. packed binary codes) as `.npy`,
/// atomically.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("codes.npy");
/// bsa::io::write_u8(&path, 2, 1, &[0b1010, 255]).unwrap();
/// assert_eq!(bsa::io::read_u8(&path).unwrap(), (2, 1, vec![0b1010, 255]));
/// ```
pub fn write_u8(path: impl AsRef<Path>, n: usize, cols: usize, data: &[u8]) -> Result<()> {
    write_2d(path.as_ref(), n, cols, data, "|u1", |x: u8| [x])
}

/// Writes an `n x cols` `uint8` matrix (as [`write_u8`]) whose rows `fill` hands to the sink
/// it is given, in order and in pieces of any size, so that no copy of the whole array is
/// held (`bsa encode` writes a million 4096-bit codes, 512 MB, as it encodes them). A file is
/// written atomically, and not at all unless `fill` succeeds with exactly `n * cols` bytes (the
/// sink refuses bytes past them); to a stream (`-`, a device) the bytes go as they come, so an
/// error there follows what was sent.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("codes.npy");
/// bsa::io::write_u8_rows(&path, 3, 1, |sink| {
///     sink(&[1, 2])?;
///     sink(&[3])
/// })?;
/// assert_eq!(bsa::io::read_u8(&path)?, (3, 1, vec![1, 2, 3]));
/// assert!(bsa::io::write_u8_rows(dir.path().join("short.npy"), 3, 1, |sink| sink(&[1])).is_err());
/// let long = bsa::io::write_u8_rows(dir.path().join("long.npy"), 1, 1, |sink| sink(&[1, 2]));
/// assert!(long.is_err());
/// // A fill that stops (a Ctrl-C) leaves nothing either, and its error is returned as it was.
/// let stopped = bsa::io::write_u8_rows(dir.path().join("stopped.npy"), 2, 1, |sink| {
///     sink(&[1])?;
///     Err(bsa::Error::Stopped)
/// });
/// assert!(matches!(stopped, Err(bsa::Error::Stopped)));
/// assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1); // codes.npy: no temporary file
/// # Ok::<(), bsa::Error>(())
/// ```
pub fn write_u8_rows(
    path: impl AsRef<Path>,
    rows: usize,
    cols: usize,
    fill: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>,
) -> Result<()> {
    let path = path.as_ref();
    let ts: TypeStr = "|u1".parse().expect("a valid type string");
    // `fill`'s own error, kept whole: write_atomic would say it as an I/O error of `path`.
    let mut failed = None;
    let written = write_atomic(path, |w| {
        WriteOptions::<u8>::new()
            .dtype(DType::Plain(ts))
            .shape(&[rows as u64, cols as u64])
            .writer(&mut *w)
            .write_header_only()?;
        let mut got = 0usize;
        let room = rows.saturating_mul(cols);
        let filled = fill(&mut |bytes: &[u8]| {
            if bytes.len() > room - got {
                return check_len(path, rows, cols, got + bytes.len());
            }
            w.write_all(bytes).map_err(|e| Error::io(path, e))?;
            got += bytes.len();
            Ok(())
        });
        let checked = filled.and_then(|()| check_len(path, rows, cols, got));
        checked.map_err(|e| {
            failed = Some(e);
            std::io::Error::other("not written")
        })
    });
    match failed {
        Some(e) => Err(e),
        None => written,
    }
}

/// Writes an `n x cols` row-major `int32` matrix (`<i4`, e.g. ground-truth neighbour ids) as
/// `.npy`, atomically.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("gt.npy");
/// bsa::io::write_i32(&path, 1, 3, &[7, 1, -1]).unwrap();
/// assert_eq!(bsa::io::read_i32(&path).unwrap(), (1, 3, vec![7, 1, -1]));
/// ```
pub fn write_i32(path: impl AsRef<Path>, n: usize, cols: usize, data: &[i32]) -> Result<()> {
    write_2d(path.as_ref(), n, cols, data, "<i4", i32::to_le_bytes)
}

/// Reads a 2-D `uint8` `.npy` array as `(rows, cols, row-major data)`. Any other dtype or rank is
/// an error. Fortran-order arrays are transposed to row-major.
///
/// ```no_run
/// let (n, bytes_per_code, codes) = bsa::io::read_u8("codes.npy")?;
/// assert_eq!(codes.len(), n * bytes_per_code);
/// # Ok::<(), bsa::error::Error>(())
/// ```
pub fn read_u8(path: impl AsRef<Path>) -> Result<(usize, usize, Vec<u8>)> {
    let path = path.as_ref();
    let map = map_file(path)?;
    let parsed = parse_header(path, &map)?;
    check_no_pickle(path, &parsed)?;
    let dtype = parsed.header.dtype();
    if !matches!(plain(&dtype), Some(ts) if ts.type_char() == TypeChar::Uint && ts.size_field() == 1)
    {
        // Bits (0/1 per element) must be packed, eight to a byte: `astype(np.uint8)` would
        // make one byte per bit, a valid-looking file of codes eight times too wide.
        let hint = if matches!(plain(&dtype), Some(ts) if ts.type_char() == TypeChar::Bool) {
            "pack the bits, eight to a byte (numpy: np.packbits(x, axis=1, bitorder=\"little\"))"
        } else {
            "packed codes are uint8 rows (numpy: np.packbits(bits, axis=1, bitorder=\"little\")); \
             bytes of packed codes stored in a wider type convert with x.astype(np.uint8)"
        };
        return Err(Error::format(
            path,
            format!(
                "expected a uint8 array, found dtype {}; {hint}",
                dtype_str(&dtype)
            ),
        ));
    }
    let (rows, cols) = shape_2d(path, &parsed, "a 2-D uint8 array (n x bytes)")?;
    let count = element_count(path, rows, cols)?;
    let data = data_bytes(path, &map, &parsed, count, 1)?;
    Ok((
        rows,
        cols,
        to_c_order(data.to_vec(), rows, cols, parsed.header.order()),
    ))
}

/// Reads a 2-D `int32` or `int64` `.npy` array as `(rows, cols, row-major int32 data)`. `int64`
/// values outside the `i32` range are an [`Error::BadRow`] naming the row. Fortran-order arrays are
/// transposed to row-major.
///
/// ```no_run
/// let (queries, k, neighbours) = bsa::io::read_i32("ground_truth.npy")?;
/// assert_eq!(neighbours.len(), queries * k);
/// # Ok::<(), bsa::error::Error>(())
/// ```
pub fn read_i32(path: impl AsRef<Path>) -> Result<(usize, usize, Vec<i32>)> {
    let path = path.as_ref();
    let map = map_file(path)?;
    let parsed = parse_header(path, &map)?;
    check_no_pickle(path, &parsed)?;
    let dtype = parsed.header.dtype();
    let size = match plain(&dtype) {
        Some(ts) if ts.type_char() == TypeChar::Int && matches!(ts.size_field(), 4 | 8) => {
            ts.size_field() as usize
        }
        _ => {
            return Err(Error::format(
                path,
                format!(
                    "expected an int32 or int64 array, found dtype {}; convert before saving \
                     (numpy: x.astype(np.int32))",
                    dtype_str(&dtype)
                ),
            ));
        }
    };
    let (rows, cols) = shape_2d(path, &parsed, "a 2-D integer array (n x k)")?;
    let count = element_count(path, rows, cols)?;
    let data = data_bytes(path, &map, &parsed, count, size)?;
    let order = parsed.header.order();
    let v = if size == 4 {
        read_elements::<i32>(path, &parsed, data)?
    } else {
        let wide = to_c_order(
            read_elements::<i64>(path, &parsed, data)?,
            rows,
            cols,
            order,
        );
        let mut out = Vec::with_capacity(wide.len());
        for (idx, &x) in wide.iter().enumerate() {
            let x = i32::try_from(x).map_err(|_| Error::BadRow {
                path: path.to_path_buf(),
                row: idx / cols.max(1),
                detail: format!(
                    "column {}: value {x} does not fit in int32; ids must be below 2^31",
                    idx % cols.max(1)
                ),
            })?;
            out.push(x);
        }
        return Ok((rows, cols, out));
    };
    Ok((rows, cols, to_c_order(v, rows, cols, order)))
}

/// Reads a 1-D array of non-negative ids (`int64`, `uint64` or `int32`) as `u64`. A negative id is
/// an [`Error::BadRow`] naming its index.
///
/// ```no_run
/// let ids = bsa::io::read_u64_ids("ids.npy")?;
/// # Ok::<(), bsa::error::Error>(())
/// ```
pub fn read_u64_ids(path: impl AsRef<Path>) -> Result<Vec<u64>> {
    let path = path.as_ref();
    let map = map_file(path)?;
    let parsed = parse_header(path, &map)?;
    check_no_pickle(path, &parsed)?;
    let dtype = parsed.header.dtype();
    let kind = match plain(&dtype) {
        Some(ts) if matches!(ts.size_field(), 4 | 8) => match ts.type_char() {
            TypeChar::Int => Some((true, ts.size_field() as usize)),
            TypeChar::Uint if ts.size_field() == 8 => Some((false, 8)),
            _ => None,
        },
        _ => None,
    };
    let Some((signed, size)) = kind else {
        return Err(Error::format(
            path,
            format!(
                "expected ids of dtype int64, uint64 or int32, found dtype {}; convert before \
                 saving (numpy: ids.astype(np.int64))",
                dtype_str(&dtype)
            ),
        ));
    };
    let shape = parsed.header.shape();
    let count = match *shape {
        [len] => dim_usize(path, shape, len)?,
        _ => {
            return Err(Error::format(
                path,
                format!(
                    "expected a 1-D array of ids, found shape {}; flatten it before saving \
                     (numpy: ids.reshape(-1))",
                    shape_str(shape)
                ),
            ));
        }
    };
    let data = data_bytes(path, &map, &parsed, count, size)?;
    let signed_values: Vec<i64> = match (signed, size) {
        (false, _) => return read_elements::<u64>(path, &parsed, data),
        (true, 4) => read_elements::<i32>(path, &parsed, data)?
            .into_iter()
            .map(i64::from)
            .collect(),
        (true, _) => read_elements::<i64>(path, &parsed, data)?,
    };
    signed_values
        .into_iter()
        .enumerate()
        .map(|(row, x)| {
            u64::try_from(x).map_err(|_| Error::BadRow {
                path: path.to_path_buf(),
                row,
                detail: format!("id {x} is negative; ids must be non-negative integers"),
            })
        })
        .collect()
}

/// Writes `header_text` and `data` as a version-1.0 `.npy` file with the header padded so the data
/// starts at `align`-byte offset plus `misalign`; test helper for hand-made (possibly invalid) files.
#[cfg(test)]
pub(crate) fn raw_npy(header_text: &str, data: &[u8], misalign: usize) -> Vec<u8> {
    let mut text = header_text.as_bytes().to_vec();
    while (10 + text.len() + 1) % 64 != misalign % 64 {
        text.push(b' ');
    }
    text.push(b'\n');
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fs;
    use std::path::PathBuf;

    /// Writes a 2-D array of any npyz-serialisable type with the given dtype and order.
    fn npyz_write<T: npyz::Serialize + Copy>(
        path: &Path,
        descr: &str,
        shape: &[u64],
        order: Order,
        data: &[T],
    ) {
        let mut bytes = Vec::new();
        let mut w = WriteOptions::<T>::new()
            .dtype(DType::Plain(descr.parse().unwrap()))
            .shape(shape)
            .order(order)
            .writer(&mut bytes)
            .begin_nd()
            .unwrap();
        w.extend(data.iter().copied()).unwrap();
        w.finish().unwrap();
        fs::write(path, bytes).unwrap();
    }

    fn sample(n: usize, dim: usize) -> Vec<f32> {
        (0..n * dim).map(|i| (i as f32) * 0.25 - 3.0).collect()
    }

    fn fmt_err(path: &Path) -> String {
        let err = Embeddings::open(path).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err:?}");
        err.to_string()
    }

    #[test]
    fn f32_round_trip_is_memory_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.npy");
        let data = sample(5, 7);
        write_f32(&path, 5, 7, &data).unwrap();
        let e = Embeddings::open(&path).unwrap();
        assert!(e.is_mapped());
        assert_eq!((e.n(), e.dim()), (5, 7));
        assert_eq!(e.as_slice(), &data[..]);
        assert_eq!(e.row(3), &data[21..28]);
        assert_eq!(e.view()[[4, 6]], data[34]);
        assert_eq!(e.path(), path);
        // numpy-compatible header written by npyz.
        let bytes = fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes[10..128]);
        assert!(
            text.contains("'descr': '<f4'") && text.contains("'shape': (5, 7"),
            "{text}"
        );
    }

    #[test]
    fn f16_f64_f32_agree() {
        let dir = tempfile::tempdir().unwrap();
        // Values exactly representable in f16.
        let data: Vec<f32> = (0..24).map(|i| (i as f32 - 12.0) * 0.5).collect();
        let p32 = dir.path().join("a32.npy");
        let p16 = dir.path().join("a16.npy");
        let p64 = dir.path().join("a64.npy");
        let pbe = dir.path().join("abe.npy");
        write_f32(&p32, 4, 6, &data).unwrap();
        let h: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
        npyz_write(&p16, "<f2", &[4, 6], Order::C, &h);
        let d: Vec<f64> = data.iter().map(|&x| f64::from(x)).collect();
        npyz_write(&p64, "<f8", &[4, 6], Order::C, &d);
        npyz_write(&pbe, ">f4", &[4, 6], Order::C, &data);
        let e32 = Embeddings::open(&p32).unwrap();
        for p in [&p16, &p64, &pbe] {
            let e = Embeddings::open(p).unwrap();
            assert!(!e.is_mapped(), "{p:?}");
            assert_eq!((e.n(), e.dim()), (4, 6));
            assert_eq!(e.as_slice(), e32.as_slice(), "{p:?}");
        }
    }

    #[test]
    fn float64_beyond_float32_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wide.npy");
        let err = |d: &[f64], order: Order| {
            npyz_write(&path, "<f8", &[2, 3], order, d);
            Embeddings::open(&path).unwrap_err().to_string()
        };
        // Row 1, column 2 in C order; the same element stored column-major.
        let msg = err(&[1., 2., 3., 4., 5., 1e300], Order::C);
        assert!(
            msg.contains("row 1, column 2 is 1e300, beyond the range of float32"),
            "{msg}"
        );
        let msg = err(&[1., 4., 2., 5., 3., -1e39], Order::Fortran);
        assert!(msg.contains("row 1, column 2 is -1e39"), "{msg}");
        let msg = err(&[1., 2., 3., 1e-50, 0., -1e-50], Order::C);
        assert!(
            msg.contains("row 1's values are all below float32's smallest"),
            "{msg}"
        );
        // Values that merely round, or underflow beside others that do not, are read.
        npyz_write(
            &path,
            "<f8",
            &[2, 3],
            Order::C,
            &[0.1, 1e-50, 3., 1e-30, 2., 1e38],
        );
        let e = Embeddings::open(&path).unwrap();
        assert_eq!(e.as_slice(), &[0.1f32, 0., 3., 1e-30, 2., 1e38]);
    }

    #[test]
    fn fortran_order_is_transposed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.npy");
        // Logical 2 x 3 matrix [[1,2,3],[4,5,6]] stored column-major.
        npyz_write(
            &path,
            "<f4",
            &[2, 3],
            Order::Fortran,
            &[1f32, 4., 2., 5., 3., 6.],
        );
        let e = Embeddings::open(&path).unwrap();
        assert!(!e.is_mapped());
        assert_eq!(e.as_slice(), &[1., 2., 3., 4., 5., 6.]);
        let p8 = dir.path().join("f8.npy");
        npyz_write(&p8, "|u1", &[2, 3], Order::Fortran, &[1u8, 4, 2, 5, 3, 6]);
        assert_eq!(read_u8(&p8).unwrap(), (2, 3, vec![1, 2, 3, 4, 5, 6]));
        let p64 = dir.path().join("f64.npy");
        npyz_write(&p64, "<i8", &[2, 3], Order::Fortran, &[1i64, 4, 2, 5, 3, 6]);
        assert_eq!(read_i32(&p64).unwrap(), (2, 3, vec![1, 2, 3, 4, 5, 6]));
    }

    #[test]
    fn misaligned_f32_data_falls_back_to_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npy");
        let data = [1.5f32, -2.0, 3.25, 4.0];
        let raw: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        let bytes = raw_npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
            &raw,
            2,
        );
        fs::write(&path, bytes).unwrap();
        let e = Embeddings::open(&path).unwrap();
        assert!(!e.is_mapped());
        assert_eq!(e.as_slice(), &data);
    }

    #[test]
    fn u8_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.npy");
        let data: Vec<u8> = (0..=255).collect();
        write_u8(&path, 16, 16, &data).unwrap();
        assert_eq!(read_u8(&path).unwrap(), (16, 16, data));
        let text = String::from_utf8_lossy(&fs::read(&path).unwrap()[..64]).into_owned();
        assert!(text.contains("'|u1'"), "{text}");
        // Zero rows are fine for codes.
        write_u8(&path, 0, 4, &[]).unwrap();
        assert_eq!(read_u8(&path).unwrap(), (0, 4, vec![]));
    }

    #[test]
    fn i32_round_trip_and_int64_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gt.npy");
        let data = vec![0, -1, i32::MAX, i32::MIN, 42, 7];
        write_i32(&path, 3, 2, &data).unwrap();
        assert_eq!(read_i32(&path).unwrap(), (3, 2, data.clone()));
        let p64 = dir.path().join("gt64.npy");
        let wide: Vec<i64> = data.iter().map(|&x| i64::from(x)).collect();
        npyz_write(&p64, "<i8", &[3, 2], Order::C, &wide);
        assert_eq!(read_i32(&p64).unwrap(), (3, 2, data));
        let pbe = dir.path().join("gtbe.npy");
        npyz_write(&pbe, ">i4", &[1, 2], Order::C, &[5i32, -6]);
        assert_eq!(read_i32(&pbe).unwrap(), (1, 2, vec![5, -6]));
    }

    #[test]
    fn int64_out_of_i32_range_names_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gt64.npy");
        npyz_write(&path, "<i8", &[2, 2], Order::C, &[1i64, 2, 3, 1 << 40]);
        let err = read_i32(&path).unwrap_err();
        assert!(matches!(err, Error::BadRow { row: 1, .. }), "{err:?}");
        assert!(err.to_string().contains("1099511627776"), "{err}");
    }

    #[test]
    fn u64_ids_from_each_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ids.npy");
        npyz_write(&p, "<i8", &[3], Order::C, &[0i64, 5, i64::MAX]);
        assert_eq!(read_u64_ids(&p).unwrap(), vec![0, 5, i64::MAX as u64]);
        npyz_write(&p, "<u8", &[2], Order::C, &[u64::MAX, 1]);
        assert_eq!(read_u64_ids(&p).unwrap(), vec![u64::MAX, 1]);
        npyz_write(&p, "<i4", &[2], Order::C, &[9i32, 3]);
        assert_eq!(read_u64_ids(&p).unwrap(), vec![9, 3]);
        npyz_write(&p, "<i8", &[0], Order::C, &[] as &[i64]);
        assert_eq!(read_u64_ids(&p).unwrap(), Vec::<u64>::new());
    }

    #[test]
    fn u64_ids_reject_negatives_rank_and_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ids.npy");
        npyz_write(&p, "<i8", &[3], Order::C, &[0i64, 5, -2]);
        let err = read_u64_ids(&p).unwrap_err();
        assert!(matches!(err, Error::BadRow { row: 2, .. }), "{err:?}");
        assert!(err.to_string().contains("negative"), "{err}");
        npyz_write(&p, "<i8", &[1, 3], Order::C, &[0i64, 5, 2]);
        let msg = read_u64_ids(&p).unwrap_err().to_string();
        assert!(msg.contains("1-D") && msg.contains("(1, 3)"), "{msg}");
        npyz_write(&p, "<f4", &[3], Order::C, &[0f32, 5., 2.]);
        let msg = read_u64_ids(&p).unwrap_err().to_string();
        assert!(msg.contains("float32") && msg.contains("int64"), "{msg}");
    }

    #[test]
    fn writers_check_lengths() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let err = write_f32(&p, 2, 3, &[0.0; 5]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::DimMismatch {
                    expected: 6,
                    got: 5,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(write_u8(&p, 2, 3, &[0; 7]).is_err());
        assert!(write_i32(&p, usize::MAX, 3, &[]).is_err());
        assert!(!p.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn writer_error_names_target() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no_such_dir").join("x.npy");
        let err = write_f32(&p, 1, 1, &[1.0]).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("x.npy"), "{err}");
        assert!(err.to_string().contains("the folder"), "{err}");
    }

    #[test]
    fn truncated_npy_reports_need_and_have() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.npy");
        write_f32(&path, 4, 8, &sample(4, 8)).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 128 + 128);
        fs::write(&path, &bytes[..200]).unwrap();
        let msg = fmt_err(&path);
        assert!(
            msg.contains("truncated")
                && msg.contains("needs 128 data bytes")
                && msg.contains("only 72"),
            "{msg}"
        );
        // Cut inside the header.
        fs::write(&path, &bytes[..50]).unwrap();
        let msg = fmt_err(&path);
        assert!(
            msg.contains("truncated") && msg.contains("only 50"),
            "{msg}"
        );
        // Same for the other readers.
        let p8 = dir.path().join("t8.npy");
        write_u8(&p8, 4, 4, &[1; 16]).unwrap();
        let b = fs::read(&p8).unwrap();
        fs::write(&p8, &b[..b.len() - 1]).unwrap();
        assert!(read_u8(&p8).unwrap_err().to_string().contains("truncated"));
    }

    /// Any byte after the array data is refused, a single one too (the boundary of the size
    /// check: a file with one stray byte is not a single .npy array either).
    #[test]
    fn trailing_bytes_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.npy");
        for extra in [3, 1] {
            write_f32(&path, 2, 2, &[1.0; 4]).unwrap();
            let mut bytes = fs::read(&path).unwrap();
            bytes.extend_from_slice(&vec![0; extra]);
            fs::write(&path, bytes).unwrap();
            let msg = fmt_err(&path);
            assert!(msg.contains(&format!("{extra} unexpected bytes")), "{msg}");
        }
    }

    #[test]
    fn wrong_dtype_names_found_and_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.npy");
        write_i32(&path, 2, 2, &[1, 2, 3, 4]).unwrap();
        let msg = fmt_err(&path);
        assert!(msg.contains("'<i4' (int32)"), "{msg}");
        assert!(
            msg.contains("float32") && msg.contains("float16") && msg.contains("float64"),
            "{msg}"
        );
        assert!(msg.contains("astype"), "{msg}");
        // Complex and structured dtypes.
        fs::write(
            &path,
            raw_npy(
                "{'descr': '<c8', 'fortran_order': False, 'shape': (1, 1), }",
                &[0; 8],
                0,
            ),
        )
        .unwrap();
        assert!(fmt_err(&path).contains("complex64"));
        fs::write(
            &path,
            raw_npy(
                "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (1, 1), }",
                &[0; 8],
                0,
            ),
        )
        .unwrap();
        assert!(fmt_err(&path).contains("structured"));
        fs::write(
            &path,
            raw_npy(
                "{'descr': '|O', 'fortran_order': False, 'shape': (1, 1), }",
                &[0; 8],
                0,
            ),
        )
        .unwrap();
        assert!(fmt_err(&path).contains("pickled"));
        // The integer readers reject floats.
        write_f32(&path, 1, 1, &[1.0]).unwrap();
        let msg = read_u8(&path).unwrap_err().to_string();
        assert!(msg.contains("float32") && msg.contains("uint8"), "{msg}");
        let msg = read_i32(&path).unwrap_err().to_string();
        assert!(msg.contains("float32") && msg.contains("int32"), "{msg}");
        write_i32(&path, 1, 1, &[1]).unwrap();
        assert!(read_u8(&path).unwrap_err().to_string().contains("int32"));
        // Unpacked bits: the hint packs them (astype would make codes eight times too wide).
        fs::write(
            &path,
            raw_npy(
                "{'descr': '|b1', 'fortran_order': False, 'shape': (1, 8), }",
                &[1; 8],
                0,
            ),
        )
        .unwrap();
        let msg = read_u8(&path).unwrap_err().to_string();
        assert!(
            msg.contains("(bool)") && msg.contains("np.packbits"),
            "{msg}"
        );
        assert!(!msg.contains("astype"), "{msg}");
    }

    #[test]
    fn wrong_rank_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.npy");
        npyz_write(&path, "<f4", &[10], Order::C, &[0f32; 10]);
        let msg = fmt_err(&path);
        assert!(
            msg.contains("expected a 2-D float array (n x dim), found shape (10,)")
                && msg.contains("reshape"),
            "{msg}"
        );
        npyz_write(&path, "<f4", &[2, 3, 4], Order::C, &[0f32; 24]);
        let msg = fmt_err(&path);
        assert!(
            msg.contains("(2, 3, 4)") && msg.contains("reshape"),
            "{msg}"
        );
        npyz_write(&path, "<f4", &[], Order::C, &[0f32]);
        assert!(fmt_err(&path).contains("found shape ()"));
        npyz_write(&path, "|u1", &[3], Order::C, &[0u8; 3]);
        assert!(read_u8(&path).unwrap_err().to_string().contains("(3,)"));
        npyz_write(&path, "<i4", &[1, 1, 3], Order::C, &[0i32; 3]);
        assert!(
            read_i32(&path)
                .unwrap_err()
                .to_string()
                .contains("(1, 1, 3)")
        );
    }

    #[test]
    fn empty_arrays_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.npy");
        write_f32(&path, 0, 4, &[]).unwrap();
        assert!(fmt_err(&path).contains("no rows"));
        write_f32(&path, 3, 0, &[]).unwrap();
        assert!(fmt_err(&path).contains("no columns"));
        fs::write(&path, b"").unwrap();
        assert!(fmt_err(&path).contains("empty"));
        assert!(read_u8(&path).unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn garbage_is_not_npy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.npy");
        fs::write(&path, b"hello, this is a text file\n").unwrap();
        let msg = fmt_err(&path);
        assert!(
            msg.contains("not a .npy file") && msg.contains("numpy.save"),
            "{msg}"
        );
        // The magic and a version, then the end: cut short, not "no magic".
        fs::write(&path, b"\x93NUMPY\x01\x00").unwrap();
        let msg = fmt_err(&path);
        assert!(msg.contains("truncated .npy file: 8 bytes"), "{msg}");
        // Right magic, unparsable header.
        fs::write(&path, raw_npy("{'descr': <f4 oops", &[], 0)).unwrap();
        assert!(fmt_err(&path).contains("could not parse the .npy header"));
        // Unknown version.
        let mut bytes = raw_npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1), }",
            &[0; 4],
            0,
        );
        bytes[6] = 9;
        fs::write(&path, bytes).unwrap();
        assert!(fmt_err(&path).contains("version 9.0"));
    }

    #[test]
    fn corrupt_headers_do_not_panic_or_allocate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.npy");
        // Element count overflows u64 inside npyz.
        fs::write(
            &path,
            raw_npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551615, 18446744073709551615), }",
                &[0; 16],
                0,
            ),
        )
        .unwrap();
        // npyz's element-count overflow panics with overflow checks (caught) and wraps without
        // them (then our checked arithmetic reports it).
        let msg = fmt_err(&path);
        assert!(msg.contains("2^64") || msg.contains("overflows"), "{msg}");
        // Element count fits u64 but not the byte count.
        fs::write(
            &path,
            raw_npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967295), }",
                &[0; 16],
                0,
            ),
        )
        .unwrap();
        let msg = fmt_err(&path);
        assert!(
            msg.contains("truncated") || msg.contains("address"),
            "{msg}"
        );
        // A version-2 header claiming 4 GiB.
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[2, 0, 0xff, 0xff, 0xff, 0xff]);
        bytes.extend_from_slice(&[b' '; 100]);
        fs::write(&path, bytes).unwrap();
        assert!(fmt_err(&path).contains("header claims"));
        // Deeply nested header text inside the size cap.
        let deep = "[".repeat(MAX_HEADER_LEN - 100);
        fs::write(&path, raw_npy(&deep, &[], 0)).unwrap();
        assert!(fmt_err(&path).contains("nests brackets"));
        // A damaged length field that reaches into the data (here bytes of '[' and of zeros):
        // said as such, whatever the data read as text look like.
        let text = "{'descr': '<f4', 'fortran_order': False, 'shape': (64,), }";
        for data in [[b'['; 256], [0; 256]] {
            let mut bytes = raw_npy(text, &data, 0);
            bytes[8..10].copy_from_slice(&200u16.to_le_bytes());
            fs::write(&path, bytes).unwrap();
            let msg = fmt_err(&path);
            assert!(msg.contains("length field says 200 bytes"), "{msg}");
        }
    }

    /// numpy.load refuses a header dict with a key other than its three, and numpy.save never
    /// writes one twice: both are refused, naming the key, while numpy's own header (with or
    /// without its trailing comma, keys in any order) reads.
    #[test]
    fn header_keys_are_numpys_three_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.npy");
        let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        for (text, problem) in [
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), 'units': 'm', }",
                "has the key \"units\", which numpy neither writes nor reads",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (9, 9), 'shape': (1, 2)}",
                "has the key \"shape\" twice",
            ),
        ] {
            fs::write(&path, raw_npy(text, &data, 0)).unwrap();
            let msg = fmt_err(&path);
            assert!(msg.contains(problem) && msg.contains("k.npy"), "{msg}");
        }
        for text in [
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }",
            "{'shape': (1, 2), 'descr': '<f4', 'fortran_order': False}",
        ] {
            fs::write(&path, raw_npy(text, &data, 0)).unwrap();
            let e = Embeddings::open(&path).unwrap();
            assert_eq!((e.n(), e.dim()), (1, 2));
        }
    }

    /// A short header of balanced nested brackets is refused at once: npyz's parser takes
    /// twice as long for each level (50 seconds at 20, years at 40), so reading one hung.
    #[test]
    fn deeply_nested_header_is_refused_quickly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested.npy");
        let descr = format!("{}{}", "[".repeat(40), "]".repeat(40));
        let text = format!("{{'descr': {descr}, 'fortran_order': False, 'shape': (1, 1), }}");
        fs::write(&path, raw_npy(&text, &[0; 4], 0)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(Embeddings::open(&p).map(drop));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(20));
        let err = got.expect("reading the header hung").unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, Error::Format { .. }) && msg.contains("nests brackets 41 deep"),
            "{msg}"
        );
        assert!(msg.contains("nested.npy"), "{msg}");
        // The depth a structured dtype takes is still parsed, and refused as what it is.
        let text = "{'descr': [('a', '<f4', (2,))], 'fortran_order': False, 'shape': (1,), }";
        fs::write(&path, raw_npy(text, &[0; 8], 0)).unwrap();
        let msg = fmt_err(&path);
        assert!(msg.contains("found dtype structured"), "{msg}");
    }

    /// Calls every reader on `bytes`; they may fail but must not panic.
    fn all_readers(path: &PathBuf, bytes: &[u8]) {
        fs::write(path, bytes).unwrap();
        if let Ok(e) = Embeddings::open(path) {
            assert_eq!(e.as_slice().len(), e.n() * e.dim());
            let _ = e.check_finite();
            let _ = e.check_nonzero_norms();
        }
        if let Ok((n, c, v)) = read_u8(path) {
            assert_eq!(v.len(), n * c);
        }
        if let Ok((n, c, v)) = read_i32(path) {
            assert_eq!(v.len(), n * c);
        }
        let _ = read_u64_ids(path);
    }

    fn valid_npy_bytes() -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        let p = dir.path().join("v.npy");
        write_f32(&p, 3, 4, &sample(3, 4)).unwrap();
        out.push(fs::read(&p).unwrap());
        write_u8(&p, 2, 8, &[7; 16]).unwrap();
        out.push(fs::read(&p).unwrap());
        write_i32(&p, 2, 3, &[1, 2, 3, 4, 5, 6]).unwrap();
        out.push(fs::read(&p).unwrap());
        npyz_write(&p, "<i8", &[4], Order::C, &[1i64, 2, 3, 4]);
        out.push(fs::read(&p).unwrap());
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300),
                                    with_magic in any::<bool>()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r.npy");
            let mut bytes = bytes;
            if with_magic {
                let mut b = MAGIC.to_vec();
                b.extend_from_slice(&bytes);
                bytes = b;
            }
            all_readers(&path, &bytes);
        }

        #[test]
        fn mutated_npy_never_panics(which in 0usize..4,
                                    edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
                                    cut in proptest::option::of(any::<usize>())) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("m.npy");
            let mut bytes = valid_npy_bytes().swap_remove(which);
            for (at, value) in edits {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut % (bytes.len() + 1));
            }
            all_readers(&path, &bytes);
        }

        #[test]
        fn mutated_header_digits_never_panic(digits in "[0-9]{1,25}", other in "[0-9]{1,25}") {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("d.npy");
            let text = format!(
                "{{'descr': '<f4', 'fortran_order': False, 'shape': ({digits}, {other}), }}"
            );
            all_readers(&path, &raw_npy(&text, &[0; 64], 0));
        }
    }
}
