"""A cascade tried for the text test and not kept (docs/BENCHMARKS.md "What a user gets"): the test
at S1 px first, asking for a line of NEED marks, then the full test at 640 px, against the test as
it ships, ms a photo (and how many pass), on photos without text; `base` is the model's decode alone.

    python bench/text_gate_cascade.py MODEL_SIDE S1 NEED [PHOTOS]     # e.g. 256 400 3 /tmp/ocrset/photos
"""
import glob
import io
import sys
import time

from gate_pixels import chains, gray_at, is_line
from gate_pixels import draft_decode as draft
from PIL import Image

import indexer.media.text_gate as tg


def longest(gray):
    best = 0
    for group, mask, pixels in chains(gray):
        if len(group) > best and is_line(group, mask, pixels):
            best = len(group)
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
