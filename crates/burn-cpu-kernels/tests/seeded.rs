//! `B::seed` makes the kernels' dropout repeatable, as it does burn's `Dropout`. Alone in
//! its test binary: the backend's generator is one for the whole process, and tests running
//! beside would draw from it between the seeding and the call.

use burn::backend::{Autodiff, NdArray};
use burn::nn::DropoutConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn_cpu_kernels::attention::{AttentionOptions, attention};
use burn_cpu_kernels::dropout::dropout;

type A = Autodiff<NdArray>;

#[test]
fn seeded_runs_repeat_and_unseeded_calls_differ() {
    let device = Default::default();
    let layer = DropoutConfig::new(0.5).init();
    let x = Tensor::<A, 3>::random([2, 6, 8], Distribution::Default, &device);
    let options = AttentionOptions::new(2).with_dropout(0.5);
    let run = || {
        (
            dropout(&layer, x.clone()).into_data(),
            attention(x.clone(), x.clone(), x.clone(), None, options).into_data(),
        )
    };
    A::seed(&device, 9);
    let first = run();
    A::seed(&device, 9);
    assert_eq!(run(), first);
    assert_ne!(run(), first);
}
