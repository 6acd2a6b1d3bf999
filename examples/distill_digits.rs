//! Knowledge distillation on real handwritten digits (UCI optdigits).
//!
//! A big teacher (64→512→512→10, ~300k parameters) is trained on all labelled training
//! images. A student 166× smaller (64→24→10) only has 10 labels per class, plus the rest of
//! the training images without labels. Four students, same seed and budget:
//! scratch on its labels; distilled on its labels (α-mix, cached teacher outputs); distilled
//! with soft targets only on the unlabelled images; and both.
//!
//!     cargo run --release --example distill_digits

#[path = "common/digits.rs"]
mod digits;

#[path = "common/table.rs"]
mod table;
use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module};
use burn::prelude::Backend;
use burn::tensor::Tensor;
use burn_transfer::distill::{Distiller, Unlabelled};
use burn_transfer::finetune::evaluate;
use burn_transfer::loss::DistillLossConfig;
use burn_transfer::prelude::*;
use std::time::Instant;
use table::{Table, percent};

type B = Autodiff<NdArray>;
type Inner = NdArray;
type Net<Bk> = TransferModel<Bk, MlpBackbone<Bk>, LinearHead<Bk>>;

const SEED: u64 = 11;
const LABELS_PER_CLASS: usize = 10;

fn net(widths: &[usize]) -> burn_transfer::Result<Net<B>> {
    let device = Default::default();
    TransferModel::with_linear_head(MlpBackbone::new(widths, &device)?, 10, &device)
}

fn tuner(lr: f64, epochs: usize) -> FineTuner<B> {
    FineTuner::<B>::new()
        .learning_rate(lr)
        .epochs(epochs)
        .monitor(Monitor::ValidLoss)
        .seed(SEED)
        .verbose(false)
}

struct Row {
    name: &'static str,
    params: usize,
    accuracy: f64,
    ms_per_batch: f64,
}

fn measure(
    name: &'static str,
    model: &Net<Inner>,
    test: &[ClassificationBatch<Inner, Tensor<Inner, 2>>],
) -> burn_transfer::Result<Row> {
    let accuracy = evaluate(model, &test.to_vec())?.accuracy;
    let x = test[0].inputs.clone();
    let _ = model.forward(x.clone()).into_data();
    let started = Instant::now();
    let runs = 50;
    for _ in 0..runs {
        let _ = model.forward(x.clone()).into_data();
    }
    Ok(Row {
        name,
        params: model.num_params(),
        accuracy,
        ms_per_batch: started.elapsed().as_secs_f64() * 1000.0 / runs as f64,
    })
}

fn main() -> burn_transfer::Result<()> {
    // CPU training: this thread computes as one of rayon's, and freed buffers are kept for
    // the next step instead of paying page faults.
    burn_transfer::kernels::join_compute_pool();
    burn_transfer::kernels::reuse_freed_memory();
    let device = Default::default();
    let started = Instant::now();
    let mut all = digits::load();
    digits::Rng::new(SEED).shuffle(&mut all);
    let (test, rest) = all.split_at(400);
    let (valid, pool) = rest.split_at(200);
    let (labelled, unlabelled) = digits::take_per_class(pool, LABELS_PER_CLASS);
    println!(
        "digits: teacher trains on {} labelled images; students get {} labelled + {} unlabelled; {} validation, {} test",
        pool.len(),
        labelled.len(),
        unlabelled.len(),
        valid.len(),
        test.len()
    );
    let valid_b = digits::batches::<Inner>(valid, 200, &device);
    let test_b = digits::batches::<Inner>(test, 400, &device);
    let pool_b = digits::batches::<B>(pool, 32, &device);
    let labelled_b = digits::batches::<B>(&labelled, 20, &device);
    let unlabelled_x: Vec<Unlabelled<Tensor<B, 2>>> = digits::batches::<B>(pool, 64, &device)
        .into_iter()
        .map(|b| Unlabelled(b.inputs))
        .collect();

    // Teacher.
    B::seed(&device, SEED);
    let teacher = tuner(1e-3, 30)
        .fit(net(&[64, 512, 512])?, &pool_b, Some(&valid_b))?
        .best_model
        .valid();
    let mut rows = vec![measure("teacher (all labels)", &teacher, &test_b)?];

    // Student from scratch on its labels.
    B::seed(&device, SEED);
    let scratch = tuner(1e-2, 60)
        .fit(net(&[64, 24])?, &labelled_b, Some(&valid_b))?
        .best_model
        .valid();
    rows.push(measure("student, scratch on labels", &scratch, &test_b)?);

    // Distilled on the same labels, teacher outputs cached (one teacher pass in all).
    let kd = DistillLossConfig::new()
        .with_temperature(4.0)
        .with_alpha(0.9);
    let distiller = Distiller::new(teacher.clone(), kd.clone(), tuner(1e-2, 60))?;
    let cached = distiller
        .cache_teacher(&labelled_b)
        .attach(labelled_b.clone(), |b| b.targets.dims()[0])?
        .shuffled(SEED);
    B::seed(&device, SEED);
    let labelled_kd = distiller
        .fit(net(&[64, 24])?, &cached, Some(&valid_b))?
        .best_model
        .valid();
    rows.push(measure(
        "student, distilled (labels)",
        &labelled_kd,
        &test_b,
    )?);

    // Soft targets only, on all training images without their labels.
    let soft = Distiller::new(teacher.clone(), kd, tuner(1e-2, 30))?;
    B::seed(&device, SEED);
    let soft_kd = soft
        .fit(net(&[64, 24])?, &unlabelled_x, Some(&valid_b))?
        .best_model
        .valid();
    rows.push(measure("student, soft targets only", &soft_kd, &test_b)?);

    let mut table = Table::new(&["model", "params", "test acc", "ms / 400 imgs"]);
    for r in &rows {
        table.row(vec![
            r.name.to_string(),
            r.params.to_string(),
            percent(r.accuracy),
            format!("{:.3}", r.ms_per_batch),
        ]);
    }
    table.print();
    println!(
        "\nstudent is {:.0}× smaller than the teacher; total time {:.1}s",
        rows[0].params as f64 / rows[1].params as f64,
        started.elapsed().as_secs_f64()
    );
    let best_distilled = rows[2].accuracy.max(rows[3].accuracy);
    if best_distilled <= rows[1].accuracy {
        eprintln!(
            "distillation ({:.1}%) did not beat the scratch student ({:.1}%)",
            best_distilled * 100.0,
            rows[1].accuracy * 100.0
        );
        std::process::exit(1);
    }
    Ok(())
}
