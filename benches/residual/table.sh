#!/usr/bin/env bash
# Builds intone (release) and runs benches/residual/table.py (issue 12's tables) in the torch
# environment of ../shared/tools/torch-env.sh (numpy, onnx, onnxruntime, pillow; scipy added).
# Arguments go to the script, e.g. --real target/realmodels after benches/realmodels/fetch.sh and
# fetch_cnn.sh; --only REGEX and --configs REGEX pick rows.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo build --release --quiet
py=$("$root/../shared/tools/torch-env.sh" "$root/../venv-torch" | tail -1)
"$py" -c "import scipy" 2>/dev/null || "$py" -m pip install -q scipy   # Spearman of the text tasks
"$py" "$root/benches/residual/table.py" "$@"
