"""Speed benchmark: integer models against their float originals, in onnxruntime and tract.

For every model: compiles `linear` and `ivit` (calibrating on the shipped samples), makes
onnxruntime's best static quantization of the same model on the same samples (QDQ, uint8
activations, per-channel int8 weights, MatMul only), then prints, in one run:
  1. latency, batch 1: onnxruntime (one thread) runs every model of a row in turn, round after
     round, in one process; tract does the same in one `intone bench` process. Medians, and the
     ratio float / model (> 1: faster than float);
  2. op counts of one transformer block (full-size elementwise, per-row elementwise, reductions,
     table reads, matmuls, data movement), from the shapes onnxruntime's profile records;
  3. onnxruntime's per-op-type profile (share of kernel time, node count) of each model.
The CPU flags head the output: speed and exactness depend on them.

Usage: benches/speed.sh [--real DIR] [--repeat N] [--tokens T] [--baseline BIN]
(DIR from benches/realmodels/fetch.sh; BIN: another intone binary, say a build of an earlier
commit, whose `linear` and `ivit` outputs join the same interleaved rounds as `… (baseline)`).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict

import numpy as np
import onnx
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(ROOT, "..", "shared", "models")
DATA = os.path.join(SHARED, "data")
PIPELINES = ["linear", "ivit"]


def cpu_flags():
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags |= {w for w in line.split() if w.startswith("avx") or "vnni" in w}
    return " ".join(sorted(flags))


def session(path, threads=1, profile=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = profile
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


class Model:
    def __init__(self, name, path, calib, feeds):
        self.name, self.path, self.calib, self.feeds = name, path, calib, feeds


def digits(opset):
    x = np.load(os.path.join(DATA, "digits_norm_f32_1x8x8.npy"))
    perm = np.load(os.path.join(DATA, "digits_split_perm_seed0.npy"))
    return Model(f"digits ViT opset {opset}", os.path.join(SHARED, f"digits_vit_opset{opset}.onnx"),
                 {"pixels": x[perm[:256]]}, {"pixels": x[perm[-1:]]})


def encoder(name, path, tokens):
    ids = np.load(os.path.join(DATA, "wordsim353_word_input_ids.npy"))
    mask = np.load(os.path.join(DATA, "wordsim353_word_attention_mask.npy"))
    # A document of `tokens` tokens: [CLS], word pieces drawn from the calibration words, [SEP].
    rng = np.random.default_rng(0)
    pieces = ids[:, 1:][(ids[:, 1:] != 0) & (ids[:, 1:] != 102)]
    doc = np.concatenate([[101], rng.choice(pieces, tokens - 2), [102]]).astype(ids.dtype)[None]
    return Model(name, path, {"input_ids": ids, "attention_mask": mask},
                 {"input_ids": doc, "attention_mask": np.ones_like(doc, dtype=mask.dtype)})


def vit(name, path, input_name):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 3, 14, 14)).astype(np.float32)
    x = np.kron(x, np.ones((1, 1, 16, 16), np.float32))
    return Model(name, path, {input_name: x[:8]}, {input_name: x[8:]})


def run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def ort_qdq(model, out):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    sys.path.insert(0, HERE)
    from ort_quantize import Reader

    quantize_static(model.path, out, Reader(model.calib), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul"], calibrate_method=CalibrationMethod.MinMax)


def ort_latencies(paths, feeds, repeat, make=session):
    """Medians in ms of every model, timed round after round in one process (`make` builds each
    session)."""
    sessions = [make(p) for p in paths]
    for s in sessions:
        s.run(None, feeds)
    times = [[] for _ in paths]
    for _ in range(repeat):
        for s, t in zip(sessions, times):
            start = time.perf_counter()
            s.run(None, feeds)
            t.append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times]


def profile(path, feeds, tmp, runs=5):
    """Per op type: (share of kernel time, node count), and per node its output element count."""
    s = session(path, profile=os.path.join(tmp, "prof"))
    for _ in range(runs):
        s.run(None, feeds)
    events = json.load(open(s.end_profiling()))
    time_by_type, nodes, elements = defaultdict(float), defaultdict(set), {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        op = e["args"].get("op_name", "?")
        node = e["name"][: -len("_kernel_time")]
        time_by_type[op] += e["dur"]
        nodes[op].add(node)
        shapes = e["args"].get("output_type_shape", [])
        size = 0
        for out in shapes:
            for dims in out.values():
                size = max(size, int(np.prod(dims)) if dims else 1)
        elements[node] = size
    total = sum(time_by_type.values())
    table = sorted(((op, t / total, len(nodes[op])) for op, t in time_by_type.items()), key=lambda r: -r[1])
    return table, elements


MATMUL = {"MatMulInteger", "ConvInteger", "MatMul", "Gemm", "Conv", "QLinearMatMul"}
REDUCE = {"ReduceSum", "ReduceMax", "ReduceMean", "ReduceMin"}
MOVEMENT = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Shape",
            "Constant", "Expand", "Flatten", "Identity"}


def block_counts(path, elements):
    """Ops of block 1: elementwise split into full-size (the block's largest tensors' order) and
    per-row (at most 1/8 of the largest elementwise output)."""
    m = onnx.load(path, load_external_data=False)
    pattern = re.compile(r"(blocks|layer|h|encoder\.layer|layers)[./_]1[./_]")
    nodes = [n for n in m.graph.node if pattern.search(n.name)]
    biggest = max([elements.get(n.name, 0) for n in nodes] + [1])
    c = Counter()
    for n in nodes:
        if n.op_type in MATMUL:
            c["matmul"] += 1
        elif n.op_type in REDUCE:
            c["reduce"] += 1
        elif n.op_type == "Gather" and n.input[0] in {i.name for i in m.graph.initializer}:
            c["table"] += 1
        elif n.op_type in MOVEMENT or n.op_type == "Gather":
            c["movement"] += 1
        elif elements.get(n.name, biggest) * 8 > biggest:
            c["full"] += 1
        else:
            c["row"] += 1
    return len(nodes), c


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--intone", default=os.path.join(ROOT, "target", "release", "intone"))
    parser.add_argument("--real", help="directory with the models of benches/realmodels/fetch.sh")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--only", help="regex: run only the models whose name matches")
    parser.add_argument("--baseline", help="another intone binary whose compiled models join the rounds")
    args = parser.parse_args()

    models = [digits(13), encoder("paraphrase-MiniLM-L3", os.path.join(SHARED, "paraphrase_minilm_l3_v2_opset17.onnx"), args.tokens)]
    if args.real:
        models.append(encoder("all-MiniLM-L6-v2", os.path.join(args.real, "all_minilm_l6_v2_opset17.onnx"), args.tokens))
        models.append(vit("DINOv2-S backbone", os.path.join(args.real, "dinov2s_imgfocus_backbone_224_opset17.onnx"), "pixel_values"))
    if args.only:
        models = [m for m in models if re.search(args.only, m.name)]

    print(f"CPU flags: {cpu_flags()}; onnxruntime {ort.__version__}, one thread; tract single-threaded; "
          f"batch 1; text at {args.tokens} tokens; median of {args.repeat} interleaved rounds\n")
    latency, ops, profiles = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            calib = []
            for name, value in model.calib.items():
                p = os.path.join(tmp, f"calib_{name}.npy")
                np.save(p, value)
                calib += ["--calibrate", f"{name}={p}"]
            feeds = []
            for name, value in model.feeds.items():
                p = os.path.join(tmp, f"feed_{name}.npy")
                np.save(p, value)
                feeds += ["--input", f"{name}={p}"]
            paths = {"float": model.path}
            for pipeline in PIPELINES:
                paths[pipeline] = os.path.join(tmp, f"{pipeline}.onnx")
                run([args.intone, "compile", model.path, "-o", paths[pipeline], "--pipeline", pipeline] + calib)
            if args.baseline:
                for pipeline in PIPELINES:
                    paths[f"{pipeline} (baseline)"] = os.path.join(tmp, f"{pipeline}_baseline.onnx")
                    run([args.baseline, "compile", model.path, "-o", paths[f"{pipeline} (baseline)"],
                         "--pipeline", pipeline] + calib)
            paths["ORT QDQ"] = os.path.join(tmp, "qdq.onnx")
            ort_qdq(model, paths["ORT QDQ"])
            names = list(paths)
            o = ort_latencies([paths[n] for n in names], model.feeds, args.repeat)
            t = json.loads(run([args.intone, "bench", *[paths[n] for n in names], *feeds,
                                "--repeat", str(args.repeat), "--json"]))
            t = [r["median_ms"] for r in t["models"]]
            latency.append((model.name, names, o, t))
            for n in names:
                table, elements = profile(paths[n], model.feeds, tmp)
                profiles.append((model.name, n, table))
                ops.append((model.name, n, *block_counts(paths[n], elements)))

    print("## Latency (ms; ×: float / model, above 1 is faster than float)\n")
    print("| model | engine | " + " | ".join(latency[0][1]) + " |")
    print("|---|---|" + "---|" * len(latency[0][1]))
    for name, names, o, t in latency:
        for engine, v in (("onnxruntime", o), ("tract", t)):
            cells = [f"{x:.3f}" if i == 0 else f"{x:.3f} ({v[0] / x:.2f}×)" for i, x in enumerate(v)]
            print(f"| {name} | {engine} | " + " | ".join(cells) + " |")
    print("\n## Ops of block 1 (full-size and per-row elementwise, from the profiled shapes)\n")
    print("| model | form | ops | full-size elementwise | per-row elementwise | reductions | table reads | matmuls | data movement |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, form, total, c in ops:
        print(f"| {name} | {form} | {total} | {c['full']} | {c['row']} | {c['reduce']} | {c['table']} | {c['matmul']} | {c['movement']} |")
    print("\n## onnxruntime profile: share of kernel time (nodes), top 8 op types\n")
    for name, form, table in profiles:
        cells = ", ".join(f"{op} {share * 100:.1f}% ({n})" for op, share, n in table[:8])
        print(f"- {name}, {form}: {cells}")


if __name__ == "__main__":
    main()
