#!/usr/bin/env bash
# Builds intone (release) and the Python oracle environment, then runs the reproduction of
# tract's slow AVX2 integer matmul (benches/tract_avx2_matmul.py).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release --quiet
py=$("$root/../shared/tools/python-env.sh" "$root/.venv-oracle" | tail -1)
echo "CPU flags: $(grep -o 'avx[^ ]*\|vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')"
"$py" "$root/benches/tract_avx2_matmul.py" "$root/target/release/intone"
