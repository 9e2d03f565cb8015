//! Integration tests of the `bsa` command line, one test binary (ripgrep style): every test runs
//! the real `bsa` executable in a fresh temporary folder on fixtures generated from a seeded RNG.
//!
//! - `errors`: every bad input gives `bsa: <file>: <what is wrong>` on stderr, exit code 2, and
//!   nothing on stdout.
//! - `eval`: `bsa eval --json` agrees with an independent f64 computation from the safetensors file.
//! - `baselines`: `bsa train --method sign|lsh|itq` model files through encode, eval, build and
//!   search; `bsa groundtruth` against a brute-force f64 ranking with ties.
//! - `bench`: `bsa bench`'s recall against a direct computation (with Hamming ties), its files.
//! - `interrupt`: Ctrl-C or SIGTERM stops `bsa build`, which leaves nothing behind.
//! - `encode`: `bsa encode` writes the packed codes an independent computation predicts.
//! - `search`: `bsa build`, `bsa search` and `bsa verify` against brute-force rankings, and
//!   damaged indexes.
//! - `train`: the JSON summary, determinism, `--threads`.
//! - `threads`: `bsa search` prints the same bytes for every thread count (every mode and score,
//!   `--rescore` too), and `bsa encode` writes the same codes.

// The modules live in tests/cli/ (a crate root's modules are otherwise looked up beside it).
#[path = "cli/util.rs"]
mod util;

#[path = "cli/baselines.rs"]
mod baselines;
#[path = "cli/bench.rs"]
mod bench;
#[path = "cli/demo.rs"]
mod demo;
#[path = "cli/encode.rs"]
mod encode;
#[path = "cli/errors.rs"]
mod errors;
#[path = "cli/eval.rs"]
mod eval;
#[path = "cli/interrupt.rs"]
mod interrupt;
#[path = "cli/live.rs"]
mod live;
#[path = "cli/pursuit.rs"]
mod pursuit;
#[path = "cli/scores.rs"]
mod scores;
#[path = "cli/search.rs"]
mod search;
#[path = "cli/threads.rs"]
mod threads;
#[path = "cli/train.rs"]
mod train;
