"""The integer matmul operand forms (`--matmul-operands portable|u8u8|vnni`) compared in one run:
accuracy of the compiled model against float, and latency in onnxruntime (1 thread) and tract, per
pipeline. On a CPU with VNNI every form is exact in onnxruntime; on one without, `vnni` is not (see
benches/fullsize/run.sh), so its accuracy here is what a VNNI machine gets.

Usage: benches/matmul_operands.sh [--real DIR] [--pipelines linear,ivit] [--repeat N]
"""
import argparse
import os
import re
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quantization import (ROOT, SHARED, digits_task, image_task, measure, ort_latency,  # noqa: E402
                          tract_latency, wordsim_task)

FORMS = ["portable", "u8u8", "vnni"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--intone", default=os.path.join(ROOT, "target", "release", "intone"))
    ap.add_argument("--real")
    ap.add_argument("--pipelines", default="linear,ivit")
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    flags = sorted(set(re.findall(r"\b(avx\w*|\w*vnni\w*|amx\w*)\b", open("/proc/cpuinfo").read())))
    print("cpu flags:", " ".join(flags), "\n")
    tasks = [digits_task(13),
             wordsim_task("paraphrase-MiniLM-L3", os.path.join(SHARED, "paraphrase_minilm_l3_v2_opset17.onnx"), "461")]
    if args.real:
        tasks.append(wordsim_task("all-MiniLM-L6-v2", os.path.join(args.real, "all_minilm_l6_v2_opset17.onnx"),
                                  "sentence_embedding"))
        tasks.append(image_task("DINOv2-S backbone", os.path.join(args.real, "dinov2s_imgfocus_backbone_224_opset17.onnx"),
                                "pixel_values", "cls_embedding"))
    print("| model | pipeline | form | metric | float | intone | agreement with float | ORT ms | ORT vs portable "
          "| tract ms | tract vs portable |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:
            calib = []
            for name, value in task.calib.items():
                p = os.path.join(tmp, f"{name}.npy")
                np.save(p, value)
                calib += ["--calibrate", f"{name}={p}"]
            m_float, _, ref = task.evaluate(task.path, None)
            for pipeline in args.pipelines.split(","):
                base = None
                for form in FORMS:
                    out = os.path.join(tmp, f"{pipeline}.{form}.onnx")
                    measure([args.intone, "compile", task.path, "-o", out, "--pipeline", pipeline,
                             "--matmul-operands", form] + calib)
                    metric, agree, _ = task.evaluate(out, ref)
                    ort_ms = ort_latency(out, task.latency_feeds, args.repeat)
                    tract_ms = tract_latency(args.intone, out, task.latency_feeds, tmp, args.repeat)
                    base = base or (ort_ms, tract_ms)
                    fmt = lambda v: "–" if v is None else f"{v:.4f}"
                    print(f"| {task.name} | {pipeline} | {form} | {task.metric} | {fmt(m_float)} | {fmt(metric)} | "
                          f"{fmt(agree)} | {ort_ms:.3f} | {ort_ms / base[0]:.2f}× | {tract_ms:.3f} | "
                          f"{tract_ms / base[1]:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
