"""What the text test adds to a picture's decode, ms a picture: JPEG draft decode at the model's size
(80 or 256 px) against >= 640 px (RGB, or greyscale only), the greyscale + LANCZOS resize to 640,
and the test itself at 640, 400 and 320 px (docs/BENCHMARKS.md "What a user gets").

    python bench/ocr_set.py /tmp/ocrset --per-kind 25 --photos 300
    python bench/text_gate_decode.py /tmp/ocrset/photos 100
"""
import glob
import io
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from indexer.media.text_gate import gate_size, screen_gray

paths = sorted(glob.glob(sys.argv[1] + "/*.jpg"))[:int(sys.argv[2]) if len(sys.argv) > 2 else 100]
datas = [open(p, "rb").read() for p in paths]

def dec(data, side, mode="RGB"):
    im = Image.open(io.BytesIO(data))
    s = min(1.0, side / max(im.size))
    im.draft(mode, (max(1, int(im.width * s)), max(1, int(im.height * s))))
    im = im.convert(mode)
    im.load()
    return im

def to_gate(im, side=640):
    """LANCZOS resize to the text test's size at `side` px."""
    return im.resize(gate_size(*im.size, side), Image.Resampling.LANCZOS)

def t(label, fn):
    fn(datas[0])
    st = time.perf_counter()
    out = [fn(d) for d in datas]
    print(f"{label:45s} {(time.perf_counter()-st)/len(datas)*1000:6.2f} ms")
    return out

def test(label, grays):
    st = time.perf_counter()
    r = [screen_gray(s) for s in grays]
    print(f"{label:45s} {(time.perf_counter()-st)/len(grays)*1000:6.2f} ms  pass {sum(x.has_text() for x in r)}")

t("decode RGB draft>=80", lambda d: dec(d, 80))
t("decode RGB draft>=80 + resize 80", lambda d: dec(d, 80).resize((80, 80), Image.Resampling.BICUBIC))
t("decode RGB draft>=640", lambda d: dec(d, 640))
t("decode L draft>=640", lambda d: dec(d, 640, "L"))
t("decode L draft>=640 + LANCZOS 640", lambda d: to_gate(dec(d, 640, "L")))
t("decode RGB>=640, L, LANCZOS 640", lambda d: to_gate(dec(d, 640).convert("L")))
small = t("decode L draft>=640 + LANCZOS 640 (keep)", lambda d: np.asarray(to_gate(dec(d, 640, "L"))))
test("test 640", small)
for side in (320, 400):
    sm = t(f"decode L draft>={side} + LANCZOS {side}", lambda d, side=side: np.asarray(to_gate(dec(d, side, "L"), side)))
    test("test " + str(side), sm)
