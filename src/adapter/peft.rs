//! Adapters written by Python PEFT (`PeftModel.save_pretrained`), loaded onto this crate's
//! models: the other direction of [`LoraModel::save_adapter`].
//!
//! A PEFT folder names modules as the Python model does (`encoder.layer.0.attention.self.
//! query`), and its configuration has only PEFT's fields. The names are carried over by the
//! key rules the model's weights are imported with (`bert_import_options()`, plus a prefix
//! rule where the model sits inside a larger one), so whatever loads the checkpoint also
//! places its adapter.

use super::files::{
    CONFIG_FILE, WEIGHTS_FILE, factor_names, factor_shapes, factors, peft, read_f32,
    replace_and_train,
};
use super::lora::{LoraConfig, LoraModel};
use crate::checkpoint::pytorch::{burn_layout, torch_key, torch_shape};
use crate::error::{Result, TransferError};
use crate::freeze::Freeze;
use crate::import::{ImportOptions, Layout};
use burn::module::Module;
use burn::prelude::*;
use safetensors::tensor::SafeTensors;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The fields of PEFT's `adapter_config.json` a LoRA adapter needs; the others (PEFT writes
/// some forty) are ignored, and those that would change the computation are refused.
#[derive(Debug, Deserialize)]
struct PeftConfig {
    peft_type: String,
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    lora_dropout: f64,
    /// Rank-stabilised LoRA: scale `α/√r` instead of `α/r`.
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default = "no_bias")]
    bias: String,
    #[serde(default)]
    lora_bias: bool,
    #[serde(default)]
    rank_pattern: Option<HashMap<String, serde_json::Value>>,
    #[serde(default)]
    alpha_pattern: Option<HashMap<String, serde_json::Value>>,
}

fn no_bias() -> String {
    "none".into()
}

impl PeftConfig {
    /// What this crate cannot reproduce, if anything.
    fn unsupported(&self) -> Option<String> {
        let patterned = |p: &Option<HashMap<String, serde_json::Value>>| {
            p.as_ref().is_some_and(|m| !m.is_empty())
        };
        if self.peft_type != "LORA" {
            Some(format!(
                "it is a {} adapter; only LoRA adapters load",
                self.peft_type
            ))
        } else if self.use_dora {
            Some("it is a DoRA adapter (use_dora), which this crate does not implement".into())
        } else if self.bias != "none" || self.lora_bias {
            Some(format!(
                "it trains biases (bias = \"{}\", lora_bias = {}); only bias = \"none\" loads",
                self.bias, self.lora_bias
            ))
        } else if patterned(&self.rank_pattern) || patterned(&self.alpha_pattern) {
            Some("it gives some modules their own rank or alpha (rank_pattern / alpha_pattern), which one LoraConfig cannot express".into())
        } else {
            None
        }
    }

    /// PEFT's scale as this crate's `lora_alpha / r`.
    fn lora_config(&self, targets: Vec<String>) -> LoraConfig {
        let alpha = if self.use_rslora {
            // α/√r = (α·√r)/r.
            self.lora_alpha * (self.r as f64).sqrt()
        } else {
            self.lora_alpha
        };
        LoraConfig::new(self.r, alpha, targets).with_dropout(self.lora_dropout)
    }
}

/// The tensors of `adapter_model.safetensors`, sorted into LoRA factors (by PEFT module
/// name) and the parameters of `modules_to_save` (by PEFT parameter name).
struct PeftTensors {
    modules: Vec<String>,
    saved: Vec<String>,
}

fn sort_keys(keys: Vec<String>, corrupt: &dyn Fn(String) -> TransferError) -> Result<PeftTensors> {
    let mut modules = Vec::new();
    let mut saved = Vec::new();
    for key in keys {
        let Some(name) = key.strip_prefix("base_model.model.") else {
            return Err(corrupt(format!(
                "tensor `{key}` lacks PEFT's `base_model.model.` prefix"
            )));
        };
        let factor = [
            ".lora_A.weight",
            ".lora_B.weight",
            ".lora_embedding_A",
            ".lora_embedding_B",
        ]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix));
        match factor {
            Some(module) => {
                if !modules.iter().any(|m| m == module) {
                    modules.push(module.to_string());
                }
            }
            None => saved.push(name.to_string()),
        }
    }
    Ok(PeftTensors { modules, saved })
}

impl<B: Backend, M: Module<B>> LoraModel<B, M> {
    /// Loads a LoRA adapter written by Python PEFT (`adapter_config.json` +
    /// `adapter_model.safetensors`, as `PeftModel.save_pretrained` writes them) onto `base`.
    /// `names` renames PEFT's module names to `base`'s paths: the rules the base model's
    /// checkpoint is imported with (e.g. `bert_import_options()`), with a rule adding the
    /// prefix where that model sits inside `base` (`^` → `backbone.encoder.`) if it does.
    ///
    /// Every adapted module gets PEFT's factors (`use_rslora`'s `α/√r` scale included);
    /// the parameters PEFT saved for `modules_to_save` replace `base`'s and train, as a new
    /// head trains. The adapter is named `default`, as in PEFT.
    ///
    /// Errors: missing or damaged files, an adapter this crate cannot reproduce (DoRA,
    /// trained biases, per-module ranks), and a PEFT name that the rules do not bring to a
    /// layer of `base` (the message names both).
    ///
    /// ```no_run
    /// use burn::backend::{Autodiff, NdArray};
    /// use burn_transfer::adapter::LoraModel;
    /// use burn_transfer::models::Bert;
    /// use burn_transfer::models::bert::bert_import_options;
    /// use std::path::Path;
    ///
    /// type B = Autodiff<NdArray>;
    /// let (bert, _) = Bert::<B>::from_pretrained("all-MiniLM-L6-v2", &Default::default())?;
    /// let lora = LoraModel::load_peft_adapter(bert, Path::new("my-adapter"), &bert_import_options()?)?;
    /// # Ok::<(), burn_transfer::TransferError>(())
    /// ```
    pub fn load_peft_adapter(base: M, dir: &Path, names: &ImportOptions) -> Result<Self> {
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| TransferError::io("read PEFT adapter config", &config_path, e))?;
        let config: PeftConfig =
            serde_json::from_str(&text).map_err(|e| TransferError::Checkpoint {
                path: config_path.clone(),
                reason: format!("not a PEFT LoRA adapter config: {e}"),
            })?;
        if let Some(why) = config.unsupported() {
            return Err(TransferError::Checkpoint {
                path: config_path,
                reason: format!("this adapter cannot be loaded: {why}"),
            });
        }
        let weights_path = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&weights_path)
            .map_err(|e| TransferError::io("read PEFT adapter weights", &weights_path, e))?;
        let corrupt = |why: String| TransferError::Checkpoint {
            path: weights_path.clone(),
            reason: format!("{why}; the adapter file is damaged or not PEFT's"),
        };
        let file = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let read = |name: &str, shape: &[usize]| read_f32(&file, name, shape, &corrupt);
        let tensors = sort_keys(
            file.names().into_iter().map(str::to_string).collect(),
            &corrupt,
        )?;
        if tensors.modules.is_empty() {
            return Err(corrupt(
                "it holds no LoRA factor (`lora_A` / `lora_B`)".into(),
            ));
        }

        // PEFT module → this model's module path, through the import rules.
        let mut ours: BTreeMap<String, String> = BTreeMap::new();
        for module in &tensors.modules {
            let renamed = names.rename(&format!("{module}.weight"))?;
            let path = renamed
                .strip_suffix(".weight")
                .unwrap_or(&renamed)
                .to_string();
            ours.insert(path, module.clone());
        }
        let lora_config = config.lora_config(ours.keys().cloned().collect());
        let mut model = LoraModel::new(base, "default", lora_config).map_err(|e| {
            TransferError::Checkpoint {
                path: dir.into(),
                reason: format!(
                    "PEFT's modules {} become {} under the name rules, which do not all select a layer of this model ({e}); add a rule for the prefix where the model sits",
                    tensors.modules.join(", "),
                    ours.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            }
        })?;
        let device = model.base.devices().into_iter().next().unwrap_or_default();

        let adapter = model.adapters.last_mut().expect("the adapter just added");
        let mut weights = Vec::new();
        for target in adapter.targets() {
            let module = ours.get(&target.module).ok_or_else(|| {
                corrupt(format!(
                    "the name rules select `{}`, for which the file has no factors",
                    target.module
                ))
            })?;
            // PEFT's tensor names for this module: the same suffixes as ours.
            let (a_name, b_name) = factor_names(target);
            let peft_name = |ours: &str| ours.replacen(&peft(&target.module), &peft(module), 1);
            let (a_shape, b_shape) = factor_shapes(target, config.r);
            let (fan_in, fan_out) = target.fans();
            weights.push(factors(
                read(&peft_name(&a_name), &a_shape)?,
                read(&peft_name(&b_name), &b_shape)?,
                [config.r, fan_in, fan_out],
                &device,
            ));
        }
        adapter.weights = weights;

        // `modules_to_save`: PEFT parameter → this model's parameter, in its layout.
        let entries = model.base.param_summary().entries;
        let mut values = HashMap::new();
        for name in &tensors.saved {
            let renamed = names.rename(name)?;
            let info = entries
                .iter()
                .find(|p| p.path == renamed || torch_key(p) == renamed)
                .ok_or_else(|| TransferError::Checkpoint {
                    path: dir.into(),
                    reason: format!(
                        "PEFT saved `{name}` (modules_to_save), which the name rules make `{renamed}`: no parameter of this model; add a rule for the prefix where the model sits"
                    ),
                })?;
            let data = match names.layout() {
                Layout::PyTorch => burn_layout(info, read(&peft(name), &torch_shape(info))?),
                Layout::Burn => read(&peft(name), &info.shape)?,
            };
            values.insert(info.path.clone(), data);
        }
        model.base = replace_and_train(model.base, values)?;
        Ok(model)
    }
}
