use crate::common::*;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv1d, Conv1dConfig, Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::prelude::*;
use burn_transfer::adapter::{BottleneckConfig, CONFIG_FILE, LoraConfig, LoraModel, WEIGHTS_FILE};
use burn_transfer::prelude::*;

type Net = TransferModel<B, MlpBackbone<B>, LinearHead<B>>;

fn lora(model: Net) -> LoraModel<B, Net> {
    LoraModel::new(
        model,
        "default",
        LoraConfig::new(4, 8.0, ["backbone.layers.*"]),
    )
    .unwrap()
}

/// Gives every B factor non-zero values, as training would.
fn nudge(mut l: LoraModel<B, Net>) -> LoraModel<B, Net> {
    for w in &mut l.adapters[0].weights {
        let b = w.lora_b.val();
        w.lora_b = Param::from_tensor(Tensor::random(
            b.dims(),
            burn::tensor::Distribution::Normal(0.0, 0.1),
            &b.device(),
        ));
    }
    l
}

#[test]
fn a_new_adapter_computes_exactly_the_base_model() {
    let model = mlp_model();
    let x = batch::<B>(6, 8, 8, 4).inputs;
    let base_out = model.forward(x.clone()).into_data();
    let l = lora(model);
    assert_eq!(l.logits(x).into_data(), base_out);
}

#[test]
fn merged_equals_lora_and_the_base_is_never_written() {
    let model = mlp_model();
    let base_values = values::<B, _>(&model);
    let x = batch::<B>(6, 8, 8, 4).inputs;
    let l = nudge(lora(model));
    let with_lora: Vec<f32> = l.logits(x.clone()).into_data().to_vec().unwrap();
    let merged: Vec<f32> = l.merge().forward(x.clone()).into_data().to_vec().unwrap();
    assert!(
        with_lora
            .iter()
            .zip(&merged)
            .all(|(a, b)| (a - b).abs() < 1e-5)
    );
    let base_out: Vec<f32> = l.base.forward(x).into_data().to_vec().unwrap();
    assert_ne!(with_lora, base_out, "the nudged adapter changes the output");
    assert_eq!(
        values::<B, _>(&l.into_base()),
        base_values,
        "unmerge: the base is bitwise intact"
    );
}

#[test]
fn only_lora_factors_and_unfrozen_head_train() {
    let l = lora(mlp_model()).unfreeze_base("head").unwrap();
    let summary = l.param_summary();
    let trainable = summary.trainable_paths();
    assert!(
        trainable
            .iter()
            .all(|p| p.contains("lora_") || p.starts_with("base.head.")),
        "{trainable:?}"
    );
    // A, B: layer 0 (8→16) 4·8 + 16·4, layer 1 (16→16) 4·16 + 16·4; head 16·4 + 4.
    assert_eq!(summary.trainable(), 96 + 128 + 68);
    assert!(
        summary
            .totals_line()
            .starts_with("trainable params: 292 || all params: "),
        "{}",
        summary.totals_line()
    );

    let before = values::<B, _>(&l);
    let train = batches::<B>(2, 16, 8, 4);
    let outcome = quiet(
        FineTuner::<B>::new()
            .learning_rate(1e-2)
            .epochs(2)
            .monitor(Monitor::TrainLoss),
    )
    .fit(l, &train, None)
    .unwrap();
    for ((path, a), (_, b)) in before.iter().zip(values::<B, _>(&outcome.model)) {
        let moved = *a != b;
        let should = path.contains("lora_") || path.starts_with("base.head.");
        assert_eq!(moved, should, "{path}");
    }
}

#[test]
fn lora_errors_are_clear() {
    let err = LoraModel::new(
        mlp_model(),
        "a",
        LoraConfig::new(0, 8.0, ["backbone.layers.*"]),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("rank must be at least 1"), "{err}");
    let err = LoraModel::new(
        mlp_model(),
        "a",
        LoraConfig::new(9, 8.0, ["backbone.layers.0"]),
    )
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("8→16") && err.to_string().contains("at most 8"),
        "{err}"
    );
    let err = LoraModel::new(mlp_model(), "a", LoraConfig::new(2, 8.0, ["encoder.*"]))
        .err()
        .unwrap();
    assert!(
        matches!(err, TransferError::SelectorMatchedNothing { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("backbone.layers.0"), "{err}");
    let d = device();
    let conv1d: ConvNet<B> = ConvNet {
        conv: Conv2dConfig::new([2, 4], [3, 3]).init(&d),
        emb: EmbeddingConfig::new(10, 6).init(&d),
        c1: Conv1dConfig::new(2, 3, 3).init(&d),
    };
    let err = LoraModel::new(conv1d, "a", LoraConfig::new(1, 1.0, ["c1"]))
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("Conv1d") && err.to_string().contains("[3, 2, 3]"),
        "{err}"
    );
    let mut l = lora(mlp_model());
    assert!(
        l.add_adapter("default", LoraConfig::new(2, 4.0, ["head"]))
            .is_err()
    );
}

#[derive(Module, Debug)]
struct ConvNet<B: Backend> {
    conv: Conv2d<B>,
    emb: Embedding<B>,
    c1: Conv1d<B>,
}

#[test]
fn conv2d_and_embedding_weights_get_the_right_update() {
    let d = device();
    let net: ConvNet<B> = ConvNet {
        conv: Conv2dConfig::new([2, 4], [3, 3]).init(&d),
        emb: EmbeddingConfig::new(10, 6).init(&d),
        c1: Conv1dConfig::new(2, 3, 3).init(&d),
    };
    let w_conv = net.conv.weight.val();
    let w_emb = net.emb.weight.val();
    let mut l = LoraModel::new(net, "a", LoraConfig::new(2, 4.0, ["conv", "emb"])).unwrap();
    let targets: Vec<_> = l.adapters[0]
        .targets()
        .iter()
        .map(|t| (t.module.clone(), t.fans()))
        .collect();
    assert_eq!(
        targets,
        [
            ("conv".to_string(), (2 * 9, 4)),
            ("emb".to_string(), (10, 6))
        ]
    );
    for w in &mut l.adapters[0].weights {
        let b = w.lora_b.val();
        w.lora_b = Param::from_tensor(Tensor::ones(b.dims(), &d));
    }
    let eff = l.effective();
    let scale = 4.0 / 2.0;
    let (a0, b0) = (
        l.adapters[0].weights[0].lora_a.val(),
        l.adapters[0].weights[0].lora_b.val(),
    );
    let want_conv = w_conv + b0.matmul(a0).mul_scalar(scale).reshape([4, 2, 3, 3]);
    let (a1, b1) = (
        l.adapters[0].weights[1].lora_a.val(),
        l.adapters[0].weights[1].lora_b.val(),
    );
    let want_emb = w_emb + b1.matmul(a1).mul_scalar(scale).transpose();
    eff.conv
        .weight
        .val()
        .into_data()
        .assert_approx_eq::<f32>(&want_conv.into_data(), Default::default());
    eff.emb
        .weight
        .val()
        .into_data()
        .assert_approx_eq::<f32>(&want_emb.into_data(), Default::default());
}

#[test]
fn adapter_files_reload_bitwise_and_refuse_another_base() {
    let dir = tempfile::tempdir().unwrap();
    let base = mlp_model();
    let x = batch::<B>(6, 8, 8, 4).inputs;
    let l = nudge(lora(base.clone())).unfreeze_base("head").unwrap();
    // Change the head too, as training would.
    let mut l = l;
    l.base.head.linear.bias = Some(Param::from_tensor(Tensor::from_floats(
        [0.5, -0.5, 0.25, 0.0],
        &device(),
    )));
    let out = l.logits(x.clone()).into_data();
    l.save_adapter(dir.path()).unwrap();
    let config = std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap();
    for field in [
        "\"peft_type\": \"LORA\"",
        "\"r\": 4",
        "\"lora_alpha\": 8.0",
        "\"target_modules\"",
        "\"lora_dropout\"",
        "\"modules_to_save\": [\n    \"head.linear\"\n  ]",
        "\"backbone.layers.0\"",
    ] {
        assert!(config.contains(field), "{field} missing from {config}");
    }
    let loaded = LoraModel::load_adapter(base.clone(), dir.path()).unwrap();
    assert_eq!(
        loaded.logits(x.clone()).into_data(),
        out,
        "bitwise the same outputs"
    );

    let other = mlp_model(); // same architecture, other weights
    let err = LoraModel::<B, Net>::load_adapter(other, dir.path())
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("another base model")
            && msg.contains("backbone.layers.0.weight: different values"),
        "{msg}"
    );

    let bytes = std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap();
    for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 3] {
        std::fs::write(dir.path().join(WEIGHTS_FILE), &bytes[..cut]).unwrap();
        let err = LoraModel::<B, Net>::load_adapter(base.clone(), dir.path())
            .err()
            .unwrap();
        assert!(err.to_string().contains("adapter"), "{err}");
    }
    let mut flipped = bytes.clone();
    flipped[10] ^= 0xff;
    std::fs::write(dir.path().join(WEIGHTS_FILE), &flipped).unwrap();
    assert!(LoraModel::<B, Net>::load_adapter(base.clone(), dir.path()).is_err());
    std::fs::write(dir.path().join(CONFIG_FILE), "{ not json").unwrap();
    assert!(LoraModel::<B, Net>::load_adapter(base, dir.path()).is_err());
}

#[test]
fn several_adapters_switch_and_disable() {
    let base = mlp_model();
    let x = batch::<B>(6, 8, 8, 4).inputs;
    let base_out = base.forward(x.clone()).into_data();
    let mut l = nudge(lora(base));
    l.add_adapter("head_only", LoraConfig::new(2, 2.0, ["head.linear"]))
        .unwrap();
    let first = l.logits(x.clone()).into_data();
    assert_ne!(first, base_out);
    let l = l.set_active("head_only").unwrap();
    assert_eq!(
        l.logits(x.clone()).into_data(),
        base_out,
        "a fresh adapter starts at the base"
    );
    let trainable = l.param_summary().trainable_paths().join(" ");
    assert!(
        trainable.contains("adapters.1.") && !trainable.contains("adapters.0."),
        "{trainable}"
    );
    let l = l.set_active("default").unwrap();
    assert_eq!(l.logits(x.clone()).into_data(), first);
    let off = l.disable_adapters();
    assert_eq!(off.logits(x).into_data(), base_out);
    assert!(off.set_active("nope").is_err());
}

#[test]
fn a_bottleneck_adapter_starts_as_the_identity() {
    let d = device();
    let a = BottleneckConfig::new(16, 4).init::<B>(&d).unwrap();
    let x = batch::<B>(5, 16, 4, 4).inputs;
    assert_eq!(a.forward(x.clone()).into_data(), x.into_data());
    assert_eq!(a.num_params(), 16 * 4 + 4 + 4 * 16 + 16);
    assert!(BottleneckConfig::new(16, 0).init::<B>(&d).is_err());
}

#[test]
fn adapter_files_carry_the_statistics_of_a_trained_batchnorm() {
    let dir = tempfile::tempdir().unwrap();
    let d = device();
    let base =
        TransferModel::new(BnBackbone::<B>::new(&d), LinearHead::new(6, 4, &d).unwrap()).unwrap();
    // `clone` shares BatchNorm statistics in burn; a round trip through `valid` copies them.
    use burn::module::AutodiffModule;
    type Bn = TransferModel<B, BnBackbone<B>, LinearHead<B>>;
    let pristine = || -> Bn { Bn::from_inner(base.valid()) };
    let l = LoraModel::new(
        pristine(),
        "bn",
        LoraConfig::new(2, 4.0, ["backbone.linear"]),
    )
    .unwrap()
    .unfreeze_base("backbone.norm")
    .unwrap()
    .unfreeze_base("head")
    .unwrap();
    // Training on the autodiff backend moves the BatchNorm's running statistics.
    let outcome = quiet(
        FineTuner::<B>::new()
            .learning_rate(1e-2)
            .epochs(2)
            .monitor(Monitor::TrainLoss),
    )
    .fit(l, &batches::<B>(3, 16, 8, 4), None)
    .unwrap();
    let trained = outcome.model;
    let stats = trained.base.backbone.norm.running_mean.value().into_data();
    assert_ne!(stats, base.backbone.norm.running_mean.value().into_data());
    trained.save_adapter(dir.path()).unwrap();
    let config = std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap();
    assert!(config.contains("\"backbone.norm\""), "{config}");
    let loaded = LoraModel::load_adapter(pristine(), dir.path()).unwrap();
    assert_eq!(
        loaded.base.backbone.norm.running_mean.value().into_data(),
        stats
    );
    let x = batch::<Inner>(4, 8, 8, 4).inputs;
    assert_eq!(
        loaded.valid().logits(x.clone()).into_data(),
        trained.valid().logits(x).into_data()
    );
}
