//! Statistics, the JSON file and the side-by-side table against `torch_ref.py`'s JSON.

use serde_json::{Value, json};
use std::fmt::Write as _;

pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `torch_ref.py`'s `summarize`: min, median, max and every value.
pub struct Summary {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    all: Vec<f64>,
}

impl Summary {
    pub fn of(all: Vec<f64>) -> Self {
        Self {
            min: all.iter().cloned().fold(f64::INFINITY, f64::min),
            median: median(&all),
            max: all.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            all,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"min": self.min, "median": self.median, "max": self.max, "all": self.all})
    }
}

/// Writes `value` to `path` through a temporary file and a rename.
pub fn write_json(path: &str, value: &Value) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

/// Per-step and per-epoch ratios against PyTorch's JSON (`torch_ref.py --json`).
///
/// Per-epoch rows compare this crate's epoch (10 batches) with PyTorch's usual loop, which
/// recomputes the frozen part every step: 10 / PyTorch's head-only steps/s.
pub fn compare(torch_path: &str, ours: &Value) -> Result<String, String> {
    let text = std::fs::read_to_string(torch_path).map_err(|e| e.to_string())?;
    let torch: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<22} {:>12} {:>12} {:>7}",
        "workload", "PyTorch /s", "ours /s", "ratio"
    );
    let sps = |v: &Value, name: &str| v["workloads"][name]["steps_per_s"]["median"].as_f64();
    if let Some(ws) = ours["workloads"].as_object() {
        for name in ws.keys() {
            if let (Some(t), Some(o)) = (sps(&torch, name), sps(ours, name)) {
                let _ = writeln!(out, "{name:<22} {t:>12.2} {o:>12.2} {:>6.2}×", o / t);
            }
        }
    }
    if let Some(eps) = ours["epochs"].as_object() {
        for (name, e) in eps {
            let base = e["torch_workload"].as_str().unwrap_or_default();
            let steps = e["steps_per_epoch"].as_f64().unwrap_or(10.0);
            if let (Some(t), Some(o)) = (sps(&torch, base), e["epochs_per_s"]["median"].as_f64()) {
                let t_epochs = t / steps;
                let _ = writeln!(
                    out,
                    "{:<22} {t_epochs:>12.3} {o:>12.3} {:>6.2}×   (epochs/s vs PyTorch's {base} loop)",
                    name,
                    o / t_epochs
                );
            }
        }
    }
    if let (Some(t), Some(o)) = (
        torch["gemm_ceiling_gflops"].as_f64(),
        ours["gemm_ceiling_gflops"].as_f64(),
    ) {
        let _ = writeln!(
            out,
            "{:<22} {t:>12.1} {o:>12.1} {:>6.2}×   (GFLOP/s)",
            "gemm_ceiling",
            o / t
        );
        if let Some(full) = ours["workloads"]["full_ft"]["gflops_achieved"].as_f64() {
            let _ = writeln!(
                out,
                "full_ft reaches {:.0}% of PyTorch's SGEMM ceiling ({:.0}% of ours)",
                100.0 * full / t,
                100.0 * full / o
            );
        }
    }
    Ok(out)
}
