//! The examples' `.npy` reader (npyz, a dev-dependency: the search crate itself reads no `.npy`).
//! Shared with `#[path = "common/npy.rs"] mod npy;` (a folder without `main.rs` is not an
//! example of its own). Each example uses what it needs of it.
#![allow(dead_code)]

/// A 2-D C-order `.npy` file of `T` (uint8 packed codes, float32 vectors): (rows, cols, values).
/// Panics naming the file when it is not one: these are benchmark tools, not the `bsa` command.
pub fn read_2d<T: npyz::Deserialize>(path: &str) -> (usize, usize, Vec<T>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (rows, cols) = match npy.shape() {
        &[rows, cols] => (rows as usize, cols as usize),
        shape => panic!("{path}: expected a 2-D array, shape {shape:?}"),
    };
    assert!(npy.order() == npyz::Order::C, "{path}: must be C order");
    let dtype = npy.dtype();
    let values = npy.into_vec::<T>().unwrap_or_else(|e| {
        panic!(
            "{path}: {e} (dtype {dtype:?}, expected {})",
            std::any::type_name::<T>()
        )
    });
    (rows, cols, values)
}

/// A 2-D uint8 `.npy` file (packed codes, as `bsa encode` writes them): (rows, cols, bytes).
pub fn read_u8(path: &str) -> (usize, usize, Vec<u8>) {
    read_2d(path)
}
