//! Gives the library an id of the source it is built from, `BSA_SOURCE_ID` (a hash of the Rust
//! files under `src/` and `index/src/` and of `Cargo.lock`): `bsa bench --cache` reuses a fitted
//! model only when the code that fitted it is the one running, so a changed trainer (or
//! dependency) never serves a model of the code before it under the same version number.

use std::path::{Path, PathBuf};

fn main() {
    let mut files = Vec::new();
    for dir in ["src", "index/src"] {
        if Path::new(dir).is_dir() {
            println!("cargo:rerun-if-changed={dir}");
            collect(Path::new(dir), &mut files);
        }
    }
    if Path::new("Cargo.lock").is_file() {
        println!("cargo:rerun-if-changed=Cargo.lock");
        files.push(PathBuf::from("Cargo.lock"));
    }
    files.sort();
    // FNV-1a over each file's path and bytes: no dependency, and stable across toolchains.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in &files {
        // A file gone or unreadable meanwhile (an editor's lock file, say) is left out.
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        for b in f.to_string_lossy().bytes().chain([0]).chain(bytes) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=BSA_SOURCE_ID={h:016x}");
}

/// The regular `.rs` files under `dir`.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let (p, Ok(kind)) = (e.path(), e.file_type()) else {
            continue;
        };
        if kind.is_dir() {
            collect(&p, out);
        } else if kind.is_file() && p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}
