"""Exports full-size ConvNets with random weights (no download) for benchmarking the compiler on
issue-11 architectures: torchvision resnet18, mobilenet_v3_large and efficientnet_b0 at 3x224x224,
and a U-Net (fixtures/gen/models.py UNet, 4 levels, widths 32/64/128/256, 2 output channels) at
3x128x128, each at opsets 13 and 17, with calibration and evaluation inputs.

Weights are made like the tiny ConvNet fixtures (fixtures/gen/common.py reinit_cnn_): Conv/Linear
N(0, 1/fan_in), BatchNorm scale 1+N(0,0.25^2) and shift N(0,0.1^2), and BatchNorm running
statistics measured on image-like inputs (float64, only the BatchNorm layers in training mode) and
then perturbed per channel, so they are far from 0/1 but keep the activations normalized. Exported
with torch.onnx.export(dynamo=False, training=TrainingMode.PRESERVE) (model in eval mode), so every
BatchNorm stays a BatchNormalization node; dynamic batch.

Writes to OUT_DIR (default <repo>/target/cnn):
  <name>_opset13.onnx, <name>_opset17.onnx
  <name>.calib.pixels.npy   16 images (common.smooth_images, ImageNet-normalized)
  <name>.eval.pixels.npy     8 other images
  <name>.eval.logits.npy     onnxruntime float output of <name>_opset17.onnx on the eval images
  summary.json               per file: size, nodes, op histogram, BatchNormalization count,
                             max |onnxruntime - torch| on the eval images
Usage: python export_full.py [OUT_DIR] [--models resnet18,mobilenet_v3_large,efficientnet_b0,unet]
       (torch environment of ../shared/tools/torch-env.sh; benches/cnn/export_full.sh runs it)
"""
import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

sys.dont_write_bytecode = True  # keep fixtures/gen/ free of __pycache__
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "fixtures" / "gen"))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

import common  # noqa: E402  (fixtures/gen/common.py)
import models  # noqa: E402  (fixtures/gen/models.py)

OPSETS = (13, 17)
STATS_IMAGES = 32  # images whose batch statistics become the BatchNorm running statistics


def build(name):
    """(model, image size, output name) with deterministic random weights."""
    tv = torchvision.models
    if name == "resnet18":
        torch.manual_seed(20)
        m, img, out, seed = tv.resnet18(num_classes=1000), 224, "logits", 120
    elif name == "mobilenet_v3_large":
        torch.manual_seed(21)
        m, img, out, seed = tv.mobilenet_v3_large(num_classes=1000), 224, "logits", 121
    elif name == "mobilenet_v3_small":
        torch.manual_seed(22)
        m, img, out, seed = tv.mobilenet_v3_small(num_classes=1000), 224, "logits", 122
    elif name == "efficientnet_b0":
        torch.manual_seed(23)
        m, img, out, seed = tv.efficientnet_b0(num_classes=1000), 224, "logits", 123
    elif name == "unet":
        torch.manual_seed(24)
        m, img, out, seed = models.UNet(3, 2, (32, 64, 128, 256)), 128, "logits", 124
    else:
        raise SystemExit(f"unknown model {name}")
    common.reinit_cnn_(m, seed, common.smooth_images(seed + 1000, STATS_IMAGES, 3, img))
    return m.eval(), img, out, seed


def export(model, path, opset, example, out_name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=["pixels"], output_names=[out_name],
                          dynamic_axes={"pixels": {0: "batch"}, out_name: {0: "batch"}},
                          do_constant_folding=True, training=torch.onnx.TrainingMode.PRESERVE)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(ROOT / "target" / "cnn"))
    ap.add_argument("--models", default="resnet18,mobilenet_v3_large,efficientnet_b0,unet")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for name in args.models.split(","):
        t0 = time.time()
        model, img, out_name, seed = build(name)
        calib = common.smooth_images(seed + 2000, 16, 3, img)
        evalx = common.smooth_images(seed + 3000, 8, 3, img)
        np.save(out / f"{name}.calib.pixels.npy", calib)
        np.save(out / f"{name}.eval.pixels.npy", evalx)
        with torch.no_grad():
            ref = model(torch.from_numpy(evalx)).numpy()
        for op in OPSETS:
            path = out / f"{name}_opset{op}.onnx"
            export(model, path, op, torch.from_numpy(evalx[:1]), out_name)
            onnx.checker.check_model(str(path), full_check=True)
            sess = common.ort_session(path)
            got = sess.run(None, {"pixels": evalx})[0]
            err = float(np.max(np.abs(got - ref)) / (1.0 + np.max(np.abs(ref))))
            if not np.all(np.isfinite(got)) or err > 1e-3:
                raise SystemExit(f"{path}: onnxruntime differs from torch (scaled max err {err:.3g})")
            if op == OPSETS[-1]:
                np.save(out / f"{name}.eval.{out_name}.npy", got)
            m = onnx.load(str(path), load_external_data=False)
            hist = common.op_hist(m)
            summary[path.name] = {
                "size_bytes": path.stat().st_size, "nodes": len(m.graph.node), "input": [
                    "pixels", "float32", ["batch", 3, img, img]], "output": out_name,
                "params": sum(p.numel() for p in model.parameters()),
                "batchnorm_nodes": hist.get("BatchNormalization", 0), "op_histogram": hist,
                "attribute_forms": common.attr_forms(m), "max_err_vs_torch": float(f"{err:.3g}"),
                "output_std": float(ref.std()),
                "calibration": f"{name}.calib.pixels.npy", "eval": f"{name}.eval.pixels.npy",
            }
            print(f"{path.name}: {path.stat().st_size / 2**20:.1f} MiB, {len(m.graph.node)} nodes, "
                  f"BatchNormalization x{hist.get('BatchNormalization', 0)}, err vs torch {err:.2g}; "
                  + " ".join(f"{k}x{v}" for k, v in hist.items()), flush=True)
        print(f"  {name}: {time.time() - t0:.0f} s", flush=True)
        summary_path.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
