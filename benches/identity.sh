#!/usr/bin/env bash
# Hashes of every compiled model and report, for every fixture and shared model and every
# pipeline (plus the option variants that change lowering), so a refactor can show it changes
# no output: run before and after, then `diff` the two listings.
#
#   benches/identity.sh [--real DIR] [--bin PATH] > hashes.txt
#
# --real adds the fetched real models (benches/realmodels/fetch.sh) that have calibration data
# here: all-MiniLM-L6-v2 (WordSim words). Prints `sha256 model pipeline variant {model|report}`
# (the first 16 hex digits). benches/identity.txt is the listing of the current outputs (with
# --real), re-recorded by every change that changes outputs on purpose (issue 10: the
# requantization recipe, multiplier tolerance, residual scales, Shiftmax index; 390 of 431
# changed): `benches/identity.sh --real DIR | diff benches/identity.txt -`.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release/intone
real=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --real) real="$2"; shift 2 ;;
        *) echo "usage: $0 [--real DIR] [--bin PATH]" >&2; exit 2 ;;
    esac
done
[ -x "$bin" ] || { echo "$bin missing: cargo build --release" >&2; exit 2; }

shared=../shared/models
words="input_ids=$shared/data/wordsim353_word_input_ids.npy attention_mask=$shared/data/wordsim353_word_attention_mask.npy"
# A fixed directory: reports name their output file.
out=target/identity
rm -rf "$out" && mkdir -p "$out"

# model path, then its calibration arguments NAME=FILE...
models=()
for f in fixtures/*.onnx; do
    stem=$(basename "$f" .onnx)
    cal=""
    for npy in fixtures/data/"$stem"/*.npy; do
        cal+=" $(basename "$npy" .npy)=$npy"
    done
    models+=("$f|$cal")
done
models+=("fixtures/external/model.onnx| pixels=fixtures/data/model/pixels.npy")
models+=("$shared/digits_vit_opset13.onnx| pixels=fixtures/data/digits_calibration.npy")
models+=("$shared/digits_vit_opset17.onnx| pixels=fixtures/data/digits_calibration.npy")
models+=("$shared/paraphrase_minilm_l3_v2_opset17.onnx| $words")
if [ -n "$real" ]; then
    models+=("$real/all_minilm_l6_v2_opset17.onnx| $words")
fi

no_correction="upgrade-opset(to=20),eliminate-identity,fold-constants,eliminate-dead-nodes,fuse-softmax,fuse-layer-norm,fuse-gelu,fuse-attention-mask,calibrate,replace-gelu-with-relu(correct-relu-bias=false),calibrate,quantize,lower-linear-to-integer,lower-softmax-to-shiftmax,lower-gelu-to-shiftgelu,lower-activations-to-table,lower-layer-norm-to-int,fold-dyadic-requant,legalize,eliminate-identity,fold-constants,eliminate-dead-nodes"

# variant name, then compile arguments
variants=(
    "cleanup|--pipeline cleanup"
    "linear|--pipeline linear"
    "linear-u8u8|--pipeline linear --matmul-operands u8u8"
    "ivit|--pipeline ivit"
    "ivit-u8u8|--pipeline ivit --matmul-operands u8u8"
    "ivit-vnni|--pipeline ivit --matmul-operands vnni"
    "ivit-floor|--pipeline ivit --rounding floor"
    "ivit-intio|--pipeline ivit --integer-io"
    "ivit-relu|--pipeline ivit-relu"
    "ivit-relu-uncorrected|--passes $no_correction"
    "ibert|--pipeline ibert"
    "ibert-mse|--pipeline ibert --calibration-method mse"
)

for entry in "${models[@]}"; do
    model=${entry%%|*}
    read -r -a cal <<<"${entry#*|}"
    calargs=()
    for c in "${cal[@]}"; do calargs+=(--calibrate "$c"); done
    name=$(basename "$model" .onnx)
    for v in "${variants[@]}"; do
        vname=${v%%|*}
        read -r -a args <<<"${v#*|}"
        o="$out/$name.$vname.onnx"
        r="$out/$name.$vname.json"
        if "$bin" compile "$model" -o "$o" "${args[@]}" "${calargs[@]}" --report "$r" \
            2>"$out/err" >/dev/null; then
            echo "$(sha256sum <"$o" | cut -c1-16) $name $vname model"
            echo "$(sha256sum <"$r" | cut -c1-16) $name $vname report"
        else
            echo "exit=$? $name $vname $(tail -c 200 "$out/err" | tr '\n' ' ')"
        fi
    done
done
