#!/usr/bin/env bash
# Packs what scripts/bench-gpu.sh needs on a GPU machine that has no Rust toolchain and no
# network (such as a lent device machine): the workload benchmark built here with
# `--features wgpu` (stripped and xz-compressed: the bundle is 7.7 MB), a copy of PyTorch's reference
# script, and Debian's Vulkan loader packages, used there only if it has no loader.
#
#   scripts/bench-gpu-pack.sh                # writes .gpu/ (ignored by git)
#   # there, from the repository root, with .gpu carried along:
#   BUNDLE=.gpu OUT=/some/folder scripts/bench-gpu.sh
#
# The binary runs on x86-64 Linux with glibc 2.35 or newer. Environment: BUNDLE (default
# .gpu), TORCH_REF (default benches/pytorch/torch_ref.py), CARGO_TARGET_DIR as for any build.
set -euo pipefail
cd "$(dirname "$0")/.."

BUNDLE="${BUNDLE:-.gpu}"
TORCH_REF="${TORCH_REF:-benches/pytorch/torch_ref.py}"
[ -f "$TORCH_REF" ] || { echo "no reference script at $TORCH_REF (set TORCH_REF)" >&2; exit 1; }

# The benchmark binary's path, from cargo's own report of what it built.
bin="$(cargo bench --bench workloads --features wgpu --no-run --message-format json |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "workloads" and m.get("executable"):
        print(m["executable"])')"
[ -x "$bin" ] || { echo "cargo built no workloads benchmark (run cargo bench --bench workloads --features wgpu --no-run)" >&2; exit 1; }

# Built beside the bundle and renamed into place: never a half-written bundle.
tmp="$(mktemp -d "$BUNDLE.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/deb"
# apt downloads as its own user (_apt), which must be able to write there.
chmod a+rwx "$tmp" "$tmp/deb"
strip -o "$tmp/workloads" "$bin"
xz -T0 -6 "$tmp/workloads"
cp "$TORCH_REF" "$tmp/torch_ref.py"
# The loader (libvulkan1) for amd64, whatever this machine's architecture, without installing it.
opts=(-o APT::Architecture=amd64 -o APT::Architectures=amd64 -o Dir::State::Lists="$tmp/lists")
mkdir -p "$tmp/lists/partial"
apt-get "${opts[@]}" update > /dev/null
(cd "$tmp/deb" && apt-get "${opts[@]}" download libvulkan1 > /dev/null)
rm -rf "$tmp/lists"
chmod 755 "$tmp" "$tmp/deb"
(cd "$tmp" && sha256sum workloads.xz torch_ref.py deb/*.deb > SHA256SUMS)

rm -rf "$BUNDLE"
mv "$tmp" "$BUNDLE"
trap - EXIT
du -sh "$BUNDLE"
cat "$BUNDLE/SHA256SUMS"
