"""What the text test adds to a picture's decode, ms a picture: JPEG draft decode at the model's size
(80 or 256 px) against >= 640 px (RGB, or greyscale only), the greyscale + LANCZOS resize to 640,
and the test itself at 640, 400 and 320 px (docs/BENCHMARKS.md "What a user gets").

    python bench/ocr_set.py /tmp/ocrset --per-kind 25 --photos 300
    python bench/text_gate_decode.py /tmp/ocrset/photos 100
"""
import glob
import sys
import time

from gate_pixels import draft_decode as dec
from gate_pixels import gray_at
from PIL import Image

from indexer.media.text_gate import screen_gray

paths = sorted(glob.glob(sys.argv[1] + "/*.jpg"))[:int(sys.argv[2]) if len(sys.argv) > 2 else 100]
datas = [open(p, "rb").read() for p in paths]

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
t("decode L draft>=640 + LANCZOS 640", lambda d: gray_at(dec(d, 640, "L")))
t("decode RGB>=640, L, LANCZOS 640", lambda d: gray_at(dec(d, 640)))
small = t("decode L draft>=640 + LANCZOS 640 (keep)", lambda d: gray_at(dec(d, 640, "L")))
test("test 640", small)
for side in (320, 400):
    sm = t(f"decode L draft>={side} + LANCZOS {side}", lambda d, side=side: gray_at(dec(d, side, "L"), side))
    test("test " + str(side), sm)
