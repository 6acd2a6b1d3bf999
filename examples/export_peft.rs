//! Moving a LoRA adapter from this crate to Python PEFT.
//!
//! Trains a LoRA adapter (and a new head) on the digits data, then writes to DIR:
//! `base.safetensors` (the base model under PyTorch names and layouts), `adapter/`
//! (`adapter_model.safetensors` + `adapter_config.json`, PEFT's format) and
//! `io.safetensors` (inputs and this crate's outputs). `scripts/check_peft.py DIR` rebuilds
//! the network in PyTorch, loads the adapter with `PeftModel.from_pretrained`, and checks
//! that PyTorch computes the same outputs.
//!
//!     cargo run --example export_peft -- DIR
//!     python3 scripts/check_peft.py DIR        # needs torch and peft

#[path = "common/digits.rs"]
mod digits;

use burn::backend::{Autodiff, NdArray};
use burn::prelude::*;
use burn_transfer::adapter::{LoraConfig, LoraModel};
use burn_transfer::checkpoint::{atomic_write, save_pytorch_safetensors};
use burn_transfer::prelude::*;
use safetensors::tensor::{Dtype, TensorView};

type B = Autodiff<NdArray>;

fn main() -> burn_transfer::Result<()> {
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "peft_export".into()),
    );
    let device = Default::default();
    B::seed(&device, 1);
    let mut all = digits::load();
    digits::Rng::new(1).shuffle(&mut all);
    let train = digits::batches::<B>(&all[..512], 32, &device);

    let base = TransferModel::with_linear_head(
        MlpBackbone::<B>::new(&[64, 32, 32], &device)?,
        10,
        &device,
    )?;
    save_pytorch_safetensors(&base, &dir.join("base.safetensors"))?;
    let lora = LoraModel::new(
        base,
        "default",
        LoraConfig::new(4, 8.0, ["backbone.layers.*"]),
    )?
    .unfreeze_base("head")?;
    let trained = FineTuner::<B>::new()
        .learning_rate(1e-2)
        .epochs(3)
        .monitor(Monitor::TrainLoss)
        .verbose(false)
        .fit(lora, &train, None)?
        .model;
    trained.save_adapter(&dir.join("adapter"))?;

    let x = Tensor::cat(
        all[512..520]
            .iter()
            .map(|s| Tensor::<B, 2>::from_data(TensorData::new(s.pixels.clone(), [1, 64]), &device))
            .collect(),
        0,
    );
    let logits = trained.logits(x.clone());
    let bytes = |t: Tensor<B, 2>| -> Vec<u8> { t.into_data().convert::<f32>().as_bytes().to_vec() };
    let (xb, lb) = (bytes(x), bytes(logits));
    let io = safetensors::tensor::serialize(
        [
            (
                "x",
                TensorView::new(Dtype::F32, vec![8, 64], &xb).expect("8×64 f32"),
            ),
            (
                "logits",
                TensorView::new(Dtype::F32, vec![8, 10], &lb).expect("8×10 f32"),
            ),
        ],
        None,
    )
    .map_err(|e| TransferError::Export {
        format: "safetensors".into(),
        reason: e.to_string(),
    })?;
    atomic_write(&dir.join("io.safetensors"), &io)?;
    println!("{}", trained.param_summary().totals_line());
    println!(
        "wrote base.safetensors, adapter/ and io.safetensors to {}",
        dir.display()
    );
    Ok(())
}
