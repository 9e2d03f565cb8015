//! Indexes written by earlier builds must keep opening with identical results (one committed
//! golden index per format version, as tantivy's compat tests do).
//!
//! To (re)create the golden index for the current version, run
//! `BSA_REGEN_GOLDEN=1 cargo test -p bsa-index --test compat` and commit `tests/data/v<N>/`.

use std::path::PathBuf;

use bsa_index::format::FORMAT_VERSION;
use bsa_index::{Index, IndexBuilder, SearchParams, VectorDtype};

fn golden_dir(version: u32) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/v{version}"))
}

/// 16 codes of 70 bits (not a multiple of 64), ids, f16 vectors of dimension 3, a model file.
fn golden_inputs() -> (Vec<u64>, Vec<u64>, Vec<f32>) {
    let codes: Vec<u64> = (0..16u64)
        .flat_map(|i| [i.wrapping_mul(0x9e37_79b9_7f4a_7c15), (i * 5) & 0x3f])
        .collect();
    let ids: Vec<u64> = (0..16u64).map(|i| 1000 - i * 3).collect();
    let vectors: Vec<f32> = (0..48).map(|i| ((i % 7) as f32) - 3.0).collect();
    (codes, ids, vectors)
}

#[test]
fn golden_indexes_open_and_answer() {
    let dir = golden_dir(FORMAT_VERSION);
    let (codes, ids, vectors) = golden_inputs();
    if std::env::var_os("BSA_REGEN_GOLDEN").is_some() {
        let scratch = tempfile::tempdir().unwrap();
        let model = scratch.path().join("model.safetensors");
        std::fs::write(&model, b"golden model bytes").unwrap();
        IndexBuilder::new(70, &codes)
            .ids(&ids)
            .vectors(&vectors, 3)
            .vector_dtype(VectorDtype::F16)
            .model_file(&model)
            .extra(serde_json::json!({"golden": true}))
            .overwrite(true)
            .build(&dir)
            .unwrap();
    }
    for version in 1..=FORMAT_VERSION {
        let index =
            Index::open(golden_dir(version)).unwrap_or_else(|e| panic!("golden v{version}: {e}"));
        index.verify().unwrap();
        assert_eq!(index.codes(), &codes[..]);
        assert_eq!(index.ids(), &ids[..]);
        assert_eq!(index.bits(), 70);
        assert_eq!(index.extra()["golden"], true);
        assert_eq!(
            std::fs::read(index.model_path().unwrap()).unwrap(),
            b"golden model bytes"
        );
        let hits = index
            .search_flat(&codes[6..8], 4, &SearchParams::default())
            .unwrap();
        assert_eq!(hits[0].rows[0], 3);
        assert_eq!(hits[0].distances[0], 0);
        let r = index.rescore(&[1.0, 0.0, -1.0], &hits[0], 2).unwrap();
        assert_eq!(r.len(), 2);
    }
}
