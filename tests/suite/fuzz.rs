//! Random damage to every kind of file the crate reads: truncations and flipped bytes. Each
//! load must be an error or give exactly what the intact file gives; never a panic, never
//! other values.

use crate::common::*;
use burn::module::{AutodiffModule, Param};
use burn_transfer::adapter::{LoraConfig, LoraModel, WEIGHTS_FILE};
use burn_transfer::checkpoint::{
    load_model, load_trainable, save_model, save_pytorch_safetensors, save_trainable,
};
use burn_transfer::distill::TeacherCache;
use burn_transfer::finetune::{RESUME_FILE, ResumeState};
use burn_transfer::import::{ImportOptions, import_weights};
use burn_transfer::prelude::*;
use std::path::{Path, PathBuf};

type Values = Vec<(String, Vec<f32>)>;
type Net = TransferModel<B, MlpBackbone<B>, LinearHead<B>>;

/// A fixed-seed generator, so that a failing case can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

/// Outcomes of one file kind.
#[derive(Default, Debug)]
struct Tally {
    cases: usize,
    errors: usize,
    identical: usize,
}

/// Damages `file` (whose intact bytes are on disk) `flips + cuts` times, loading it with
/// `load` after each; restores it at the end.
fn fuzz(
    kind: &str,
    file: &Path,
    flips: usize,
    cuts: usize,
    load: &dyn Fn() -> Result<Values, String>,
) -> Tally {
    let good = std::fs::read(file).unwrap();
    let expected = load().unwrap_or_else(|e| panic!("{kind}: the intact file fails: {e}"));
    let mut rng = Lcg(good.len() as u64);
    let mut tally = Tally::default();
    for case in 0..flips + cuts {
        let (bytes, what) = if case < flips {
            let mut b = good.clone();
            let at = rng.below(b.len());
            let bit = rng.below(8);
            b[at] ^= 1 << bit;
            (b, format!("bit {bit} of byte {at} flipped"))
        } else {
            let cut = rng.below(good.len());
            (good[..cut].to_vec(), format!("cut to {cut} bytes"))
        };
        std::fs::write(file, &bytes).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(load))
            .unwrap_or_else(|_| panic!("{kind}: case {case} ({what}) panicked"));
        tally.cases += 1;
        match outcome {
            Err(_) => tally.errors += 1,
            Ok(values) => {
                assert!(
                    values == expected,
                    "{kind}: case {case} ({what}) loaded other values"
                );
                tally.identical += 1;
            }
        }
    }
    std::fs::write(file, &good).unwrap();
    eprintln!("fuzz {kind}: {tally:?}");
    tally
}

fn err(e: TransferError) -> String {
    e.to_string()
}

fn model() -> Net {
    mlp_model()
}

#[test]
fn damaged_files_load_as_errors_or_identically() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| -> PathBuf { dir.path().join(name) };
    let d = device();
    // One base model: the loaders below fill in only part of it (a delta, an adapter).
    let base = model();
    let inner = base.valid();
    let mut tallies = Vec::new();

    // A checkpoint (.mpk).
    save_model(&inner, &at("model.mpk")).unwrap();
    tallies.push(fuzz("mpk", &at("model.mpk"), 200, 60, &|| {
        load_model(model().valid(), &at("model.mpk"), &d)
            .map(|m| values(&m))
            .map_err(err)
    }));

    // A resume file: its header, model and optimizer state.
    let run = at("run");
    quiet(FineTuner::<B>::new().epochs(1).checkpoint_dir(&run))
        .fit(
            model(),
            &batches::<B>(2, 8, 8, 4),
            Some(&batches::<Inner>(1, 8, 8, 4)),
        )
        .unwrap();
    let resume = run.join(RESUME_FILE);
    tallies.push(fuzz("resume.bin", &resume, 200, 60, &|| {
        let state = ResumeState::load(&resume).map_err(err)?.ok_or("absent")?;
        let m = burn_transfer::checkpoint::load_model_bytes(
            model().valid(),
            state.model.clone(),
            &resume,
            &d,
        )
        .map_err(err)?;
        let mut v = values(&m);
        v.push(("epoch".into(), vec![state.epoch as f32, state.steps as f32]));
        v.push((
            "optimizer".into(),
            state.optimizer.concat().iter().map(|b| *b as f32).collect(),
        ));
        Ok(v)
    }));

    // A teacher cache.
    let cache = TeacherCache::<Inner>::from_logits(vec![
        inner.forward(batch::<Inner>(4, 8, 8, 4).inputs),
        inner.forward(batch::<Inner>(3, 8, 8, 4).inputs),
    ]);
    cache.save(&at("teacher.cache")).unwrap();
    tallies.push(fuzz(
        "teacher cache",
        &at("teacher.cache"),
        200,
        60,
        &|| {
            let c = TeacherCache::<Inner>::load(&at("teacher.cache"), &d).map_err(err)?;
            Ok((0..c.len())
                .map(|i| (i.to_string(), c.get(i).unwrap().to_data().to_vec().unwrap()))
                .collect())
        },
    ));

    // A trainable-only delta (safetensors with the crate's CRC in its metadata).
    let partly = base.clone().freeze_matching("backbone").unwrap();
    save_trainable(&partly, &at("delta.safetensors")).unwrap();
    tallies.push(fuzz("delta", &at("delta.safetensors"), 200, 60, &|| {
        load_trainable(base.clone(), &at("delta.safetensors"))
            .map(|m| values(&m))
            .map_err(err)
    }));

    // A PyTorch-layout safetensors export, read back by the importer.
    save_pytorch_safetensors(&inner.backbone, &at("export.safetensors")).unwrap();
    tallies.push(fuzz("export", &at("export.safetensors"), 200, 60, &|| {
        let options = ImportOptions::new().with_strict(true);
        import_weights(model().valid().backbone, at("export.safetensors"), &options)
            .map(|(m, _)| values(&m))
            .map_err(err)
    }));

    // A LoRA adapter's weights.
    let mut lora = LoraModel::new(
        base.clone(),
        "default",
        LoraConfig::new(2, 4.0, ["backbone.layers.*"]),
    )
    .unwrap();
    for w in &mut lora.adapters[0].weights {
        w.lora_b = Param::from_tensor(w.lora_b.val().ones_like());
    }
    let adapter = at("adapter");
    lora.save_adapter(&adapter).unwrap();
    tallies.push(fuzz(
        "adapter",
        &adapter.join(WEIGHTS_FILE),
        200,
        60,
        &|| {
            LoraModel::load_adapter(base.clone(), &adapter)
                .map(|m| values(&m))
                .map_err(err)
        },
    ));

    // A PyTorch zip archive (torch.save), strict import: every entry has a CRC-32.
    let pth = at("mlp_zip.pth");
    let (fixture, options) = zip_pth_fixture();
    std::fs::copy(fixture, &pth).unwrap();
    tallies.push(fuzz("zip .pth", &pth, 300, 60, &|| {
        import_weights(
            MlpBackbone::<Inner>::new(&[3, 4, 2], &d).unwrap(),
            &pth,
            &options,
        )
        .map(|(m, _)| values(&m))
        .map_err(err)
    }));

    let cases: usize = tallies.iter().map(|t| t.cases).sum();
    let errors: usize = tallies.iter().map(|t| t.errors).sum();
    eprintln!(
        "fuzz total: {cases} cases, {errors} errors, {} identical, 0 panics, 0 other values",
        cases - errors
    );
    // Most damage must be caught, not merely survived.
    assert!(errors * 10 > cases * 9, "{errors} errors of {cases}");
}
