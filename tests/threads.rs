//! `threads::join_compute_pool` builds rayon's global pool once per process, so it has a
//! test binary of its own.

use burn::backend::{Autodiff, NdArray};
use burn::nn::LinearConfig;
use burn::prelude::*;
use burn::tensor::Distribution;

#[test]
fn the_calling_thread_joins_the_pool_once_and_parallel_training_runs() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2
        && std::env::var_os("RAYON_NUM_THREADS").is_none()
    {
        // A single-thread pool is refused by design.
        assert!(!burn_transfer::threads::join_compute_pool());
        return;
    }
    assert!(burn_transfer::threads::join_compute_pool());
    assert_eq!(rayon::current_thread_index(), Some(0));
    assert!(!burn_transfer::threads::join_compute_pool(), "built once");

    // A layer large enough for parallel products, forward and backward, from this thread.
    type A = Autodiff<NdArray>;
    let device = Default::default();
    let layer = LinearConfig::new(512, 512).init::<A>(&device);
    let x =
        Tensor::<A, 2>::random([256, 512], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let y = burn_transfer::linear::forward_relu(&layer, x.clone());
    let grads = y.clone().sum().backward();
    let reference = burn::tensor::activation::relu(layer.forward(x.clone()));
    y.inner().into_data().assert_approx_eq::<f32>(
        &reference.inner().into_data(),
        burn::tensor::Tolerance::absolute(1e-4),
    );
    assert_eq!(layer.weight.grad(&grads).unwrap().dims(), [512, 512]);
    assert_eq!(x.grad(&grads).unwrap().dims(), [256, 512]);
}
