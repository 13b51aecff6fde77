"""ONNX checker oracle: onnx.checker.check_model(full_check=True) on each path read from stdin.

Prints "OK path" or "FAIL path: reason" per model, then "checked N, M failed"; exit 1 if any failed.
"""
import sys

import onnx

failed = checked = 0
for line in sys.stdin:
    path = line.strip()
    if not path:
        continue
    checked += 1
    try:
        onnx.checker.check_model(path, full_check=True)
        print(f"OK {path}")
    except Exception as e:  # noqa: BLE001 - any checker complaint is a failure
        failed += 1
        print(f"FAIL {path}: {str(e).splitlines()[0]}")
print(f"checked {checked}, {failed} failed")
sys.exit(1 if failed else 0)
