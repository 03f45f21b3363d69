//! L2-regularised, class-balanced logistic regression on standardised features, minimised with
//! `argmin`'s L-BFGS (More–Thuente line search).

use std::sync::Mutex;

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

/// A parameter with its cost and gradient.
type Evaluated = (Vec<f64>, f64, Vec<f64>);

/// Mean weighted log-loss + l2/2·|w|² (bias not penalised) over standardised rows.
struct Objective {
    xs: Vec<f64>,
    y: Vec<bool>,
    cw: Vec<f64>,
    d: usize,
    l2: f64,
    /// The last parameter evaluated, with its cost and gradient (L-BFGS asks for both at once).
    last: Mutex<Option<Evaluated>>,
}

impl Objective {
    fn eval(&self, th: &[f64]) -> (f64, Vec<f64>) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((p, c, g)) = last.as_ref()
            && p.as_slice() == th
        {
            return (*c, g.clone());
        }
        let (d, n) = (self.d, self.y.len());
        let (w, b) = (&th[..d], th[d]);
        let mut g = vec![0.0; d + 1];
        let mut loss = 0.0;
        for ((row, &t), &c) in self.xs.chunks_exact(d).zip(&self.y).zip(&self.cw) {
            let z: f64 = row.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() + b;
            let yt = if t { 1.0 } else { 0.0 };
            // log(1 + e^z) − y·z, stably
            loss += c * (z.max(0.0) + (-z.abs()).exp().ln_1p() - yt * z);
            let e = c * (1.0 / (1.0 + (-z).exp()) - yt) / n as f64;
            for (gi, a) in g[..d].iter_mut().zip(row) {
                *gi += e * a;
            }
            g[d] += e;
        }
        for (gi, wi) in g[..d].iter_mut().zip(w) {
            *gi += self.l2 * wi;
        }
        let cost = loss / n as f64 + 0.5 * self.l2 * w.iter().map(|v| v * v).sum::<f64>();
        *last = Some((th.to_vec(), cost, g.clone()));
        (cost, g)
    }
}

impl CostFunction for Objective {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, p: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        Ok(self.eval(p).0)
    }
}

impl Gradient for Objective {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, p: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.eval(p).1)
    }
}

/// Fits the head: standardises the features, weights the classes to balance, minimises to
/// convergence (at most `iters` L-BFGS iterations). Returns (mean, std, weights, bias).
pub fn fit_logistic(x: &[Vec<f32>], y: &[bool], l2: f32, iters: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>, f32) {
    let d = x[0].len();
    let n = x.len();
    let mut mean = vec![0f32; d];
    for r in x {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += v / n as f32;
        }
    }
    let mut std = vec![0f32; d];
    for r in x {
        for ((s, v), m) in std.iter_mut().zip(r).zip(&mean) {
            *s += (v - m) * (v - m) / n as f32;
        }
    }
    for s in &mut std {
        *s = s.sqrt().max(1e-3);
    }
    let xs: Vec<f64> =
        x.iter().flat_map(|r| r.iter().zip(&mean).zip(&std).map(|((v, m), s)| ((v - m) / s) as f64)).collect();
    let pos = y.iter().filter(|&&v| v).count().max(1) as f64;
    let neg = (n as f64 - pos).max(1.0);
    let cw: Vec<f64> = y.iter().map(|&t| if t { n as f64 / (2.0 * pos) } else { n as f64 / (2.0 * neg) }).collect();
    let problem = Objective { xs, y: y.to_vec(), cw, d, l2: l2 as f64, last: Mutex::new(None) };
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
        .with_tolerance_grad(1e-6)
        .and_then(|s| s.with_tolerance_cost(1e-12))
        .expect("valid tolerances");
    let th = Executor::new(problem, solver)
        .configure(|s| s.param(vec![0.0; d + 1]).max_iters(iters as u64))
        .run()
        .ok()
        .and_then(|r| r.state().get_best_param().cloned())
        .unwrap_or_else(|| vec![0.0; d + 1]);
    (mean, std, th[..d].iter().map(|&v| v as f32).collect(), th[d] as f32)
}
