"""Database URLs: which ones mmsearch takes (PostgreSQL through psycopg 3), and how they are shown
(never with the password)."""
from __future__ import annotations

from indexer.errors import DatabaseURLError

DRIVER = "postgresql+psycopg"


def parse_url(url: str):
    """A SQLAlchemy URL for PostgreSQL through psycopg 3, or DatabaseURLError saying what is wrong."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseURLError(f"{redact(url)!r} is not a database URL; give one like "
                               f"postgresql+psycopg://USER@HOST:5432/DBNAME") from None
    if parsed.get_backend_name() != "postgresql":
        raise DatabaseURLError(f"{redact(url)}: only PostgreSQL URLs are supported (postgresql+psycopg://USER@HOST:"
                               f"PORT/DBNAME); without --db-url the index keeps its metadata in SQLite in its folder")
    if parsed.drivername not in ("postgresql", DRIVER):
        raise DatabaseURLError(f"{redact(url)}: the driver must be psycopg (postgresql+psycopg://...), "
                               f"not {parsed.drivername}")
    if not parsed.database:
        raise DatabaseURLError(f"{redact(url)}: the URL names no database (.../DBNAME at its end)")
    return parsed.set(drivername=DRIVER)


def redact(url: str) -> str:
    """`url` without its password, for messages and the file in the folder."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url)._replace(password=None).render_as_string(hide_password=False)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown with its userinfo cut instead
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}" if "@" in rest else url
