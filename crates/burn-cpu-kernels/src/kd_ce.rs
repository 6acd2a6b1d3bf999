//! Hinton's KD term and cross-entropy on the same logits, as one operation on the CPU
//! backends: `[w_kd · T²·KL(softmax(t/T) ‖ softmax(s/T)), w_ce · CE(s, y)]`.
//!
//! Why: on `[batch, classes]` logits the two terms are about thirty-five small tensor
//! operations forward and as many backward, each allocating a tensor and recording a graph
//! node; for a small student with cached teacher logits the loss becomes a large share of
//! the step. Here both terms are
//! one pass over the rows (one `exp` per logit and softmax, sums in `f64`), and their
//! gradient is arithmetic on the softmaxes the forward pass kept.
//! Other backends (and other element types) get `None` back, to compute the two terms with
//! tensor operations.
//!
//! Gradients (`q = softmax(s/T)`, `p = softmax(t/T)`, `σ = softmax(s)`, `B` rows, `C`
//! classes, `ε` label smoothing, `KLᵣ` the row's divergence):
//! `∂KD/∂s = T/B · (q − p)`, `∂KD/∂t = T/B · p ⊙ (log p − log q − KLᵣ)`,
//! `∂CE/∂s = (σ − (1−ε)·onehot(y) − ε/C) / B`.

use crate::cpu::route::{HostBackend, HostOp, record, route};
use crate::cpu::tensor::{from_host, host_values, primitive};
use crate::error::{KernelError, Result};
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use rayon::prelude::*;
use std::ops::Range;

/// Logit elements per parallel task (a smaller batch is one task, on the calling thread).
const TASK_ELEMENTS: usize = 64 * 1024;

/// The constants of one call.
#[derive(Clone, Copy, Debug)]
pub struct KdCe {
    /// Softmax temperature `T` of the KD term.
    pub temperature: f64,
    /// Weight of the KD term (`α` with labels, 1 without).
    pub kd_weight: f64,
    /// Weight of the CE term (`1 − α`; unused without labels).
    pub ce_weight: f64,
    /// Label smoothing `ε` of the CE term.
    pub smoothing: f64,
}

/// The student's logits, the teacher's, and the labels.
type Operands<B> = (Tensor<B, 2>, Tensor<B, 2>, Option<Tensor<B, 1, Int>>);

/// `[w_kd·KD, w_ce·CE]` (CE is 0 without labels) when `B` is a CPU backend (or autodiff
/// over one) and the logits are `f32`; `None` otherwise, for the tensor-operation path.
/// Labels outside `0..classes` are an error. The shapes are checked by the caller;
/// empty logits take the tensor-operation path.
pub fn weighted_terms<B: Backend>(
    constants: KdCe,
    student: Tensor<B, 2>,
    teacher: Tensor<B, 2>,
    labels: Option<Tensor<B, 1, Int>>,
) -> Option<Result<Tensor<B, 1>>> {
    let [rows, classes] = student.dims();
    if rows == 0 || classes == 0 || student.dtype() != DType::F32 || teacher.dtype() != DType::F32 {
        return None;
    }
    route(&HostKdCe(constants), (student, teacher, labels)).ok()
}

/// One call, for [`route`].
struct HostKdCe(KdCe);

impl HostOp for HostKdCe {
    type Operands<B: Backend> = Operands<B>;
    type Output<B: Backend> = Result<Tensor<B, 1>>;

    fn infers_on(&self, _: HostBackend) -> bool {
        true
    }

    fn inference<B: Backend>(
        &self,
        (student, teacher, labels): Operands<B>,
    ) -> Result<Tensor<B, 1>> {
        let [rows, classes] = student.dims();
        let device = student.device();
        let labels = labels.map(|l| label_indices(l, classes)).transpose()?;
        let (s, t) = (primitive(student), primitive(teacher));
        let rows = Rows {
            student: &host_values::<B, 2>(&s),
            teacher: &host_values::<B, 2>(&t),
            labels: labels.as_deref(),
            rows,
            classes,
        };
        let (_, kl, ce) = rows.forward(&self.0);
        Ok(from_host(
            rows.weighted_terms(&self.0, kl, ce).to_vec(),
            [2],
            &device,
        ))
    }

    fn training<B: Backend, C: CheckpointStrategy>(
        &self,
        (student, teacher, labels): Operands<Autodiff<B, C>>,
    ) -> Result<Tensor<Autodiff<B, C>, 1>> {
        let [rows, classes] = student.dims();
        // Autodiff's device is the inner backend's.
        let device: B::Device = student.device();
        let labels = labels.map(|l| label_indices(l, classes)).transpose()?;
        let (s, t) = (primitive(student), primitive(teacher));
        let (softmaxes, terms) = {
            let rows = Rows {
                student: &host_values::<B, 2>(&s.primitive),
                teacher: &host_values::<B, 2>(&t.primitive),
                labels: labels.as_deref(),
                rows,
                classes,
            };
            let (softmaxes, kl, ce) = rows.forward(&self.0);
            (softmaxes, rows.weighted_terms(&self.0, kl, ce))
        };
        let output = primitive(from_host::<B, 1>(terms.to_vec(), [2], &device));
        let saved = Saved {
            student: s.primitive.clone(),
            teacher: t.primitive.clone(),
            labels,
            softmaxes,
            constants: self.0,
            shape: [rows, classes],
            device,
        };
        let output = record(KdCeBackward.prepare::<C>([s.node, t.node]), saved, output);
        Ok(Tensor::from_primitive(TensorPrimitive::Float(output)))
    }
}

/// The labels as class indices, each checked to be in `0..classes`.
fn label_indices<B: Backend>(labels: Tensor<B, 1, Int>, classes: usize) -> Result<Vec<usize>> {
    let values = labels
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .map_err(|e| KernelError::Labels(format!("they could not be read: {e:?}")))?;
    values
        .into_iter()
        .map(|label| {
            usize::try_from(label)
                .ok()
                .filter(|&l| l < classes)
                .ok_or_else(|| {
                    KernelError::Labels(format!(
                        "label {label} is not a class of logits {classes} wide (0..={}); fix the labels or widen the head",
                        classes.saturating_sub(1)
                    ))
                })
        })
        .collect()
}

/// One batch of logits on the host.
struct Rows<'a> {
    student: &'a [f32],
    teacher: &'a [f32],
    labels: Option<&'a [usize]>,
    rows: usize,
    classes: usize,
}

/// `softmax(x / temperature)` of one row into `out`; returns the log-sum-exp of `x / T`,
/// so that `log softmax = x/T − lse` needs no logarithm per element. (`exp` in `f32`, the
/// sum in `f64`: one `exp` per element is the pass's whole cost.)
fn softmax_row(x: &[f32], temperature: f64, out: &mut [f32]) -> f64 {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64 / temperature;
    let mut sum = 0.0;
    for (o, &v) in out.iter_mut().zip(x) {
        let e = ((v as f64 / temperature - max) as f32).exp();
        *o = e;
        sum += e as f64;
    }
    let inverse = 1.0 / sum;
    out.iter_mut()
        .for_each(|o| *o = (*o as f64 * inverse) as f32);
    max + sum.ln()
}

/// What the forward pass found, kept for the backward pass: `q = softmax(s/T)`,
/// `p = softmax(t/T)`, `σ = softmax(s)` (with labels; empty otherwise) as `[rows, classes]`,
/// and per row `[KLᵣ, lse(s/T), lse(t/T)]`.
#[derive(Clone, Default)]
struct Softmaxes {
    q: Vec<f32>,
    p: Vec<f32>,
    sigma: Vec<f32>,
    stats: Vec<[f64; 3]>,
}

impl Softmaxes {
    /// Appends another block of rows.
    fn append(mut self, mut other: Softmaxes) -> Softmaxes {
        self.q.append(&mut other.q);
        self.p.append(&mut other.p);
        self.sigma.append(&mut other.sigma);
        self.stats.append(&mut other.stats);
        self
    }
}

impl Rows<'_> {
    /// Rows per parallel task (a small batch is one task, on the calling thread).
    fn rows_per_task(&self) -> usize {
        (TASK_ELEMENTS / self.classes).max(1)
    }

    /// The softmaxes of every row, and the sums `(Σ KLᵣ, Σ CEᵣ)`.
    fn forward(&self, k: &KdCe) -> (Softmaxes, f64, f64) {
        let per_task = self.rows_per_task();
        let blocks: Vec<(Softmaxes, f64, f64)> = (0..self.rows.div_ceil(per_task))
            .into_par_iter()
            .map(|task| {
                let rows = task * per_task..((task + 1) * per_task).min(self.rows);
                self.forward_block(rows, k)
            })
            .collect();
        blocks.into_iter().fold(
            (Softmaxes::default(), 0.0, 0.0),
            |(all, kl, ce), (block, block_kl, block_ce)| {
                (all.append(block), kl + block_kl, ce + block_ce)
            },
        )
    }

    fn forward_block(&self, rows: Range<usize>, k: &KdCe) -> (Softmaxes, f64, f64) {
        let (c, t) = (self.classes, k.temperature);
        let len = rows.len() * c;
        let mut out = Softmaxes {
            q: vec![0.0; len],
            p: vec![0.0; len],
            sigma: vec![0.0; if self.labels.is_some() { len } else { 0 }],
            stats: Vec::with_capacity(rows.len()),
        };
        let (mut kl_sum, mut ce_sum) = (0.0, 0.0);
        for (i, r) in rows.enumerate() {
            let (s, u) = (&self.student[r * c..][..c], &self.teacher[r * c..][..c]);
            let block = i * c..(i + 1) * c;
            let lse_q = softmax_row(s, t, &mut out.q[block.clone()]);
            let lse_p = softmax_row(u, t, &mut out.p[block.clone()]);
            // Σ p·(log p − log q), with log p = u/T − lse_p and log q = s/T − lse_q.
            let kl: f64 = out.p[block.clone()]
                .iter()
                .zip(s.iter().zip(u))
                .map(|(&p, (&s, &u))| p as f64 * ((u as f64 - s as f64) / t - lse_p + lse_q))
                .sum();
            kl_sum += kl;
            out.stats.push([kl, lse_q, lse_p]);
            if let Some(labels) = self.labels {
                let lse = softmax_row(s, 1.0, &mut out.sigma[block]);
                let sum_log_sigma: f64 = s.iter().map(|&v| v as f64 - lse).sum();
                ce_sum += -(1.0 - k.smoothing) * (s[labels[r]] as f64 - lse)
                    - k.smoothing / c as f64 * sum_log_sigma;
            }
        }
        (out, kl_sum, ce_sum)
    }

    /// `[w_kd·T²·mean KL, w_ce·mean CE]` from the sums of [`forward`](Self::forward).
    fn weighted_terms(&self, k: &KdCe, kl_sum: f64, ce_sum: f64) -> [f32; 2] {
        let batch = self.rows as f64;
        let kd = k.temperature * k.temperature * kl_sum / batch;
        let ce = if self.labels.is_some() {
            ce_sum / batch
        } else {
            0.0
        };
        [(k.kd_weight * kd) as f32, (k.ce_weight * ce) as f32]
    }

    /// The gradients with respect to the student's and (when `teacher_wanted`) the
    /// teacher's logits, for the output gradient `upstream = [g_kd, g_ce]`. Arithmetic
    /// only: the softmaxes come from the forward pass.
    fn gradients(
        &self,
        k: &KdCe,
        found: &Softmaxes,
        upstream: [f64; 2],
        teacher_wanted: bool,
    ) -> (Vec<f32>, Option<Vec<f32>>) {
        let c = self.classes;
        let batch = self.rows as f64;
        let kd_scale = upstream[0] * k.kd_weight * k.temperature / batch;
        let ce_scale = upstream[1] * k.ce_weight / batch;
        let uniform = k.smoothing / c as f64;
        let mut student: Vec<f32> = found
            .q
            .iter()
            .zip(&found.p)
            .map(|(&q, &p)| (kd_scale * (q as f64 - p as f64)) as f32)
            .collect();
        if let Some(labels) = self.labels {
            let rows = student.chunks_mut(c).zip(found.sigma.chunks(c));
            for (r, (row, sigma)) in rows.enumerate() {
                for (j, (g, &sg)) in row.iter_mut().zip(sigma).enumerate() {
                    let hit = if labels[r] == j {
                        1.0 - k.smoothing
                    } else {
                        0.0
                    };
                    *g = (*g as f64 + ce_scale * (sg as f64 - hit - uniform)) as f32;
                }
            }
        }
        let teacher = teacher_wanted.then(|| {
            let mut dt = vec![0.0; self.rows * c];
            for (r, row) in dt.chunks_mut(c).enumerate() {
                let [kl, lse_q, lse_p] = found.stats[r];
                let span = r * c..(r + 1) * c;
                let (s, u, p) = (
                    &self.student[span.clone()],
                    &self.teacher[span.clone()],
                    &found.p[span],
                );
                for (j, g) in row.iter_mut().enumerate() {
                    let log_ratio = (u[j] as f64 - s[j] as f64) / k.temperature - lse_p + lse_q;
                    *g = (kd_scale * p[j] as f64 * (log_ratio - kl)) as f32;
                }
            }
            dt
        });
        (student, teacher)
    }
}

/// The backward step (parents: student logits, teacher logits).
#[derive(Debug)]
struct KdCeBackward;

/// The logits as the forward pass read them, and the call's constants.
#[derive(Clone)]
struct Saved<B: Backend> {
    student: B::FloatTensorPrimitive,
    teacher: B::FloatTensorPrimitive,
    labels: Option<Vec<usize>>,
    softmaxes: Softmaxes,
    constants: KdCe,
    shape: [usize; 2],
    device: B::Device,
}

impl<B: Backend> std::fmt::Debug for Saved<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved")
            .field("shape", &self.shape)
            .field("constants", &self.constants)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Backward<B, 2> for KdCeBackward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let Saved {
            student,
            teacher,
            labels,
            softmaxes,
            constants,
            shape: [rows, classes],
            device,
        } = ops.state;
        let [student_node, teacher_node] = ops.parents.map(|p| p.map(|p| p.id));
        let upstream = grads.consume::<B>(&ops.node);
        let upstream = host_values::<B, 1>(&upstream);
        let upstream = [upstream[0] as f64, upstream[1] as f64];
        let (ds, dt) = Rows {
            student: &host_values::<B, 2>(&student),
            teacher: &host_values::<B, 2>(&teacher),
            labels: labels.as_deref(),
            rows,
            classes,
        }
        .gradients(&constants, &softmaxes, upstream, teacher_node.is_some());
        if let Some(node) = student_node {
            grads.register::<B>(
                node,
                primitive(from_host::<B, 2>(ds, [rows, classes], &device)),
            );
        }
        if let (Some(node), Some(dt)) = (teacher_node, dt) {
            grads.register::<B>(
                node,
                primitive(from_host::<B, 2>(dt, [rows, classes], &device)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::{Distribution, Tolerance};

    type A = Autodiff<NdArray>;

    fn logits<B: Backend>(rows: usize, classes: usize, scale: f64) -> Tensor<B, 2> {
        Tensor::random(
            [rows, classes],
            Distribution::Normal(0.0, scale),
            &Default::default(),
        )
    }

    fn labels<B: Backend>(rows: usize, classes: usize) -> Tensor<B, 1, Int> {
        let values: Vec<i64> = (0..rows).map(|r| ((r * 7 + 3) % classes) as i64).collect();
        Tensor::from_data(TensorData::new(values, [rows]), &Default::default())
    }

    /// Hinton's term as tensor operations: `T²·KL(softmax(t/T) ‖ softmax(s/T))`, batch mean.
    fn kd_kl(s: Tensor<A, 2>, t: Tensor<A, 2>, temperature: f64) -> Tensor<A, 1> {
        use burn::tensor::activation::log_softmax;
        let [rows, _] = s.dims();
        let log_q = log_softmax(s.div_scalar(temperature), 1);
        let log_p = log_softmax(t.div_scalar(temperature), 1);
        (log_p.clone().exp() * (log_p - log_q))
            .sum()
            .mul_scalar(temperature * temperature / rows as f64)
    }

    /// Cross-entropy with label smoothing `ε` as tensor operations, batch mean.
    fn cross_entropy(s: Tensor<A, 2>, y: Tensor<A, 1, Int>, smoothing: f64) -> Tensor<A, 1> {
        let [rows, classes] = s.dims();
        let log_p = burn::tensor::activation::log_softmax(s, 1);
        let nll = log_p.clone().gather(1, y.reshape([rows, 1])).sum().neg();
        let uniform = log_p.sum().neg().div_scalar(classes as f64);
        (nll.mul_scalar(1.0 - smoothing) + uniform.mul_scalar(smoothing)).div_scalar(rows as f64)
    }

    fn close<const D: usize>(a: Tensor<NdArray, D>, b: Tensor<NdArray, D>) {
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::rel_abs(1e-4, 1e-6));
    }

    /// The terms and the gradients of both logits against the tensor-operation terms, with
    /// labels and smoothing and without labels; 3000 classes × 40 rows spans several
    /// parallel tasks.
    #[test]
    fn matches_the_tensor_operation_terms() {
        for (rows, classes, with_labels, smoothing) in
            [(7, 5, true, 0.1), (9, 4, false, 0.0), (40, 3000, true, 0.0)]
        {
            let k = KdCe {
                temperature: 3.0,
                kd_weight: 0.7,
                ce_weight: if with_labels { 0.3 } else { 0.0 },
                smoothing,
            };
            let s = logits::<A>(rows, classes, 3.0).require_grad();
            let t = logits::<A>(rows, classes, 3.0).require_grad();
            let y = with_labels.then(|| labels::<A>(rows, classes));
            let pair = weighted_terms(k, s.clone(), t.clone(), y.clone())
                .expect("ndarray takes the kernel path")
                .unwrap();
            let kd = kd_kl(s.clone(), t.clone(), k.temperature).mul_scalar(0.7);
            let ce = match &y {
                Some(y) => cross_entropy(s.clone(), y.clone(), smoothing).mul_scalar(0.3),
                None => Tensor::zeros([1], &Default::default()),
            };
            let reference = Tensor::cat(vec![kd, ce], 0);
            close(pair.clone().inner(), reference.clone().inner());
            // Different weights on the two outputs, so that each one's gradient counts.
            let w = Tensor::<A, 1>::from_floats([1.5, -0.5], &Default::default());
            let ours = (pair * w.clone()).sum().backward();
            let theirs = (reference * w).sum().backward();
            close(s.grad(&ours).unwrap(), s.grad(&theirs).unwrap());
            close(t.grad(&ours).unwrap(), t.grad(&theirs).unwrap());
        }
    }

    /// A teacher given as a constant gets no gradient; inference has the same values.
    #[test]
    fn constant_teachers_and_inference() {
        let k = KdCe {
            temperature: 2.0,
            kd_weight: 0.5,
            ce_weight: 0.5,
            smoothing: 0.0,
        };
        let s = logits::<A>(6, 4, 1.0).require_grad();
        let t = logits::<NdArray>(6, 4, 1.0);
        let y = labels::<NdArray>(6, 4);
        let pair = weighted_terms(
            k,
            s.clone(),
            Tensor::from_inner(t.clone()),
            Some(Tensor::from_inner(y.clone())),
        )
        .unwrap()
        .unwrap();
        let inferred = weighted_terms(k, s.clone().inner(), t, Some(y))
            .unwrap()
            .unwrap();
        close(pair.clone().inner(), inferred);
        let grads = pair.sum().backward();
        assert!(s.grad(&grads).is_some());
    }

    #[test]
    fn labels_outside_the_classes_are_an_error() {
        let k = KdCe {
            temperature: 1.0,
            kd_weight: 0.5,
            ce_weight: 0.5,
            smoothing: 0.0,
        };
        for bad in [4i64, -1] {
            let y = Tensor::<NdArray, 1, Int>::from_data(
                TensorData::new(vec![0i64, bad], [2]),
                &Default::default(),
            );
            let result = weighted_terms(k, logits(2, 4, 1.0), logits(2, 4, 1.0), Some(y));
            let message = result.unwrap().unwrap_err().to_string();
            assert!(message.contains(&format!("label {bad}")), "{message}");
        }
    }

    #[test]
    fn other_element_types_and_empty_logits_take_the_tensor_path() {
        let k = KdCe {
            temperature: 1.0,
            kd_weight: 1.0,
            ce_weight: 0.0,
            smoothing: 0.0,
        };
        type D = NdArray<f64>;
        assert!(weighted_terms(k, logits::<D>(2, 3, 1.0), logits(2, 3, 1.0), None).is_none());
        let empty = || Tensor::<NdArray, 2>::zeros([0, 3], &Default::default());
        assert!(weighted_terms(k, empty(), empty(), None).is_none());
    }
}
