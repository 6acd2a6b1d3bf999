//! The distillation terms beyond plain KD against PyTorch, values and gradients
//! (`tests/fixtures/distill_terms.json`, float64 from `scripts/make_distill_fixtures.py`;
//! inputs exact in f32): decoupled KD, attention transfer, the FitNets hint through its
//! projector, masked token-level KD, GKD's generalized Jensen–Shannon divergence, and the
//! layer terms (TinyBERT's hidden and attention MSE, DistilBERT's cosine) over the real
//! tokens of a padded batch.

use crate::common::*;
use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use burn_transfer::layer_outputs::LayerOutputs;
use burn_transfer::loss::functional::{
    attention_transfer, dkd, generalized_jsd_tokens, kd_kl_tokens,
};
use burn_transfer::loss::{DistillLossConfig, DistillTargets, LayerPair, LayerPairs};
use serde_json::Value;

fn cases() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/distill_terms.json"
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["cases"].clone()
}

/// A nested JSON array of numbers as a tensor of rank `D`.
fn tensor<const D: usize>(v: &Value) -> Tensor<B, D> {
    fn walk(v: &Value, shape: &mut Vec<usize>, out: &mut Vec<f32>, depth: usize) {
        match v {
            Value::Array(items) => {
                if shape.len() == depth {
                    shape.push(items.len());
                }
                items.iter().for_each(|i| walk(i, shape, out, depth + 1));
            }
            other => out.push(other.as_f64().unwrap() as f32),
        }
    }
    let (mut shape, mut values) = (Vec::new(), Vec::new());
    walk(v, &mut shape, &mut values, 0);
    assert_eq!(shape.len(), D);
    Tensor::from_data(TensorData::new(values, shape), &device())
}

fn ints<const D: usize>(v: &Value) -> Tensor<B, D, Int> {
    tensor::<D>(v).int()
}

fn flat(v: &Value) -> Vec<f64> {
    fn walk(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            other => out.push(other.as_f64().unwrap()),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

/// Within 1e-5 (absolute and relative), element by element.
fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let g = *g as f64;
        assert!(
            (g - w).abs() <= 1e-5 + 1e-5 * w.abs(),
            "{what}[{i}]: got {g}, PyTorch {w}"
        );
    }
}

fn value_and_grad<const D: usize>(loss: Tensor<B, 1>, wrt: &Tensor<B, D>) -> (Vec<f32>, Vec<f32>) {
    let value = loss.clone().into_data().to_vec::<f32>().unwrap();
    let grads = loss.backward();
    let grad = wrt
        .grad(&grads)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    (value, grad)
}

#[test]
fn decoupled_kd_matches_the_authors_code() {
    let c = &cases()["dkd"];
    for run in c["runs"].as_array().unwrap() {
        let s = tensor::<2>(&c["student"]).require_grad();
        let (a, b, t) = (
            run["alpha"].as_f64().unwrap(),
            run["beta"].as_f64().unwrap(),
            run["T"].as_f64().unwrap(),
        );
        let loss = dkd(
            s.clone(),
            tensor(&c["teacher"]),
            ints(&c["labels"]),
            a,
            b,
            t,
        );
        let (value, grad) = value_and_grad(loss, &s);
        let what = format!("dkd α={a} β={b} T={t}");
        assert_close(&value, &[run["value"].as_f64().unwrap()], &what);
        assert_close(
            &grad,
            &flat(&run["grad_student"]),
            &format!("d {what} / d s"),
        );
    }
}

/// The crate's attention transfer is the squared distance summed over positions (batch
/// mean): Zagoruyko & Komodakis' code's value times the number of positions.
#[test]
fn attention_transfer_matches_zagoruyko_and_komodakis() {
    let c = &cases()["attention_transfer"];
    let s = tensor::<3>(&c["student"]).require_grad();
    let positions = s.dims()[2] as f64;
    let loss = attention_transfer(s.clone(), tensor(&c["teacher"]));
    let (value, grad) = value_and_grad(loss, &s);
    assert_close(
        &value,
        &[c["value"].as_f64().unwrap()],
        "attention transfer",
    );
    assert_close(
        &[value[0] / positions as f32],
        &[c["paper_value"].as_f64().unwrap()],
        "attention transfer / positions",
    );
    assert_close(
        &grad,
        &flat(&c["grad_student"]),
        "d attention transfer / d s",
    );
}

/// The FitNets hint through `DistillLoss`'s projector: value, and the gradients reaching
/// the student's hidden states and the projector (which trains with the student).
#[test]
fn the_fitnets_hint_and_its_projector_match_pytorch() {
    let c = &cases()["hint"];
    let hs = tensor::<2>(&c["student"]).require_grad();
    let ht = tensor::<2>(&c["teacher"]);
    let [rows, sd] = hs.dims();
    let td = ht.dims()[1];
    let mut loss = DistillLossConfig::new()
        .with_hint(1.0)
        .init_with_projectors::<B>(&[(sd, td)], &device())
        .unwrap();
    // PyTorch stores the weight `[out, in]`, burn `[in, out]`.
    let weight = Param::from_tensor(tensor::<2>(&c["weight_out_in"]).transpose().require_grad());
    let bias = Param::from_tensor(tensor::<1>(&c["bias"]).require_grad());
    loss.projectors[0] = Some(Linear {
        weight: weight.clone(),
        bias: Some(bias.clone()),
    });
    let logits = Tensor::<B, 2>::zeros([rows, 3], &device());
    let out = loss
        .forward(
            DistillTargets::new(logits.clone(), logits).with_hidden(hs.clone(), ht),
            1,
        )
        .unwrap();
    let hint = out
        .terms
        .iter()
        .find(|(n, _)| *n == "hint")
        .unwrap()
        .1
        .clone();
    assert_close(
        &hint.clone().into_data().to_vec::<f32>().unwrap(),
        &[c["value"].as_f64().unwrap()],
        "hint",
    );
    let grads = hint.backward();
    let got = |t: Tensor<Inner, 2>| t.into_data().to_vec::<f32>().unwrap();
    assert_close(
        &got(hs.grad(&grads).unwrap()),
        &flat(&c["grad_student"]),
        "d hint / d h_s",
    );
    assert_close(
        &got(weight.val().grad(&grads).unwrap().transpose()),
        &flat(&c["grad_weight_out_in"]),
        "d hint / d W",
    );
    assert_close(
        &bias
            .val()
            .grad(&grads)
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap(),
        &flat(&c["grad_bias"]),
        "d hint / d b",
    );
}

/// Token-level KD averages over the tokens whose mask is 1 — Hugging Face's
/// `attention_mask`, as a tokenizer returns it — both as a function and through
/// `DistillLoss::forward_tokens`.
#[test]
fn masked_token_kd_matches_pytorch_with_hugging_faces_mask() {
    let c = &cases()["token_kd"];
    for run in c["runs"].as_array().unwrap() {
        let t = run["T"].as_f64().unwrap();
        let want = [run["value"].as_f64().unwrap()];
        let s = tensor::<3>(&c["student"]).require_grad();
        let mask = ints::<2>(&c["attention_mask"]);
        let loss = kd_kl_tokens(s.clone(), tensor(&c["teacher"]), Some(mask.clone()), t);
        let (value, grad) = value_and_grad(loss, &s);
        assert_close(&value, &want, &format!("token KD T={t}"));
        assert_close(
            &grad,
            &flat(&run["grad_student"]),
            &format!("d token KD T={t} / d s"),
        );
        let through_loss = DistillLossConfig::new()
            .with_temperature(t)
            .init::<B>(&device())
            .unwrap()
            .forward_tokens(s, tensor(&c["teacher"]), Some(mask), None, 1)
            .unwrap();
        assert_close(
            &through_loss.total.into_data().to_vec::<f32>().unwrap(),
            &want,
            &format!("forward_tokens T={t}"),
        );
    }
}

/// GKD's generalized Jensen–Shannon divergence for β from forward KL (0) to reverse KL (1).
#[test]
fn generalized_jsd_matches_pytorch_from_forward_to_reverse_kl() {
    let c = &cases()["gjsd"];
    for run in c["runs"].as_array().unwrap() {
        let (beta, t) = (run["beta"].as_f64().unwrap(), run["T"].as_f64().unwrap());
        let s = tensor::<3>(&c["student"]).require_grad();
        let loss = generalized_jsd_tokens(
            s.clone(),
            tensor(&c["teacher"]),
            Some(ints(&c["attention_mask"])),
            beta,
            t,
        );
        let (value, grad) = value_and_grad(loss, &s);
        let what = format!("generalized JSD β={beta} T={t}");
        assert_close(&value, &[run["value"].as_f64().unwrap()], &what);
        assert_close(
            &grad,
            &flat(&run["grad_student"]),
            &format!("d {what} / d s"),
        );
    }
}

/// Feature distillation between mapped layers, through the path a `Distiller` takes
/// (`LayerPairs::targets` → `DistillLoss` built for the pairs): TinyBERT's hidden-state MSE
/// with one projector per pair, its attention MSE and DistilBERT's cosine over the real
/// tokens of a padded batch, values and gradients.
#[test]
fn layer_terms_over_real_tokens_match_tinybert_and_distilbert() {
    let c = &cases()["layers"];
    let d = device();
    let mask = ints::<2>(&c["attention_mask"]);
    let padding = mask.equal_elem(0);
    let list = |v: &Value| -> Vec<Tensor<B, 3>> {
        v.as_array().unwrap().iter().map(tensor::<3>).collect()
    };
    let student_hidden: Vec<Tensor<B, 3>> = list(&c["student_hidden"])
        .into_iter()
        .map(|t| t.require_grad())
        .collect();
    let teacher_hidden = list(&c["teacher_hidden"]);
    let student_att = tensor::<4>(&c["student_attention"]).require_grad();
    let pair = |student, teacher| LayerPair { student, teacher };
    let pairs = LayerPairs {
        hidden: vec![pair(0, 0), pair(1, 1)],
        hidden_widths: vec![(6, 10), (6, 10)],
        attentions: vec![pair(1, 1)],
        maps: Vec::new(),
    };
    let mut loss = DistillLossConfig::new()
        .with_hint(1.0)
        .with_attention_mse(1.0)
        .init_for_layers::<B>(pairs.clone(), &d)
        .unwrap();
    let mut params = Vec::new();
    for k in 0..2 {
        // PyTorch stores the weight `[out, in]`, burn `[in, out]`.
        let w = Param::from_tensor(
            tensor::<2>(&c["weights_out_in"][k])
                .transpose()
                .require_grad(),
        );
        let b = Param::from_tensor(tensor::<1>(&c["biases"][k]).require_grad());
        loss.projectors[k] = Some(Linear {
            weight: w.clone(),
            bias: Some(b.clone()),
        });
        params.push((w, b));
    }
    let outputs = |hidden, attentions| LayerOutputs {
        hidden,
        attentions,
        maps: Vec::new(),
        padding: Some(padding.clone()),
    };
    let logits = Tensor::<B, 2>::zeros([2, 3], &d);
    let targets = pairs
        .targets(
            DistillTargets::new(logits.clone(), logits.clone()),
            outputs(student_hidden.clone(), vec![student_att.clone()]),
            outputs(
                teacher_hidden.clone(),
                vec![tensor::<4>(&c["teacher_attention"])],
            ),
        )
        .unwrap();
    let out = loss.forward(targets, 1).unwrap();
    let term = |name: &str| {
        out.terms
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
            .clone()
    };
    let value = |t: Tensor<B, 1>| t.into_data().to_vec::<f32>().unwrap();
    assert_close(&value(term("hint")), &[c["hint"].as_f64().unwrap()], "hint");
    assert_close(
        &value(term("attention_mse")),
        &[c["attention_mse"].as_f64().unwrap()],
        "attention MSE",
    );
    let grads = out.total.backward();
    let got = |t: Tensor<Inner, 3>| t.into_data().to_vec::<f32>().unwrap();
    for k in 0..2 {
        assert_close(
            &got(student_hidden[k].grad(&grads).unwrap()),
            &flat(&c["grad_hint_hidden"][k]),
            "d hint / d h_s",
        );
        let (w, b) = &params[k];
        assert_close(
            &w.val()
                .grad(&grads)
                .unwrap()
                .transpose()
                .into_data()
                .to_vec::<f32>()
                .unwrap(),
            &flat(&c["grad_hint_weights_out_in"][k]),
            "d hint / d W",
        );
        assert_close(
            &b.val()
                .grad(&grads)
                .unwrap()
                .into_data()
                .to_vec::<f32>()
                .unwrap(),
            &flat(&c["grad_hint_biases"][k]),
            "d hint / d b",
        );
    }
    assert_close(
        &student_att
            .grad(&grads)
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap(),
        &flat(&c["grad_attention_mse"]),
        "d attention MSE / d a_s",
    );

    // DistilBERT's cosine: student and teacher of one width, no projector.
    let cosine_hidden: Vec<Tensor<B, 3>> = list(&c["cosine_student_hidden"])
        .into_iter()
        .map(|t| t.require_grad())
        .collect();
    let same_width = LayerPairs {
        hidden: vec![pair(0, 0), pair(1, 1)],
        hidden_widths: vec![(10, 10), (10, 10)],
        ..LayerPairs::default()
    };
    let cosine = DistillLossConfig::new()
        .with_cosine(1.0)
        .init_for_layers::<B>(same_width.clone(), &d)
        .unwrap();
    assert!(cosine.projectors.is_empty());
    let targets = same_width
        .targets(
            DistillTargets::new(logits.clone(), logits),
            outputs(cosine_hidden.clone(), Vec::new()),
            outputs(teacher_hidden, Vec::new()),
        )
        .unwrap();
    let out = cosine.forward(targets, 1).unwrap();
    let term = out
        .terms
        .iter()
        .find(|(n, _)| *n == "cosine")
        .unwrap()
        .1
        .clone();
    assert_close(
        &value(term.clone()),
        &[c["cosine"].as_f64().unwrap()],
        "cosine",
    );
    let grads = term.backward();
    for k in 0..2 {
        assert_close(
            &got(cosine_hidden[k].grad(&grads).unwrap()),
            &flat(&c["grad_cosine_hidden"][k]),
            "d cosine / d h_s",
        );
    }
}
