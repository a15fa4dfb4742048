"""Measure a model on the per-style evaluation sets a make_pairs folder holds, one style at a time.

    python -m tools.bundled.evaluate_styles --model bundled --pairs /tmp/emoji-work/pairs [--json OUT]

`heldout_<style>.csv` (concepts never trained) and `all_<style>.csv` (every concept of a style used
for evaluation only) are each searched on their own: text -> image and image -> text among that
file's images. The recipe runs the same code after training; this runs it on any model (the
shipped one, a fine-tune) against the same images.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.bundled.evaluate_styles",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bundled", help="model name or folder (default: bundled)")
    parser.add_argument("--pairs", type=Path, action="append", required=True,
                        help="a make_pairs output folder; repeatable (the first holding a style's file wins)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from indexer.errors import MmsearchError
    from tools.bundled.recipe import evaluate_styles, left_out_summary, result_lines

    try:
        results = evaluate_styles(args.model, args.pairs)
    except MmsearchError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    for line in result_lines(results):
        print(line)
    summary = left_out_summary(results, tuple(results["all_concepts"]))
    print(f"all-concepts styles, text->image averages: {json.dumps(summary['average'])}")
    if args.json is not None:
        args.json.write_text(json.dumps({"model": args.model, **results, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
