"""Recipe: write the bundled model's (image, caption) pairs, or the README's sample collection, from emoji.

    python -m tools.bundled.make_pairs --out pairs/ --styles all --icon-sets /tmp/npm --per-concept 8
    python -m tools.bundled.make_pairs --out pairs/ --styles openmoji,noto --eval-styles twemoji ...
    python -m tools.bundled.make_pairs --sample --out data/sample

Training output (`--out DIR`):
    pairs.csv            image,caption,style,augment: the train concepts, `--per-concept` strongly
                         (style-breaking) and `--mild-per-concept` mildly augmented images each, the
                         styles that draw the concept taking turns
    heldout_<style>.csv  one mildly augmented image per held-out concept in that style (plain name),
                         for every training and evaluation style
    heldout.csv          all held-out files together
    all_<style>.csv      every concept of an evaluation-only style (`--eval-styles`), one image each:
                         how a style the model never saw is searched
    concepts.json        the split, the settings, the styles and the metadata sources used
    images/              train/, mild/, heldout/<style>/, all/<style>/

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tools.bundled import compose, emoji_data, styles
from tools.bundled.compose import MILD_AUGMENT, AugmentConfig
from tools.bundled.emoji_data import Concept, EmojiDataError
from tools.bundled.styles import Style

log = logging.getLogger(__name__)

SAMPLE_STYLES = styles.BASE_STYLES  # data/sample: OpenMoji + Noto, as the README shows it
SAMPLE_SIZE = 160
SAMPLE_JPEG_QUALITY = 85
PAIRS_JPEG_QUALITY = 90
SAMPLE_COMMAND = "python -m tools.bundled.make_pairs --sample --out data/sample"
AUGMENTS = {"style": compose.TRAIN_AUGMENT, "classic": compose.CLASSIC_AUGMENT}
HEAVY, MILD = "heavy", "mild"

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
    style: str  # a style name: "openmoji", "noto", "twemoji", ...
    image: str  # path relative to the output folder
    caption: str
    seed: int
    size: int
    augment: AugmentConfig
    source: Path | None  # the style's font or icon-set folder (styles.Style.source)
    icon: str | None  # the icon's name in an Iconify set
    jpeg_quality: int
    kind: str = HEAVY  # heavy | mild (training images), for pairs.csv


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


def style_turns(concept: Concept, names: Sequence[str], seed: int) -> list[str]:
    """The styles that draw a concept in the order its images use them: a stable shuffle per concept."""
    return sorted(names, key=lambda name: emoji_data.stable_fraction(f"{concept.codepoints}/{name}", seed, "style"))


def _job(concept: Concept, style: Style, image: str, caption: str, seed: int, size: int, augment: AugmentConfig,
         kind: str = HEAVY, jpeg_quality: int = PAIRS_JPEG_QUALITY) -> RenderJob:
    return RenderJob(concept=concept, style=style.name, image=image, caption=caption, seed=seed, size=size,
                     augment=augment, source=style.source, icon=style.icons.get(concept.codepoints),
                     jpeg_quality=jpeg_quality, kind=kind)


def train_jobs(
    concepts: Sequence[Concept],
    train_styles: Sequence[Style],
    drawable: Mapping[str, frozenset[str]],
    per_concept: int,
    seed: int,
    size: int,
    augment: AugmentConfig = compose.TRAIN_AUGMENT,
    kind: str = HEAVY,
    extension: str = "jpg",
) -> list[RenderJob]:
    """`per_concept` images per concept, the styles that draw it taking turns (a stable order per concept).

    Captions: the plain name for about a third of the images, any other phrasing otherwise. `kind`
    names the images' folder (images/train/ for heavy, images/mild/) and seeds them apart.
    """
    by_name = {style.name: style for style in train_styles}
    folder = "train" if kind == HEAVY else kind
    jobs = []
    for concept in concepts:
        names = [s.name for s in train_styles if concept.codepoints in drawable[s.name]]
        if not names:
            continue
        turns = style_turns(concept, names, seed if kind == HEAVY else seed + 1)
        captions = emoji_data.concept_captions(concept, seed if kind == HEAVY else seed + 1000)
        concept_augment = compose.colour_safe(augment) if emoji_data.is_colour_named(concept) else augment
        for index in range(per_concept):
            style = by_name[turns[index % len(turns)]]
            image_seed = job_seed(seed, concept, f"{folder}/{index}")
            choice = np.random.default_rng(image_seed)
            caption = captions[0] if choice.random() < 0.35 else captions[int(choice.integers(len(captions)))]
            jobs.append(_job(concept, style, f"images/{folder}/{image_name(concept, f'{index}_{style.name}', extension)}",
                             caption, image_seed, size, concept_augment, kind))
    return jobs


def eval_jobs(
    concepts: Sequence[Concept],
    style: Style,
    drawable: frozenset[str],
    seed: int,
    size: int,
    folder: str = "heldout",
    extension: str = "jpg",
) -> list[RenderJob]:
    """One mildly augmented image per concept the style draws, captioned with the plain name."""
    return [
        _job(concept, style, f"images/{folder}/{style.name}/{image_name(concept, style.name, extension)}",
             concept.name, job_seed(seed, concept, f"{folder}/{style.name}"), size, MILD_AUGMENT, MILD)
        for concept in concepts if concept.codepoints in drawable
    ]


def sample_concepts(concepts: Sequence[Concept], names: Sequence[str] = SAMPLE_CONCEPT_NAMES) -> list[Concept]:
    by_name = {concept.name: concept for concept in concepts}
    missing = [name for name in names if name not in by_name]
    if missing:
        log.warning("sample concepts not in this OpenMoji release: %s", ", ".join(missing))
    return [by_name[name] for name in names if name in by_name]


def sample_jobs(concepts: Sequence[Concept], sample_styles: Sequence[Style],
                drawable: Mapping[str, frozenset[str]], seed: int) -> list[RenderJob]:
    """Each sample concept in every style it can be drawn in: `dog-face_openmoji.jpg`, `dog-face_noto.jpg`."""
    return [
        _job(concept, style, f"{concept.slug}_{style.name}.jpg", concept.name,
             job_seed(seed, concept, f"sample/{style.name}"), SAMPLE_SIZE, MILD_AUGMENT, MILD, SAMPLE_JPEG_QUALITY)
        for concept in concepts
        for style in sample_styles if concept.codepoints in drawable[style.name]
    ]


# ---------------------------------------------------------------- drawing (I/O)


def draw_job(job: RenderJob) -> Image.Image:
    """The composed RGB image for a job; raises EmojiDataError when the style cannot draw it."""
    base = styles.render(job.style, job.source, job.icon, job.concept, max(job.size, 96))
    return compose.compose_sample(base, np.random.default_rng(job.seed), job.size, job.augment)


def write_job(task: tuple[RenderJob, Path, bool]) -> str | None:
    """Draw and save one job's image (temp file + rename, so a file there is whole); returns None, or
    the reason it was skipped. With `reuse`, an image already at the job's path is kept, not redrawn."""
    job, root, reuse = task
    path = root / job.image
    if reuse and path.is_file():
        return None
    try:
        image = draw_job(job)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        if path.suffix == ".png":
            image.save(temporary, format="PNG", optimize=True)
        else:
            image.save(temporary, format="JPEG", quality=job.jpeg_quality)
        os.replace(temporary, path)
    except (EmojiDataError, OSError, ValueError) as error:
        return f"{job.image}: {error}"
    return None


def run_jobs(
    jobs: Sequence[RenderJob], root: Path, workers: int = 1, on_progress: Progress | None = None,
    reuse: bool = False,
) -> list[RenderJob]:
    """Draw every job (in a pool when workers > 1); returns the jobs that produced an image, in order.
    `reuse`: keep images already drawn under `root` (an interrupted render with the same settings)."""
    done: list[RenderJob] = []
    tasks = [(job, root, reuse) for job in jobs]
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


def write_csv(path: Path, jobs: Sequence[RenderJob], image_prefix: str = "", extra: bool = False) -> None:
    """image,caption rows (plus style,augment with `extra`), written to a temp file then moved into place."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption", "style", "augment"] if extra else ["image", "caption"])
        for job in jobs:
            row = [image_prefix + job.image, job.caption]
            writer.writerow(row + [job.style, job.kind] if extra else row)
    os.replace(temporary, path)


def write_json(path: Path, data: object) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def concept_record(concept: Concept, drawable: Mapping[str, frozenset[str]]) -> dict[str, object]:
    return {
        "codepoints": concept.codepoints,
        "char": concept.char,
        "name": concept.name,
        "group": concept.group,
        "subgroup": concept.subgroup,
        "styles": [name for name, codepoints in drawable.items() if concept.codepoints in codepoints],
    }


def metadata_sources(used: Sequence[Style]) -> dict[str, object]:
    return {
        "styles": styles.source_versions(used),
        "emoji_test": str(emoji_data.EMOJI_TEST_PATH) if emoji_data.EMOJI_TEST_PATH.exists() else None,
        "cldr_annotations": [str(p) for p in emoji_data.CLDR_ANNOTATION_PATHS if p.exists()],
    }


@dataclass(frozen=True)
class PairsConfig:
    out: Path
    size: int = 128
    per_concept: int = 4  # strongly augmented images per train concept
    mild_per_concept: int = 0  # and mildly augmented ones
    seed: int = 0
    heldout_fraction: float = 0.1
    workers: int = 1
    limit: int | None = None
    image_format: str = "jpg"
    font_path: Path | None = None
    styles: tuple[str, ...] = styles.BASE_STYLES  # the training styles
    eval_styles: tuple[str, ...] = ()  # styles drawn only for evaluation (held-out and all concepts)
    icon_roots: tuple[Path, ...] = ()  # where Iconify packages are installed
    augment: str = "style"  # "style" (TRAIN_AUGMENT) or "classic" (the two-style recipe's)

    def settings(self) -> dict[str, object]:
        """What decides the output (concepts.json records it; the recipe reuses a render with the same)."""
        return {"seed": self.seed, "size": self.size, "per_concept": self.per_concept,
                "mild_per_concept": self.mild_per_concept, "heldout_fraction": self.heldout_fraction,
                "limit": self.limit, "image_format": self.image_format, "styles": list(self.styles),
                "eval_styles": list(self.eval_styles), "augment": self.augment}


RENDER_MARK = "render.json"  # the settings of the render under way or done in a folder


def _read_mark(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def make_pairs(config: PairsConfig, on_progress: Progress | None = None) -> dict[str, object]:
    """Write the training pairs, the evaluation sets and concepts.json under `config.out`; returns counts."""
    if config.size < 16 or config.per_concept < 1 or config.mild_per_concept < 0 or config.workers < 1:
        raise EmojiDataError("--size must be >= 16, --per-concept and --workers >= 1, --mild-per-concept >= 0")
    if config.augment not in AUGMENTS:
        raise EmojiDataError(f"unknown augment {config.augment!r}; known: {', '.join(AUGMENTS)}")
    overlap = set(config.styles) & set(config.eval_styles)
    if overlap:
        raise EmojiDataError(f"styles both trained on and evaluation-only: {', '.join(sorted(overlap))}")
    concepts = select_limited(emoji_data.list_concepts(), config.limit, config.seed)
    if not concepts:
        raise EmojiDataError("no emoji concepts found")
    found, drawable = styles.find_styles([*config.styles, *config.eval_styles], concepts, config.icon_roots,
                                         config.font_path)
    train_styles = [s for s in found if s.name in config.styles]
    eval_only = [s for s in found if s.name in config.eval_styles]
    train, heldout = emoji_data.split_concepts(concepts, config.heldout_fraction, config.seed)
    extension = config.image_format
    augment = AUGMENTS[config.augment]
    groups: dict[str, list[RenderJob]] = {
        HEAVY: train_jobs(train, train_styles, drawable, config.per_concept, config.seed, config.size, augment,
                          HEAVY, extension),
        MILD: train_jobs(train, train_styles, drawable, config.mild_per_concept, config.seed, config.size,
                         MILD_AUGMENT, MILD, extension),
    }
    for style in found:
        groups[f"heldout_{style.name}"] = eval_jobs(heldout, style, drawable[style.name], config.seed, config.size,
                                                    "heldout", extension)
    for style in eval_only:
        groups[f"all_{style.name}"] = eval_jobs(concepts, style, drawable[style.name], config.seed, config.size,
                                                "all", extension)
    config.out.mkdir(parents=True, exist_ok=True)
    every_job = [job for group in groups.values() for job in group]
    # Resumable: RENDER_MARK records the settings before drawing starts, so a rerun after an
    # interruption keeps the images already drawn with the same settings and draws the rest.
    mark = config.out / RENDER_MARK
    reuse = _read_mark(mark) == config.settings()
    write_json(mark, config.settings())
    drawn_images = {job.image for job in run_jobs(every_job, config.out, config.workers, on_progress, reuse)}
    kept = {name: [j for j in group if j.image in drawn_images] for name, group in groups.items()}
    write_csv(config.out / "pairs.csv", kept[HEAVY] + kept[MILD], extra=True)
    held_names = [name for name in kept if name.startswith("heldout_")]
    for name in held_names + [name for name in kept if name.startswith("all_")]:
        write_csv(config.out / f"{name}.csv", kept[name])
    write_csv(config.out / "heldout.csv", [job for name in held_names for job in kept[name]])
    write_json(config.out / "concepts.json", {
        **config.settings(),
        "sources": metadata_sources(found),
        "train": [concept_record(c, drawable) for c in train],
        "heldout": [concept_record(c, drawable) for c in heldout],
    })
    summary: dict[str, object] = {
        "concepts": len(concepts),
        "train_concepts": len(train),
        "heldout_concepts": len(heldout),
        "train_images": len(kept[HEAVY]) + len(kept[MILD]),
        "mild_images": len(kept[MILD]),
        "train_images_by_style": {s.name: sum(j.style == s.name for j in kept[HEAVY] + kept[MILD])
                                  for s in train_styles},
        "drawable_by_style": {name: len(codepoints) for name, codepoints in drawable.items()},
        "eval_images": {name: len(jobs) for name, jobs in kept.items() if name not in (HEAVY, MILD)},
        "skipped": len(every_job) - len(drawn_images),
    }
    return summary


def make_all_concepts_sets(config: PairsConfig, names: Sequence[str],
                           on_progress: Progress | None = None) -> dict[str, int]:
    """`all_<style>.csv` (every concept the style draws, one mild image each) for `names` under `config.out`.

    Only the concepts, seed, size, format, font and icon folders of `config` apply. A style whose file is
    there already is kept (the images depend on nothing else). Returns {style: images} of those drawn now.
    """
    wanted = [name for name in names if not (config.out / f"all_{name}.csv").is_file()]
    if not wanted:
        return {}
    concepts = select_limited(emoji_data.list_concepts(), config.limit, config.seed)
    found, drawable = styles.find_styles(wanted, concepts, config.icon_roots, config.font_path)
    groups = {style.name: eval_jobs(concepts, style, drawable[style.name], config.seed, config.size, "all",
                                    config.image_format) for style in found}
    config.out.mkdir(parents=True, exist_ok=True)
    every_job = [job for group in groups.values() for job in group]
    # Resumable: RENDER_MARK records the settings before drawing starts, so a rerun after an
    # interruption keeps the images already drawn with the same settings and draws the rest.
    mark = config.out / RENDER_MARK
    reuse = _read_mark(mark) == config.settings()
    write_json(mark, config.settings())
    drawn_images = {job.image for job in run_jobs(every_job, config.out, config.workers, on_progress, reuse)}
    for name, jobs in groups.items():
        write_csv(config.out / f"all_{name}.csv", [job for job in jobs if job.image in drawn_images])
    return {name: sum(job.image in drawn_images for job in jobs) for name, jobs in groups.items()}


def make_sample(out: Path, seed: int = 0, workers: int = 1, font_path: Path | None = None) -> dict[str, int]:
    """Write data/sample: the everyday concepts in both base styles on mild backgrounds, plus captions.csv.

    Needs the Noto font, so that a machine without it cannot quietly drop half the collection.
    Old renders (`*_openmoji.jpg`, `*_noto.jpg`) no longer in the list are removed.
    """
    font_path = font_path or emoji_data.find_noto_font()
    if font_path is None:
        raise EmojiDataError("the sample collection needs Noto Color Emoji (Debian: fonts-noto-color-emoji)"
                             " or --noto-font PATH")
    concepts = sample_concepts(emoji_data.list_concepts())
    sample_styles, drawable = styles.find_styles(SAMPLE_STYLES, concepts, (), font_path)
    jobs = sample_jobs(concepts, sample_styles, drawable, seed)
    out.mkdir(parents=True, exist_ok=True)
    drawn = run_jobs(jobs, out, workers)
    wanted = {job.image for job in drawn}
    for stale in [*out.glob("*_openmoji.jpg"), *out.glob("*_noto.jpg")]:
        if stale.name not in wanted:
            log.info("removing stale sample %s", stale)
            stale.unlink()
    write_csv(out / "captions.csv", drawn)
    total_bytes = sum((out / job.image).stat().st_size for job in drawn)
    return {"concepts": len(concepts), "images": len(drawn), "noto_images": sum(j.style == styles.NOTO for j in drawn),
            "bytes": total_bytes}


# ---------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bundled.make_pairs",
        description="Render emoji in many drawing styles (OpenMoji, Noto Color Emoji, Iconify emoji sets) into "
        "image/caption pairs for training the bundled model, or (--sample) into the README's sample collection.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--styles", default=styles.ALL,
                        help="training styles or families, comma-separated, or 'all' (default: all; "
                        f"known: {', '.join(styles.FAMILIES)})")
    parser.add_argument("--eval-styles", default="",
                        help="styles drawn for evaluation only (held-out and all concepts), comma-separated")
    parser.add_argument("--icon-sets", type=Path, action="append", default=[],
                        help="folder holding the @iconify-json packages (an npm prefix or node_modules); repeatable")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--per-concept", type=int, default=4,
                        help="strongly augmented training images per train concept, styles taking turns (default 4)")
    parser.add_argument("--mild-per-concept", type=int, default=0,
                        help="mildly augmented training images per train concept (default 0)")
    parser.add_argument("--augment", choices=sorted(AUGMENTS), default="style",
                        help="strong augmentation: style (style-breaking, default) or classic (the two-style recipe's)")
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
                        help=f"write the sample collection instead (OpenMoji + Noto, 160 px JPEG q85; the other "
                        f"options but --seed, --workers and --noto-font do not apply): {SAMPLE_COMMAND}")
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
                mild_per_concept=args.mild_per_concept,
                seed=args.seed,
                heldout_fraction=args.heldout_fraction,
                workers=args.workers,
                limit=args.limit,
                image_format=args.image_format,
                font_path=args.noto_font,
                styles=tuple(styles.expand_style_names(args.styles)),
                eval_styles=tuple(styles.expand_style_names(args.eval_styles)),
                icon_roots=tuple(args.icon_sets),
                augment=args.augment,
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
