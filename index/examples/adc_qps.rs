//! Kernel-level speed of the quantised table scan (`bsa_index::adc`) against the plain exact
//! scan it replaces, on random codes shaped like WordNet's (index/RESULTS-adc.md): sparse codes
//! of `bits` bits with `set` bits each (pursuit: 4096, 32), and dense 384-bit codes (sign bits).
//! One thread; every family this CPU runs (or `BSA_KERNEL`'s), in turn within each repetition,
//! so a noisy machine slows them alike: quote the ratios. Results are checked equal to the plain
//! scan's.
//!
//! `cargo run --release -p bsa-index --example adc_qps -- [n] [queries] [reps] [bits] [set] [dense_bits]`

use std::time::Instant;

use bsa_index::KernelFamily;
use bsa_index::adc::{self, AdcCodes, GROUP, QuantisedTable, QueryGroup};
use bsa_index::score::{desc_key, table_score, table_sum};
use bsa_index::sparse::SparseCodes;
use bsa_index::topk::TopK;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The queries' top 10 keys by the quantised scan with `family`, and the codes re-scored.
#[allow(clippy::too_many_arguments)]
fn quantised(
    family: KernelFamily,
    layout: &AdcCodes,
    tables: &[f32],
    offsets: &[f32],
    norms: &[f32],
    bits: usize,
    exact_sum: &dyn Fn(usize, &[f32]) -> f64,
) -> (Vec<Vec<u64>>, u64) {
    let nq = offsets.len();
    let mut out = Vec::with_capacity(nq);
    let mut rescored = 0;
    for g0 in (0..nq).step_by(GROUP) {
        let g1 = (g0 + GROUP).min(nq);
        let t = |q: usize| &tables[q * bits..(q + 1) * bits];
        let qts = (g0..g1)
            .map(|q| QuantisedTable::new(layout, t(q), offsets[q], true).unwrap())
            .collect();
        let group = QueryGroup::new(qts).unwrap();
        let mut tops: Vec<TopK> = (g0..g1).map(|_| TopK::new(10, None)).collect();
        let st = adc::scan(
            family,
            layout,
            &group,
            0..layout.len(),
            &mut tops,
            |g, r| {
                let q = g0 + g;
                desc_key(table_score(offsets[q], exact_sum(r, t(q)), Some(norms[r])))
            },
        )
        .unwrap();
        rescored += st.rescored;
        out.extend(tops.into_iter().map(TopK::into_sorted_keys));
    }
    (out, rescored)
}

/// The plain exact scan: every code's `f64` score.
fn plain(
    n: usize,
    tables: &[f32],
    offsets: &[f32],
    norms: &[f32],
    bits: usize,
    exact_sum: &dyn Fn(usize, &[f32]) -> f64,
) -> Vec<Vec<u64>> {
    (0..offsets.len())
        .map(|q| {
            let t = &tables[q * bits..(q + 1) * bits];
            let mut top = TopK::new(10, None);
            for (r, &norm) in norms.iter().enumerate().take(n) {
                top.offer(
                    desc_key(table_score(offsets[q], exact_sum(r, t), Some(norm))),
                    r as u32,
                );
            }
            top.into_sorted_keys()
        })
        .collect()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric argument"))
        .collect();
    let n = args.first().copied().unwrap_or(100_000);
    let nq = args.get(1).copied().unwrap_or(64);
    let reps = args.get(2).copied().unwrap_or(3).max(1);
    let bits = args.get(3).copied().unwrap_or(4096);
    let set = args.get(4).copied().unwrap_or(32);
    let dense_bits = args.get(5).copied().unwrap_or(384);
    let families = match KernelFamily::from_env().expect("BSA_KERNEL") {
        Some(f) => vec![f],
        None => KernelFamily::supported(),
    };
    let mut r = Xoshiro256PlusPlus::seed_from_u64(1);
    let norms: Vec<f32> = (0..n).map(|_| r.random_range(0.5f32..1.5)).collect();
    println!("n={n} queries={nq} reps={reps}, 1 thread, top 10, normalised scores");

    for dense in [false, true] {
        let b = if dense { dense_bits } else { bits };
        let w = b.div_ceil(64);
        let mut codes = vec![0u64; n * w];
        for row in codes.chunks_exact_mut(w) {
            if dense {
                for x in row.iter_mut() {
                    *x = r.random();
                }
                if b % 64 != 0 {
                    row[w - 1] &= (1u64 << (b % 64)) - 1;
                }
            } else {
                let mut c = 0;
                while c < set {
                    let j = r.random_range(0..b);
                    if row[j / 64] >> (j % 64) & 1 == 0 {
                        row[j / 64] |= 1 << (j % 64);
                        c += 1;
                    }
                }
            }
        }
        // Tables like ADC's: a shared bias per entry plus a query part (scores spread like
        // real ones, so the bound prunes as it would there).
        let tables: Vec<f32> = (0..nq * b).map(|_| r.random_range(-0.1f32..0.1)).collect();
        let offsets: Vec<f32> = (0..nq).map(|_| r.random_range(-0.1f32..0.1)).collect();
        let sparse = SparseCodes::build(&codes, b).unwrap();
        let view = sparse.view();
        let layout = if dense {
            AdcCodes::from_packed(&codes, b).unwrap()
        } else {
            AdcCodes::from_sparse(&view).unwrap()
        }
        .with_norms(&norms)
        .unwrap();
        // The exact sum as the index computes it: set-bit lists for sparse codes, the packed
        // words for dense ones (both add in ascending bit order).
        let exact_sum = |row: usize, t: &[f32]| -> f64 {
            if dense {
                table_sum(&codes[row * w..(row + 1) * w], t)
            } else {
                view.row(row)
                    .iter()
                    .fold(0.0, |s, &j| s + f64::from(t[j as usize]))
            }
        };
        let name = if dense {
            format!("dense {b} bits")
        } else {
            format!("sparse {b} bits, {set} set")
        };
        let mut plain_qps = Vec::new();
        let mut qps = vec![Vec::new(); families.len()];
        let mut rescored = 0;
        for _ in 0..reps {
            let t = Instant::now();
            let want = plain(n, &tables, &offsets, &norms, b, &exact_sum);
            plain_qps.push(nq as f64 / t.elapsed().as_secs_f64());
            for (fi, &f) in families.iter().enumerate() {
                let t = Instant::now();
                let (got, rs) = quantised(f, &layout, &tables, &offsets, &norms, b, &exact_sum);
                qps[fi].push(nq as f64 / t.elapsed().as_secs_f64());
                assert_eq!(got, want, "{f} differs from the plain scan");
                rescored = rs;
            }
        }
        let p = median(plain_qps);
        println!("{name}: plain exact scan {p:.1} QPS");
        for (fi, &f) in families.iter().enumerate() {
            let m = median(qps[fi].clone());
            println!(
                "  {:<22} {m:8.1} QPS  {:5.1}x plain  {:6.2} ns/code  {:.0} re-scored/query",
                adc::kernel_name(f, dense),
                m / p,
                1e9 / (m * n as f64),
                rescored as f64 / nq as f64
            );
        }
    }
}
