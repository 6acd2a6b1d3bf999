//! A TransferModel trained by burn-train's Learner.
use crate::common::*;
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::InMemDataset;
use burn::optim::AdamWConfig;
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};
use burn_transfer::prelude::*;

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
