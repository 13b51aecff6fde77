"""Materialises the ONNX backend node-test suite shipped (as generators) in the onnx package.

Usage: python node_tests.py OUT_DIR
Writes OUT_DIR/<test name>/model.onnx and test_data_set_<i>/{input,output}_<j>.pb, like the
data/node folder of an onnx source checkout. Prints the number of cases.
"""
import os
import sys
import warnings

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.test.case import node as node_cases


def to_proto(value, name, type_proto):
    if isinstance(value, onnx.TensorProto):
        return value
    if type_proto.HasField("sequence_type"):
        return numpy_helper.from_list(value, name)
    if type_proto.HasField("optional_type"):
        return numpy_helper.from_optional(value, name)
    if type_proto.HasField("map_type"):
        return numpy_helper.from_dict(value, name)
    return numpy_helper.from_array(np.asarray(value), name)


def main(out):
    warnings.simplefilter("ignore")
    np.seterr(all="ignore")
    cases = node_cases.collect_testcases()
    for case in cases:
        case_dir = os.path.join(out, case.name)
        os.makedirs(case_dir, exist_ok=True)
        with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        graph = case.model.graph
        for i, (inputs, outputs) in enumerate(case.data_sets or []):
            data_dir = os.path.join(case_dir, f"test_data_set_{i}")
            os.makedirs(data_dir, exist_ok=True)
            for kind, values, decls in (("input", inputs, graph.input), ("output", outputs, graph.output)):
                for j, value in enumerate(values):
                    decl = decls[j] if j < len(decls) else None
                    name = decl.name if decl is not None else f"{kind}_{j}"
                    proto = to_proto(value, name, decl.type if decl is not None else onnx.TypeProto())
                    with open(os.path.join(data_dir, f"{kind}_{j}.pb"), "wb") as f:
                        f.write(proto.SerializeToString())
    print(len(cases))


if __name__ == "__main__":
    main(sys.argv[1])
