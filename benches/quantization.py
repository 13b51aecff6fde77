"""Quantization benchmark: intone against onnxruntime's own quantizer, on the same data, in one run.

Prints markdown tables:
  1. compile: wall time and peak memory of `intone compile` vs onnxruntime.quantization.quantize_static
     (QDQ, per-channel, MinMax), both calibrating on the same samples;
  2. accuracy against float and against onnxruntime's QDQ model (digits top-1 on the 360 test images,
     L3 WordSim-353 Spearman, cosine to float for the rest);
  3. latency: onnxruntime (1 thread) and tract (`intone run --repeat`) of the float model, intone's
     output and onnxruntime's QDQ output.

Usage: benches/quantization.sh [--pipeline linear] [--real DIR] (the wrapper builds intone and the
Python environment). Models: the digits ViTs (opset 13 and 17) and paraphrase-MiniLM-L3 from
../shared/models; with --real, also all-MiniLM-L6-v2 and the DINOv2-S backbone made by
benches/realmodels/fetch.sh.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
from scipy.stats import spearmanr

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(ROOT, "..", "shared", "models")
DATA = os.path.join(SHARED, "data")


def measure(cmd, env=None):
    """Runs a command; returns (seconds, peak RSS in MB) of that process alone."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out}\n{err}")
    return elapsed, usage.ru_maxrss / 1024.0, out + err


def session(path, threads=1):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_latency(path, feeds, repeat):
    s = session(path)
    s.run(None, feeds)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        s.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def tract_latency(intone, path, feeds, tmp, repeat):
    args = [intone, "run", path, "--repeat", str(repeat)]
    for name, value in feeds.items():
        p = os.path.join(tmp, f"lat_{name}.npy")
        np.save(p, value)
        args += ["--input", f"{name}={p}"]
    _, _, out = measure(args)
    for line in out.splitlines():
        if line.startswith("latency:"):
            return float(line.split()[2])
    return float("nan")


class Task:
    """One model: its calibration data, evaluation data and metric."""

    def __init__(self, name, path, calib, evaluate, latency_feeds, metric):
        self.name, self.path, self.calib = name, path, calib
        self.evaluate, self.latency_feeds, self.metric = evaluate, latency_feeds, metric


def digits_task(opset):
    x = np.load(os.path.join(DATA, "digits_norm_f32_1x8x8.npy"))
    perm = np.load(os.path.join(DATA, "digits_split_perm_seed0.npy"))
    labels = np.load(os.path.join(DATA, "digits_labels.npy"))
    calib, test, y = x[perm[:256]], x[perm[-360:]], labels[perm[-360:]]

    def evaluate(path, reference):
        logits = session(path).run(None, {"pixels": test})[0]
        top1 = float((logits.argmax(1) == y).mean())
        agree = None if reference is None else float((logits.argmax(1) == reference.argmax(1)).mean())
        return top1, agree, logits

    return Task(f"digits ViT opset {opset}", os.path.join(SHARED, f"digits_vit_opset{opset}.onnx"),
                {"pixels": calib}, evaluate, {"pixels": test[:1]}, "top-1 (360 test images)")


def wordsim_task(name, path, output):
    ids = np.load(os.path.join(DATA, "wordsim353_word_input_ids.npy"))
    mask = np.load(os.path.join(DATA, "wordsim353_word_attention_mask.npy"))
    pairs = np.load(os.path.join(DATA, "wordsim353_pairs.npy"))
    gold = np.load(os.path.join(DATA, "wordsim353_gold.npy"))

    def evaluate(p, reference):
        e = session(p).run([output], {"input_ids": ids, "attention_mask": mask})[0]
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        rho = float(spearmanr((e[pairs[:, 0]] * e[pairs[:, 1]]).sum(1), gold).correlation)
        agree = None if reference is None else float(np.mean((e * reference).sum(1)))
        return rho, agree, e

    return Task(name, path, {"input_ids": ids, "attention_mask": mask}, evaluate,
                {"input_ids": ids[:1], "attention_mask": mask[:1]}, "WordSim-353 Spearman")


def image_task(name, path, input_name, output):
    rng = np.random.default_rng(0)
    # No labelled images ship with the project: smooth synthetic images at ImageNet scale.
    x = rng.normal(size=(40, 3, 14, 14)).astype(np.float32)
    x = np.kron(x, np.ones((1, 1, 16, 16), np.float32))
    calib, test = x[:32], x[32:]

    def evaluate(p, reference):
        e = session(p).run([output], {input_name: test})[0].reshape(len(test), -1)
        if reference is None:
            return None, None, e
        cos = float(np.mean((e * reference).sum(1) / np.linalg.norm(e, axis=1) / np.linalg.norm(reference, axis=1)))
        return cos, cos, e

    return Task(name, path, {input_name: calib}, evaluate, {input_name: test[:1]}, "cosine to float (8 synthetic images)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--intone", default=os.path.join(ROOT, "target", "release", "intone"))
    parser.add_argument("--pipeline", default="linear")
    parser.add_argument("--real", help="directory with the models of benches/realmodels/fetch.sh")
    parser.add_argument("--repeat", type=int, default=100)
    args = parser.parse_args()

    tasks = [digits_task(13), digits_task(17),
             wordsim_task("paraphrase-MiniLM-L3", os.path.join(SHARED, "paraphrase_minilm_l3_v2_opset17.onnx"), "461")]
    if args.real:
        tasks.append(wordsim_task("all-MiniLM-L6-v2", os.path.join(args.real, "all_minilm_l6_v2_opset17.onnx"), "sentence_embedding"))
        tasks.append(image_task("DINOv2-S backbone", os.path.join(args.real, "dinov2s_imgfocus_backbone_224_opset17.onnx"), "pixel_values", "cls_embedding"))

    rows_compile, rows_accuracy, rows_latency = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:
            calib_args = []
            for name, value in task.calib.items():
                p = os.path.join(tmp, f"{name}.npy")
                np.save(p, value)
                calib_args += ["--calibrate", f"{name}={p}"]
            ours = os.path.join(tmp, "intone.onnx")
            report = os.path.join(tmp, "report.json")
            t_ours, mem_ours, _ = measure([args.intone, "compile", task.path, "-o", ours, "--pipeline", args.pipeline,
                                           "--report", report, "--timings"] + calib_args)
            timings = json.load(open(report))["timings"]
            calibration = dict(timings["per_pass"]).get("calibrate", 0.0)
            qdq = os.path.join(tmp, "ort_qdq.onnx")
            np.savez(os.path.join(tmp, "calib.npz"), **task.calib)
            t_ort, mem_ort, _ = measure([sys.executable, os.path.join(HERE, "ort_quantize.py"), task.path, qdq,
                                         os.path.join(tmp, "calib.npz"), "32"])
            # onnxruntime's documented usage feeds one sample at a time.
            t_ort1, _, _ = measure([sys.executable, os.path.join(HERE, "ort_quantize.py"), task.path,
                                    os.path.join(tmp, "ort_qdq_b1.onnx"), os.path.join(tmp, "calib.npz"), "1"])
            rows_compile.append((task.name, t_ours, calibration, t_ours - calibration, mem_ours, t_ort, mem_ort, t_ort1))

            m_float, _, ref = task.evaluate(task.path, None)
            m_ours, agree_ours, out_ours = task.evaluate(ours, ref)
            m_ort, agree_ort, out_ort = task.evaluate(qdq, ref)
            vs_ort = float(np.mean(np.isclose(out_ours.argmax(-1), out_ort.argmax(-1)))) if task.metric.startswith("top-1") else None
            rows_accuracy.append((task.name, task.metric, m_float, m_ours, m_ort, agree_ours, agree_ort, vs_ort))

            feeds = task.latency_feeds
            lat = [ort_latency(p, feeds, args.repeat) for p in (task.path, ours, qdq)]
            lat_tract = [tract_latency(args.intone, p, feeds, tmp, args.repeat) for p in (task.path, ours, qdq)]
            rows_latency.append((task.name, *lat, *lat_tract))

    print(f"## Compile (pipeline `{args.pipeline}`): intone vs onnxruntime quantize_static (QDQ, per-channel, MinMax)\n")
    print("| model | intone s | of which calibration s | other stages s | intone peak MB | onnxruntime s (batch 32) | onnxruntime peak MB | speed-up | onnxruntime s (batch 1) | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, t, cal, rest, mem, t_ort, mem_ort, t_ort1 in rows_compile:
        print(f"| {name} | {t:.2f} | {cal:.2f} | {rest:.2f} | {mem:.0f} | {t_ort:.2f} | {mem_ort:.0f} | {t_ort / t:.1f}× | {t_ort1:.2f} | {t_ort1 / t:.1f}× |")
    print("\n## Accuracy\n")
    print("| model | metric | float | intone | onnxruntime QDQ | intone agreement with float | QDQ agreement with float |")
    print("|---|---|---|---|---|---|---|")
    fmt = lambda v: "–" if v is None else f"{v:.4f}"
    for name, metric, f, o, q, ao, aq, _ in rows_accuracy:
        print(f"| {name} | {metric} | {fmt(f)} | {fmt(o)} | {fmt(q)} | {fmt(ao)} | {fmt(aq)} |")
    print("\n(agreement: top-1 agreement for digits; mean cosine of the embeddings for text and images)")
    print("\n## Latency, one sample, median of", args.repeat, "runs (ms)\n")
    print("| model | ORT float | ORT intone | ORT QDQ | tract float | tract intone | tract QDQ |")
    print("|---|---|---|---|---|---|---|")
    for name, *v in rows_latency:
        print(f"| {name} | " + " | ".join(f"{x:.3f}" for x in v) + " |")


if __name__ == "__main__":
    main()
