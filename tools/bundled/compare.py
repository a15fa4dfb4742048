"""Compare two bundled-model folders, and mixes of their weights, on every style's held-out concepts.

    python -m tools.bundled.compare --new /work/emoji-work/model --old /work/old_bundled \
        --pool /work/pool --alphas 1,0.7,0.5,0

A mix is WiSE-FT's: alpha * new + (1 - alpha) * old, tensor by tensor (the two must share an
architecture). Each is scored text->image on the pool's held-out concepts of each style
(`<pool>/heldout_STYLE.csv`: concepts no style was trained on) and on data/sample (the README's
pictures), and says where the README's demo query ranks its picture. One JSON line per alpha.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "sample"
DEMO_QUERY = "a rocket"


def mix(new: Path, old: Path, alpha: float, out: Path) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(new, out)
    for name in ("image.safetensors", "text.safetensors"):
        a, b = load_file(str(new / name)), load_file(str(old / name))
        save_file({key: (alpha * a[key].float() + (1 - alpha) * b[key].float()).to(a[key].dtype) for key in a},
                  str(out / name))
    manifest = json.loads((out / "mmsearch_model.json").read_text())
    manifest["fingerprint"] = hashlib.sha256(f"{manifest['fingerprint']}|mix {alpha}".encode()).hexdigest()
    (out / "mmsearch_model.json").write_text(json.dumps(manifest))
    return out


def score(model_dir: Path, pool: Path, demo: str) -> dict:
    from indexer.media.files import read_file
    from indexer.media.image import decode_image
    from retrieval.finetune.evaluate import evaluate_model
    from retrieval.finetune.pairs import read_pairs
    from retrieval.models.encoders import load_model

    model = load_model(str(model_dir), device="cpu")
    by_style = {}
    for path in sorted(pool.glob("heldout_*.csv")):
        metrics, _ = evaluate_model(model, read_pairs(path).pairs)
        by_style[path.stem.removeprefix("heldout_")] = round(metrics.text_to_image.r10, 3)
    sample, _ = evaluate_model(model, read_pairs(SAMPLE_DIR / "captions.csv").pairs)
    with (SAMPLE_DIR / "captions.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    names = [row["image"] for row in rows]
    pixels = np.stack([decode_image(read_file(str(SAMPLE_DIR / name)), model.preprocess).pixels for name in names])
    order = np.argsort(-(model.image.embed_pixels(pixels) @ model.text.embed_texts([demo])[0]))
    return {"heldout_mean_r10": round(float(np.mean(list(by_style.values()))), 3) if by_style else None,
            "sample_r1": round(sample.text_to_image.r1, 3), "sample_r10": round(sample.text_to_image.r10, 3),
            "demo_top3": [names[i] for i in order[:3]], "heldout_r10": by_style}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new", type=Path, required=True)
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--pool", type=Path, required=True, help="a recipe pool holding heldout_STYLE.csv files")
    parser.add_argument("--alphas", default="1,0", help="comma-separated weights of --new")
    parser.add_argument("--demo", default=DEMO_QUERY)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mms-mix-") as scratch:
        for alpha in (float(a) for a in args.alphas.split(",")):
            folder = mix(args.new, args.old, alpha, Path(scratch) / f"mix-{alpha}")
            print(json.dumps({"alpha": alpha, **score(folder, args.pool, args.demo)}), flush=True)
            shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
