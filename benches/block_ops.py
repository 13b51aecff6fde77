"""Op counts per transformer block of compiled models: `benches/block_ops.sh MODEL.onnx...`.

A block is recognised by its exporter's name prefix (`blocks.N`, `layer.N`, `h.N`); the
table shows block 1 (a block with no embedding or head ops), split into elementwise ops
(what tract runs as scalar loops), reductions, table reads, matmuls and data movement.
"""
import re
import sys
from collections import Counter

import onnx

KINDS = {
    "matmul": {"MatMulInteger", "ConvInteger", "MatMul", "Gemm", "Conv"},
    "reduce": {"ReduceSum", "ReduceMax", "ReduceMean", "ReduceMin"},
    "table": {"Gather"},
    "movement": {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice",
                 "Shape", "Constant", "Expand", "Flatten", "Identity"},
}


def kind(op):
    for k, ops in KINDS.items():
        if op in ops:
            return k
    return "elementwise"


def main():
    print("| model | ops in block 1 | elementwise | reductions | table reads | matmuls | data movement | float ops in block |")
    print("|---|---|---|---|---|---|---|---|")
    for path in sys.argv[1:]:
        m = onnx.load(path, load_external_data=False)
        pattern = re.compile(r"(blocks|layer|h)\.1/")
        nodes = [n for n in m.graph.node if pattern.search(n.name)]
        counts = Counter(kind(n.op_type) for n in nodes)
        floats = sum(1 for n in nodes if n.op_type in {"Softmax", "Erf", "Gelu", "LayerNormalization",
                                                     "DequantizeLinear", "QuantizeLinear", "Round",
                                                     "Sqrt", "Exp", "Tanh", "MatMul", "Gemm"})
        print(f"| {path.split('/')[-1]} | {len(nodes)} | {counts['elementwise']} | {counts['reduce']} | "
              f"{counts['table']} | {counts['matmul']} | {counts['movement']} | {floats} |")


if __name__ == "__main__":
    main()
