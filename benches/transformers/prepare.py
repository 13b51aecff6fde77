"""Prepares issue 13's evaluation data (fetch.sh).

DINOv2-S (224×224, ImageNet normalization, shorter side resized to 256 then center-cropped):
evaluation on six photos (astronaut, chelsea, coffee, rocket, motorcycle_left, retina),
calibration on 16 crops (seeded positions and scales, flipped half the time) of four other color
images of the same wheel, so no evaluated pixel is calibrated on.
all-MiniLM-L6-v2: evaluation on the 49 Lee documents (gensim's lee.cor), WordPiece with the
model's own tokenizer.json, truncated at 128 tokens and padded; calibration stays the WordSim-353
words of ../shared/models/data (short inputs, as a user's small calibration set would be).

Usage: python prepare.py EXTRACTED TOKENIZER.json OUT
"""
import os
import sys

import numpy as np
from PIL import Image

EVAL = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg"]
CALIB = ["motorcycle_right.png", "hubble_deep_field.jpg", "ihc.png", "color.png"]
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)


def normalized(im):
    x = np.asarray(im.convert("RGB"), np.float32).transpose(2, 0, 1) / 255.0
    return (x - MEAN) / STD


def center(path):
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = 256 / min(w, h)
    im = im.resize((max(224, round(w * s)), max(224, round(h * s))), Image.BICUBIC)
    w, h = im.size
    left, top = (w - 224) // 2, (h - 224) // 2
    return normalized(im.crop((left, top, left + 224, top + 224)))


def crops(paths, n, rng):
    out = []
    for i in range(n):
        im = Image.open(paths[i % len(paths)]).convert("RGB")
        w, h = im.size
        side = int(min(w, h) * rng.uniform(0.35, 1.0))
        left, top = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
        im = im.crop((left, top, left + side, top + side)).resize((224, 224), Image.BICUBIC)
        if rng.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(normalized(im))
    return np.stack(out)


def main():
    src, tokenizer_path, out = sys.argv[1:4]
    os.makedirs(out, exist_ok=True)
    data = os.path.join(src, "skimage", "data")
    calib_paths = [os.path.join(data, f) for f in CALIB]
    np.save(os.path.join(out, "dinov2_eval.npy"), np.stack([center(os.path.join(data, f)) for f in EVAL]))
    np.save(os.path.join(out, "dinov2_calib.npy"), crops(calib_paths, 16, np.random.default_rng(0)))

    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tokenizer_path)
    tok.enable_truncation(128)
    tok.enable_padding(length=128)
    docs = [l.strip() for l in open(os.path.join(src, "gensim", "test", "test_data", "lee.cor"), encoding="latin-1") if l.strip()]
    enc = tok.encode_batch(docs)
    ids = np.array([e.ids for e in enc], np.int64)
    mask = np.array([e.attention_mask for e in enc], np.int64)
    np.save(os.path.join(out, "lee_input_ids.npy"), ids)
    np.save(os.path.join(out, "lee_attention_mask.npy"), mask)
    print(f"{len(EVAL)} photos, {len(calib_paths)} calibration images -> 16 crops; {len(docs)} documents, "
          f"{mask.sum(1).mean():.0f} tokens on average")


if __name__ == "__main__":
    main()
