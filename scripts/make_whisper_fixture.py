#!/usr/bin/env python3
"""Writes tests/fixtures/whisper-tiny/: a tiny random Whisper built by transformers itself,
saved in Hugging Face folder layout, with the log-mel features of fixed waveforms and the
encoder's outputs, which the Rust tests match.

Needs torch and transformers in a virtualenv (CI does not: the outputs are committed):

    python3 -m venv ~/torchref && ~/torchref/bin/pip install torch==2.15.0 numpy
    ~/torchref/bin/pip install transformers==5.25.0
    ~/torchref/bin/python scripts/make_whisper_fixture.py tests/fixtures/whisper-tiny

What it writes:
- config.json + model.safetensors: `WhisperForConditionalGeneration` (the class of
  `openai/whisper-tiny`'s checkpoint: keys `model.encoder.*`, `model.decoder.*`) with an
  encoder of 2 layers, width 32, 4 heads, 80 mel bins and 100 positions (2 s of audio), every
  parameter drawn at random (norms and biases included), and a one-layer decoder;
- reference.safetensors: two waveforms (1.3 s and 0.7 s at 16 kHz: chirps, harmonics and
  noise), their log-mel features from `WhisperFeatureExtractor(chunk_length=2)` (`[2, 80,
  200]`) by both of transformers' paths (torch's float32 STFT, which `__call__` takes when
  torch is installed, and the NumPy one, which computes the FFT in float64), the first 300
  frames of the default 30 s extractor's features of the first waveform, and the encoder's
  last hidden state, every hidden state and every attention map (eager attention, of the
  first waveform) on the 2 s features; all float32;
- reference.json: the sum of the 30 s features, the largest difference between
  transformers' torch and NumPy feature paths, and the parameter count of whisper-tiny's
  encoder.
"""
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperModel

RATE = 16000


def waveform(seconds, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    chirp = np.sin(2 * np.pi * (200 + 900 * t) * t)
    tones = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 2750 * t + 1.0)
    envelope = np.minimum(1.0, 8 * t) * np.minimum(1.0, 8 * (seconds - t))
    return (0.5 * envelope * (chirp + tones) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" in name:
                continue  # Whisper's sinusoids, fixed
            scale = 0.3 if p.dim() > 1 else 0.1
            base = 1.0 if "layer_norm" in name and name.endswith("weight") else 0.0
            p.copy_(base + scale * torch.randn(p.shape, generator=g))
    return model


def main(out):
    os.makedirs(out, exist_ok=True)
    waves = [waveform(1.3, 1), waveform(0.7, 2)]
    short = WhisperFeatureExtractor(feature_size=80, chunk_length=2)
    features = short(waves, sampling_rate=RATE, return_tensors="pt").input_features
    assert features.shape == (2, 80, 200), features.shape
    numpy_path = np.stack([short._np_extract_fbank_features(
        np.pad(w, (0, 2 * RATE - w.size))[None], "cpu")[0] for w in waves])
    numpy_gap = float(np.abs(numpy_path - features.numpy()).max())
    full = WhisperFeatureExtractor()(waves[0], sampling_rate=RATE, return_tensors="pt").input_features
    assert full.shape == (1, 80, 3000), full.shape

    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=64, num_mel_bins=80, d_model=32, encoder_layers=2, encoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64,
        max_source_positions=100, max_target_positions=16, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, decoder_start_token_id=1,
    )
    config._attn_implementation = "eager"
    model = randomize(WhisperForConditionalGeneration(config), 3).eval()
    model.save_pretrained(out)
    with torch.no_grad():
        o = model.model.encoder(features, output_hidden_states=True, output_attentions=True)
    tensors = {
        "waveform.0": torch.from_numpy(waves[0]),
        "waveform.1": torch.from_numpy(waves[1]),
        "input_features": features,
        "input_features_numpy": torch.from_numpy(numpy_path),
        "input_features_30s_head": full[:, :, :300],
        "last_hidden_state": o.last_hidden_state,
    }
    tensors.update({f"hidden_states.{i}": h for i, h in enumerate(o.hidden_states)})
    # The maps of the first waveform only (the batch's are as large as everything else).
    tensors.update({f"attentions.{i}": a[:1] for i, a in enumerate(o.attentions)})
    save_file({k: v.float().clone().contiguous() for k, v in tensors.items()},
              os.path.join(out, "reference.safetensors"))

    tiny = WhisperConfig(d_model=384, encoder_layers=4, encoder_attention_heads=6,
                         encoder_ffn_dim=1536, decoder_layers=4, decoder_attention_heads=6,
                         decoder_ffn_dim=1536, num_mel_bins=80, max_source_positions=1500)
    # transformers returns the last hidden state after the final norm (tied to the output).
    assert torch.equal(o.hidden_states[-1], o.last_hidden_state)
    reference = {
        "hidden_states": len(o.hidden_states),
        "features_30s_sum": float(full.double().sum()),
        "numpy_vs_torch_features_max_gap": numpy_gap,
        "param_count_whisper_tiny_encoder": sum(p.numel() for p in WhisperModel(tiny).encoder.parameters()),
        "versions": {"torch": torch.__version__,
                     "transformers": __import__("transformers").__version__},
    }
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")
    print(json.dumps(reference))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/whisper-tiny")
