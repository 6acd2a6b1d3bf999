#!/usr/bin/env python3
"""Writes tests/fixtures/bert-tiny/: a tiny random BERT built by transformers itself, saved
in Hugging Face folder layout, with the reference outputs of its poolings.

Needs torch and transformers in a virtualenv (CI does not: the outputs are committed):

    python3 -m venv ~/torchref && ~/torchref/bin/pip install torch==2.15.0 numpy
    ~/torchref/bin/pip install transformers==5.25.0
    ~/torchref/bin/python scripts/make_bert_fixture.py tests/fixtures/bert-tiny

What it writes (width 32, 2 layers, 4 heads, vocabulary 50, every parameter drawn at
random, layer norms and biases included, so that each one matters):
- config.json + model.safetensors: a `BertModel` with its pooler, from `save_pretrained`;
- reference.safetensors: a padded batch of two rows (`input_ids`, `attention_mask`) and, for
  it, the final hidden states, BERT's pooler output (`pooler_output`: tanh(dense) over
  `[CLS]`, what `BertForSequenceClassification` classifies) and the sentence embedding as
  sentence-transformers computes it with `normalize_embeddings=True` (mean over the real
  tokens, then divided by its L2 norm: `mean_normalized`); all float32;
- reference.json: the versions used.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import BertConfig, BertModel


def randomize(model, seed):
    """Every parameter drawn at random (transformers' init leaves norms at 1/0 and biases 0,
    which would hide a mix-up between them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.3 if "weight" in name and p.dim() > 1 else 0.1
            base = 1.0 if "LayerNorm" in name and name.endswith("weight") else 0.0
            p.copy_(base + scale * torch.randn(p.shape, generator=g))
    return model


def main(out):
    os.makedirs(out, exist_ok=True)
    config = BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=32, type_vocab_size=2,
    )
    config._attn_implementation = "eager"
    model = randomize(BertModel(config, add_pooling_layer=True), 1).eval()
    model.save_pretrained(out)

    input_ids = torch.tensor([[2, 17, 5, 33, 9, 3], [2, 41, 8, 3, 0, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        o = model(input_ids=input_ids, attention_mask=attention_mask)
    # sentence-transformers' Pooling(mean) + Normalize.
    mask = attention_mask.unsqueeze(-1).float()
    mean = (o.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    tensors = {
        "input_ids": input_ids.float(),
        "attention_mask": attention_mask.float(),
        "last_hidden_state": o.last_hidden_state,
        "pooler_output": o.pooler_output,
        "mean_normalized": F.normalize(mean, p=2, dim=1),
    }
    save_file({k: v.contiguous().float() for k, v in tensors.items()},
              os.path.join(out, "reference.safetensors"))
    reference = {
        "versions": {"torch": torch.__version__,
                     "transformers": __import__("transformers").__version__},
    }
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")
    print(json.dumps(reference))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/bert-tiny")
