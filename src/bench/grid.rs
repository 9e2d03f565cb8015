//! The grid of `bsa bench`: which cells (method x N x K, plus the alpha sweep and the HNSW cells)
//! a preset or explicit sizes give, and the settings shared by every cell.

use std::fmt::Write as _;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::Method;
use crate::train::TrainParams;

/// A code method of the benchmark: a model method plus, for BSA, the paper's ablations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Variant {
    /// Sign bits of the raw vector (N = D).
    Sign,
    /// SimHash: signs of N Gaussian projections.
    Lsh,
    /// Iterative quantization (N <= D).
    Itq,
    /// TopK autoencoder (exactly K bits).
    Topk,
    /// BSA, the paper (alpha 1, cosine).
    Bsa,
    /// BSA without the alignment loss (alpha 0).
    BsaAlpha0,
    /// BSA with mean squared error in both terms.
    BsaMse,
    /// BSA (alpha 1, cosine) with healthy bits: encoder biases start at the quantile that fires
    /// each bit for about K of N rows, and bits that are dead or fire for more than half of the
    /// rows are reset after each epoch (benches/RESULTS-training.md).
    BsaHealthy,
    /// Binary matching pursuit (exactly K bits).
    Pursuit,
}

impl Variant {
    /// Every variant, in report order.
    pub const ALL: [Variant; 9] = [
        Variant::Sign,
        Variant::Lsh,
        Variant::Itq,
        Variant::Topk,
        Variant::Bsa,
        Variant::BsaAlpha0,
        Variant::BsaMse,
        Variant::BsaHealthy,
        Variant::Pursuit,
    ];

    /// The name used on the command line and in `results.json`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Sign => "sign",
            Variant::Lsh => "lsh",
            Variant::Itq => "itq",
            Variant::Topk => "topk",
            Variant::Bsa => "bsa",
            Variant::BsaAlpha0 => "bsa-alpha0",
            Variant::BsaMse => "bsa-mse",
            Variant::BsaHealthy => "bsa-healthy",
            Variant::Pursuit => "pursuit",
        }
    }

    /// Parses [`name`](Self::name).
    pub fn parse(s: &str) -> Result<Variant> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown bench method {s:?}; known: {}",
                    Variant::ALL.map(Variant::name).join(", ")
                ))
            })
    }

    /// True when the codes use K (trained methods and pursuit); the baselines ignore it.
    pub fn uses_k(self) -> bool {
        !matches!(self, Variant::Sign | Variant::Lsh | Variant::Itq)
    }

    /// True when every code has exactly K bits set, so it can be stored as K ids.
    pub fn exactly_k(self) -> bool {
        matches!(self, Variant::Topk | Variant::Pursuit)
    }

    /// The method that makes this variant's codes (the BSA ablations are all [`Method::Bsa`]).
    ///
    /// ```
    /// use bsa::bench::Variant;
    /// use bsa::model::Method;
    /// assert_eq!(Variant::BsaMse.method(), Method::Bsa);
    /// assert!(!Variant::Lsh.method().depends_on_length());
    /// ```
    pub fn method(self) -> Method {
        match self {
            Variant::Sign => Method::Sign,
            Variant::Lsh => Method::Lsh,
            Variant::Itq => Method::Itq,
            Variant::Topk => Method::Topk,
            Variant::Pursuit => Method::Pursuit,
            Variant::Bsa | Variant::BsaAlpha0 | Variant::BsaMse | Variant::BsaHealthy => {
                Method::Bsa
            }
        }
    }
}

/// One cell of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cell {
    /// The method.
    pub variant: Variant,
    /// Code length N.
    pub bits: usize,
    /// Target active bits K (None for sign, LSH and ITQ).
    pub k: Option<usize>,
    /// BSA only: the alignment weight of an alpha-sweep cell (None: the variant's own alpha).
    pub alpha: Option<f64>,
    /// Also build an HNSW graph and measure recall against QPS over `ef`.
    pub hnsw: bool,
}

impl Cell {
    /// `method N=.. K=..`, for progress messages and tables.
    pub fn label(&self) -> String {
        let mut s = format!("{} N={}", self.variant.name(), self.bits);
        if let Some(k) = self.k {
            let _ = write!(s, " K={k}");
        }
        if let Some(a) = self.alpha {
            let _ = write!(s, " alpha={a}");
        }
        s
    }

    /// A file-name-safe form of [`label`](Self::label), naming the cell's cache folder.
    pub fn slug(&self) -> String {
        let mut s = format!("{}-{}", self.variant.name(), self.bits);
        if let Some(k) = self.k {
            let _ = write!(s, "-k{k}");
        }
        if let Some(a) = self.alpha {
            let _ = write!(s, "-a{a}");
        }
        s
    }

    /// The alignment weight BSA variants train with (None for other methods).
    pub fn effective_alpha(&self) -> Option<f64> {
        match self.variant {
            Variant::Bsa | Variant::BsaMse | Variant::BsaHealthy => {
                Some(self.alpha.unwrap_or(TrainParams::new(self.bits, 1).alpha))
            }
            Variant::BsaAlpha0 => Some(0.0),
            _ => None,
        }
    }
}

/// Which cells also get an HNSW graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HnswCells {
    /// The preset's choice: sign and pursuit in the quick grid; in the paper grid one cell per method at the
    /// budget of the paper's headline model (N = 1024, K = 32; sign and ITQ at N = D), and
    /// pursuit at N = 4096, K = 32 (`bsa train --preset retrieval`).
    Preset,
    /// Every cell.
    All,
    /// None.
    None,
}

/// A named grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Minutes on the bench-data sample: sign, lsh (N=256), itq (N=128 or D), topk, bsa and
    /// bsa-healthy (N=512, K=16, 3 epochs), pursuit (N=1024, K=16, 2 rounds).
    Quick,
    /// The paper-scale grid: N in {512, 1024, 2048, 4096} x K in {8, 16, 32, 64}, every method
    /// and ablation, and the alpha sweep (107 cells on 384-d data), 10 epochs, 6 pursuit rounds.
    /// Hours on 2 cores for 100k vectors (not run in CI; `--cache` lets it run in pieces).
    Paper,
}

impl Preset {
    /// Epochs of the trained methods.
    pub fn epochs(self) -> usize {
        match self {
            Preset::Quick => 3,
            Preset::Paper => 10,
        }
    }

    /// Pursuit rounds.
    pub fn rounds(self) -> usize {
        match self {
            Preset::Quick => 2,
            Preset::Paper => 6,
        }
    }

    /// Methods run by default.
    pub fn methods(self) -> Vec<Variant> {
        match self {
            Preset::Quick => vec![
                Variant::Sign,
                Variant::Lsh,
                Variant::Itq,
                Variant::Topk,
                Variant::Bsa,
                Variant::BsaHealthy,
                Variant::Pursuit,
            ],
            Preset::Paper => Variant::ALL.to_vec(),
        }
    }
}

/// The cells for `methods` on data of dimension `dim`. With `bits` and `ks` given, every method
/// runs on every N (and every K < N for the methods that use K); sign always has N = D, ITQ at
/// most D. Without them, the preset's sizes: quick has one size per method, paper the full grid.
/// `alphas` adds an alpha sweep of BSA (when `bsa` is among the methods) at the given sizes, or
/// at N = 1024, K = 32 for the paper preset; the paper preset sweeps
/// [`PAPER_ALPHAS`] unless `alphas` is given.
///
/// Also returns what became of the sizes given (`bits`, `ks`) that the grid could not take as
/// asked, one line each: K not below N (skipped; also a preset's K against the N given), ITQ
/// above D and sign bits (both at D). The presets' own sizes are not reported (their ITQ and
/// sign cells are at D by design).
pub fn grid(
    preset: Preset,
    methods: &[Variant],
    bits: Option<&[usize]>,
    ks: Option<&[usize]>,
    alphas: Option<&[f64]>,
    hnsw: HnswCells,
    dim: usize,
) -> (Vec<Cell>, Vec<String>) {
    let mut notes: Vec<String> = Vec::new();
    let mut note = |line: String| {
        if !notes.contains(&line) {
            notes.push(line);
        }
    };
    let paper_bits = [512, 1024, 2048, 4096];
    let paper_ks = [8, 16, 32, 64];
    let mut out: Vec<Cell> = Vec::new();
    let hnsw_for = |v: Variant, n: usize, k: Option<usize>| match hnsw {
        HnswCells::All => true,
        HnswCells::None => false,
        HnswCells::Preset => match preset {
            // Graphs cost more than the rest of a quick cell: one dense and one sparse code.
            Preset::Quick => matches!(v, Variant::Sign | Variant::Pursuit),
            Preset::Paper => match v {
                Variant::Sign | Variant::Itq => true,
                Variant::Lsh => n == 1024,
                Variant::Pursuit => k == Some(32) && (n == 1024 || n == 4096),
                _ => n == 1024 && k == Some(32),
            },
        },
    };
    let mut push = |v: Variant, n: usize, k: Option<usize>, alpha: Option<f64>| {
        push_unique(
            &mut out,
            Cell {
                variant: v,
                bits: n,
                k,
                alpha,
                hnsw: hnsw == HnswCells::All || (alpha.is_none() && hnsw_for(v, n, k)),
            },
        )
    };
    for &v in methods {
        let kk: Vec<usize> = match (ks, preset) {
            (Some(k), _) => k.to_vec(),
            (None, Preset::Paper) => paper_ks.to_vec(),
            (None, Preset::Quick) => vec![16],
        };
        let ns: Vec<usize> = match (bits, preset) {
            (Some(b), _) => b.to_vec(),
            (None, Preset::Paper) => paper_bits.to_vec(),
            (None, Preset::Quick) => match v {
                Variant::Lsh => vec![256],
                Variant::Itq => vec![128],
                Variant::Pursuit => vec![1024],
                _ => vec![512],
            },
        };
        for &n in &ns {
            let given = n;
            let n = match v {
                Variant::Sign => dim,
                Variant::Itq => n.min(dim),
                _ => n,
            };
            if bits.is_some() && n != given {
                note(match v {
                    Variant::Sign => format!(
                        "sign: N is the data's dimension, {dim} (--bits {given} does not apply)"
                    ),
                    _ => format!(
                        "{}: N = {given} is above the data's dimension; run at N = {dim}",
                        v.name()
                    ),
                });
            }
            if v.uses_k() {
                for &k in &kk {
                    if k > 0 && k < n {
                        push(v, n, Some(k), None);
                    } else if ks.is_some() || bits.is_some() {
                        note(format!(
                            "{}: K = {k} skipped at N = {n} (K must be in 1..N-1)",
                            v.name()
                        ));
                    }
                }
            } else {
                push(v, n, None, None);
            }
        }
    }
    let sweep: &[f64] = match (alphas, preset) {
        (Some(a), _) => a,
        (None, Preset::Paper) => &PAPER_ALPHAS,
        (None, Preset::Quick) => &[],
    };
    if methods.contains(&Variant::Bsa) && !sweep.is_empty() {
        let ns = bits.map(<[usize]>::to_vec).unwrap_or_else(|| match preset {
            Preset::Paper => vec![PAPER_HEADLINE.0],
            Preset::Quick => vec![512],
        });
        let kk = ks.map(<[usize]>::to_vec).unwrap_or_else(|| match preset {
            Preset::Paper => vec![PAPER_HEADLINE.1],
            Preset::Quick => vec![16],
        });
        for &n in &ns {
            for &k in kk.iter().filter(|&&k| k > 0 && k < n) {
                for &a in sweep {
                    // The default alpha is the bsa cell itself.
                    let default = TrainParams::new(n, k).alpha;
                    if a != default {
                        push(Variant::Bsa, n, Some(k), Some(a));
                    }
                }
            }
        }
    }
    (out, notes)
}

/// The paper's headline size `(N, K)`: where the paper preset sweeps alpha, and the BSA cell
/// whose bit histograms the report shows when the grid has it.
pub const PAPER_HEADLINE: (usize, usize) = (1024, 32);

/// The alpha sweep of the paper preset (BSA, N = 1024, K = 32), besides alpha = 0 and 1, which
/// are the `bsa-alpha0` and `bsa` cells.
pub const PAPER_ALPHAS: [f64; 5] = [0.03, 0.1, 0.3, 3.0, 10.0];

fn push_unique(out: &mut Vec<Cell>, c: Cell) {
    if !out.contains(&c) {
        out.push(c);
    }
}

/// Settings shared by every cell.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// The preset the grid came from.
    pub preset: Preset,
    /// Epochs of topk and the BSA variants.
    pub epochs: usize,
    /// Pursuit rounds.
    pub rounds: usize,
    /// Seed of every fit.
    pub seed: u64,
    /// Threads (rayon and OpenBLAS).
    pub threads: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_grid_has_one_cell_per_method() {
        let (c, _) = grid(
            Preset::Quick,
            &Preset::Quick.methods(),
            None,
            None,
            None,
            HnswCells::Preset,
            384,
        );
        assert!(c.iter().all(|c| c.alpha.is_none()));
        let hnsw: Vec<String> = c.iter().filter(|c| c.hnsw).map(Cell::label).collect();
        assert_eq!(hnsw, ["sign N=384", "pursuit N=1024 K=16"]);
        let labels: Vec<String> = c.iter().map(Cell::label).collect();
        assert_eq!(
            labels,
            [
                "sign N=384",
                "lsh N=256",
                "itq N=128",
                "topk N=512 K=16",
                "bsa N=512 K=16",
                "bsa-healthy N=512 K=16",
                "pursuit N=1024 K=16"
            ]
        );
        let (p, _) = grid(
            Preset::Paper,
            &Preset::Paper.methods(),
            None,
            None,
            None,
            HnswCells::Preset,
            384,
        );
        // sign 1, lsh 4, itq 1 (all clamp to D), 6 K-methods x 16, 5 sweep alphas.
        assert_eq!(p.len(), 1 + 4 + 1 + 6 * 16 + 5);
        let sweep: Vec<String> = p
            .iter()
            .filter(|c| c.alpha.is_some())
            .map(Cell::label)
            .collect();
        assert_eq!(sweep[0], "bsa N=1024 K=32 alpha=0.03");
        assert_eq!(
            p.iter().find(|c| c.alpha.is_some()).unwrap().slug(),
            "bsa-1024-k32-a0.03"
        );
        // One HNSW cell per method at the headline budget, plus pursuit at 4096.
        let hnsw: Vec<String> = p.iter().filter(|c| c.hnsw).map(Cell::label).collect();
        assert_eq!(
            hnsw,
            [
                "sign N=384",
                "lsh N=1024",
                "itq N=384",
                "topk N=1024 K=32",
                "bsa N=1024 K=32",
                "bsa-alpha0 N=1024 K=32",
                "bsa-mse N=1024 K=32",
                "bsa-healthy N=1024 K=32",
                "pursuit N=1024 K=32",
                "pursuit N=4096 K=32"
            ]
        );
        assert_eq!(
            Cell {
                variant: Variant::BsaAlpha0,
                bits: 64,
                k: Some(4),
                alpha: None,
                hnsw: false
            }
            .effective_alpha(),
            Some(0.0)
        );
    }

    #[test]
    fn explicit_sizes_override_the_preset() {
        let (c, _) = grid(
            Preset::Quick,
            &[Variant::Sign, Variant::Bsa],
            Some(&[32, 64]),
            Some(&[4, 40]),
            Some(&[0.5]),
            HnswCells::None,
            16,
        );
        let labels: Vec<String> = c.iter().map(Cell::label).collect();
        assert_eq!(
            labels,
            [
                "sign N=16",
                "bsa N=32 K=4",
                "bsa N=64 K=4",
                "bsa N=64 K=40",
                "bsa N=32 K=4 alpha=0.5",
                "bsa N=64 K=4 alpha=0.5",
                "bsa N=64 K=40 alpha=0.5"
            ]
        );
        assert!(c.iter().all(|c| !c.hnsw));
    }
}
