//! A TransferModel, and a Distiller's student, trained by burn-train's Learner.
use crate::common::*;
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::InMemDataset;
use burn::optim::AdamWConfig;
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining, TrainStep};
use burn_transfer::distill::{DistillBatch, Distiller};
use burn_transfer::loss::{DistillLossConfig, ParamSchedule};
use burn_transfer::objective::StepAt;
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

fn teacher() -> TransferModel<Inner, MlpBackbone<Inner>, LinearHead<Inner>> {
    let d = device();
    TransferModel::with_linear_head(MlpBackbone::new(&[8, 32], &d).unwrap(), 4, &d).unwrap()
}

#[test]
fn a_distiller_trains_its_student_inside_the_learner() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = teacher();
    let teacher_before = values::<Inner, _>(&teacher);
    let loss = DistillLossConfig::new()
        .with_temperature(2.0)
        .with_alpha(0.6);
    let distiller = Distiller::new(teacher, loss, FineTuner::<B>::new()).unwrap();
    let model = distiller.learner_model(mlp_model()).unwrap();
    let student_before = values::<B, _>(&model.student);

    // One Learner step is the Distiller's own step on the same batch.
    let batch = batch::<B>(16, 8, 4, 3);
    let learner_loss: f32 = TrainStep::step(&model, batch.clone())
        .item
        .loss
        .into_scalar();
    let fit_loss: f32 = DistillBatch::<B, _, _>::distill_step(
        batch,
        &model.student,
        distiller.teacher(),
        &model.loss,
        StepAt { epoch: 1, batch: 1 },
    )
    .unwrap()
    .loss
    .into_scalar();
    assert!(
        (learner_loss - fit_loss).abs() < 1e-6,
        "{learner_loss} vs {fit_loss}"
    );

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
    assert_ne!(values::<Inner, _>(&trained.student), student_before);
    // The teacher is no parameter of the Learner's model: nothing moved it.
    assert_eq!(values::<Inner, _>(trained.teacher()), teacher_before);
}

#[test]
fn what_a_learner_step_cannot_feed_is_refused_when_the_model_is_built() {
    let tuner = FineTuner::<B>::new;
    let schedule = DistillLossConfig::new().with_temperature(ParamSchedule::Linear {
        start: 4.0,
        end: 1.0,
        epochs: 3,
    });
    let err = Distiller::new(teacher(), schedule, tuner())
        .unwrap()
        .learner_model(mlp_model())
        .unwrap_err();
    assert!(err.to_string().contains("not told its epoch"), "{err}");
    let hint = DistillLossConfig::new().with_hint(1.0);
    let err = Distiller::new(teacher(), hint, tuner())
        .unwrap()
        .learner_model(mlp_model())
        .unwrap_err();
    assert!(err.to_string().contains("hint"), "{err}");
}
