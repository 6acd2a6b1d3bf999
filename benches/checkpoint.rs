//! What the checksums and the tensor list cost on a large checkpoint: saving and loading a
//! 100M-parameter model (400 MB of f32) through `save_model`'s bytes and `load_model`'s
//! checks, against burn's recorder alone (what a save and a load were before them), measured
//! by criterion. The figures are in BENCHMARKS.md.

use burn::backend::NdArray;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn_transfer::checkpoint::{load_model_bytes, model_to_bytes};
use criterion::{Criterion, criterion_group, criterion_main};
use std::path::Path;

type B = NdArray;

#[derive(Module, Debug)]
struct Large<B: burn::prelude::Backend> {
    layers: Vec<Linear<B>>,
}

/// Six 4096×4096 layers: 100.7M parameters.
fn large() -> Large<B> {
    let device = Default::default();
    Large {
        layers: (0..6)
            .map(|_| LinearConfig::new(4096, 4096).init(&device))
            .collect(),
    }
}

fn bench_checkpoint(c: &mut Criterion) {
    let device = Default::default();
    let model = large();
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    let plain = recorder.record(model.clone().into_record(), ()).unwrap();
    let checked = model_to_bytes(&model).unwrap();
    let mut group = c.benchmark_group("checkpoint_100m_params");
    group.sample_size(10);
    group.bench_function("save: burn's record", |b| {
        b.iter(|| recorder.record(model.clone().into_record(), ()).unwrap())
    });
    group.bench_function("save: record + tensor list + CRC-32", |b| {
        b.iter(|| model_to_bytes(&model).unwrap())
    });
    group.bench_function("CRC-32 alone", |b| b.iter(|| crc32fast::hash(&checked)));
    group.bench_function("load: burn's record", |b| {
        b.iter(|| {
            let record = Recorder::<B>::load(&recorder, plain.clone(), &device).unwrap();
            model.clone().load_record(record)
        })
    });
    group.bench_function(
        "load: checked (CRC-32, tensor lists before and after)",
        |b| {
            b.iter(|| {
                load_model_bytes(
                    model.clone(),
                    checked.clone(),
                    Path::new("large.mpk"),
                    &device,
                )
            })
        },
    );
    group.finish();
}

criterion_group!(benches, bench_checkpoint);
criterion_main!(benches);
