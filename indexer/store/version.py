"""The metadata schema's version and the generation stamp's parsing, in a module of their own: the
sqlite3 read path needs them without SQLAlchemy."""
from __future__ import annotations

from pathlib import Path

from indexer.errors import StoreError

SCHEMA_VERSION = 4  # steps between versions: indexer/store/migrations.py


def parse_generation(value: str | None, path: Path | str = "the index") -> int:
    try:
        return int(value or 0)
    except ValueError:
        raise StoreError(f"{path}: the stored generation {value!r} is not a number (the database was edited or "
                         f"damaged); `mmsearch repair` resets it") from None
