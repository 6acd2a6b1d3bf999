//! Distillation of causal LMs through `Distiller::fit`: token-level (`TokenBatch`),
//! sequence-level (`TeacherContinues`) and on-policy (`StudentContinues`), generation by any
//! `CausalLm`, and the checks every mode makes before its first step.

use crate::common::*;
use crate::objective::{counting, tiny_lm};
use burn::module::{AutodiffModule, Module};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn_transfer::distill::{
    DistillBatch, Distiller, StudentContinues, TeacherContinues, TeacherOn, Unlabelled,
};
use burn_transfer::generation::GenerationConfig;
use burn_transfer::loss::DistillLossConfig;
use burn_transfer::models::gpt2::{Gpt2Config, Gpt2LmHeadModel};
use burn_transfer::objective::StepAt;
use burn_transfer::prelude::*;
use std::cell::Cell;

type Lm<Bk> = Gpt2LmHeadModel<Bk>;

const AT: StepAt = StepAt { epoch: 1, batch: 1 };

#[test]
fn token_kd_is_the_mean_kl_over_positions_with_a_real_next_token() {
    // One unpadded row, one padded after 6 tokens: 9 + 5 positions predict a real token.
    B::seed(&device(), 7);
    let student = tiny_lm::<B>(1);
    let teacher = tiny_lm::<Inner>(2);
    let batch = counting::<B>(2, 6);
    let config = DistillLossConfig::new()
        .with_temperature(2.0)
        .with_alpha(1.0);
    let loss = config.init::<B>(&device()).unwrap();
    let out = <TokenBatch<B> as DistillBatch<B, Lm<B>, Lm<Inner>>>::distill_step(
        batch.clone(),
        &student,
        &teacher,
        &loss,
        AT,
    )
    .unwrap();
    assert_eq!(out.count, 14);

    // The same by hand: T²·KL(teacher_T || student_T) summed over the vocabulary, averaged
    // over the 14 positions.
    let ids = batch.input_ids.clone();
    let mask = batch.attention_mask.clone();
    let s = student
        .valid()
        .next_token_logits(ids.clone().inner(), mask.clone().inner())
        .unwrap();
    let t = teacher
        .next_token_logits(ids.inner(), mask.clone().inner())
        .unwrap();
    let (log_s, log_t) = (
        log_softmax(s.div_scalar(2.0), 2),
        log_softmax(t.div_scalar(2.0), 2),
    );
    let kl = (log_t.clone().exp() * (log_t - log_s)).sum_dim(2); // [2, 10, 1]
    let mut expected = 0.0f64;
    let kl = kl.into_data().convert::<f64>().into_vec::<f64>().unwrap();
    let mask = mask
        .inner()
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .unwrap();
    for row in 0..2 {
        for t in 0..9 {
            if mask[row * 10 + t + 1] == 1 {
                expected += kl[row * 10 + t];
            }
        }
    }
    expected = 4.0 * expected / 14.0;
    let got: f64 = out.loss.into_scalar().elem();
    assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
    // α = 1: the KD term alone, logged by name.
    assert_eq!(
        out.terms.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        ["kd", "ce"]
    );
}

#[test]
fn padded_positions_count_in_no_term_whatever_their_ids() {
    // Hugging Face's mask: 0 = padding. Ids under padding must not change the loss.
    let config = || DistillLossConfig::new().with_alpha(0.5);
    let a = counting::<B>(3, 5);
    let mut ids = a
        .input_ids
        .clone()
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .unwrap();
    for t in 5..10 {
        ids[10 + t] = 23 - t as i64; // row 2, under padding
    }
    let b = TokenBatch::new(
        Tensor::from_data(TensorData::new(ids, [2, 10]), &device()),
        a.attention_mask.clone(),
    );
    // One pair of models for both batches (re-seeding the global generator between them
    // would race with the tests running beside this one).
    let (student, teacher) = (tiny_lm::<B>(1), tiny_lm::<Inner>(2));
    let loss = config().init::<B>(&device()).unwrap();
    let step = |batch: TokenBatch<B>| -> f32 {
        <TokenBatch<B> as DistillBatch<B, Lm<B>, Lm<Inner>>>::distill_step(
            batch, &student, &teacher, &loss, AT,
        )
        .unwrap()
        .loss
        .into_scalar()
    };
    let (la, lb) = (step(a), step(b));
    assert!((la - lb).abs() < 1e-6, "{la} vs {lb}");
}

#[test]
fn a_causal_lm_student_distils_through_distiller_fit() {
    B::seed(&device(), 11);
    let teacher = tiny_lm::<B>(2);
    let train: Vec<TokenBatch<B>> = (0..4).map(|s| counting(s * 3, 7)).collect();
    let valid: Vec<TokenBatch<Inner>> = vec![counting(1, 8)];
    // The teacher learns the language first.
    let teacher = quiet(FineTuner::<B>::new().learning_rate(1e-2).epochs(8).seed(2))
        .train(teacher, &NextTokenLoss, &train, Some(&valid))
        .unwrap()
        .best_model
        .valid();
    let config = DistillLossConfig::new()
        .with_temperature(1.0)
        .with_alpha(0.5);
    let distiller = Distiller::new(
        teacher,
        config,
        quiet(FineTuner::<B>::new().learning_rate(1e-2).epochs(4).seed(2)),
    )
    .unwrap();
    let outcome = distiller
        .fit(tiny_lm::<B>(1), &train, Some(&valid))
        .unwrap();
    let epochs = &outcome.history.epochs;
    assert_eq!(epochs.len(), 4);
    assert!(epochs[0].terms.contains_key("kd") && epochs[0].terms.contains_key("ce"));
    assert!(epochs[3].train_loss < epochs[0].train_loss, "{epochs:?}");
    assert!(epochs[3].valid_loss.unwrap() < epochs[0].valid_loss.unwrap());
}

#[test]
fn a_student_with_another_vocabulary_is_named_as_such() {
    let teacher = tiny_lm::<Inner>(1);
    let other = Gpt2Config {
        vocab_size: 30,
        n_positions: 16,
        n_embd: 16,
        n_layer: 1,
        n_head: 2,
        bos_token_id: None,
        eos_token_id: None,
        ..Gpt2Config::default()
    };
    let student = Lm::<B>::new(&other, &device()).unwrap();
    let tuner = quiet(FineTuner::<B>::new()).monitor(Monitor::TrainLoss);
    let distiller = Distiller::new(teacher, DistillLossConfig::new(), tuner).unwrap();
    let err = distiller
        .fit(student, &vec![counting::<B>(0, 10)], None)
        .unwrap_err();
    assert!(err.to_string().contains("vocabulary"), "{err}");
}

/// Counts how many epochs were drawn from it.
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

#[test]
fn a_term_the_mode_cannot_feed_is_refused_before_the_first_step() {
    let tuner = || quiet(FineTuner::<B>::new().epochs(1));
    let lm_train = Watched {
        batches: vec![counting::<B>(0, 10)],
        drawn: Cell::new(0),
    };
    for (config, term) in [
        (DistillLossConfig::new().with_hint(1.0), "hint"),
        (DistillLossConfig::new().with_cosine(1.0), "cosine"),
        (DistillLossConfig::new().with_dkd(1.0, 1.0, 8.0), "dkd"),
    ] {
        let distiller = Distiller::new(tiny_lm::<Inner>(1), config, tuner()).unwrap();
        let err = distiller.fit(tiny_lm::<B>(1), &lm_train, None).unwrap_err();
        assert!(
            matches!(&err, TransferError::InvalidConfig { value, .. } if value.contains(term)),
            "{err}"
        );
    }
    assert_eq!(lm_train.drawn.get(), 0, "no batch was drawn");

    // An MLP exposes hidden states, not the stage maps attention transfer compares.
    let d = device();
    let teacher: TransferModel<Inner, MlpBackbone<Inner>, LinearHead<Inner>> =
        TransferModel::with_linear_head(MlpBackbone::new(&[8, 16], &d).unwrap(), 4, &d).unwrap();
    let distiller = Distiller::new(
        teacher,
        DistillLossConfig::new().with_attention(1.0),
        tuner(),
    )
    .unwrap();
    let unlabelled = Watched {
        batches: batches::<B>(2, 8, 8, 4)
            .into_iter()
            .map(|b| Unlabelled(b.inputs))
            .collect(),
        drawn: Cell::new(0),
    };
    let err = distiller.fit(mlp_model(), &unlabelled, None).unwrap_err();
    assert!(err.to_string().contains("attention"), "{err}");
    assert_eq!(unlabelled.drawn.get(), 0);
}

/// GPT-2 behind the `CausalLm` trait alone: generation through the trait's default (the
/// whole sequence again for every token, no cache).
#[derive(Module, Debug)]
struct Uncached<B: Backend> {
    lm: Lm<B>,
}

impl<Lb: Backend> CausalLm<Lb> for Uncached<Lb> {
    fn vocab_size(&self) -> usize {
        self.lm.vocab_size()
    }

    fn next_token_logits(
        &self,
        ids: Tensor<Lb, 2, Int>,
        mask: Tensor<Lb, 2, Int>,
    ) -> burn_transfer::Result<Tensor<Lb, 3>> {
        self.lm.next_token_logits(ids, mask)
    }
}

#[test]
fn any_causal_lm_generates_as_gpt2_does_with_its_cache() {
    B::seed(&device(), 5);
    let lm = tiny_lm::<Inner>(2);
    let uncached = Uncached { lm: lm.clone() };
    let prompts = vec![vec![1, 2, 3], vec![7, 8]];
    let greedy = GenerationConfig::greedy(6);
    assert_eq!(
        CausalLm::generate(&uncached, &prompts, &greedy).unwrap(),
        lm.generate(&prompts, &greedy).unwrap()
    );
    // Prompts of one length draw in the same order either way: sampling gives the same
    // tokens too.
    let same_length = vec![vec![1, 2, 3], vec![9, 4, 6], vec![5, 5, 5]];
    let sampling = GenerationConfig::sampling(6, 1.5, 42).with_top_k(8);
    let free = CausalLm::generate(&uncached, &same_length, &sampling).unwrap();
    assert_eq!(free, lm.generate(&same_length, &sampling).unwrap());
    // An end token stops its row in the middle. The weights come from a seed other tests
    // may share, so the end token is read off the free run: the first token some row draws
    // at a step `k ≥ 1` that no row drew before. Until a row finishes every row draws as in
    // the free run, so that row ends exactly there.
    let (row, step) = (1..6)
        .flat_map(|k| (0..free.len()).map(move |r| (r, k)))
        .find(|&(r, k)| !free.iter().any(|row| row[..k].contains(&free[r][k])))
        .unwrap_or((0, 0));
    let eos = free[row][step];
    let ending = sampling.clone().with_eos_token_id(eos);
    let ours = CausalLm::generate(&uncached, &same_length, &ending).unwrap();
    assert_eq!(ours, lm.generate(&same_length, &ending).unwrap());
    assert_eq!(
        ours[row],
        free[row][..=step],
        "row {row} ends at {eos}: {ours:?}"
    );
    // Ids outside the vocabulary are an error, not a panic.
    assert!(CausalLm::generate(&uncached, &[vec![99]], &greedy).is_err());
}

/// Per-position log-probabilities `[rows, width, vocab]` (inner backend) of `model` on
/// each prompt followed by its continuation, and the positions scoring a continuation token.
fn scored(
    model: &Lm<Inner>,
    prompts: &[Vec<u32>],
    continuations: &[Vec<u32>],
) -> Vec<(Vec<f64>, usize, u32)> {
    let mut out = Vec::new();
    for (p, c) in prompts.iter().zip(continuations) {
        let ids: Vec<i64> = p.iter().chain(c).map(|&t| t as i64).collect();
        let n = ids.len();
        let ids = Tensor::<Inner, 2, Int>::from_data(TensorData::new(ids, [1, n]), &device());
        let logits = model
            .next_token_logits(ids.clone(), ids.ones_like())
            .unwrap();
        let log_p = log_softmax(logits, 2);
        let vocab = log_p.dims()[2];
        let values = log_p
            .into_data()
            .convert::<f64>()
            .into_vec::<f64>()
            .unwrap();
        for (k, &token) in c.iter().enumerate() {
            let t = p.len() - 1 + k;
            out.push((values[t * vocab..(t + 1) * vocab].to_vec(), t, token));
        }
    }
    out
}

#[test]
fn sequence_level_kd_trains_the_student_on_the_teachers_continuations() {
    B::seed(&device(), 9);
    let student = tiny_lm::<B>(1);
    let teacher = tiny_lm::<Inner>(2);
    let prompts = vec![vec![3, 4, 5], vec![10, 11]];
    let generation = GenerationConfig::greedy(4);
    // α = 0: the cross-entropy of the student on the teacher's tokens alone.
    let loss = DistillLossConfig::new()
        .with_alpha(0.0)
        .init::<B>(&device())
        .unwrap();
    let batch = TeacherContinues {
        prompts: prompts.clone(),
        generation: generation.clone(),
    };
    let out =
        DistillBatch::<B, Lm<B>, Lm<Inner>>::distill_step(batch, &student, &teacher, &loss, AT)
            .unwrap();
    assert_eq!(out.count, 8);
    let continuations = teacher.generate(&prompts, &generation).unwrap();
    let rows = scored(&student.valid(), &prompts, &continuations);
    let expected = -rows
        .iter()
        .map(|(lp, _, tok)| lp[*tok as usize])
        .sum::<f64>()
        / 8.0;
    let got: f64 = out.loss.into_scalar().elem();
    assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
}

#[test]
fn on_policy_kd_scores_the_students_own_tokens_with_the_teacher() {
    B::seed(&device(), 13);
    let student = tiny_lm::<B>(1);
    let teacher = tiny_lm::<Inner>(2);
    let prompts = vec![vec![2, 3], vec![20, 21, 22]];
    let generation = GenerationConfig::greedy(3);
    // β = 0: forward KL(teacher ‖ student) on the positions the student wrote, T = 1.
    let loss = DistillLossConfig::new()
        .with_temperature(1.0)
        .with_gkd_beta(0.0)
        .init::<B>(&device())
        .unwrap();
    let batch = StudentContinues {
        prompts: prompts.clone(),
        generation: generation.clone(),
    };
    let out =
        DistillBatch::<B, Lm<B>, Lm<Inner>>::distill_step(batch, &student, &teacher, &loss, AT)
            .unwrap();
    assert_eq!(out.count, 6);
    assert_eq!(out.terms[0].0, "gkd");
    let own = student.valid().generate(&prompts, &generation).unwrap();
    let s = scored(&student.valid(), &prompts, &own);
    let t = scored(&teacher, &prompts, &own);
    let kl: f64 = s
        .iter()
        .zip(&t)
        .map(|((ls, _, _), (lt, _, _))| {
            lt.iter()
                .zip(ls)
                .map(|(a, b)| a.exp() * (a - b))
                .sum::<f64>()
        })
        .sum::<f64>()
        / 6.0;
    let got: f64 = out.loss.into_scalar().elem();
    assert!((got - kl).abs() < 1e-5, "{got} vs {kl}");
    // β outside [0, 1] is refused with the configuration.
    let err = Distiller::new(
        tiny_lm::<Inner>(1),
        DistillLossConfig::new().with_gkd_beta(1.5),
        quiet(FineTuner::<B>::new()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("gkd_beta"), "{err}");
}

#[test]
fn sequence_level_and_on_policy_students_learn_through_distiller_fit() {
    B::seed(&device(), 17);
    let train: Vec<TokenBatch<B>> = (0..4).map(|s| counting(s * 3, 10)).collect();
    let valid: Vec<TokenBatch<Inner>> = vec![counting(1, 10)];
    let teacher = quiet(FineTuner::<B>::new().learning_rate(1e-2).epochs(10).seed(2))
        .train(tiny_lm::<B>(2), &NextTokenLoss, &train, Some(&valid))
        .unwrap()
        .best_model
        .valid();
    let prompts: Vec<Vec<u32>> = (0..8).map(|s| vec![s * 3 % 24, (s * 3 + 1) % 24]).collect();
    let tuner = || quiet(FineTuner::<B>::new().learning_rate(1e-2).epochs(5).seed(2));
    let config = DistillLossConfig::new()
        .with_temperature(1.0)
        .with_alpha(0.5);
    let distiller = Distiller::new(teacher, config, tuner()).unwrap();
    let sequence: Vec<TeacherContinues> = prompts
        .chunks(4)
        .map(|p| TeacherContinues {
            prompts: p.to_vec(),
            generation: GenerationConfig::greedy(6),
        })
        .collect();
    let outcome = distiller
        .fit(tiny_lm::<B>(1), &sequence, Some(&valid))
        .unwrap();
    let e = &outcome.history.epochs;
    assert!(e[4].valid_loss.unwrap() < e[0].valid_loss.unwrap(), "{e:?}");
    assert!(e[0].terms.contains_key("kd") && e[0].terms.contains_key("ce"));

    let on_policy: Vec<StudentContinues> = prompts
        .chunks(4)
        .map(|p| StudentContinues {
            prompts: p.to_vec(),
            generation: GenerationConfig::sampling(6, 1.0, 3),
        })
        .collect();
    let outcome = distiller
        .fit(tiny_lm::<B>(1), &on_policy, Some(&valid))
        .unwrap();
    let e = &outcome.history.epochs;
    assert!(e[4].train_loss < e[0].train_loss, "{e:?}");
    assert!(e[0].terms.contains_key("gkd"));
}

#[test]
fn a_teacher_seen_through_teacher_on_distils_exactly_as_the_teacher_itself() {
    // The teacher behind `TeacherOn` (here on the same backend: the suite runs on ndarray;
    // tests/backends.rs puts it on Flex and wgpu) has its inputs and outputs copied across
    // and generates on its own side: the token-level and sequence-level histories are the
    // plain teacher's, bit for bit.
    B::seed(&device(), 23);
    let train: Vec<TokenBatch<B>> = (0..3).map(|s| counting(s * 3, 9)).collect();
    let valid: Vec<TokenBatch<Inner>> = vec![counting(1, 9)];
    let teacher = quiet(FineTuner::<B>::new().learning_rate(1e-2).epochs(4).seed(2))
        .train(tiny_lm::<B>(2), &NextTokenLoss, &train, Some(&valid))
        .unwrap()
        .best_model
        .valid();
    let student = tiny_lm::<B>(1);
    let tuner = || quiet(FineTuner::<B>::new().learning_rate(1e-2).epochs(2).seed(2));
    let config = DistillLossConfig::new()
        .with_temperature(2.0)
        .with_alpha(0.5);
    let plain = Distiller::new(teacher.clone(), config.clone(), tuner()).unwrap();
    let remote = Distiller::new(
        TeacherOn::<Inner, Inner, Lm<Inner>>::new(teacher),
        config,
        tuner(),
    )
    .unwrap();
    let losses = |h: &burn_transfer::finetune::History| -> Vec<(f64, Option<f64>)> {
        h.epochs
            .iter()
            .map(|e| (e.train_loss, e.valid_loss))
            .collect()
    };
    let a = plain.fit(student.clone(), &train, Some(&valid)).unwrap();
    let b = remote.fit(student.clone(), &train, Some(&valid)).unwrap();
    assert_eq!(losses(&a.history), losses(&b.history));

    let sequence = vec![TeacherContinues {
        prompts: vec![vec![1, 2], vec![5, 6], vec![9, 10]],
        generation: GenerationConfig::greedy(5),
    }];
    let a = plain.fit(student.clone(), &sequence, Some(&valid)).unwrap();
    let b = remote.fit(student, &sequence, Some(&valid)).unwrap();
    assert_eq!(losses(&a.history), losses(&b.history));
}
