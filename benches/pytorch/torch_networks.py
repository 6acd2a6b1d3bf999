#!/usr/bin/env python3
"""PyTorch CPU reference for fine-tuning real architectures (issue 19's networks).

The networks a user fine-tunes, built by the libraries users build them with and random
weights (speed does not depend on the values): transformers' `BertModel` at MiniLM-L6's size,
torchvision's `resnet18`, `resnet50` and `mobilenet_v2`. Float32, 2 threads, 10 fixed
synthetic batches cycled, the model in training mode (dropout on, BatchNorm in batch-statistics
mode) where it trains. Same statistics and JSON fields as `torch_ref.py`
(`workloads.NAME.steps_per_s.median`), so `cargo bench --bench workloads -- --torch FILE`
prints the ratios.

| name | model, input | what trains, optimizer |
|---|---|---|
| `bert_full` | BERT 6 layers, hidden 384, 12 heads, FFN 1536, vocab 30522; batch 16 x 128 tokens; [CLS] -> Linear 384->2 | everything, AdamW lr 1e-4 |
| `bert_head` | same | the head; encoder frozen under no_grad, eval mode |
| `resnet18_full` / `resnet50_full` | torchvision, fc -> Linear(feat, 10); batch 16 x 3 x 128 x 128 | everything, SGD momentum 0.9 lr 0.01 |
| `resnet18_head` / `resnet50_head` | same | fc; body frozen under no_grad, eval mode |
| `mobilenetv2_full` | torchvision, classifier.1 -> Linear(1280, 10); batch 16 x 3 x 128 x 128 | everything, SGD momentum 0.9 |
| `mobilenetv2_head` | same | classifier; body frozen under no_grad, eval mode |
| `vit_full` | transformers' `ViTModel` at ViT-S/16's size (12 layers, hidden 384, 6 heads, MLP 1536), 16x16 patches of the same 128 x 128 images; [CLS] -> Linear 384->10 | everything, AdamW lr 1e-4 |
| `vit_head` | same | the head; encoder frozen under no_grad, eval mode |

Usage (torch 2.15, torchvision 0.29, transformers 5 in a virtualenv; see README.md here):

  python torch_networks.py --json torch_networks.json
  TORCH_REF=benches/pytorch/torch_networks.py EXTRA="--workloads networks --warmup 2 --steps 8" \
      OUT=bench-results-networks scripts/bench-compare.sh     # side by side with ours
  python torch_networks.py --workloads bert_full,resnet18_full --repeats 1 --steps 5
"""
import argparse
import json
import os
import platform
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# Python puts a script's own folder on the import path: the sibling imports from anywhere.
from torch_ref import cpu_model

THREADS = 2
torch.set_num_threads(THREADS)

N_BATCHES = 10
BERT_BATCH, BERT_SEQ, BERT_VOCAB = 16, 128, 30522
IMG_BATCH, IMG_SIZE, IMG_CLASSES = 16, 128, 10

WORKLOADS = [
    "bert_full",
    "bert_head",
    "resnet18_full",
    "resnet18_head",
    "resnet50_full",
    "resnet50_head",
    "mobilenetv2_full",
    "mobilenetv2_head",
    "vit_full",
    "vit_head",
]


def bert_parts():
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=BERT_VOCAB,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
    )
    encoder = BertModel(config, add_pooling_layer=False)
    head = nn.Linear(384, 2)
    xs = [torch.randint(0, BERT_VOCAB, (BERT_BATCH, BERT_SEQ)) for _ in range(N_BATCHES)]
    ys = [torch.randint(0, 2, (BERT_BATCH,)) for _ in range(N_BATCHES)]
    return encoder, head, xs, ys, lambda enc, x: enc(input_ids=x).last_hidden_state[:, 0]


def vit_parts():
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        image_size=IMG_SIZE,
        patch_size=16,
    )
    encoder = ViTModel(config, add_pooling_layer=False)
    head = nn.Linear(384, IMG_CLASSES)
    xs = [torch.randn(IMG_BATCH, 3, IMG_SIZE, IMG_SIZE) for _ in range(N_BATCHES)]
    ys = [torch.randint(0, IMG_CLASSES, (IMG_BATCH,)) for _ in range(N_BATCHES)]
    return encoder, head, xs, ys, lambda enc, x: enc(pixel_values=x).last_hidden_state[:, 0]


def cnn_parts(arch):
    import torchvision

    net = getattr(torchvision.models, arch)()
    if arch == "mobilenet_v2":
        head = nn.Linear(1280, IMG_CLASSES)
        net.classifier[1] = nn.Identity()
    else:
        head = nn.Linear(net.fc.in_features, IMG_CLASSES)
        net.fc = nn.Identity()
    xs = [torch.randn(IMG_BATCH, 3, IMG_SIZE, IMG_SIZE) for _ in range(N_BATCHES)]
    ys = [torch.randint(0, IMG_CLASSES, (IMG_BATCH,)) for _ in range(N_BATCHES)]
    return net, head, xs, ys, lambda body, x: body(x)


def build(name):
    """Returns step(i): one optimizer step on batch i % 10."""
    torch.manual_seed(0)
    if name not in WORKLOADS:
        raise SystemExit(f"unknown workload {name!r}; the reference has {', '.join(WORKLOADS)}")
    family, mode = name.rsplit("_", 1)
    if family == "bert":
        body, head, xs, ys, features = bert_parts()
    elif family == "vit":
        body, head, xs, ys, features = vit_parts()
    else:
        arch = {"resnet18": "resnet18", "resnet50": "resnet50", "mobilenetv2": "mobilenet_v2"}[family]
        body, head, xs, ys, features = cnn_parts(arch)
    if mode == "full":
        params = list(body.parameters()) + list(head.parameters())
    else:
        for p in body.parameters():
            p.requires_grad_(False)
        params = list(head.parameters())
    if family in ("bert", "vit"):
        opt = torch.optim.AdamW(params, lr=1e-4)
    else:
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    body.train(mode == "full")
    head.train()

    def step(i):
        x, y = xs[i % N_BATCHES], ys[i % N_BATCHES]
        opt.zero_grad(set_to_none=True)
        if mode == "full":
            f = features(body, x)
        else:
            with torch.no_grad():
                f = features(body, x)
        loss = F.cross_entropy(head(f), y)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def bench(name, warmup, steps, repeats):
    step = build(name)
    i = 0
    for _ in range(warmup):
        step(i)
        i += 1
    reps = []
    for _ in range(repeats):
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step(i)
            times.append(time.perf_counter() - t0)
            i += 1
        med = statistics.median(times)
        reps.append({"steps_per_s": 1.0 / med, "min_step_s": min(times)})
    return reps


def summarize(vals):
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals), "all": vals}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    # `networks` (every one) is the name the crate's benchmark also takes.
    ap.add_argument("--workloads", default="networks")
    ap.add_argument("--json", default="torch_networks.json")
    args = ap.parse_args()
    result = {
        "framework": "pytorch",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "loadavg_start": open("/proc/loadavg").read().strip() if os.path.exists("/proc/loadavg") else "",
        "warmup": args.warmup,
        "steps": args.steps,
        "repeats": args.repeats,
        "workloads": {},
    }
    names = WORKLOADS if args.workloads == "networks" else args.workloads.split(",")
    # The crate's own rows (`bert_lora`, the `_body` forwards) have no counterpart here:
    # skipped, so that one list serves both benchmarks (scripts/bench-compare.sh).
    ours_only = [n for n in names if n == "bert_lora" or n.endswith("_body")]
    if ours_only:
        print(f"skipped (the crate's own rows): {', '.join(ours_only)}", flush=True)
    names = [n for n in names if n not in ours_only]
    for name in names:
        reps = bench(name, args.warmup, args.steps, args.repeats)
        sps = summarize([r["steps_per_s"] for r in reps])
        best = summarize([1.0 / r["min_step_s"] for r in reps])
        result["workloads"][name] = {"steps_per_s": sps, "best_steps_per_s": best}
        print(f"{name:<20} {sps['median']:8.3f} steps/s (min {sps['min']:.3f} / max {sps['max']:.3f})", flush=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
