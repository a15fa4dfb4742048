"""Settings from a config file, the weakest source: file < environment (MMSEARCH_*) < flag.

The file is TOML at $MMSEARCH_CONFIG, else $XDG_CONFIG_HOME/mmsearch/config.toml, else
~/.config/mmsearch/config.toml, with optional keys `model`, `db`, and `exclude` (a list of globs) and
`hidden` (true/false): the settings a folder gets the first time it is indexed.
"""
from __future__ import annotations

import os
from pathlib import Path

import tomllib

from indexer.errors import MmsearchError

KNOWN_KEYS = {"model", "audio_model", "db", "exclude", "hidden"}  # exclude and hidden: defaults for folders indexed the first time


def config_path() -> Path:
    if os.environ.get("MMSEARCH_CONFIG"):
        return Path(os.environ["MMSEARCH_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "mmsearch" / "config.toml"


def load_config() -> dict:
    path = config_path()
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MmsearchError(f"cannot read config file {path}: {exc}") from exc
    if "exclude" in data and not (isinstance(data["exclude"], list) and all(isinstance(x, str) for x in data["exclude"])):
        raise MmsearchError(f"{path}: exclude must be a list of globs, e.g. exclude = [\"*/thumbnails/*\"]")
    if "hidden" in data and not isinstance(data["hidden"], bool):
        raise MmsearchError(f"{path}: hidden must be true or false")
    unknown = set(data) - KNOWN_KEYS
    if unknown:
        raise MmsearchError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(KNOWN_KEYS))}")
    return data
