//! Inverted vs flat exact search on real-like sparse codes (issue 5's benchmark).
//!
//! Reads packed base and query codes (uint8 `.npy`, numpy little bit order, as `bsa encode`
//! writes them), replicates the base `--copies` times with bit noise that keeps the firing
//! distribution (each set bit of a copy moves, with probability `--p`, to a bit drawn from the
//! empirical firing distribution that is not already set: the popcount is kept), then times the
//! batched flat scan and the inverted search on the same rayon pool and checks that both return
//! identical hits. Prints one JSON line.
//!
//! With `--index DIR` it also builds an index of the replicated codes in `DIR` (posting lists
//! forced, bitmaps as `bsa build` decides) and times, alternating, its flat searcher once it keeps its
//! slabs (a server's batch scan) against its default inverted searcher (`index` in the JSON).
//!
//! ```text
//! cargo run --release -p bsa-index --example inverted_vs_flat -- \
//!     --codes codes.npy --queries qcodes.npy --bits 1024 --copies 10 --p 0.1 --nq 1000 --threads 2
//! ```

use std::time::Instant;

use bsa_index::InvertedLists;
use bsa_index::search::flat::{top_k, top_k_scored};
use bsa_index::search::inverted;
use bsa_index::{Score, SearchParams, pack};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

#[path = "common/npy.rs"]
mod npy;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .map(|i| args[i + 1].clone())
        .unwrap_or_else(|| default.to_string())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Bytes of the postings if each list were delta + LEB128 varint coded (size estimate only).
fn varint_bytes(view: &bsa_index::InvertedView<'_>) -> u64 {
    let mut total = 0u64;
    for j in 0..view.bits() {
        let mut prev = 0u32;
        for (i, &r) in view.list(j).iter().enumerate() {
            let d = if i == 0 { r } else { r - prev };
            prev = r;
            total += match d {
                0..=0x7f => 1,
                0x80..=0x3fff => 2,
                0x4000..=0x1f_ffff => 3,
                _ => 4,
            };
        }
    }
    total
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let codes_path = arg(&args, "--codes", "codes.npy");
    let queries_path = arg(&args, "--queries", "qcodes.npy");
    let bits: usize = arg(&args, "--bits", "1024").parse().unwrap();
    let copies: usize = arg(&args, "--copies", "10").parse().unwrap();
    let p: f64 = arg(&args, "--p", "0.1").parse().unwrap();
    let nq: usize = arg(&args, "--nq", "1000").parse().unwrap();
    let flat_nq: usize = arg(&args, "--flat-nq", &nq.to_string()).parse().unwrap();
    let threads: usize = arg(&args, "--threads", "2").parse().unwrap();
    let reps: usize = arg(&args, "--reps", "3").parse().unwrap();
    let k: usize = arg(&args, "--k", "10").parse().unwrap();
    let table: bool = arg(&args, "--table", "false").parse().unwrap();
    let w = bits.div_ceil(64);

    let (n0, cols, bytes) = npy::read_u8(&codes_path);
    let base = pack::pack_le_bytes(&bytes, n0, cols, bits).unwrap();
    let (nq_all, qcols, qbytes) = npy::read_u8(&queries_path);
    let nq = nq.min(nq_all);
    let queries = pack::pack_le_bytes(&qbytes[..nq * qcols], nq, qcols, bits).unwrap();

    // Firing distribution and its CDF.
    let mut fires = vec![0u64; bits];
    for row in base.chunks_exact(w) {
        for (wi, &x) in row.iter().enumerate() {
            let mut x = x;
            while x != 0 {
                fires[wi * 64 + x.trailing_zeros() as usize] += 1;
                x &= x - 1;
            }
        }
    }
    let total: u64 = fires.iter().sum();
    let mut cdf = Vec::with_capacity(bits);
    let mut acc = 0u64;
    for &f in &fires {
        acc += f;
        cdf.push(acc);
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    let mut codes = Vec::with_capacity(n0 * copies * w);
    codes.extend_from_slice(&base);
    for _ in 1..copies {
        for row in base.chunks_exact(w) {
            let mut new = row.to_vec();
            for (wi, &x) in row.iter().enumerate() {
                let mut x = x;
                while x != 0 {
                    let j = wi * 64 + x.trailing_zeros() as usize;
                    x &= x - 1;
                    if rng.random_bool(p) {
                        // Draw a replacement bit from the firing distribution, not already set.
                        for _ in 0..64 {
                            let u = rng.random_range(0..total);
                            let t = cdf.partition_point(|&c| c <= u);
                            if (new[t / 64] >> (t % 64)) & 1 == 0 {
                                new[j / 64] &= !(1 << (j % 64));
                                new[t / 64] |= 1 << (t % 64);
                                break;
                            }
                        }
                    }
                }
            }
            codes.extend_from_slice(&new);
        }
    }
    let n = codes.len() / w;
    let built = Instant::now();
    let lists = InvertedLists::build(&codes, bits).unwrap();
    let build_s = built.elapsed().as_secs_f64();
    let inv = lists.view();
    let max_fire = *fires.iter().max().unwrap() as f64 / n0 as f64;
    let mean_touched: f64 = queries
        .chunks_exact(w)
        .map(|q| inv.touched(q, &Score::Hamming) as f64)
        .sum::<f64>()
        / nq as f64;

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let force: bool = arg(&args, "--force", "false").parse().unwrap();
    let params = SearchParams::default();
    let inv_params = SearchParams::default().with_force_inverted(force);
    let fq = &queries[..flat_nq.min(nq) * w];
    let fnq = fq.len() / w;
    let mut flat_t = Vec::new();
    let mut inv_t = Vec::new();
    let mut flat_hits = Vec::new();
    let mut inv_hits = Vec::new();
    let mut stats = None;
    for _ in 0..reps {
        let t = Instant::now();
        flat_hits = pool.install(|| top_k(&codes, w, bits, fq, k, &params).unwrap());
        flat_t.push(t.elapsed().as_secs_f64() / fnq as f64);
        let t = Instant::now();
        let (h, s) = pool.install(|| {
            inverted::top_k(
                &codes,
                w,
                bits,
                &inv,
                &queries,
                k,
                &Score::Hamming,
                None,
                &inv_params,
            )
            .unwrap()
        });
        inv_t.push(t.elapsed().as_secs_f64() / nq as f64);
        inv_hits = h;
        stats = Some(s);
    }
    assert_eq!(
        &inv_hits[..fnq],
        &flat_hits[..],
        "inverted and flat results differ"
    );
    // Bitmap posting lists, alone and beside the lists (the search then picks, per query, the
    // cheaper by its cost estimate): timed after the other two, same queries and pool, each
    // round beside a flat round.
    let built = Instant::now();
    let bitmaps = bsa_index::bitmaps::BitmapLists::build(&codes, bits).unwrap();
    let bitmap_build_s = built.elapsed().as_secs_f64();
    let bm = bitmaps.view();
    let both = inv.with_bitmaps(Some(bm));
    let mut bm_t = Vec::new();
    let mut both_t = Vec::new();
    let mut bm_keys = Vec::new();
    let mut both_stats = None;
    for _ in 0..reps {
        let t = Instant::now();
        bm_keys = pool.install(|| {
            bm.hamming_keys(
                &queries,
                w,
                k,
                None,
                bsa_index::KernelFamily::active().unwrap(),
            )
        });
        bm_t.push(t.elapsed().as_secs_f64() / nq as f64);
        let t = Instant::now();
        let (h, s) = pool.install(|| {
            inverted::top_k(
                &codes,
                w,
                bits,
                &both,
                &queries,
                k,
                &Score::Hamming,
                None,
                &inv_params,
            )
            .unwrap()
        });
        both_t.push(t.elapsed().as_secs_f64() / nq as f64);
        assert_eq!(
            &h[..fnq],
            &flat_hits[..],
            "inverted with bitmaps and flat results differ"
        );
        both_stats = Some(s);
        let t = Instant::now();
        flat_hits = pool.install(|| top_k(&codes, w, bits, fq, k, &params).unwrap());
        flat_t.push(t.elapsed().as_secs_f64() / fnq as f64);
    }
    for (keys, hits) in bm_keys.iter().zip(&flat_hits) {
        let got: Vec<(u32, u64)> = keys
            .iter()
            .map(|&x| ((x >> 32) as u32, x & 0xffff_ffff))
            .collect();
        let want: Vec<(u32, u64)> = hits
            .distances
            .iter()
            .copied()
            .zip(hits.rows.iter().copied())
            .collect();
        assert_eq!(got, want, "bitmap and flat results differ");
    }
    let both_s = median(both_t);
    let both_stats = both_stats.unwrap();
    let bms = median(bm_t);
    let (fs, is) = (median(flat_t), median(inv_t));
    let index_json = match args.iter().position(|a| a == "--index") {
        Some(i) => index_rounds(&args[i + 1], &codes, bits, &queries, k, reps, &pool),
        None => serde_json::Value::Null,
    };
    let mut table_json = serde_json::Value::Null;
    if table {
        let tables: Vec<f32> = (0..nq * bits)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let offsets: Vec<f32> = (0..nq).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let score = Score::Table {
            tables: &tables,
            offsets: &offsets,
            normalise: false,
        };
        let tq = 50.min(nq);
        let sub = Score::Table {
            tables: &tables[..tq * bits],
            offsets: &offsets[..tq],
            normalise: false,
        };
        let _ = score;
        let t = Instant::now();
        let a = pool.install(|| {
            top_k_scored(&codes, w, bits, &queries[..tq * w], k, &sub, None, &params).unwrap()
        });
        let ft = t.elapsed().as_secs_f64() / tq as f64;
        let t = Instant::now();
        let (b, _) = pool.install(|| {
            inverted::top_k(
                &codes,
                w,
                bits,
                &inv,
                &queries[..tq * w],
                k,
                &sub,
                None,
                &params,
            )
            .unwrap()
        });
        let it = t.elapsed().as_secs_f64() / tq as f64;
        assert_eq!(a, b, "table scores differ");
        table_json = serde_json::json!({"queries": tq, "flat_ms": ft * 1e3, "inverted_ms": it * 1e3, "speedup": ft / it});
    }
    println!(
        "{}",
        serde_json::json!({
            "bits": bits, "n": n, "base_rows": n0, "copies": copies, "p": p, "k": k,
            "threads": threads, "queries": nq, "flat_queries": fnq,
            "mean_popcount": total as f64 / n0 as f64, "max_bit_firing_rate": max_fire,
            "postings": inv.postings_len(), "mean_touched_per_query": mean_touched,
            "flat_words_per_query": n * w,
            "postings_bytes_u32": inv.postings_len() * 4, "postings_bytes_delta_varint": varint_bytes(&inv),
            "build_seconds": build_s,
            "kernel": bsa_index::hamming::kernel_name(bsa_index::KernelFamily::active().unwrap(), w),
            "flat_ms_per_query": fs * 1e3, "inverted_ms_per_query": is * 1e3, "speedup": fs / is,
            "bitmap_ms_per_query": bms * 1e3, "bitmap_speedup": fs / bms, "bitmap_build_seconds": bitmap_build_s,
            "with_bitmaps_ms_per_query": both_s * 1e3, "with_bitmaps_speedup": fs / both_s,
            "with_bitmaps_bitmap_queries": both_stats.bitmap_queries, "with_bitmaps_flat_fallback": both_stats.flat_queries,
            "inverted_stats": {"inverted": stats.unwrap().inverted_queries, "flat_fallback": stats.unwrap().flat_queries, "postings_visited_per_query": stats.unwrap().postings_visited as f64 / nq as f64, "codes_verified_per_query": stats.unwrap().codes_verified as f64 / nq as f64},
            "identical": true,
            "table": table_json,
            "index": index_json,
        })
    );
}

/// Builds an index of `codes` in `dir` (posting lists forced, the bitmaps as `bsa build` decides:
/// stored for the TopK and BSA codes measured) and times its flat
/// searcher, slabs kept (built by a warm-up batch), against its default inverted searcher,
/// alternating, each round's hits asserted identical.
fn index_rounds(
    dir: &str,
    codes: &[u64],
    bits: usize,
    queries: &[u64],
    k: usize,
    reps: usize,
    pool: &rayon::ThreadPool,
) -> serde_json::Value {
    use bsa_index::search::{FlatParams, FlatSearcher, InvertedParams, InvertedSearcher};
    use bsa_index::{Index, IndexBuilder, Searcher};
    IndexBuilder::new(bits, codes)
        .inverted(true)
        .overwrite(true)
        .build(dir)
        .unwrap();
    let index = Index::open(dir).unwrap();
    let nq = queries.len() / bits.div_ceil(64);
    let params = SearchParams::default();
    let flat = FlatSearcher::new(index.codes_view(), FlatParams::default());
    let lists = index
        .inverted()
        .expect("posting lists that pass their checks")
        .expect("the index stores posting lists");
    let inv = InvertedSearcher::new(index.codes_view(), lists, InvertedParams::default()).unwrap();
    let search = |s: &dyn Searcher| pool.install(|| s.search(queries, k, &Score::Hamming, &params));
    let (want, warm) = search(&flat).unwrap();
    let (mut flat_t, mut inv_t) = (Vec::new(), Vec::new());
    let mut stats = None;
    for _ in 0..reps {
        let t = Instant::now();
        let (h, _) = search(&flat).unwrap();
        flat_t.push(t.elapsed().as_secs_f64() / nq as f64);
        assert_eq!(h, want, "flat results differ between rounds");
        let t = Instant::now();
        let (h, s) = search(&inv).unwrap();
        inv_t.push(t.elapsed().as_secs_f64() / nq as f64);
        assert_eq!(h, want, "inverted and flat results differ");
        stats = Some(s);
    }
    let (fs, is) = (median(flat_t), median(inv_t));
    let counters: serde_json::Map<String, serde_json::Value> = stats
        .map(|s| s.counters)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, v)| (name.to_string(), v.into()))
        .collect();
    serde_json::json!({
        "bitmaps_stored": std::path::Path::new(dir).join("bitmaps.bin").exists(),
        "flat_kernel": warm.kernel, "flat_ms_per_query": fs * 1e3,
        "default_ms_per_query": is * 1e3, "speedup": fs / is, "default_counters": counters,
    })
}
