//! The loops of the batch norm over `[batch, channels, pixels]` maps, plane by plane (one
//! sample's channel): statistics, the normalised output and the gradients.
//!
//! Why this shape: a plane is contiguous, so each loop is a unit-stride pass that the
//! compiler vectorises, with sums kept in `LANES` partial `f32` accumulators per plane
//! (short sums: a plane holds at most a few thousand pixels) and added across planes in
//! `f64`. The activation is a type parameter, so no branch on it runs per pixel. Each
//! parallel task runs its loops through [`widest`], so they use the processor's widest
//! vector instructions (baseline x86-64 gives them 4 lanes): the lanes are explicit arrays,
//! so the sums add in the same order, and give the same bits, on every instruction set.

use crate::cpu::vector_isa::widest;
use rayon::prelude::*;

/// Partial sums per plane: enough independent accumulators for the vector units.
const LANES: usize = 16;

/// Planes (`H·W` maps of one sample and channel) per parallel task, for `hw` pixels each.
fn planes_per_task(hw: usize) -> usize {
    (16 * 1024 / hw.max(1)).max(1)
}

/// The activation after the norm, as a type (see the module docs for why).
pub(super) trait Gate: Copy + Send + Sync {
    /// The activation at `v`.
    fn apply(v: f32) -> f32;
    /// `dy` through the activation whose output was `y`.
    fn back(y: f32, dy: f32) -> f32;
}

/// Nothing.
#[derive(Clone, Copy)]
pub(super) struct Identity;
/// `max(x, 0)`.
#[derive(Clone, Copy)]
pub(super) struct Relu;
/// `min(max(x, 0), 6)`.
#[derive(Clone, Copy)]
pub(super) struct Relu6;

impl Gate for Identity {
    #[inline(always)]
    fn apply(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    fn back(_: f32, dy: f32) -> f32 {
        dy
    }
}

impl Gate for Relu {
    #[inline(always)]
    fn apply(v: f32) -> f32 {
        v.max(0.0)
    }
    #[inline(always)]
    fn back(y: f32, dy: f32) -> f32 {
        if y > 0.0 { dy } else { 0.0 }
    }
}

impl Gate for Relu6 {
    #[inline(always)]
    fn apply(v: f32) -> f32 {
        v.clamp(0.0, 6.0)
    }
    #[inline(always)]
    fn back(y: f32, dy: f32) -> f32 {
        if y > 0.0 && y < 6.0 { dy } else { 0.0 }
    }
}

/// `(Σ f(a_i, b_i, c_i), Σ g(a_i, b_i, c_i))` over three equally long runs, in `LANES`
/// partial sums each (fixed-size chunks, so the loop has no bounds checks and
/// vectorises).
#[inline(always)]
fn lane_sums(
    a: &[f32],
    b: &[f32],
    c: &[f32],
    f: impl Fn(f32, f32, f32) -> f32,
    g: impl Fn(f32, f32, f32) -> f32,
) -> (f32, f32) {
    let (mut fs, mut gs) = ([0.0f32; LANES], [0.0f32; LANES]);
    let (a_chunks, a_tail) = a.as_chunks::<LANES>();
    let (b_chunks, b_tail) = b.as_chunks::<LANES>();
    let (c_chunks, c_tail) = c.as_chunks::<LANES>();
    for ((a, b), c) in a_chunks.iter().zip(b_chunks).zip(c_chunks) {
        for l in 0..LANES {
            fs[l] += f(a[l], b[l], c[l]);
            gs[l] += g(a[l], b[l], c[l]);
        }
    }
    let (mut f_tail, mut g_tail) = (0.0, 0.0);
    for ((&a, &b), &c) in a_tail.iter().zip(b_tail).zip(c_tail) {
        f_tail += f(a, b, c);
        g_tail += g(a, b, c);
    }
    (
        fs.iter().sum::<f32>() + f_tail,
        gs.iter().sum::<f32>() + g_tail,
    )
}

/// `Σ f(v)` over a run, in `LANES` partial sums.
#[inline(always)]
fn lane_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    lane_sums(v, v, v, |a, _, _| f(a), |_, _, _| 0.0).0
}

/// Per-channel mean and biased variance of `x` `[n, c, hw]` (two passes: the mean, then
/// the squared deviations from it, which keeps the variance exact for maps far from 0).
pub(super) fn statistics(x: &[f32], [n, c, hw]: [usize; 3]) -> (Vec<f32>, Vec<f32>) {
    let per_channel: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            widest(
                #[inline(always)]
                || {
                    // Plain loops: an iterator adaptor's closure may be compiled outside
                    // this function, without its vector instructions.
                    let plane = |s: usize| &x[(s * c + ch) * hw..][..hw];
                    let count = (n * hw) as f64;
                    let mut sum = 0.0f64;
                    for s in 0..n {
                        sum += lane_sum(plane(s), |v| v) as f64;
                    }
                    let mean = (sum / count) as f32;
                    let mut squares = 0.0f64;
                    for s in 0..n {
                        squares += lane_sum(plane(s), |v| (v - mean) * (v - mean)) as f64;
                    }
                    (mean, (squares / count) as f32)
                },
            )
        })
        .collect();
    per_channel.into_iter().unzip()
}

/// `G(x·scale + shift + residual)` per channel, plane by plane in parallel, into `out`;
/// `x` is `out` itself when `None` (an inference input nothing else holds).
pub(super) fn normalise<G: Gate>(
    out: &mut [f32],
    x: Option<&[f32]>,
    residual: Option<&[f32]>,
    scale: &[f32],
    shift: &[f32],
    [_, c, hw]: [usize; 3],
) {
    let block = planes_per_task(hw) * hw;
    out.par_chunks_mut(block)
        .enumerate()
        .for_each(|(task, out)| {
            widest(
                #[inline(always)]
                || {
                    for (i, plane) in out.chunks_mut(hw).enumerate() {
                        let first = task * block + i * hw;
                        let ch = (first / hw) % c;
                        let (a, b) = (scale[ch], shift[ch]);
                        match (
                            x.map(|x| &x[first..][..hw]),
                            residual.map(|r| &r[first..][..hw]),
                        ) {
                            (Some(xs), Some(rs)) => {
                                for ((o, &v), &r) in plane.iter_mut().zip(xs).zip(rs) {
                                    *o = G::apply(v * a + b + r);
                                }
                            }
                            (Some(xs), None) => {
                                for (o, &v) in plane.iter_mut().zip(xs) {
                                    *o = G::apply(v * a + b);
                                }
                            }
                            (None, Some(rs)) => {
                                for (o, &r) in plane.iter_mut().zip(rs) {
                                    *o = G::apply(*o * a + b + r);
                                }
                            }
                            (None, None) => {
                                for o in plane.iter_mut() {
                                    *o = G::apply(*o * a + b);
                                }
                            }
                        }
                    }
                },
            )
        });
}

/// What the backward pass reads: the saved input and output (`None` for the identity,
/// whose slope does not depend on it), the incoming gradient, and the forward's
/// per-channel mean, inverse deviation and γ.
pub(super) struct Backward<'a> {
    pub x: &'a [f32],
    pub y: Option<&'a [f32]>,
    pub dy: &'a [f32],
    pub mean: &'a [f32],
    pub inv: &'a [f32],
    pub gamma: &'a [f32],
    pub shape: [usize; 3],
}

/// The gradients: input and residual (empty when not wanted), and per channel
/// `Σ dz` (β's) and `Σ dz·x̂` (γ's), `dz` the gradient before the activation.
pub(super) struct Gradients {
    pub input: Vec<f32>,
    pub residual: Vec<f32>,
    pub beta: Vec<f32>,
    pub gamma: Vec<f32>,
}

impl Backward<'_> {
    /// Per channel `(Σ dz, Σ dz·(x − mean))` over its planes.
    fn channel_sums<G: Gate>(&self) -> Vec<(f64, f64)> {
        let [n, c, hw] = self.shape;
        (0..c)
            .into_par_iter()
            .map(|ch| {
                widest(
                    #[inline(always)]
                    || {
                        let m = self.mean[ch];
                        let (mut sum, mut dot) = (0.0f64, 0.0f64);
                        for s in 0..n {
                            let first = (s * c + ch) * hw;
                            let (x, dy) = (&self.x[first..][..hw], &self.dy[first..][..hw]);
                            let (plane_sum, plane_dot) = match self.y {
                                Some(y) => lane_sums(
                                    &y[first..][..hw],
                                    dy,
                                    x,
                                    |y, dy, _| G::back(y, dy),
                                    |y, dy, x| G::back(y, dy) * (x - m),
                                ),
                                None => {
                                    lane_sums(dy, dy, x, |dy, _, _| dy, |dy, _, x| dy * (x - m))
                                }
                            };
                            sum += plane_sum as f64;
                            dot += plane_dot as f64;
                        }
                        (sum, dot)
                    },
                )
            })
            .collect()
    }

    /// The gradients; `input`, `residual` say which of the two maps to compute.
    pub(super) fn run<G: Gate>(&self, input: bool, residual: bool) -> Gradients {
        let [n, c, hw] = self.shape;
        let count = (n * hw) as f64;
        let sums = self.channel_sums::<G>();
        // dx = γ·inv·(dz − mean(dz) − x̂·mean(dz·x̂)) = k1·dz + k2·x + k0 per channel, with
        // Σ dz·x̂ = inv·Σ dz·(x − mean).
        let dots: Vec<f64> = sums
            .iter()
            .zip(self.inv)
            .map(|(&(_, dot), &inv)| inv as f64 * dot)
            .collect();
        let coefficients: Vec<[f32; 3]> = (0..c)
            .map(|ch| {
                let (m, inv, g) = (
                    self.mean[ch] as f64,
                    self.inv[ch] as f64,
                    self.gamma[ch] as f64,
                );
                let (mean_dz, mean_dot) = (sums[ch].0 / count, dots[ch] / count);
                let k1 = g * inv;
                let k2 = -g * inv * inv * mean_dot;
                let k0 = -g * inv * mean_dz - k2 * m;
                [k1 as f32, k2 as f32, k0 as f32]
            })
            .collect();
        let mut dx = if input {
            vec![0.0f32; self.x.len()]
        } else {
            Vec::new()
        };
        let mut dr = if residual {
            vec![0.0f32; self.x.len()]
        } else {
            Vec::new()
        };
        let block = planes_per_task(hw) * hw;
        let fill = |task: usize, dx: Option<&mut [f32]>, dr: Option<&mut [f32]>| {
            widest(
                #[inline(always)]
                || {
                    let start = task * block;
                    if let Some(dr) = dr {
                        let dy = &self.dy[start..][..dr.len()];
                        match self.y {
                            Some(y) => {
                                let y = &y[start..][..dr.len()];
                                for ((d, &y), &g) in dr.iter_mut().zip(y).zip(dy) {
                                    *d = G::back(y, g);
                                }
                            }
                            None => dr.copy_from_slice(dy),
                        }
                    }
                    if let Some(dx) = dx {
                        for (p, plane) in dx.chunks_mut(hw).enumerate() {
                            let first = start + p * hw;
                            let [k1, k2, k0] = coefficients[(first / hw) % c];
                            let x = &self.x[first..][..hw];
                            let dy = &self.dy[first..][..hw];
                            match self.y {
                                Some(y) => {
                                    let y = &y[first..][..hw];
                                    for (((d, &x), &y), &g) in
                                        plane.iter_mut().zip(x).zip(y).zip(dy)
                                    {
                                        *d = k1 * G::back(y, g) + k2 * x + k0;
                                    }
                                }
                                None => {
                                    for ((d, &x), &g) in plane.iter_mut().zip(x).zip(dy) {
                                        *d = k1 * g + k2 * x + k0;
                                    }
                                }
                            }
                        }
                    }
                },
            )
        };
        match (input, residual) {
            (true, true) => dx
                .par_chunks_mut(block)
                .zip(dr.par_chunks_mut(block))
                .enumerate()
                .for_each(|(t, (a, b))| fill(t, Some(a), Some(b))),
            (true, false) => dx
                .par_chunks_mut(block)
                .enumerate()
                .for_each(|(t, a)| fill(t, Some(a), None)),
            (false, true) => dr
                .par_chunks_mut(block)
                .enumerate()
                .for_each(|(t, b)| fill(t, None, Some(b))),
            (false, false) => {}
        }
        Gradients {
            input: dx,
            residual: dr,
            beta: sums.iter().map(|s| s.0 as f32).collect(),
            gamma: dots.iter().map(|&d| d as f32).collect(),
        }
    }
}
