#!/usr/bin/env bash
# Exports the full-size random-weight ConvNets (resnet18, mobilenet_v3_large, efficientnet_b0 at
# 3x224x224, U-Net at 3x128x128; opsets 13 and 17; BatchNormalization kept) with calibration and
# evaluation inputs, using the torch environment (../shared/tools/torch-env.sh, made on first use).
# Usage: benches/cnn/export_full.sh [OUT_DIR] [--models resnet18,mobilenet_v3_large,efficientnet_b0,unet]
#        (default OUT_DIR: target/cnn)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
torch=$("$root/../shared/tools/torch-env.sh" "$root/../venv-torch" | tail -1)
exec "$torch" "$root/benches/cnn/export_full.py" "$@"
