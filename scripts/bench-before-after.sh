#!/usr/bin/env bash
# Shows that a change left the speed where it was: PyTorch's reference, the workload
# benchmark built from BASE (a commit) and the one built from the working tree, run
# alternately round by round on this machine; `scripts/bench-table.py` then makes one table
# per build against the same PyTorch runs (its OUT/base and OUT/head folders).
#
#   BASE=3f04b33 scripts/bench-before-after.sh
#   BASE=HEAD~1 ROUNDS=2 WORKLOADS=full_ft,cnn_full scripts/bench-before-after.sh
#
# Environment as for bench-compare.sh (TORCH_PY, TORCH_REF, ROUNDS, BACKENDS), plus BASE
# (required), OUT (default bench-results-before-after), WORKLOADS (comma-separated, default
# all). Both builds share CARGO_TARGET_DIR's dependencies; BASE is checked out in a
# temporary worktree that is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${BASE:?set BASE to the commit to compare with}"
TORCH_PY="${TORCH_PY:-$HOME/torchref/bin/python}"
TORCH_REF="${TORCH_REF:-benches/pytorch/torch_ref.py}"
OUT="${OUT:-bench-results-before-after}"
ROUNDS="${ROUNDS:-3}"
BACKENDS="${BACKENDS:-ndarray flex}"
WORKLOADS="${WORKLOADS:-}"
SELECT=()
[ -n "$WORKLOADS" ] && SELECT=(--workloads "$WORKLOADS")
# The values kernels::reuse_freed_memory sets with mallopt, for PyTorch too.
TORCH_ENV="GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2147483647"

[ -x "$TORCH_PY" ] || { echo "no python with torch at $TORCH_PY (set TORCH_PY)" >&2; exit 1; }
worktree="$(mktemp -d)"
trap 'git worktree remove --force "$worktree" >/dev/null 2>&1 || true' EXIT
git worktree add --detach "$worktree" "$BASE" >/dev/null

# The path of a built benchmark: the last executable cargo reports for it.
built() {
  (cd "$1" && cargo bench --bench workloads --features flex --no-run --message-format json 2>/dev/null) |
    python3 -c "import json,sys; print([m['executable'] for m in map(json.loads, sys.stdin) if m.get('reason')=='compiler-artifact' and m['target']['name']=='workloads' and m.get('executable')][-1])"
}
base_bin="$(built "$worktree")"
head_bin="$(built .)"
echo "base ($BASE): $base_bin"
echo "head (working tree): $head_bin"
mkdir -p "$OUT/base" "$OUT/head"

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round: PyTorch"
  env "$TORCH_ENV" "$TORCH_PY" "$TORCH_REF" --json "$OUT/head/torch_r$round.json" "${SELECT[@]}"
  cp "$OUT/head/torch_r$round.json" "$OUT/base/torch_r$round.json"
  for backend in $BACKENDS; do
    for side in base head; do
      bin="$base_bin"; [ "$side" = head ] && bin="$head_bin"
      echo "== round $round: $side on $backend"
      "$bin" --backend "$backend" --json "$OUT/$side/${backend}_r$round.json" \
        --torch "$OUT/head/torch_r$round.json" "${SELECT[@]}"
    done
  done
done
echo "tables: scripts/bench-table.py $OUT/base; scripts/bench-table.py $OUT/head"
