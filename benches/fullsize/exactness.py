"""Bit-identity of compiled full-size transformers across engines and CPUs, in one run.

For each model of export.py: compile with `--pipeline PIPELINE` for each `--matmul-operands` form,
run the result in tract (`intone run`), in onnxruntime on this CPU, and in onnxruntime on an
emulated AVX2-only CPU (qemu-x86_64 -cpu Haswell-v4: no AVX-512, no VNNI, so onnxruntime picks its
saturating u8×s8 kernel), and print max |Δ| between tract and each onnxruntime run (0 = bit-identical)
with the cosine of tract's output to the float model's.
Usage: python exactness.py MODELS_DIR [--pipeline ivit] [--operands portable,vnni]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
INTONE = os.path.join(ROOT, "target", "release", "intone")
ORT = os.path.join(ROOT, "tests", "oracle", "run_ort.py")
MODELS = [("vit_s16_224", ["pixels"]), ("deit_t_224", ["pixels"]), ("swin_t_224", ["pixels"]),
          ("gpt2_v4096", ["input_ids", "attention_mask"])]


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    return p.stdout + p.stderr


def outputs(directory):
    return {f[:-4]: np.load(os.path.join(directory, f)) for f in sorted(os.listdir(directory))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models")
    ap.add_argument("--pipeline", default="ivit")
    ap.add_argument("--operands", default="portable,vnni")
    args = ap.parse_args()
    flags = sorted(set(re.findall(r"\b(avx\w*|\w*vnni\w*|amx\w*)\b", open("/proc/cpuinfo").read())))
    print("cpu flags:", " ".join(flags))
    print(f"\n| model | `--matmul-operands` | integer-only | cosine to float (tract) | max abs Δ tract vs ORT, this CPU "
          "| max abs Δ tract vs ORT, emulated AVX2 | outputs differing (emulated AVX2) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, inputs in MODELS:
            model = os.path.join(args.models, f"{name}.onnx")
            calib = [a for i in inputs for a in ("--calibrate", f"{i}={args.models}/{name}.calib.{i}.npy")]
            feeds = [f"{i}={args.models}/{name}.test.{i}.npy" for i in inputs]
            feed_args = [a for f in feeds for a in ("--input", f)]
            float_dir = os.path.join(tmp, f"{name}.float")
            run([INTONE, "run", model, *feed_args, "--output-dir", float_dir])
            reference = outputs(float_dir)
            for form in args.operands.split(","):
                compiled = os.path.join(tmp, f"{name}.{form}.onnx")
                log = run([INTONE, "compile", model, "-o", compiled, "--pipeline", args.pipeline,
                           "--matmul-operands", form, *calib])
                integer_only = "integer-only" in log
                dirs = {k: os.path.join(tmp, f"{name}.{form}.{k}") for k in ("tract", "native", "avx2")}
                run([INTONE, "run", compiled, *feed_args, "--output-dir", dirs["tract"]])
                run([sys.executable, ORT, compiled, dirs["native"], *feeds])
                run(["qemu-x86_64", "-cpu", "Haswell-v4", sys.executable, ORT, compiled, dirs["avx2"], *feeds])
                t, n, a = (outputs(dirs[k]) for k in ("tract", "native", "avx2"))
                key = sorted(t)[0]
                ref, tv = reference[key].ravel().astype(np.float64), t[key].ravel().astype(np.float64)
                cos = float(ref @ tv / np.linalg.norm(ref) / np.linalg.norm(tv))
                d_native = float(np.abs(t[key].astype(np.float64) - n[key]).max())
                d_avx2 = float(np.abs(t[key].astype(np.float64) - a[key]).max())
                rows = t[key].reshape(t[key].shape[0], -1)
                differing = int((rows != a[key].reshape(rows.shape)).any(axis=1).sum())
                print(f"| {name} | {form} | {'yes' if integer_only else 'no'} | {cos:.4f} | {d_native:.4g} | "
                      f"{d_avx2:.4g} | {differing} of {rows.shape[0]} |", flush=True)


if __name__ == "__main__":
    main()
