//! PyTorch names and layouts: burn's `Linear` stores its weight `[in, out]`, PyTorch
//! `[out, in]`; burn's norms call their affine parameters `gamma`/`beta`, PyTorch
//! `weight`/`bias`.

use crate::checkpoint::atomic_write;
use crate::error::{Result, TransferError};
use crate::freeze::{Freeze, ParamInfo};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use safetensors::tensor::{Dtype, TensorView};

/// The PyTorch name of a burn parameter.
pub(crate) fn torch_key(p: &ParamInfo) -> String {
    let is_norm = p.owner.ends_with("Norm");
    match p.path.rsplit_once('.') {
        Some((m, "gamma")) if is_norm => format!("{m}.weight"),
        Some((m, "beta")) if is_norm => format!("{m}.bias"),
        _ => p.path.clone(),
    }
}

/// The shape of one tensor in PyTorch's layout (Linear weights `[out, in]`).
pub(crate) fn torch_shape(p: &ParamInfo) -> Vec<usize> {
    if p.owner == "Linear" && p.shape.len() == 2 {
        vec![p.shape[1], p.shape[0]]
    } else {
        p.shape.clone()
    }
}

/// burn → PyTorch layout of one tensor's values.
pub(crate) fn torch_layout(
    p: &ParamInfo,
    shape: Vec<usize>,
    values: Vec<f32>,
) -> (Vec<usize>, Vec<f32>) {
    if p.owner == "Linear" && shape.len() == 2 {
        (
            vec![shape[1], shape[0]],
            transpose(&values, shape[0], shape[1]),
        )
    } else {
        (shape, values)
    }
}

/// PyTorch → burn layout (the inverse of [`torch_layout`]).
pub(crate) fn burn_layout(p: &ParamInfo, values: Vec<f32>) -> Vec<f32> {
    if p.owner == "Linear" && p.shape.len() == 2 {
        transpose(&values, p.shape[1], p.shape[0])
    } else {
        values
    }
}

/// `[rows, cols]` row-major → `[cols, rows]`.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Every float tensor's values as f32, in visiting order (the order of
/// [`Freeze::param_summary`]'s entries).
pub(crate) fn tensor_values<B: Backend, M: Module<B>>(model: &M) -> Vec<Vec<f32>> {
    struct Values(Vec<Vec<f32>>);
    impl<B: Backend> ModuleVisitor<B> for Values {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            let data = p.val().to_data().convert::<f32>();
            self.0.push(data.to_vec().unwrap_or_default());
        }
    }
    let mut values = Values(Vec::new());
    model.visit(&mut values);
    values.0
}

/// `(name, shape, values)` triples as the bytes of a safetensors file (f32).
pub(crate) fn to_safetensors(
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    path: &std::path::Path,
) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).expect("sizes computed from shapes"),
            )
        })
        .collect();
    let fail = |reason: String| TransferError::Checkpoint {
        path: path.into(),
        reason,
    };
    let bytes = safetensors::tensor::serialize(views, None).map_err(|e| fail(e.to_string()))?;
    // A CRC-32 in the metadata: this crate's reader checks it, others ignore it.
    crate::import::integrity::stamp_safetensors(&bytes).map_err(fail)
}

/// Writes every float tensor of `model` to a safetensors file under PyTorch names and
/// layouts (f32), atomically: what `load_state_dict(safetensors.torch.load_file(path))`
/// reads for a PyTorch model with the same module names.
pub fn save_pytorch_safetensors<B: Backend, M: Module<B>>(
    model: &M,
    path: &std::path::Path,
) -> Result<()> {
    let tensors = model
        .param_summary()
        .entries
        .iter()
        .zip(tensor_values(model))
        .map(|(p, v)| {
            let (shape, v) = torch_layout(p, p.shape.clone(), v);
            (torch_key(p), shape, v)
        })
        .collect();
    atomic_write(path, &to_safetensors(tensors, path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
    use safetensors::SafeTensors;

    #[derive(Module, Debug)]
    struct Net<B: Backend> {
        fc: Linear<B>,
        bn: BatchNorm<B>,
    }

    #[test]
    fn names_and_layouts_follow_pytorch() {
        let d = Default::default();
        let net = Net::<NdArray> {
            fc: LinearConfig::new(3, 2).init(&d),
            bn: BatchNormConfig::new(2).init(&d),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.safetensors");
        save_pytorch_safetensors(&net, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let mut names = file.names();
        names.sort();
        assert_eq!(
            names,
            [
                "bn.bias",
                "bn.running_mean",
                "bn.running_var",
                "bn.weight",
                "fc.bias",
                "fc.weight"
            ]
        );
        let fc = file.tensor("fc.weight").unwrap();
        assert_eq!(fc.shape(), [2, 3], "PyTorch's [out, in]");
        let got: Vec<f32> = fc
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let want: Vec<f32> = net
            .fc
            .weight
            .val()
            .transpose()
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(got, want);
    }
}
