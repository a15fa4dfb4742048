"""The text test's longest line at a smaller size, per kind (receipt, screenshot, slide, sign, photo):
how many of each a cascade's first step would pass with a line of 3, 4, 5 or 8 marks at SIDE px
(docs/BENCHMARKS.md "What a user gets").

    python bench/text_gate_lines.py SIDE FOLDER...   # e.g. 400 /tmp/ocrset/text /tmp/ocrset2/text /tmp/ocrset/photos
"""
import glob
import io
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import indexer.media.text_gate as tg


def dec(data, side, mode="L"):
    im = Image.open(io.BytesIO(data))
    s = min(1.0, side / max(im.size))
    im.draft(mode, (max(1, int(im.width * s)), max(1, int(im.height * s))))
    im = im.convert(mode)
    size = tg.gate_size(*im.size, side)
    if size != im.size:
        im = im.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(im)

def stats(gray):
    h, w = gray.shape
    g = gray.astype(np.float32)
    mean = tg._local_mean(g, max(6, max(h, w) // 48))
    raw = []  # chain lengths (raw)
    lines = []  # and those that look like lines
    for _light, mask in enumerate((g < mean - tg.CONTRAST, g > mean + tg.CONTRAST)):
        marks = tg._marks(mask, max(8, h // 3))
        for m in tg._chains(marks):
            grp = marks[m]
            raw.append(len(grp))
            if tg._looks_like_a_line(g, mask, grp):
                lines.append(len(grp))
    return max(raw, default=0), max(lines, default=0), sum(lines)

def share(col, at_least):
    return (col >= at_least).mean().round(3)

side = int(sys.argv[1])
for folder in sys.argv[2:]:
    paths = sorted(glob.glob(folder + "/*.jpg") + glob.glob(folder + "/*.png"))
    res = {}
    st = time.perf_counter()
    for p in paths:
        kind = p.split("/")[-1].split("-")[0]
        res.setdefault(kind, []).append(stats(dec(open(p, "rb").read(), side)))
    el = (time.perf_counter() - st) / len(paths) * 1000
    for kind, r in res.items():
        r = np.array(r)
        print(side, kind, f"{el:.1f}ms",
              "rawmax pct0/10/50:", np.percentile(r[:, 0], [0, 10, 50]).round(),
              "linemax pct0/10/50:", np.percentile(r[:, 1], [0, 10, 50]).round(),
              "line>=8:", share(r[:, 1], 8), "line>=5:", share(r[:, 1], 5),
              "line>=4", share(r[:, 1], 4), "line>=3", share(r[:, 1], 3))
