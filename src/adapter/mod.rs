//! Parameter-efficient fine-tuning: LoRA on any burn module (by path, no model changes),
//! merge/unmerge, several adapters on one base, adapter-only files in PEFT's format, and
//! bottleneck (Houlsby) adapters.

mod bottleneck;
mod files;
mod fingerprint;
mod lora;
mod peft;

pub use bottleneck::{BottleneckAdapter, BottleneckConfig};
pub use files::{AdapterConfig, AdapterExtra, CONFIG_FILE, WEIGHTS_FILE};
pub(crate) use fingerprint::fnv;
pub use fingerprint::{Fingerprint, TensorPrint};
pub use lora::{LoraAdapter, LoraConfig, LoraKind, LoraModel, LoraTarget, LoraWeights};
