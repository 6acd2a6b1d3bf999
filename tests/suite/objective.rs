//! The one hook into the loop (`Objective`): a user's own objective trains and validates
//! through `FineTuner::train`, `fit` is `train` with `CrossEntropy`, and `NextTokenLoss`
//! trains a causal LM whose validation loss is the log of its perplexity.

use crate::common::*;
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn_transfer::models::gpt2::{Gpt2Config, Gpt2LmHeadModel};
use burn_transfer::objective::{
    CrossEntropy, NextTokenLoss, Objective, StepAt, StepOutput, evaluate, evaluate_with,
};
use burn_transfer::prelude::*;
use std::cell::RefCell;

type Net<Bk> = TransferModel<Bk, MlpBackbone<Bk>, LinearHead<Bk>>;

/// Regression on a single output, recording every step it is asked for.
struct Mse {
    seen: RefCell<Vec<StepAt>>,
}

fn mse<Bk: Backend>(model: &Net<Bk>, x: Tensor<Bk, 2>, y: Tensor<Bk, 1>) -> StepOutput<Bk> {
    let n = y.dims()[0];
    let diff = model.forward(x).reshape([n]) - y;
    StepOutput::new(diff.powf_scalar(2.0).mean(), 0, n)
}

impl<Bk: AutodiffBackend> Objective<Bk, Net<Bk>> for Mse {
    type Batch = (Tensor<Bk, 2>, Tensor<Bk, 1>);
    type ValidBatch = (Tensor<Bk::InnerBackend, 2>, Tensor<Bk::InnerBackend, 1>);

    fn train_step(
        &self,
        model: &Net<Bk>,
        (x, y): Self::Batch,
        at: StepAt,
    ) -> burn_transfer::Result<StepOutput<Bk>> {
        self.seen.borrow_mut().push(at);
        Ok(mse(model, x, y))
    }

    fn valid_step(
        &self,
        model: &Net<Bk::InnerBackend>,
        (x, y): Self::ValidBatch,
        _at: StepAt,
    ) -> burn_transfer::Result<StepOutput<Bk::InnerBackend>> {
        Ok(mse(model, x, y))
    }
}

fn regression<Bk: Backend>(rows: usize, seed: u64) -> (Tensor<Bk, 2>, Tensor<Bk, 1>) {
    let b = batch::<Bk>(rows, 8, 4, seed);
    // A target the inputs determine: the sum of the features.
    let y = b.inputs.clone().sum_dim(1).reshape([rows]);
    (b.inputs, y)
}

fn regressor() -> Net<B> {
    let d = device();
    TransferModel::with_linear_head(MlpBackbone::new(&[8, 16], &d).unwrap(), 1, &d).unwrap()
}

#[test]
fn a_users_objective_trains_and_validates_through_the_loop() {
    let train: Vec<_> = (0..3).map(|s| regression::<B>(16, s)).collect();
    let valid = vec![regression::<Inner>(16, 10)];
    let objective = Mse {
        seen: RefCell::new(Vec::new()),
    };
    let outcome = quiet(FineTuner::<B>::new().learning_rate(1e-2).epochs(4))
        .train(regressor(), &objective, &train, Some(&valid))
        .unwrap();
    let epochs = &outcome.history.epochs;
    assert_eq!(epochs.len(), 4);
    assert!(epochs[3].train_loss < epochs[0].train_loss, "{epochs:?}");
    // The loop told the objective where each step was: 3 batches in each of 4 epochs.
    let seen = objective.seen.borrow();
    assert_eq!(seen.len(), 12);
    assert_eq!(seen[0], StepAt { epoch: 1, batch: 1 });
    assert_eq!(seen[11], StepAt { epoch: 4, batch: 3 });
    // The history's validation loss is the objective's validation step on the best model.
    let best = &epochs[outcome.best_epoch - 1];
    let rescored =
        evaluate_with::<B, Net<B>, _>(&objective, &outcome.best_model.valid(), &valid, 0).unwrap();
    assert!((best.valid_loss.unwrap() - rescored.loss).abs() < 1e-6);
}

#[test]
fn fit_is_train_with_cross_entropy() {
    let train = batches::<B>(3, 8, 8, 4);
    let valid = batches::<Inner>(1, 8, 8, 4);
    let tuner = || quiet(FineTuner::<B>::new().learning_rate(1e-2).epochs(2).seed(4));
    let model = mlp_model();
    let fitted = tuner().fit(model.clone(), &train, Some(&valid)).unwrap();
    let trained = tuner()
        .train(model, &CrossEntropy::new(), &train, Some(&valid))
        .unwrap();
    assert!(values(&fitted.model) == values(&trained.model));
    assert_eq!(
        fitted.history.epochs[1].valid_loss,
        trained.history.epochs[1].valid_loss
    );
    // `evaluate` is the same validation pass.
    let again = evaluate(&trained.model.valid(), &valid).unwrap();
    assert!((again.loss - trained.history.epochs[1].valid_loss.unwrap()).abs() < 1e-6);
}

#[test]
fn validation_is_optional_but_then_only_the_training_loss_can_be_watched() {
    let train = batches::<B>(2, 8, 8, 4);
    let err = quiet(FineTuner::<B>::new())
        .monitor(Monitor::ValidLoss)
        .fit(mlp_model(), &train, None)
        .unwrap_err();
    assert!(err.to_string().contains("Monitor::TrainLoss"), "{err}");
    let outcome = quiet(FineTuner::<B>::new().epochs(2))
        .monitor(Monitor::TrainLoss)
        .fit(mlp_model(), &train, None)
        .unwrap();
    assert!(
        outcome
            .history
            .epochs
            .iter()
            .all(|e| e.valid_loss.is_none())
    );
}

pub fn tiny_lm<Bk: Backend>(layers: usize) -> Gpt2LmHeadModel<Bk> {
    let config = Gpt2Config {
        vocab_size: 24,
        n_positions: 16,
        n_embd: 16,
        n_layer: layers,
        n_head: 2,
        resid_pdrop: 0.0,
        embd_pdrop: 0.0,
        attn_pdrop: 0.0,
        bos_token_id: None,
        eos_token_id: None,
        ..Gpt2Config::default()
    };
    Gpt2LmHeadModel::new(&config, &Default::default()).unwrap()
}

/// Sequences of a simple language (each token the previous plus one, modulo 24), the
/// second row padded after `real` tokens.
pub fn counting<Bk: Backend>(start: i64, real: usize) -> TokenBatch<Bk> {
    let seq = 10;
    let ids: Vec<i64> = (0..2)
        .flat_map(|r| (0..seq).map(move |t| (start + 5 * r + t as i64) % 24))
        .collect();
    let mask: Vec<i64> = (0..2)
        .flat_map(|r| (0..seq).map(move |t| i64::from(r == 0 || t < real)))
        .collect();
    let d = Default::default();
    TokenBatch::new(
        Tensor::from_data(TensorData::new(ids, [2, seq]), &d),
        Tensor::from_data(TensorData::new(mask, [2, seq]), &d),
    )
}

#[test]
fn a_causal_lm_learns_with_next_token_loss_and_validates_in_perplexity() {
    let train: Vec<TokenBatch<B>> = (0..4).map(|s| counting(s * 3, 6)).collect();
    let valid: Vec<TokenBatch<Inner>> = vec![counting(1, 7), counting(11, 4)];
    let outcome = quiet(FineTuner::<B>::new().learning_rate(1e-2).epochs(6).seed(1))
        .train(tiny_lm::<B>(1), &NextTokenLoss, &train, Some(&valid))
        .unwrap();
    let epochs = &outcome.history.epochs;
    assert!(epochs[5].train_loss < epochs[0].train_loss, "{epochs:?}");
    assert!(epochs[5].valid_accuracy.unwrap() > epochs[0].valid_accuracy.unwrap());
    // Token-weighted over the batches, the validation loss is log(perplexity).
    let best = &epochs[outcome.best_epoch - 1];
    let perplexity = outcome.best_model.valid().perplexity(&valid).unwrap();
    assert!(
        (best.valid_loss.unwrap().exp() - perplexity).abs() < 1e-3 * perplexity,
        "{} vs {perplexity}",
        best.valid_loss.unwrap().exp()
    );
}

#[test]
fn next_token_accuracy_counts_real_next_tokens_only() {
    // Padding after 4 tokens in the second row: 9 targets in row one, 3 in row two.
    let batch = counting::<Inner>(0, 4);
    let model = tiny_lm::<Inner>(1);
    let logits = model
        .next_token_logits(batch.input_ids.clone(), batch.attention_mask.clone())
        .unwrap();
    let (correct, count) = burn_transfer::objective::next_token_correct(
        &logits,
        &batch.input_ids,
        &batch.attention_mask,
    );
    assert_eq!(count, 12);
    assert!(correct <= count);
}

#[test]
fn a_batch_the_lm_cannot_take_is_an_error_naming_it() {
    // 20 positions for a model of 16.
    let d = device();
    let long = TokenBatch::<B>::unpadded(Tensor::zeros([1, 20], &d));
    let err = quiet(FineTuner::<B>::new().epochs(1))
        .monitor(Monitor::TrainLoss)
        .train(
            tiny_lm::<B>(1),
            &NextTokenLoss,
            &vec![counting(0, 10), long],
            None,
        )
        .unwrap_err();
    assert!(err.to_string().contains("training batch 2"), "{err}");
}

#[test]
fn label_smoothing_outside_zero_to_one_is_an_error_naming_it() {
    let train = batches::<B>(1, 8, 8, 4);
    let err = quiet(FineTuner::<B>::new())
        .monitor(Monitor::TrainLoss)
        .train(
            mlp_model(),
            &CrossEntropy::with_smoothing(1.5),
            &train,
            None,
        )
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("CrossEntropy::smoothing") && message.contains("[0, 1)"),
        "{message}"
    );
}
