//! The two distances of the BSA objective (cosine and mean squared error), applied row by row
//! with their gradients, and the TopK alignment targets. Formulas: `shared/method.md`.

use ndarray::{Array2, ArrayView2, Axis, Zip};

use crate::config::{LossKind, Target};
use crate::real::{NORM_FLOOR, Real, top_k_indices};

/// A reported mean cosine distance, which is never below 0: rows reconstructed exactly round to
/// about -1e-8, which printed as "-0.0000". A NaN stays NaN (a model gone non-finite says so).
pub(crate) fn not_below_zero(d: f64) -> f64 {
    if d < 0.0 { 0.0 } else { d }
}

/// Mean over rows of `d(u_i, v_i)`, and, when `grad` is given, writes `d mean / d u` into it
/// (the `1/B` of the mean is folded in, as in method.md).
///
/// Cosine: `d = 1 - u.v/(|u||v|)`, `grad_i = -(v^ - cos u^) / (B |u|)`.
/// MSE: `d = mean_d (u - v)^2`, `grad_i = 2 (u - v) / (B D)`.
pub fn distance_rows<F: Real>(
    kind: LossKind,
    u: ArrayView2<F>,
    v: ArrayView2<F>,
    grad: Option<&mut Array2<F>>,
) -> F {
    assert_eq!(u.dim(), v.dim(), "distance_rows: shapes differ");
    let b = F::from(u.nrows()).unwrap();
    let cols = F::from(u.ncols()).unwrap();
    let floor = F::from(NORM_FLOOR).unwrap();
    let two = F::one() + F::one();
    let mut losses = vec![F::zero(); u.nrows()];
    let row_loss = |ui: ndarray::ArrayView1<F>, vi: ndarray::ArrayView1<F>| -> (F, F, F, F) {
        match kind {
            LossKind::Cosine => {
                let nu = ui.dot(&ui).sqrt().max(floor);
                let nv = vi.dot(&vi).sqrt().max(floor);
                let cos = ui.dot(&vi) / (nu * nv);
                (F::one() - cos, nu, nv, cos)
            }
            LossKind::Mse => {
                let s: F = ui.iter().zip(vi).map(|(&a, &c)| (a - c) * (a - c)).sum();
                (s / cols, F::zero(), F::zero(), F::zero())
            }
        }
    };
    match grad {
        None => Zip::from(&mut losses)
            .and(u.axis_iter(Axis(0)))
            .and(v.axis_iter(Axis(0)))
            .par_for_each(|l, ui, vi| *l = row_loss(ui, vi).0),
        Some(g) => {
            assert_eq!(g.dim(), u.dim(), "distance_rows: gradient shape differs");
            Zip::from(&mut losses)
                .and(g.axis_iter_mut(Axis(0)))
                .and(u.axis_iter(Axis(0)))
                .and(v.axis_iter(Axis(0)))
                .par_for_each(|l, mut gi, ui, vi| {
                    let (loss, nu, nv, cos) = row_loss(ui, vi);
                    *l = loss;
                    match kind {
                        LossKind::Cosine => Zip::from(&mut gi)
                            .and(ui)
                            .and(vi)
                            .for_each(|g, &a, &c| *g = -(c / nv - cos * a / nu) / (b * nu)),
                        LossKind::Mse => Zip::from(&mut gi)
                            .and(ui)
                            .and(vi)
                            .for_each(|g, &a, &c| *g = two * (a - c) / (b * cols)),
                    }
                });
        }
    }
    losses.into_iter().sum::<F>() / b
}

/// The TopK target `T` of the soft codes `S` (detached: a constant for the gradient).
/// [`Target::Khot`]: 1 at the K largest entries of each row; [`Target::Masked`]: `S` there.
/// Ties go to the lower index, so the target is deterministic.
pub fn topk_target<F: Real>(s: ArrayView2<F>, k: usize, target: Target) -> Array2<F> {
    let mut t = Array2::zeros(s.dim());
    Zip::from(t.axis_iter_mut(Axis(0)))
        .and(s.axis_iter(Axis(0)))
        .par_for_each(|mut ti, si| {
            let row = si.to_vec();
            for j in top_k_indices(&row, k) {
                let j = j as usize;
                ti[j] = match target {
                    Target::Khot => F::one(),
                    Target::Masked => row[j],
                };
            }
        });
    t
}

/// In-batch similarity distillation (the neighbourhood term): with `c^_i = c_i / |c_i|` and
/// `x^_i = x_i / |x_i|`,
///
/// ```text
/// L_nb = sum over pairs i != k of (c^_i . c^_k - x^_i . x^_k)^2 / m^2
/// ```
///
/// over the `m` rows given: the cosine similarities of the codes are pulled toward those of the
/// inputs, so codes of neighbours overlap and codes of strangers do not. When `grad` is given,
/// writes `d L_nb / d c` into it (`m x N`):
///
/// ```text
/// E = C^ C^T - X^ X^T with a zero diagonal,   G^ = 4 E C^ / m^2,
/// dL/dc_i = (g^_i - (g^_i . c^_i) c^_i) / |c_i|
/// ```
///
/// A code with no set bit has no direction; its rows and columns of `E` are left out (zero
/// similarity is its value, with a zero gradient) instead of dividing by a vanishing norm.
pub fn neighbour_distillation<F: Real>(
    c: ArrayView2<F>,
    x: ArrayView2<F>,
    grad: Option<&mut Array2<F>>,
) -> F {
    assert_eq!(
        c.nrows(),
        x.nrows(),
        "neighbour_distillation: row counts differ"
    );
    let m = c.nrows();
    if m < 2 {
        if let Some(g) = grad {
            g.fill(F::zero());
        }
        return F::zero();
    }
    let floor = F::from(NORM_FLOOR).unwrap();
    let normalise = |a: ArrayView2<F>| -> (Array2<F>, Vec<F>) {
        let mut out = a.to_owned();
        let mut norms = vec![F::zero(); m];
        for (mut row, n) in out.rows_mut().into_iter().zip(norms.iter_mut()) {
            *n = row.dot(&row).sqrt();
            if *n > floor {
                row /= *n;
            } else {
                row.fill(F::zero());
            }
        }
        (out, norms)
    };
    let (ch, c_norms) = normalise(c);
    let (xh, _) = normalise(x);
    let mut e = ch.dot(&ch.t());
    e -= &xh.dot(&xh.t());
    for i in 0..m {
        e[[i, i]] = F::zero();
    }
    // Pairs with an empty code: fixed similarity 0 on the code side, nothing to learn.
    for i in (0..m).filter(|&i| c_norms[i] <= floor) {
        e.row_mut(i).fill(F::zero());
        e.column_mut(i).fill(F::zero());
    }
    let mm = F::from(m * m).unwrap();
    let loss = e.iter().map(|&v| v * v).sum::<F>() / mm;
    if let Some(g) = grad {
        assert_eq!(
            g.dim(),
            c.dim(),
            "neighbour_distillation: gradient shape differs"
        );
        let four = F::from(4.0).unwrap();
        let gh = e.dot(&ch) * (four / mm);
        for (((mut gi, ghi), chi), &nc) in g
            .rows_mut()
            .into_iter()
            .zip(gh.rows())
            .zip(ch.rows())
            .zip(&c_norms)
        {
            if nc <= floor {
                gi.fill(F::zero());
                continue;
            }
            let proj = ghi.dot(&chi);
            Zip::from(&mut gi)
                .and(ghi)
                .and(chi)
                .for_each(|g, &a, &u| *g = (a - proj * u) / nc);
        }
    }
    loss
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn reported_distances_are_not_below_zero_and_nan_stays_nan() {
        assert_eq!(not_below_zero(-2e-8), 0.0);
        assert_eq!(not_below_zero(0.25), 0.25);
        assert!(not_below_zero(f64::NAN).is_nan());
    }

    #[test]
    fn cosine_distance_of_parallel_and_orthogonal_rows() {
        let u = array![[1.0f64, 0.0], [2.0, 0.0]];
        let v = array![[0.0f64, 3.0], [1.0, 0.0]];
        // Orthogonal: 1, parallel: 0; mean 0.5.
        let d = distance_rows(LossKind::Cosine, u.view(), v.view(), None);
        assert!((d - 0.5).abs() < 1e-12);
    }

    #[test]
    fn mse_is_the_mean_of_squares() {
        let u = array![[1.0f64, 2.0], [0.0, 0.0]];
        let v = array![[0.0f64, 0.0], [0.0, 4.0]];
        // Row means: (1 + 4) / 2 = 2.5 and 16 / 2 = 8; mean over rows 5.25.
        let d = distance_rows(LossKind::Mse, u.view(), v.view(), None);
        assert!((d - 5.25).abs() < 1e-12);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let u = array![[0.3f64, -1.2, 0.7], [2.0, 0.1, -0.4]];
        let v = array![[1.0f64, 0.5, -0.2], [-0.3, 0.9, 0.6]];
        for kind in [LossKind::Cosine, LossKind::Mse] {
            let mut g = Array2::zeros(u.dim());
            distance_rows(kind, u.view(), v.view(), Some(&mut g));
            for idx in [(0, 0), (0, 2), (1, 1)] {
                let eps = 1e-6;
                let mut up = u.clone();
                up[idx] += eps;
                let mut dn = u.clone();
                dn[idx] -= eps;
                let fd = (distance_rows(kind, up.view(), v.view(), None)
                    - distance_rows(kind, dn.view(), v.view(), None))
                    / (2.0 * eps);
                assert!((fd - g[idx]).abs() < 1e-8, "{kind}: {fd} vs {}", g[idx]);
            }
        }
    }

    #[test]
    fn targets_pick_the_k_largest() {
        let s = array![[0.1f64, 0.9, 0.5, 0.7]];
        assert_eq!(
            topk_target(s.view(), 2, Target::Khot),
            array![[0.0, 1.0, 0.0, 1.0]]
        );
        assert_eq!(
            topk_target(s.view(), 2, Target::Masked),
            array![[0.0, 0.9, 0.0, 0.7]]
        );
    }

    #[test]
    fn neighbour_distillation_gradient_matches_finite_differences() {
        let c = array![
            [0.9f64, 0.1, 0.4, 0.0],
            [0.2, 0.8, 0.3, 0.5],
            [0.7, 0.6, 0.1, 0.2],
            [0.0, 0.0, 0.0, 0.0]
        ];
        let x = array![
            [1.0f64, 0.5, -0.2],
            [-0.3, 0.9, 0.6],
            [0.4, 0.4, 0.1],
            [1.0, 0.0, 0.0]
        ];
        let mut g = Array2::zeros(c.dim());
        let l = neighbour_distillation(c.view(), x.view(), Some(&mut g));
        assert!(l > 0.0);
        for i in 0..3 {
            for j in 0..4 {
                let eps = 1e-6;
                let mut up = c.clone();
                up[[i, j]] += eps;
                let mut dn = c.clone();
                dn[[i, j]] -= eps;
                let fd = (neighbour_distillation(up.view(), x.view(), None)
                    - neighbour_distillation(dn.view(), x.view(), None))
                    / (2.0 * eps);
                assert!(
                    (fd - g[[i, j]]).abs() < 1e-8,
                    "({i},{j}): {fd} vs {}",
                    g[[i, j]]
                );
            }
        }
        // The empty code gets no gradient.
        assert!(g.row(3).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn neighbour_distillation_is_zero_when_similarities_match() {
        // Codes equal to the inputs have the same cosine matrix.
        let x = array![[1.0f64, 0.5, 0.0], [0.0, 0.9, 0.6], [0.4, 0.0, 0.1]];
        assert!(neighbour_distillation(x.view(), x.view(), None).abs() < 1e-15);
    }

    /// A code with no set bit is left out of the pairs (its similarity is not compared with
    /// its input's): the loss is that of the other pairs alone, over all m^2. Counting it would
    /// add a constant to the reported loss (its gradient is zero either way), which
    /// `--monitor loss` then ranks epochs by.
    #[test]
    fn an_empty_code_adds_nothing_to_the_neighbour_loss() {
        let c = array![[0.9f64, 0.1, 0.4], [0.2, 0.8, 0.3], [0.0, 0.0, 0.0]];
        let x = array![[1.0f64, 0.5], [-0.3, 0.9], [1.0, 0.0]];
        let cos = |a: ndarray::ArrayView1<f64>, b: ndarray::ArrayView1<f64>| {
            a.dot(&b) / (a.dot(&a).sqrt() * b.dot(&b).sqrt())
        };
        // Only the pair (0, 1), counted both ways, over m^2 = 9.
        let d = cos(c.row(0), c.row(1)) - cos(x.row(0), x.row(1));
        let want = 2.0 * d * d / 9.0;
        let got = neighbour_distillation(c.view(), x.view(), None);
        assert!((got - want).abs() < 1e-15, "{got} vs {want}");
    }
}
