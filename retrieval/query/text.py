"""What a text term becomes before a text tower sees it, and what the tower cannot read.

Emoji are turned into their names ("🐱" -> "cat face", "❤️" -> "red heart"): a text tower trained on
words (the bundled model's MiniLM) reads every emoji as its unknown token, so "🐱", "🚗" and "❤️"
once gave the same list. The names come from the `emoji` package (Unicode CLDR short names), else
from Python's Unicode database. Pure functions.
"""
from __future__ import annotations

import re
import unicodedata

_SKIN_TONE = re.compile(r"_(?:light|medium-light|medium|medium-dark|dark)_skin_tone")
_JOINERS = "\u200d\ufe0e\ufe0f"  # zero-width joiner, text and emoji presentation selectors
UNKNOWN_SHARE_NOTE = 0.5  # more than this share of a term's tokens unknown to the tower: say so


def _is_emoji(char: str) -> bool:
    return unicodedata.category(char) == "So" or 0x1F000 <= ord(char) <= 0x1FAFF


def emoji_to_words(text: str) -> str:
    """`text` with every emoji replaced by its name, spaced from the words around it."""
    if not any(_is_emoji(char) for char in text):
        return text
    try:
        import emoji
    except ImportError:
        emoji = None
    if emoji is not None:
        named = emoji.demojize(text, delimiters=("\x00", "\x00"))
        parts = named.split("\x00")
        # odd parts are names: "thumbs_up_medium_skin_tone" -> "thumbs up"
        words = [(_SKIN_TONE.sub("", part).replace("_", " ").replace("-", " ") if index % 2 else part)
                 for index, part in enumerate(parts)]
        text = " ".join(word.strip() for word in words if word.strip())
    out = []
    for char in text:  # what the emoji package does not know, Unicode names
        if char in _JOINERS:
            continue
        if _is_emoji(char):
            out.append(f" {unicodedata.name(char, '').lower()} ")
        else:
            out.append(char)
    return re.sub(r"\s+", " ", "".join(out)).strip()


def unknown_note(term: str, share: float | None) -> str | None:
    """A note for a term the text tower mostly cannot read (`share`: its unknown tokens' share)."""
    if share is None or share <= UNKNOWN_SHARE_NOTE:
        return None
    return (f"most of {term!r} is unknown to this model's vocabulary ({share:.0%} of its tokens), so its results "
            f"mean little; a multilingual CLIP (for example `--model xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k` "
            f"with `mmsearch reindex`) reads more languages")
