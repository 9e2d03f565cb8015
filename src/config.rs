//! What defines a model apart from its weights: how codes are made ([`Method`]), the distance of
//! the losses ([`LossKind`]), the alignment target ([`Target`]) and the sizes ([`ModelConfig`],
//! saved as model-file metadata). A leaf below the model, the losses and the vector loops, which
//! all branch on these; [`crate::model`] re-exports its items.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// How the binary code is made from the soft code `S`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The paper's BSA: `C = round(S)`, with the alignment loss pulling the count toward K.
    Bsa,
    /// "TopK clipping": `C` = k-hot of the K largest entries of `S`, no alignment loss.
    Topk,
    /// Baseline, no training: bit j = `x_j > 0` (N = D, `We` = identity, `be` = 0). See
    /// [`crate::baselines`].
    Sign,
    /// Baseline, no training: bit j = `r_j . x > 0` with Gaussian `r_j` (SimHash). See
    /// [`crate::baselines`].
    Lsh,
    /// Baseline, closed form: iterative quantization (PCA + learned rotation, Gong and Lazebnik
    /// 2011). See [`crate::baselines`].
    Itq,
    /// Binary dictionary learning: exactly K atoms per code chosen by greedy binary matching
    /// pursuit, decoder refitted in closed form. See [`crate::pursuit`].
    Pursuit,
}

impl Method {
    /// Every method, in the order their names are listed (`bsa`, `topk`, `sign`, `lsh`, `itq`,
    /// `pursuit`).
    pub const ALL: [Method; 6] = [
        Method::Bsa,
        Method::Topk,
        Method::Sign,
        Method::Lsh,
        Method::Itq,
        Method::Pursuit,
    ];

    /// Whether a row's code depends on its length, not only its direction: true for every method
    /// but [`Method::Sign`] and [`Method::Lsh`], whose bits are signs of products with the row
    /// (the others add a bias or subtract a mean first, or pick the largest activations). Such
    /// models want L2-normalised rows, at training and at every later encoding alike.
    ///
    /// ```
    /// use bsa::model::Method;
    /// assert!(Method::Pursuit.depends_on_length());
    /// assert!(!Method::Sign.depends_on_length());
    /// ```
    pub fn depends_on_length(self) -> bool {
        !matches!(self, Method::Sign | Method::Lsh)
    }

    /// True for the baselines fitted in closed form by [`crate::baselines`] (not by gradient
    /// descent): [`Method::Sign`], [`Method::Lsh`], [`Method::Itq`].
    pub fn is_baseline(self) -> bool {
        matches!(self, Method::Sign | Method::Lsh | Method::Itq)
    }

    /// The methods that read the training setting `name` (a field of
    /// [`TrainParams`](crate::train::TrainParams), [`PursuitParams`](crate::pursuit::PursuitParams)
    /// or [`BaselineParams`](crate::baselines::BaselineParams), or `init`, `neighbour_weight`,
    /// `neighbour_rows`: the command line's names); `None` for settings every method reads
    /// (`bits`, `k`, `seed`, and the command's own `data`, `out`, `threads`...). The command
    /// line and Python refuse a setting given to a method that would ignore it.
    ///
    /// ```
    /// use bsa::model::Method;
    /// assert_eq!(Method::readers("epochs"), Some(&[Method::Bsa, Method::Topk][..]));
    /// assert!(!Method::readers("rounds").unwrap().contains(&Method::Itq));
    /// assert_eq!(Method::readers("seed"), None);
    /// ```
    pub fn readers(name: &str) -> Option<&'static [Method]> {
        let known = Method::classify(name);
        // A name missing from `classify` would be taken as read by every method: a refusal
        // silently off. Tests pass every setting of the CLI and Python through `knows`.
        debug_assert!(known.is_some(), "unknown training setting {name:?}");
        known.flatten()
    }

    /// Whether `name` is a training setting [`readers`](Self::readers) knows.
    pub fn knows(name: &str) -> bool {
        Method::classify(name).is_some()
    }

    /// `Some(readers)` of a known setting (`Some(None)`: every method), `None` if unknown.
    fn classify(name: &str) -> Option<Option<&'static [Method]>> {
        use Method::*;
        Some(Some(match name {
            // TopK trains without the alignment term (its weight is 0 whatever alpha says), but
            // `--method topk --alpha A` is in the command-line contract: accepted, no effect.
            "alpha" | "target" | "loss" | "epochs" | "batch" | "lr" | "val_fraction"
            | "decoder_path" | "schedule" | "warmup_epochs" | "final_lr_fraction" | "monitor"
            | "patience" | "monitor_max_active" | "probe_queries" | "quantile_bias_init"
            | "rebalance_bits" | "max_bit_freq" | "neighbour_weight" | "neighbour_rows" => {
                &[Bsa, Topk]
            }
            "rounds" | "ridge" | "init" => &[Pursuit],
            "fit_rows" => &[Sign, Lsh, Itq, Pursuit],
            "itq_iterations" => &[Itq],
            "bits" | "k" | "seed" | "method" | "preset" | "data" | "out" | "threads" | "json"
            | "quiet" | "progress" => return Some(None),
            _ => return None,
        }))
    }

    /// `name` is a setting `self` reads ([`readers`](Self::readers)).
    pub fn reads(self, name: &str) -> bool {
        Method::readers(name).is_none_or(|r| r.contains(&self))
    }

    /// The settings of `given` that `self` does not read, each group followed by the methods
    /// that read it, for an error message (`None` when it reads them all); `show` spells a
    /// setting's name as the caller's user typed it.
    ///
    /// ```
    /// use bsa::model::Method;
    /// let text = Method::Itq.unread(&["epochs", "bits", "lr", "rounds"], |s| format!("--{s}"));
    /// assert_eq!(
    ///     text.as_deref(),
    ///     Some("--epochs, --lr (read by bsa, topk); --rounds (read by pursuit)")
    /// );
    /// assert_eq!(Method::Itq.unread(&["bits", "fit_rows"], |s| s.to_string()), None);
    /// ```
    pub fn unread<S: AsRef<str>>(
        self,
        given: &[S],
        show: impl Fn(&str) -> String,
    ) -> Option<String> {
        let mut groups: Vec<(&[Method], Vec<String>)> = Vec::new();
        for name in given.iter().map(AsRef::as_ref).filter(|n| !self.reads(n)) {
            let readers = Method::readers(name).unwrap_or_default();
            match groups.iter_mut().find(|(r, _)| *r == readers) {
                Some((_, names)) => names.push(show(name)),
                None => groups.push((readers, vec![show(name)])),
            }
        }
        let parts: Vec<String> = groups
            .iter()
            .map(|(readers, names)| {
                let methods: Vec<String> = readers.iter().map(|m| m.to_string()).collect();
                format!("{} (read by {})", names.join(", "), methods.join(", "))
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// The distance used in both loss terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Cosine distance `1 - u.v / (|u| |v|)` (the paper).
    Cosine,
    /// Mean squared error (the paper's ablation).
    Mse,
}

/// The TopK target `T` that the soft code `S` is aligned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// 1 at the K largest entries of each row of `S`, 0 elsewhere.
    Khot,
    /// `S` itself at the K largest entries, 0 elsewhere.
    Masked,
}

macro_rules! impl_enum_str {
    ($t:ty, $what:literal, $($name:literal => $v:expr),+) => {
        impl FromStr for $t {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($name => Ok($v),)+
                    _ => Err(Error::InvalidArgument(format!(
                        "unknown {} {s:?}; expected one of: {}",
                        $what,
                        [$($name),+].join(", ")
                    ))),
                }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let s = match self { $(v if *v == $v => $name,)+ _ => unreachable!() };
                f.write_str(s)
            }
        }
    };
}
impl_enum_str!(
    Method,
    "method",
    "bsa" => Method::Bsa,
    "topk" => Method::Topk,
    "sign" => Method::Sign,
    "lsh" => Method::Lsh,
    "itq" => Method::Itq,
    "pursuit" => Method::Pursuit
);
impl_enum_str!(LossKind, "loss", "cosine" => LossKind::Cosine, "mse" => LossKind::Mse);
impl_enum_str!(Target, "target", "khot" => Target::Khot, "masked" => Target::Masked);

/// Everything that defines a model apart from its weights. Saved as model-file metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Input dimension D.
    pub dim: usize,
    /// Code length N (number of bits).
    pub bits: usize,
    /// Target number of active bits K.
    pub k: usize,
    /// How codes are made.
    pub method: Method,
    /// Loss used in training.
    pub loss: LossKind,
    /// Weight of the alignment loss (ignored by [`Method::Topk`]).
    pub alpha: f64,
    /// Alignment target.
    pub target: Target,
}

impl ModelConfig {
    /// Checks that the sizes make sense (`0 < k <= bits`, `dim > 0`, finite `alpha >= 0`).
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 {
            return Err(Error::InvalidArgument(
                "input dimension must be positive".into(),
            ));
        }
        if self.bits == 0 {
            return Err(Error::InvalidArgument("--bits must be positive".into()));
        }
        check_sizes(self.bits, self.k)?;
        // The loss is summed in f32: a weight beyond its range makes it infinite at the first
        // step, which would be reported as a divergence to be mended by a lower --lr.
        if !(self.alpha.is_finite() && self.alpha >= 0.0 && (self.alpha as f32).is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "--alpha must be a number >= 0 within float32's range (3.4e38), got {:?}",
                self.alpha
            )));
        }
        Ok(())
    }

    /// This configuration as a trained model records it: TopK has no alignment term, so the
    /// alpha and target given to it (accepted, without effect) are recorded as 0 and k-hot,
    /// what made it; other methods' are unchanged. `bsa train` and the PyTorch peer's model
    /// files both go through here.
    ///
    /// ```
    /// use bsa::model::{LossKind, Method, ModelConfig, Target};
    /// let c = ModelConfig { dim: 8, bits: 64, k: 4, method: Method::Topk, loss: LossKind::Cosine,
    ///                       alpha: 5.0, target: Target::Masked };
    /// let t = c.as_trained();
    /// assert_eq!((t.alpha, t.target), (0.0, Target::Khot));
    /// ```
    pub fn as_trained(mut self) -> Self {
        if self.method == Method::Topk {
            self.alpha = 0.0;
            self.target = Target::Khot;
        }
        self
    }

    /// The alignment weight actually used: `alpha` for BSA, 0 for TopK (which has no such term)
    /// and for the baselines (which are not trained by gradient descent).
    pub fn effective_alpha(&self) -> f64 {
        match self.method {
            Method::Bsa => self.alpha,
            Method::Topk | Method::Sign | Method::Lsh | Method::Itq | Method::Pursuit => 0.0,
        }
    }
}

/// The longest code a model makes: 65,536 bits (8 KiB a row), far past any use of these codes,
/// while the weights of a longer one (twice bits x dim floats) could exhaust memory before any
/// training starts.
pub const MAX_BITS: usize = 1 << 16;

/// Refuses a fit whose main arrays (`bytes` in all, `what` they are) this process cannot
/// allocate, found by reserving that much and freeing it at once (no page is touched): a clear
/// error before the work, where the allocation itself would abort the process ("memory
/// allocation failed") once the input was read. Data of absurd width (a million columns) or
/// --bits meet it first.
pub(crate) fn check_memory(bytes: u128, what: &str) -> Result<()> {
    let fits = usize::try_from(bytes)
        .ok()
        .is_some_and(|b| Vec::<u8>::new().try_reserve_exact(b).is_ok());
    if fits {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "{what} would need about {:.1} GB of memory, more than this process can allocate; use \
         fewer bits, or data of lower dimension",
        bytes as f64 / 1e9
    )))
}

/// Checks `k < bits` for the methods that learn which `k` bits to set (bsa's TopK target, topk,
/// pursuit): with `k = bits` every code would have every bit set and tell no row from another.
/// Not part of [`check_sizes`], which model files are read with: a sign model of one input
/// dimension has one bit and `k = 1`.
/// Called before [`check_sizes`], so that a `--k` out of range is told the range these methods
/// take (`1..bits`, not `1..=bits`); sizes `check_sizes` refuses anyway are left to it.
pub(crate) fn check_k_below_bits(bits: usize, k: usize) -> Result<()> {
    if bits == 0 || bits > MAX_BITS {
        return Ok(());
    }
    if bits == 1 {
        return Err(Error::InvalidArgument(
            "--bits 1 leaves no --k below it (these methods set K of N bits, 0 < K < N): use \
             --bits 2 or more"
                .into(),
        ));
    }
    if k == bits {
        return Err(Error::InvalidArgument(format!(
            "--k {k} sets every one of the {bits} bits: every code would be all ones and tell \
             no row from another; use a --k below --bits (a few percent of it is typical)"
        )));
    }
    if k == 0 || k > bits {
        return Err(Error::InvalidArgument(format!(
            "--k must be between 1 and {}, below --bits ({bits}), got {k}",
            bits - 1
        )));
    }
    Ok(())
}

/// Checks `0 < k <= bits <= MAX_BITS`: the one rule every method's sizes follow.
pub(crate) fn check_sizes(bits: usize, k: usize) -> Result<()> {
    if bits > MAX_BITS {
        return Err(Error::InvalidArgument(format!(
            "--bits must be at most {MAX_BITS}, got {bits}"
        )));
    }
    if k == 0 || k > bits {
        return Err(Error::InvalidArgument(format!(
            "--k must be between 1 and --bits ({bits}), got {k}"
        )));
    }
    Ok(())
}
