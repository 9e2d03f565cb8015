//! # bsa: sparse binary codes for dense embeddings
//!
//! bsa learns short binary codes for float embeddings with the Binary Sparsity Alignment (BSA)
//! autoencoder, and searches them by Hamming distance in memory-mapped indexes.
//!
//! - [`train`]: fit the BSA autoencoder (or its TopK baseline) on an `n x D` float matrix.
//! - [`baselines`]: the sign, LSH and ITQ baselines, fitted in closed form as the same models.
//! - [`groundtruth`]: exact cosine top-k (blocked GEMM), the ground truth of recall.
//! - [`model`]: the model, its forward pass and code packing.
//! - [`deterministic`], [`int_tables`] (from the search crate, re-exported): float products
//!   fixed bit for bit by their inputs (search tables, codes), and ADC tables from exact integer
//!   products, the fast candidate tables of a rescored search.
//! - [`metrics`]: the paper's reconstruction and sparsity metrics.
//! - [`bench`](mod@bench): the benchmark grid (methods x N x K): recall, bytes per vector, report and plots.
//! - [`io`]: embedding files (`.npy`, `.fvecs`) and model files (safetensors).
//! - [`query`], [`pipeline`]: `bsa search` and `bsa build` as library calls (the CLI's and the
//!   Python binding's one implementation).
//! - [`bsa_index`] (a separate crate with no BLAS): packed codes on disk and their search.
//!
//! ```
//! use bsa::train::TrainParams;
//! // 200 random 16-d vectors.
//! let x = ndarray::Array2::from_shape_fn((200, 16), |(i, j)| ((i * 31 + j * 17) % 23) as f32 / 23.0 - 0.5);
//! let mut params = TrainParams::new(64, 8);
//! params.epochs = 3;
//! params.batch = 50;
//! let (model, _report) = params.fit(x.view(), &mut |_| {}).unwrap();
//! let codes = model.encode_packed(x.view()); // 200 rows of 64 / 8 = 8 bytes
//! assert_eq!(codes.len(), 200 * 8);
//! ```

#![warn(missing_docs)]

// Links the BLAS implementation that ndarray's and ndarray-linalg's products call.
extern crate blas_src;

pub use bsa_index;
pub use bsa_index::{deterministic, int_tables};

pub mod baselines;
pub mod bench;
mod config;
pub mod convergence;
pub mod error;
mod graph_on;
mod greedy;
pub mod groundtruth;
pub mod io;
pub mod live;
pub mod loss;
pub mod metrics;
#[cfg(feature = "milvus")]
pub mod milvus;
pub mod milvus_codec;
pub mod model;
pub mod optim;
mod params;
pub mod pipeline;
pub mod plot;
pub mod pursuit;
pub mod query;
mod real;
pub mod simd;
pub mod threads;
pub mod train;

pub use error::{Error, Result};
