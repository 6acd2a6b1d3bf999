//! burn's [`Linear`] layer computed as one GEMM per pass on the CPU backends, with the bias
//! and an optional ReLU fused into it.
//!
//! [`linear`] gives what `layer.forward(x)` gives, and [`linear_relu`] what
//! `relu(layer.forward(x))` gives, from the same layer (the same parameters, so freezing,
//! LoRA paths and checkpoints are unchanged). They route by backend:
//!
//! - **ndarray and Flex, with or without autodiff**: the product, its input gradient
//!   `dy·Wᵀ` and its weight gradient `xᵀ·dy` are each one call of the `gemm` crate on
//!   strided operands (ndarray's own matmul copies a transposed operand element by
//!   element); only `Wᵀ` is copied out first, in cache-sized tiles,
//!   because `gemm` repacks that operand at half its rate. The bias and ReLU
//!   are one pass over the product's output; in training, the whole layer is one autodiff
//!   operation with its own backward pass (ReLU's mask applied to the incoming gradient in
//!   its own buffer), and only the gradients that are needed are computed.
//! - **Other backends** (wgpu, …), other element types and inputs whose width does not
//!   match the weight: burn's own `Linear::forward` (and `Relu`), unchanged.
//!
//! For `Linear` layers of your own models, call [`linear`] instead of `layer.forward`.
//!
//! Why: with `gemm`'s AVX-512 kernels (chosen at run time) the host product runs at about
//! twice the rate of `matrixmultiply`, which ndarray uses.

mod kernel;
mod layer;

use crate::cpu::reshape::reshape;

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::relu;

/// `layer.forward(x)` for `x` `[..., d_input]` (rows of any rank: `[batch, d_input]`,
/// a transformer's `[batch, seq, d_input]`, …): the same values (to float rounding) and
/// gradients, one GEMM per pass over all leading dimensions on the CPU backends (see the
/// [module docs](self)).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::LinearConfig;
/// use burn::prelude::*;
///
/// let device = Default::default();
/// let layer = LinearConfig::new(3, 2).init::<NdArray>(&device);
/// let x = Tensor::<NdArray, 3>::ones([4, 5, 3], &device);
/// let y = burn_cpu_kernels::linear::linear(&layer, x.clone());
/// assert_eq!(y.dims(), [4, 5, 2]);
/// y.into_data()
///     .assert_approx_eq::<f32>(&layer.forward(x).into_data(), Default::default());
/// ```
pub fn linear<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    as_rows(layer, x, false, |layer, x| layer.forward(x))
}

/// `relu(layer.forward(x))` for `x` `[..., d_input]`, with ReLU fused into the layer's
/// pass on the CPU backends.
pub fn linear_relu<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    as_rows(layer, x, true, |layer, x| relu(layer.forward(x)))
}

/// Runs the layer on `x`'s rows (all leading dimensions as one): `[rows, d_input]` is a
/// view of the same memory, so the kernel's one GEMM covers a whole sequence batch. Any
/// other case (rank 0, other backends, a width that does not fit) takes `fallback` on `x`
/// as it came.
fn as_rows<B: Backend, const D: usize>(
    layer: &Linear<B>,
    x: Tensor<B, D>,
    relu: bool,
    fallback: impl FnOnce(&Linear<B>, Tensor<B, D>) -> Tensor<B, D>,
) -> Tensor<B, D> {
    let dims = x.dims();
    let Some((&width, leading)) = dims.split_last() else {
        return fallback(layer, x);
    };
    let rows = leading.iter().product::<usize>();
    let operands = (
        reshape::<B, D, 2>(x, [rows, width]),
        layer.weight.val(),
        layer.bias.as_ref().map(|bias| bias.val()),
    );
    match layer::run(operands, relu) {
        Ok(y) => {
            let mut out = dims;
            out[D - 1] = y.dims()[1];
            reshape(y, out)
        }
        Err((x, ..)) => fallback(layer, reshape(x, dims)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::AutodiffModule;
    use burn::nn::LinearConfig;
    use burn::tensor::{Distribution, Tolerance};

    type A = Autodiff<NdArray>;

    fn close<const D: usize>(a: Tensor<NdArray, D>, b: Tensor<NdArray, D>) {
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-4));
    }

    fn input<B: Backend>(rows: usize, cols: usize) -> Tensor<B, 2> {
        Tensor::random(
            [rows, cols],
            Distribution::Normal(0.0, 1.0),
            &Default::default(),
        )
    }

    /// Values and every gradient (input, weight, bias) against burn's layer, with and
    /// without ReLU, on a shape large enough for the parallel product.
    #[test]
    fn training_matches_burns_layer() {
        let layer = LinearConfig::new(203, 389).init::<A>(&Default::default());
        let x = input::<A>(97, 203).require_grad();
        let dy = input::<A>(97, 389);
        for fused_relu in [false, true] {
            let (ours, reference) = if fused_relu {
                (
                    linear_relu(&layer, x.clone()),
                    relu(layer.forward(x.clone())),
                )
            } else {
                (linear(&layer, x.clone()), layer.forward(x.clone()))
            };
            close(ours.clone().inner(), reference.clone().inner());
            let g = (ours * dy.clone()).sum().backward();
            let r = (reference * dy.clone()).sum().backward();
            close(x.grad(&g).unwrap(), x.grad(&r).unwrap());
            close(
                layer.weight.grad(&g).unwrap(),
                layer.weight.grad(&r).unwrap(),
            );
            let bias = layer.bias.as_ref().unwrap();
            close(bias.grad(&g).unwrap(), bias.grad(&r).unwrap());
        }
    }

    /// A frozen weight gets no gradient, an untracked input none either, and the bias
    /// still does: only what is tracked is computed.
    #[test]
    fn only_tracked_operands_get_gradients() {
        let device = Default::default();
        let layer = LinearConfig::new(8, 5).init::<A>(&device);
        // Drawn now, so that the clones below share the values.
        crate::materialize(&layer);
        let frozen = Linear {
            weight: layer.weight.clone().set_require_grad(false),
            bias: layer.bias.clone(),
        };
        let x = input::<A>(6, 8);
        let grads = linear_relu(&frozen, x.clone()).sum().backward();
        assert!(frozen.weight.grad(&grads).is_none());
        assert!(x.grad(&grads).is_none());
        let reference = relu(layer.forward(x)).sum().backward();
        let bias = layer.bias.as_ref().unwrap();
        close(
            frozen.bias.as_ref().unwrap().grad(&grads).unwrap(),
            bias.grad(&reference).unwrap(),
        );
    }

    /// A sequence batch `[batch, seq, d]` (a transformer's layers) and a single row `[d]`:
    /// values and gradients as burn's layer gives them.
    #[test]
    fn any_rank_matches_burns_layer() {
        let layer = LinearConfig::new(24, 40).init::<A>(&Default::default());
        let x = Tensor::<A, 3>::random(
            [3, 17, 24],
            Distribution::Normal(0.0, 1.0),
            &Default::default(),
        )
        .require_grad();
        let dy = Tensor::<A, 3>::random(
            [3, 17, 40],
            Distribution::Normal(0.0, 1.0),
            &Default::default(),
        );
        let ours = linear(&layer, x.clone());
        let reference = layer.forward(x.clone());
        assert_eq!(ours.dims(), [3, 17, 40]);
        close(ours.clone().inner(), reference.clone().inner());
        let g = (ours * dy.clone()).sum().backward();
        let r = (reference * dy).sum().backward();
        close(x.grad(&g).unwrap(), x.grad(&r).unwrap());
        close(
            layer.weight.grad(&g).unwrap(),
            layer.weight.grad(&r).unwrap(),
        );
        let row = input::<NdArray>(1, 24).reshape([24]);
        let inner = layer.valid();
        close(linear(&inner, row.clone()), inner.forward(row));
    }

    /// Without autodiff, and without a bias.
    #[test]
    fn inference_matches_burns_layer() {
        let device = Default::default();
        let layer = LinearConfig::new(16, 7)
            .with_bias(false)
            .init::<NdArray>(&device);
        let x = input::<NdArray>(9, 16);
        close(linear(&layer, x.clone()), layer.forward(x.clone()));
        close(linear_relu(&layer, x.clone()), relu(layer.forward(x)));
    }

    /// Other element types take burn's layer: same results, no error.
    #[test]
    fn other_element_types_take_burns_layer() {
        type D = NdArray<f64>;
        let layer = LinearConfig::new(4, 3).init::<D>(&Default::default());
        let x = input::<D>(2, 4);
        linear_relu(&layer, x.clone())
            .into_data()
            .assert_approx_eq::<f64>(
                &relu(layer.forward(x)).into_data(),
                Tolerance::absolute(1e-12),
            );
    }
}
