//! L2-regularised, class-balanced logistic regression on standardised features — and the same
//! loss through one hidden tanh layer (a small MLP) — minimised with `argmin`'s L-BFGS
//! (More–Thuente line search).

use std::sync::Mutex;

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

/// A parameter with its cost and gradient.
type Evaluated = (Vec<f64>, f64, Vec<f64>);

/// Mean weighted log-loss + l2/2·|w − prior|² (bias not penalised) over standardised rows.
struct Objective {
    xs: Vec<f64>,
    y: Vec<bool>,
    cw: Vec<f64>,
    d: usize,
    l2: f64,
    /// The weights the penalty pulls towards: zeros, or the head being refitted.
    prior: Vec<f64>,
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
        for ((gi, wi), pi) in g[..d].iter_mut().zip(w).zip(&self.prior) {
            *gi += self.l2 * (wi - pi);
        }
        let cost =
            loss / n as f64 + 0.5 * self.l2 * w.iter().zip(&self.prior).map(|(v, p)| (v - p) * (v - p)).sum::<f64>();
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

/// Per-feature mean and standard deviation (floored at 1e-3) of `x`, and the rows standardised.
fn standardise(x: &[Vec<f32>]) -> (Vec<f32>, Vec<f32>, Vec<f64>) {
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
    (mean, std, xs)
}

/// Class weights that balance the two classes.
fn class_weights(y: &[bool]) -> Vec<f64> {
    let n = y.len() as f64;
    let pos = y.iter().filter(|&&v| v).count().max(1) as f64;
    let neg = (n - pos).max(1.0);
    y.iter().map(|&t| if t { n / (2.0 * pos) } else { n / (2.0 * neg) }).collect()
}

fn minimise<P>(problem: P, start: Vec<f64>, iters: usize) -> Vec<f64>
where
    P: CostFunction<Param = Vec<f64>, Output = f64> + Gradient<Param = Vec<f64>, Gradient = Vec<f64>>,
{
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
        .with_tolerance_grad(1e-6)
        .and_then(|s| s.with_tolerance_cost(1e-12))
        .expect("valid tolerances");
    let fallback = start.clone();
    Executor::new(problem, solver)
        .configure(|s| s.param(start).max_iters(iters as u64))
        .run()
        .ok()
        .and_then(|r| r.state().get_best_param().cloned())
        .unwrap_or(fallback)
}

/// Fits the head: standardises the features, weights the classes to balance, minimises to
/// convergence (at most `iters` L-BFGS iterations). Returns (mean, std, weights, bias).
pub fn fit_logistic(x: &[Vec<f32>], y: &[bool], l2: f32, iters: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>, f32) {
    let d = x[0].len();
    let (mean, std, xs) = standardise(x);
    let problem = Objective {
        xs,
        y: y.to_vec(),
        cw: class_weights(y),
        d,
        l2: l2 as f64,
        prior: vec![0.0; d],
        last: Mutex::new(None),
    };
    let th = minimise(problem, vec![0.0; d + 1], iters);
    (mean, std, th[..d].iter().map(|&v| v as f32).collect(), th[d] as f32)
}

/// Refits a logistic head on new rows, keeping what it knew: the rows standardised by the head's
/// own mean and std, the penalty l2/2·|w − w_head|² pulling towards its weights (a large `l2`
/// keeps the head, refitting only its bias; a small one follows the new rows), starting from it.
/// Returns (mean, std, weights, bias) with the head's mean and std.
pub fn refit_logistic(
    x: &[Vec<f32>],
    y: &[bool],
    l2: f32,
    head: (&[f32], &[f32], &[f32], f32),
    iters: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, f32) {
    let (mean, std, w0, b0) = head;
    let d = mean.len();
    let xs: Vec<f64> =
        x.iter().flat_map(|r| r.iter().zip(mean).zip(std).map(|((v, m), s)| ((v - m) / s) as f64)).collect();
    let prior: Vec<f64> = w0.iter().map(|&v| v as f64).collect();
    let mut start = prior.clone();
    start.push(b0 as f64);
    let problem =
        Objective { xs, y: y.to_vec(), cw: class_weights(y), d, l2: l2 as f64, prior, last: Mutex::new(None) };
    let th = minimise(problem, start, iters);
    (mean.to_vec(), std.to_vec(), th[..d].iter().map(|&v| v as f32).collect(), th[d] as f32)
}

/// A fitted MLP: standardisation, hidden layer (`hidden` × d weights row-major, `hidden` biases),
/// output weights and bias.
pub struct Mlp {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub hidden_weights: Vec<f32>,
    pub hidden_bias: Vec<f32>,
    pub weights: Vec<f32>,
    pub bias: f32,
}

/// The weighted log-loss through one hidden tanh layer; parameters [W1 (h·d), b1 (h), w2 (h),
/// b2], L2 on W1 and w2.
struct MlpObjective {
    xs: Vec<f64>,
    y: Vec<bool>,
    cw: Vec<f64>,
    d: usize,
    h: usize,
    l2: f64,
    last: Mutex<Option<Evaluated>>,
}

impl MlpObjective {
    fn eval(&self, th: &[f64]) -> (f64, Vec<f64>) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((p, c, g)) = last.as_ref()
            && p.as_slice() == th
        {
            return (*c, g.clone());
        }
        let (d, h, n) = (self.d, self.h, self.y.len());
        let (w1, rest) = th.split_at(h * d);
        let (b1, rest) = rest.split_at(h);
        let (w2, b2) = (&rest[..h], rest[h]);
        let mut g = vec![0.0; th.len()];
        let mut a = vec![0.0; h];
        let mut loss = 0.0;
        for ((row, &t), &c) in self.xs.chunks_exact(d).zip(&self.y).zip(&self.cw) {
            for j in 0..h {
                let z: f64 = w1[j * d..(j + 1) * d].iter().zip(row).map(|(w, x)| w * x).sum::<f64>() + b1[j];
                a[j] = z.tanh();
            }
            let z: f64 = a.iter().zip(w2).map(|(a, w)| a * w).sum::<f64>() + b2;
            let yt = if t { 1.0 } else { 0.0 };
            loss += c * (z.max(0.0) + (-z.abs()).exp().ln_1p() - yt * z);
            let e = c * (1.0 / (1.0 + (-z).exp()) - yt) / n as f64;
            let (gw1, grest) = g.split_at_mut(h * d);
            let (gb1, grest) = grest.split_at_mut(h);
            for j in 0..h {
                grest[j] += e * a[j];
                let delta = e * w2[j] * (1.0 - a[j] * a[j]);
                gb1[j] += delta;
                for (gi, x) in gw1[j * d..(j + 1) * d].iter_mut().zip(row) {
                    *gi += delta * x;
                }
            }
            grest[h] += e;
        }
        let mut reg = 0.0;
        for (i, wi) in th.iter().enumerate() {
            let penalised = i < h * d || (h * d + h..h * d + 2 * h).contains(&i);
            if penalised {
                g[i] += self.l2 * wi;
                reg += wi * wi;
            }
        }
        let cost = loss / n as f64 + 0.5 * self.l2 * reg;
        *last = Some((th.to_vec(), cost, g.clone()));
        (cost, g)
    }
}

impl CostFunction for MlpObjective {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, p: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        Ok(self.eval(p).0)
    }
}

impl Gradient for MlpObjective {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, p: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.eval(p).1)
    }
}

/// Fits an MLP with `hidden` tanh units (deterministic start: a fixed pseudo-random draw scaled
/// by 1/√fan-in), the loss and class weights as [`fit_logistic`].
pub fn fit_mlp(x: &[Vec<f32>], y: &[bool], l2: f32, hidden: usize, iters: usize) -> Mlp {
    let d = x[0].len();
    let (mean, std, xs) = standardise(x);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut draw = |scale: f64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
    };
    let mut start = Vec::with_capacity(hidden * d + 2 * hidden + 1);
    start.extend((0..hidden * d).map(|_| draw(1.0 / (d as f64).sqrt())));
    start.extend(std::iter::repeat_n(0.0, hidden));
    start.extend((0..hidden).map(|_| draw(1.0 / (hidden as f64).sqrt())));
    start.push(0.0);
    let problem =
        MlpObjective { xs, y: y.to_vec(), cw: class_weights(y), d, h: hidden, l2: l2 as f64, last: Mutex::new(None) };
    let th = minimise(problem, start, iters);
    let f = |r: &[f64]| r.iter().map(|&v| v as f32).collect::<Vec<f32>>();
    Mlp {
        mean,
        std,
        hidden_weights: f(&th[..hidden * d]),
        hidden_bias: f(&th[hidden * d..hidden * d + hidden]),
        weights: f(&th[hidden * d + hidden..hidden * d + 2 * hidden]),
        bias: th[hidden * d + 2 * hidden] as f32,
    }
}
