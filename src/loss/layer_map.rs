//! Which student layer learns from which teacher layer: a [`LayerMap`] resolved against the
//! two models' [`LayerSpec`]s into [`LayerPairs`], checked before training starts, and the
//! pairs' outputs turned into the loss's inputs.

use super::{DistillLossConfig, DistillTargets};
use crate::error::{Result, TransferError};
use crate::layer_outputs::{LayerOutputs, LayerRequest, LayerSpec};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Which student layer is compared with which teacher layer, by number (0 = the input-level
/// output such as BERT's embeddings, `k` = the output of block or stage `k`; see
/// [`crate::layer_outputs`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerMap {
    /// TinyBERT's uniform map: student block `k` of `m` learns from teacher block
    /// `k·n/m` of `n` (3 of 6: 1→2, 2→4, 3→6), and the input levels learn from each other
    /// where both have one. The student may not have more blocks than the teacher.
    #[default]
    Uniform,
    /// The last block of each (DistilBERT's cosine on the final hidden states).
    Last,
    /// Explicit `(student, teacher)` pairs (FitNets' one hint layer, or any map). Pairs with
    /// number 0 are skipped for attention and stage maps, which have no input level.
    Pairs(Vec<(usize, usize)>),
}

/// One student layer and the teacher layer it learns from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerPair {
    /// The student's layer number.
    pub student: usize,
    /// The teacher's layer number.
    pub teacher: usize,
}

/// A [`LayerMap`] resolved against a student and a teacher: the pairs each feature term
/// compares, every shape already checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerPairs {
    /// Hidden-state pairs (cosine, hint terms).
    pub hidden: Vec<LayerPair>,
    /// `(student, teacher)` widths of each hidden pair: where they differ, the hint term
    /// learns a projection.
    pub hidden_widths: Vec<(usize, usize)>,
    /// Attention-map pairs (attention MSE term), block numbers ≥ 1.
    pub attentions: Vec<LayerPair>,
    /// Stage-map pairs (attention transfer), stage numbers ≥ 1.
    pub maps: Vec<LayerPair>,
}

impl LayerPairs {
    /// Whether any term compares intermediate outputs.
    pub fn is_empty(&self) -> bool {
        self.hidden.is_empty() && self.attentions.is_empty() && self.maps.is_empty()
    }

    /// What a forward pass of either model must keep for these pairs.
    pub fn request(&self) -> LayerRequest {
        LayerRequest {
            hidden: !self.hidden.is_empty(),
            attentions: !self.attentions.is_empty(),
            maps: !self.maps.is_empty(),
        }
    }

    /// Adds the pairs' terms to `targets`: hidden states and attention maps at the real
    /// (non-padding) positions of the student's inputs, stage maps flattened to
    /// `[batch, channels, positions]`. `student` and `teacher` are one forward pass of each
    /// on the same batch; a sequence length or map size that differs between them (another
    /// tokenizer, another input size) is an error naming the pair.
    pub fn targets<B: Backend>(
        &self,
        mut targets: DistillTargets<B>,
        student: LayerOutputs<B>,
        teacher: LayerOutputs<B>,
    ) -> Result<DistillTargets<B>> {
        let rows = real_rows(student.padding.as_ref())?;
        for pair in &self.hidden {
            let (s, t) = (
                taken("student", "hidden state", &student.hidden, pair.student)?,
                taken("teacher", "hidden state", &teacher.hidden, pair.teacher)?,
            );
            let ([bs, ps, ws], [bt, pt, wt]) = (s.dims(), t.dims());
            positions_match("hidden states", pair, [bs, ps], [bt, pt])?;
            let s = select_rows(s.reshape([bs * ps, ws]), rows.as_ref());
            let t = select_rows(t.reshape([bt * pt, wt]), rows.as_ref());
            targets = targets.with_hidden(s, t);
        }
        for pair in &self.attentions {
            let (s, t) = (
                taken(
                    "student",
                    "attention map",
                    &student.attentions,
                    pair.student - 1,
                )?,
                taken(
                    "teacher",
                    "attention map",
                    &teacher.attentions,
                    pair.teacher - 1,
                )?,
            );
            let ([bs, hs, qs, ks], [bt, ht, qt, kt]) = (s.dims(), t.dims());
            positions_match("attention maps", pair, [bs, hs, qs, ks], [bt, ht, qt, kt])?;
            // One row per (sample, query): every head's distribution over the keys.
            let flat = |a: Tensor<B, 4>| a.swap_dims(1, 2).reshape([bs * qs, hs * ks]);
            targets = targets.with_attention_probs(
                select_rows(flat(s), rows.as_ref()),
                select_rows(flat(t), rows.as_ref()),
            );
        }
        for pair in &self.maps {
            let (s, t) = (
                taken("student", "stage map", &student.maps, pair.student - 1)?,
                taken("teacher", "stage map", &teacher.maps, pair.teacher - 1)?,
            );
            let ([bs, cs, hs, ws], [bt, ct, ht, wt]) = (s.dims(), t.dims());
            positions_match("stage maps", pair, [bs, hs, ws], [bt, ht, wt])?;
            targets =
                targets.with_attention(s.reshape([bs, cs, hs * ws]), t.reshape([bt, ct, ht * wt]));
        }
        Ok(targets)
    }
}

impl LayerMap {
    /// The pairs the feature terms of `config` compare between `student` and `teacher`, or
    /// an error naming what the two models cannot give: a term whose outputs a model does
    /// not expose, a pair out of range, widths the cosine cannot compare, head counts or map
    /// strides that differ.
    pub fn resolve(
        &self,
        config: &DistillLossConfig,
        student: &LayerSpec,
        teacher: &LayerSpec,
    ) -> Result<LayerPairs> {
        let mut pairs = LayerPairs::default();
        if config.cosine_weight > 0.0 || config.hint.is_some() {
            let term = if config.hint.is_some() {
                "hint"
            } else {
                "cosine"
            };
            let (s, t) = exposed(term, "hidden states", student, teacher, |spec| {
                spec.hidden_widths.len()
            })?;
            pairs.hidden = self.pairs(term, "hidden state", s - 1, t - 1, true)?;
            for pair in &pairs.hidden {
                let widths = (
                    student.hidden_widths[pair.student],
                    teacher.hidden_widths[pair.teacher],
                );
                if config.cosine_weight > 0.0 && widths.0 != widths.1 {
                    return Err(TransferError::config(
                        "cosine",
                        format!(
                            "student layer {} is {} wide, teacher layer {} is {} wide",
                            pair.student, widths.0, pair.teacher, widths.1
                        ),
                        "the cosine term compares hidden states of one width; use the hint term (with_hint: a learned projection) for students of another width",
                    ));
                }
                pairs.hidden_widths.push(widths);
            }
        }
        if config.attention_mse_weight > 0.0 {
            let (s, t) = exposed(
                "attention_mse",
                "attention maps",
                student,
                teacher,
                |spec| spec.attention_heads.len(),
            )?;
            pairs.attentions = self.pairs("attention_mse", "attention map", s, t, false)?;
            for pair in &pairs.attentions {
                let heads = (
                    student.attention_heads[pair.student - 1],
                    teacher.attention_heads[pair.teacher - 1],
                );
                if heads.0 != heads.1 {
                    return Err(TransferError::config(
                        "attention_mse",
                        format!(
                            "student layer {} has {} heads, teacher layer {} has {}",
                            pair.student, heads.0, pair.teacher, heads.1
                        ),
                        "attention maps compare head by head; give the student as many heads as the teacher, or drop the attention term",
                    ));
                }
            }
        }
        if config.attention_weight > 0.0 {
            let (s, t) = exposed("attention", "stage maps", student, teacher, |spec| {
                spec.maps.len()
            })?;
            pairs.maps = self.pairs("attention", "stage map", s, t, false)?;
            for pair in &pairs.maps {
                let strides = (
                    student.maps[pair.student - 1].stride,
                    teacher.maps[pair.teacher - 1].stride,
                );
                if strides.0 != strides.1 {
                    return Err(TransferError::config(
                        "attention",
                        format!(
                            "student stage {} has stride {}, teacher stage {} has stride {}",
                            pair.student, strides.0, pair.teacher, strides.1
                        ),
                        "attention transfer compares maps position by position; pair stages of the same resolution (LayerMap::Pairs)",
                    ));
                }
            }
        }
        Ok(pairs)
    }

    /// Pairs over `s` student and `t` teacher blocks (numbers `1..=s`, `1..=t`; with
    /// `input_level`, number 0 exists too).
    fn pairs(
        &self,
        term: &str,
        what: &str,
        s: usize,
        t: usize,
        input_level: bool,
    ) -> Result<Vec<LayerPair>> {
        let pair = |student, teacher| LayerPair { student, teacher };
        let first = usize::from(!input_level);
        let pairs: Vec<LayerPair> = match self {
            LayerMap::Uniform => {
                if s > t {
                    return Err(TransferError::config(
                        term,
                        format!("a student of {s} blocks, a teacher of {t}"),
                        "the uniform map needs a student with at most the teacher's blocks; give explicit pairs (LayerMap::Pairs)",
                    ));
                }
                let input = input_level.then(|| pair(0, 0));
                input
                    .into_iter()
                    .chain((1..=s).map(|k| pair(k, k * t / s.max(1))))
                    .collect()
            }
            LayerMap::Last => vec![pair(s, t)],
            LayerMap::Pairs(given) => {
                let mut out = Vec::new();
                for &(a, b) in given {
                    if a > s || b > t {
                        return Err(TransferError::config(
                            term,
                            format!("pair ({a}, {b})"),
                            &format!(
                                "the student has {what}s {first}..={s} and the teacher {first}..={t}; pair numbers within them"
                            ),
                        ));
                    }
                    if a >= first && b >= first {
                        out.push(pair(a, b));
                    }
                }
                out
            }
        };
        if pairs.is_empty() || pairs.iter().any(|p| p.student < first) {
            return Err(TransferError::config(
                term,
                format!("{self:?}"),
                &format!("the layer map pairs no {what}; pair block numbers ≥ 1"),
            ));
        }
        Ok(pairs)
    }
}

/// How many outputs of a kind both models expose; an error naming the model that has none.
fn exposed(
    term: &str,
    what: &str,
    student: &LayerSpec,
    teacher: &LayerSpec,
    count: impl Fn(&LayerSpec) -> usize,
) -> Result<(usize, usize)> {
    for (who, spec) in [("student", student), ("teacher", teacher)] {
        if count(spec) == 0 {
            return Err(TransferError::config(
                term,
                format!("a {who} without {what}"),
                &format!(
                    "this term compares {what}, which the {who} does not expose; drop the term, or implement Classifier::layer_spec and logits_with_layers (or Backbone's) for the {who}"
                ),
            ));
        }
    }
    Ok((count(student), count(teacher)))
}

fn taken<B: Backend, const D: usize>(
    who: &str,
    what: &str,
    outputs: &[Tensor<B, D>],
    index: usize,
) -> Result<Tensor<B, D>> {
    outputs.get(index).cloned().ok_or_else(|| {
        TransferError::BatchShape(format!(
            "the {who} gave {} {what}s, its layer_spec promised at least {}; make logits_with_layers give what layer_spec describes",
            outputs.len(),
            index + 1
        ))
    })
}

fn positions_match<const N: usize>(
    what: &str,
    pair: &LayerPair,
    student: [usize; N],
    teacher: [usize; N],
) -> Result<()> {
    if student != teacher {
        return Err(TransferError::BatchShape(format!(
            "{what} of student layer {} {student:?} vs teacher layer {} {teacher:?}: teacher and student must read the same positions (one tokenizer, one input size)",
            pair.student, pair.teacher
        )));
    }
    Ok(())
}

/// Indices of the rows `[batch · positions]` that are real tokens; `None` when every row is.
fn real_rows<B: Backend>(
    padding: Option<&Tensor<B, 2, Bool>>,
) -> Result<Option<Tensor<B, 1, Int>>> {
    let Some(padding) = padding else {
        return Ok(None);
    };
    let device = padding.device();
    let padded: Vec<bool> = padding
        .clone()
        .into_data()
        .into_vec()
        .map_err(|e| TransferError::BatchShape(format!("unreadable padding mask: {e:?}")))?;
    if !padded.contains(&true) {
        return Ok(None);
    }
    let rows: Vec<i64> = (0..padded.len() as i64)
        .filter(|&i| !padded[i as usize])
        .collect();
    let count = rows.len();
    Ok(Some(Tensor::from_data(
        TensorData::new(rows, [count]).convert::<B::IntElem>(),
        &device,
    )))
}

fn select_rows<B: Backend>(x: Tensor<B, 2>, rows: Option<&Tensor<B, 1, Int>>) -> Tensor<B, 2> {
    match rows {
        Some(rows) => x.select(0, rows.clone()),
        None => x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer_outputs::MapSpec;

    fn both(
        config: &DistillLossConfig,
        map: LayerMap,
        s: &LayerSpec,
        t: &LayerSpec,
    ) -> Result<LayerPairs> {
        map.resolve(config, s, t)
    }

    fn numbers(pairs: &[LayerPair]) -> Vec<(usize, usize)> {
        pairs.iter().map(|p| (p.student, p.teacher)).collect()
    }

    #[test]
    fn uniform_maps_three_student_layers_onto_six_as_tinybert() {
        let config = DistillLossConfig::new()
            .with_hint(1.0)
            .with_attention_mse(1.0);
        let (s, t) = (
            LayerSpec::transformer(3, 128, 4),
            LayerSpec::transformer(6, 384, 4),
        );
        let pairs = both(&config, LayerMap::Uniform, &s, &t).unwrap();
        assert_eq!(numbers(&pairs.hidden), [(0, 0), (1, 2), (2, 4), (3, 6)]);
        assert_eq!(pairs.hidden_widths, [(128, 384); 4]);
        assert_eq!(numbers(&pairs.attentions), [(1, 2), (2, 4), (3, 6)]);
        let last = both(&config, LayerMap::Last, &s, &t).unwrap();
        assert_eq!(numbers(&last.hidden), [(3, 6)]);
        let given = both(&config, LayerMap::Pairs(vec![(0, 0), (2, 3)]), &s, &t).unwrap();
        assert_eq!(numbers(&given.hidden), [(0, 0), (2, 3)]);
        assert_eq!(numbers(&given.attentions), [(2, 3)]);
    }

    #[test]
    fn unsatisfiable_maps_are_errors_that_name_the_cause() {
        let hint = DistillLossConfig::new().with_hint(1.0);
        let (small, big) = (
            LayerSpec::transformer(3, 128, 4),
            LayerSpec::transformer(6, 384, 12),
        );
        let err = |config: &DistillLossConfig, map, s: &LayerSpec, t: &LayerSpec| {
            both(config, map, s, t).unwrap_err().to_string()
        };
        assert!(
            err(&hint, LayerMap::Uniform, &big, &small).contains("at most the teacher's blocks")
        );
        assert!(err(&hint, LayerMap::Pairs(vec![(4, 1)]), &small, &big).contains("pair (4, 1)"));
        let cosine = DistillLossConfig::new().with_cosine(1.0);
        assert!(err(&cosine, LayerMap::Last, &small, &big).contains("128 wide"));
        let att = DistillLossConfig::new().with_attention_mse(1.0);
        assert!(err(&att, LayerMap::Uniform, &small, &big).contains("4 heads"));
        assert!(
            err(&att, LayerMap::Pairs(vec![(0, 0)]), &small, &big)
                .contains("pairs no attention map")
        );
        let none = LayerSpec::default();
        assert!(err(&hint, LayerMap::Uniform, &none, &big).contains("student does not expose"));
        let cnn = |strides: &[usize]| LayerSpec {
            maps: strides
                .iter()
                .map(|&stride| MapSpec {
                    channels: 8,
                    stride,
                })
                .collect(),
            ..LayerSpec::default()
        };
        let at = DistillLossConfig::new().with_attention(1.0);
        assert!(
            err(&at, LayerMap::Uniform, &cnn(&[4, 8]), &cnn(&[4, 8, 16, 32])).contains("stride 8")
        );
        let pairs = both(
            &at,
            LayerMap::Uniform,
            &cnn(&[4, 8, 16, 32]),
            &cnn(&[4, 8, 16, 32]),
        )
        .unwrap();
        assert_eq!(numbers(&pairs.maps), [(1, 1), (2, 2), (3, 3), (4, 4)]);
        assert!(err(&at, LayerMap::Uniform, &small, &big).contains("stage maps"));
    }
}
