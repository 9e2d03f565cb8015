//! Shared helpers: a fresh temporary folder per test, running `bsa` in it, seeded fixtures, raw
//! `.npy` bytes, and an independent reader of model files (the `safetensors` crate, not bsa's).

use std::path::{Path, PathBuf};
use std::process::Command;

use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;

/// What one run of `bsa` gave.
#[derive(Debug)]
pub struct Output {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts success (exit 0) and returns `self`.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "bsa failed: {self:#?}");
        self
    }

    /// Asserts a clean failure of bsa itself: exit code 2, nothing on stdout, one `bsa: ...`
    /// message on stderr containing every string of `needles`. Returns the message.
    #[track_caller]
    pub fn fails_with(&self, needles: &[&str]) -> &str {
        assert_eq!(self.code, 2, "expected exit code 2: {self:#?}");
        assert!(
            self.stdout.is_empty(),
            "expected nothing on stdout: {self:#?}"
        );
        assert!(
            self.stderr.starts_with("bsa: "),
            "stderr should start with `bsa: `: {self:#?}"
        );
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "expected a one-line message: {self:#?}"
        );
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "stderr should mention {n:?}: {self:#?}"
            );
        }
        &self.stderr
    }

    /// Asserts a command-line parsing failure reported by clap: exit code 2, nothing on stdout,
    /// `error:` and every string of `needles` on stderr.
    #[track_caller]
    pub fn usage_error(&self, needles: &[&str]) {
        assert_eq!(self.code, 2, "expected exit code 2: {self:#?}");
        assert!(
            self.stdout.is_empty(),
            "expected nothing on stdout: {self:#?}"
        );
        assert!(self.stderr.starts_with("error: "), "{self:#?}");
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "stderr should mention {n:?}: {self:#?}"
            );
        }
    }

    /// Parses stdout as exactly one JSON line.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one line of JSON on stdout: {self:#?}"
        );
        assert!(self.stdout.ends_with('\n'), "{self:#?}");
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("bad JSON ({e}): {self:#?}"))
    }
}

/// A fresh temporary folder, the working directory of every `bsa` run of one test, so file
/// arguments are plain names and error messages quote them as given.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> Self {
        TestDir {
            dir: tempfile::Builder::new()
                .prefix("bsa-cli-")
                .tempdir()
                .unwrap(),
        }
    }

    /// Absolute path of `name` in the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `bsa args...` in the folder.
    pub fn bsa(&self, args: &[&str]) -> Output {
        self.bsa_env(args, &[])
    }

    /// Runs `bsa` with extra environment variables (e.g. `BSA_KERNEL`).
    pub fn bsa_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_bsa"))
            .args(args)
            .envs(env.iter().copied())
            .current_dir(self.dir.path())
            // Keep OpenBLAS from spawning a thread per core in every test process.
            .env("OPENBLAS_NUM_THREADS", "1")
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("cannot run the bsa binary");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).expect("stdout is not UTF-8"),
            stderr: String::from_utf8(out.stderr).expect("stderr is not UTF-8"),
        }
    }

    /// Writes `bytes` to `name`.
    pub fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.path(name), bytes).unwrap();
    }

    /// Reads the file `name`.
    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    pub fn exists(&self, name: &str) -> bool {
        self.path(name).exists()
    }

    /// The names in the folder `dir` ("" for the test folder), hidden ones (temporary files)
    /// included, sorted.
    pub fn names(&self, dir: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Writes a row-major `n x dim` float32 matrix as `name` (.npy) with bsa's writer.
    pub fn write_f32(&self, name: &str, m: &Matrix) {
        bsa::io::write_f32(self.path(name), m.n, m.dim, &m.data).unwrap();
    }

    /// Trains a small model on `data` (`extra` flags appended) and returns its file name.
    pub fn train(&self, data: &str, out: &str, bits: usize, k: usize, extra: &[&str]) -> String {
        let (bits, k) = (bits.to_string(), k.to_string());
        let mut args = vec![
            "train", "--data", data, "--bits", &bits, "--k", &k, "--epochs", "3", "--batch", "64",
            "--out", out, "--json", "-q",
        ];
        args.extend_from_slice(extra);
        self.bsa(&args).ok();
        out.to_string()
    }
}

/// The JSON values of a JSON-lines output, one per line (panics on a line that is not JSON).
pub fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// A row-major float32 matrix.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub n: usize,
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The rows `rows` as a matrix of their own (e.g. the part of the data an add brings).
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Matrix {
        Matrix {
            n: rows.len(),
            dim: self.dim,
            data: self.data[rows.start * self.dim..rows.end * self.dim].to_vec(),
        }
    }
}

/// `n` standard-normal vectors of dimension `dim`, each scaled to unit length.
pub fn normalised(n: usize, dim: usize, seed: u64) -> Matrix {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut data = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let row: Vec<f64> = (0..dim).map(|_| rng.sample(StandardNormal)).collect();
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        data.extend(row.iter().map(|v| (v / norm) as f32));
    }
    Matrix { n, dim, data }
}

/// A version 1.0 `.npy` file with the given dtype descriptor, shape (as numpy prints it, e.g.
/// `(3, 4)`) and raw data bytes.
pub fn npy_bytes(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad with spaces so that the data starts at a multiple of 64, ending with a newline.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Little-endian float32 bytes.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A 2-D `.npy` file read by hand: `(descr, rows, cols, data bytes)`. Only what numpy and bsa
/// write (version 1.0, C order) is accepted.
pub fn read_npy_2d(bytes: &[u8]) -> (String, usize, usize, Vec<u8>) {
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "not a v1.0 .npy file");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
    assert_eq!((10 + len) % 16, 0, "data should be aligned: {header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let field = |key: &str| -> &str {
        let at = header
            .find(key)
            .unwrap_or_else(|| panic!("no {key} in {header}"))
            + key.len();
        header[at..].trim_start()
    };
    let descr = field("'descr':");
    let descr = descr[1..].split('\'').next().unwrap().to_string();
    let shape = field("'shape':");
    let shape = &shape[1..shape.find(')').unwrap()];
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(dims.len(), 2, "expected a 2-D array: {header}");
    (descr, dims[0], dims[1], bytes[10 + len..].to_vec())
}

/// A model file's weights, read with the `safetensors` crate directly, in f64.
pub struct Weights {
    /// Code length N.
    pub bits: usize,
    /// Input dimension D.
    pub dim: usize,
    /// `encoder.weight`, N x D, row-major.
    pub we: Vec<f64>,
    /// `encoder.bias`, N.
    pub be: Vec<f64>,
    /// `decoder.weight`, D x N, row-major.
    pub wd: Vec<f64>,
    /// `decoder.bias`, D.
    pub bd: Vec<f64>,
}

impl Weights {
    pub fn load(path: &Path) -> Weights {
        use safetensors::{Dtype, SafeTensors};
        let buf = std::fs::read(path).unwrap();
        let st = SafeTensors::deserialize(&buf).unwrap();
        let get = |name: &str| -> (Vec<usize>, Vec<f64>) {
            let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(t.dtype(), Dtype::F32, "{name}");
            let v = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect();
            (t.shape().to_vec(), v)
        };
        let (we_shape, we) = get("encoder.weight");
        let (be_shape, be) = get("encoder.bias");
        let (wd_shape, wd) = get("decoder.weight");
        let (bd_shape, bd) = get("decoder.bias");
        let (bits, dim) = (we_shape[0], we_shape[1]);
        assert_eq!(we_shape, [bits, dim]);
        assert_eq!(be_shape, [bits]);
        assert_eq!(wd_shape, [dim, bits]);
        assert_eq!(bd_shape, [dim]);
        Weights {
            bits,
            dim,
            we,
            be,
            wd,
            bd,
        }
    }

    /// Pre-activations `h = We x + be` of one row, in f64, each with a bound on the error bsa's
    /// float32 arithmetic can make in it: `(D + 1) eps sum |terms|` (the worst case of a float32
    /// dot product of D terms plus a bias, whatever the summation order).
    pub fn pre_activations(&self, x: &[f32]) -> Vec<Pre> {
        assert_eq!(x.len(), self.dim);
        let eps = f32::EPSILON as f64;
        (0..self.bits)
            .map(|j| {
                let mut h = self.be[j];
                let mut magnitude = self.be[j].abs();
                for (d, &xd) in x.iter().enumerate() {
                    let term = self.we[j * self.dim + d] * xd as f64;
                    h += term;
                    magnitude += term.abs();
                }
                Pre {
                    h,
                    err: (self.dim + 1) as f64 * eps * magnitude,
                }
            })
            .collect()
    }

    /// Reconstruction `Wd c + bd` of a binary code.
    pub fn decode(&self, code: &[bool]) -> Vec<f64> {
        assert_eq!(code.len(), self.bits);
        (0..self.dim)
            .map(|d| {
                let mut s = self.bd[d];
                for (j, &set) in code.iter().enumerate() {
                    if set {
                        s += self.wd[d * self.bits + j];
                    }
                }
                s
            })
            .collect()
    }
}

/// One pre-activation and a bound on float32 rounding error in it.
#[derive(Debug, Clone, Copy)]
pub struct Pre {
    pub h: f64,
    pub err: f64,
}

/// BSA's code: bit j set when `h_j > 0`. Panics if some `h_j` is so close to 0 that float32
/// arithmetic could get its sign wrong (then pick another fixture seed).
pub fn sign_code(h: &[Pre]) -> Vec<bool> {
    for (j, p) in h.iter().enumerate() {
        assert!(
            p.h.abs() > p.err,
            "h[{j}] = {:e} is within float32 rounding ({:e}) of 0: pick another seed",
            p.h,
            p.err
        );
    }
    h.iter().map(|p| p.h > 0.0).collect()
}

/// The k-hot code of the `k` largest `h` (ties to the lower index), found by the obvious
/// method: a stable sort by decreasing value. Panics if the k-th and (k+1)-th values are so close
/// that float32 arithmetic could choose differently (then pick another fixture seed).
pub fn khot_code(h: &[Pre], k: usize) -> Vec<bool> {
    let mut order: Vec<usize> = (0..h.len()).collect();
    order.sort_by(|&a, &b| h[b].h.partial_cmp(&h[a].h).unwrap());
    if k < h.len() {
        let (a, b) = (h[order[k - 1]], h[order[k]]);
        assert!(
            a.h - b.h > a.err + b.err,
            "top-{k} boundary gap {:e} is within float32 rounding: pick another seed",
            a.h - b.h
        );
    }
    let mut code = vec![false; h.len()];
    for &j in &order[..k] {
        code[j] = true;
    }
    code
}

/// Asserts `got` (from bsa) is within `rel` relative error of `want`, with a tiny absolute floor
/// for values that should be 0.
#[track_caller]
pub fn assert_close(what: &str, got: f64, want: f64, rel: f64) {
    let tol = rel * want.abs().max(got.abs()) + 1e-9;
    assert!(
        (got - want).abs() <= tol,
        "{what}: bsa says {got}, the independent computation {want} (difference {:e})",
        (got - want).abs()
    );
}
