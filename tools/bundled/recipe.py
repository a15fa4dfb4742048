"""Rebuild the bundled offline model from nothing but installed packages.

    python -m tools.bundled.recipe --work /tmp/emoji-work

1. `make_pairs` renders OpenMoji + Noto emoji into `<work>/pairs` (train pairs plus held-out concepts
   in both styles); an existing render with the same settings is reused.
   The train concepts get as many images again in make_pairs' *mild* augmentation (the look of
   clean icons and of the held-out sets, never their concepts): at this small compute budget the
   mix learns faster than heavy augmentation alone. `pairs_train.csv` lists both.
2. The same fine-tuning code as `mmsearch finetune` trains `configs/mmsearch-emoji-minilm.json`
   (a small image tower from scratch; the pretrained MiniLM text tower from PyPI, frozen, with a
   trained projection) into `<work>/model`, with augmentation on. Interrupted? Run the same
   command again: it resumes.
3. The model is evaluated on the held-out concepts (never seen in training), text -> image and
   image -> text, separately for each drawing style, and then copied to `retrieval/models/bundled/`
   (image tower float16, text tower as a delta: the projection only), with the figures in its
   manifest.

Wall time on a 2-core x86_64 CPU without GPU (AVX512-BF16, so bf16 training), `--threads 1`: 21 minutes
(see docs/BENCHMARKS.md). A CPU without bf16 instructions trains in fp32, about twice as long.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG_PATH = REPO / "retrieval" / "models" / "configs" / "mmsearch-emoji-minilm.json"
BUNDLED_MODEL_DIR = REPO / "retrieval" / "models" / "bundled"
HELD_OUT_STYLES = ("openmoji", "noto")
MIXED_PAIRS = "pairs_train.csv"
MILD_SEED_OFFSET = 1000  # other images and caption picks than the heavy renders


@dataclass(frozen=True)
class RecipeConfig:
    work: Path
    install_to: Path | None = BUNDLED_MODEL_DIR
    image_size: int = 96  # rendered pixels; the model's input is 80 (augmented crops come from the 96)
    per_concept: int = 4  # heavily augmented images per train concept (make_pairs)
    mild_per_concept: int = 4  # and mildly augmented ones
    epochs: int = 16
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    workers: int = 2
    limit: int | None = None  # only this many concepts: a quick smoke run
    restart: bool = False  # retrain even when <work>/model holds a run with other settings
    precision: str = "auto"  # auto: bf16 autocast where the CPU has bf16 instructions (or on CUDA), else fp32


def pairs_ready(folder: Path, config: RecipeConfig) -> bool:
    """True when `folder` holds a finished render with the same settings."""
    try:
        concepts = json.loads((folder / "concepts.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    same = (concepts.get("seed"), concepts.get("size"), concepts.get("per_concept"), concepts.get("limit")) == \
        (config.seed, config.image_size, config.per_concept, config.limit)
    return same and (folder / "pairs.csv").is_file() and all(
        (folder / f"heldout_{style}.csv").is_file() for style in HELD_OUT_STYLES)


def make_training_pairs(config: RecipeConfig, on_progress=None) -> dict:
    """make_pairs into <work>/pairs, then the mild renders; returns make_pairs' counts plus `mild_images`."""
    from tools.bundled.make_pairs import PairsConfig, make_pairs

    folder = config.work / "pairs"
    if pairs_ready(folder, config) and (folder / MIXED_PAIRS).is_file():
        return {"reused": str(folder)}
    summary = make_pairs(PairsConfig(out=folder, size=config.image_size, per_concept=config.per_concept,
                                     seed=config.seed, workers=config.workers, limit=config.limit), on_progress)
    summary["mild_images"] = add_mild_pairs(folder, config)
    return summary


def add_mild_pairs(folder: Path, config: RecipeConfig) -> int:
    """Render `mild_per_concept` mildly augmented images of each train concept (as concepts.json lists
    them); write pairs.csv plus those rows to MIXED_PAIRS. Returns the number of mild images."""
    import dataclasses

    from tools.bundled import emoji_data
    from tools.bundled.make_pairs import noto_drawable, run_jobs, train_jobs, write_csv

    concepts = json.loads((folder / "concepts.json").read_text(encoding="utf-8"))
    train_codepoints = {record["codepoints"] for record in concepts["train"]}
    train = [concept for concept in emoji_data.list_concepts() if concept.codepoints in train_codepoints]
    font = emoji_data.find_noto_font()
    jobs = [
        dataclasses.replace(job, augment=emoji_data.MILD_AUGMENT, image=job.image.replace("images/train/", "images/mild/"))
        for job in train_jobs(train, noto_drawable(train, font), config.mild_per_concept, config.seed + MILD_SEED_OFFSET,
                              config.image_size, font)
    ]
    mild = run_jobs(jobs, folder, config.workers)
    write_csv(folder / "pairs_mild.csv", mild)
    with (folder / "pairs.csv").open(encoding="utf-8") as heavy, \
            (folder / "pairs_mild.csv").open(encoding="utf-8") as light:
        rows = heavy.read().splitlines() + light.read().splitlines()[1:]
    temporary = folder / f"{MIXED_PAIRS}.tmp"
    temporary.write_text("\n".join(rows) + "\n", encoding="utf-8")
    os.replace(temporary, folder / MIXED_PAIRS)
    return len(mild)


def train_config(config: RecipeConfig):
    from retrieval.finetune.loop import TrainConfig

    return TrainConfig(
        pairs=config.work / "pairs" / MIXED_PAIRS,
        out=config.work / "model",
        base=str(CONFIG_PATH),
        val_fraction=0.05,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=0.1,
        warmup=0.03,
        lock_text=True,
        augment=True,
        seed=config.seed,
        save_dtype="float16",
        precision=training_precision(config.precision),
        device="auto",
        workers=config.workers,
        restart=config.restart,
    )


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 autocast then trains about twice as fast as fp32 on CPU."""
    import torch

    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is not None and check() for check in checks)


def training_precision(requested: str) -> str:
    if requested != "auto":
        return requested
    return "bf16" if cpu_has_bf16() else "auto"


def evaluate_held_out(model_dir: Path, pairs_dir: Path) -> dict:
    """{style: metrics dict} on the held-out concepts, each style's images against its own captions."""
    from retrieval.finetune.evaluate import evaluate_model
    from retrieval.finetune.pairs import read_pairs
    from retrieval.models.encoders import load_model

    model = load_model(str(model_dir), device="cpu")
    results = {}
    for style in HELD_OUT_STYLES:
        metrics, _ = evaluate_model(model, read_pairs(pairs_dir / f"heldout_{style}.csv").pairs)
        results[style] = metrics.to_dict()
    return results


def install(model_dir: Path, target: Path, extra: dict) -> Path:
    """Copy the model folder to `target` (swapped in whole), adding `extra` to its manifest."""
    from retrieval.models.registry import MANIFEST_NAME

    staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model_dir, staging, ignore=shutil.ignore_patterns(".resume"))
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


def held_out_lines(held_out: dict) -> list[str]:
    lines = ["held-out concepts   direction     R@1    R@5    R@10   mean rank   (n)"]
    for style, metrics in held_out.items():
        for label, key in (("text->image", "text_to_image"), ("image->text", "image_to_text")):
            values = metrics[key]
            lines.append(f"{style:<19} {label:<12} {values['r1']:.3f}  {values['r5']:.3f}  {values['r10']:.3f}"
                         f"  {values['mean_rank']:8.1f}   ({metrics['n']})")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.bundled.recipe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="work folder for pairs, checkpoints and the report")
    parser.add_argument("--no-install", action="store_true", help="leave retrieval/models/bundled/ alone")
    parser.add_argument("--epochs", type=int, default=RecipeConfig.epochs)
    parser.add_argument("--per-concept", type=int, default=RecipeConfig.per_concept,
                        help="heavily augmented images per train concept")
    parser.add_argument("--mild-per-concept", type=int, default=RecipeConfig.mild_per_concept,
                        help="mildly augmented images per train concept")
    parser.add_argument("--lr", type=float, default=RecipeConfig.lr)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--limit", type=int, default=None, help="only this many emoji concepts (a quick smoke run)")
    parser.add_argument("--restart", action="store_true", help="retrain although <work>/model holds another run")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="training precision; auto: bf16 where the CPU has bf16 instructions, else fp32")
    return parser.parse_args(argv)


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
    config = RecipeConfig(work=args.work, install_to=None if args.no_install else BUNDLED_MODEL_DIR,
                          epochs=args.epochs, per_concept=args.per_concept,
                          mild_per_concept=args.mild_per_concept, lr=args.lr, limit=args.limit,
                          restart=args.restart, precision=args.precision)
    config.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.0f} s] {message}", flush=True)

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
        say(f"rendering pairs into {config.work / 'pairs'}")
        summary = make_training_pairs(config)
        say(f"pairs: {json.dumps(summary)}")
        pairs_seconds = time.perf_counter() - started
        training = train_config(config)
        result = finetune(training, on_event)
        train_seconds = time.perf_counter() - started - pairs_seconds
        say(f"trained: {result.steps} steps, {result.pairs_per_second:.1f} pairs/s, best epoch {result.best_epoch}")
        held_out = evaluate_held_out(training.out, config.work / "pairs")
    except MmsearchError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - started
    given = sys.argv[1:] if argv is None else list(argv)
    report = {
        "command": " ".join(["python -m tools.bundled.recipe", *map(shlex.quote, given)]),
        "machine": "2-core x86_64 CPU, no GPU",
        "date": time.strftime("%Y-%m-%d"),
        "wall_seconds": round(wall, 1),
        "pairs_seconds": round(pairs_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "pairs_per_second": round(result.pairs_per_second, 1),
        "train_pairs": result.train_pairs,
        "steps": result.steps,
        "best_epoch": result.best_epoch,
        "validation_before": result.before.to_dict(),
        "validation_after": result.after.to_dict(),
        "held_out": held_out,
    }
    (config.work / "report.json").write_text(json.dumps(report, indent=2))
    for line in held_out_lines(held_out):
        say(line)
    if config.install_to is not None:
        install(training.out, config.install_to, {"recipe": {key: report[key] for key in (
            "command", "machine", "date", "wall_seconds", "held_out")}})
        say(f"installed {config.install_to}")
    say(f"done in {wall / 60:.1f} min; report in {config.work / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
