//! One seeded training run for the reproducibility tests of both test binaries
//! (`tests/suite/reproducible.rs` on ndarray, `tests/backends.rs` on Flex): a MobileNetV2
//! (width 0.25) with batch norm and a linear head, two batches of 32 images at 32 px
//! (long enough for burn-ndarray's vectorised paths), cross-entropy, AdamW, a seed.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::backend::AutodiffBackend;
use burn_transfer::models::{MobileNetV2, MobileNetV2Config};
use burn_transfer::prelude::*;

/// Seeds `B`'s generator, draws the batches and the initial model, trains one epoch and
/// returns a checksum of every trained weight's bits.
pub fn seeded_run_checksum<B: AutodiffBackend>() -> u64 {
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
    let tuner = FineTuner::<B>::new()
        .learning_rate(1e-3)
        .epochs(1)
        .seed(3)
        .monitor(Monitor::TrainLoss)
        .verbose(false);
    checksum(&tuner.fit(model, &batches, None).unwrap().model)
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
