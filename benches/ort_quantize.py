"""onnxruntime's own static quantizer on the same calibration data intone uses:
quantize_static(QDQ, per-channel, MinMax), feeding the samples in batches of 32 (the last one
smaller: every sample, as intone observes them).

Usage: python ort_quantize.py MODEL OUT CALIB.npz [BATCH]   (default 32, intone's default)
"""
import sys

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static


class Reader(CalibrationDataReader):
    def __init__(self, data, batch=32):
        n = len(next(iter(data.values())))
        self.batches = iter([{k: v[i:i + batch] for k, v in data.items()} for i in range(0, n, batch)])

    def get_next(self):
        return next(self.batches, None)


if __name__ == "__main__":
    model, out, calib = sys.argv[1:4]
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 32
    data = dict(np.load(calib))
    quantize_static(model, out, Reader(data, batch), quant_format=QuantFormat.QDQ, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax)
