"""Runs a model in onnxruntime (CPU, 1 thread) and saves every output as .npy.

Usage: python run_ort.py MODEL OUT_DIR NAME=FILE.npy ...
Prints the output names, one per line.
"""
import os
import sys

import numpy as np
import onnxruntime as ort

model, out_dir, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
inputs = {}
for spec in specs:
    name, path = spec.split("=", 1)
    inputs[name] = np.load(path)
options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
names = [o.name for o in session.get_outputs()]
os.makedirs(out_dir, exist_ok=True)
for name, value in zip(names, session.run(names, inputs)):
    safe = "".join(c if c.isalnum() or c in ".-_" else "_" for c in name)
    np.save(os.path.join(out_dir, safe + ".npy"), value)
    print(name)
