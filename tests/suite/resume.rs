//! Resumable checkpoints: a run killed mid-way and resumed ends bitwise where an
//! uninterrupted run ends; a process killed while saving leaves the previous checkpoint
//! loadable.

use crate::common::{B, Batch, batch, batches, device, quiet, values};
use burn::backend::NdArray;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn_transfer::checkpoint::{load_model, save_model};
use burn_transfer::finetune::RESUME_FILE;
use burn_transfer::prelude::*;
use std::cell::Cell;

type Model = TransferModel<B, MlpBackbone<B>, MlpHead<B>>;

fn model() -> Model {
    let d = device();
    B::seed(&d, 11);
    let body = MlpBackbone::new(&[8, 16, 16], &d).unwrap();
    // Dropout makes the run depend on the random generator's state.
    let head = MlpHeadConfig::new(16, vec![12], 4)
        .with_dropout(0.3)
        .init(&d)
        .unwrap();
    TransferModel::new(body, head)
        .unwrap()
        .freeze_matching("backbone")
        .unwrap()
}

fn tuner(dir: &std::path::Path) -> FineTuner<B> {
    quiet(
        FineTuner::<B>::new()
            .learning_rate(3e-3)
            .epochs(5)
            .seed(5)
            .schedule(LrSchedule::Cosine {
                warmup: 0.2,
                min_factor: 0.1,
            })
            .group("head", 1e-2)
            .unwrap()
            .unfreeze_schedule(
                UnfreezeSchedule::new()
                    .at(3, Selector::glob("backbone.layers.1").unwrap())
                    .unwrap(),
            )
            .checkpoint_dir(dir),
    )
}

/// The training batches, except that in epoch `crash_epoch` the third batch carries a
/// label the model cannot predict: `fit` stops with an error there, as a crash would.
struct Crashing {
    batches: Vec<Batch<B>>,
    crash_epoch: usize,
    epochs_started: Cell<usize>,
}

impl BatchSource<Batch<B>> for Crashing {
    fn epoch(&self) -> Box<dyn Iterator<Item = (Batch<B>, f64)> + '_> {
        self.epochs_started.set(self.epochs_started.get() + 1);
        let crash = self.epochs_started.get() == self.crash_epoch;
        let n = self.batches.len() as f64;
        Box::new(self.batches.iter().enumerate().map(move |(i, b)| {
            let mut b = b.clone();
            if crash && i == 2 {
                b.targets = b.targets.clone().add_scalar(100);
            }
            (b, (i + 1) as f64 / n)
        }))
    }
}

#[test]
fn an_interrupted_and_resumed_run_ends_bitwise_identical() {
    crate::common::isolated("resume::resume_child", "BURN_TRANSFER_RESUME_TEST");
}

/// The child side of the test above; does nothing in a normal run.
#[test]
fn resume_child() {
    if std::env::var("BURN_TRANSFER_RESUME_TEST").is_err() {
        return;
    }
    let train = batches::<B>(6, 16, 8, 4);
    let valid = vec![batch::<crate::common::Inner>(32, 8, 4, 99)];
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();

    let uninterrupted = tuner(a_dir.path())
        .fit(model(), &train, Some(&valid))
        .unwrap();

    let crashing = Crashing {
        batches: train.clone(),
        crash_epoch: 4,
        epochs_started: Cell::new(0),
    };
    let err = tuner(b_dir.path())
        .fit(model(), &crashing, Some(&valid))
        .unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
    assert!(b_dir.path().join(RESUME_FILE).is_file());
    let resumed = tuner(b_dir.path())
        .resume(true)
        .fit(model(), &train, Some(&valid))
        .unwrap();

    assert_eq!(values(&resumed.model), values(&uninterrupted.model));
    assert_eq!(
        values(&resumed.best_model),
        values(&uninterrupted.best_model)
    );
    assert_eq!(resumed.best_epoch, uninterrupted.best_epoch);
    let losses = |h: &History| h.epochs.iter().map(|e| e.train_loss).collect::<Vec<_>>();
    assert_eq!(losses(&resumed.history), losses(&uninterrupted.history));
    assert_eq!(resumed.history.epochs.len(), 5);
    // The unfreeze schedule (epoch 3) was in force before the crash and after the resume.
    let trainable = |h: &History| {
        h.epochs
            .iter()
            .map(|e| e.trainable_params)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        trainable(&resumed.history),
        trainable(&uninterrupted.history)
    );

    // Control: without `resume` the same folder starts over (5 fresh epochs, and the state
    // is overwritten), so the comparison above is not vacuous.
    let crashing = Crashing {
        batches: train.clone(),
        crash_epoch: 2,
        epochs_started: Cell::new(0),
    };
    let c_dir = tempfile::tempdir().unwrap();
    tuner(c_dir.path())
        .fit(model(), &crashing, Some(&valid))
        .unwrap_err();
    let restarted = tuner(c_dir.path())
        .epochs(3)
        .fit(model(), &train, Some(&valid))
        .unwrap();
    assert_ne!(values(&restarted.model), values(&uninterrupted.model));

    // A corrupt resume file is an error that says what to do, not a panic.
    std::fs::write(
        b_dir.path().join(RESUME_FILE),
        b"burn-transfer resume v1\ngarbage",
    )
    .unwrap();
    let err = tuner(b_dir.path())
        .resume(true)
        .fit(model(), &train, Some(&valid))
        .unwrap_err()
        .to_string();
    assert!(err.contains("delete it to start over"), "{err}");
    // Resuming needs a folder.
    let err = FineTuner::<B>::new()
        .resume(true)
        .fit(model(), &train, Some(&valid));
    assert!(err.is_err());
}

/// The child side of the kill test: saves ever-changing versions of a 4 MB model to the
/// path in `BURN_TRANSFER_KILL_TEST` until it is killed, printing `saved <version>` after
/// each completed save. Does nothing in a normal run.
#[test]
fn kill_child_writer() {
    use std::io::Write;
    let Ok(path) = std::env::var("BURN_TRANSFER_KILL_TEST") else {
        return;
    };
    let d = Default::default();
    let mut layer: Linear<NdArray> = LinearConfig::new(1024, 1024).init(&d);
    let mut out = std::io::stdout();
    for version in 1.. {
        layer.weight = layer
            .weight
            .map(|w| w.zeros_like().add_scalar(version as f32));
        save_model(&layer, std::path::Path::new(&path)).unwrap();
        writeln!(out, "saved {version}").unwrap();
        out.flush().unwrap();
    }
}

/// Kills a writer right after it reports its `saves`-th completed save, so the kill lands
/// during a later write (or between two), and returns the version that report named.
fn kill_after_saves(path: &std::path::Path, saves: usize) -> f32 {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "resume::kill_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BURN_TRANSFER_KILL_TEST", path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let reported = lines
        .map(Result::unwrap)
        .filter_map(|l| l.strip_prefix("saved ").map(|v| v.parse::<f32>().unwrap()))
        .nth(saves - 1)
        .expect("the writer reports its saves");
    child.kill().unwrap();
    child.wait().unwrap();
    reported
}

#[test]
fn a_process_killed_while_saving_leaves_a_loadable_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.mpk");
    let d = Default::default();
    let fresh = || -> Linear<NdArray> { LinearConfig::new(1024, 1024).init(&d) };
    // Version 0: zeros everywhere, so that every complete version is one constant.
    let mut first = fresh();
    first.weight = first.weight.map(|w| w.zeros_like());
    save_model(&first, &path).unwrap();
    for saves in [1, 2, 3, 5] {
        let reported = kill_after_saves(&path, saves);
        // Whatever version was last completed, it loads whole (one value everywhere), and
        // it is the reported one or a later one: a completed save is never lost.
        let loaded = load_model(fresh(), &path, &d).unwrap();
        let w = loaded.weight.val().into_data().to_vec::<f32>().unwrap();
        assert!(
            w.iter().all(|v| *v == w[0]),
            "a mix of versions after {saves} saves"
        );
        assert!(w[0] >= reported, "version {} < reported {reported}", w[0]);
    }
    // The next save removes the temporary files that killed writers left behind, and no
    // file is left that a later reader could mistake for the checkpoint.
    save_model(&first, &path).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["model.mpk"]);
}

#[test]
fn trainable_only_delta_restores_the_fine_tuned_model() {
    use burn::module::AutodiffModule;
    use burn_transfer::checkpoint::{load_trainable, save_trainable};
    type Net = TransferModel<B, MlpBackbone<B>, LinearHead<B>>;
    let d = device();
    let pretrained: Net =
        TransferModel::with_linear_head(MlpBackbone::new(&[32, 256, 8], &d).unwrap(), 4, &d)
            .unwrap();
    // Independent copies of the pretrained model (a round trip through the inner module).
    let copy = || Net::from_inner(pretrained.valid());
    let model = copy().freeze_all_but_last("backbone.layers", 1).unwrap();
    let trained = quiet(FineTuner::<B>::new().learning_rate(1e-2).epochs(2))
        .monitor(Monitor::TrainLoss)
        .fit(model, &batches::<B>(4, 16, 32, 4), None)
        .unwrap()
        .model;

    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("delta.safetensors");
    let full = dir.path().join("full.mpk");
    assert_eq!(save_trainable(&trained, &delta).unwrap(), 4);
    save_model(&trained, &full).unwrap();
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    assert!(
        size(&delta) * 2 < size(&full),
        "{} vs {}",
        size(&delta),
        size(&full)
    );

    let restored = load_trainable(copy(), &delta).unwrap();
    assert_eq!(values(&restored), values(&trained));
    // Without the delta the copy is the pretrained model, so the check above is not vacuous.
    assert_ne!(values(&copy()), values(&trained));

    // Another architecture: an error naming the tensor, not a silent partial load.
    let other: Net =
        TransferModel::with_linear_head(MlpBackbone::new(&[32, 256, 16], &d).unwrap(), 4, &d)
            .unwrap();
    let err = load_trainable(other, &delta).unwrap_err().to_string();
    assert!(err.contains("backbone.layers.1.weight"), "{err}");
    // Nothing trainable (an inference-backend model) is an error, not an empty file.
    assert!(save_trainable(&trained.valid(), &dir.path().join("x")).is_err());
}

#[test]
fn bert_features_feed_the_distillation_losses() {
    use burn_transfer::loss::functional::{cosine_distance, mse};
    use burn_transfer::models::{Bert, BertConfig, BertInput};
    let d = device();
    let teacher = Bert::<B>::new(
        &BertConfig::all_minilm_l6_v2().shallower(4).narrower(16, 4),
        &d,
    )
    .unwrap();
    // DistilBERT's student: every other teacher layer, same width.
    let student = teacher.keep_layers(&[0, 2]).unwrap();
    let ids = Tensor::<B, 2, Int>::from_ints([[101, 7, 9, 102], [101, 5, 6, 102]], &d);
    let input = BertInput::new(ids);
    let t = teacher.forward(input.clone(), true);
    let s = student.forward(input, true);
    // Student layer 1 (teacher layer 2) vs teacher layer 3: DistilBERT's hidden cosine and
    // TinyBERT's attention-map MSE are finite, non-negative, and train the student.
    let flat = |h: Tensor<B, 3>| h.reshape([8, 16]);
    let cos = cosine_distance(
        flat(s.hidden_states[2].clone()),
        flat(t.hidden_states[4].clone()).detach(),
    );
    let at = mse(s.attentions[1].clone(), t.attentions[3].clone().detach());
    let loss = cos + at;
    let value = loss.clone().into_data().to_vec::<f32>().unwrap()[0];
    assert!(value.is_finite() && value >= 0.0, "{value}");
    let grads = loss.backward();
    let g = student.encoder.layer[1]
        .attention
        .self_attention
        .query
        .weight
        .grad(&grads);
    assert!(g.is_some(), "the student's attention receives a gradient");
}
