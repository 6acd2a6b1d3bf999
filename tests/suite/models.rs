//! Built-in architectures: parameter counts equal to torchvision's, loading of state dicts in
//! torchvision's layout, and the real checkpoints (MiniLM, MobileNetV2) when
//! `scripts/fetch-weights.sh` has put them in place.

use crate::common::{Inner, device, real_weights};
use crate::import::{f32_bytes, write_raw};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::{Distribution, Tolerance};
use burn_transfer::import::{ImportOptions, import_weights};
use burn_transfer::models::bert::bert_import_options;
use burn_transfer::models::mobilenet_v2::mobilenet_v2_import_options;
use burn_transfer::models::{
    Bert, BertConfig, BertTokenizer, MobileNetV2, MobileNetV2Config, ResNet, ResNetConfig,
};
use burn_transfer::prelude::*;
use safetensors::Dtype;
use std::path::Path;

#[test]
fn parameter_counts_equal_torchvisions() {
    let d = device();
    let r18 = ResNet::<Inner>::new(&ResNetConfig::resnet18(), &d).unwrap();
    let r18 = TransferModel::with_linear_head(r18, 1000, &d).unwrap();
    let r50 = ResNet::<Inner>::new(&ResNetConfig::resnet50(), &d).unwrap();
    let r50 = TransferModel::with_linear_head(r50, 1000, &d).unwrap();
    let mb = MobileNetV2::<Inner>::new(&MobileNetV2Config::default(), &d).unwrap();
    let mb = TransferModel::with_linear_head(mb, 1000, &d).unwrap();
    // torchvision: sum(p.numel() for p in model.parameters()) (buffers excluded).
    assert_eq!(r18.param_summary().total(), 11_689_512);
    assert_eq!(r50.param_summary().total(), 25_557_032);
    assert_eq!(mb.param_summary().total(), 3_504_872);
    let minilm = Bert::<Inner>::new(&BertConfig::all_minilm_l6_v2(), &d).unwrap();
    assert_eq!(minilm.param_summary().total(), 22_713_216);
}

/// A ResNet state dict exactly as torchvision names and shapes it (written here without
/// torch, from torchvision's module structure), with distinct values per tensor.
fn torchvision_resnet(config: &ResNetConfig, classes: usize) -> Vec<(String, Vec<usize>)> {
    let mut keys = Vec::new();
    let bn = |keys: &mut Vec<(String, Vec<usize>)>, name: &str, c: usize| {
        for p in ["weight", "bias", "running_mean", "running_var"] {
            keys.push((format!("{name}.{p}"), vec![c]));
        }
        keys.push((format!("{name}.num_batches_tracked"), vec![]));
    };
    let w = config.base_width;
    let exp = if config.bottleneck { 4 } else { 1 };
    keys.push(("conv1.weight".into(), vec![w, 3, 7, 7]));
    bn(&mut keys, "bn1", w);
    let mut input = w;
    for (s, &blocks) in config.layers.iter().enumerate() {
        let planes = w << s;
        for i in 0..blocks {
            let p = format!("layer{}.{i}", s + 1);
            if config.bottleneck {
                keys.push((format!("{p}.conv1.weight"), vec![planes, input, 1, 1]));
                bn(&mut keys, &format!("{p}.bn1"), planes);
                keys.push((format!("{p}.conv2.weight"), vec![planes, planes, 3, 3]));
                bn(&mut keys, &format!("{p}.bn2"), planes);
                keys.push((
                    format!("{p}.conv3.weight"),
                    vec![planes * exp, planes, 1, 1],
                ));
                bn(&mut keys, &format!("{p}.bn3"), planes * exp);
            } else {
                keys.push((format!("{p}.conv1.weight"), vec![planes, input, 3, 3]));
                bn(&mut keys, &format!("{p}.bn1"), planes);
                keys.push((format!("{p}.conv2.weight"), vec![planes, planes, 3, 3]));
                bn(&mut keys, &format!("{p}.bn2"), planes);
            }
            if i == 0 && (s > 0 || input != planes * exp) {
                keys.push((
                    format!("{p}.downsample.0.weight"),
                    vec![planes * exp, input, 1, 1],
                ));
                bn(&mut keys, &format!("{p}.downsample.1"), planes * exp);
            }
            input = planes * exp;
        }
    }
    keys.push(("fc.weight".into(), vec![classes, input]));
    keys.push(("fc.bias".into(), vec![classes]));
    keys
}

/// Distinct per tensor and element; small weights (so 50 layers stay finite), positive
/// running variances.
fn values_for(index: usize, n: usize, key: &str) -> Vec<f32> {
    let base = if key.ends_with("running_var")
        || key.ends_with(".weight")
            && !key.contains("conv")
            && !key.contains("downsample.0")
            && !key.starts_with("fc")
    {
        1.0
    } else {
        0.0
    };
    (0..n)
        .map(|i| base + 0.05 * ((index * 31 + i) as f32 * 0.61).sin())
        .collect()
}

fn write_state_dict(path: &Path, keys: &[(String, Vec<usize>)]) {
    let tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = keys
        .iter()
        .enumerate()
        .map(|(i, (k, s))| {
            if k.ends_with("num_batches_tracked") {
                (
                    k.as_str(),
                    Dtype::I64,
                    s.clone(),
                    100i64.to_le_bytes().to_vec(),
                )
            } else {
                let n = s.iter().product();
                (
                    k.as_str(),
                    Dtype::F32,
                    s.clone(),
                    f32_bytes(&values_for(i, n, k)),
                )
            }
        })
        .collect();
    write_raw(path, &tensors);
}

fn file_tensor(keys: &[(String, Vec<usize>)], key: &str) -> Vec<f32> {
    let (i, (_, s)) = keys
        .iter()
        .enumerate()
        .find(|(_, (k, _))| k == key)
        .unwrap();
    values_for(i, s.iter().product(), key)
}

#[test]
fn resnet_18_and_50_load_torchvision_state_dicts_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let d = device();
    // ResNet-50's structure (bottlenecks, 3-4-6-3) at 1/8 width keeps the file small; the
    // names and layouts are torchvision's.
    for (name, config) in [
        (
            "resnet18",
            ResNetConfig {
                base_width: 8,
                ..ResNetConfig::resnet18()
            },
        ),
        (
            "resnet50",
            ResNetConfig {
                base_width: 8,
                ..ResNetConfig::resnet50()
            },
        ),
    ] {
        let keys = torchvision_resnet(&config, 1000);
        let path = dir.path().join(format!("{name}.safetensors"));
        write_state_dict(&path, &keys);
        let (model, report) = ResNet::<Inner>::pretrained(&config, &path, 1000, &d).unwrap();
        assert!(report.is_clean(), "{name}: {report}");
        let batches_tracked = keys.iter().filter(|(k, _)| k.ends_with("tracked")).count();
        assert_eq!(report.loaded.len() + batches_tracked, keys.len(), "{name}");

        let down = &model.backbone.layer2[0].downsample.as_ref().unwrap();
        let got = down.conv.weight.val().into_data().to_vec::<f32>().unwrap();
        assert_eq!(
            got,
            file_tensor(&keys, "layer2.0.downsample.0.weight"),
            "{name}"
        );
        let var = down
            .bn
            .running_var
            .value()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(var, file_tensor(&keys, "layer2.0.downsample.1.running_var"));
        // fc: torch [1000, feat] → burn [feat, 1000].
        let fc = file_tensor(&keys, "fc.weight");
        let feat = config.feature_dim();
        let head = model
            .head
            .linear
            .weight
            .val()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(head[1], fc[feat], "burn[0, 1] = torch[1, 0]");

        // The seed's operation: fc 1000 → 5 in one call; the body is untouched.
        let before = model.backbone.conv1.weight.val().into_data();
        let model = model.replace_linear_head(5, &d).unwrap();
        assert_eq!(model.backbone.conv1.weight.val().into_data(), before);
        let logits = model.forward(Tensor::ones([2, 3, 64, 64], &d));
        assert_eq!(logits.dims(), [2, 5]);
        let values = logits.into_data().to_vec::<f32>().unwrap();
        assert!(values.iter().all(|v| v.is_finite()));
    }

    // A ResNet-18 file into a ResNet-50 is an error naming the keys, never a panic.
    let r50 = ResNetConfig {
        base_width: 8,
        ..ResNetConfig::resnet50()
    };
    let err = ResNet::<Inner>::pretrained(&r50, dir.path().join("resnet18.safetensors"), 1000, &d)
        .unwrap_err()
        .to_string();
    assert!(err.contains("conv3"), "{err}");
    assert!(err.contains("shape mismatch"), "{err}");
}

#[test]
fn minilm_reproduces_sentence_transformers_embeddings() {
    let Some(dir) = real_weights("all-MiniLM-L6-v2") else {
        return;
    };
    let d = device();
    let (bert, report) = Bert::<Inner>::from_pretrained(&dir, &d).unwrap();
    assert_eq!(report.loaded.len(), 103, "{report}");
    assert_eq!(report.ignored, vec!["embeddings.position_ids"]);
    let tokenizer = BertTokenizer::from_file(dir.join("tokenizer.json"), 128).unwrap();
    assert_eq!(
        tokenizer.encode("this movie is really good").unwrap(),
        vec![101, 2023, 3185, 2003, 2428, 2204, 102]
    );
    // Two sentences of different lengths in one padded batch: the mask must make padding
    // irrelevant.
    let input = tokenizer
        .batch::<Inner>(
            &["A man is eating food.", "A man is eating a piece of bread."],
            &d,
        )
        .unwrap();
    let unit = bert.sentence_embeddings(input);
    let rows = unit.into_data().to_vec::<f32>().unwrap();
    let (a, b) = rows.split_at(384);
    let cos: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    assert!((cos - 0.7553).abs() < 1e-4, "cos = {cos}");

    // The tokenizer file is required, and a missing one says so.
    let err = BertTokenizer::from_file(dir.join("missing.json"), 128).unwrap_err();
    assert!(err.to_string().contains("missing.json"), "{err}");
}

#[test]
fn bert_checkpoint_keys_and_students() {
    // A tiny BERT saved under Hugging Face names (as `transformers` writes them, with the
    // `bert.` prefix of a task model) loads strictly.
    let d = device();
    let config = BertConfig::all_minilm_l6_v2().shallower(2).narrower(16, 4);
    let bert = Bert::<Inner>::new(&config, &d).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.safetensors");
    burn_transfer::checkpoint::save_pytorch_safetensors(&bert, &ours).unwrap();
    let hf = dir.path().join("hf.safetensors");
    let st = std::fs::read(&ours).unwrap();
    let parsed = safetensors::SafeTensors::deserialize(&st).unwrap();
    let renamed: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = parsed
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let k = format!("bert.{k}")
                .replace(".layer_norm.", ".LayerNorm.")
                .replace(".self_attention.", ".self.");
            (k, v.dtype(), v.shape().to_vec(), v.data().to_vec())
        })
        .collect();
    assert!(
        renamed
            .iter()
            .any(|(k, ..)| k == "bert.encoder.layer.1.attention.self.query.weight")
    );
    let refs: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = renamed
        .iter()
        .map(|(k, d, s, b)| (k.as_str(), *d, s.clone(), b.clone()))
        .collect();
    write_raw(&hf, &refs);
    let fresh = Bert::<Inner>::new(&config, &d).unwrap();
    let (loaded, report) = import_weights(
        fresh,
        &hf,
        &bert_import_options().unwrap().with_strict(true),
    )
    .unwrap();
    assert!(report.is_clean(), "{report}");
    let ids = Tensor::<Inner, 2, Int>::from_ints([[101, 7, 9, 102]], &d);
    let input = burn_transfer::models::BertInput::new(ids);
    let a = bert.forward(input.clone(), true);
    let b = loaded.forward(input.clone(), true);
    assert_eq!(
        a.last_hidden_state.into_data(),
        b.last_hidden_state.into_data()
    );
    assert_eq!(b.hidden_states.len(), 3);
    assert_eq!(b.attentions.len(), 2);
    assert_eq!(b.attentions[0].dims(), [1, 4, 4, 4]);

    // DistilBERT-style student: every other layer, exact weights.
    let student = loaded.keep_layers(&[1]).unwrap();
    assert_eq!(student.num_layers(), 1);
    assert_eq!(
        student.encoder.layer[0]
            .output
            .dense
            .weight
            .val()
            .into_data(),
        loaded.encoder.layer[1]
            .output
            .dense
            .weight
            .val()
            .into_data()
    );
    assert!(loaded.keep_layers(&[5]).is_err());
    assert!(loaded.keep_layers(&[]).is_err());
}

#[test]
fn mobilenet_v2_loads_torchvisions_imagenet_checkpoint() {
    let Some(path) = real_weights("mobilenet_v2-b0353104.pth") else {
        return;
    };
    let d = device();
    let (model, report) = MobileNetV2::<Inner>::imagenet(&path, &d).unwrap();
    // 314 entries: 262 parameters and running statistics, 52 `num_batches_tracked`.
    assert_eq!(report.loaded.len(), 262, "{report}");
    assert_eq!(report.ignored.len(), 52);
    // ImageNet statistics are in the running stats (not the fresh 0 / 1).
    let var = model
        .backbone
        .stem
        .bn
        .running_var
        .value()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert!(var.iter().any(|v| (v - 1.0).abs() > 0.1));
    let logits = model.forward(Tensor::zeros([1, 3, 64, 64], &d));
    assert_eq!(logits.dims(), [1, 1000]);

    // The seed's operation on the real model, and a student configuration.
    let model = model.replace_linear_head(5, &d).unwrap();
    assert_eq!(model.head.num_outputs(), 5);
    let student = MobileNetV2::<Inner>::new(&MobileNetV2Config::student(), &d).unwrap();
    assert!(student.param_summary().total() < model.backbone.param_summary().total() / 3);
    let _ = mobilenet_v2_import_options(&MobileNetV2Config::default()).unwrap();
}

#[test]
fn corrupt_pth_files_are_errors_never_panics() {
    let Some(path) = real_weights("mobilenet_v2-b0353104.pth") else {
        return;
    };
    let d = device();
    let good = std::fs::read(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.pth");
    let options = || mobilenet_v2_import_options(&MobileNetV2Config::default()).unwrap();
    for cut in [
        1,
        10,
        500,
        5_000,
        good.len() / 2,
        good.len() - 100,
        good.len() - 1,
    ] {
        std::fs::write(&broken, &good[..cut]).unwrap();
        let body = MobileNetV2::<Inner>::new(&MobileNetV2Config::default(), &d).unwrap();
        let model = TransferModel::with_linear_head(body, 1000, &d).unwrap();
        let result = import_weights(model, &broken, &options().with_strict(true));
        assert!(result.is_err(), "truncated at {cut} must be an error");
    }
    for offset in [0, 2, 40, 300, 2_000] {
        let mut bytes = good.clone();
        bytes[offset] ^= 0xFF;
        std::fs::write(&broken, &bytes).unwrap();
        let body = MobileNetV2::<Inner>::new(&MobileNetV2Config::default(), &d).unwrap();
        let model = TransferModel::with_linear_head(body, 1000, &d).unwrap();
        // Must return (Ok or Err), not panic.
        let _ = import_weights(model, &broken, &ImportOptions::new());
    }
}

#[test]
fn bert_bottleneck_adapters_start_as_identity_and_train_alone() {
    use crate::common::B;
    use burn_transfer::models::BertInput;
    let d = device();
    let config = BertConfig::all_minilm_l6_v2().shallower(2).narrower(16, 4);
    let base = Bert::<B>::new(&config, &d).unwrap();
    let ids = Tensor::<B, 2, Int>::from_ints([[101, 7, 9, 102], [101, 5, 102, 0]], &d);
    let mask = Tensor::<B, 2, Int>::from_ints([[1, 1, 1, 1], [1, 1, 1, 0]], &d);
    let input = BertInput::with_mask(ids, mask);
    let before = base
        .valid()
        .forward(to_inner(&input), false)
        .last_hidden_state;

    let adapted = base.with_adapters(4, &d).unwrap();
    let after = adapted
        .valid()
        .forward(to_inner(&input), false)
        .last_hidden_state;
    assert_eq!(
        before.into_data(),
        after.into_data(),
        "a new adapter is the identity"
    );
    // Two adapters per layer, each 16·4 + 4 + 4·16 + 16 parameters.
    let per_adapter = 16 * 4 + 4 + 4 * 16 + 16;
    let base_total = Bert::<B>::new(&config, &d).unwrap().param_summary().total();
    assert_eq!(
        adapted.param_summary().total(),
        base_total + 2 * 2 * per_adapter
    );
    // The switch in the configuration builds the same thing.
    let switched = Bert::<B>::new(
        &BertConfig {
            adapter_size: Some(4),
            ..config.clone()
        },
        &d,
    )
    .unwrap();
    assert_eq!(
        switched.param_summary().total(),
        adapted.param_summary().total()
    );
    assert!(
        Bert::<B>::new(
            &BertConfig {
                adapter_size: Some(0),
                ..config
            },
            &d
        )
        .is_err()
    );

    // Houlsby's recipe: adapters, layer norms and the head train; nothing else moves.
    let model = TransferModel::new(
        Pooled::new(adapted, Pooling::Mean).unwrap(),
        LinearHead::new(16, 2, &d).unwrap(),
    )
    .unwrap()
    .freeze()
    .unfreeze_matching(Selector::globs(["*.adapter", "*.layer_norm", "head"]).unwrap())
    .unwrap();
    let start = crate::common::values(&model);
    let batch = ClassificationBatch::new(input, Tensor::<B, 1, Int>::from_ints([1, 0], &d));
    let mut session = FineTuner::<B>::new()
        .learning_rate(1e-2)
        .epochs(1)
        .verbose(false)
        .session(model)
        .unwrap();
    session.begin_epoch(1).unwrap();
    session.train_step(batch.clone(), 0.5).unwrap();
    session.train_step(batch, 1.0).unwrap();
    let end = crate::common::values(session.model());
    for ((path, a), (_, b)) in start.iter().zip(&end) {
        let trainable =
            path.contains(".adapter.") || path.contains("layer_norm") || path.starts_with("head");
        if trainable && (path.contains("up.") || path.starts_with("head")) {
            assert_ne!(a, b, "{path} should have trained");
        }
        if !trainable {
            assert_eq!(a, b, "{path} must not move");
        }
    }
}

fn to_inner(
    input: &burn_transfer::models::BertInput<crate::common::B>,
) -> burn_transfer::models::BertInput<Inner> {
    burn_transfer::freeze::ToInner::to_inner(input.clone())
}

#[test]
fn cnn_stage_maps_feed_attention_transfer_between_teacher_and_student() {
    use burn_transfer::loss::functional::attention_transfer;
    let d = device();
    let teacher = ResNet::<Inner>::new(
        &ResNetConfig {
            base_width: 8,
            ..ResNetConfig::resnet18()
        },
        &d,
    )
    .unwrap();
    let student = ResNet::<Inner>::new(&ResNetConfig::student(4), &d).unwrap();
    let images = Tensor::<Inner, 4>::ones([2, 3, 32, 32], &d);
    let t = teacher.stage_maps(images.clone());
    let s = student.stage_maps(images.clone());
    assert_eq!(t.len(), 4);
    assert_eq!(t[3].dims(), [2, 64, 1, 1]);
    assert_eq!(s[1].dims(), [2, 8, 4, 4]);
    let flat = |m: &Tensor<Inner, 4>| {
        let [b, c, h, w] = m.dims();
        m.clone().reshape([b, c, h * w])
    };
    // Widths differ (8 vs 16 channels); attention maps compare positions, not channels.
    let at = attention_transfer(flat(&s[1]), flat(&t[1]));
    assert!(at.into_data().to_vec::<f32>().unwrap()[0].is_finite());
    assert_eq!(
        teacher
            .stage_maps(images.clone())
            .pop()
            .unwrap()
            .into_data(),
        teacher.feature_map(images.clone()).into_data()
    );

    let mobile = MobileNetV2::<Inner>::new(&MobileNetV2Config::student(), &d).unwrap();
    let maps = mobile.stage_maps(images);
    let channels: Vec<usize> = maps.iter().map(|m| m.dims()[1]).collect();
    assert_eq!(channels, vec![8, 16, 16, 32, 48, 80, 160]);
}

/// Images whose statistics are far from the running ones the norms hold (as a new domain's
/// are from ImageNet's), with labels.
fn shifted_images<Bk: Backend>(seed: u64) -> ClassificationBatch<Bk, Tensor<Bk, 4>> {
    let d = Default::default();
    Bk::seed(&d, seed);
    let x = Tensor::<Bk, 4>::random([4, 3, 32, 32], Distribution::Normal(2.0, 3.0), &d);
    ClassificationBatch::new(x, Tensor::from_ints([0, 1, 2, 0], &d))
}

#[test]
fn batch_norms_frozen_by_path_normalise_with_their_running_statistics() {
    type A = burn::backend::Autodiff<Inner>;
    let d = device();
    A::seed(&d, 5);
    let body = ResNet::<A>::new(&ResNetConfig::student(4), &d).unwrap();
    // Running statistics of their own (not 0 and 1), from a few steps in training mode.
    for seed in 0..3 {
        let _ = body.features(shifted_images::<A>(seed).inputs.mul_scalar(0.5));
    }
    let model = TransferModel::with_linear_head(body, 3, &d)
        .unwrap()
        .freeze_matching("backbone")
        .unwrap();
    let running = |m: &TransferModel<A, ResNet<A>, LinearHead<A>>| {
        m.backbone.layer2[0]
            .bn2
            .running_mean
            .value_sync()
            .into_data()
    };
    let images = shifted_images::<A>(9);

    // The default: a frozen norm computes in training what it computes in inference, and
    // its statistics stay.
    let train = model.forward(images.inputs.clone());
    let inference = model.valid().forward(images.inputs.clone().inner());
    train
        .inner()
        .into_data()
        .assert_approx_eq::<f32>(&inference.into_data(), Tolerance::rel_abs(1e-4, 1e-5));
    let before = running(&model);
    let mut session = crate::common::quiet(FineTuner::<A>::new().learning_rate(1e-2))
        .session(model)
        .unwrap();
    session.begin_epoch(1).unwrap();
    session.train_step(images.clone(), 1.0).unwrap();
    let model = session.into_model();
    assert_eq!(running(&model), before, "a frozen norm's statistics moved");

    // PyTorch's `train()` behaviour on request: batch statistics, running ones updated.
    let (body, head) = model.into_parts();
    let model =
        TransferModel::new(body.with_frozen_norm(FrozenNorm::BatchStatistics), head).unwrap();
    let train = model.forward(images.inputs.clone());
    let inference = model.valid().forward(images.inputs.clone().inner());
    let gap = (train.inner() - inference).abs().max().into_scalar();
    assert!(
        gap > 1e-2,
        "batch statistics should differ from the running ones: {gap}"
    );
    assert_ne!(running(&model), before);
}

#[test]
fn gradients_flow_through_frozen_norms_to_the_convolutions_that_train() {
    type A = burn::backend::Autodiff<Inner>;
    let d = device();
    A::seed(&d, 6);
    let body = MobileNetV2::<A>::new(&MobileNetV2Config::student(), &d).unwrap();
    // Every norm frozen, every convolution and the head trained (torchvision's detection
    // recipe with FrozenBatchNorm2d).
    let model = TransferModel::with_linear_head(body, 3, &d)
        .unwrap()
        .freeze_matching(Selector::globs(["*.bn.*"]).unwrap())
        .unwrap();
    let norms = |m: &TransferModel<A, MobileNetV2<A>, LinearHead<A>>| {
        let stem = &m.backbone.stem.bn;
        (
            stem.running_var.value_sync().into_data(),
            stem.gamma.val().into_data(),
        )
    };
    let conv = |m: &TransferModel<A, MobileNetV2<A>, LinearHead<A>>| {
        m.backbone.stem.conv.weight.val().into_data()
    };
    let (norms_before, conv_before) = (norms(&model), conv(&model));
    let mut session = crate::common::quiet(FineTuner::<A>::new().learning_rate(1e-2))
        .session(model)
        .unwrap();
    session.begin_epoch(1).unwrap();
    session.train_step(shifted_images::<A>(1), 1.0).unwrap();
    let model = session.into_model();
    assert_eq!(norms(&model), norms_before);
    assert_ne!(
        conv(&model),
        conv_before,
        "the stem's convolution got no gradient"
    );
}
