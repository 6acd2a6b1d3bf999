use super::*;
use crate::adapter::{LoraConfig, LoraModel};
use crate::freeze::Freeze;
use crate::loss::functional::causal_lm_loss;
use crate::task::CausalLm;
use burn::backend::{Autodiff, NdArray};
use burn::tensor::Tolerance;

type N = NdArray;

fn tiny() -> Gpt2Config {
    let mut config = Gpt2Config::gpt2().shallower(2).narrower(32, 4);
    config.vocab_size = 50;
    config.n_positions = 24;
    config.eos_token_id = Some(3);
    config
}

fn model(config: &Gpt2Config) -> Gpt2LmHeadModel<N> {
    Gpt2LmHeadModel::new(config, &Default::default()).unwrap()
}

fn ids(rows: &[&[i64]]) -> Tensor<N, 2, Int> {
    let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_data(
        TensorData::new(flat, [rows.len(), rows[0].len()]),
        &Default::default(),
    )
}

/// Feeding a padded batch in three pieces through one cache gives the logits of feeding
/// it whole.
#[test]
fn the_cache_continues_the_whole_model() {
    let model = model(&tiny());
    let tokens = ids(&[&[5, 6, 7, 8, 9, 10, 11], &[12, 13, 14, 15, 16, 0, 0]]);
    let mask = ids(&[&[1, 1, 1, 1, 1, 1, 1], &[1, 1, 1, 1, 1, 0, 0]]);
    let whole = model
        .forward(
            Gpt2Input::with_mask(tokens.clone(), mask.clone()),
            None,
            false,
        )
        .unwrap()
        .logits;
    let mut cache = KeyValueCache::new();
    let mut pieces = Vec::new();
    for range in [0..3, 3..4, 4..7] {
        let input = Gpt2Input::with_mask(
            tokens.clone().slice([0..2, range.clone()]),
            mask.clone().slice([0..2, range.clone()]),
        );
        pieces.push(
            model
                .forward(input, Some(&mut cache), false)
                .unwrap()
                .logits,
        );
        assert_eq!(cache.len(), range.end);
    }
    assert_eq!(cache.layers().len(), 2);
    Tensor::cat(pieces, 1)
        .into_data()
        .assert_approx_eq::<f32>(&whole.into_data(), Tolerance::rel_abs(1e-4, 1e-5));
}

/// Greedy generation with the cache equals taking the argmax of a full forward pass over
/// the growing sequence, and a prompt continues the same way alone as left-padded in a
/// batch with a longer one.
#[test]
fn generation_with_the_cache_equals_recomputing_and_batching_changes_nothing() {
    let config = tiny();
    let model = model(&config);
    let prompt = vec![7u32, 8, 9];
    let generated = model
        .generate(
            std::slice::from_ref(&prompt),
            &GenerationConfig::greedy(6).with_eos_token_id(49),
        )
        .unwrap();
    let mut sequence = prompt.clone();
    for _ in 0..6 {
        let input = Gpt2Input::<N>::from_ids(&[sequence.clone()], 50, &Default::default()).unwrap();
        let logits = model.forward(input, None, false).unwrap().logits;
        let n = sequence.len();
        let last: Vec<f32> = logits.slice([0..1, n - 1..n]).into_data().to_vec().unwrap();
        let best = (0..last.len()).fold(0, |b, i| if last[i] > last[b] { i } else { b });
        sequence.push(best as u32);
        if best == 49 {
            break;
        }
    }
    assert_eq!(generated[0], sequence[prompt.len()..]);
    let batched = model
        .generate(
            &[vec![1, 2, 3, 4, 5, 6], prompt],
            &GenerationConfig::greedy(6).with_eos_token_id(49),
        )
        .unwrap();
    assert_eq!(batched[1], generated[0]);
}

/// Rows stop at their end-of-text token; seeded sampling repeats itself, and top-k 1 is
/// greedy.
#[test]
fn rows_stop_at_the_end_token_and_sampling_is_seeded() {
    let config = tiny();
    let model = model(&config);
    let prompts = [vec![10u32, 11], vec![20, 21, 22]];
    let greedy = model
        .generate(&prompts, &GenerationConfig::greedy(8))
        .unwrap();
    for row in &greedy {
        let end = row.iter().position(|&t| t == 3);
        assert_eq!(row.len(), end.map_or(8, |e| e + 1), "{row:?}");
    }
    let sampling = GenerationConfig::sampling(8, 1.3, 42).with_top_p(0.9);
    let a = model.generate(&prompts, &sampling).unwrap();
    assert_eq!(a, model.generate(&prompts, &sampling).unwrap());
    let top1 = GenerationConfig::sampling(8, 0.7, 1).with_top_k(1);
    assert_eq!(model.generate(&prompts, &top1).unwrap(), greedy);
}

#[test]
fn inputs_the_model_cannot_take_are_errors_not_panics() {
    let config = tiny();
    let model = model(&config);
    let device = Default::default();
    let long = Gpt2Input::<N>::from_ids(&[vec![1; 25]], 50, &device).unwrap();
    let err = model.forward(long, None, false).unwrap_err().to_string();
    assert!(err.contains("n_positions"), "{err}");
    let bad_mask = Gpt2Input::with_mask(ids(&[&[1, 2, 3]]), ids(&[&[1, 1]]));
    let err = model
        .forward(bad_mask, None, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("attention_mask"), "{err}");
    let mut cache = KeyValueCache::new();
    model
        .forward(
            Gpt2Input::new(ids(&[&[1, 2], &[3, 4]])),
            Some(&mut cache),
            false,
        )
        .unwrap();
    let err = model
        .forward(Gpt2Input::new(ids(&[&[5]])), Some(&mut cache), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("new cache"), "{err}");
    let err = Gpt2Input::<N>::from_ids(&[vec![1, 50]], 50, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("vocabulary size 50"), "{err}");
    assert!(Gpt2Input::<N>::from_ids(&[vec![1, 2], vec![3]], 50, &device).is_err());
    for (prompts, config) in [
        (vec![vec![1, 2]], GenerationConfig::greedy(23)),
        (vec![vec![]], GenerationConfig::greedy(2)),
        (vec![vec![60]], GenerationConfig::greedy(2)),
        (vec![vec![1]], GenerationConfig::sampling(2, -1.0, 0)),
    ] {
        assert!(model.generate(&prompts, &config).is_err(), "{prompts:?}");
    }
    let err = model
        .perplexity(&[crate::task::TokenBatch::unpadded(ids(&[&[1]]))])
        .unwrap_err()
        .to_string();
    assert!(err.contains("next token"), "{err}");
    let ones = ids(&[&[1, 2]]);
    assert!(
        causal_lm_loss(
            Tensor::<N, 3>::zeros([1, 2, 50], &device),
            ones.clone(),
            ones.zeros_like()
        )
        .is_err()
    );
    assert!(
        causal_lm_loss(
            Tensor::<N, 3>::zeros([1, 2, 50], &device),
            ids(&[&[1]]),
            ones
        )
        .is_err()
    );
}

/// The LM loss is the mean next-token cross-entropy over real targets: with uniform logits
/// it is ln(vocab), whatever the padding.
#[test]
fn the_causal_lm_loss_averages_over_real_targets() {
    let device = Default::default();
    let logits = Tensor::<N, 3>::zeros([2, 4, 50], &device);
    let loss = causal_lm_loss(
        logits,
        ids(&[&[1, 2, 3, 4], &[5, 6, 0, 0]]),
        ids(&[&[1, 1, 1, 1], &[1, 1, 0, 0]]),
    )
    .unwrap()
    .into_scalar();
    assert!((loss as f64 - 50f64.ln()).abs() < 1e-5, "{loss}");
    // Logits that put everything on the next token give a loss of 0 where they apply.
    let mut values = vec![-30.0f32; 3 * 50];
    for (t, next) in [2usize, 3, 4].iter().enumerate() {
        values[t * 50 + next] = 30.0;
    }
    let logits = Tensor::<N, 3>::from_data(TensorData::new(values, [1, 3, 50]), &device);
    let tokens = ids(&[&[1, 2, 3]]);
    let padded = causal_lm_loss(logits, tokens.clone(), ids(&[&[1, 1, 1]])).unwrap();
    assert!(padded.into_scalar() < 1e-6);
}

/// A student keeps the chosen blocks with the teacher's weights; bad selections are errors.
#[test]
fn students_keep_the_teachers_blocks() {
    let mut config = tiny();
    config.n_layer = 4;
    let teacher = model(&config);
    let student = teacher
        .keep_layers(&crate::distill::init::every_other(4))
        .unwrap();
    assert_eq!(student.num_layers(), 2);
    assert_eq!(student.config().n_layer, 2);
    let weight = |m: &Gpt2LmHeadModel<N>, i: usize| -> Vec<f32> {
        m.transformer.h[i]
            .mlp
            .c_fc
            .weight
            .val()
            .into_data()
            .to_vec()
            .unwrap()
    };
    assert_eq!(weight(&student, 1), weight(&teacher, 2));
    assert!(teacher.keep_layers(&[]).is_err());
    let err = teacher.keep_layers(&[0, 4]).unwrap_err().to_string();
    assert!(err.contains("transformer.h"), "{err}");
}

/// The student of a teacher that was trained (autodiff → `valid()`, as `FineTuner` hands it
/// back) trains once made with `init::trainable`: every parameter gets a gradient.
#[test]
fn the_student_of_a_trained_teacher_trains() {
    use crate::freeze::Freeze;
    use burn::module::AutodiffModule;
    type A = Autodiff<NdArray>;
    let mut config = tiny();
    config.n_layer = 4;
    let trained = Gpt2LmHeadModel::<A>::new(&config, &Default::default()).unwrap();
    let teacher = trained.valid();
    let student: Gpt2LmHeadModel<A> =
        crate::distill::init::trainable(teacher.keep_layers(&[0, 2]).unwrap());
    let summary = student.param_summary();
    assert_eq!(summary.trainable(), summary.total());
    let x = Tensor::<A, 2, Int>::from_data(
        TensorData::new(vec![1i64, 2, 3], [1, 3]),
        &Default::default(),
    );
    let grads = student
        .next_token_logits(x.clone(), x.ones_like())
        .unwrap()
        .powi_scalar(2)
        .mean()
        .backward();
    assert!(
        student.transformer.h[1]
            .mlp
            .c_fc
            .weight
            .grad(&grads)
            .is_some()
    );
    assert!(student.transformer.wte.weight.grad(&grads).is_some());
}

/// LoRA finds the fused query/key/value projections by path and trains only its factors.
#[test]
fn lora_adapts_the_attention_projections_by_path() {
    type A = Autodiff<NdArray>;
    let device = Default::default();
    let base = Gpt2LmHeadModel::<A>::new(&tiny(), &device).unwrap();
    let lora = LoraModel::new(base, "a", LoraConfig::new(4, 8.0, ["*.attn.c_attn"])).unwrap();
    let targets = lora.active().unwrap().targets();
    assert_eq!(targets.len(), 2);
    // A [4, 32] and B [96, 4] for each block's c_attn.
    assert_eq!(lora.param_summary().trainable(), 2 * (4 * 32 + 96 * 4));
    let x = Tensor::<A, 2, Int>::from_data(TensorData::new(vec![1i64, 2, 3], [1, 3]), &device);
    let logits = lora.next_token_logits(x.clone(), x.ones_like()).unwrap();
    let grads = logits.powi_scalar(2).mean().backward();
    let adapter = &lora.adapters[0];
    assert!(adapter.weights[0].lora_a.grad(&grads).is_some());
    assert!(
        lora.base.transformer.h[0]
            .attn
            .c_attn
            .weight
            .grad(&grads)
            .is_none()
    );
}

#[test]
fn the_configuration_saves_and_loads_as_hugging_face_json() {
    use burn::config::Config;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let config = tiny();
    config.save(&path).unwrap();
    assert_eq!(Gpt2Config::from_json_file(&path).unwrap(), config);
}
