//! What the transformer architectures share: checks of their configurations, their
//! initialisation of projections, and the layer selection behind every `keep_layers`.

use crate::error::{Result, TransferError};
use burn::module::Param;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;

/// An error naming the first size that is 0 (`(config field, value)` pairs).
pub(crate) fn check_sizes(sizes: &[(&str, usize)]) -> Result<()> {
    match sizes.iter().find(|(_, value)| *value == 0) {
        Some((name, _)) => Err(TransferError::config(name, 0, "must be at least 1")),
        None => Ok(()),
    }
}

/// An error unless every probability is in `[0, 1)`.
pub(crate) fn check_dropouts(probabilities: &[(&str, f64)]) -> Result<()> {
    match probabilities.iter().find(|(_, p)| !(0.0..1.0).contains(p)) {
        Some((name, p)) => Err(TransferError::config(
            name,
            p,
            "a dropout probability in [0, 1)",
        )),
        None => Ok(()),
    }
}

/// An error unless `heads` divides the width (`width_name` is its config field).
pub(crate) fn check_heads(
    width_name: &str,
    width: usize,
    heads_name: &str,
    heads: usize,
) -> Result<()> {
    if width.is_multiple_of(heads) {
        return Ok(());
    }
    Err(TransferError::config(
        heads_name,
        heads,
        &format!("{width_name} {width} must be a multiple of the number of heads"),
    ))
}

/// A projection as transformers initialises one: weight `N(0, std)`, bias (if any) 0.
pub(crate) fn normal_linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    bias: bool,
    std: f64,
    device: &B::Device,
) -> Linear<B> {
    let mut layer = LinearConfig::new(d_in, d_out)
        .with_bias(bias)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device);
    if bias {
        layer.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
    }
    layer
}

/// Copies of the layers of `stack` at `indices`, in that order, for a shallower student;
/// `prefix` names the stack in errors (`encoder.layer`). An error for an empty selection or
/// an index past the end.
pub(crate) fn layers_at<T: Clone>(stack: &[T], indices: &[usize], prefix: &str) -> Result<Vec<T>> {
    if indices.is_empty() {
        return Err(TransferError::config(
            "layer indices",
            "[]",
            "keep at least one layer",
        ));
    }
    indices
        .iter()
        .map(|&i| {
            stack
                .get(i)
                .cloned()
                .ok_or_else(|| TransferError::StackTooShort {
                    prefix: prefix.into(),
                    requested: i + 1,
                    available: stack.len(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_the_field_at_fault() {
        assert!(check_sizes(&[("a", 1), ("b", 2)]).is_ok());
        let err = check_sizes(&[("a", 1), ("b", 0)]).unwrap_err().to_string();
        assert!(err.contains('b'), "{err}");
        let err = check_dropouts(&[("p", 0.1), ("q", 1.0)])
            .unwrap_err()
            .to_string();
        assert!(err.contains('q') && err.contains("[0, 1)"), "{err}");
        assert!(check_dropouts(&[("nan", f64::NAN)]).is_err());
        let err = check_heads("width", 10, "heads", 4)
            .unwrap_err()
            .to_string();
        assert!(err.contains("width 10 must be a multiple"), "{err}");
        assert!(check_heads("width", 12, "heads", 4).is_ok());
    }

    #[test]
    fn layers_are_picked_in_the_order_given() {
        let stack = ["a", "b", "c"];
        assert_eq!(layers_at(&stack, &[2, 0], "s").unwrap(), vec!["c", "a"]);
        assert!(layers_at(&stack, &[], "s").is_err());
        let err = layers_at(&stack, &[3], "encoder.layer")
            .unwrap_err()
            .to_string();
        assert!(err.contains("encoder.layer"), "{err}");
    }
}
