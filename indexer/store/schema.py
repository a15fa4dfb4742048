"""The metadata database's tables (SQLAlchemy 2 declarative), and the column type for file names.

Schema 3: an item (one file) holds any number of vectors, each made by one encoder (the image
tower, later an audio tower) for one moment of the item (`start_s`; None for a still picture).
A picture has one vector; a sound has one per window; a video one per sampled frame. The FAISS
files are derived copies of the `vectors` rows, one per encoder, labelled by vector id.
Schema 4: the words read in pictures (`item_words`, with its FTS5 index: indexer.store.words).
Steps between versions: indexer/store/migrations.py.
"""
from __future__ import annotations

from sqlalchemy import BigInteger, Float, ForeignKey, Integer, LargeBinary, String, Text, cast, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from indexer.store.records import IMAGE
from indexer.store.version import SCHEMA_VERSION  # noqa: F401 - part of the schema's API


class FsText(TypeDecorator):
    """Text that may hold file names which are not valid UTF-8, stored losslessly.

    Python gives such names as str with lone surrogates (PEP 383, `os.fsdecode`), which SQLite
    cannot take as UTF-8. They are bound as their raw bytes and cast to TEXT, so the column keeps
    the exact bytes of the name, sorts and compares like every other path (folder ranges, GLOB),
    and reads back, through the connection's surrogateescape text factory, as the same str that
    `os.scandir` produced: `open()` accepts it. Valid UTF-8 text is stored unchanged.

    On PostgreSQL the column sorts by bytes (COLLATE "C"), as SQLite does, so the folder ranges of
    `items.folder_range` hold under any server locale; names that are not UTF-8 are not supported there.
    """

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Text(collation="C"))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value, dialect):
        if isinstance(value, str) and getattr(dialect, "name", None) != "postgresql":
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return value.encode("utf-8", "surrogateescape")
        return value

    def bind_expression(self, bindvalue):
        return cast(bindvalue, Text)


def decode_text(data: bytes) -> str:
    """SQLite TEXT -> str; bytes that are not UTF-8 come back as surrogates (lossless)."""
    return data.decode("utf-8", "surrogateescape")


class Base(DeclarativeBase):
    pass


class SchemaInfo(Base):
    __tablename__ = "schema_info"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ModelRow(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    weights: Mapped[str] = mapped_column(Text)
    dim: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String)
    created_at: Mapped[float] = mapped_column(Float)
    encoder: Mapped[str] = mapped_column(String, default=IMAGE)  # schema 3: which vectors it made


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(FsText, unique=True, index=True)
    modality: Mapped[str] = mapped_column(String, default=IMAGE)
    size: Mapped[int] = mapped_column(Integer().with_variant(BigInteger, "postgresql"))  # bytes: past 2 GiB
    mtime: Mapped[float] = mapped_column(Float, index=True)
    content_hash: Mapped[str | None] = mapped_column(String, index=True)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String)
    indexed_at: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(FsText)
    seen_run: Mapped[int] = mapped_column(Integer, default=0)
    taken_at: Mapped[float | None] = mapped_column(Float, index=True)  # schema 2: EXIF capture time
    duration_s: Mapped[float | None] = mapped_column(Float)  # schema 3: length of a sound or video


class VectorRow(Base):
    """One vector of an item. Ids are never reused (AUTOINCREMENT): a FAISS file that lags the
    database can only miss a vector, never point at another item's."""

    __tablename__ = "vectors"
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    encoder: Mapped[str] = mapped_column(String, default=IMAGE)
    start_s: Mapped[float | None] = mapped_column(Float)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class StagedVectorRow(Base):
    """Vectors from a model being switched to (`reindex`); swapped in when every item has them."""

    __tablename__ = "staged_vectors"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    encoder: Mapped[str] = mapped_column(String, default=IMAGE)
    start_s: Mapped[float | None] = mapped_column(Float)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class RootRow(Base):
    """A folder (or file) an index run was given, with the settings its walks use (JSON:
    indexer.store.roots.RootSettings)."""

    __tablename__ = "roots"
    path: Mapped[str] = mapped_column(FsText, primary_key=True)
    settings: Mapped[str] = mapped_column(Text)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    command: Mapped[str] = mapped_column(String)
    roots: Mapped[str] = mapped_column(FsText)
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    embedded: Mapped[int] = mapped_column(Integer, default=0)
    reused: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float | None] = mapped_column(Float)


class ItemWordsRow(Base):
    """The words OCR read in one picture (schema 4), with what they depend on: the file's content
    and the OCR settings. Its full-text index is made with the table (indexer.store.words)."""

    __tablename__ = "item_words"
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    content_hash: Mapped[str | None] = mapped_column(String)
    settings: Mapped[str] = mapped_column(String)  # e.g. the --ocr-lang it was read with
    status: Mapped[str] = mapped_column(String)  # read | skipped (the text test saw none) | failed
    text: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    read_at: Mapped[float] = mapped_column(Float)


def _create_words_fts(target, connection, **_) -> None:
    from indexer.store.words import create_fts

    create_fts(connection)


event.listen(ItemWordsRow.__table__, "after_create", _create_words_fts)
