//! Optimizers per parameter group, gradient accumulation and global-norm clipping.

use crate::error::{Result, TransferError};
use crate::freeze::{Freeze, Selector};
use crate::kernels::{self, AdamW};
use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;

/// Which optimizer updates the weights.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum OptimizerKind {
    /// AdamW (decoupled weight decay), PyTorch's defaults but for epsilon.
    AdamW {
        /// Decoupled weight decay (default 0.01).
        weight_decay: f32,
        /// First-moment decay (default 0.9).
        beta_1: f32,
        /// Second-moment decay (default 0.999).
        beta_2: f32,
        /// Denominator term (default 1e-8).
        epsilon: f32,
    },
    /// Stochastic gradient descent, optionally with momentum.
    Sgd {
        /// Momentum factor; 0 for plain SGD.
        momentum: f64,
        /// Nesterov momentum.
        nesterov: bool,
        /// L2 penalty added to the gradient; 0 for none.
        weight_decay: f32,
    },
}

impl OptimizerKind {
    /// AdamW with weight decay 0.01, betas (0.9, 0.999), epsilon 1e-8.
    pub fn adamw() -> Self {
        OptimizerKind::AdamW {
            weight_decay: 0.01,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
        }
    }

    /// Plain SGD: `w ← w − lr·g`.
    pub fn sgd() -> Self {
        OptimizerKind::Sgd {
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    /// SGD with (PyTorch-style, undampened) momentum.
    pub fn sgd_momentum(momentum: f64) -> Self {
        OptimizerKind::Sgd {
            momentum,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let check = |name: &str, v: f64, ok: bool, rule: &str| {
            if ok {
                Ok(())
            } else {
                Err(TransferError::config(name, v, rule))
            }
        };
        let (weight_decay, unit_interval) = match *self {
            OptimizerKind::AdamW {
                weight_decay,
                beta_1,
                beta_2,
                epsilon,
            } => {
                let eps = epsilon as f64;
                check(
                    "epsilon",
                    eps,
                    eps > 0.0 && eps.is_finite(),
                    "must be finite and > 0",
                )?;
                (
                    weight_decay,
                    vec![("beta_1", beta_1 as f64), ("beta_2", beta_2 as f64)],
                )
            }
            OptimizerKind::Sgd {
                momentum,
                weight_decay,
                ..
            } => (weight_decay, vec![("momentum", momentum)]),
        };
        let wd = weight_decay as f64;
        check(
            "weight_decay",
            wd,
            wd >= 0.0 && wd.is_finite(),
            "must be finite and ≥ 0",
        )?;
        unit_interval
            .into_iter()
            .try_for_each(|(n, v)| check(n, v, (0.0..1.0).contains(&v), "must be in [0, 1)"))
    }

    fn build<B: AutodiffBackend, M: AutodiffModule<B>>(&self) -> AnyOptimizer<M, B> {
        match *self {
            OptimizerKind::AdamW {
                weight_decay,
                beta_1,
                beta_2,
                epsilon,
            } => AnyOptimizer::AdamW(kernels::adamw(weight_decay, beta_1, beta_2, epsilon)),
            OptimizerKind::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => AnyOptimizer::Sgd(kernels::sgd(momentum, nesterov, weight_decay)),
        }
    }
}

/// One of the supported optimizers, chosen at run time.
pub(crate) enum AnyOptimizer<M: AutodiffModule<B>, B: AutodiffBackend> {
    AdamW(OptimizerAdaptor<AdamW, M, B>),
    Sgd(kernels::Sgd<M, B>),
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> AnyOptimizer<M, B> {
    fn step(&mut self, lr: f64, model: M, grads: GradientsParams) -> M {
        match self {
            AnyOptimizer::AdamW(o) => o.step(lr, model, grads),
            AnyOptimizer::Sgd(o) => o.step(lr, model, grads),
        }
    }

    /// The optimizer's state (moments, momentum), keyed by parameter id, as bytes.
    fn state_bytes(&self) -> std::result::Result<Vec<u8>, String> {
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
        match self {
            AnyOptimizer::AdamW(o) => Recorder::<B>::record(&recorder, o.to_record(), ()),
            AnyOptimizer::Sgd(o) => Recorder::<B>::record(&recorder, o.to_record(), ()),
        }
        .map_err(|e| e.to_string())
    }

    fn load_state_bytes(
        &mut self,
        bytes: Vec<u8>,
        device: &B::Device,
    ) -> std::result::Result<(), String> {
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
        let decode = || match self {
            AnyOptimizer::AdamW(o) => Recorder::<B>::load(&recorder, bytes, device).map(|r| {
                // A stand-in while the record loads into the optimizer taken out.
                let taken = std::mem::replace(o, kernels::adamw(0.0, 0.0, 0.0, 0.0));
                *o = taken.load_record(r);
            }),
            AnyOptimizer::Sgd(o) => Recorder::<B>::load(&recorder, bytes, device).map(|r| {
                let taken = std::mem::replace(o, kernels::sgd(0.0, false, 0.0));
                *o = taken.load_record(r);
            }),
        };
        match crate::guard::quietly(decode) {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("the optimizer state could not be decoded".into()),
        }
    }
}

/// A parameter group: the parameters a selector picks, trained at their own base rate.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LrGroup {
    /// Which parameters.
    pub selector: Selector,
    /// Their base learning rate (the schedule scales it).
    pub learning_rate: f64,
}

/// Per-group optimizers and gradient accumulators.
pub(crate) struct GroupedOptimizer<M: AutodiffModule<B>, B: AutodiffBackend> {
    groups: Vec<GroupState<M, B>>,
    clip_norm: Option<f64>,
}

struct GroupState<M: AutodiffModule<B>, B: AutodiffBackend> {
    ids: Vec<ParamId>,
    base_lr: f64,
    optimizer: AnyOptimizer<M, B>,
    pending: GradientsAccumulator<M>,
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> GroupedOptimizer<M, B> {
    /// Assigns every parameter to the first group whose selector picks it, the rest to a
    /// default group at `default_lr`. A group that picks nothing is an error.
    pub(crate) fn new(
        model: &M,
        kind: OptimizerKind,
        default_lr: f64,
        groups: &[LrGroup],
        clip_norm: Option<f64>,
    ) -> Result<Self> {
        let summary = model.param_summary();
        let paths: Vec<String> = summary.entries.iter().map(|p| p.path.clone()).collect();
        let mut owner: Vec<Option<usize>> = vec![None; paths.len()];
        for (g, group) in groups.iter().enumerate() {
            let picked = group.selector.resolve(&paths)?;
            for (o, p) in owner.iter_mut().zip(picked) {
                if p && o.is_none() {
                    *o = Some(g);
                }
            }
        }
        let rates = groups
            .iter()
            .map(|g| g.learning_rate)
            .chain(std::iter::once(default_lr));
        let groups = rates
            .enumerate()
            .map(|(g, base_lr)| GroupState {
                ids: summary
                    .entries
                    .iter()
                    .zip(&owner)
                    .filter(|(p, o)| !p.buffer && o.unwrap_or(groups.len()) == g)
                    .map(|(p, _)| p.id)
                    .collect(),
                base_lr,
                optimizer: kind.build(),
                pending: GradientsAccumulator::new(),
            })
            .filter(|g| !g.ids.is_empty())
            .collect();
        Ok(Self { groups, clip_norm })
    }

    /// Splits a backward pass's gradients by group and adds them to the pending sums.
    pub(crate) fn accumulate(&mut self, model: &M, grads: &mut B::Gradients) {
        for g in &mut self.groups {
            let part = GradientsParams::from_params(grads, model, &g.ids);
            g.pending.accumulate(model, part);
        }
    }

    /// Steps every group with its rate × `factor`, after scaling the pending gradients by
    /// `grad_scale` and clipping their global norm. Returns the model and the norm before
    /// clipping (when clipping is on).
    pub(crate) fn step(&mut self, model: M, factor: f64, grad_scale: f64) -> (M, Option<f64>) {
        let mut grads: Vec<GradientsParams> =
            self.groups.iter_mut().map(|g| g.pending.grads()).collect();
        let mut scale = grad_scale;
        let mut norm = None;
        if let Some(max_norm) = self.clip_norm {
            let n = global_norm::<B, M>(&model, &grads) * grad_scale;
            if n > max_norm {
                scale *= max_norm / (n + 1e-6);
            }
            norm = Some(n);
        }
        if scale != 1.0 {
            scale_grads::<B, M>(&model, &mut grads, scale);
        }
        let model = self
            .groups
            .iter_mut()
            .zip(grads)
            .fold(model, |m, (g, grads)| {
                g.optimizer.step(g.base_lr * factor, m, grads)
            });
        (model, norm)
    }

    /// The base rate of each group, default group last.
    pub(crate) fn base_rates(&self) -> Vec<f64> {
        self.groups.iter().map(|g| g.base_lr).collect()
    }

    /// Each group's optimizer state, serialised (for resumable checkpoints).
    pub(crate) fn state_bytes(&self) -> std::result::Result<Vec<Vec<u8>>, String> {
        self.groups
            .iter()
            .map(|g| g.optimizer.state_bytes())
            .collect()
    }

    /// Restores the state written by [`state_bytes`](Self::state_bytes) for the same
    /// groups; the parameter ids must be those the state was saved with.
    pub(crate) fn load_state_bytes(
        &mut self,
        states: Vec<Vec<u8>>,
        device: &B::Device,
    ) -> std::result::Result<(), String> {
        if states.len() != self.groups.len() {
            return Err(format!(
                "the checkpoint has optimizer state for {} parameter groups, this run has {}; resume with the same learning-rate groups",
                states.len(),
                self.groups.len()
            ));
        }
        self.groups
            .iter_mut()
            .zip(states)
            .try_for_each(|(g, bytes)| g.optimizer.load_state_bytes(bytes, device))
    }
}

/// The L2 norm of all gradients together (PyTorch's `clip_grad_norm_`), read back once.
fn global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &[GradientsParams],
) -> f64 {
    struct SumSquares<'a, B: AutodiffBackend> {
        grads: &'a [GradientsParams],
        total: Option<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for SumSquares<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            for g in self.grads {
                if let Some(t) = g.get::<B::InnerBackend, D>(param.id) {
                    let s = t.powi_scalar(2).sum();
                    self.total = Some(match self.total.take() {
                        Some(acc) => acc + s,
                        None => s,
                    });
                }
            }
        }
    }
    let mut v = SumSquares::<B> { grads, total: None };
    model.visit(&mut v);
    v.total
        .map(|t| t.into_scalar().elem::<f64>().sqrt())
        .unwrap_or(0.0)
}

fn scale_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut [GradientsParams],
    scale: f64,
) {
    struct Scale<'a> {
        grads: &'a mut [GradientsParams],
        scale: f64,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            for g in self.grads.iter_mut() {
                if let Some(t) = g.remove::<B::InnerBackend, D>(param.id) {
                    g.register(param.id, t.mul_scalar(self.scale));
                }
            }
        }
    }
    model.visit(&mut Scale { grads, scale });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimizer_settings_are_checked() {
        assert!(OptimizerKind::adamw().validate().is_ok());
        assert!(OptimizerKind::sgd_momentum(0.9).validate().is_ok());
        let bad_beta = OptimizerKind::AdamW {
            weight_decay: 0.0,
            beta_1: 1.0,
            beta_2: 0.999,
            epsilon: 1e-8,
        };
        assert!(
            bad_beta
                .validate()
                .unwrap_err()
                .to_string()
                .contains("beta_1")
        );
        let bad_decay = OptimizerKind::Sgd {
            momentum: 0.0,
            nesterov: false,
            weight_decay: f32::NAN,
        };
        assert!(
            bad_decay
                .validate()
                .unwrap_err()
                .to_string()
                .contains("weight_decay")
        );
        assert!(OptimizerKind::sgd_momentum(1.5).validate().is_err());
    }
}
