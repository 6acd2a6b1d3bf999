//! `max_pool2d` against burn's `MaxPool2d`, forward and backward (autodiff over ndarray), and
//! in inference (ndarray without autodiff).

use super::*;
use burn::backend::{Autodiff, NdArray};
use burn::nn::pool::MaxPool2dConfig;
use burn::tensor::{Distribution, Tolerance};

type B = Autodiff<NdArray>;

fn check(config: MaxPool2dConfig, dims: [usize; 4]) {
    let device = Default::default();
    let ours = config.init();
    let theirs = config.init();
    // ReLU makes ties (zeros), which the gradient must resolve as burn does.
    let x0 = Tensor::<B, 4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
    let x0 = burn::tensor::activation::relu(x0);
    let run = |f: &dyn Fn(Tensor<B, 4>) -> Tensor<B, 4>| {
        let x = x0.clone().detach().require_grad();
        let y = f(x.clone());
        let weights = Tensor::<B, 4>::ones(y.dims(), &device).cumsum(3).cumsum(2);
        let grads = (y.clone() * weights).sum().backward();
        (y.inner().into_data(), x.grad(&grads).unwrap().into_data())
    };
    let (y, dx) = run(&|x| max_pool2d(&ours, x));
    let (y_ref, dx_ref) = run(&|x| theirs.forward(x));
    let tol = Tolerance::<f32>::rel_abs(1e-6, 1e-6);
    y.assert_approx_eq::<f32>(&y_ref, tol);
    dx.assert_approx_eq::<f32>(&dx_ref, tol);
    // No autodiff: the separable inference passes.
    let inner = max_pool2d(&ours, x0.clone().inner());
    inner.into_data().assert_approx_eq::<f32>(&y_ref, tol);
}

#[test]
fn plain_windows_match_burn() {
    check(MaxPool2dConfig::new([2, 2]), [2, 3, 8, 6]);
    // Odd sizes: the last row and column are left out.
    check(MaxPool2dConfig::new([2, 2]), [1, 2, 7, 5]);
}

#[test]
fn resnet_stem_pool_matches_burn() {
    check(
        MaxPool2dConfig::new([3, 3])
            .with_strides([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
        [2, 2, 9, 10],
    );
}

#[test]
fn same_padding_and_dilation_match_burn() {
    check(
        MaxPool2dConfig::new([2, 3])
            .with_strides([1, 1])
            .with_padding(PaddingConfig2d::Same),
        [1, 3, 5, 6],
    );
    check(
        MaxPool2dConfig::new([2, 2])
            .with_strides([1, 2])
            .with_dilation([2, 1]),
        [2, 1, 7, 8],
    );
}

#[test]
fn ceil_mode_and_empty_windows_are_left_to_burn() {
    let pool = MaxPool2dConfig::new([2, 2]).with_ceil_mode(true).init();
    assert!(shape_for(&pool, [1, 1, 5, 5]).is_none());
    let pool = MaxPool2dConfig::new([4, 4]).init();
    assert!(shape_for(&pool, [1, 1, 3, 3]).is_none());
    // burn computes ceil mode.
    check(
        MaxPool2dConfig::new([2, 2]).with_ceil_mode(true),
        [1, 2, 5, 5],
    );
}
