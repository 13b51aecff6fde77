"""Issue 11's table: every ConvNet compiled integer-only (`intone compile --pipeline ivit`), one
markdown row per model, everything measured in this run.

Rows: the ConvNet fixtures (fixtures/*.onnx, opsets 13 and 17) and the real pretrained ConvNets of
benches/realmodels/fetch_cnn.sh (OUT/models, OUT/data; PP-OCRv4 rec also with its dead Conv channels
zeroed, as fetch_cnn.sh --compile does). Per row: float ops before and after, the int model against
the float one in onnxruntime and in tract (prepare_cnn.metrics, the same numbers fetch_cnn.sh
--compile prints), compile time, batch-1 latencies (benches/speed.py's interleaved onnxruntime
rounds, `intone bench` for tract) and onnx.checker(full_check=True). A model that fails anywhere
gets the error's first line in its cells and the table goes on.

Usage: python table.py [--intone BIN] [--real DIR] [--work DIR] [--repeat N] [--samples N] [--only REGEX]
(benches/cnn/table.sh runs it in the torch environment; it needs numpy, pillow, onnx, onnxruntime)
"""
import argparse
import contextlib
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(ROOT, "fixtures")
sys.path[:0] = [os.path.join(ROOT, "benches", "realmodels"), os.path.join(ROOT, "benches")]
import prepare_cnn as pc  # noqa: E402  (metrics, ort_run, zero_dead_channels, MODELS)
from speed import ort_latencies  # noqa: E402  (one thread, interleaved rounds, median)

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
               onnx.TensorProto.BFLOAT16}
INT_TYPES = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16,
             onnx.TensorProto.INT32, onnx.TensorProto.UINT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT64}
# fixture stem -> (data set, task as prepare_cnn.metrics knows it)
FIXTURES = {"digits_cnn": ("digits", "logits"), "resnet18_tiny": ("image32", "logits"),
            "mobilenetv3_tiny": ("image32", "logits"), "efficientnet_b0_tiny": ("image32", "logits"),
            "unet_tiny": ("image32", "seg")}
# exporters of the real models whose files leave producer_name empty (fetch_cnn.sh's header)
EXPORTER = {"paddle": "paddle2onnx", "tf2onnx": "tf2onnx", "pytorch": "pytorch"}


class Failed(Exception):
    pass


class Row:
    def __init__(self, label, src, inp, calib, x, task, pin=(), score=None, ref=None, make=None):
        # score(outputs) -> (measure, value) or None: the task's own measure (top-1, CER);
        # ref: the float model the int model is compared with (a variant is compared with its base);
        # make: writes src first (a variant), only for the rows that run
        self.label, self.src, self.inp, self.calib, self.x, self.task = label, src, inp, calib, x, task
        self.pin, self.score, self.ref, self.make = list(pin), score, ref or src, make


def top1_score(labels):
    return lambda y: ("top-1", float((y.argmax(1) == labels).mean()))


def real_score(real, name, labels):
    """prepare_cnn's reading of the outputs: accuracy (orientation: class = degrees turned
    clockwise, what the float models get right) or the recognizer's character error rate."""
    path = os.path.join(real, "models", name + ".onnx")

    def score(y):
        _, s = pc.describe(name, y.astype(np.float32), labels, path)
        key = next((k for k in ("acc", "acc_cw", "cer") if k in s), None)
        return (key.removesuffix("_cw"), s[key]) if key else None
    return score


def fixture_rows(samples):
    rows = []
    for stem, (data, task) in FIXTURES.items():
        test = np.load(os.path.join(FIX, "data", f"{data}_test.npy"))[:samples]
        score = None
        if data == "digits":
            score = top1_score(np.load(os.path.join(FIX, "data", "digits_test_labels.npy"))[:samples])
        for opset in (13, 17):
            rows.append(Row(f"{stem}_opset{opset}", os.path.join(FIX, f"{stem}_opset{opset}.onnx"), "pixels",
                            os.path.join(FIX, "data", f"{data}_calibration.npy"), test, task, score=score))
    return rows


def real_rows(real, work):
    """fetch_cnn.sh --compile's models, pinned like it to batch 1 and the prepared size."""
    rows = []
    for name, info in pc.MODELS.items():
        src = os.path.join(real, "models", name + ".onnx")
        calib = os.path.join(real, "data", f"{name}_calib.npy")
        x, labels = pc.load(real, name)
        pin = ["--input-shape", f"{info['input']}={'x'.join(map(str, (1,) + x.shape[1:]))}"]
        score = real_score(real, name, labels)
        rows.append(Row(name, src, info["input"], calib, x, info["task"], pin, score))
        if name == "ppocr_v4_rec_paddle_opset12":
            dead0 = os.path.join(work, name + "_dead0.float.onnx")
            rows.append(Row(name + "+dead0", dead0, info["input"], calib, x, info["task"], pin, score, ref=src,
                            make=lambda src=src, dead0=dead0: pc.zero_dead_channels(src, dead0)))
    return rows


def short_line(text, width=90):
    """The line of a message that says what failed (the last `error` line), cut to width."""
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error")]
    line = (errors or lines or ["(no output)"])[-1]
    return line if len(line) <= width else line[:width - 1] + "…"


def run(cmd, timeout=900):
    try:  # a compile that hangs is one failed row, not a stuck table
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failed(f"timed out after {timeout} s")
    if p.returncode != 0:
        raise Failed(short_line(p.stderr + p.stdout))
    return p.stdout


def exporter_opset(path):
    m = onnx.load(path, load_external_data=False)
    who = f"{m.producer_name} {m.producer_version}".strip()
    if not who:
        who = next(v for k, v in EXPORTER.items() if k in os.path.basename(path))
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    return f"{who} / {opset}"


def float_ops_before(path):
    """Nodes with a float output that are neither constants nor shape arithmetic (everything
    computed from initializers, Constant nodes and Shape/Size only)."""
    m = onnx.load(path)
    m = onnx.shape_inference.infer_shapes(m)
    g = m.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    static = {i.name for i in g.initializer}
    count = 0
    for node in g.node:
        if node.op_type in ("Constant", "Shape", "Size") or all(i in static for i in node.input if i):
            static.update(node.output)
        elif any(types.get(o) in FLOAT_TYPES for o in node.output):
            count += 1
    return count


def requant_nodes(graph):
    """First outputs of the nodes that only carry values between integers and float: DequantizeLinear,
    Casts to integers and the chains of Round, Clip and Mul/Add by a constant (scale, zero point)
    that lead only into those Casts: how intone quantizes. (The report's float_ops also counts a
    Mul of two computed values there, say a float squeeze-and-excitation gate; this does not.)"""
    consumers = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    constants = {i.name for i in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    machinery = set()
    for n in reversed(graph.node):  # consumers first: ONNX nodes are in topological order
        to = next((a.i for a in n.attribute if a.name == "to"), None)
        users = consumers.get(n.output[0], [])
        by_constant = n.op_type in ("Round", "Clip") or (n.op_type in ("Mul", "Add") and constants & set(n.input))
        chain = by_constant and users and all(u.output[0] in machinery for u in users)
        if n.op_type == "DequantizeLinear" or (n.op_type == "Cast" and to in INT_TYPES) or chain:
            machinery.add(n.output[0])
    return machinery


def float_after(report, path, kinds=3):
    """How many float values lie between the input quantization and the output dequantization,
    the ops computing them that are not (de)quantizations (the float islands left), and the
    report's other float ops (before the input quantization or after the output dequantization)."""
    between = set(report["float_between"])
    graph = onnx.load(path, load_external_data=False).graph
    machinery = requant_nodes(graph)
    nodes = [n for n in graph.node if between & set(n.output)]
    islands = Counter(n.op_type for n in nodes if n.output[0] not in machinery)
    boundary = ("quantizes a float value", "dequantizes integers")
    outside = Counter({o["op"]: o["count"] for o in report["float_ops"] if not o["reason"].startswith(boundary)})
    outside -= islands
    cell = str(len(between))
    if islands:
        cell += f": {most_common(islands, kinds)} + {len(nodes) - sum(islands.values())} (de)quantize ops"
    elif nodes:
        cell += ": all (de)quantize ops"
    return cell + (f"; outside: {most_common(outside, kinds)}" if outside else "")


def most_common(counter, kinds):
    top = [f"{n} {op}" for op, n in counter.most_common(kinds)]
    return ", ".join(top + (["…"] if len(counter) > kinds else []))


def fixed_batch(path):
    """Whether the model's first input has batch 1 fixed (pinned): then it runs one sample a run."""
    dim = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.HasField("dim_value") and dim.dim_value == 1


def output_name(path):
    return onnx.load(path, load_external_data=False).graph.output[0].name


def tract_run(intone, path, inp, x, tmp):
    """The first output on every sample, in tract (`intone run`, one process per batch)."""
    batches = [x[i:i + 1] for i in range(len(x))] if fixed_batch(path) else [x]
    out, feed, outs = output_name(path), os.path.join(tmp, "feed.npy"), []
    for xb in batches:
        d = os.path.join(tmp, "out")
        shutil.rmtree(d, ignore_errors=True)
        np.save(feed, xb)
        run([intone, "run", path, "--input", f"{inp}={feed}", "--output", out, "--output-dir", d])
        outs.append(np.load(glob.glob(os.path.join(d, "*.npy"))[0]))
    return np.concatenate(outs).astype(np.float64)


def ort_outputs(path, inp, x):
    return pc.ort_run(path, inp, x, batch=1 if fixed_batch(path) else None).astype(np.float64)


def agreement(task, a, b):
    """One cell: max class-probability difference for softmax outputs (with the cosine), else the
    smallest per-sample cosine."""
    m = pc.metrics(task, a, b)
    if task in ("cls", "rec"):
        return f"Δp {m['max_prob_diff']:.3f} (cos {m['cosine_min']:.4f})"
    return f"{m['cosine_min']:.4f}"


def task_measure(row, a, b):
    sa, sb = (row.score(a), row.score(b)) if row.score else (None, None)
    return f"{sa[0]} {sa[1]:.3f} → {sb[1]:.3f}" if sa else "—"


def compare_in(outputs, row, cand):
    """[agreement, task measure] of cand against row.ref, both run by outputs(path)."""
    a, b = outputs(row.ref), outputs(cand)
    return [agreement(row.task, a, b), task_measure(row, a, b)]


def checker(path):
    try:
        onnx.checker.check_model(path, full_check=True)
        return "ok"
    except Exception as e:  # the checker raises several types; its message is the cell
        return short_line(str(e), 160)


def compile_model(intone, row, out, report, extra):
    cmd = [intone, "compile", row.src, "-o", out, "--pipeline", "ivit", "--calibrate",
           f"{row.inp}={row.calib}", "--report", report, *row.pin, *extra]
    start = time.perf_counter()
    run(cmd)
    return time.perf_counter() - start


def latencies(intone, ref, cand, inp, x, tmp, repeat):
    feed = os.path.join(tmp, "one.npy")
    np.save(feed, x[:1])
    o = ort_latencies([ref, cand], {inp: x[:1]}, repeat)
    t = json.loads(run([intone, "bench", ref, cand, "--input", f"{inp}={feed}", "--repeat", str(repeat), "--json"]))
    t = [m["median_ms"] for m in t["models"]]
    return [f"{o[0]:.2f}", f"{o[1] / o[0]:.2f}", f"{t[0]:.2f}", f"{t[1] / t[0]:.2f}"]


def cells(n, f, *args):
    """f(*args), a list of n cells, or n copies of its error's first line: one failing
    measurement leaves the others."""
    try:
        return f(*args)
    except Exception as e:  # subprocess, onnxruntime and numpy errors alike end up in the cells
        return ["error: " + short_line(str(e), 60).removeprefix("error: ")] * n


def cell(f, *args):
    return cells(1, lambda: [str(f(*args))])[0]


def measure(args, row):
    tmp = os.path.join(args.work, re.sub(r"\W", "_", row.label))
    os.makedirs(tmp, exist_ok=True)
    out, report = os.path.join(tmp, "int.onnx"), os.path.join(tmp, "report.json")
    for f in (out, report):  # a failed compile must not leave the last run's model to be measured
        if os.path.exists(f):
            os.remove(f)
    if row.make:
        with contextlib.redirect_stdout(sys.stderr):  # its note is progress, not table
            row.make()
    model = row.label + (f" [{row.pin[1].split('=')[1]}]" if row.pin else "")
    head = [model, cell(exporter_opset, row.src), cell(float_ops_before, row.src)]
    try:
        seconds = compile_model(args.intone, row, out, report, args.compile_args.split())
    except Failed as e:
        return head + [f"compile failed: {e}"] + ["—"] * 9
    with open(report) as f:
        after = cell(float_after, json.load(f), out)
    ort = cells(2, compare_in, lambda p: ort_outputs(p, row.inp, row.x), row, out)
    tract = cells(2, compare_in, lambda p: tract_run(args.intone, p, row.inp, row.x, tmp), row, out)
    lat = cells(4, latencies, args.intone, row.ref, out, row.inp, row.x, tmp, args.repeat)
    return head + [after, ort[0], tract[0], ort[1], f"{seconds:.1f}", *lat, checker(out)]


HEADER = ["model [pinned input]", "exporter / opset", "float ops before¹", "float values after²",
          "int vs float, ORT³", "int vs float, tract³", "task measure float → int, ORT⁷", "compile (s)⁴",
          "float ORT (ms)⁵", "int / float ORT", "float tract (ms)⁵", "int / float tract", "checker⁶"]


def footnotes(args):
    return f"""
¹ nodes of the float model with a float output, not counting constants and shape arithmetic (Constant,
  Shape, Size and whatever is computed from initializers and those alone); onnx shape inference types.
² the count of `float_between` in the compile report: float values computed between the input
  quantization and the output dequantization (0 = integer-only); then the ops computing them other than
  (de)quantizations (DequantizeLinear; Round, Clip, Mul/Add by a constant into a Cast to integers), most
  frequent first; "outside": the report's other float ops, before the input quantization or after the
  output dequantization.
³ int model against its float original on the same inputs, in the same engine, first output: the smallest
  per-sample cosine; for softmax outputs (PP-OCR cls/rec, PP-LCNet, open_nsfw) Δp = max |class-probability
  difference|. Inputs: the first {args.samples} of fixtures/data/{{digits,image32}}_test.npy (image32 has 16),
  the prepared eval images of the real models (benches/realmodels/prepare_cnn.py); pinned models run one
  sample a run.
⁴ wall time of `intone compile SRC -o OUT --pipeline ivit --calibrate INPUT=CALIB.npy --report R.json
  [--input-shape INPUT=1x...]` (calibration included); CALIB = fixtures/data/{{digits,image32}}_calibration.npy,
  REAL/data/<model>_calib.npy. Real models are pinned to batch 1 and the prepared size like
  fetch_cnn.sh --compile; fixtures keep their dynamic batch.
⁵ batch 1 (the first eval sample), median of {args.repeat} interleaved rounds: onnxruntime
  {ort_version()} with one thread (benches/speed.py ort_latencies), tract in one `intone bench` process.
  Ratios are int / float (below 1: the int model is faster).
⁶ onnx.checker.check_model(int model, full_check=True).
⁷ top-1 accuracy on the digits labels (fixtures/data/digits_test_labels.npy); for the real models
  prepare_cnn.describe's accuracy (orientation models: class = degrees turned clockwise) or character
  error rate (cer, PP-OCRv4 rec), on the same outputs as ³.
"""


def ort_version():
    import onnxruntime
    return onnxruntime.__version__


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--intone", default=os.path.join(ROOT, "target", "release", "intone"))
    p.add_argument("--real", default=os.path.join(ROOT, "target", "realmodels", "cnn"),
                   help="OUT_DIR of benches/realmodels/fetch_cnn.sh")
    p.add_argument("--work", default=os.path.join(ROOT, "target", "cnn_table"),
                   help="where the compiled models and reports go")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--samples", type=int, default=64, help="fixture eval samples")
    p.add_argument("--only", help="regex: only the rows whose model name matches")
    p.add_argument("--compile-args", default="",
                   help="extra intone compile options, e.g. '--calibration-method mse'")
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    rows = fixture_rows(args.samples) + real_rows(args.real, args.work)
    rows = [r for r in rows if not args.only or re.search(args.only, r.label)]
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for row in rows:
        start = time.perf_counter()
        print("| " + " | ".join(measure(args, row)) + " |", flush=True)
        print(f"{row.label}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(footnotes(args))


if __name__ == "__main__":
    main()
