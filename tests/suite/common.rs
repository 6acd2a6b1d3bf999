//! Small models and data shared by the tests.
#![allow(dead_code)]

use burn::backend::{Autodiff, NdArray};
use burn::data::dataloader::batcher::Batcher;
use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn_transfer::prelude::*;

pub type B = Autodiff<NdArray>;
pub type Inner = NdArray;
pub type Batch<Bk> = ClassificationBatch<Bk, Tensor<Bk, 2>>;

pub fn device() -> burn::backend::ndarray::NdArrayDevice {
    Default::default()
}

/// A fixed pseudo-random batch: `n` rows of `dim` features, labels in `0..classes`.
pub fn batch<Bk: Backend>(n: usize, dim: usize, classes: usize, seed: u64) -> Batch<Bk> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as f64 / (1u64 << 31) as f64) as f32
    };
    let x: Vec<f32> = (0..n * dim).map(|_| next() * 2.0 - 1.0).collect();
    // Labels follow the sign of the first two features, so there is something to learn.
    let y: Vec<i64> = (0..n)
        .map(|i| {
            (((x[i * dim] > 0.0) as usize * 2 + (x[i * dim + 1] > 0.0) as usize) % classes) as i64
        })
        .collect();
    let device = Default::default();
    ClassificationBatch::new(
        Tensor::from_data(TensorData::new(x, [n, dim]), &device),
        Tensor::from_data(TensorData::new(y, [n]), &device),
    )
}

pub fn batches<Bk: Backend>(count: usize, n: usize, dim: usize, classes: usize) -> Vec<Batch<Bk>> {
    (0..count)
        .map(|i| batch(n, dim, classes, i as u64 + 1))
        .collect()
}

/// MLP body 8→16→16 with a 4-way linear head.
pub fn mlp_model() -> TransferModel<B, MlpBackbone<B>, LinearHead<B>> {
    let d = device();
    TransferModel::with_linear_head(MlpBackbone::new(&[8, 16, 16], &d).unwrap(), 4, &d).unwrap()
}

/// A body with BatchNorm (running statistics) for the `Frozen` tests.
#[derive(Module, Debug)]
pub struct BnBackbone<B: Backend> {
    pub linear: Linear<B>,
    pub norm: BatchNorm<B>,
}

impl<B: Backend> BnBackbone<B> {
    pub fn new(device: &B::Device) -> Self {
        Self {
            linear: LinearConfig::new(8, 6).init(device),
            norm: BatchNormConfig::new(6).init(device),
        }
    }
}

impl<B: Backend> Backbone<B> for BnBackbone<B> {
    type Input = Tensor<B, 2>;
    fn features(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let h = self.linear.forward(x);
        let [n, c] = h.dims();
        self.norm.forward(h.reshape([n, c, 1])).reshape([n, c])
    }
    fn feature_dim(&self) -> usize {
        6
    }
}

/// A body without activation, so that a NaN input reaches the loss (ReLU would zero it).
#[derive(Module, Debug)]
pub struct LinearBody<B: Backend> {
    pub linear: Linear<B>,
}

impl<B: Backend> Backbone<B> for LinearBody<B> {
    type Input = Tensor<B, 2>;
    fn features(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear.forward(x)
    }
    fn feature_dim(&self) -> usize {
        16
    }
}

pub fn linear_model() -> TransferModel<B, LinearBody<B>, LinearHead<B>> {
    let d = device();
    let body = LinearBody {
        linear: LinearConfig::new(8, 16).init(&d),
    };
    TransferModel::with_linear_head(body, 4, &d).unwrap()
}

/// Flattened values of every float tensor of a module, by path.
pub fn values<Bk: Backend, M: Module<Bk>>(m: &M) -> Vec<(String, Vec<f32>)> {
    use burn::module::{ModuleVisitor, Param};
    struct V(Vec<String>, Vec<(String, Vec<f32>)>);
    impl<Bk: Backend> ModuleVisitor<Bk> for V {
        fn enter_module(&mut self, n: &str, _: &str) {
            self.0.push(n.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<Bk, D>>) {
            self.1
                .push((self.0.join("."), p.val().to_data().to_vec::<f32>().unwrap()));
        }
    }
    let mut v = V(Vec::new(), Vec::new());
    m.visit(&mut v);
    v.1
}

pub fn value_of<Bk: Backend, M: Module<Bk>>(m: &M, path: &str) -> Vec<f32> {
    values::<Bk, M>(m)
        .into_iter()
        .find(|(p, _)| p == path)
        .unwrap_or_else(|| panic!("no tensor at {path}"))
        .1
}

pub fn quiet(t: FineTuner<B>) -> FineTuner<B> {
    t.verbose(false).progress_bar(false)
}

/// Rows of 8 features and a label, batched by burn's `DataLoader`.
#[derive(Clone)]
pub struct RowBatcher;

impl<Bk: Backend> Batcher<Bk, (Vec<f32>, i64), Batch<Bk>> for RowBatcher {
    fn batch(&self, items: Vec<(Vec<f32>, i64)>, device: &Bk::Device) -> Batch<Bk> {
        let n = items.len();
        let x: Vec<f32> = items.iter().flat_map(|(x, _)| x.clone()).collect();
        let y: Vec<i64> = items.iter().map(|(_, y)| *y).collect();
        ClassificationBatch::new(
            Tensor::from_data(TensorData::new(x, [n, 8]), device),
            Tensor::from_data(TensorData::new(y, [n]), device),
        )
    }
}

pub fn items(seed: u64) -> Vec<(Vec<f32>, i64)> {
    let b = batch::<Inner>(64, 8, 4, seed);
    let x = b.inputs.to_data().to_vec::<f32>().unwrap();
    let y = b.targets.to_data().iter::<i64>().collect::<Vec<_>>();
    (0..64)
        .map(|i| (x[i * 8..(i + 1) * 8].to_vec(), y[i]))
        .collect()
}

/// Runs `test` alone in a child process of this test binary. burn's backend random
/// generator is one global state: tests running in parallel threads would draw from it
/// between the seeded steps of the run being compared, so determinism is checked where no
/// other test runs.
pub fn isolated(test: &str, env: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{test} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 passed"), "{test} did not run:\n{stdout}");
}

/// `tests/fixtures/mlp_zip.pth` (torch.save's zip format, written by scripts/make_zip_pth.py)
/// and the strict options that map its `net.0` / `net.2` onto `MlpBackbone`'s layers.
pub fn zip_pth_fixture() -> (std::path::PathBuf, ImportOptions) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mlp_zip.pth");
    let options = ImportOptions::new()
        .with_remap(r"^net\.0\.", "layers.0.")
        .unwrap()
        .with_remap(r"^net\.2\.", "layers.1.")
        .unwrap()
        .with_strict(true);
    (path, options)
}

/// The float32 tensor `name` of a reference `.safetensors` file's bytes (the PyTorch /
/// transformers outputs the fixture scripts write), as burn data.
pub fn reference_tensor(bytes: &[u8], name: &str) -> TensorData {
    let file = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let view = file.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    TensorData::new(values, view.shape().to_vec())
}

/// The real weights at `relative` in the weights folder, or `None` with a message saying
/// which command provides them.
pub fn real_weights(relative: &str) -> Option<std::path::PathBuf> {
    let path = burn_transfer::models::weights_dir()?.join(relative);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: {} not found; run scripts/fetch-weights.sh (or set BURN_TRANSFER_WEIGHTS)",
            path.display()
        );
        None
    }
}
