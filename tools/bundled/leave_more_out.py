"""Leave one more style family out, training on an earlier leave-out run's render (no new drawing).

    python -m tools.bundled.leave_more_out --from /work/runs/w_mild --work /work/runs/x_emojione \\
        --leave-out emojione --init /work/old_bundled --epochs 5 --lr 1e-3 --eval-dir /work/evalpool

Rendering a fresh pool of every style takes longer than training on a shared 2-core CPU, so this
reuses the pairs of a finished `recipe --leave-out A` run (`--from`: its work folder) and trains on
them less the families in `--leave-out` as well: the model never sees A nor the new families, a
harder test than leaving the new family out alone. The training settings are the recipe's
(`recipe.train_config`, read from the earlier run's report); evaluation is the recipe's
(`recipe.evaluate_styles`) on the held-out concepts of the earlier render and, from `--eval-dir`
(a folder where `make_pairs` wrote `all_<style>.csv` sets), every concept of the left-out styles.
Writes `<work>/report.json`; the model stays in `<work>/model`. Resumable like the recipe.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

from tools.bundled import recipe, styles


def training_csv(source_pairs: Path, target: Path, left_out: set[str]) -> int:
    """The earlier render's pairs.csv less the left-out styles' rows, image paths absolute; rows kept."""
    kept = 0
    temporary = target.with_name(target.name + ".tmp")
    with (source_pairs / "pairs.csv").open(encoding="utf-8", newline="") as handle, \
            temporary.open("w", encoding="utf-8", newline="") as out:
        reader = csv.DictReader(handle)
        writer = csv.writer(out)
        writer.writerow(reader.fieldnames)
        for row in reader:
            if row["style"] in left_out:
                continue
            row["image"] = str((source_pairs / row["image"]).resolve())
            writer.writerow([row[name] for name in reader.fieldnames])
            kept += 1
    os.replace(temporary, target)
    return kept


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bundled.leave_more_out", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", type=Path, required=True, help="work folder of a finished recipe run")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--leave-out", action="append", required=True, help="style family to leave out as well")
    parser.add_argument("--init", required=True, help="model folder to continue from (as recipe --init)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--eval-dir", type=Path, default=None, help="folder with all_<style>.csv sets")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    earlier = json.loads((args.source / "report.json").read_text(encoding="utf-8"))
    new = sorted(styles.styles_of_families(args.leave_out))
    left_out = tuple(dict.fromkeys([*earlier.get("left_out_styles", []), *new]))
    args.work.mkdir(parents=True, exist_ok=True)
    source_pairs = args.source / "pairs"
    kept = training_csv(source_pairs, args.work / "train_pairs.csv", set(left_out))
    config = recipe.RecipeConfig(work=args.work, init=args.init, epochs=args.epochs, lr=args.lr,
                                 pairs_dir=source_pairs)
    started = time.perf_counter()
    training = recipe.train_config(config, args.work / "train_pairs.csv")
    from retrieval.finetune.loop import finetune

    def on_event(event) -> None:
        elapsed = f"[{time.perf_counter() - started:7.0f} s]"
        if event.kind in ("plan", "resume", "save", "mix", "warning"):
            print(elapsed, event.message, flush=True)
        elif event.kind == "step" and (event.step % 25 == 0 or event.step == event.steps):
            print(elapsed, f"step {event.step}/{event.steps} epoch {event.epoch} loss {event.loss:.3f}", flush=True)
        elif event.kind == "epoch":
            print(elapsed, f"epoch {event.epoch}: validation text->image R@10 {event.metrics.text_to_image.r10:.3f}",
                  flush=True)

    result = finetune(training, on_event)
    train_seconds = time.perf_counter() - started
    folders = [source_pairs] + ([args.eval_dir] if args.eval_dir else [])
    results = recipe.evaluate_styles(training.out, folders, new)
    report = {
        "command": "python -m tools.bundled.leave_more_out " + " ".join(sys.argv[1:] if argv is None else argv),
        "from": str(args.source), "left_out_styles": list(left_out), "new_left_out_styles": new,
        "train_pairs": kept, "steps": result.steps, "best_epoch": result.best_epoch,
        "train_seconds": round(train_seconds, 1), "held_out": results["held_out"],
        "all_concepts": results["all_concepts"], "left_out": recipe.left_out_summary(results, tuple(new)),
    }
    (args.work / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report["left_out"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
