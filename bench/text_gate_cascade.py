"""A cascade tried for the text test and not kept (docs/BENCHMARKS.md "What a user gets"): the test
at S1 px first, asking for a line of NEED marks, then the full test at 640 px, against the test as
it ships, ms a photo (and how many pass), on photos without text; `base` is the model's decode alone.

    python bench/text_gate_cascade.py MODEL_SIDE S1 NEED [PHOTOS]     # e.g. 256 400 3 /tmp/ocrset/photos
"""
import glob
import io
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import indexer.media.text_gate as tg


def draft(data, side):
    im = Image.open(io.BytesIO(data))
    if im.format == "JPEG":
        s = min(1.0, side / max(im.size))
        im.draft("RGB", (max(1, int(im.width * s)), max(1, int(im.height * s))))
    return im.convert("RGB")

def gray_at(im, side):
    g = im.convert("L")
    size = tg.gate_size(*g.size, side)
    if size != g.size:
        g = g.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(g)

def longest(gray):
    h, w = gray.shape
    g = gray.astype(np.float32)
    mean = tg._local_mean(g, max(6, max(h, w) // 48))
    best = 0
    for _light, mask in enumerate((g < mean - tg.CONTRAST, g > mean + tg.CONTRAST)):
        marks = tg._marks(mask, max(8, h // 3))
        for m in tg._chains(marks):
            if len(m) > best and tg._looks_like_a_line(g, mask, marks[m]):
                best = len(m)
    return best

model_side = int(sys.argv[1])
s1 = int(sys.argv[2])
need = int(sys.argv[3])
paths = sorted(glob.glob((sys.argv[4] if len(sys.argv) > 4 else "/tmp/ocrset/photos") + "/*.jpg"))[:150]
datas = [open(p, "rb").read() for p in paths]

def base(d):
    draft(d, model_side).load()

def current(d):
    return tg.screen_gray(gray_at(draft(d, max(model_side, 640)), 640)).has_text()

def cascade(d):
    im = draft(d, max(model_side, s1))
    if longest(gray_at(im, s1)) < need:
        return False
    big = im if max(im.size) >= 640 or max(Image.open(io.BytesIO(d)).size) <= max(im.size) else draft(d, 640)
    return tg.screen_gray(gray_at(big, 640)).has_text()

for label, fn in (("base", base), ("current", current), ("cascade", cascade)) * 2:
    st = time.perf_counter()
    r = [fn(d) for d in datas]
    print(f"{label:8s} {(time.perf_counter()-st)/len(datas)*1000:6.2f} ms", sum(bool(x) for x in r) if label != "base" else "")
