//! Adam (Kingma and Ba, 2015), the optimiser the paper's setting implies. Nothing model-specific
//! beyond the [`Params`] container it updates.

use ndarray::{Array, Dimension};
use rayon::prelude::*;

use crate::simd::{Family, multiversion};

use crate::model::Params;

/// Adam state: step count and first and second moment estimates for every parameter.
#[derive(Debug, Clone)]
pub struct Adam {
    /// Learning rate.
    pub lr: f32,
    /// Decay of the first moment (0.9).
    pub beta1: f32,
    /// Decay of the second moment (0.999).
    pub beta2: f32,
    /// Added to the denominator for stability (1e-8).
    pub eps: f32,
    t: i32,
    m: Params<f32>,
    v: Params<f32>,
}

impl Adam {
    /// Fresh state for parameters shaped like `like`, with PyTorch's default betas and eps.
    pub fn new(lr: f32, like: &Params<f32>) -> Self {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            t: 0,
            m: Params::zeros(like.bits(), like.dim()),
            v: Params::zeros(like.bits(), like.dim()),
        }
    }

    /// One update of `p` by the gradient `g`.
    pub fn step(&mut self, p: &mut Params<f32>, g: &Params<f32>) {
        self.t += 1;
        let c = Coefs {
            lr_t: self.lr * (1.0 - self.beta2.powi(self.t)).sqrt()
                / (1.0 - self.beta1.powi(self.t)),
            beta1: self.beta1,
            beta2: self.beta2,
            // Scaled like lr_t so that the update equals PyTorch's
            // lr * m_hat / (sqrt(v_hat) + eps) exactly.
            eps_t: self.eps * (1.0 - self.beta2.powi(self.t)).sqrt(),
        };
        update(&mut p.we, &g.we, &mut self.m.we, &mut self.v.we, c);
        update(&mut p.be, &g.be, &mut self.m.be, &mut self.v.be, c);
        update(&mut p.wd_t, &g.wd_t, &mut self.m.wd_t, &mut self.v.wd_t, c);
        update(&mut p.bd, &g.bd, &mut self.m.bd, &mut self.v.bd, c);
    }
}

#[derive(Clone, Copy)]
struct Coefs {
    lr_t: f32,
    beta1: f32,
    beta2: f32,
    eps_t: f32,
}

/// Moments and weights of one parameter array, in parallel chunks, each chunk one fused pass
/// compiled for the CPU's vector width ([`crate::simd`]). Elementwise, so the result is the same
/// for every chunking and every copy.
fn update<D: Dimension>(
    p: &mut Array<f32, D>,
    g: &Array<f32, D>,
    m: &mut Array<f32, D>,
    v: &mut Array<f32, D>,
    c: Coefs,
) {
    let family = Family::current();
    let slices = (
        p.as_slice_mut(),
        g.as_slice(),
        m.as_slice_mut(),
        v.as_slice_mut(),
    );
    let (Some(p), Some(g), Some(m), Some(v)) = slices else {
        unreachable!("parameters, gradients and moments are contiguous arrays")
    };
    const CHUNK: usize = 16 * 1024;
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| update_chunk(family, p, g, m, v, c));
}

#[inline(always)]
fn update_body(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: Coefs) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        *m = c.beta1 * *m + (1.0 - c.beta1) * g;
        *v = c.beta2 * *v + (1.0 - c.beta2) * g * g;
        *p -= c.lr_t * *m / (v.sqrt() + c.eps_t);
    }
}

multiversion! {
    /// [`update_body`] for `family`.
    fn update_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: Coefs) = update_body;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_each_weight_by_lr_against_its_gradient_sign() {
        // On the first step m_hat = g and v_hat = g^2, so the update is lr * sign(g).
        let mut p = Params::<f32>::zeros(2, 3);
        let mut g = Params::<f32>::zeros(2, 3);
        g.we[[0, 1]] = 5.0;
        g.bd[2] = -0.25;
        let mut adam = Adam::new(0.01, &p);
        adam.step(&mut p, &g);
        assert!((p.we[[0, 1]] + 0.01).abs() < 1e-6);
        assert!((p.bd[2] - 0.01).abs() < 1e-6);
        assert_eq!(p.we[[1, 1]], 0.0);
    }

    #[test]
    fn eps_is_added_to_the_corrected_root_as_pytorch_adds_it() {
        // PyTorch: lr * m_hat / (sqrt(v_hat) + eps). On the first step m_hat = g and
        // sqrt(v_hat) = |g|, so a gradient equal to eps moves the weight by lr / 2 (an eps not
        // scaled like lr_t would move it by about lr / 30).
        let mut p = Params::<f32>::zeros(1, 1);
        let mut g = Params::<f32>::zeros(1, 1);
        g.be[0] = 1e-8;
        let mut adam = Adam::new(0.01, &p);
        adam.step(&mut p, &g);
        assert!((p.be[0] + 0.005).abs() < 1e-5, "{}", p.be[0]);
    }

    #[test]
    fn minimises_a_quadratic() {
        // f(p) = sum (p - 3)^2 over the encoder bias.
        let mut p = Params::<f32>::zeros(4, 1);
        let mut adam = Adam::new(0.1, &p);
        for _ in 0..500 {
            let mut g = Params::<f32>::zeros(4, 1);
            g.be = p.be.mapv(|x| 2.0 * (x - 3.0));
            adam.step(&mut p, &g);
        }
        assert!(p.be.iter().all(|&x| (x - 3.0).abs() < 1e-2), "{:?}", p.be);
    }
}
