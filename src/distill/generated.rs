//! Distillation on generated sequences: sequence-level KD (the teacher continues prompts and
//! the student learns the continuations) and on-policy KD (the student continues them and
//! the teacher scores every new token, TRL's GKD).

use super::modes::{DistillBatch, shifted_labels, token_terms_only};
use crate::error::{Result, TransferError};
use crate::generation::GenerationConfig;
use crate::loss::LayerPairs;
use crate::loss::{DistillLoss, DistillLossConfig};
use crate::objective::{
    NextTokenLoss, Objective, StepAt, StepOutput, batch_error, next_token_correct,
};
use crate::task::{CausalLm, TokenBatch};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Prompts for **sequence-level** distillation (Kim & Rush): the teacher continues each
/// prompt as `generation` says, and the student learns the continuations:
/// `α·KD + (1-α)·CE` on the generated tokens only (the teacher re-scores them for the KD
/// term; α = 0 is pure sequence-level KD). Validation: the student's next-token loss on
/// held-out [`TokenBatch`]es.
///
/// With sampling, each step draws with the generation seed mixed with the epoch and batch,
/// so every epoch sees new continuations and a rerun sees the same ones.
#[derive(Clone, Debug)]
pub struct TeacherContinues {
    /// Token ids of each prompt (at least one token each).
    pub prompts: Vec<Vec<u32>>,
    /// How the teacher continues them.
    pub generation: GenerationConfig,
}

/// Prompts for **on-policy** distillation (TRL's GKD): the student (in inference mode)
/// continues each prompt as `generation` says, the teacher scores every token the student
/// wrote, and the loss is the generalized Jensen–Shannon divergence between the two at
/// temperature `T`, with β from [`DistillLossConfig::with_gkd_beta`]. The student learns
/// from its own mistakes rather than from text it would never write. Validation: the
/// student's next-token loss on held-out [`TokenBatch`]es.
#[derive(Clone, Debug)]
pub struct StudentContinues {
    /// Token ids of each prompt (at least one token each).
    pub prompts: Vec<Vec<u32>>,
    /// How the student continues them.
    pub generation: GenerationConfig,
}

/// Prompts and their continuations as one right-padded batch: ids, the attention mask
/// (1 = token) and the mask of positions whose next token is a generated one.
struct Continued<B: Backend> {
    batch: TokenBatch<B>,
    targets: Tensor<B, 2, Int>,
    count: usize,
}

fn continued<B: Backend>(
    prompts: &[Vec<u32>],
    continuations: &[Vec<u32>],
    device: &B::Device,
) -> Continued<B> {
    let rows = prompts.len();
    let width = prompts
        .iter()
        .zip(continuations)
        .map(|(p, c)| p.len() + c.len())
        .max()
        .unwrap_or(0);
    let (mut ids, mut mask, mut targets) = (
        vec![0i64; rows * width],
        vec![0i64; rows * width],
        vec![0i64; rows * width],
    );
    let mut count = 0;
    for (r, (prompt, cont)) in prompts.iter().zip(continuations).enumerate() {
        for (t, &id) in prompt.iter().chain(cont).enumerate() {
            ids[r * width + t] = id as i64;
            mask[r * width + t] = 1;
        }
        // Position t scores token t + 1: the generated tokens are at prompt.len()..
        for t in prompt.len() - 1..prompt.len() - 1 + cont.len() {
            targets[r * width + t] = 1;
            count += 1;
        }
    }
    let int =
        |v: Vec<i64>| Tensor::<B, 2, Int>::from_data(TensorData::new(v, [rows, width]), device);
    Continued {
        batch: TokenBatch::new(int(ids), int(mask)),
        targets: int(targets),
        count,
    }
}

/// The generation config of one step: a sampling seed mixed with where the step is.
fn step_generation(config: &GenerationConfig, at: StepAt) -> GenerationConfig {
    let mut config = config.clone();
    config.seed = config
        .seed
        .wrapping_add((at.epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(at.batch as u64);
    config
}

fn check_prompts(prompts: &[Vec<u32>], at: StepAt) -> Result<()> {
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return Err(TransferError::BatchShape(format!(
            "training batch {}: every prompt needs at least one token, and a batch at least one prompt",
            at.batch
        )));
    }
    Ok(())
}

/// The student's and the teacher's logits on the continued batch.
fn both_logits<B, S, T>(
    student: &S,
    teacher: &T,
    batch: &TokenBatch<B>,
    at: StepAt,
) -> Result<(Tensor<B, 3>, Tensor<B, 3>)>
where
    B: AutodiffBackend,
    S: CausalLm<B>,
    T: CausalLm<B::InnerBackend>,
{
    let logits = student
        .next_token_logits(batch.input_ids.clone(), batch.attention_mask.clone())
        .map_err(|e| batch_error(e, "training", at.batch))?;
    let teacher_logits = teacher
        .next_token_logits(
            batch.input_ids.clone().inner(),
            batch.attention_mask.clone().inner(),
        )
        .map_err(|e| batch_error(e, "teacher's training", at.batch))?;
    let (vocab, teacher_vocab) = (logits.dims()[2], teacher_logits.dims()[2]);
    if vocab != teacher_vocab {
        return Err(TransferError::WidthMismatch {
            what: "student vs teacher vocabulary".into(),
            expected: teacher_vocab,
            actual: vocab,
            hint: "distillation compares the two distributions token by token: both models must share the tokenizer".into(),
        });
    }
    Ok((logits, Tensor::from_inner(teacher_logits)))
}

/// How many generated tokens the student ranks first (of `count`).
fn correct_on<B: Backend>(logits: &Tensor<B, 3>, continued: &Continued<B>) -> usize {
    // next_token_correct counts real next tokens; restrict it to the generated ones by
    // passing, as the "mask", the targets shifted to the token they score.
    let [rows, width] = continued.targets.dims();
    let zeros = Tensor::<B, 2, Int>::zeros([rows, 1], &continued.targets.device());
    let scored = Tensor::cat(
        vec![
            zeros,
            continued.targets.clone().slice([0..rows, 0..width - 1]),
        ],
        1,
    );
    next_token_correct(logits, &continued.batch.input_ids, &scored).0
}

/// Prompts continued by one of the models, scored by both.
struct Scored<B: Backend> {
    logits: Tensor<B, 3>,
    teacher_logits: Tensor<B, 3>,
    continued: Continued<B>,
    correct: usize,
}

/// Continues `prompts` with `write` (the teacher's or the student's generation, with the
/// step's seed), then runs both models on the prompts with their continuations.
fn write_and_score<B, S, T>(
    prompts: &[Vec<u32>],
    generation: &GenerationConfig,
    at: StepAt,
    student: &S,
    teacher: &T,
    write: impl FnOnce(&[Vec<u32>], &GenerationConfig) -> Result<Vec<Vec<u32>>>,
) -> Result<Scored<B>>
where
    B: AutodiffBackend,
    S: AutodiffModule<B> + CausalLm<B>,
    T: CausalLm<B::InnerBackend>,
{
    check_prompts(prompts, at)?;
    let continuations = write(prompts, &step_generation(generation, at))?;
    let device = student.devices().into_iter().next().unwrap_or_default();
    let continued = continued::<B>(prompts, &continuations, &device);
    let (logits, teacher_logits) = both_logits(student, teacher, &continued.batch, at)?;
    let correct = correct_on(&logits, &continued);
    Ok(Scored {
        logits,
        teacher_logits,
        continued,
        correct,
    })
}

fn lm_valid<B, S>(
    batch: TokenBatch<B::InnerBackend>,
    student: &S::InnerModule,
    at: StepAt,
) -> Result<StepOutput<B::InnerBackend>>
where
    B: AutodiffBackend,
    S: AutodiffModule<B> + CausalLm<B>,
    S::InnerModule: CausalLm<B::InnerBackend>,
{
    <NextTokenLoss as Objective<B, S>>::valid_step(&NextTokenLoss, student, batch, at)
}

impl<B, S, T> DistillBatch<B, S, T> for TeacherContinues
where
    B: AutodiffBackend,
    S: AutodiffModule<B> + CausalLm<B>,
    S::InnerModule: CausalLm<B::InnerBackend>,
    T: CausalLm<B::InnerBackend>,
{
    type Valid = TokenBatch<B::InnerBackend>;

    fn layer_pairs(config: &DistillLossConfig, _: &S, _: &T) -> Result<LayerPairs> {
        token_terms_only(config, "sequence-level distillation")?;
        Ok(LayerPairs::default())
    }

    fn distill_step(
        self,
        student: &S,
        teacher: &T,
        loss: &DistillLoss<B>,
        at: StepAt,
    ) -> Result<StepOutput<B>> {
        let Scored {
            logits,
            teacher_logits,
            continued,
            correct,
        } = write_and_score(
            &self.prompts,
            &self.generation,
            at,
            student,
            teacher,
            |p, g| {
                teacher
                    .generate(p, g)
                    .map_err(|e| batch_error(e, "teacher's generation", at.batch))
            },
        )?;
        let labels = shifted_labels(&continued.batch.input_ids, &continued.targets);
        let out = loss.forward_tokens(
            logits,
            teacher_logits,
            Some(continued.targets.clone()),
            Some(labels),
            at.epoch,
        )?;
        Ok(StepOutput::new(out.total, correct, continued.count).with_terms(out.terms))
    }

    fn valid_step(
        batch: Self::Valid,
        student: &S::InnerModule,
        at: StepAt,
    ) -> Result<StepOutput<B::InnerBackend>> {
        lm_valid::<B, S>(batch, student, at)
    }
}

impl<B, S, T> DistillBatch<B, S, T> for StudentContinues
where
    B: AutodiffBackend,
    S: AutodiffModule<B> + CausalLm<B>,
    S::InnerModule: CausalLm<B::InnerBackend>,
    T: CausalLm<B::InnerBackend>,
{
    type Valid = TokenBatch<B::InnerBackend>;

    fn layer_pairs(config: &DistillLossConfig, _: &S, _: &T) -> Result<LayerPairs> {
        token_terms_only(config, "on-policy distillation")?;
        Ok(LayerPairs::default())
    }

    fn distill_step(
        self,
        student: &S,
        teacher: &T,
        loss: &DistillLoss<B>,
        at: StepAt,
    ) -> Result<StepOutput<B>> {
        // The student writes in inference mode (no graph); its own tokens are then scored
        // with the training-mode student, whose gradient the loss follows.
        let Scored {
            logits,
            teacher_logits,
            continued,
            correct,
        } = write_and_score(
            &self.prompts,
            &self.generation,
            at,
            student,
            teacher,
            |p, g| {
                student
                    .valid()
                    .generate(p, g)
                    .map_err(|e| batch_error(e, "student's generation", at.batch))
            },
        )?;
        let out = loss.forward_gkd(logits, teacher_logits, continued.targets.clone(), at.epoch)?;
        Ok(StepOutput::new(out.total, correct, continued.count).with_terms(out.terms))
    }

    fn valid_step(
        batch: Self::Valid,
        student: &S::InnerModule,
        at: StepAt,
    ) -> Result<StepOutput<B::InnerBackend>> {
        lm_valid::<B, S>(batch, student, at)
    }
}
