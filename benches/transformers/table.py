"""Issue 13's table: intone's pipelines against onnxruntime's own static quantizer on real
transformers and real data (benches/transformers/fetch.sh), in one run.

Models: the DINOv2-S backbone (CLS token cosine to float on six photos: min and mean; calibrated
on 16 crops of four other photos) and all-MiniLM-L6-v2 (sentence-embedding cosine to float on the
50 Lee documents, ~100 tokens: mean and min; WordSim-353 Spearman drop; calibrated on the
WordSim-353 words). intone rows: each pipeline as is, and with `--wide-operands measured=F`
(activations chosen by measured output noise, `--objective` the task's output); every intone
model is checked integer-only (compile report) and bit-identical between tract and onnxruntime
on the first evaluation input. onnxruntime rows: `quantize_static` (QDQ) in the configurations
given by --ort (activation type / weight type, per-channel or not, calibration method, all ops
or MatMul only; its float LayerNorm, Softmax and GELU stay float).

Usage: benches/transformers/table.sh [--only REGEX] [--ort quick|full] [--configs REGEX]
"""
import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
from scipy.stats import spearmanr

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHARED = os.path.join(ROOT, "..", "shared", "models", "data")
sys.path[:0] = [os.path.join(ROOT, "benches")]
from speed import cpu_flags  # noqa: E402

INTONE = [
    ("linear", "linear", []),
    ("ivit", "ivit", []),
    ("ibert", "ibert", []),
    ("ivit-relu", "ivit-relu", []),
    ("ivit-exact", "ivit-exact", []),
    # The defaults before issue 13's 16-bit probabilities (and with them).
    ("linear, probability-bits 8", "linear", ["--probability-bits", "8"]),
    ("ivit, probability-bits 8", "ivit", ["--probability-bits", "8"]),
    ("linear, auto", "linear", ["--wide-operands", "auto"]),
    ("ivit, auto", "ivit", ["--wide-operands", "auto"]),
    ("linear, measured=0.5", "linear", ["--wide-operands", "measured=0.5"]),
    ("ivit, measured=0.5", "ivit", ["--wide-operands", "measured=0.5"]),
]


def session(path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 2
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError((p.stderr or p.stdout).strip().splitlines()[-1])
    return p.stdout


def cosines(a, b):
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


class Task:
    def __init__(self, name, path, output, calib, feeds, extra_eval=None):
        self.name, self.path, self.output, self.calib, self.feeds = name, path, output, calib, feeds
        self.extra_eval = extra_eval

    def outputs(self, path, feeds=None):
        return session(path).run([self.output], feeds or self.feeds)[0]


def dinov2(real):
    d = os.path.join(real, "transformers")
    return Task("DINOv2-S backbone", os.path.join(real, "models", "dinov2s_imgfocus_backbone_224_opset17.onnx"),
                "cls_embedding", {"pixel_values": np.load(os.path.join(d, "dinov2_calib.npy"))},
                {"pixel_values": np.load(os.path.join(d, "dinov2_eval.npy"))})


def minilm(real):
    d = os.path.join(real, "transformers")
    words = {"input_ids": np.load(os.path.join(SHARED, "wordsim353_word_input_ids.npy")),
             "attention_mask": np.load(os.path.join(SHARED, "wordsim353_word_attention_mask.npy"))}
    pairs = np.load(os.path.join(SHARED, "wordsim353_pairs.npy"))
    gold = np.load(os.path.join(SHARED, "wordsim353_gold.npy"))

    def spearman(task, path):
        e = task.outputs(path, words)
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        return float(spearmanr((e[pairs[:, 0]] * e[pairs[:, 1]]).sum(1), gold).correlation)

    return Task("all-MiniLM-L6-v2", os.path.join(real, "models", "all_minilm_l6_v2_opset17.onnx"),
                "sentence_embedding", words,
                {"input_ids": np.load(os.path.join(d, "lee_input_ids.npy")),
                 "attention_mask": np.load(os.path.join(d, "lee_attention_mask.npy"))}, spearman)


def ort_configs(which):
    from onnxruntime.quantization import CalibrationMethod, QuantType
    acts = [QuantType.QUInt8, QuantType.QInt8]
    methods = [CalibrationMethod.MinMax, CalibrationMethod.Percentile, CalibrationMethod.Entropy]
    if which == "quick":
        for method, ops in itertools.product(methods, [None, ["MatMul"]]):
            yield (QuantType.QUInt8, True, method, ops)
        yield (QuantType.QInt8, True, CalibrationMethod.MinMax, None)
    else:
        yield from itertools.product(acts, [False, True], methods, [None, ["MatMul"]])


def ort_name(config):
    act, per_channel, method, ops = config
    return f"ORT {'U8' if act.name == 'QUInt8' else 'S8'}/S8 {'per-channel' if per_channel else 'per-tensor'} " \
           f"{method.name} {'MatMul only' if ops else 'all ops'}"


def ort_quantize(task, config, out):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    act, per_channel, method, ops = config

    class Reader(CalibrationDataReader):
        def __init__(self):
            # One sample a batch: the histogram calibrators (Percentile, Entropy) cannot merge
            # batches of different sizes.
            n = len(next(iter(task.calib.values())))
            self.batches = iter([{k: v[i:i + 1] for k, v in task.calib.items()} for i in range(n)])

        def get_next(self):
            return next(self.batches, None)

    kwargs = {"op_types_to_quantize": ops} if ops else {}
    quantize_static(task.path, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=act, weight_type=QuantType.QInt8, calibrate_method=method,
                    # Bounded memory; not a divisor of the sample counts (16, 437): onnxruntime
                    # 1.32's MinMax fails with "No data is collected" when the last chunk is full.
                    extra_options={"CalibMaxIntermediateOutputs": 5}, **kwargs)


def row(task, name, path, reference, base_spearman, checks):
    got = task.outputs(path)
    c = cosines(reference, got)
    cells = [name, f"{c.min():.4f}", f"{c.mean():.4f}"]
    if task.extra_eval:
        cells.append(f"{base_spearman - task.extra_eval(task, path):+.4f}")
    return cells + checks


def intone_checks(args, task, out, report, tmp):
    rep = json.load(open(report))
    if rep["float_between"]:
        # Float ops between the quantizations compute differently in the two engines.
        return [f"no ({len(rep['float_between'])} float values)", "—", matmuls(rep)]
    integer = "yes"
    feeds = {k: v[:1] for k, v in task.feeds.items()}
    cmd = [args.intone, "run", out, "--output", task.output, "--output-dir", tmp]
    for k, v in feeds.items():
        p = os.path.join(tmp, f"first_{k}.npy")
        np.save(p, v)
        cmd += ["--input", f"{k}={p}"]
    run(cmd)
    tract = np.load(os.path.join(tmp, re.sub(r"[^A-Za-z0-9_.-]", "_", task.output) + ".npy"))
    same = np.array_equal(tract, task.outputs(out, feeds))
    return [integer, "yes" if same else "NO", matmuls(rep)]


def matmuls(rep):
    """Integer matmuls in the compiled model (a 16-bit operand's two terms count two)."""
    ops = rep["ops_after"]
    return str(ops.get("MatMulInteger", 0) + ops.get("ConvInteger", 0))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", default=os.path.join(ROOT, "target", "realmodels"))
    ap.add_argument("--intone", default=os.path.join(ROOT, "target", "release", "intone"))
    ap.add_argument("--only")
    ap.add_argument("--configs", help="regex over the row names")
    ap.add_argument("--ort", default="quick", choices=["quick", "full", "none"])
    args = ap.parse_args()
    print("CPU flags:", cpu_flags())
    print(f"onnxruntime {ort.__version__}; {run([args.intone, '--version']).strip()}\n")
    tasks = [t for t in (dinov2(args.real), minilm(args.real)) if not args.only or re.search(args.only, t.name)]
    pick = (lambda n: True) if not args.configs else (lambda n: re.search(args.configs, n))
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:
            reference = task.outputs(task.path)
            base = task.extra_eval(task, task.path) if task.extra_eval else None
            head = ["config", "min cosine", "mean cosine"] + (["Spearman drop"] if task.extra_eval else [])
            head += ["integer-only", "tract = ORT", "integer matmuls", "compile s"]
            print(f"### {task.name}\n")
            print("| " + " | ".join(head) + " |")
            print("|" + "---|" * len(head))
            calib = []
            for k, v in task.calib.items():
                p = os.path.join(tmp, f"calib_{k}.npy")
                np.save(p, v)
                calib += ["--calibrate", f"{k}={p}"]
            for name, pipeline, extra in INTONE:
                if not pick(name):
                    continue
                out, report = os.path.join(tmp, "m.onnx"), os.path.join(tmp, "r.json")
                try:
                    start = time.monotonic()
                    run([args.intone, "compile", task.path, "-o", out, "--pipeline", pipeline, "--report", report,
                         "--objective", task.output, *calib, *extra])
                    seconds = f"{time.monotonic() - start:.1f}"
                except RuntimeError as e:
                    print(f"| {name} | compile failed: {e} |", flush=True)
                    continue
                checks = intone_checks(args, task, out, report, tmp) + [seconds]
                print("| " + " | ".join(row(task, name, out, reference, base, checks)) + " |", flush=True)
            if args.ort != "none":
                for config in ort_configs(args.ort):
                    out, name = os.path.join(tmp, "ort.onnx"), ort_name(config)
                    if not pick(name):
                        continue
                    try:
                        ort_quantize(task, config, out)
                    except Exception as e:  # noqa: BLE001 (a configuration the quantizer refuses)
                        print(f"| {name} | failed: {str(e).splitlines()[0][:80]} |", flush=True)
                        continue
                    print("| " + " | ".join(row(task, name, out, reference, base, ["no (float LN/Softmax/GELU)", "—", "—", "—"])) + " |", flush=True)
            print()


if __name__ == "__main__":
    main()
