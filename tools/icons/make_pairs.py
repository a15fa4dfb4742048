"""Fine-tuning data from an Iconify icon set on npm: (image, caption) pairs split by concept.

    python -m tools.icons.make_pairs --set tabler --out /tmp/icons/tabler --train 2000 --held-out 500

A new domain for `mmsearch finetune` to learn: monochrome UI icons (Tabler, Lucide, Phosphor, ...)
drawn black on transparent, captioned from their names ("arrow-left-2" -> "arrow left"). The split
is by *concept*: an icon's concept is its name without the set's style suffix ("-filled", "-bold",
...) and without a trailing variant number, and every icon of a held-out concept is held out, so
no held-out concept is seen in training. `--split family` holds out whole first-word families
("arrow-*") instead: harder, nothing of the family is seen.

Output (`--out DIR`; image paths relative to it):
    train.csv      image,caption: one icon per train concept (`--train` of them)
    heldout.csv    image,caption: one icon per held-out concept (`--held-out` of them)
    concepts.json  the set, its npm package version and licence, the settings, the split
    images/        train/NAME.png, heldout/NAME.png

The set is read from `<npm-dir>/node_modules/@iconify-json/<set>/icons.json`; when it is missing it
is installed there with `npm install` at the version pinned in `PINNED` (so a rerun renders the
same icons). Finding, installing, reading and drawing a set are the bundled model's
(`tools.bundled.icon_sets`); this module only splits a UI icon set by concept and captions it from
icon names. Same seed and options, same output.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tools.bundled import icon_sets
from tools.bundled.emoji_data import EmojiDataError

# npm package versions the figures in docs/BENCHMARKS.md were measured with.
PINNED = {"tabler": "1.2.41", "lucide": "1.2.137", "ph": "1.2.2"}
# Style suffixes: the same concept drawn another way (left out of captions' concept key).
STYLE_SUFFIXES = {"tabler": ("filled",), "ph": ("thin", "light", "bold", "fill", "duotone")}
DEFAULT_NPM_DIR = Path("/tmp/mmsearch-npm")


class IconDataError(EmojiDataError):
    """The icon set cannot be found, installed or split as asked."""


@dataclass(frozen=True)
class IconsConfig:
    out: Path
    icon_set: str = "tabler"
    train: int = 2000
    held_out: int = 500
    size: int = 96
    seed: int = 0
    split: str = "concept"  # "concept" | "family"
    styles: bool = False  # also use style variants ("-filled", "-bold") as more images of a concept
    npm_dir: Path = DEFAULT_NPM_DIR
    version: str | None = None  # npm package version; default PINNED[icon_set] or the latest


def icon_set_dir(icon_set: str, npm_dir: Path, version: str | None = None, install: bool = True) -> Path:
    """The folder of `@iconify-json/<icon_set>` under npm_dir, installed with npm when missing."""
    folder = icon_sets.package_folder(npm_dir, icon_set)
    if folder is not None:
        return folder
    if not install:
        raise IconDataError(f"no @iconify-json/{icon_set} under {npm_dir}")
    icon_sets.install_icon_sets(npm_dir, [icon_set], versions={icon_set: version or PINNED.get(icon_set, "")})
    folder = icon_sets.package_folder(npm_dir, icon_set)
    if folder is None:
        raise IconDataError(f"npm installed @iconify-json/{icon_set} but its icons.json is not under {npm_dir}")
    return folder


def read_icons(folder: Path) -> list[str]:
    """The names of every icon of an Iconify set, aliases and hidden (deprecated) icons left out, sorted."""
    return sorted(icon_sets.read_icon_set(folder).icons)


def package_info(folder: Path) -> dict:
    icon_set = icon_sets.read_icon_set(folder)
    return {"name": icon_set.name, "package": f"{icon_sets.NPM_SCOPE}/{icon_set.name}",
            "package_version": icon_set.version, "license": icon_set.licence, "author": icon_set.author}


def style_of(name: str, icon_set: str) -> str:
    """The style suffix of a name ("" for the set's plain style)."""
    last = name.rsplit("-", 1)[-1]
    return last if "-" in name and last in STYLE_SUFFIXES.get(icon_set, ()) else ""


def concept_of(name: str, icon_set: str) -> str:
    """The concept key: the name without its style suffix and trailing variant number."""
    style = style_of(name, icon_set)
    stem = name[: -len(style) - 1] if style else name
    return re.sub(r"(-\d+)+$", "", stem) or stem


def family_of(name: str, icon_set: str) -> str:
    return concept_of(name, icon_set).split("-", 1)[0]


def caption_of(name: str, icon_set: str) -> str:
    """Words of the name, variant numbers dropped: "arrow-left-2" -> "arrow left", "heart-filled" -> "heart filled"."""
    style = style_of(name, icon_set)
    words = concept_of(name, icon_set).split("-")
    return " ".join(words + ([style] if style else []))


def split_icons(icons: Sequence[str], config: IconsConfig) -> tuple[list[str], list[str]]:
    """(train, held out) icons: `config.train` and `config.held_out` concepts, disjoint by concept (or family).

    Groups (concepts, or families with `--split family`) are shuffled; the first ones are held out
    until `held_out` concepts are reached (a family's unused concepts are left out of training
    too), then `train` concepts are drawn from the rest. A concept contributes its plain icon (the
    shortest name); with `config.styles` a train concept also brings its style variants.
    """
    if config.split not in ("concept", "family"):
        raise IconDataError(f"--split must be concept or family, not {config.split!r}")
    key = concept_of if config.split == "concept" else family_of
    by_concept: dict[str, list[str]] = {}
    for icon in icons:
        by_concept.setdefault(concept_of(icon, config.icon_set), []).append(icon)
    groups: dict[str, list[str]] = {}
    for concept, members in sorted(by_concept.items()):
        groups.setdefault(key(members[0], config.icon_set), []).append(concept)
    rng = np.random.default_rng([config.seed, 20])
    names = sorted(groups)
    held: list[str] = []
    rest: list[str] = []
    for i in rng.permutation(len(names)):
        (held if len(held) < config.held_out else rest).extend(groups[names[i]])
    held = held[: config.held_out]
    if len(held) < config.held_out or len(rest) < config.train:
        raise IconDataError(f"{config.icon_set} has {len(by_concept)} concepts: not enough for "
                            f"{config.train} train + {config.held_out} held out")
    train_concepts = [rest[i] for i in sorted(rng.permutation(len(rest))[: config.train])]

    def plain(concept: str) -> str:
        return min(by_concept[concept], key=lambda icon: (len(icon), icon))

    train = [icon for concept in train_concepts
             for icon in (by_concept[concept] if config.styles else [plain(concept)])]
    return train, sorted(plain(concept) for concept in held)


def write_split(out: Path, folder_of_set: Path, label: str, icons: Sequence[str], config: IconsConfig) -> int:
    """Render icons (black on transparent) into out/images/<label>/ and write out/<label>.csv; returns rows."""
    folder = out / "images" / label
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for icon in icons:
        path = folder / f"{icon}.png"
        if not path.is_file():
            temporary = path.with_name(path.name + ".tmp")
            icon_sets.render_icon(folder_of_set, icon, config.size).save(temporary, format="PNG")
            os.replace(temporary, path)
        rows.append((f"images/{label}/{icon}.png", caption_of(icon, config.icon_set)))
    csv_name = "train.csv" if label == "train" else "heldout.csv"
    temporary = out / f"{csv_name}.tmp"
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        writer.writerows(rows)
    os.replace(temporary, out / csv_name)
    return len(rows)


def make_pairs(config: IconsConfig) -> dict:
    """Install (if needed), split, render and write; returns what concepts.json holds."""
    folder = icon_set_dir(config.icon_set, config.npm_dir, config.version)
    icons = read_icons(folder)
    if not config.styles:
        icons = [icon for icon in icons if not style_of(icon, config.icon_set)]
    train, held_out = split_icons(icons, config)
    config.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "set": package_info(folder),
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in asdict(config).items()},
        "train_pairs": write_split(config.out, folder, "train", train, config),
        "held_out_pairs": write_split(config.out, folder, "heldout", held_out, config),
        "train_concepts": sorted({concept_of(icon, config.icon_set) for icon in train}),
        "held_out_concepts": sorted(concept_of(icon, config.icon_set) for icon in held_out),
    }
    temporary = config.out / "concepts.json.tmp"
    temporary.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, config.out / "concepts.json")
    return summary


def parse_args(argv=None) -> IconsConfig:
    parser = argparse.ArgumentParser(prog="python -m tools.icons.make_pairs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", dest="icon_set", default=IconsConfig.icon_set,
                        help="Iconify set prefix: tabler, lucide, ph, ...")
    parser.add_argument("--train", type=int, default=IconsConfig.train, help="train concepts")
    parser.add_argument("--held-out", type=int, default=IconsConfig.held_out, help="held-out concepts")
    parser.add_argument("--size", type=int, default=IconsConfig.size, help="rendered pixels")
    parser.add_argument("--seed", type=int, default=IconsConfig.seed)
    parser.add_argument("--split", choices=("concept", "family"), default=IconsConfig.split)
    parser.add_argument("--styles", action="store_true", help="add style variants of train concepts as more images")
    parser.add_argument("--npm-dir", type=Path, default=DEFAULT_NPM_DIR)
    parser.add_argument("--version", default=None, help="npm package version (default: pinned)")
    args = parser.parse_args(argv)
    return IconsConfig(out=args.out, icon_set=args.icon_set, train=args.train, held_out=args.held_out,
                       size=args.size, seed=args.seed, split=args.split, styles=args.styles,
                       npm_dir=args.npm_dir, version=args.version)


def main(argv=None) -> int:
    config = parse_args(argv)
    try:
        summary = make_pairs(config)
    except EmojiDataError as error:  # IconDataError, or icon_sets' errors (npm, reading, drawing)
        print(f"Error: {error}", file=sys.stderr)
        return 1
    info = summary["set"]
    print(f"{info['package']}@{info['package_version']} ({info['license']}): {summary['train_pairs']} train pairs, "
          f"{summary['held_out_pairs']} held-out concepts -> {config.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
