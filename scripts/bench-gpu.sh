#!/usr/bin/env bash
# The GPU comparison: our workload benchmark on wgpu and PyTorch's reference on CUDA, on the
# same machine, alternately (round by round), like scripts/bench-compare.sh does on the CPU.
#
#   scripts/bench-gpu.sh                     # 3 rounds; results in bench-results-gpu/
#   scripts/bench-table.py bench-results-gpu # the table (PyTorch column = CUDA)
#
# On a GPU machine with Rust it builds the benchmark (`--features wgpu`). On one without Rust
# (or without the network), carry a bundle made here by scripts/bench-gpu-pack.sh instead:
# BUNDLE=.gpu runs the prebuilt benchmark from it and, where the machine has no Vulkan loader,
# unpacks the loader's Debian packages from it into / (only then, and only those).
#
# Environment: OUT (result folder), ROUNDS (default 3), BUNDLE (a pack's folder), TORCH_PY
# (python with CUDA torch, default python3), TORCH_REF (default benches/pytorch/torch_ref.py,
# or the bundle's copy), TORCH_DEVICE (default cuda; cpu tries the whole script without a
# GPU, our side then on whatever Vulkan driver there is), EXTRA (arguments for both, e.g.
# "--repeats 1"), OURS_EXTRA / TORCH_EXTRA (for one side: "--tf32" for PyTorch),
# RUN_TIMEOUT (seconds for each run, 0 = none). A run that fails or times out is reported
# and the others still run (the script then exits with 1), so one side's figures come back
# even if the other cannot run there.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-bench-results-gpu}"
ROUNDS="${ROUNDS:-3}"
BUNDLE="${BUNDLE:-}"
TORCH_PY="${TORCH_PY:-python3}"
TORCH_DEVICE="${TORCH_DEVICE:-cuda}"
EXTRA="${EXTRA:-}"
OURS_EXTRA="${OURS_EXTRA:-}"
TORCH_EXTRA="${TORCH_EXTRA:-}"
RUN_TIMEOUT="${RUN_TIMEOUT:-0}"
mkdir -p "$OUT"

if [ -n "$BUNDLE" ]; then
  [ -f "$BUNDLE/SHA256SUMS" ] || { echo "no bundle in $BUNDLE: make one with scripts/bench-gpu-pack.sh" >&2; exit 1; }
  (cd "$BUNDLE" && sha256sum --quiet -c SHA256SUMS) || { echo "$BUNDLE does not match its SHA256SUMS: pack it again" >&2; exit 1; }
  if ! ldconfig -p | grep -q 'libvulkan\.so\.1'; then
    echo "== no Vulkan loader here: unpacking $BUNDLE/deb/*.deb into /"
    for deb in "$BUNDLE"/deb/*.deb; do dpkg -x "$deb" /; done
    ldconfig
  fi
  unpacked="$(mktemp -d)"
  trap 'rm -rf "$unpacked"' EXIT
  BIN=("$unpacked/workloads")
  # xz where the machine has it, else Python's lzma (the PyTorch side needs Python anyway).
  if command -v xz > /dev/null; then
    xz -dc "$BUNDLE/workloads.xz" > "${BIN[0]}"
  else
    "$TORCH_PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      "$BUNDLE/workloads.xz" "${BIN[0]}"
  fi
  chmod +x "${BIN[0]}"
  TORCH_REF="${TORCH_REF:-$BUNDLE/torch_ref.py}"
else
  cargo bench --bench workloads --features wgpu --no-run
  BIN=(cargo bench --bench workloads --features wgpu --)
  TORCH_REF="${TORCH_REF:-benches/pytorch/torch_ref.py}"
fi
[ -f "$TORCH_REF" ] || { echo "no reference script at $TORCH_REF (set TORCH_REF)" >&2; exit 1; }

# The NVIDIA driver's Vulkan manifest, where it is mounted outside the loader's search path.
if [ -z "${VK_DRIVER_FILES:-}" ] && [ "$TORCH_DEVICE" != cpu ]; then
  for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json; do
    if [ -f "$icd" ]; then export VK_DRIVER_FILES="$icd"; break; fi
  done
fi

{
  echo "== machine"
  nproc
  if command -v nvidia-smi > /dev/null; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; fi
  "$TORCH_PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} | tee "$OUT/machine.txt"

failures=0
measure() {
  local what="$1"
  shift
  echo "== $what"
  if [ "$RUN_TIMEOUT" -gt 0 ]; then set -- timeout "$RUN_TIMEOUT" "$@"; fi
  local status=0
  "$@" || status=$?
  if [ "$status" -ne 0 ]; then
    echo "== $what FAILED (exit $status)" >&2
    failures=$((failures + 1))
  fi
}

for round in $(seq 1 "$ROUNDS"); do
  # shellcheck disable=SC2086
  measure "round $round: PyTorch on $TORCH_DEVICE" \
    "$TORCH_PY" benches/pytorch/torch_gpu_ref.py --ref "$TORCH_REF" --device "$TORCH_DEVICE" \
    --json "$OUT/torch_r$round.json" $TORCH_EXTRA $EXTRA
  ratios=()
  [ -f "$OUT/torch_r$round.json" ] && ratios=(--torch "$OUT/torch_r$round.json")
  # shellcheck disable=SC2086
  measure "round $round: burn-transfer on wgpu" \
    "${BIN[@]}" --bench --backend wgpu --json "$OUT/wgpu_r$round.json" "${ratios[@]}" $OURS_EXTRA $EXTRA
done
echo "results in $OUT/; table: scripts/bench-table.py $OUT"
[ "$failures" -eq 0 ] || { echo "$failures run(s) failed" >&2; exit 1; }
