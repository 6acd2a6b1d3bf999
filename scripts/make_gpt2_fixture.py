#!/usr/bin/env python3
"""Writes tests/fixtures/gpt2-tiny/: a tiny random GPT-2 built by transformers itself, saved
in Hugging Face folder layout, with reference outputs the Rust tests match.

Needs torch and transformers in a virtualenv (CI does not: the outputs are committed):

    python3 -m venv ~/torchref && ~/torchref/bin/pip install torch==2.15.0 numpy
    ~/torchref/bin/pip install transformers==5.25.0
    ~/torchref/bin/python scripts/make_gpt2_fixture.py tests/fixtures/gpt2-tiny

What it writes:
- tokenizer.json: a byte-level BPE (GPT-2's pre-tokenizer and decoder) trained with
  Hugging Face `tokenizers` on the sentences below, plus `<|endoftext|>`;
- config.json + model.safetensors: `GPT2LMHeadModel` (2 blocks, width 32, 4 heads, 64
  positions) from `save_pretrained`, weights drawn with a large initializer_range so the
  next-token scores are decisive (the script checks the greedy margins);
- reference.safetensors: for a right-padded batch of two texts, the logits, every hidden
  state and every attention map (eager attention), all float32;
- reference.json: token ids of the texts, the padded batch and its mask, the LM loss with
  labels = ids (−100 at padding), greedy continuations of one prompt and of a left-padded
  batch (transformers' `generate`), and the parameter counts of gpt2 and distilgpt2.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel

CORPUS = [
    "Hello world, this is GPT-2 reading a sentence.",
    "The quick brown fox jumps over the lazy dog.",
    "Byte-level BPE reads every string: 中文, émojis 🙂 and tabs\t.",
    "Fine-tuning and distillation on burn, in Rust.",
    "A teacher cannot receive gradients; a frozen body cannot drift.",
] * 20
TEXTS = ["Hello world, this is GPT-2.", "Byte-level BPE reads 中文 🙂"]
EOT = "<|endoftext|>"


def margins(logits):
    """Gap between the largest and the second largest score of each row."""
    top = torch.topk(logits, 2, dim=-1).values
    return (top[..., 0] - top[..., 1]).min().item()


def main(out):
    os.makedirs(out, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=400, min_frequency=2, special_tokens=[EOT])
    tokenizer = bpe._tokenizer
    tokenizer.save(os.path.join(out, "tokenizer.json"))
    eot = tokenizer.token_to_id(EOT)
    ids = [tokenizer.encode(t, add_special_tokens=False).ids for t in TEXTS]
    for text, row in zip(TEXTS, ids):
        assert tokenizer.decode(row) == text, (text, tokenizer.decode(row))

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2, n_head=4,
        bos_token_id=eot, eos_token_id=eot, initializer_range=0.4,
    )
    config._attn_implementation = "eager"
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(out, safe_serialization=True)

    longest = max(map(len, ids))
    batch = [row + [eot] * (longest - len(row)) for row in ids]
    mask = [[1] * len(row) + [0] * (longest - len(row)) for row in ids]
    input_ids, attention_mask = torch.tensor(batch), torch.tensor(mask)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    with torch.no_grad():
        o = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                  output_hidden_states=True, output_attentions=True)
    tensors = {"logits": o.logits.contiguous()}
    tensors.update({f"hidden_states.{i}": h.contiguous() for i, h in enumerate(o.hidden_states)})
    tensors.update({f"attentions.{i}": a.contiguous() for i, a in enumerate(o.attentions)})
    save_file(tensors, os.path.join(out, "reference.safetensors"))

    def greedy(prompts, new):
        width = max(map(len, prompts))
        padded = torch.tensor([[eot] * (width - len(p)) + p for p in prompts])
        pmask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        with torch.no_grad():
            g = model.generate(padded, attention_mask=pmask, max_new_tokens=new, do_sample=False,
                               pad_token_id=eot, output_scores=True, return_dict_in_generate=True)
        gap = min(margins(s) for s in g.scores)
        assert gap > 1e-3, f"greedy margin {gap} too small to compare across implementations"
        rows = []
        for row in g.sequences[:, width:].tolist():
            rows.append(row[: row.index(eot) + 1] if eot in row else row)
        return rows, gap

    single, gap1 = greedy([ids[0]], 12)
    batched, gap2 = greedy([ids[0], ids[1][:4]], 8)

    def count(c):
        return sum(p.numel() for p in GPT2LMHeadModel(c).parameters())

    reference = {
        "texts": TEXTS,
        "ids": ids,
        "batch": batch,
        "mask": mask,
        "loss": o.loss.item(),
        "greedy_prompt": ids[0],
        "greedy": single,
        "greedy_batch_prompts": [ids[0], ids[1][:4]],
        "greedy_batch": batched,
        "greedy_min_margin": min(gap1, gap2),
        "param_count_gpt2": count(GPT2Config()),
        "param_count_distilgpt2": count(GPT2Config(n_layer=6)),
        "versions": {"torch": torch.__version__,
                     "transformers": __import__("transformers").__version__},
    }
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(json.dumps({k: v for k, v in reference.items() if k not in ("batch", "mask")},
                     ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/gpt2-tiny")
