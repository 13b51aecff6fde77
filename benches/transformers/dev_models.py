"""Issue 13's "digits ViT and L3 unchanged or better": two intone binaries (before, after) on
the development models, in one run. Digits ViT (opset 13, fixtures/): top-1 accuracy on the 360
test digits, calibrated on the 256 shipped calibration digits. paraphrase-MiniLM-L3-v2
(../shared/models): WordSim-353 Spearman and the words' embedding cosine to float, calibrated on
the same words.

Usage: python dev_models.py BEFORE_BIN AFTER_BIN [PIPELINE ...]   (in the torch environment)
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from scipy.stats import spearmanr

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHARED = os.path.join(ROOT, "..", "shared", "models")
sys.path[:0] = [os.path.join(ROOT, "benches")]
from speed import cpu_flags  # noqa: E402


def session(path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def compile_with(binary, model, out, pipeline, calib):
    cmd = [binary, "compile", model, "-o", out, "--pipeline", pipeline]
    for k, v in calib.items():
        cmd += ["--calibrate", f"{k}={v}"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip().splitlines()[-1])


def digits(binary, pipeline, tmp):
    model = os.path.join(ROOT, "fixtures", "digits_vit_opset13.onnx")
    data = os.path.join(ROOT, "fixtures", "data")
    out = os.path.join(tmp, "d.onnx")
    compile_with(binary, model, out, pipeline, {"pixels": os.path.join(data, "digits_calibration.npy")})
    x = np.load(os.path.join(data, "digits_test.npy"))
    labels = np.load(os.path.join(data, "digits_test_labels.npy"))
    logits = session(out).run(None, {"pixels": x})[0]
    return float((logits.argmax(1) == labels).mean())


def l3(binary, pipeline, tmp):
    model = os.path.join(SHARED, "paraphrase_minilm_l3_v2_opset17.onnx")
    d = os.path.join(SHARED, "data")
    feeds = {"input_ids": np.load(os.path.join(d, "wordsim353_word_input_ids.npy")),
             "attention_mask": np.load(os.path.join(d, "wordsim353_word_attention_mask.npy"))}
    calib = {k: os.path.join(d, f"wordsim353_word_{k}.npy") for k in feeds}
    out = os.path.join(tmp, "l3.onnx")
    compile_with(binary, model, out, pipeline, calib)
    pairs, gold = np.load(os.path.join(d, "wordsim353_pairs.npy")), np.load(os.path.join(d, "wordsim353_gold.npy"))

    def embed(path):
        return session(path).run(["461"], feeds)[0].astype(np.float64)

    ref, got = embed(model), embed(out)
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    e = got / np.linalg.norm(got, axis=1, keepdims=True)
    rho = spearmanr((e[pairs[:, 0]] * e[pairs[:, 1]]).sum(1), gold).correlation
    return float(cos.min()), float(cos.mean()), float(rho)


def main():
    before, after = sys.argv[1], sys.argv[2]
    pipelines = sys.argv[3:] or ["linear", "ivit", "ibert", "ivit-relu"]
    print("CPU flags:", cpu_flags())
    print("digits float top-1 0.9694; L3 float Spearman 0.6095\n")
    print("| pipeline | binary | digits ViT top-1 | L3 min / mean cosine | L3 Spearman |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for pipeline in pipelines:
            for name, binary in [("before", before), ("after", after)]:
                try:
                    top1 = digits(binary, pipeline, tmp)
                    lo, mean, rho = l3(binary, pipeline, tmp)
                    print(f"| `{pipeline}` | {name} | {top1:.4f} | {lo:.4f} / {mean:.4f} | {rho:.4f} |", flush=True)
                except RuntimeError as e:
                    print(f"| `{pipeline}` | {name} | failed: {e} | | |", flush=True)


if __name__ == "__main__":
    main()
