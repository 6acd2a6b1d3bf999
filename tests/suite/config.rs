//! Configurations are burn `Config`s: they save and load as JSON unchanged, and a run's
//! checkpoint folder holds what it takes to rebuild the run.

use crate::common::*;
use burn::config::Config;
use burn::nn::activation::ActivationConfig;
use burn_transfer::finetune::{LrSchedule, OptimizerKind, RUN_CONFIG_FILE};
use burn_transfer::freeze::{Selector, UnfreezeSchedule};
use burn_transfer::head::MlpHeadConfig;
use burn_transfer::loss::{DISTILL_LOSS_FILE, LayerMap, ParamSchedule};
use burn_transfer::models::{BertConfig, MobileNetV2Config, ResNetConfig};
use burn_transfer::prelude::*;
use std::fmt::Debug;

/// Saved with burn's `Config::save` and loaded with `Config::load`: the same value.
fn round_trip<C: Config + PartialEq + Debug>(config: &C) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    config.save(&path).unwrap();
    let loaded = C::load(&path).unwrap();
    assert_eq!(&loaded, config);
}

#[test]
fn every_configuration_saves_and_loads_as_burn_config() {
    round_trip(
        &DistillLossConfig::new()
            .with_temperature(ParamSchedule::Linear {
                start: 4.0,
                end: 1.0,
                epochs: 5,
            })
            .with_alpha(0.9)
            .with_label_smoothing(0.1)
            .with_hint(0.5)
            .with_attention_mse(0.25)
            .with_layer_map(LayerMap::Pairs(vec![(0, 0), (2, 4)]))
            .with_dkd(1.0, 1.0, 8.0),
    );
    round_trip(&LoraConfig::new(4, 8.0, ["*.query", "*.value"]).with_dropout(0.1));
    round_trip(&BottleneckConfig::new(384, 64).with_init_std(1e-2));
    round_trip(&ResNetConfig::resnet50());
    round_trip(&MobileNetV2Config::default());
    round_trip(&BertConfig::default());
    // MlpHeadConfig derives burn's Config (its activation config has no PartialEq).
    let head = MlpHeadConfig::new(16, vec![32, 8], 3)
        .with_activation(ActivationConfig::Gelu)
        .with_dropout(0.2);
    let dir = tempfile::tempdir().unwrap();
    head.save(dir.path().join("head.json")).unwrap();
    let loaded = MlpHeadConfig::load(dir.path().join("head.json")).unwrap();
    assert_eq!(
        (
            loaded.input_dim,
            loaded.hidden,
            loaded.num_outputs,
            loaded.dropout
        ),
        (16, vec![32, 8], 3, 0.2)
    );
    assert!(matches!(loaded.activation, ActivationConfig::Gelu));
}

#[test]
fn import_options_save_and_load_with_their_rules() {
    let options = ImportOptions::new()
        .with_remap(r"^net\.(\d+)\.", "layers.$1.")
        .unwrap()
        .with_ignore("num_batches_tracked$")
        .unwrap()
        .with_only("layers.0")
        .unwrap()
        .with_strict(true)
        .with_top_level_key("state_dict");
    let dir = tempfile::tempdir().unwrap();
    options.save(dir.path().join("import.json")).unwrap();
    let loaded = ImportOptions::load(dir.path().join("import.json")).unwrap();
    assert_eq!(
        serde_json::to_value(&loaded).unwrap(),
        serde_json::to_value(&options).unwrap()
    );
    let json = serde_json::to_string(&options).unwrap();
    assert!(
        json.contains("\"from\""),
        "rules are named, not tuples: {json}"
    );
}

#[test]
fn selectors_load_as_written_and_a_bad_pattern_is_an_error() {
    let selector = Selector::globs(["backbone.*", "*.bias"]).unwrap();
    let json = serde_json::to_string(&selector).unwrap();
    assert!(json.contains("backbone.*"), "{json}");
    let back: Selector = serde_json::from_str(&json).unwrap();
    for path in ["backbone.layers.0.weight", "head.bias", "head.weight"] {
        assert_eq!(
            back.matches_path(path),
            selector.matches_path(path),
            "{path}"
        );
    }
    let broken = json.replace("backbone.*", "backbone.[");
    let err = serde_json::from_str::<Selector>(&broken).unwrap_err();
    assert!(err.to_string().contains("backbone.["), "{err}");
}

#[test]
fn a_run_folder_rebuilds_the_trainer_that_wrote_it() {
    let dir = tempfile::tempdir().unwrap();
    let tuner = quiet(FineTuner::<B>::new())
        .epochs(2)
        .learning_rate(1e-2)
        .optimizer(OptimizerKind::sgd_momentum(0.9))
        .schedule(LrSchedule::Cosine {
            warmup: 0.1,
            min_factor: 0.1,
        })
        .group("head", 5e-2)
        .unwrap()
        .clip_grad_norm(1.0)
        .early_stopping(EarlyStopping::new(Monitor::ValidLoss).with_patience(4))
        .unfreeze_schedule(UnfreezeSchedule::gradual("backbone.layers", 2, 2, 1).unwrap())
        .seed(7)
        .checkpoint_dir(dir.path());
    let train = batches::<B>(2, 8, 8, 4);
    let valid = batches::<Inner>(1, 8, 8, 4);
    tuner
        .fit(
            mlp_model().freeze_matching("backbone").unwrap(),
            &train,
            Some(&valid),
        )
        .unwrap();
    assert!(dir.path().join(RUN_CONFIG_FILE).is_file());
    let rebuilt = FineTuner::<B>::from_run_dir(dir.path()).unwrap();
    // Same configuration, field for field (as its JSON).
    assert_eq!(
        serde_json::to_value(&rebuilt).unwrap(),
        serde_json::to_value(&tuner).unwrap()
    );
}

#[test]
fn a_distillation_run_folder_holds_its_loss() {
    let dir = tempfile::tempdir().unwrap();
    let d = device();
    let teacher =
        TransferModel::with_linear_head(MlpBackbone::<Inner>::new(&[8, 16], &d).unwrap(), 4, &d)
            .unwrap();
    let loss = DistillLossConfig::new()
        .with_temperature(3.0)
        .with_alpha(0.8);
    let tuner =
        quiet(FineTuner::<B>::new().epochs(1).learning_rate(1e-2)).checkpoint_dir(dir.path());
    let train = batches::<B>(1, 8, 8, 4);
    let valid = batches::<Inner>(1, 8, 8, 4);
    Distiller::new(teacher, loss.clone(), tuner)
        .unwrap()
        .fit(mlp_model(), &train, Some(&valid))
        .unwrap();
    assert!(dir.path().join(DISTILL_LOSS_FILE).is_file());
    assert_eq!(DistillLossConfig::from_run_dir(dir.path()).unwrap(), loss);
    assert!(FineTuner::<B>::from_run_dir(dir.path()).is_ok());
}

#[test]
fn a_folder_without_or_with_a_damaged_configuration_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = FineTuner::<B>::from_run_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains(RUN_CONFIG_FILE), "{err}");
    std::fs::write(dir.path().join(RUN_CONFIG_FILE), "{\"epochs\": \"three\"}").unwrap();
    let err = FineTuner::<B>::from_run_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("FineTuner"), "{err}");
}
