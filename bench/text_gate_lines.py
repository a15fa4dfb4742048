"""The text test's longest line at a smaller size, per kind (receipt, screenshot, slide, sign, photo):
how many of each a cascade's first step would pass with a line of 3, 4, 5 or 8 marks at SIDE px
(docs/BENCHMARKS.md "What a user gets").

    python bench/text_gate_lines.py SIDE FOLDER...   # e.g. 400 /tmp/ocrset/text /tmp/ocrset2/text /tmp/ocrset/photos
"""
import glob
import sys
import time

import numpy as np
from gate_pixels import chains, draft_decode, gray_at, is_line


def dec(data, side):
    return gray_at(draft_decode(data, side, "L"), side)

def stats(gray):
    raw = []  # chain lengths (raw)
    lines = []  # and those that look like lines
    for group, mask, pixels in chains(gray):
        raw.append(len(group))
        if is_line(group, mask, pixels):
            lines.append(len(group))
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
