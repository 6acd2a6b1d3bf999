#!/usr/bin/env bash
# Synthesises the spoken words of examples/keyword_spotting.rs with espeak-ng (Debian package
# `espeak-ng`) and converts them to 16 kHz mono 16-bit WAV with sox (Debian package `sox`),
# into a cache folder (default ~/.cache/burn-transfer/data/speech, or
# $BURN_TRANSFER_DATA/speech). Every word is spoken by 8 voices at 3 speeds and 3 pitches:
# 72 clips a word, named WORD/VOICE_SPEED_PITCH.wav. Deterministic (espeak-ng has no
# randomness); safe to run again: a complete folder is kept.
#
#   apt-get install espeak-ng sox
#   scripts/make-speech.sh
#
# Words: the first ten are the source task (the Speech Commands vocabulary), the last five
# the target task.
set -euo pipefail

dest="${BURN_TRANSFER_DATA:-$HOME/.cache/burn-transfer/data}/speech"
words=(yes no up down left right on off stop go cat dog bird house tree)
voices=(en-us en-gb en-gb-scotland en-029 en-gb-x-rp en-us+f2 en-gb+f4 en-us+m3)
speeds=(130 160 190)
pitches=(35 50 65)
expected=$(( ${#words[@]} * ${#voices[@]} * ${#speeds[@]} * ${#pitches[@]} ))

for tool in espeak-ng sox; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install espeak-ng sox" >&2; exit 2; }
done
if [ -f "$dest/COMPLETE" ] && [ "$(find "$dest" -name '*.wav' | wc -l)" -eq "$expected" ]; then
  echo "speech: already in $dest ($expected clips)"
  exit 0
fi
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
raw="$(mktemp --suffix=.wav)"
trap 'rm -f "$raw"' EXIT
for word in "${words[@]}"; do
  mkdir -p "$dest.tmp/$word"
  for voice in "${voices[@]}"; do
    for speed in "${speeds[@]}"; do
      for pitch in "${pitches[@]}"; do
        espeak-ng -v "$voice" -s "$speed" -p "$pitch" -w "$raw" "$word"
        sox "$raw" -r 16000 -b 16 -c 1 "$dest.tmp/$word/${voice//+/-}_${speed}_${pitch}.wav"
      done
    done
  done
done
touch "$dest.tmp/COMPLETE"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "speech: $expected clips in $dest"
