//! A TransferModel trained by burn-train's Learner.
use crate::common::*;
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::optim::AdamWConfig;
use burn::prelude::*;
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};
use burn_transfer::prelude::*;

#[derive(Clone)]
struct RowBatcher;

impl<Bk: Backend> Batcher<Bk, (Vec<f32>, i64), Batch<Bk>> for RowBatcher {
    fn batch(&self, items: Vec<(Vec<f32>, i64)>, device: &Bk::Device) -> Batch<Bk> {
        let n = items.len();
        let x: Vec<f32> = items.iter().flat_map(|(x, _)| x.clone()).collect();
        let y: Vec<i64> = items.iter().map(|(_, y)| *y).collect();
        ClassificationBatch::new(
            Tensor::from_data(TensorData::new(x, [n, 8]), device),
            Tensor::from_data(TensorData::new(y, [n]), device),
        )
    }
}

fn items(seed: u64) -> Vec<(Vec<f32>, i64)> {
    let b = batch::<Inner>(64, 8, 4, seed);
    let x = b.inputs.to_data().to_vec::<f32>().unwrap();
    let y = b.targets.to_data().iter::<i64>().collect::<Vec<_>>();
    (0..64)
        .map(|i| (x[i * 8..(i + 1) * 8].to_vec(), y[i]))
        .collect()
}

#[test]
fn transfer_model_trains_inside_the_learner_with_its_freeze_state() {
    let dir = tempfile::tempdir().unwrap();
    let model = mlp_model().freeze_matching("backbone").unwrap();
    let body_before = values::<B, _>(&model.backbone);
    let head_before = values::<B, _>(&model.head);
    let train = DataLoaderBuilder::<B, _, _>::new(RowBatcher)
        .batch_size(16)
        .build(InMemDataset::new(items(1)));
    let valid = DataLoaderBuilder::<Inner, _, _>::new(RowBatcher)
        .batch_size(32)
        .build(InMemDataset::new(items(2)));
    let result = SupervisedTraining::new(dir.path(), train, valid)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .num_epochs(2)
        .launch(Learner::new(model, AdamWConfig::new().init(), 1e-2));
    let trained = result.model;
    assert_eq!(values::<Inner, _>(&trained.backbone), body_before);
    assert_ne!(values::<Inner, _>(&trained.head), head_before);
}
