"""Opening a CLIP text export's tokenizer for one query: its SQLite tables (retrieval.models.clip_bpe) against
the tokenizers file, each in a fresh process (imports included), rounds interleaved; and the tables'
worst query, one word of 2,000 letters (a query's cap), in process. Prints medians in ms as JSON.

    .venv/bin/python bench/bench_clip_bpe.py INDEX/text_encoder --rounds 9
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBES = {
    "sqlite tables (ClipBpe)": "from retrieval.models.clip_bpe import ClipBpe; "
                               "ids = ClipBpe(FOLDER / 'tokenizer.sqlite').encode('a cat')",
    "tokenizers file": "from tokenizers import Tokenizer; "
                       "ids = Tokenizer.from_file(str(FOLDER / 'tokenizer.json')).encode('a cat', add_special_tokens=False).ids",
}
TEMPLATE = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
FOLDER = Path({folder!r})
started = time.perf_counter()
{probe}
print((time.perf_counter() - started) * 1000, ids)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a CLIP text export (an index's text_encoder/)")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in PROBES}
    answers = {}
    for _ in range(args.rounds):
        for name, probe in PROBES.items():
            code = TEMPLATE.format(root=str(ROOT), folder=str(args.folder.absolute()), probe=probe)
            out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split(" ", 1)
            times[name].append(float(out[0]))
            answers[name] = out[1].strip()
    sys.path.insert(0, str(ROOT))
    import random

    from retrieval.models.clip_bpe import ClipBpe

    bpe = ClipBpe(args.folder / "tokenizer.sqlite")
    letters = random.Random(0)
    word = "".join(letters.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(2000))  # random: few long merges
    started = time.perf_counter()
    bpe.encode(word)
    worst = (time.perf_counter() - started) * 1000
    medians = {name: round(statistics.median(values), 1) for name, values in times.items()}
    print(json.dumps({"open_and_encode_a_cat_ms": medians, "same_ids": len(set(answers.values())) == 1,
                      "one_2000_letter_word_ms": round(worst, 1)}, indent=1))


if __name__ == "__main__":
    main()
