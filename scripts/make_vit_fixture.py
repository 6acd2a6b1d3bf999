#!/usr/bin/env python3
"""Writes tests/fixtures/vit-tiny/: tiny random ViTs built by transformers itself, saved in
Hugging Face folder layout, with reference outputs the Rust tests match.

Needs torch and transformers in a virtualenv (CI does not: the outputs are committed):

    python3 -m venv ~/torchref && ~/torchref/bin/pip install torch==2.15.0 numpy
    ~/torchref/bin/pip install transformers==5.25.0
    ~/torchref/bin/python scripts/make_vit_fixture.py tests/fixtures/vit-tiny

What it writes (width 32, 2 layers, 4 heads, 32×32 images in 8×8 patches, every parameter
drawn at random, layer norms and biases included, so that each one matters):
- config.json + model.safetensors: `ViTForImageClassification` (5 labels) from
  `save_pretrained` in its default, original key format (`vit.encoder.layer.N.attention.
  attention.query`, ...), the names of the checkpoints on the hub;
- v5-names/: the same model saved with `save_original_format=False` (transformers 5's own
  names: `vit.layers.N.attention.q_proj`, `mlp.fc1`, ...);
- base/: a `ViTModel` with its pooler (bare names: `embeddings.`, `encoder.`, `pooler.`);
- reference.safetensors: the pixel batches, then for the classifier the logits, the final
  hidden states, every hidden state and attention map (eager attention) at 32×32, and the
  logits and final hidden states of a 48×40 batch with interpolated position embeddings;
  for `base/` its final hidden states and pooler output; all float32;
- reference.json: the parameter counts of vit-base-patch16-224 (ViTForImageClassification,
  1000 labels) and of its ViTModel with pooler, and the versions used.
"""
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import ViTConfig, ViTForImageClassification, ViTModel


def randomize(model, seed):
    """Every parameter drawn at random (transformers' init leaves norms at 1/0 and biases 0,
    which would hide a mix-up between them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.3 if "weight" in name and p.dim() > 1 else 0.1
            base = 1.0 if "layernorm" in name and name.endswith("weight") else 0.0
            p.copy_(base + scale * torch.randn(p.shape, generator=g))
    return model


def keys(folder):
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        return set(f.keys())


def main(out):
    os.makedirs(out, exist_ok=True)
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=32, patch_size=8, num_channels=3, num_labels=5,
        id2label={i: f"class_{i}" for i in range(5)},
        label2id={f"class_{i}": i for i in range(5)},
    )
    config._attn_implementation = "eager"
    model = randomize(ViTForImageClassification(config), 1).eval()
    model.save_pretrained(out)
    assert "vit.encoder.layer.0.attention.attention.query.weight" in keys(out), sorted(keys(out))
    model.save_pretrained(os.path.join(out, "v5-names"), save_original_format=False)
    assert "vit.layers.0.attention.q_proj.weight" in keys(os.path.join(out, "v5-names"))

    g = torch.Generator().manual_seed(2)
    pixels = torch.randn(2, 3, 32, 32, generator=g)
    pixels_large = torch.randn(2, 3, 48, 40, generator=g)
    with torch.no_grad():
        o = model(pixel_values=pixels, output_hidden_states=True, output_attentions=True)
        body = model.vit(pixel_values=pixels)
        large = model(pixel_values=pixels_large, interpolate_pos_encoding=True)
        large_body = model.vit(pixel_values=pixels_large, interpolate_pos_encoding=True)
    assert len(o.hidden_states) == config.num_hidden_layers + 1
    tensors = {
        "pixel_values": pixels,
        "pixel_values_48x40": pixels_large,
        "logits": o.logits,
        "last_hidden_state": body.last_hidden_state,
        "logits_48x40": large.logits,
        "last_hidden_state_48x40": large_body.last_hidden_state,
    }
    tensors.update({f"hidden_states.{i}": h for i, h in enumerate(o.hidden_states)})
    tensors.update({f"attentions.{i}": a for i, a in enumerate(o.attentions)})

    base_config = ViTConfig(**{k: v for k, v in config.to_dict().items()
                               if k not in ("id2label", "label2id")})
    base_config._attn_implementation = "eager"
    base = randomize(ViTModel(base_config, add_pooling_layer=True), 3).eval()
    base.save_pretrained(os.path.join(out, "base"))
    assert "pooler.dense.weight" in keys(os.path.join(out, "base"))
    with torch.no_grad():
        b = base(pixel_values=pixels)
    tensors["base.last_hidden_state"] = b.last_hidden_state
    tensors["base.pooler_output"] = b.pooler_output
    save_file({k: v.contiguous().float() for k, v in tensors.items()},
              os.path.join(out, "reference.safetensors"))

    def count(m):
        return sum(p.numel() for p in m.parameters())

    reference = {
        "param_count_vit_base_patch16_224": count(
            ViTForImageClassification(ViTConfig(num_labels=1000))),
        "param_count_vit_base_model_with_pooler": count(ViTModel(ViTConfig())),
        "versions": {"torch": torch.__version__,
                     "transformers": __import__("transformers").__version__},
    }
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")
    print(json.dumps(reference))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/vit-tiny")
