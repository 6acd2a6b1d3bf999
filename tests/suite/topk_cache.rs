//! The sparse top-k teacher cache for token-level distillation: built once and reopened
//! (not rebuilt) for the same teacher and data, read through memory maps while a student
//! trains without the teacher, equal to live token-level KD when k is the vocabulary, and
//! every mismatch (other batches, another temperature, a damaged shard) an error.

use crate::common::*;
use crate::objective::{counting, tiny_lm};
use burn::prelude::*;
use burn_transfer::distill::{Distiller, TopKCache};
use burn_transfer::finetune::Monitor;
use burn_transfer::loss::DistillLossConfig;
use burn_transfer::prelude::*;

fn token_batches() -> Vec<TokenBatch<B>> {
    vec![
        counting::<B>(0, 10),
        counting::<B>(3, 6),
        counting::<B>(7, 8),
    ]
}

fn tuner() -> FineTuner<B> {
    quiet(
        FineTuner::<B>::new()
            .epochs(2)
            .learning_rate(1e-2)
            .seed(3)
            .monitor(Monitor::TrainLoss),
    )
}

fn kd() -> DistillLossConfig {
    DistillLossConfig::new()
        .with_temperature(2.0)
        .with_alpha(0.5)
}

fn modified(path: &std::path::Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn a_cache_keeps_the_top_k_and_the_tail_and_is_reopened_not_rebuilt() {
    B::seed(&device(), 21);
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path().join("cache");
    let teacher = tiny_lm::<Inner>(2);
    let distiller = Distiller::new(teacher.clone(), kd(), tuner()).unwrap();
    let cache = distiller
        .cache_teacher_topk(&token_batches(), 5, &at)
        .unwrap();
    assert_eq!((cache.k(), cache.len(), cache.temperature()), (5, 3, 2.0));
    // 3 batches × 2 rows × 10 positions, each 5 ids + 5 log-probabilities + the tail.
    assert_eq!(cache.disk_bytes(), 8 + 60 * (5 * 8 + 4));

    // What the first position holds: the teacher's five likeliest tokens at T = 2 and the
    // rest of the mass.
    let batches = token_batches();
    let logits = teacher
        .next_token_logits(
            batches[0].input_ids.clone().inner(),
            batches[0].attention_mask.clone().inner(),
        )
        .unwrap();
    let mut probs: Vec<f64> = burn::tensor::activation::softmax(logits.div_scalar(2.0), 2)
        .slice([0..1, 0..1, 0..24])
        .into_data()
        .convert::<f64>()
        .into_vec()
        .unwrap();
    let attached = cache.attach(token_batches(), &kd()).unwrap();
    let (first, _) = attached.epoch().next().unwrap();
    let ids: Vec<i64> = first
        .teacher
        .indices
        .slice([0..1, 0..1, 0..5])
        .into_data()
        .convert::<i64>()
        .into_vec()
        .unwrap();
    let top: Vec<f64> = first
        .teacher
        .log_probs
        .slice([0..1, 0..1, 0..5])
        .into_data()
        .convert::<f64>()
        .into_vec()
        .unwrap();
    for (id, log_p) in ids.iter().zip(&top) {
        assert!((log_p.exp() - probs[*id as usize]).abs() < 1e-6);
    }
    let mut sorted = probs.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    assert!(
        (top[0].exp() - sorted[0]).abs() < 1e-6,
        "the likeliest comes first"
    );
    for id in &ids {
        probs[*id as usize] = 0.0;
    }
    let tail: f64 = first.teacher.tail.slice([0..1, 0..1]).into_scalar().elem();
    assert!((tail.exp() - probs.iter().sum::<f64>()).abs() < 1e-6);

    // The same teacher and data: reopened, the shard untouched.
    let shard = at.join("shard-00000.bin");
    let written = modified(&shard);
    let again = distiller
        .cache_teacher_topk(&token_batches(), 5, &at)
        .unwrap();
    assert_eq!(modified(&shard), written);
    assert_eq!(again.teacher_fingerprint(), cache.teacher_fingerprint());
    // Another teacher: rebuilt, with its own fingerprint, and nothing left beside it.
    let other = Distiller::new(tiny_lm::<Inner>(1), kd(), tuner()).unwrap();
    let rebuilt = other.cache_teacher_topk(&token_batches(), 5, &at).unwrap();
    assert_ne!(rebuilt.teacher_fingerprint(), cache.teacher_fingerprint());
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "no staging or old folder left");
}

/// With k = the vocabulary the cache loses nothing: a student trained from it, without
/// the teacher, follows the live token-level run step for step.
#[test]
fn a_full_cache_trains_the_student_as_the_live_teacher_does() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = tiny_lm::<Inner>(2);
    let live = Distiller::new(teacher.clone(), kd(), tuner()).unwrap();
    let cache = live
        .cache_teacher_topk(&token_batches(), 24, dir.path().join("full"))
        .unwrap();
    drop(teacher);
    B::seed(&device(), 22);
    let student = tiny_lm::<B>(1);
    let from_live = live.fit(student.clone(), &token_batches(), None).unwrap();
    let cached = Distiller::without_teacher(kd(), tuner()).unwrap();
    let from_cache = cached
        .fit(
            student,
            &cache.attach(token_batches(), &kd()).unwrap(),
            None,
        )
        .unwrap();
    for (a, b) in from_live
        .history
        .epochs
        .iter()
        .zip(&from_cache.history.epochs)
    {
        assert!(
            (a.train_loss - b.train_loss).abs() < 1e-4 * (1.0 + a.train_loss.abs()),
            "{} vs {}",
            a.train_loss,
            b.train_loss
        );
    }

    // k = 4 of 24 still trains: the loss falls.
    let small = live
        .cache_teacher_topk(&token_batches(), 4, dir.path().join("k4"))
        .unwrap();
    let outcome = Distiller::without_teacher(kd(), tuner().epochs(6))
        .unwrap()
        .fit(
            tiny_lm::<B>(1),
            &small.attach(token_batches(), &kd()).unwrap(),
            None,
        )
        .unwrap();
    let (first, last) = (
        outcome.history.epochs[0].train_loss,
        outcome.history.epochs.last().unwrap().train_loss,
    );
    assert!(last < first, "{first} → {last}");
}

#[test]
fn a_cache_that_does_not_match_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path().join("cache");
    let distiller = Distiller::new(tiny_lm::<Inner>(1), kd(), tuner()).unwrap();
    let err = distiller
        .cache_teacher_topk(&token_batches(), 0, &at)
        .unwrap_err();
    assert!(err.to_string().contains("top-k cache k"), "{err}");
    let err = distiller
        .cache_teacher_topk(&token_batches(), 25, &at)
        .unwrap_err();
    assert!(err.to_string().contains("24 tokens"), "{err}");
    let cache = distiller
        .cache_teacher_topk(&token_batches(), 3, &at)
        .unwrap();

    // Other batches, fewer batches, another temperature, a feature term.
    let mut other = token_batches();
    other[1] = counting::<B>(4, 6);
    let err = cache.attach(other, &kd()).unwrap_err();
    assert!(err.to_string().contains("batch 1 is not the one"), "{err}");
    let err = cache
        .attach(token_batches()[..2].to_vec(), &kd())
        .unwrap_err();
    assert!(
        err.to_string().contains("2 token batches for a cache of 3"),
        "{err}"
    );
    let err = cache
        .attach(token_batches(), &kd().with_temperature(1.0))
        .unwrap_err();
    assert!(err.to_string().contains("T = 2"), "{err}");
    let err = cache
        .attach(token_batches(), &kd().with_hint(1.0))
        .unwrap_err();
    assert!(err.to_string().contains("hint"), "{err}");

    // A shard cut short, and one that is not there.
    let shard = at.join("shard-00000.bin");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 4]).unwrap();
    let err = TopKCache::open(&at).unwrap_err();
    assert!(err.to_string().contains("the manifest promises"), "{err}");
    std::fs::remove_file(&shard).unwrap();
    assert!(TopKCache::open(&at).is_err());
    assert!(TopKCache::open(dir.path().join("nowhere")).is_err());
}
