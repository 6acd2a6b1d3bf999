//! Distillation terms against PyTorch's values (`tests/fixtures/kd_fixtures.json`, computed
//! in float64 by torch 2.15; inputs are exact in f32), and their properties.
use crate::common::*;
use burn::prelude::*;
use burn_transfer::loss::functional::{
    cosine_distance, cross_entropy, kd_kl, kd_kl_tokens, kd_kl_topk_tokens, mse,
};
use burn_transfer::loss::{DistillLossConfig, DistillTargets};
use serde_json::Value;

const TOL: f64 = 1e-5;

fn fixtures() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kd_fixtures.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn matrix<Bk: Backend>(v: &Value) -> Tensor<Bk, 2> {
    let rows: Vec<Vec<f32>> = serde_json::from_value(v.clone()).unwrap();
    let (r, c) = (rows.len(), rows[0].len());
    Tensor::from_data(TensorData::new(rows.concat(), [r, c]), &Default::default())
}

fn labels<Bk: Backend>(v: &Value) -> Tensor<Bk, 1, Int> {
    let l: Vec<i64> = serde_json::from_value(v.clone()).unwrap();
    let n = l.len();
    Tensor::from_data(TensorData::new(l, [n]), &Default::default())
}

fn scalar<Bk: Backend>(t: Tensor<Bk, 1>) -> f64 {
    t.into_scalar().elem::<f64>()
}

fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= TOL + TOL * want.abs(),
        "{what}: got {got}, PyTorch {want}"
    );
}

#[test]
fn kd_ce_mse_cosine_match_pytorch() {
    let f = fixtures();
    let (inp, exp) = (&f["inputs"], &f["expected"]);
    let s = matrix::<Inner>(&inp["student_logits"]);
    let t = matrix::<Inner>(&inp["teacher_logits"]);
    let y = labels::<Inner>(&inp["labels"]);
    for case in exp["kd_kl"].as_array().unwrap() {
        let temp = case["T"].as_f64().unwrap();
        close(
            scalar(kd_kl(s.clone(), t.clone(), temp)),
            case["value"].as_f64().unwrap(),
            &format!("kd_kl T={temp}"),
        );
    }
    close(
        scalar(cross_entropy(s.clone(), y.clone(), 0.0)),
        exp["ce"]["value"].as_f64().unwrap(),
        "ce",
    );
    let eps = exp["ce_label_smoothing"]["smoothing"].as_f64().unwrap() as f32;
    close(
        scalar(cross_entropy(s.clone(), y.clone(), eps)),
        exp["ce_label_smoothing"]["value"].as_f64().unwrap(),
        "ce with label smoothing",
    );
    close(
        scalar(mse(s.clone(), t.clone())),
        exp["mse_logits"]["value"].as_f64().unwrap(),
        "mse",
    );
    let hs = matrix::<Inner>(&inp["hidden_student"]);
    let ht = matrix::<Inner>(&inp["hidden_teacher"]);
    close(
        scalar(cosine_distance(hs, ht)),
        exp["cosine_embedding"]["value"].as_f64().unwrap(),
        "cosine",
    );
}

#[test]
fn alpha_mix_and_its_gradient_match_pytorch() {
    let f = fixtures();
    let (inp, exp) = (&f["inputs"], &f["expected"]);
    let cases = exp["kd_total_grad_student_all"].as_array().unwrap();
    assert!(!cases.is_empty());
    for (total, grad_case) in exp["kd_total"].as_array().unwrap().iter().zip(cases) {
        let temp = total["T"].as_f64().unwrap();
        let alpha = total["alpha"].as_f64().unwrap();
        assert_eq!(
            (grad_case["T"].as_f64(), grad_case["alpha"].as_f64()),
            (Some(temp), Some(alpha))
        );
        let loss = DistillLossConfig::new()
            .with_temperature(temp)
            .with_alpha(alpha)
            .init::<B>(&device())
            .unwrap();
        let s = matrix::<B>(&inp["student_logits"]).require_grad();
        let t = matrix::<B>(&inp["teacher_logits"]);
        let out = loss
            .forward(
                DistillTargets::new(s.clone(), t).with_labels(labels::<B>(&inp["labels"])),
                1,
            )
            .unwrap();
        close(
            scalar(out.total.clone()),
            total["value"].as_f64().unwrap(),
            &format!("kd_total T={temp} α={alpha}"),
        );
        let grads = out.total.backward();
        let g = s.grad(&grads).unwrap().to_data().to_vec::<f32>().unwrap();
        let want: Vec<Vec<f64>> = serde_json::from_value(grad_case["grad"].clone()).unwrap();
        for (got, want) in g.iter().zip(want.concat()) {
            close(
                *got as f64,
                want,
                &format!("d kd_total / d s, T={temp} α={alpha}"),
            );
        }
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn logits(rows: usize, cols: usize) -> impl Strategy<Value = Vec<f32>> {
        proptest::collection::vec(-8.0f32..8.0, rows * cols)
    }

    fn t2(v: &[f32], rows: usize, cols: usize) -> Tensor<Inner, 2> {
        Tensor::from_data(TensorData::new(v.to_vec(), [rows, cols]), &device())
    }

    fn kd(s: &[f32], t: &[f32], temp: f64) -> f64 {
        scalar(kd_kl(t2(s, 4, 6), t2(t, 4, 6), temp))
    }

    /// The teacher's top `k` of each of the 4 positions `[1, 4, 6]` at `temp`: ids, their
    /// log-probabilities and the log of the rest, as a top-k cache stores them.
    fn sparse(
        t: &[f32],
        k: usize,
        temp: f64,
    ) -> (Tensor<Inner, 3, Int>, Tensor<Inner, 3>, Tensor<Inner, 2>) {
        let (mut ids, mut top, mut tail) = (Vec::new(), Vec::new(), Vec::new());
        for row in t.chunks(6) {
            let scaled: Vec<f64> = row.iter().map(|v| *v as f64 / temp).collect();
            let max = scaled.iter().cloned().fold(f64::MIN, f64::max);
            let log_z = max + scaled.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            let mut order: Vec<usize> = (0..6).collect();
            order.sort_by(|a, b| scaled[*b].total_cmp(&scaled[*a]));
            ids.extend(order[..k].iter().map(|&j| j as i64));
            top.extend(order[..k].iter().map(|&j| (scaled[j] - log_z) as f32));
            let rest: f64 = order[k..].iter().map(|&j| (scaled[j] - log_z).exp()).sum();
            tail.push(rest.ln() as f32);
        }
        let d = device();
        (
            Tensor::from_data(TensorData::new(ids, [1, 4, k]), &d),
            Tensor::from_data(TensorData::new(top, [1, 4, k]), &d),
            Tensor::from_data(TensorData::new(tail, [1, 4]), &d),
        )
    }

    fn t3(v: &[f32]) -> Tensor<Inner, 3> {
        Tensor::from_data(TensorData::new(v.to_vec(), [1, 4, 6]), &device())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Merging the teacher's tail into one bucket can only lose information: the sparse
        /// term lies between 0 and the full token KD, and equals it when k is the whole
        /// vocabulary.
        #[test]
        fn top_k_kd_is_bounded_by_full_kd_and_equals_it_at_full_k(s in logits(4, 6), t in logits(4, 6), k in 1usize..=6, temp in 0.5f64..4.0) {
            let full = scalar(kd_kl_tokens(t3(&s), t3(&t), None, temp));
            let (ids, top, tail) = sparse(&t, k, temp);
            let topk = scalar(kd_kl_topk_tokens(t3(&s), ids, top, tail, None, temp));
            prop_assert!(topk >= -1e-5, "{}", topk);
            prop_assert!(topk <= full + 1e-4 * (1.0 + full), "{} > {}", topk, full);
            if k == 6 {
                prop_assert!((topk - full).abs() <= 1e-4 * (1.0 + full), "{} vs {}", topk, full);
            }
        }

        #[test]
        fn kd_is_non_negative(s in logits(4, 6), t in logits(4, 6), temp in 0.5f64..8.0) {
            prop_assert!(kd(&s, &t, temp) >= -1e-6);
        }

        #[test]
        fn kd_is_zero_when_student_equals_teacher(s in logits(4, 6), temp in 0.5f64..8.0) {
            prop_assert!(kd(&s, &s, temp).abs() < 1e-5);
        }

        #[test]
        fn kd_ignores_a_constant_added_to_a_row(s in logits(4, 6), t in logits(4, 6), c in -50.0f32..50.0, row in 0usize..4) {
            let mut shifted = s.clone();
            for v in &mut shifted[row * 6..(row + 1) * 6] {
                *v += c;
            }
            let (a, b) = (kd(&s, &t, 2.0), kd(&shifted, &t, 2.0));
            prop_assert!((a - b).abs() < 1e-4 * (1.0 + a.abs()), "{} vs {}", a, b);
        }

        #[test]
        fn t_squared_keeps_the_soft_gradient_scale(s in proptest::collection::vec(-2.0f32..2.0, 24), t in proptest::collection::vec(-2.0f32..2.0, 24)) {
            // d(T²·KL)/ds = T·(p_s − p_t) → (s − t − mean)/C as T grows: comparable across T.
            // Without the T² factor the gradient would shrink by T² (a ratio of 4 here).
            let norm = |temp: f64| {
                let sv = Tensor::<B, 2>::from_data(TensorData::new(s.clone(), [4, 6]), &device()).require_grad();
                let tv = Tensor::<B, 2>::from_data(TensorData::new(t.clone(), [4, 6]), &device());
                let g = kd_kl(sv.clone(), tv, temp).backward();
                let g = sv.grad(&g).unwrap();
                g.powi_scalar(2).sum().sqrt().into_scalar().elem::<f64>()
            };
            let (n4, n8) = (norm(4.0), norm(8.0));
            prop_assume!(n8 > 1e-4);
            let ratio = n4 / n8;
            prop_assert!((0.7..1.45).contains(&ratio), "ratio {}", ratio);
        }
    }
}
