//! `threads::join_compute_pool` builds rayon's global pool once per process, so it has a
//! test binary of its own.

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::nn::LinearConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn_cpu_kernels::threads;
use rayon::prelude::*;
use std::time::{Duration, Instant};

#[test]
fn the_calling_thread_joins_the_pool_once_and_parallel_training_runs() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2
        && std::env::var_os("RAYON_NUM_THREADS").is_none()
    {
        // A single-thread pool is refused by design.
        assert!(!threads::join_compute_pool());
        return;
    }
    assert!(threads::join_compute_pool());
    assert_eq!(rayon::current_thread_index(), Some(0));
    assert!(!threads::join_compute_pool(), "built once");

    // A layer large enough for parallel products, forward and backward, from this thread.
    type A = Autodiff<NdArray>;
    let device = Default::default();
    let layer = LinearConfig::new(512, 512).init::<A>(&device);
    let x =
        Tensor::<A, 2>::random([256, 512], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let y = burn_cpu_kernels::linear::linear_relu(&layer, x.clone());
    let grads = y.clone().sum().backward();
    let reference = burn::tensor::activation::relu(layer.forward(x.clone()));
    y.inner().into_data().assert_approx_eq::<f32>(
        &reference.inner().into_data(),
        burn::tensor::Tolerance::absolute(1e-4),
    );
    assert_eq!(layer.weight.grad(&grads).unwrap().dims(), [512, 512]);
    assert_eq!(x.grad(&grads).unwrap().dims(), [256, 512]);

    // The pool's other threads spin after a kernel, until no work comes for the
    // spin time.
    let others = rayon::current_num_threads() - 1;
    let wait_until_none_spin = || {
        let since = Instant::now();
        while threads::spinning_threads() > 0 {
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "threads never stopped"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_until_none_spin();
    threads::set_spin_without_work(Duration::from_secs(600));
    let _ = burn_cpu_kernels::linear::linear(&layer.valid(), x.inner());
    assert_eq!(threads::spinning_threads(), others);
    assert_eq!(threads::keep_pool_awake(), 0, "already spinning");
    // Parallel work runs on the spinning threads.
    let total: u64 = (0..1_000_000u64).into_par_iter().sum();
    assert_eq!(total, 499_999_500_000);
    // A shorter time reaches the threads that spin now; zero turns spinning off.
    threads::set_spin_without_work(Duration::ZERO);
    wait_until_none_spin();
    assert_eq!(threads::keep_pool_awake(), 0, "spinning is off");
    threads::set_spin_without_work(threads::SPIN_WITHOUT_WORK);
    assert_eq!(threads::keep_pool_awake(), others);
}

#[test]
fn threads_that_did_not_join_keep_nothing_awake() {
    // Not the training thread: spinning threads would compete with it for the cores.
    let asked = std::thread::spawn(threads::keep_pool_awake).join().unwrap();
    assert_eq!(asked, 0);
}
