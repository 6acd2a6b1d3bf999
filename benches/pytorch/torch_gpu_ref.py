#!/usr/bin/env python3
"""PyTorch's reference workloads (benches/pytorch/torch_ref.py) on a CUDA GPU: the PyTorch
column of the GPU comparison (scripts/bench-gpu.sh runs it beside our wgpu benchmark).

    python3 benches/pytorch/torch_gpu_ref.py --ref benches/pytorch/torch_ref.py --json torch.json \
        [--device cuda] [--tf32] [torch_ref.py's own arguments: --steps, --workloads, ...]

Everything that is measured (shapes, data, seeds, warm-up, step counts, statistics, JSON
fields) stays torch_ref.py's own; this wrapper changes two things only:

- tensors and modules are created on the GPU (`torch.set_default_device`);
- every clock reading waits for the GPU first (`torch.cuda.synchronize`). torch_ref.py times
  a step as `perf_counter()` before and after `step(i)`, and on CUDA a step only queues its
  kernels; without the wait the figure would be launch overhead. Our benchmark ends each step
  with `B::sync` for the same reason.

Matrix products and convolutions run in full float32 by default, as ours do on wgpu
(PyTorch's default lets cuDNN use TF32 for convolutions); `--tf32` allows TF32 for both,
and the JSON records which. `--device cpu` runs the same path without a GPU, to try it.
"""
import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
import types

import torch


def load_reference(path):
    spec = importlib.util.spec_from_file_location("torch_ref", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synchronized_clock(device):
    """A stand-in for the `time` module whose perf_counter waits for `device` first."""
    if device.type != "cuda":
        return time

    def perf_counter():
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return types.SimpleNamespace(perf_counter=perf_counter)


def write_json_atomically(path, doc):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".torch_gpu_ref.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True, help="path of torch_ref.py")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 in matrix products and convolutions")
    ap.add_argument("--json", default="torch_gpu_ref.json")
    args, rest = ap.parse_known_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"no CUDA device visible to torch {torch.__version__}; use --device cpu to try the script")
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32

    ref = load_reference(args.ref)
    ref.time = synchronized_clock(device)
    torch.set_default_device(device)
    sys.argv = [args.ref, "--json", args.json, *rest]
    ref.main()

    with open(args.json) as f:
        doc = json.load(f)
    doc["device"] = str(device)
    doc["gpu"] = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    doc["cuda"] = torch.version.cuda
    doc["tf32"] = args.tf32
    doc["timing"] = "clock read after torch.cuda.synchronize" if device.type == "cuda" else "as torch_ref.py"
    write_json_atomically(args.json, doc)


if __name__ == "__main__":
    main()
