#!/usr/bin/env bash
# Runs PyTorch's reference (torch_ref.py) and this crate's workload benchmark alternately on
# this machine, and prints the ratios (ours / PyTorch, steps/s medians) for every backend.
#
#   scripts/bench-compare.sh                 # 3 rounds, backends ndarray and flex
#   ROUNDS=1 BACKENDS=flex scripts/bench-compare.sh
#
# Needs PyTorch in a virtualenv (see benches/pytorch/README.md):
#   python3 -m venv ~/torchref && ~/torchref/bin/pip install torch==2.15.0 numpy
# Environment: TORCH_PY (python with torch, default ~/torchref/bin/python), TORCH_REF (the
# reference script, default benches/pytorch/torch_ref.py), OUT (result folder, default
# bench-results), ROUNDS, BACKENDS, FEATURES (cargo features, default flex), EXTRA (more
# arguments for both, e.g. "--repeats 1"), MALLOC: `reuse` (default; ours calls
# allocator::reuse_freed_memory, PyTorch runs with the same glibc setting through
# GLIBC_TUNABLES) or `system` (glibc's defaults for both).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_PY="${TORCH_PY:-$HOME/torchref/bin/python}"
TORCH_REF="${TORCH_REF:-benches/pytorch/torch_ref.py}"
OUT="${OUT:-bench-results}"
ROUNDS="${ROUNDS:-3}"
BACKENDS="${BACKENDS:-ndarray flex}"
FEATURES="${FEATURES:-flex}"
EXTRA="${EXTRA:-}"
MALLOC="${MALLOC:-reuse}"
case "$MALLOC" in
  # The values allocator::reuse_freed_memory sets with mallopt.
  reuse) TORCH_ENV="GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2147483647"
         OURS_MALLOC="" ;;
  system) TORCH_ENV="BENCH_MALLOC=system"; OURS_MALLOC="--system-malloc" ;;
  *) echo "MALLOC must be reuse or system" >&2; exit 1 ;;
esac

[ -x "$TORCH_PY" ] || { echo "no python with torch at $TORCH_PY (set TORCH_PY)" >&2; exit 1; }
[ -f "$TORCH_REF" ] || { echo "no reference script at $TORCH_REF (set TORCH_REF)" >&2; exit 1; }
mkdir -p "$OUT"
cargo bench --bench workloads --features "$FEATURES" --no-run

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round: PyTorch"
  # shellcheck disable=SC2086
  env "$TORCH_ENV" "$TORCH_PY" "$TORCH_REF" --json "$OUT/torch_r$round.json" $EXTRA
  for backend in $BACKENDS; do
    echo "== round $round: burn-transfer on $backend"
    # shellcheck disable=SC2086
    cargo bench --bench workloads --features "$FEATURES" -- --backend "$backend" \
      --json "$OUT/${backend}_r$round.json" --torch "$OUT/torch_r$round.json" $OURS_MALLOC $EXTRA
  done
done
echo "results in $OUT/; table: scripts/bench-table.py $OUT"
