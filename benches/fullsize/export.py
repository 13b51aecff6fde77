"""Exports full-size transformers with random weights (no download): ViT-S/16, DeiT-T and Swin-T at
224x224 (timm), and GPT-2 (transformers, 12 layers, a 4096-token vocabulary), at opset 17, with
calibration and test inputs. Random weights give large activations: a stress test of ranges.
Usage: python export.py OUT_DIR   (torch environment of ../shared/tools/torch-env.sh)"""
import os
import sys

import numpy as np
import timm
import torch
import transformers

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
rng = np.random.default_rng(0)


def export(name, model, example, input_names, output_names, dynamic):
    path = os.path.join(out, f"{name}.onnx")
    model.eval()
    with torch.no_grad():
        torch.onnx.export(model, example, path, opset_version=17, dynamo=False,
                          input_names=input_names, output_names=output_names, dynamic_axes=dynamic)
    print("wrote", path)


for name, arch in [("vit_s16_224", "vit_small_patch16_224"), ("deit_t_224", "deit_tiny_patch16_224"),
                   ("swin_t_224", "swin_tiny_patch4_window7_224")]:
    model = timm.create_model(arch, pretrained=False)
    export(name, model, torch.zeros(1, 3, 224, 224), ["pixels"], ["logits"],
           {"pixels": {0: "batch"}, "logits": {0: "batch"}})
    x = rng.normal(size=(6, 3, 224, 224)).astype(np.float32)
    np.save(os.path.join(out, f"{name}.calib.pixels.npy"), x[:4])
    np.save(os.path.join(out, f"{name}.test.pixels.npy"), x[4:])


class Gpt2Logits(torch.nn.Module):
    def __init__(self):
        super().__init__()
        config = transformers.GPT2Config(vocab_size=4096, n_positions=128, use_cache=False)
        self.model = transformers.GPT2LMHeadModel._from_config(config, attn_implementation="eager")

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


ids = rng.integers(0, 4096, size=(6, 32)).astype(np.int64)
mask = np.ones_like(ids)
export("gpt2_v4096", Gpt2Logits(), (torch.from_numpy(ids[:1]), torch.from_numpy(mask[:1])),
       ["input_ids", "attention_mask"], ["logits"],
       {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
        "logits": {0: "batch", 1: "sequence"}})
for part, rows in [("calib", slice(0, 4)), ("test", slice(4, 6))]:
    np.save(os.path.join(out, f"gpt2_v4096.{part}.input_ids.npy"), ids[rows])
    np.save(os.path.join(out, f"gpt2_v4096.{part}.attention_mask.npy"), mask[rows])
