//! The pattern a query server follows with bsa-index: open a [`Snapshot`] once, check and load
//! its graphs before the first query, answer queries from many threads on the shared snapshot,
//! and swap in a new one when a writer has committed (`bsa add`, `delete`, `compact`, or a
//! [`Writer`] in another process). A query always sees one whole generation: the snapshot it
//! started on keeps its files mapped even after a compaction removes them.
//!
//! `cargo run --release -p bsa-index --example serve` runs it on a small index it builds (and
//! changes while serving) in a temporary folder; `-- DIR` serves an existing index instead.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bsa_index::live::{NewRows, SearchOptions, Snapshot, Writer};
use bsa_index::{IndexBuilder, Mode, OpenOptions, Score, pack};

/// Random packed codes of `bits` bits (xorshift; no dependency).
fn random_codes(n: usize, bits: usize, state: &mut u64) -> Vec<u64> {
    let words = pack::words_per_code(bits);
    let mut codes = vec![0u64; n * words];
    for c in codes.chunks_mut(words) {
        for (w, word) in c.iter_mut().enumerate() {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            let valid = (bits - 64 * w).min(64);
            *word = if valid == 64 {
                *state
            } else {
                *state & ((1 << valid) - 1)
            };
        }
    }
    codes
}

fn main() -> bsa_index::Result<()> {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let (dir, demo) = match std::env::args().nth(1) {
        Some(d) => (std::path::PathBuf::from(d), false),
        None => {
            let dir = tmp.path().join("idx");
            let mut state = 0x9e37_79b9_7f4a_7c15;
            IndexBuilder::new(256, &random_codes(20_000, 256, &mut state)).build(&dir)?;
            (dir, true)
        }
    };

    // Open once, then load and check the graphs now: a damaged graph fails here, not in the
    // first query, and that query does not pay for loading it.
    let current = Arc::new(RwLock::new(Arc::new(Snapshot::open(&dir)?)));
    current.read().unwrap().load_graphs()?;
    let bits = current.read().unwrap().bits();
    let started = Instant::now();
    let run_for = Duration::from_secs(2);

    std::thread::scope(|s| -> bsa_index::Result<()> {
        // The demo's writer: adds rows while the readers search.
        let writer = demo.then(|| {
            let dir = dir.clone();
            s.spawn(move || -> bsa_index::Result<()> {
                let mut state = 7;
                for _ in 0..4 {
                    std::thread::sleep(Duration::from_millis(300));
                    let rows = random_codes(1_000, bits, &mut state);
                    Writer::open(&dir)?.add(&NewRows::codes(&rows), false)?;
                }
                Ok(())
            })
        });
        // The refresher: a new snapshot once the index has changed (`reopen` shares the
        // segments both generations list, their graphs and scan layouts already warm); readers
        // pick it up at their next query, and the old one is unmapped when its last query ends.
        let refresher = s.spawn(|| -> bsa_index::Result<()> {
            while started.elapsed() < run_for {
                std::thread::sleep(Duration::from_millis(100));
                let last = current.read().unwrap().clone();
                if let Some(fresh) = last.reopen(OpenOptions::default())? {
                    fresh.load_graphs()?;
                    *current.write().unwrap() = Arc::new(fresh);
                }
            }
            Ok(())
        });
        // Readers: each query takes the snapshot current when it starts.
        let readers: Vec<_> = (0..2u64)
            .map(|t| {
                let current = &current;
                s.spawn(move || -> bsa_index::Result<(usize, usize)> {
                    let (mut answered, mut generations) = (0, std::collections::BTreeSet::new());
                    let mut state = 1 + t;
                    let flat = Mode::parse("flat")?;
                    while started.elapsed() < run_for {
                        let snap = current.read().unwrap().clone();
                        let query = random_codes(1, bits, &mut state);
                        let (hits, _) = snap.search(
                            &query,
                            10,
                            &Score::Hamming,
                            &flat,
                            &SearchOptions::default(),
                        )?;
                        assert_eq!(hits[0].len(), 10.min(snap.len()));
                        generations.insert(snap.generation());
                        answered += 1;
                    }
                    Ok((answered, generations.len()))
                })
            })
            .collect();
        for (t, r) in readers.into_iter().enumerate() {
            let (answered, seen) = r.join().expect("reader thread")?;
            println!("reader {t}: {answered} queries over {seen} generations of the index");
        }
        refresher.join().expect("refresher thread")?;
        if let Some(w) = writer {
            w.join().expect("writer thread")?;
        }
        Ok(())
    })?;
    println!("served {} rows at the end", current.read().unwrap().len());
    Ok(())
}
