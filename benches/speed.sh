#!/usr/bin/env bash
# Builds intone (release) and the Python oracle environment, then runs benches/speed.py, which
# prints the latency, op-count and profile tables. Arguments go to the script
# (e.g. --real target/realmodels/models after benches/realmodels/fetch.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release --quiet
py=$("$root/../shared/tools/python-env.sh" "$root/.venv-oracle" | tail -1)
"$py" "$root/benches/speed.py" "$@"
