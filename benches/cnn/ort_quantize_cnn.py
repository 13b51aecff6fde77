"""onnxruntime's own static quantizer on the real pretrained ConvNets of benches/realmodels/fetch_cnn.sh,
with the calibration and evaluation data intone uses (OUT/data/<model>_{calib,eval}.npy), so that its
best result can be set beside intone's (benches/cnn/table.txt, the same measures).

Per model:
  1. the float model with its input pinned to batch 1 and the prepared size (what intone compiles with
     --input-shape), converted to opset 13 when older (per-channel DequantizeLinear needs the axis
     attribute of opset 13), then onnxruntime.quantization.shape_inference.quant_pre_process (symbolic
     shape inference, ORT's basic graph optimizations, onnx shape inference; the symbolic pass is
     skipped for the models where it fails);
  2. quantize_static(QDQ, per_channel=True) for every calibration method x (activation, weight) type:
     MinMax; Entropy with ORT's defaults (128 histogram bins and 128 quantized bins: the KL search then
     has one candidate, the whole range, so it equals MinMax, shown anyway); Entropy with a finer
     histogram (--entropy-bins, default 512 bins / 128 quantized bins, set through create_calibrator:
     quantize_static does not pass num_bins on); Percentile 99.999 (ORT's default, symmetric);
     activation/weight QInt8/QInt8 and QUInt8/QInt8. The calibration samples go in one a batch
     (benches/ort_quantize.py's Reader); each method calibrates once, both type pairs reuse it
     (calibration_cache_path);
  3. float original and quantized model on the eval data, one sample a run, in onnxruntime, measured
     with prepare_cnn.metrics (the same numbers as fetch_cnn.sh --compile / table.py) and the task
     reading of prepare_cnn.describe. The best configuration has the smallest max class-probability
     difference (softmax/logits outputs), the largest smallest-cosine (nudenet) or, PP-OCRv4 det, the
     largest text-mask IoU (see loss()).

Prints the summary table, then every configuration. Takes about 6 minutes on 2 cores.
Usage: python ort_quantize_cnn.py [--real DIR] [--work DIR] [--only REGEX] [--det-samples N]
       [--entropy-bins BINS/QBINS]
(benches/cnn/ort_quantize_cnn.sh runs it in the torch environment; needs numpy, onnx, onnxruntime)
"""
import argparse
import contextlib
import logging
import os
import re
import sys
import time

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [os.path.join(ROOT, "benches", "realmodels"), os.path.join(ROOT, "benches")]
import prepare_cnn as pc  # noqa: E402  (MODELS, load, ort_run, metrics, describe, yolo_dets)
from ort_quantize import Reader  # noqa: E402  (calibration samples in batches)

import onnxruntime  # noqa: E402
from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, create_calibrator,  # noqa: E402
                                      quantize_static, save_tensors_data)
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry  # noqa: E402
from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: E402

TYPES = [("QInt8/QInt8", QuantType.QInt8, QuantType.QInt8), ("QUInt8/QInt8", QuantType.QUInt8, QuantType.QInt8)]


def methods(entropy_bins):
    nb, nq = entropy_bins
    # label -> (CalibrationMethod, quantize_static extra_options, create_calibrator extra_options or None)
    return {
        "MinMax": (CalibrationMethod.MinMax, {}, None),
        "Entropy": (CalibrationMethod.Entropy, {}, None),
        f"Entropy {nb}/{nq} bins": (CalibrationMethod.Entropy, {}, {"num_bins": nb, "num_quantized_bins": nq}),
        "Percentile 99.999": (CalibrationMethod.Percentile, {"CalibPercentile": 99.999}, None),
    }


@contextlib.contextmanager
def quiet():
    """The quantizer prints its progress on stdout and warns through logging: both to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def prepare(src, inp, shape, work, name):
    """The pinned, opset >= 13, pre-processed float model: (path, notes)."""
    m = onnx.load(src)
    notes = []
    for i in m.graph.input:
        if i.name == inp:
            for d, v in zip(i.type.tensor_type.shape.dim, shape):
                d.ClearField("dim_param")
                d.dim_value = v
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        m = onnx.version_converter.convert_version(m, 13)
        notes.append(f"opset {opset}→13")
    pinned = os.path.join(work, name + ".pinned.onnx")
    onnx.save(m, pinned)
    pre = os.path.join(work, name + ".pre.onnx")
    try:
        with quiet():
            quant_pre_process(pinned, pre)
    except Exception as e:  # noqa: BLE001  (ORT's symbolic shape inference asserts on some Paddle graphs)
        with quiet():
            quant_pre_process(pinned, pre, skip_symbolic_shape=True)
        notes.append(f"pre-process without symbolic shapes ({type(e).__name__})")
    return pre, notes


def calibrate(pre, inp, calib, method, cal_opts, work, tag):
    """Calibration cache of one method (quantize_static's calibration_cache_path)."""
    cache = os.path.join(work, tag + ".calib.json")
    if os.path.exists(cache):
        os.remove(cache)
    if cal_opts is None:
        return cache  # quantize_static calibrates on its first call and writes the cache
    ops = list(set(QLinearOpsRegistry) | set(QDQRegistry))
    with quiet():
        cal = create_calibrator(pre, ops, augmented_model_path=os.path.join(work, tag + ".augmented.onnx"),
                                calibrate_method=method, extra_options=cal_opts)
        cal.collect_data(Reader({inp: calib}, 1))
        save_tensors_data(cal.compute_data(), cache)
    return cache


def task_measure(name, a, b, m, labels, src):
    """The task's own reading, float → ORT int8 (prepare_cnn.describe), or the agreement of the two."""
    task = pc.MODELS[name]["task"]
    _, fa = pc.describe(name, a.astype(np.float32), labels, src)
    _, fb = pc.describe(name, b.astype(np.float32), labels, src)
    for k, short in (("acc", "acc"), ("acc_cw", "acc"), ("cer", "cer")):
        if k in fa:
            return f"{short} {fa[k]:.3f} → {fb[k]:.3f}"
    if task == "det":
        return f"text-mask IoU {m['text_mask_iou']:.3f}"
    if task == "yolo":
        same = sum(set(x) == set(y) for x, y in zip(fa["detections"], fb["detections"]))
        return f"same classes ≥0.25 on {same}/{len(a)} images"
    return f"top-1 agreement {m['top1_agreement']:.3f}"


def loss(m):
    """Selection key, smaller is better: max class-probability difference, else 1 - smallest cosine, ties
    to the mean cosine. PP-OCRv4 det: 1 - text-mask IoU, since its cosine min picks nonsense (every
    configuration's output is all 0 on the eval image without text, cosine 0; Entropy 512/128 clips the
    sigmoid output below the 0.3 threshold, mask IoU 0, and still has the highest cosines)."""
    if "text_mask_iou" in m:
        return (1 - m["text_mask_iou"], 1 - m["cosine_mean"])
    return (m.get("max_prob_diff", 0), 1 - m["cosine_min"], 1 - m["cosine_mean"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real", default=os.path.join(ROOT, "target", "realmodels", "cnn"))
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "cnn_ort_quantize"))
    ap.add_argument("--only", default="")
    ap.add_argument("--det-samples", type=int, default=8,
                    help="calibration samples for PP-OCRv4 det (448x640, the slow one; 8 prepared, all by default)")
    ap.add_argument("--entropy-bins", default="512/128")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    logging.getLogger().setLevel(logging.ERROR)
    meths = methods(tuple(int(v) for v in args.entropy_bins.split("/")))
    t_all = time.time()
    summary, detail = [], []
    for name, info in pc.MODELS.items():
        if args.only and not re.search(args.only, name):
            continue
        inp, task = info["input"], info["task"]
        src = os.path.join(args.real, "models", name + ".onnx")
        calib = np.load(os.path.join(args.real, "data", f"{name}_calib.npy"))
        if name.startswith("ppocr_v4_det"):
            calib = calib[:args.det_samples]
        x, labels = pc.load(args.real, name)
        shape = (1,) + x.shape[1:]
        t0 = time.time()
        print(f"== {name} [{'x'.join(map(str, shape))}], {len(calib)} calibration samples", file=sys.stderr)
        a = pc.ort_run(src, inp, x, batch=1).astype(np.float64)
        pre, notes = prepare(src, inp, shape, args.work, name)
        results = []
        for mlabel, (method, q_opts, cal_opts) in meths.items():
            tag = f"{name}.{re.sub('[^A-Za-z0-9]+', '_', mlabel)}"
            tc = time.time()
            try:
                cache = calibrate(pre, inp, calib, method, cal_opts, args.work, tag)
                for tlabel, act, wt in TYPES:
                    out = os.path.join(args.work, f"{tag}.{act.name}.onnx")
                    with quiet():
                        quantize_static(pre, out, Reader({inp: calib}, 1), quant_format=QuantFormat.QDQ,
                                        per_channel=True, activation_type=act, weight_type=wt,
                                        calibrate_method=method, extra_options=q_opts,
                                        calibration_cache_path=cache)
                    b = pc.ort_run(out, inp, x, batch=1).astype(np.float64)
                    m = pc.metrics(task, a, b)
                    r = dict(config=f"{mlabel}, {tlabel}", m=m, task=task_measure(name, a, b, m, labels, src),
                             secs=time.time() - tc)
                    results.append(r)
                    print(f"   {r['config']:40} cos min {m['cosine_min']:.4f} "
                          f"Δp {m.get('max_prob_diff', float('nan')):.4f}  {r['task']}  ({r['secs']:.0f} s)",
                          file=sys.stderr)
                    tc = time.time()
            except Exception as e:  # noqa: BLE001  (one failed configuration is a row, not a stopped table)
                msg = str(e).strip().splitlines()[0][:100] if str(e).strip() else type(e).__name__
                results.append(dict(config=mlabel, m=None, task=f"FAILED: {msg}", secs=time.time() - tc))
                print(f"   {mlabel}: FAILED {msg}", file=sys.stderr)
        ok = [r for r in results if r["m"]]
        label = f"{name} [{'x'.join(map(str, shape))}]"
        if ok:
            best = min(ok, key=lambda r: loss(r["m"]))
            m = best["m"]
            dp = f"{m['max_prob_diff']:.4f}" if "max_prob_diff" in m else "—"
            summary.append(f"| {label} | {best['config']} | {m['cosine_min']:.4f} | {dp} | {best['task']} |")
        else:
            summary.append(f"| {label} | all failed: {results[0]['task']} | — | — | — |")
        for r in results:
            m = r["m"]
            if m is None:
                detail.append(f"| {name} | {r['config']} | — | — | — | — | {r['task']} | {r['secs']:.0f} |")
                continue
            dp = f"{m['max_prob_diff']:.4f}" if "max_prob_diff" in m else "—"
            mark = " **best**" if ok and r is best else ""
            detail.append(f"| {name} | {r['config']}{mark} | {m['cosine_min']:.4f} | {m['cosine_mean']:.4f} | {dp} "
                          f"| {m['max_abs_diff']:.4f} "
                          f"| {r['task']} | {r['secs']:.0f} |")
        detail.append(f"| {name} | notes: {len(calib)} calibration samples"
                      f"{'; ' + '; '.join(notes) if notes else ''}; {time.time() - t0:.0f} s in all | | | | | | |")
    with open("/proc/cpuinfo") as f:
        flags = sorted(set(re.findall(r"avx[^ \n]*|vnni", f.read())))
    print(f"CPU flags (grep -o 'avx[^ ]*\\|vnni' /proc/cpuinfo | sort -u): {' '.join(flags)}")
    print()
    print("Written by benches/cnn/ort_quantize_cnn.sh (rewritten on every run); command: "
          f"benches/cnn/ort_quantize_cnn.sh {' '.join(sys.argv[1:])}".rstrip())
    print(f"onnxruntime {onnxruntime.__version__} quantize_static (QDQ, per_channel=True), float original vs "
          "quantized model on the eval data in onnxruntime (CPU EP), one sample a run")
    print()
    print("| model [pinned input] | best ORT config | cosine min | max prob diff | task measure float → ORT int8 |")
    print("|---|---|---|---|---|")
    print("\n".join(summary))
    print()
    print("Every configuration (calibration method, activation/weight type; s = calibration + quantization + eval):")
    print()
    print("| model | config | cosine min | cosine mean | max prob diff | max abs diff | task measure | s |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(detail))
    print()
    print(f"cosine min: smallest per-sample cosine of the first output; max prob diff: max |class-probability "
          f"difference| (softmax of the logits for OriNet; PP-OCRv4 rec: per frame); best = smallest max prob diff, "
          f"or largest cosine min (nudenet's box output), ties broken by cosine mean; PP-OCRv4 det: largest text-mask IoU "
          f"(its cosine min is 0 for every configuration on the eval image without text, and the config with the "
          f"highest cosines clips the probabilities below the 0.3 mask threshold). Task measure: "
          f"prepare_cnn.describe's accuracy (orientation: class = degrees turned clockwise) or character error "
          f"rate; det: IoU of the p>0.3 text masks; nudenet: images whose set of classes scoring ≥0.25 is the "
          f"same; open_nsfw: top-1 agreement. Entropy with ORT's defaults equals MinMax (see the docstring); "
          f"QInt8 and QUInt8 activations (both asymmetric) give the same grid shifted by 128, so mostly equal numbers. "
          f"Total {time.time() - t_all:.0f} s.")


if __name__ == "__main__":
    main()
