//! No code: see Cargo.toml. This crate only asks for features, so that CI's builds of the
//! workspace, of the Milvus test and of the Python package compile their shared dependencies once.
