//! The list of tensors a checkpoint was saved from — each one's path and shape — so that
//! loading into another architecture fails with the first difference named, before any
//! weight is decoded.
//!
//! burn's record loader takes each tensor as the file has it: a file of a model with a
//! wider layer loads "successfully" into a narrower model, whose shapes are then the file's
//! (the error comes later, in `forward`, or never), and a file with another number of
//! layers trips an assertion inside burn. Comparing the two lists first turns both into an
//! error that says which tensor differs and how.

use crate::freeze::ParamCollector;
use burn::module::Module;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// One tensor of a module: its dotted path and shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TensorEntry {
    pub path: String,
    pub shape: Vec<usize>,
}

/// Every float tensor of `module` (parameters and running statistics), in visiting order.
pub(crate) fn manifest_of<B: Backend, M: Module<B>>(module: &M) -> Vec<TensorEntry> {
    ParamCollector::collect(module)
        .into_iter()
        .map(|p| TensorEntry {
            path: p.path,
            shape: p.shape,
        })
        .collect()
}

/// The first difference between what a file holds and what the model expects, in words;
/// `None` when both list the same tensors with the same shapes.
pub(crate) fn first_difference(file: &[TensorEntry], model: &[TensorEntry]) -> Option<String> {
    let differences = count_differences(file, model);
    if differences == 0 {
        return None;
    }
    let found = |list: &[TensorEntry], path: &str| -> Option<Vec<usize>> {
        list.iter()
            .find(|e| e.path == path)
            .map(|e| e.shape.clone())
    };
    let first = model
        .iter()
        .find_map(|m| match found(file, &m.path) {
            None => Some(format!(
                "the model has `{}` {:?}, which the file lacks",
                m.path, m.shape
            )),
            Some(shape) if shape != m.shape => Some(format!(
                "`{}` is {:?} in the file but {:?} in the model",
                m.path, shape, m.shape
            )),
            Some(_) => None,
        })
        .or_else(|| {
            file.iter()
                .find(|f| found(model, &f.path).is_none())
                .map(|f| {
                    format!(
                        "the file has `{}` {:?}, which the model lacks",
                        f.path, f.shape
                    )
                })
        })
        .expect("a counted difference is found by one of the two searches");
    Some(format!(
        "it was saved from another architecture ({differences} tensor(s) differ; first: {first}); build the model with the configuration it was saved with"
    ))
}

/// How many paths are missing on either side or differ in shape.
fn count_differences(file: &[TensorEntry], model: &[TensorEntry]) -> usize {
    let file_map: std::collections::HashMap<&str, &[usize]> = file
        .iter()
        .map(|e| (e.path.as_str(), e.shape.as_slice()))
        .collect();
    let model_paths: std::collections::HashSet<&str> =
        model.iter().map(|e| e.path.as_str()).collect();
    let in_model = model
        .iter()
        .filter(|m| file_map.get(m.path.as_str()) != Some(&m.shape.as_slice()))
        .count();
    let only_in_file = file
        .iter()
        .filter(|f| !model_paths.contains(f.path.as_str()))
        .count();
    // Order does not count: burn's records are keyed by name, list indices are in the path.
    in_model + only_in_file
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, shape: &[usize]) -> TensorEntry {
        TensorEntry {
            path: path.into(),
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn names_the_first_difference_of_each_kind() {
        let model = vec![entry("a.weight", &[4, 2]), entry("b.weight", &[2, 3])];
        assert_eq!(first_difference(&model, &model), None);
        let wider = vec![entry("a.weight", &[8, 2]), entry("b.weight", &[2, 3])];
        let msg = first_difference(&wider, &model).unwrap();
        assert!(
            msg.contains("`a.weight` is [8, 2] in the file but [4, 2] in the model"),
            "{msg}"
        );
        let shorter = vec![entry("a.weight", &[4, 2])];
        let msg = first_difference(&shorter, &model).unwrap();
        assert!(msg.contains("the model has `b.weight` [2, 3], which the file lacks"));
        let longer = vec![
            entry("a.weight", &[4, 2]),
            entry("b.weight", &[2, 3]),
            entry("c.weight", &[1]),
        ];
        let msg = first_difference(&longer, &model).unwrap();
        assert!(msg.contains("the file has `c.weight` [1], which the model lacks"));
        assert!(msg.contains("1 tensor(s) differ"), "{msg}");
    }
}
