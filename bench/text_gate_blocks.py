"""Block statistics at a small size as a first text test, tried and not kept (docs/BENCHMARKS.md
"What a user gets"): blocks with an even ground (30-70th percentile within 10 grey levels) and dark
or light marks (3rd or 97th percentile 40 away), counted and their longest horizontal run, per kind.

    python bench/text_gate_blocks.py 256 8 /tmp/ocrset/text /tmp/ocrset2/text /tmp/ocrset/photos
"""
import glob
import sys
import time

import numpy as np
from gate_pixels import draft_decode, gray_at
from PIL import Image


def gray(data, side):
    return gray_at(draft_decode(data, side), side, Image.Resampling.BILINEAR)

B = int(sys.argv[2])
SIDE = int(sys.argv[1])

def feats(g):
    h, w = g.shape
    hb, wb = h // B, w // B
    blocks = g[:hb * B, :wb * B].reshape(hb, B, wb, B).transpose(0, 2, 1, 3).reshape(hb, wb, B * B)
    q = np.percentile(blocks, [3, 30, 70, 97], axis=2)  # (4, hb, wb)
    even = q[2] - q[1]
    ink = np.maximum(q[1] - q[0], q[3] - q[2])
    ok = (even <= 10) & (ink >= 40)
    # longest horizontal run of ok blocks
    best = 0
    cur = np.zeros(hb, int)
    for x in range(wb):
        cur = np.where(ok[:, x], cur + 1, 0)
        best = max(best, int(cur.max(initial=0)))
    return int(ok.sum()), best

def share(col, at_least):
    return (col >= at_least).mean().round(3)

for folder in sys.argv[3:]:
    paths = sorted(glob.glob(folder + "/*.jpg") + glob.glob(folder + "/*.png"))
    res = {}
    st = time.perf_counter()
    for p in paths:
        res.setdefault(p.split("/")[-1].split("-")[0], []).append(feats(gray(open(p, "rb").read(), SIDE)))
    el = (time.perf_counter() - st) / len(paths) * 1000
    for k, r in res.items():
        r = np.array(r)
        print(SIDE, B, k, f"{el:.1f}ms",
              "count p0/10/50", np.percentile(r[:, 0], [0, 10, 50]),
              "run p0/10/50", np.percentile(r[:, 1], [0, 10, 50]),
              "run>=2", share(r[:, 1], 2), "run>=3", share(r[:, 1], 3), "cnt>=3", share(r[:, 0], 3))
