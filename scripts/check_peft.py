#!/usr/bin/env python3
"""Loads an adapter exported by `cargo run --example export_peft -- DIR` with Python PEFT
and checks that PyTorch computes the outputs burn-transfer computed (max abs diff < 1e-4).

    python3 scripts/check_peft.py DIR      # needs torch, peft and safetensors
"""
import json
import os
import sys

import torch
import peft
from peft import PeftModel
from safetensors.torch import load_file


class Net(torch.nn.Module):
    """The PyTorch twin of TransferModel<MlpBackbone, LinearHead>: same module names."""

    def __init__(self, widths, classes):
        super().__init__()
        self.backbone = torch.nn.Module()
        self.backbone.layers = torch.nn.ModuleList(
            torch.nn.Linear(a, b) for a, b in zip(widths, widths[1:])
        )
        self.head = torch.nn.Module()
        self.head.linear = torch.nn.Linear(widths[-1], classes)

    def forward(self, x):
        for layer in self.backbone.layers:
            x = torch.relu(layer(x))
        return self.head.linear(x)


def main(d):
    base = load_file(os.path.join(d, "base.safetensors"))
    widths = [base["backbone.layers.0.weight"].shape[1]]
    i = 0
    while f"backbone.layers.{i}.weight" in base:
        widths.append(base[f"backbone.layers.{i}.weight"].shape[0])
        i += 1
    net = Net(widths, base["head.linear.weight"].shape[0])
    net.load_state_dict(base)
    model = PeftModel.from_pretrained(net, os.path.join(d, "adapter")).eval()
    io = load_file(os.path.join(d, "io.safetensors"))
    with torch.no_grad():
        got = model(io["x"])
    diff = (got - io["logits"]).abs().max().item()
    cfg = json.load(open(os.path.join(d, "adapter", "adapter_config.json")))
    print(f"torch {torch.__version__}, peft {peft.__version__}")
    print(f"target_modules {cfg['target_modules']}, modules_to_save {cfg['modules_to_save']}")
    print(f"max |PyTorch+PEFT - burn-transfer| = {diff:.3g}")
    if not diff < 1e-4:
        sys.exit(1)
    print("PEFT reproduces the adapter's outputs")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "peft_export")
