"""Where an index's metadata lives: the SQLite file in its folder, or a PostgreSQL database named by a
SQLAlchemy URL and remembered in the folder.

`mmsearch index FOLDER --db-url postgresql+psycopg://user@host:port/dbname` records the URL in
`database.json` in the index folder (written to a temp file, then `os.replace`), so every later
command on that folder finds the database; the FAISS vector files stay in the folder. The password
is never written: it comes from the URL given in this process, or from libpq (PGPASSWORD,
~/.pgpass). Only PostgreSQL is accepted through a URL; SQLite needs none (it is the default).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from indexer.errors import StoreError
from indexer.store.urls import parse_url, redact

DB_NAME = "mmsearch.db"  # the SQLite file of an index on SQLite
URL_FILE = "database.json"

# folder -> the URL given in this process, with its password (never on disk)
_given_urls: dict[Path, str] = {}


def database_url_of(folder: Path) -> str | None:
    """The PostgreSQL URL of the index in `folder` (with the password given in this process, if any),
    or None for an index on SQLite."""
    folder = Path(folder).expanduser().absolute()
    path = folder / URL_FILE
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))["url"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{path} cannot be read ({exc}); it names the index's database: restore it, or "
                         f"run `mmsearch index --db-url URL` again") from exc
    given = _given_urls.get(folder)
    if given is not None and redact(given) == stored:
        return given
    return stored


def remember_database_url(folder: Path, url: str) -> str:
    """Record that the index in `folder` keeps its metadata at `url` (the password left out); returns
    the URL to connect with. Refuses a folder that already holds a SQLite index or another URL."""
    folder = Path(folder).expanduser().absolute()
    parsed = parse_url(url)
    full = parsed.render_as_string(hide_password=False)
    stored = parsed._replace(password=None).render_as_string(hide_password=False)
    current = database_url_of(folder)
    if current is not None and redact(current) != stored:
        raise StoreError(f"the index at {folder} keeps its metadata at {redact(current)}, not {stored}; use another "
                         f"--db folder for another database")
    if current is None and (folder / DB_NAME).exists():
        raise StoreError(f"the index at {folder} keeps its metadata in SQLite ({folder / DB_NAME}); a folder holds one "
                         f"index: give another --db folder for the PostgreSQL one")
    from indexer.store.database import Database

    Database(url=full).close()  # reachable, and its schema made, before the folder points at it
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if current is None:
            tmp = folder / (URL_FILE + ".tmp")
            tmp.write_text(json.dumps({"url": stored}) + "\n", encoding="utf-8")
            os.replace(tmp, folder / URL_FILE)
    except OSError as exc:
        raise StoreError(f"cannot record the database URL in {folder}: {exc.strerror or exc}") from exc
    _given_urls[folder] = full
    return full
