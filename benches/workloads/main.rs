//! Steady-state steps/s of the PyTorch reference workloads (benches/pytorch/README.md) on
//! this crate, with the same shapes, data, step counts and statistics as `torch_ref.py`, and
//! the same JSON fields (`workloads.NAME.steps_per_s.median`, `gemm`, ...), so the two files
//! can be put side by side (`--torch torch_ref.json` prints the ratios).
//!
//!     cargo bench --bench workloads -- --json bench.json [--backend ndarray|flex|wgpu]
//!         [--workloads a,b|networks|resnet18_layers] [--warmup 5] [--steps 30] [--repeats 3] [--no-gemm]
//!         [--epochs 10] [--torch torch_ref.json] [--system-malloc] [--separate-main]
//!
//! Like a training program should, it first makes `malloc` keep freed memory for the next
//! step (`burn_transfer::kernels::reuse_freed_memory`); `--system-malloc` leaves glibc's
//! defaults (`scripts/bench-compare.sh` runs PyTorch under the same setting as ours). And it
//! makes its thread one of rayon's (`burn_transfer::kernels::join_compute_pool`);
//! `--separate-main` leaves rayon's default pool beside it.
//!
//! Backends other than ndarray need their crate feature (`--features flex`, `wgpu`).

mod cnn;
mod conv_layers;
mod epochs;
mod networks;
mod report;
mod workloads;

use burn::backend::Autodiff;
use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::backend::AutodiffBackend;
use report::{Summary, median};
use serde_json::{Value, json};
use std::time::Instant;

struct Args {
    backend: String,
    workloads: Vec<String>,
    warmup: usize,
    steps: usize,
    repeats: usize,
    epochs: usize,
    gemm: bool,
    reuse_memory: bool,
    main_in_pool: bool,
    json: String,
    torch: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        backend: "ndarray".into(),
        workloads: workloads::NAMES
            .iter()
            .chain(epochs::NAMES.iter())
            .map(|s| s.to_string())
            .collect(),
        warmup: 5,
        steps: 30,
        repeats: 3,
        epochs: 10,
        gemm: true,
        reuse_memory: true,
        main_in_pool: true,
        json: "bench.json".into(),
        torch: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            // cargo bench passes --bench to harness-less benches.
            "--bench" => {}
            "--backend" => a.backend = value()?,
            // `networks` stands for every real architecture (networks.rs), `resnet18_layers`
            // (and the other networks') for its convolution layers (conv_layers.rs).
            "--workloads" => {
                a.workloads = value()?
                    .split(',')
                    .flat_map(|name| match name {
                        "networks" => networks::NAMES.iter().map(|s| s.to_string()).collect(),
                        name => conv_layers::expand(name),
                    })
                    .collect()
            }
            "--warmup" => a.warmup = number(value()?)?,
            "--steps" => a.steps = number(value()?)?,
            "--repeats" => a.repeats = number(value()?)?,
            "--epochs" => a.epochs = number(value()?)?,
            "--no-gemm" => a.gemm = false,
            "--system-malloc" => a.reuse_memory = false,
            "--separate-main" => a.main_in_pool = false,
            "--json" => a.json = value()?,
            "--torch" => a.torch = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.steps == 0 || a.repeats == 0 {
        return Err("--steps and --repeats must be at least 1".into());
    }
    Ok(a)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// How the n×n product of the GEMM measurement is computed.
#[derive(Clone, Copy)]
enum Product {
    /// The backend's `matmul`.
    Backend,
    /// the kernels' `linear` (no bias): what this crate's layers run.
    Linear,
}

/// `torch_ref.py`'s GEMM ceiling: median time of 10 products of two n×n matrices.
fn gemm<B: Backend>(n: usize, product: Product, device: &B::Device) -> (f64, f64) {
    let a = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
    let b = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
    let layer = Linear {
        weight: Param::from_tensor(b.clone()),
        bias: None,
    };
    let run = || {
        let t0 = Instant::now();
        let c = match product {
            Product::Backend => a.clone().matmul(b.clone()),
            Product::Linear => burn_transfer::kernels::cpu::linear::linear(&layer, a.clone()),
        };
        B::sync(device).expect("device sync");
        drop(c);
        t0.elapsed().as_secs_f64()
    };
    for _ in 0..3 {
        run();
    }
    let times: Vec<f64> = (0..10).map(|_| run()).collect();
    let flop = 2.0 * (n as f64).powi(3);
    let best = times.iter().cloned().fold(f64::INFINITY, f64::min);
    (flop / median(&times) / 1e9, flop / best / 1e9)
}

/// The processor's name from `/proc/cpuinfo` (ratios to PyTorch differ between vendors),
/// empty where the system does not say.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_default()
}

fn run<B: AutodiffBackend>(args: &Args, device: &B::Device) -> Value {
    let mut result = json!({
        "loadavg_start": loadavg(),
        "framework": "burn-transfer",
        "burn_version": "0.21.0",
        "backend": args.backend,
        "blas": if cfg!(feature = "blas-openblas-system") { "openblas" } else { "none" },
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "machine": std::env::consts::ARCH,
        "cpu_model": cpu_model(),
        "malloc": if args.reuse_memory { "reuse_freed_memory" } else { "system defaults" },
        "main_thread_in_pool": args.main_in_pool,
        "warmup": args.warmup,
        "steps": args.steps,
        "repeats": args.repeats,
        "gemm": {},
        "linear_gemm": {},
        "workloads": {},
    });
    let mut ceiling = None;
    if args.gemm {
        // The backend's product under `gemm` (torch_ref.py's field); this crate's linear
        // layer under `linear_gemm` (on ndarray it is another GEMM). The ceiling is the
        // faster of the two.
        for (key, product) in [("gemm", Product::Backend), ("linear_gemm", Product::Linear)] {
            for n in [1024usize, 2048] {
                let runs: Vec<(f64, f64)> = (0..args.repeats)
                    .map(|_| gemm::<B::InnerBackend>(n, product, device))
                    .collect();
                let s = Summary::of(runs.iter().map(|r| r.0).collect());
                let best = runs.iter().map(|r| r.1).fold(0.0, f64::max);
                println!(
                    "{key} {n}^3: {:.1} GFLOP/s (min {:.1} / max {:.1})",
                    s.median, s.min, s.max
                );
                ceiling = Some(ceiling.unwrap_or(0.0f64).max(s.median));
                result[key][n.to_string()] = json!({"gflops": s.to_json(), "best_gflops": best});
            }
        }
        result["gemm_ceiling_gflops"] = json!(ceiling);
    }
    println!(
        "{:<20} {:>11} {:>8} {:>8} {:>10} {:>8} {:>6}",
        "workload", "steps/s med", "min", "max", "GFLOP/step", "GFLOP/s", "%ceil"
    );
    for name in &args.workloads {
        if epochs::NAMES.contains(&name.as_str()) {
            continue;
        }
        let built = workloads::build::<B>(name, device)
            .or_else(|| networks::build::<B>(name, device).map(|step| (step, f64::NAN)))
            .or_else(|| conv_layers::build::<B>(name, device).map(|step| (step, f64::NAN)));
        let Some((mut step, flops)) = built else {
            eprintln!("unknown workload {name}");
            std::process::exit(2);
        };
        let mut i = 0;
        for _ in 0..args.warmup {
            step(i);
            i += 1;
        }
        let mut medians = Vec::new();
        let mut bests = Vec::new();
        for _ in 0..args.repeats {
            let mut times = Vec::with_capacity(args.steps);
            for _ in 0..args.steps {
                let t0 = Instant::now();
                step(i);
                B::sync(device).expect("device sync");
                times.push(t0.elapsed().as_secs_f64());
                i += 1;
            }
            medians.push(1.0 / median(&times));
            bests.push(1.0 / times.iter().cloned().fold(f64::INFINITY, f64::min));
        }
        let sps = Summary::of(medians);
        let achieved = flops * sps.median / 1e9;
        let mut entry = json!({
            "steps_per_s": sps.to_json(),
            "best_steps_per_s": Summary::of(bests).to_json(),
            "flops_per_step": flops,
            "gflops_achieved": achieved,
        });
        if let Some(c) = ceiling {
            entry["fraction_of_gemm_ceiling"] = json!(achieved / c);
        }
        println!(
            "{:<20} {:>11.2} {:>8.2} {:>8.2} {:>10.3} {:>8.1} {:>6.1}",
            name,
            sps.median,
            sps.min,
            sps.max,
            flops / 1e9,
            achieved,
            ceiling.map_or(f64::NAN, |c| 100.0 * achieved / c)
        );
        result["workloads"][name.as_str()] = entry;
    }
    let multi: Vec<&String> = args
        .workloads
        .iter()
        .filter(|n| epochs::NAMES.contains(&n.as_str()))
        .collect();
    if !multi.is_empty() && args.epochs > 0 {
        result["epochs"] = epochs::run::<B>(&multi, args.epochs, args.repeats, device);
    }
    result["loadavg_end"] = json!(loadavg());
    result
}

fn main() {
    let mut args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if args.main_in_pool {
        args.main_in_pool = burn_transfer::kernels::join_compute_pool();
        if !args.main_in_pool {
            eprintln!("note: a single thread; rayon's pool left as it is");
        }
    }
    if args.reuse_memory && !burn_transfer::kernels::reuse_freed_memory() {
        eprintln!("note: malloc is not glibc's here; running with its defaults");
    }
    let result = match args.backend.as_str() {
        "ndarray" => run::<Autodiff<burn::backend::NdArray>>(&args, &Default::default()),
        #[cfg(feature = "flex")]
        "flex" => run::<Autodiff<burn::backend::Flex>>(&args, &Default::default()),
        #[cfg(feature = "wgpu")]
        "wgpu" => run::<Autodiff<burn::backend::Wgpu>>(&args, &Default::default()),
        other => {
            eprintln!(
                "backend {other} is not compiled in (ndarray; flex and wgpu need their crate features)"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = report::write_json(&args.json, &result) {
        eprintln!("cannot write {}: {e}", args.json);
        std::process::exit(1);
    }
    println!("wrote {}", args.json);
    if let Some(torch) = &args.torch {
        match report::compare(torch, &result) {
            Ok(table) => print!("{table}"),
            Err(e) => {
                eprintln!("cannot compare with {torch}: {e}");
                std::process::exit(1);
            }
        }
    }
}
