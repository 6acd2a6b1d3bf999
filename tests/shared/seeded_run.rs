//! Seeded training runs for the reproducibility tests of both test binaries
//! (`tests/suite/reproducible.rs` on ndarray, `tests/backends.rs` on Flex), each long enough
//! for burn-ndarray's vectorised paths: a MobileNetV2 (width 0.25) with batch norm and a
//! linear head on two batches of 32 images at 32 px, and a two-layer BERT (layer norm,
//! masked attention, dropout, mean pooling) on two batches of 8 padded sequences; both with
//! cross-entropy, AdamW and a seed.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::backend::AutodiffBackend;
use burn_transfer::models::{Bert, BertConfig, BertInput, MobileNetV2, MobileNetV2Config};
use burn_transfer::prelude::*;

/// The convolutional run: seeds `B`'s generator, draws the batches and the initial model,
/// trains one epoch and returns a checksum of every trained weight's bits.
pub fn seeded_cnn_checksum<B: AutodiffBackend>() -> u64 {
    let d = Default::default();
    B::seed(&d, 11);
    let batches: Vec<ClassificationBatch<B, Tensor<B, 4>>> = (0..2)
        .map(|i| {
            ClassificationBatch::new(
                Tensor::random([32, 3, 32, 32], Distribution::Normal(0.0, 1.0), &d),
                Tensor::from_data(
                    TensorData::new((0..32).map(|j| ((i + j) % 5) as i64).collect(), [32]),
                    &d,
                ),
            )
        })
        .collect();
    let config = MobileNetV2Config {
        width_mult: 0.25,
        stage_depths: [1; 7],
    };
    let body = MobileNetV2::<B>::new(&config, &d).unwrap();
    let model = TransferModel::with_linear_head(body, 5, &d).unwrap();
    checksum(&tuner::<B>().fit(model, &batches, None).unwrap().model)
}

/// The transformer run, as [`seeded_cnn_checksum`]: sequences of 24 tokens, the last few of
/// each padded away (a different number per row), three classes.
pub fn seeded_bert_checksum<B: AutodiffBackend>() -> u64 {
    let d = Default::default();
    B::seed(&d, 11);
    let batches: Vec<ClassificationBatch<B, BertInput<B>>> = (0..2)
        .map(|i| {
            let ids = Tensor::<B, 2, Int>::random([8, 24], Distribution::Uniform(3.0, 100.0), &d);
            let mask: Vec<i64> = (0..8)
                .flat_map(|row| (0..24).map(move |t| i64::from(t < 24 - 2 * row)))
                .collect();
            let labels = (0..8).map(|j| ((i + j) % 3) as i64).collect();
            ClassificationBatch::new(
                BertInput::with_mask(ids, Tensor::from_data(TensorData::new(mask, [8, 24]), &d)),
                Tensor::from_data(TensorData::new(labels, [8]), &d),
            )
        })
        .collect();
    let config = BertConfig {
        vocab_size: 100,
        max_position_embeddings: 24,
        with_pooler: false,
        ..BertConfig::all_minilm_l6_v2().shallower(2).narrower(64, 4)
    };
    let body = Pooled::new(Bert::<B>::new(&config, &d).unwrap(), Pooling::Mean).unwrap();
    let model = TransferModel::with_linear_head(body, 3, &d).unwrap();
    checksum(&tuner::<B>().fit(model, &batches, None).unwrap().model)
}

/// The same training settings for both runs.
fn tuner<B: AutodiffBackend>() -> FineTuner<B> {
    FineTuner::<B>::new()
        .learning_rate(1e-3)
        .epochs(1)
        .seed(3)
        .monitor(Monitor::TrainLoss)
        .verbose(false)
}

fn checksum<B: Backend, M: Module<B>>(model: &M) -> u64 {
    struct Bits(u64);
    impl<B: Backend> ModuleVisitor<B> for Bits {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            for v in p.val().into_data().iter::<f32>() {
                self.0 = self.0.rotate_left(5) ^ v.to_bits() as u64;
            }
        }
    }
    let mut bits = Bits(0);
    model.visit(&mut bits);
    bits.0
}
