#!/usr/bin/env bash
# Exports the full-size transformers (random weights) and prints their cross-engine, cross-CPU
# bit-identity table. Needs the torch environment (../shared/tools/torch-env.sh, made on first
# use) and qemu-user (tests/oracle/qemu-env.sh installs it).
# Usage: benches/fullsize/run.sh [OUT_DIR] [-- exactness.py options]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/target/fullsize}
shift || true
cd "$root"
cargo build --release --quiet
bash tests/oracle/qemu-env.sh >/dev/null
torch=$("$root/../shared/tools/torch-env.sh" "$root/../venv-torch" | tail -1)
[ -f "$out/gpt2_v4096.onnx" ] || "$torch" benches/fullsize/export.py "$out"
py=$("$root/../shared/tools/python-env.sh" "$root/.venv-oracle" | tail -1)
"$py" benches/fullsize/exactness.py "$out" "$@"
