#!/usr/bin/env python3
"""The README's benchmark table from the JSON files scripts/bench-compare.sh writes.

    scripts/bench-table.py bench-results            # Markdown table on stdout

For every round r it reads torch_r<r>.json and <backend>_r<r>.json, takes each workload's
steps/s median, and reports per backend the median over rounds of the steps/s and of the
ratio ours / PyTorch *within the same round* (the machine is noisy; ratios measured side by
side are what compare).
"""
import json
import statistics
import sys
from pathlib import Path

ORDER = [
    "head_frozen_nograd",
    "head_frozen_grad",
    "full_ft",
    "distill",
    "distill_cached",
    "cnn_frozen_nograd",
    "cnn_full",
    "cnn_full_burn_conv",
    # Real architectures (benches/pytorch/torch_networks.py).
    "bert_full",
    "bert_head",
    "bert_lora",
    "resnet18_full",
    "resnet18_head",
    "resnet50_full",
    "resnet50_head",
    "mobilenetv2_full",
    "mobilenetv2_head",
    "vit_full",
    "vit_head",
]
EPOCHS = ["head_epochs_cached", "head_epochs_recompute"]


def rate(doc, name):
    if name in EPOCHS:
        entry = doc.get("epochs", {}).get(name)
        return entry and entry["epochs_per_s"]["median"]
    entry = doc.get("workloads", {}).get(name)
    return entry and entry["steps_per_s"]["median"]


def torch_rate(doc, name):
    if name in EPOCHS:
        # PyTorch's usual loop: one epoch = 10 steps of head_frozen_nograd (recomputed body).
        entry = doc["workloads"].get("head_frozen_nograd")
        return entry and entry["steps_per_s"]["median"] / 10.0
    if name == "cnn_full_burn_conv":
        name = "cnn_full"
    if name == "bert_lora":
        # The reference has no PEFT: LoRA's step is set against PyTorch's full step.
        name = "bert_full"
    entry = doc["workloads"].get(name)
    return entry and entry["steps_per_s"]["median"]


def main():
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "bench-results")
    rounds = sorted(int(p.stem.split("_r")[1]) for p in folder.glob("torch_r*.json"))
    if not rounds:
        sys.exit(f"no torch_r*.json in {folder}: run scripts/bench-compare.sh first")
    backends = sorted(
        {p.stem.rsplit("_r", 1)[0] for p in folder.glob("*_r*.json")} - {"torch"},
        key=lambda b: (b != "ndarray", b),
    )
    torch = {r: json.loads((folder / f"torch_r{r}.json").read_text()) for r in rounds}
    ours = {
        (b, r): json.loads((folder / f"{b}_r{r}.json").read_text())
        for b in backends
        for r in rounds
        if (folder / f"{b}_r{r}.json").exists()
    }
    head = "| workload | PyTorch | " + " | ".join(f"{b} | ratio" for b in backends) + " |"
    print(head)
    print("|" + "---|" * (2 + 2 * len(backends)))
    for name in ORDER + EPOCHS:
        t = [torch_rate(torch[r], name) for r in rounds]
        if not any(t):
            continue
        cells = []
        for b in backends:
            ours_r = [(rate(ours[b, r], name), t[i]) for i, r in enumerate(rounds) if (b, r) in ours]
            ours_r = [(o, tt) for o, tt in ours_r if o and tt]
            if not ours_r:
                cells += ["", ""]
                continue
            cells.append(f"{statistics.median(o for o, _ in ours_r):.2f}")
            cells.append(f"{statistics.median(o / tt for o, tt in ours_r):.2f}×")
        if all(c == "" for c in cells):
            continue
        unit = " (epochs/s)" if name in EPOCHS else ""
        t_med = statistics.median(x for x in t if x)
        print(f"| `{name}`{unit} | {t_med:.2f} | " + " | ".join(cells) + " |")
    g_ts = [torch[r].get("gemm_ceiling_gflops") for r in rounds]
    if not all(g_ts):
        return
    g_t = statistics.median(g_ts)
    cells = []
    for b in backends:
        g = [ours[b, r].get("gemm_ceiling_gflops") for r in rounds if (b, r) in ours]
        g = [x for x in g if x]
        cells += [f"{statistics.median(g):.0f}", f"{statistics.median(g) / g_t:.2f}×"] if g else ["", ""]
    print(f"| SGEMM ceiling (GFLOP/s) | {g_t:.0f} | " + " | ".join(cells) + " |")
    for b in backends:
        fr = [
            ours[b, r]["workloads"]["full_ft"]["gflops_achieved"] / torch[r]["gemm_ceiling_gflops"]
            for r in rounds
            if (b, r) in ours and "full_ft" in ours[b, r]["workloads"]
        ]
        if fr:
            print(f"\n{b}: full_ft reaches {100 * statistics.median(fr):.0f}% of PyTorch's SGEMM ceiling", end="")
    print()


if __name__ == "__main__":
    main()
