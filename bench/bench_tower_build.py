"""A checkpoint's towers loaded with and without their random start drawn first
(retrieval.models.skip_init), rounds interleaved in one process, medians: seconds to build and load
both towers (docs/BENCHMARKS.md "Towers built without their random start").

    HF_HUB_OFFLINE=1 python /work/shared/bench/fake_hub.py --hf-cache /tmp/perf-hf --rclip-datadir /tmp/perf-rclip
    HF_HUB_OFFLINE=1 HF_HUB_CACHE=/tmp/perf-hf python bench/bench_tower_build.py --model ViT-B-32-256:datacomp_s34b_b86k
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import retrieval.models.towers as towers
from retrieval.models.registry import describe_model, resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32-256:datacomp_s34b_b86k")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    card = describe_model(resolve_model(args.model))
    real_build = towers.build_tower

    def drawn(card, which, *, hf_pretrained=False, weights_follow=False):
        return real_build(card, which, hf_pretrained=hf_pretrained)  # the random start drawn, as before

    spent: dict[str, list[float]] = {"random start drawn": [], "random start skipped": []}
    towers._load_open_clip_tower(card, towers.IMAGE)  # warm: the checkpoint in the page cache, imports done
    for _ in range(args.rounds):
        for label, build in (("random start drawn", drawn), ("random start skipped", real_build)):
            towers.build_tower = build
            started = time.perf_counter()
            for which in (towers.IMAGE, towers.TEXT):
                towers._load_open_clip_tower(card, which)
            spent[label].append(time.perf_counter() - started)
    towers.build_tower = real_build
    for label, seconds in spent.items():
        print(f"{label:22s} {statistics.median(seconds):.3f} s (runs {', '.join(f'{s:.2f}' for s in seconds)})")
    drawn_s, skipped_s = (statistics.median(seconds) for seconds in spent.values())
    print(f"saved {drawn_s - skipped_s:.3f} s of {drawn_s:.3f} s per load of both towers ({args.model})")


if __name__ == "__main__":
    main()
