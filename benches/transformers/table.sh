#!/usr/bin/env bash
# Builds intone (release) and runs benches/transformers/table.py (issue 13's table) in the torch
# environment (numpy, onnxruntime, pillow, tokenizers; scipy added). Needs
# benches/realmodels/fetch.sh and benches/transformers/fetch.sh first. Arguments go to the script.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo build --release --quiet
py=$("$root/../shared/tools/torch-env.sh" "$root/../venv-torch" | tail -1)
"$py" -c "import scipy" 2>/dev/null || "$py" -m pip install -q scipy
"$py" "$root/benches/transformers/table.py" "$@"
