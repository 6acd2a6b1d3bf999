#!/usr/bin/env python3
"""Writes LoRA adapters with Python PEFT onto the tiny BERT of tests/fixtures/bert-tiny/
(written by make_bert_fixture.py), with the outputs PEFT computes through them, for the
test that loads PEFT's files onto this crate's `Bert`.

Needs torch, transformers and peft in a virtualenv (CI does not: the outputs are committed):

    ~/torchref/bin/pip install peft==0.18.0 accelerate==1.12.0 psutil
    ~/torchref/bin/python scripts/make_peft_fixture.py tests/fixtures/bert-tiny

What it writes, each folder as `PeftModel.save_pretrained` writes it
(`adapter_config.json` + `adapter_model.safetensors`), the factors drawn at random (PEFT
starts B at zero, which would make any loader look right):
- peft-query-value/: r = 4, lora_alpha = 8 on `query` and `value`;
- peft-rslora-modules-to-save/: r = 2, lora_alpha = 4, rank-stabilised scaling
  (`use_rslora`, α/√r), on `key` and `attention.output.dense`, with the pooler in
  `modules_to_save`, its weights changed as training would;
- peft-reference.safetensors: for the fixture's input batch, the final hidden states and
  pooler output of the base model with each adapter (`<folder>.last_hidden_state`,
  `<folder>.pooler_output`), float32.
"""
import os
import sys

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import BertModel


def randomize_adapter(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif "modules_to_save" in name:
                p.add_(0.2 * torch.randn(p.shape, generator=g))


def main(fixture):
    ref = load_file(os.path.join(fixture, "reference.safetensors"))
    input_ids = ref["input_ids"].long()
    attention_mask = ref["attention_mask"].long()
    outputs = {}
    adapters = {
        "peft-query-value": LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                       target_modules=["query", "value"]),
        "peft-rslora-modules-to-save": LoraConfig(
            r=2, lora_alpha=4, lora_dropout=0.0, use_rslora=True,
            target_modules=["key", "attention.output.dense"], modules_to_save=["pooler"]),
    }
    for seed, (folder, config) in enumerate(adapters.items(), start=1):
        base = BertModel.from_pretrained(fixture, attn_implementation="eager").eval()
        model = get_peft_model(base, config)
        randomize_adapter(model, seed)
        model.eval()
        model.save_pretrained(os.path.join(fixture, folder))
        # PEFT writes a model card template next to the adapter; the test needs only the
        # adapter files.
        os.remove(os.path.join(fixture, folder, "README.md"))
        with torch.no_grad():
            o = model(input_ids=input_ids, attention_mask=attention_mask)
        outputs[f"{folder}.last_hidden_state"] = o.last_hidden_state
        outputs[f"{folder}.pooler_output"] = o.pooler_output
        print(folder, sorted(load_file(os.path.join(
            fixture, folder, "adapter_model.safetensors")).keys())[:6])
    save_file({k: v.contiguous().float() for k, v in outputs.items()},
              os.path.join(fixture, "peft-reference.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/bert-tiny")
