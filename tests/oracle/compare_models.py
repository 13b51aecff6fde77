"""Independent oracle for lossless round trips: compares model pairs with the official onnx
protobuf classes (not intone's schema), so a field intone's schema lacked would show up.

Usage: python compare_models.py < pairs.tsv   (each line: ORIGINAL<TAB>COPY)
Prints one line per pair that differs, then "checked N pairs, M differ". Exit 1 if any differ.
"""
import sys

import onnx


def load(path):
    with open(path, "rb") as f:
        model = onnx.ModelProto()
        model.ParseFromString(f.read())
    return model


def main():
    checked = differ = 0
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line:
            continue
        original, copy = line.split("\t")
        a, b = load(original), load(copy)
        checked += 1
        # Unknown fields would be lost by any schema that does not know them.
        if a != b or a.SerializeToString(deterministic=True) != b.SerializeToString(deterministic=True):
            differ += 1
            print(f"DIFFER {original}")
    print(f"checked {checked} pairs, {differ} differ")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
