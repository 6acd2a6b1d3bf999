use super::*;
use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Distribution, Tolerance};

type N = NdArray;
type A = Autodiff<NdArray>;

fn tiny() -> WhisperEncoderConfig {
    WhisperEncoderConfig::whisper_tiny()
        .for_seconds(1)
        .shallower(2)
        .narrower(16, 4)
}

fn features<B: Backend>(n: usize, frames: usize) -> Tensor<B, 3> {
    Tensor::random(
        [n, 80, frames],
        Distribution::Normal(0.0, 1.0),
        &Default::default(),
    )
}

#[test]
fn outputs_agree_with_and_without_attention_maps() {
    let encoder = WhisperEncoder::<N>::new(&tiny(), &Default::default()).unwrap();
    let x = features::<N>(2, 100);
    let plain = encoder.forward(x.clone(), false);
    let mapped = encoder.forward(x, true);
    assert!(plain.attentions.is_empty());
    assert_eq!(mapped.attentions[1].dims(), [2, 4, 50, 50]);
    assert_eq!(plain.hidden_states.len(), 3);
    plain
        .last_hidden_state
        .clone()
        .into_data()
        .assert_approx_eq::<f32>(
            &mapped.last_hidden_state.into_data(),
            Tolerance::rel_abs(1e-4, 1e-5),
        );
    // The last hidden state is the normed output, as transformers returns it.
    plain.hidden_states[2]
        .clone()
        .into_data()
        .assert_eq(&plain.last_hidden_state.into_data(), true);
}

/// The positions are Whisper's fixed sinusoids and get no gradient; the layers do. Shorter
/// clips than the table covers run on its first positions.
#[test]
fn positions_are_fixed_sinusoids_and_shorter_clips_run() {
    let encoder = WhisperEncoder::<A>::new(&tiny(), &Default::default()).unwrap();
    let table = encoder.embed_positions.weight.val().into_data();
    let table = table.to_vec::<f32>().unwrap();
    // Position 0: sines 0, cosines 1; position 1, channel 0: sin(1).
    assert!(table[..8].iter().all(|&v| v == 0.0) && table[8..16].iter().all(|&v| v == 1.0));
    assert!((table[16] - 1f32.sin()).abs() < 1e-6);
    let out = encoder.forward(features::<A>(1, 61), false);
    assert_eq!(out.last_hidden_state.dims(), [1, 31, 16]);
    let grads = out.last_hidden_state.powi_scalar(2).mean().backward();
    assert!(encoder.embed_positions.weight.grad(&grads).is_none());
    assert!(encoder.conv1.weight.grad(&grads).is_some());
    assert!(
        encoder.layers[0]
            .self_attn
            .k_proj
            .weight
            .grad(&grads)
            .is_some()
    );
    assert!(encoder.layers[0].self_attn.k_proj.bias.is_none());
}

#[test]
fn feature_batches_are_checked_before_they_run() {
    let encoder = WhisperEncoder::<N>::new(&tiny(), &Default::default()).unwrap();
    let device = Default::default();
    for (x, what) in [
        (
            Tensor::<N, 3>::zeros([0, 80, 100], &device),
            "at least one clip",
        ),
        (Tensor::zeros([1, 128, 100], &device), "80"),
        (Tensor::zeros([1, 80, 101], &device), "cover 100"),
    ] {
        let err = encoder.check_input(&x).unwrap_err().to_string();
        assert!(err.contains(what), "{err}");
    }
    encoder.check_input(&features::<N>(1, 100)).unwrap();
}

#[test]
fn keep_layers_copies_the_chosen_layers() {
    let teacher = WhisperEncoder::<N>::new(&tiny().shallower(4), &Default::default()).unwrap();
    let student = teacher.keep_layers(&[1, 3]).unwrap();
    assert_eq!(student.num_layers(), 2);
    student.layers[1]
        .fc1
        .weight
        .val()
        .into_data()
        .assert_eq(&teacher.layers[3].fc1.weight.val().into_data(), true);
    assert!(teacher.keep_layers(&[]).is_err());
    assert!(teacher.keep_layers(&[4]).is_err());
}

/// A new head on the mean-pooled encoder trains through the encoder.
#[test]
fn a_classifier_on_the_pooled_encoder_trains() {
    let device = Default::default();
    let encoder = WhisperEncoder::<A>::new(&tiny(), &device).unwrap();
    let model = crate::head::TransferModel::with_linear_head(encoder, 3, &device).unwrap();
    use crate::task::Classifier;
    let logits = model.logits(features::<A>(2, 100));
    assert_eq!(logits.dims(), [2, 3]);
    let grads = logits.sum().backward();
    assert!(model.backbone.layers[1].fc2.weight.grad(&grads).is_some());
}
