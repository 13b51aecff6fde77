#!/usr/bin/env bash
# Builds intone (release) and the Python oracle environment, then compares the matmul operand
# forms (benches/matmul_operands.py). Arguments go to the script.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release --quiet
py=$("$root/../shared/tools/python-env.sh" "$root/.venv-oracle" | tail -1)
"$py" "$root/benches/matmul_operands.py" "$@"
