//! Adapter files: only what was trained, in PEFT's format.
//!
//! `adapter_model.safetensors` holds the LoRA factors under PEFT's names
//! (`base_model.model.<module>.lora_A.weight`, `lora_B.weight`; `lora_embedding_A/B` for
//! embeddings; Conv2d factors as `[r, in, kh, kw]` and `[out, r, 1, 1]`) and every base
//! parameter that was trainable (a new head, say) as `base_model.model.<path>`, Linear
//! weights transposed to PyTorch's `[out, in]`. `adapter_config.json` has PEFT's fields
//! (`peft_type`, `r`, `lora_alpha`, `lora_dropout`, `target_modules`, `modules_to_save`)
//! and ours: the adapted targets and the base model's fingerprint.

use super::fingerprint::Fingerprint;
use super::lora::{LoraConfig, LoraKind, LoraModel, LoraTarget, LoraWeights};
use crate::checkpoint::atomic_write;
use crate::checkpoint::pytorch::{
    burn_layout, tensor_values, to_safetensors, torch_key, torch_layout, torch_shape,
};
use crate::error::{Result, TransferError};
use crate::freeze::{Freeze, ParamInfo};
use crate::import::integrity::StampError;
use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use safetensors::tensor::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// File names inside an adapter folder.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The configuration file.
pub const CONFIG_FILE: &str = "adapter_config.json";

/// `adapter_config.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdapterConfig {
    /// Always `"LORA"`.
    pub peft_type: String,
    /// Rank.
    pub r: usize,
    /// Scale numerator.
    pub lora_alpha: f64,
    /// Dropout.
    pub lora_dropout: f64,
    /// The adapted modules, by exact name (as PEFT matches them).
    pub target_modules: Vec<String>,
    /// Base modules saved in full (those with trainable parameters, e.g. a new head):
    /// every parameter and running statistic, under PyTorch names and layouts.
    pub modules_to_save: Vec<String>,
    /// PEFT's bias mode (`"none"`: biases are not adapted).
    pub bias: String,
    /// PEFT's flag for Conv1D-style weights (false).
    pub fan_in_fan_out: bool,
    /// burn-transfer's own fields.
    pub burn_transfer: AdapterExtra,
}

/// What burn-transfer adds to PEFT's configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdapterExtra {
    /// Adapter name.
    pub adapter_name: String,
    /// The glob patterns the targets were chosen with.
    pub target_patterns: Vec<String>,
    /// Every adapted weight with its kind and shape.
    pub targets: Vec<LoraTarget>,
    /// The base model the adapter was trained on.
    pub base_model_fingerprint: Fingerprint,
}

pub(super) fn peft(path: &str) -> String {
    format!("base_model.model.{path}")
}

pub(super) fn factor_names(t: &LoraTarget) -> (String, String) {
    match t.kind {
        LoraKind::Embedding => (
            peft(&format!("{}.lora_embedding_A", t.module)),
            peft(&format!("{}.lora_embedding_B", t.module)),
        ),
        _ => (
            peft(&format!("{}.lora_A.weight", t.module)),
            peft(&format!("{}.lora_B.weight", t.module)),
        ),
    }
}

/// `(PEFT shape of A, PEFT shape of B)`.
pub(super) fn factor_shapes(t: &LoraTarget, r: usize) -> (Vec<usize>, Vec<usize>) {
    let (fan_in, fan_out) = t.fans();
    match t.kind {
        LoraKind::Conv2d => {
            let mut a = vec![r];
            a.extend(&t.shape[1..]);
            (a, vec![fan_out, r, 1, 1])
        }
        _ => (vec![r, fan_in], vec![fan_out, r]),
    }
}

fn tensor_data<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap_or_default()
}

impl<B: Backend, M: Module<B>> LoraModel<B, M> {
    /// Saves the active adapter and the trainable base parameters to `dir`
    /// (`adapter_model.safetensors`, `adapter_config.json`), each written atomically.
    pub fn save_adapter(&self, dir: &Path) -> Result<()> {
        let adapter = self.active().ok_or_else(|| {
            TransferError::config(
                "adapter",
                "none active",
                "activate the adapter to save (set_active)",
            )
        })?;
        let cfg = adapter.config();
        let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
        for (t, w) in adapter.targets().iter().zip(&adapter.weights) {
            let (na, nb) = factor_names(t);
            let (sa, sb) = factor_shapes(t, cfg.r);
            tensors.push((na, sa, tensor_data(w.lora_a.val())));
            tensors.push((nb, sb, tensor_data(w.lora_b.val())));
        }
        let entries = self.base.param_summary().entries;
        let modules = trained_modules(&entries);
        for (p, values) in entries.iter().zip(tensor_values(&self.base)) {
            if modules.iter().any(|m| m == module_of(&p.path)) {
                let (shape, values) = torch_layout(p, p.shape.clone(), values);
                tensors.push((peft(&torch_key(p)), shape, values));
            }
        }
        let saved = module_tensors(&entries, &modules);
        let bytes = to_safetensors(tensors, &dir.join(WEIGHTS_FILE))?;
        let config = AdapterConfig {
            peft_type: "LORA".into(),
            r: cfg.r,
            lora_alpha: cfg.lora_alpha,
            lora_dropout: cfg.lora_dropout,
            // PEFT matches list entries as exact module names (or suffixes): write the
            // modules actually adapted; our glob patterns are kept in `burn_transfer`.
            target_modules: adapter.targets().iter().map(|t| t.module.clone()).collect(),
            modules_to_save: modules.clone(),
            bias: "none".into(),
            fan_in_fan_out: false,
            burn_transfer: AdapterExtra {
                adapter_name: adapter.name().to_string(),
                target_patterns: cfg.target_modules.clone(),
                targets: adapter.targets().to_vec(),
                base_model_fingerprint: Fingerprint::of_except(
                    &self.base,
                    &saved.iter().map(|p| p.path.clone()).collect::<Vec<_>>(),
                ),
            },
        };
        let json = serde_json::to_string_pretty(&config).map_err(|e| TransferError::Export {
            format: "JSON".into(),
            reason: e.to_string(),
        })?;
        atomic_write(&dir.join(WEIGHTS_FILE), &bytes)?;
        atomic_write(&dir.join(CONFIG_FILE), json.as_bytes())
    }

    /// Loads an adapter saved by [`LoraModel::save_adapter`] onto `base`, which must be the
    /// model it was trained on (checked by fingerprint: the error lists the tensors that
    /// differ). Missing, truncated or corrupt files are errors, never panics.
    pub fn load_adapter(base: M, dir: &Path) -> Result<Self> {
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| TransferError::io("read adapter config", &config_path, e))?;
        let config: AdapterConfig =
            serde_json::from_str(&text).map_err(|e| TransferError::Checkpoint {
                path: config_path.clone(),
                reason: format!("not a valid adapter config: {e}"),
            })?;
        let carried: Vec<String> =
            module_tensors(&base.param_summary().entries, &config.modules_to_save)
                .into_iter()
                .map(|p| p.path)
                .collect();
        let found = Fingerprint::of_except(&base, &carried);
        let diffs = config
            .burn_transfer
            .base_model_fingerprint
            .differences(&found);
        if !diffs.is_empty() {
            return Err(TransferError::Checkpoint {
                path: dir.into(),
                reason: format!(
                    "this adapter was trained on another base model; {} tensor(s) differ: {}",
                    diffs.len(),
                    diffs.join("; ")
                ),
            });
        }
        let weights_path = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&weights_path)
            .map_err(|e| TransferError::io("read adapter weights", &weights_path, e))?;
        let corrupt = |why: String| TransferError::Checkpoint {
            path: weights_path.clone(),
            reason: format!("{why}; the adapter file is damaged or incomplete: save it again"),
        };
        match crate::import::integrity::check_stamp_in_bytes(&bytes) {
            Ok(_) => {}
            Err(StampError::Mismatch) => {
                return Err(TransferError::DamagedFile {
                    path: weights_path,
                    reason: "its tensor data does not match the CRC-32 in its header".into(),
                });
            }
            Err(StampError::Malformed(why)) => return Err(corrupt(why)),
        }
        let file = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let read = |name: &str, shape: &[usize]| read_f32(&file, name, shape, &corrupt);

        let lora_config = LoraConfig {
            r: config.r,
            lora_alpha: config.lora_alpha,
            lora_dropout: config.lora_dropout,
            target_modules: config.target_modules.clone(),
        };
        let mut model = LoraModel::new(base, &config.burn_transfer.adapter_name, lora_config)?;
        let device = model.base.devices().into_iter().next().unwrap_or_default();
        let adapter = model.adapters.last_mut().expect("one adapter");
        if adapter.targets() != config.burn_transfer.targets.as_slice() {
            return Err(corrupt(
                "the config's targets do not match what its patterns select on this base".into(),
            ));
        }
        let mut weights = Vec::new();
        for t in adapter.targets() {
            let (na, nb) = factor_names(t);
            let (sa, sb) = factor_shapes(t, config.r);
            let (fan_in, fan_out) = t.fans();
            weights.push(factors(
                read(&na, &sa)?,
                read(&nb, &sb)?,
                [config.r, fan_in, fan_out],
                &device,
            ));
        }
        adapter.weights = weights;

        let infos = module_tensors(&model.base.param_summary().entries, &config.modules_to_save);
        let mut values = HashMap::new();
        for info in &infos {
            let data = read(&peft(&torch_key(info)), &torch_shape(info))?;
            values.insert(info.path.clone(), burn_layout(info, data));
        }
        let expected = 2 * adapter_targets_len(&model) + infos.len();
        if file.len() != expected {
            return Err(corrupt(format!(
                "it holds {} tensors, the config describes {expected}",
                file.len()
            )));
        }
        model.base = replace_and_train(model.base, values)?;
        Ok(model)
    }
}

/// A target's factors from their values: `A` `[r, fan_in]`, `B` `[fan_out, r]`.
pub(super) fn factors<B: Backend>(
    a: Vec<f32>,
    b: Vec<f32>,
    [r, fan_in, fan_out]: [usize; 3],
    device: &B::Device,
) -> LoraWeights<B> {
    let param = |values: Vec<f32>, shape: [usize; 2]| {
        Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
    };
    LoraWeights {
        lora_a: param(a, [r, fan_in]),
        lora_b: param(b, [fan_out, r]),
    }
}

/// `base` with the parameters at `values`' paths replaced (PEFT's `modules_to_save`,
/// shapes checked before) and made trainable, as they were when the adapter was saved;
/// running statistics among them are replaced and stay buffers.
pub(super) fn replace_and_train<B: Backend, M: Module<B>>(
    base: M,
    values: HashMap<String, Vec<f32>>,
) -> Result<M> {
    let trained: Vec<String> = values
        .keys()
        .filter(|p| !crate::freeze::is_buffer_path(p))
        .cloned()
        .collect();
    let base = base.map(&mut SetValues {
        stack: Vec::new(),
        values,
    });
    if trained.is_empty() {
        return Ok(base);
    }
    let patterns: Vec<&str> = trained.iter().map(String::as_str).collect();
    base.unfreeze_matching(crate::freeze::Selector::globs(patterns)?)
}

/// `name` from an adapter file as `f32` values, checked to be of `shape` (float32, or
/// float16 / bfloat16 widened: PEFT saves an adapter in the precision it trained in).
pub(super) fn read_f32(
    file: &SafeTensors,
    name: &str,
    shape: &[usize],
    corrupt: &dyn Fn(String) -> TransferError,
) -> Result<Vec<f32>> {
    let view = file
        .tensor(name)
        .map_err(|_| corrupt(format!("tensor `{name}` is missing")))?;
    if view.shape() != shape {
        return Err(corrupt(format!(
            "tensor `{name}` is {:?}, expected {shape:?}",
            view.shape()
        )));
    }
    let data = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(corrupt(format!(
                "tensor `{name}` is {other:?}; adapters load from float32, float16 or bfloat16"
            )));
        }
    })
}

fn adapter_targets_len<B: Backend, M>(model: &LoraModel<B, M>) -> usize {
    model.adapters.last().map_or(0, |a| a.targets().len())
}

fn module_of(path: &str) -> &str {
    path.rsplit_once('.').map_or("", |(m, _)| m)
}

/// The modules a fine-tuning run changed besides LoRA: those with a trainable parameter
/// (PEFT's `modules_to_save`), in visiting order.
fn trained_modules(entries: &[ParamInfo]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in entries.iter().filter(|p| p.trainable && !p.buffer) {
        let m = module_of(&p.path).to_string();
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

/// Every tensor (parameters and running statistics: a BatchNorm that trained also moved
/// its statistics) of the given modules.
fn module_tensors(entries: &[ParamInfo], modules: &[String]) -> Vec<ParamInfo> {
    entries
        .iter()
        .filter(|p| modules.iter().any(|m| m == module_of(&p.path)))
        .cloned()
        .collect()
}

/// Replaces the values at the given paths (shapes were checked before).
struct SetValues {
    stack: Vec<String>,
    values: HashMap<String, Vec<f32>>,
}

impl<B: Backend> ModuleMapper<B> for SetValues {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        match self.values.remove(&self.stack.join(".")) {
            Some(v) => param.map(|w| {
                let dims: [usize; D] = w.dims();
                Tensor::from_data(TensorData::new(v, dims), &w.device())
            }),
            None => param,
        }
    }
}
