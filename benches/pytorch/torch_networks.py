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
| `conv_k3_s2_c64_o128_h32_g1_train` | one `nn.Conv2d` (3x3, stride 2, 64 -> 128 channels, 32x32 maps, 1 group, padding k // 2, no bias), batch 16 | forward, then backward of sum(y * g): input and weight gradients (no input gradient for 3 channels) |
| `conv_..._infer` | same | one forward under no_grad, then the output's sum |
| `resnet18_layers`, `resnet50_layers`, `mobilenetv2_layers` | every distinct convolution of the network at these shapes, both modes | (the crate's `benches/workloads/conv_layers.rs` lists the same) |

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


# Each network's distinct convolutions at batch 16 and 128 pixels: (kernel, stride,
# channels, out, size, groups), as benches/workloads/conv_layers.rs lists them.
NETWORK_LAYERS = {
    "resnet18": [
        (7, 2, 3, 64, 128, 1), (3, 1, 64, 64, 32, 1), (3, 2, 64, 128, 32, 1),
        (1, 2, 64, 128, 32, 1), (3, 1, 128, 128, 16, 1), (3, 2, 128, 256, 16, 1),
        (1, 2, 128, 256, 16, 1), (3, 1, 256, 256, 8, 1), (3, 2, 256, 512, 8, 1),
        (1, 2, 256, 512, 8, 1), (3, 1, 512, 512, 4, 1),
    ],
    "resnet50": [
        (7, 2, 3, 64, 128, 1), (1, 1, 64, 64, 32, 1), (3, 1, 64, 64, 32, 1),
        (1, 1, 64, 256, 32, 1), (1, 1, 256, 64, 32, 1), (1, 1, 256, 128, 32, 1),
        (3, 2, 128, 128, 32, 1), (1, 1, 128, 512, 16, 1), (1, 2, 256, 512, 32, 1),
        (1, 1, 512, 128, 16, 1), (3, 1, 128, 128, 16, 1), (1, 1, 512, 256, 16, 1),
        (3, 2, 256, 256, 16, 1), (1, 1, 256, 1024, 8, 1), (1, 2, 512, 1024, 16, 1),
        (1, 1, 1024, 256, 8, 1), (3, 1, 256, 256, 8, 1), (1, 1, 1024, 512, 8, 1),
        (3, 2, 512, 512, 8, 1), (1, 1, 512, 2048, 4, 1), (1, 2, 1024, 2048, 8, 1),
        (1, 1, 2048, 512, 4, 1), (3, 1, 512, 512, 4, 1),
    ],
    "mobilenetv2": [
        (3, 2, 3, 32, 128, 1), (3, 1, 32, 32, 64, 32), (1, 1, 32, 16, 64, 1),
        (1, 1, 16, 96, 64, 1), (3, 2, 96, 96, 64, 96), (1, 1, 96, 24, 32, 1),
        (1, 1, 24, 144, 32, 1), (3, 1, 144, 144, 32, 144), (1, 1, 144, 24, 32, 1),
        (3, 2, 144, 144, 32, 144), (1, 1, 144, 32, 16, 1), (1, 1, 32, 192, 16, 1),
        (3, 1, 192, 192, 16, 192), (1, 1, 192, 32, 16, 1), (3, 2, 192, 192, 16, 192),
        (1, 1, 192, 64, 8, 1), (1, 1, 64, 384, 8, 1), (3, 1, 384, 384, 8, 384),
        (1, 1, 384, 64, 8, 1), (1, 1, 384, 96, 8, 1), (1, 1, 96, 576, 8, 1),
        (3, 1, 576, 576, 8, 576), (1, 1, 576, 96, 8, 1), (3, 2, 576, 576, 8, 576),
        (1, 1, 576, 160, 4, 1), (1, 1, 160, 960, 4, 1), (3, 1, 960, 960, 4, 960),
        (1, 1, 960, 160, 4, 1), (1, 1, 960, 320, 4, 1), (1, 1, 320, 1280, 4, 1),
    ],
}


def expand(name):
    """`resnet18_layers` -> every layer's name in both modes; any other name -> itself."""
    network = name[: -len("_layers")] if name.endswith("_layers") else None
    if network not in NETWORK_LAYERS:
        return [name]
    return [
        f"conv_k{k}_s{s}_c{c}_o{o}_h{h}_g{g}_{mode}"
        for mode in ("infer", "train")
        for (k, s, c, o, h, g) in NETWORK_LAYERS[network]
    ]


def conv_layer(name):
    """`conv_k3_s1_c64_o64_h32_g1_train` -> step(i): that layer's forward (and backward)."""
    k, s, c, o, h, g, mode = name[len("conv_"):].split("_")
    k, s, c, o, h, g = (int(part[1:]) for part in (k, s, c, o, h, g))
    conv = nn.Conv2d(c, o, k, stride=s, padding=k // 2, groups=g, bias=False)
    xs = [torch.randn(IMG_BATCH, c, h, h) for _ in range(N_BATCHES)]
    if mode == "infer":
        conv.eval()

        def infer(i):
            with torch.no_grad():
                return conv(xs[i % N_BATCHES]).sum().item()

        return infer
    out = (h + 2 * (k // 2) - k) // s + 1
    upstream = torch.randn(IMG_BATCH, o, out, out)
    input_grad = c > 3

    def train(i):
        x = xs[i % N_BATCHES].detach().requires_grad_(input_grad)
        conv.weight.grad = None
        (conv(x) * upstream).sum().backward()
        read = conv.weight.grad[0, 0, 0, 0].item()
        if input_grad:
            read += x.grad[0, 0, 0, 0].item()
        return read

    return train


def build(name):
    """Returns step(i): one optimizer step on batch i % 10."""
    torch.manual_seed(0)
    if name.startswith("conv_"):
        return conv_layer(name)
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
    names = (
        WORKLOADS
        if args.workloads == "networks"
        else [n for name in args.workloads.split(",") for n in expand(name)]
    )
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
