#!/usr/bin/env bash
# Runs benches/cnn/ort_quantize_cnn.py (onnxruntime's quantize_static on the real ConvNets) in the torch env; writes benches/cnn/ort_quantize_cnn.txt.
set -euo pipefail; root=$(cd "$(dirname "$0")/../.." && pwd); cd "$root"; "$("$root/../shared/tools/torch-env.sh" "$root/../venv-torch" | tail -1)" benches/cnn/ort_quantize_cnn.py "$@" 2> >(grep -v '^\(Collecting\|Finding\|Number of\|Percentile :\)' >&2) | tee benches/cnn/ort_quantize_cnn.txt
