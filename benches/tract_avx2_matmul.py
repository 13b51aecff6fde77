"""Minimal reproduction of tract-linalg 0.23.9's slow integer matmul on x86_64 without VNNI.

Writes one `MatMulInteger` ([257,384] u8, zero point 128, × [384,1536] int8 weights in ±64, the
shape of a DINOv2-S MLP layer) and the f32 `MatMul` of the same shape, then times both with
`intone bench` three ways: this CPU as detected, and with tract's own `TRACT_CPU_ISA` knob taking
the AVX-512 and VNNI features away (tract then serves int8 with `avx2_mmm_i32_8x8`), once with
the runner's exact f32 form of the integer matmul and once without it.

Usage: benches/tract_avx2_matmul.sh   (prints the CPU flags and the three tables)
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto as T, helper as h, numpy_helper as nh

AVX2_ONLY = "-avx512f,-avx512vnni,-avxvnni,-amx-int8,-avx512fp16,-amx-bf16"


def save(path, nodes, inputs, output, inits):
    g = h.make_graph(nodes, "repro", inputs, [output], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)


def main():
    intone = sys.argv[1]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        f32, int8 = os.path.join(tmp, "matmul_f32.onnx"), os.path.join(tmp, "matmul_integer_u8s8.onnx")
        save(f32, [h.make_node("MatMul", ["x", "w"], ["y"])],
             [h.make_tensor_value_info("x", T.FLOAT, [257, 384])],
             h.make_tensor_value_info("y", T.FLOAT, [257, 1536]),
             [nh.from_array(rng.normal(size=(384, 1536)).astype(np.float32), "w")])
        save(int8, [h.make_node("MatMulInteger", ["x", "w", "x_zero"], ["y"])],
             [h.make_tensor_value_info("x", T.UINT8, [257, 384])],
             h.make_tensor_value_info("y", T.INT32, [257, 1536]),
             [nh.from_array(rng.integers(-64, 65, size=(384, 1536)).astype(np.int8), "w"),
              nh.from_array(np.array(128, np.uint8), "x_zero")])
        xf, xq = os.path.join(tmp, "xf.npy"), os.path.join(tmp, "xq.npy")
        np.save(xf, rng.normal(size=(257, 384)).astype(np.float32))
        np.save(xq, rng.integers(0, 256, size=(257, 384)).astype(np.uint8))
        for title, env in [("this CPU", {}),
                           (f"TRACT_CPU_ISA={AVX2_ONLY}, runner's exact f32 form", {"TRACT_CPU_ISA": AVX2_ONLY}),
                           (f"TRACT_CPU_ISA={AVX2_ONLY}, tract's integer kernel", {"TRACT_CPU_ISA": AVX2_ONLY, "INTONE_TRACT_INTEGER_MATMUL": "native"})]:
            print(f"## {title}")
            for model, x, repeat in [(f32, xf, 20), (int8, xq, 3 if "native" in env.values() else 20)]:
                out = subprocess.run([intone, "bench", model, "--input", f"x={x}", "--repeat", str(repeat)],
                                     env={**os.environ, **env}, capture_output=True, text=True, check=True)
                print(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
