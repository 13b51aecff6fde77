"""Issue 12's tables: residual expansions of the weights (`--weight-bits B --residual-order K
--residual-sparsity G`, and `--ensemble M`), every configuration compiled integer-only with
`--pipeline ivit` and measured in one run.

Configurations: B-bit weights with K terms (WBKK), γ of the channels without residual terms (or a
model-wide budget of residual MACs, `--residual-budget`), an
ensemble of M single-term networks, A2 (16-bit activations as two 8-bit terms), and data-free
(`--data-free`, no calibration data). Per model, one row per configuration: the task measure and the cosine to the float model (both in
onnxruntime), weight bits per parameter (Σ bits·(1 + (K−1)·kept/C)·params / Σ params, from the
compile report), integer-matmul MACs relative to W8K1 (per sample, symbolic dims counted 1),
integer-only (no float value between input quantization and output dequantization), tract
against onnxruntime bit for bit on the evaluated samples, and batch-1 latency: onnxruntime with one
thread and its sequential executor, onnxruntime's parallel executor with 2 inter-op threads (the
ensemble's branches are independent subgraphs), and tract (`intone bench`); each engine times all
configurations of a model round after round in one process (medians), so drift hits all alike.

Models: the digits ViT (360 test images, top-1), paraphrase-MiniLM-L3 (WordSim-353 Spearman), the
digits CNN (360 test images, top-1); with --real, all-MiniLM-L6-v2 and the DINOv2-S backbone of
benches/realmodels/fetch.sh (OUT/models) and the ConvNets of fetch_cnn.sh (OUT/cnn).

Usage: benches/residual/table.sh [--real target/realmodels] [--only REGEX] [--configs REGEX]
[--repeat N] [--no-latency]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(ROOT, "fixtures")
sys.path[:0] = [os.path.join(ROOT, "benches"), os.path.join(ROOT, "benches", "realmodels")]
import quantization as q  # noqa: E402  (the transformer tasks of the quantization benchmark)
from speed import cpu_flags, ort_latencies  # noqa: E402

CONFIGS = [
    ("W8K1", []),
    ("W6K1", ["--weight-bits", "6"]),
    ("W4K1", ["--weight-bits", "4"]),
    ("W4K2", ["--weight-bits", "4", "--residual-order", "2"]),
    ("W4K2 γ=0.5", ["--weight-bits", "4", "--residual-order", "2", "--residual-sparsity", "0.5"]),
    ("W4K2 budget 0.5", ["--weight-bits", "4", "--residual-order", "2", "--residual-budget", "0.5"]),
    ("W4K2 budget 0.5 layer", ["--weight-bits", "4", "--residual-order", "2", "--residual-budget", "0.5",
                               "--budget-by", "layer"]),
    ("W3K2", ["--weight-bits", "3", "--residual-order", "2"]),
    ("W2K1", ["--weight-bits", "2"]),
    ("W2K2", ["--weight-bits", "2", "--residual-order", "2"]),
    ("W2K4", ["--weight-bits", "2", "--residual-order", "4"]),
    ("W4 ensemble 2", ["--weight-bits", "4", "--ensemble", "2"]),
    ("W4 ensemble 3", ["--weight-bits", "4", "--ensemble", "3"]),
    ("W4K2 A2", ["--weight-bits", "4", "--residual-order", "2", "--activation-order", "2"]),
    ("W8K1 A2 measured 0.25", ["--wide-operands", "measured=0.25"]),
    ("W8K1 A2 measured 1", ["--wide-operands", "measured=1"]),
    ("W4K2 A2 measured 0.25", ["--weight-bits", "4", "--residual-order", "2", "--wide-operands", "measured=0.25"]),
    ("W8K1 data-free", ["--data-free"]),
]


def session(path, parallel=False):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    if parallel:
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        so.inter_op_num_threads = 2
        # Idle pool threads would spin and take the cores from the next session's run.
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    else:
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError((p.stderr or p.stdout).strip().splitlines()[-1])
    return p.stdout


def tract_outputs(intone, path, feeds, tmp):
    d = os.path.join(tmp, "tract_out")
    if os.path.isdir(d):
        for f in os.listdir(d):
            os.remove(os.path.join(d, f))
    args = [intone, "run", path, "--output-dir", d]
    for name, value in feeds.items():
        p = os.path.join(tmp, f"run_{re.sub(r'[^A-Za-z0-9]', '_', name)}.npy")
        np.save(p, value)
        args += ["--input", f"{name}={p}"]
    run(args)
    return {f[:-4]: np.load(os.path.join(d, f)) for f in os.listdir(d)}


def cosine(a, b):
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)))


class Model:
    """name, float model, calibration feeds, evaluate(path) -> (measure, outputs), latency feeds,
    --input-shape pins, the feeds tract and onnxruntime are compared on, and the output the task
    reads (--objective of the measured budget) when the model has several."""

    def __init__(self, name, path, calib, evaluate, feeds, metric, pin=(), exact_feeds=None, objective=None):
        self.name, self.path, self.calib, self.evaluate = name, path, calib, evaluate
        self.feeds, self.metric, self.pin = feeds, metric, list(pin)
        self.exact_feeds = exact_feeds or feeds
        self.objective = ["--objective", objective] if objective else []


def from_task(task, pin=(), objective=None):
    def evaluate(path):
        m, _, out = task.evaluate(path, None)
        return m, out
    return Model(task.name, task.path, task.calib, evaluate, task.latency_feeds, task.metric, pin,
                 objective=objective)


def digits_cnn():
    x = np.load(os.path.join(FIX, "data", "digits_test.npy"))
    y = np.load(os.path.join(FIX, "data", "digits_test_labels.npy"))

    def evaluate(path):
        logits = session(path).run(None, {"pixels": x})[0]
        return float((logits.argmax(1) == y).mean()), logits
    calib = {"pixels": np.load(os.path.join(FIX, "data", "digits_calibration.npy"))}
    return Model("digits CNN opset 17", os.path.join(FIX, "digits_cnn_opset17.onnx"), calib, evaluate,
                 {"pixels": x[:1]}, "top-1 (360 test images)", exact_feeds={"pixels": x[:16]})


def real_cnn(cnn, name):
    import prepare_cnn as pc
    info = pc.MODELS[name]
    x, labels = pc.load(cnn, name)
    path = os.path.join(cnn, "models", name + ".onnx")
    inp = info["input"]

    def evaluate(p):
        y = pc.ort_run(p, inp, x, batch=1).astype(np.float32)
        _, s = pc.describe(name, y, labels, path)
        key = next((k for k in ("acc", "acc_cw", "cer") if k in s), None)
        return (s[key] if key else None), y
    calib = {inp: np.load(os.path.join(cnn, "data", f"{name}_calib.npy"))}
    pin = ["--input-shape", f"{inp}={'x'.join(map(str, (1,) + x.shape[1:]))}"]
    metric = {"cls": "accuracy", "logits": "accuracy", "rec": "character error rate"}.get(info["task"], "—")
    return Model(name, path, calib, evaluate, {inp: x[:1]}, metric, pin, exact_feeds={inp: x[:1]})


def models(args):
    found = [from_task(q.digits_task(17)),
             from_task(q.wordsim_task("paraphrase-MiniLM-L3", os.path.join(q.SHARED, "paraphrase_minilm_l3_v2_opset17.onnx"), "461"),
                       objective="461"),
             digits_cnn()]
    if args.real:
        real = os.path.join(args.real, "models")
        found.append(from_task(q.wordsim_task("all-MiniLM-L6-v2", os.path.join(real, "all_minilm_l6_v2_opset17.onnx"), "sentence_embedding"),
                               objective="sentence_embedding"))
        found.append(from_task(q.image_task("DINOv2-S backbone", os.path.join(real, "dinov2s_imgfocus_backbone_224_opset17.onnx"), "pixel_values", "cls_embedding"),
                               objective="cls_embedding"))
        cnn = os.path.join(args.real, "cnn")
        for name in ("open_nsfw_resnet50_tf2onnx_opset9", "pplcnet_text_orientation_paddle_opset15",
                     "orinet_orientation_pytorch_opset17"):
            if os.path.exists(os.path.join(cnn, "models", name + ".onnx")):
                found.append(real_cnn(cnn, name))
    return [m for m in found if not args.only or re.search(args.only, m.name)]


def weight_stats(report):
    """(bits per parameter, MACs of the integer matmuls) from the split-residual-groups report."""
    weights = [w for p in report["passes"] if p["pass"] == "split-residual-groups" for w in p["weights"]]
    # An ensemble's branches copy every weight: bits per parameter of the original model.
    params = sum(w["parameters"] for w in weights if (w.get("ensemble_branch") or [0])[0] == 0)
    bits = sum(w["bits"] * w["cost"] * w["parameters"] for w in weights)
    macs = sum(w["cost"] * w["macs"] for w in weights)
    return (bits / params if params else float("nan")), macs


def interleaved_latencies(intone, paths, feeds, tmp, repeat):
    """Per model: onnxruntime sequential and parallel, then tract, each engine timing every model
    round after round in one process, so that drift hits all alike; medians in ms."""
    columns = [ort_latencies(paths, feeds, repeat, make=lambda p, parallel=parallel: session(p, parallel))
               for parallel in (False, True)]
    args = [intone, "bench", *paths, "--repeat", str(repeat), "--json"]
    for name, value in feeds.items():
        p = os.path.join(tmp, f"bench_{re.sub(r'[^A-Za-z0-9]', '_', name)}.npy")
        np.save(p, value)
        args += ["--input", f"{name}={p}"]
    columns.append([m["median_ms"] for m in json.loads(run(args))["models"]])
    return list(zip(*columns))


def measure(args, model, tag, extra, tmp, base):
    out = os.path.join(tmp, re.sub(r"\W", "_", tag) + ".onnx")
    report = os.path.join(tmp, "report.json")
    for f in (out, report):
        if os.path.exists(f):
            os.remove(f)
    calib = []
    for name, value in model.calib.items():
        p = os.path.join(tmp, f"calib_{re.sub(r'[^A-Za-z0-9]', '_', name)}.npy")
        np.save(p, value)
        calib += ["--calibrate", f"{name}={p}"]
    if "--data-free" in extra:
        calib = []
    try:
        run([args.intone, "compile", model.path, "-o", out, "--pipeline", "ivit", "--report", report,
             *calib, *model.pin, *model.objective, *extra])
    except RuntimeError as e:
        return [tag, f"compile failed: {e}"] + ["—"] * 9
    rep = json.load(open(report))
    bits, macs = weight_stats(rep)
    if tag == "W8K1":
        base["macs"] = macs
    measure_value, outputs = model.evaluate(out)
    cos = cosine(base["float"], outputs)
    int_only = "yes" if not rep["float_between"] else f"no ({len(rep['float_between'])})"
    s = session(out)
    exact_in = dict(zip([o.name for o in s.get_outputs()], s.run(None, model.exact_feeds)))
    exact_tr = tract_outputs(args.intone, out, model.exact_feeds, tmp)
    same = len(exact_in) == len(exact_tr) and all(
        (b := exact_tr.get(re.sub(r"[^\w.\-]", "_", name))) is not None and a.dtype == b.dtype
        and np.array_equal(a, b) for name, a in exact_in.items())
    fmt = lambda v: "—" if v is None else f"{v:.4f}"
    base.setdefault("compiled", {})[tag] = out
    return [tag, fmt(measure_value), f"{cos:.5f}", f"{bits:.2f}", f"{macs / base['macs']:.2f}", int_only,
            "yes" if same else "NO"] + ["—"] * 3


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--intone", default=os.path.join(ROOT, "target", "release", "intone"))
    p.add_argument("--real", help="benches/realmodels/fetch.sh's OUT_DIR (with fetch_cnn.sh's OUT_DIR/cnn)")
    p.add_argument("--only", help="regex: the models whose name matches")
    p.add_argument("--configs", help="regex: the configurations whose tag matches")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--no-latency", action="store_true", help="accuracy columns only (for a busy machine)")
    args = p.parse_args()
    print("CPU flags:", cpu_flags())
    print(f"onnxruntime {ort.__version__}; intone {run([args.intone, '--version']).strip()}\n")
    configs = [c for c in CONFIGS if not args.configs or re.search(args.configs, c[0])]
    with tempfile.TemporaryDirectory() as tmp:
        for model in models(args):
            f_measure, f_out = model.evaluate(model.path)
            base = {"float": f_out}
            print(f"### {model.name} — {model.metric}: float {'—' if f_measure is None else f'{f_measure:.4f}'}\n")
            print("| config | measure | cosine to float | weight bits / param | int MACs vs W8K1 | integer-only "
                  "| tract = ORT | ORT seq ms | ORT parallel ms | tract ms |")
            print("|---|---|---|---|---|---|---|---|---|---|")
            rows = []
            for tag, extra in configs:
                if tag != "W8K1" and "macs" not in base:
                    measure(args, model, "W8K1", [], tmp, base)
                rows.append(measure(args, model, tag, extra, tmp, base))
            if not args.no_latency:
                tags = [r[0] for r in rows if r[0] in base.get("compiled", {})]
                paths = [base["compiled"][t] for t in tags]
                for t, lat in zip(tags, interleaved_latencies(args.intone, paths, model.feeds, tmp, args.repeat)):
                    next(r for r in rows if r[0] == t)[7:10] = [f"{v:.2f}" for v in lat]
            for row in rows:
                print("| " + " | ".join(row) + " |", flush=True)
            print()


if __name__ == "__main__":
    main()
