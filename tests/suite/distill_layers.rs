//! Feature distillation through `Distiller::fit`: a BERT student learning a BERT teacher's
//! hidden states (through projectors) and attention maps, a small ResNet learning a wider
//! one's stage maps, an MLP learning one hidden layer; and every configuration the two
//! models cannot satisfy refused before the first batch is drawn.

use crate::common::*;
use burn::prelude::*;
use burn_transfer::distill::Distiller;
use burn_transfer::finetune::Monitor;
use burn_transfer::freeze::ToInner;
use burn_transfer::head::{Pooled, Pooling};
use burn_transfer::layer_outputs::{LayerOutputs, LayerRequest, LayerSpec};
use burn_transfer::loss::{DistillLossConfig, LayerMap, LayerPair};
use burn_transfer::models::{
    Bert, BertConfig, BertInput, MobileNetV2, MobileNetV2Config, ResNet, ResNetConfig, ViT,
    ViTConfig, WhisperEncoder, WhisperEncoderConfig,
};
use burn_transfer::prelude::*;
use std::cell::Cell;

type BertClassifier<Bk> = TransferModel<Bk, Pooled<Bk, Bert<Bk>>, LinearHead<Bk>>;

fn bert_classifier<Bk: Backend>(layers: usize, hidden: usize, heads: usize) -> BertClassifier<Bk> {
    let config = BertConfig {
        vocab_size: 40,
        max_position_embeddings: 16,
        hidden_dropout_prob: 0.0,
        attention_probs_dropout_prob: 0.0,
        ..BertConfig::all_minilm_l6_v2()
            .shallower(layers)
            .narrower(hidden, heads)
    };
    let device = Default::default();
    let bert = Bert::new(&config, &device).unwrap();
    TransferModel::new(
        Pooled::new(bert, Pooling::Mean).unwrap(),
        LinearHead::new(hidden, 3, &device).unwrap(),
    )
    .unwrap()
}

/// Padded token batches: the second row of each is two tokens shorter.
fn token_batches(count: usize) -> Vec<ClassificationBatch<B, BertInput<B>>> {
    let d = device();
    (0..count)
        .map(|i| {
            let ids: Vec<i64> = (0..12).map(|k| ((i * 7 + k * 3) % 37 + 2) as i64).collect();
            let mask = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0];
            let mask: Vec<i64> = mask[..6].iter().chain(&mask[8..]).copied().collect();
            let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [2, 6]), &d);
            let mask = Tensor::<B, 2, Int>::from_data(TensorData::new(mask, [2, 6]), &d);
            let labels = Tensor::<B, 1, Int>::from_ints([(i % 3) as i32, ((i + 1) % 3) as i32], &d);
            ClassificationBatch::new(BertInput::with_mask(ids, mask), labels)
        })
        .collect()
}

struct Watched<T> {
    batches: Vec<T>,
    drawn: Cell<usize>,
}

impl<T: Clone + 'static> BatchSource<T> for Watched<T> {
    fn epoch(&self) -> Box<dyn Iterator<Item = (T, f64)> + '_> {
        self.drawn.set(self.drawn.get() + 1);
        self.batches.epoch()
    }
}

fn tuner(epochs: usize) -> FineTuner<B> {
    quiet(
        FineTuner::<B>::new()
            .epochs(epochs)
            .learning_rate(1e-2)
            .monitor(Monitor::TrainLoss),
    )
}

fn term(outcome_terms: &std::collections::BTreeMap<String, f64>, name: &str) -> f64 {
    *outcome_terms
        .get(name)
        .unwrap_or_else(|| panic!("no `{name}` term in {outcome_terms:?}"))
}

#[test]
fn a_bert_student_learns_its_teachers_hidden_states_and_attention_maps() {
    B::seed(&device(), 11);
    let teacher = bert_classifier::<Inner>(4, 32, 2);
    let student = bert_classifier::<B>(2, 16, 2);
    let loss = DistillLossConfig::new()
        .with_hint(1.0)
        .with_attention_mse(10.0);
    let distiller = Distiller::new(teacher, loss, tuner(8)).unwrap();
    let pairs = distiller.layer_pairs(&student).unwrap();
    let numbers: Vec<(usize, usize)> = pairs
        .hidden
        .iter()
        .map(|p| (p.student, p.teacher))
        .collect();
    assert_eq!(numbers, [(0, 0), (1, 2), (2, 4)]);
    assert_eq!(pairs.hidden_widths, [(16, 32); 3]);
    assert_eq!(
        pairs.attentions,
        [
            LayerPair {
                student: 1,
                teacher: 2
            },
            LayerPair {
                student: 2,
                teacher: 4
            }
        ]
    );
    let outcome = distiller.fit(student, &token_batches(4), None).unwrap();
    let (first, last) = (
        &outcome.history.epochs[0].terms,
        &outcome.history.epochs.last().unwrap().terms,
    );
    for name in ["kd", "ce", "hint", "attention_mse"] {
        assert!(
            term(last, name) < term(first, name),
            "`{name}` did not fall: {first:?} → {last:?}"
        );
    }
}

#[test]
fn a_small_resnet_learns_a_wider_ones_stage_maps_by_attention_transfer() {
    B::seed(&device(), 12);
    let d = device();
    let teacher: TransferModel<Inner, ResNet<Inner>, LinearHead<Inner>> =
        TransferModel::with_linear_head(
            ResNet::new(&ResNetConfig::student(16), &d).unwrap(),
            3,
            &d,
        )
        .unwrap();
    let student: TransferModel<B, ResNet<B>, LinearHead<B>> =
        TransferModel::with_linear_head(ResNet::new(&ResNetConfig::student(8), &d).unwrap(), 3, &d)
            .unwrap();
    let distiller = Distiller::new(
        teacher,
        DistillLossConfig::new().with_attention(100.0),
        tuner(6),
    )
    .unwrap();
    assert_eq!(distiller.layer_pairs(&student).unwrap().maps.len(), 4);
    let images = |seed| {
        Tensor::<B, 4>::random(
            [4, 3, 32, 32],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &d,
        )
        .add_scalar(seed as f32 * 0.01)
    };
    let train: Vec<_> = (0..2)
        .map(|i| ClassificationBatch::new(images(i), Tensor::from_ints([0, 1, 2, i], &d)))
        .collect();
    let outcome = distiller.fit(student, &train, None).unwrap();
    let (first, last) = (
        term(&outcome.history.epochs[0].terms, "attention"),
        term(&outcome.history.epochs.last().unwrap().terms, "attention"),
    );
    assert!(
        last < first,
        "attention transfer did not fall: {first} → {last}"
    );
}

#[test]
fn an_mlp_learns_one_hidden_layer_through_its_projector() {
    B::seed(&device(), 13);
    let d = device();
    let teacher: TransferModel<Inner, MlpBackbone<Inner>, LinearHead<Inner>> =
        TransferModel::with_linear_head(MlpBackbone::new(&[8, 32, 32], &d).unwrap(), 4, &d)
            .unwrap();
    let student =
        TransferModel::with_linear_head(MlpBackbone::new(&[8, 12], &d).unwrap(), 4, &d).unwrap();
    let loss = DistillLossConfig::new()
        .with_hint(1.0)
        .with_layer_map(LayerMap::Pairs(vec![(1, 2)]));
    let distiller = Distiller::new(teacher, loss, tuner(10)).unwrap();
    let outcome = distiller
        .fit(student, &batches::<B>(2, 16, 8, 4), None)
        .unwrap();
    let (first, last) = (
        term(&outcome.history.epochs[0].terms, "hint"),
        term(&outcome.history.epochs.last().unwrap().terms, "hint"),
    );
    assert!(
        last < 0.8 * first,
        "the hint did not fall: {first} → {last}"
    );
}

/// Each configuration the two models cannot satisfy is an error from `fit` before any
/// batch is drawn (and from `layer_pairs`, which a user can call when building the run).
#[test]
fn an_unsatisfiable_layer_configuration_is_refused_before_the_first_batch() {
    let teacher = || bert_classifier::<Inner>(2, 32, 4);
    let cases: Vec<(DistillLossConfig, BertClassifier<B>, &str)> = vec![
        // Three student layers cannot map uniformly onto two.
        (
            DistillLossConfig::new().with_hint(1.0),
            bert_classifier(3, 16, 2),
            "at most the teacher's blocks",
        ),
        // Cosine compares one width.
        (
            DistillLossConfig::new()
                .with_cosine(1.0)
                .with_layer_map(LayerMap::Last),
            bert_classifier(2, 16, 2),
            "16 wide",
        ),
        // Attention maps compare head by head.
        (
            DistillLossConfig::new().with_attention_mse(1.0),
            bert_classifier(2, 16, 2),
            "2 heads",
        ),
        // A pair beyond the student's layers.
        (
            DistillLossConfig::new()
                .with_hint(1.0)
                .with_layer_map(LayerMap::Pairs(vec![(3, 1)])),
            bert_classifier(2, 16, 2),
            "pair (3, 1)",
        ),
        // Stage maps BERT does not have.
        (
            DistillLossConfig::new().with_attention(1.0),
            bert_classifier(2, 32, 4),
            "stage maps",
        ),
    ];
    for (config, student, expected) in cases {
        let distiller = Distiller::new(teacher(), config, tuner(1)).unwrap();
        let early = distiller.layer_pairs(&student).unwrap_err();
        assert!(early.to_string().contains(expected), "{early}");
        let train = Watched {
            batches: token_batches(1),
            drawn: Cell::new(0),
        };
        let err = distiller.fit(student, &train, None).unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
        assert_eq!(train.drawn.get(), 0, "no batch may be drawn");
    }

    // A model that exposes no intermediate output (the default of `Classifier`).
    let d = device();
    let distiller = Distiller::new(
        TransferModel::with_linear_head(MlpBackbone::<Inner>::new(&[8, 16], &d).unwrap(), 4, &d)
            .unwrap(),
        DistillLossConfig::new().with_hint(1.0),
        tuner(1),
    )
    .unwrap();
    let err = distiller.layer_pairs(&linear_model()).unwrap_err();
    assert!(err.to_string().contains("student does not expose"), "{err}");
}

/// The cached-teacher mode has logits only: feature terms are refused there.
#[test]
fn a_cached_teacher_cannot_feed_feature_terms() {
    let d = device();
    let teacher: TransferModel<Inner, MlpBackbone<Inner>, LinearHead<Inner>> =
        TransferModel::with_linear_head(MlpBackbone::new(&[8, 16], &d).unwrap(), 4, &d).unwrap();
    let distiller =
        Distiller::new(teacher, DistillLossConfig::new().with_hint(1.0), tuner(1)).unwrap();
    let train = batches::<B>(1, 8, 8, 4);
    let cached = distiller
        .cache_teacher(&train)
        .attach(train.clone(), |b| b.targets.dims()[0])
        .unwrap();
    let err = distiller.fit(mlp_model(), &cached, None).unwrap_err();
    assert!(err.to_string().contains("hint"), "{err}");
}

/// What each model's `layer_spec` promises is what its forward pass gives.
#[test]
fn every_models_layer_spec_describes_its_outputs() {
    let d = device();
    let all = LayerRequest {
        hidden: true,
        attentions: true,
        maps: true,
    };
    let images = Tensor::<Inner, 4>::zeros([1, 3, 64, 64], &d);
    let resnet: TransferModel<Inner, ResNet<Inner>, LinearHead<Inner>> =
        TransferModel::with_linear_head(ResNet::new(&ResNetConfig::student(8), &d).unwrap(), 2, &d)
            .unwrap();
    let mobilenet: TransferModel<Inner, MobileNetV2<Inner>, LinearHead<Inner>> =
        TransferModel::with_linear_head(
            MobileNetV2::new(&MobileNetV2Config::student(), &d).unwrap(),
            2,
            &d,
        )
        .unwrap();
    let maps = |spec: LayerSpec, (logits, out): (Tensor<Inner, 2>, LayerOutputs<Inner>)| {
        assert_eq!(logits.dims(), [1, 2]);
        assert_eq!(out.maps.len(), spec.maps.len());
        for (map, want) in out.maps.iter().zip(&spec.maps) {
            let [_, c, h, w] = map.dims();
            assert_eq!(
                (c, h * want.stride, w * want.stride),
                (want.channels, 64, 64)
            );
        }
    };
    maps(
        resnet.layer_spec(),
        resnet.logits_with_layers(images.clone(), all),
    );
    maps(
        mobilenet.layer_spec(),
        mobilenet.logits_with_layers(images, all),
    );
    // The plain forward and the one with layers give the same logits.
    let x = Tensor::<Inner, 4>::ones([1, 3, 64, 64], &d);
    resnet
        .logits(x.clone())
        .into_data()
        .assert_approx_eq::<f32>(
            &resnet.logits_with_layers(x, all).0.into_data(),
            Default::default(),
        );

    // The transformers over images and audio: embeddings + every layer, every attention map.
    let vit = ViT::<Inner>::new(
        &ViTConfig::default()
            .shallower(2)
            .narrower(16, 2)
            .for_images(32, 8, 3),
        false,
        &d,
    )
    .unwrap();
    assert_eq!(vit.layer_spec(), LayerSpec::transformer(2, 16, 2));
    let (features, out) = vit.features_with_layers(Tensor::zeros([1, 3, 32, 32], &d), all);
    assert_eq!(features.dims(), [1, 16]);
    assert_eq!((out.hidden.len(), out.attentions.len()), (3, 2));
    assert_eq!(out.attentions[1].dims(), [1, 2, 17, 17]);
    let whisper = WhisperEncoder::<Inner>::new(
        &WhisperEncoderConfig::default()
            .shallower(2)
            .narrower(16, 4)
            .for_seconds(1),
        &d,
    )
    .unwrap();
    assert_eq!(whisper.layer_spec(), LayerSpec::transformer(2, 16, 4));
    let (_, out) = whisper.features_with_layers(Tensor::zeros([1, 80, 100], &d), all);
    assert_eq!((out.hidden.len(), out.attentions.len()), (3, 2));
    assert_eq!(out.hidden[2].dims(), [1, 50, 16]);

    let bert = bert_classifier::<Inner>(3, 16, 2);
    let spec = bert.layer_spec();
    assert_eq!(spec, LayerSpec::transformer(3, 16, 2));
    let input = token_batches(1).remove(0).inputs.to_inner();
    let (_, out) = bert.logits_with_layers(input, all);
    assert_eq!(out.hidden.len(), 4);
    assert_eq!(out.attentions.len(), 3);
    assert_eq!(out.hidden[0].dims(), [2, 6, 16]);
    assert_eq!(out.attentions[0].dims(), [2, 2, 6, 6]);
    assert!(out.padding.is_some());
}

/// A LoRA student distils its features too: the adapter's layers learn the teacher's hidden
/// states, and only the adapter and the head train.
#[test]
fn a_lora_student_learns_hidden_states_through_its_adapter() {
    use burn_transfer::adapter::{LoraConfig, LoraModel};
    B::seed(&device(), 14);
    let teacher = bert_classifier::<Inner>(2, 16, 2);
    let student = LoraModel::new(
        bert_classifier::<B>(2, 16, 2),
        "kd",
        LoraConfig::new(4, 8.0, ["*.query", "*.value"]),
    )
    .unwrap()
    .unfreeze_base("head")
    .unwrap();
    assert_eq!(student.layer_spec(), teacher.layer_spec());
    let loss = DistillLossConfig::new()
        .with_hint(1.0)
        .with_layer_map(LayerMap::Last);
    let outcome = Distiller::new(teacher, loss, tuner(6))
        .unwrap()
        .fit(student, &token_batches(3), None)
        .unwrap();
    let (first, last) = (
        term(&outcome.history.epochs[0].terms, "hint"),
        term(&outcome.history.epochs.last().unwrap().terms, "hint"),
    );
    assert!(last < first, "the hint did not fall: {first} → {last}");
}
