"""Read an (image, caption) pairs file: CSV (comma or tab, detected), TSV, JSONL.

    image,caption                       {"image": "a.jpg", "caption": "a red circle"}
    photos/a.jpg,"a dog, running"       {"filepath": "/abs/b.png", "text": "ein Hund"}

Columns come from flags or from the first known name in the header (`image`, `filepath`, `path`,
... and `caption`, `text`, `title`, ...); a CSV whose first row is already data (an existing image
path, then a caption) is read without a header. Relative image paths resolve against the pairs
file's folder. A row that cannot be used (no image, empty caption, missing file, bad JSON) costs
that row: it is returned in `PairsFile.skipped` and handed to `on_skip`, never raised. A row that
repeats an earlier one (the same image file and the same caption) is left out too, and listed in
`PairsFile.duplicates` for the caller to warn about (`duplicates_message`): it would only weigh that
pair twice, and two copies in one batch are false negatives for a contrastive loss.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.finetune.errors import PairsError

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ("image", "filepath", "path", "image_path", "file", "filename", "img",
                 "audio", "sound", "audio_path")  # sounds: retrieval.finetune.sounds
CAPTION_COLUMNS = ("caption", "text", "title", "description", "label")
JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class Pair:
    """One usable row: an existing image file and its caption."""

    image: Path  # absolute
    caption: str
    row: int  # line number in the pairs file (1-based; the header is line 1 of a CSV)


@dataclass(frozen=True)
class SkippedRow:
    """One row that was left out, and why."""

    row: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.row}: {self.reason}"


@dataclass(frozen=True)
class DuplicateRow:
    """A row left out because an earlier row has the same image and caption."""

    row: int
    first_row: int
    image: Path
    caption: str

    def __str__(self) -> str:
        return f"line {self.row} repeats line {self.first_row} ({self.image.name}, {self.caption!r})"


@dataclass(frozen=True)
class PairsFile:
    path: Path
    format: str  # "csv" | "tsv" | "jsonl" | "json"
    image_column: str
    caption_column: str
    pairs: tuple[Pair, ...]
    skipped: tuple[SkippedRow, ...]
    sha256: str
    duplicates: tuple[DuplicateRow, ...] = ()


DUPLICATE_EXAMPLES = 3  # how many duplicate rows a warning names


def duplicates_message(pairs_file: PairsFile, examples: int = DUPLICATE_EXAMPLES) -> str | None:
    """One warning line about `pairs_file.duplicates` (count and a few examples), or None when there are none."""
    duplicates = pairs_file.duplicates
    if not duplicates:
        return None
    shown = "; ".join(str(duplicate) for duplicate in duplicates[:examples])
    more = f"; and {len(duplicates) - examples} more" if len(duplicates) > examples else ""
    rows = "row repeats" if len(duplicates) == 1 else "rows repeat"
    return (f"{pairs_file.path.name}: {len(duplicates)} {rows} an earlier row's image and caption and "
            f"{'was' if len(duplicates) == 1 else 'were'} left out ({shown}{more})")


OnSkip = Callable[[SkippedRow], None]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_pairs(
    path: Path | str,
    *,
    image_column: str | None = None,
    caption_column: str | None = None,
    on_skip: OnSkip | None = None,
) -> PairsFile:
    """Parse a pairs file; raises PairsError when it has no usable columns or no usable rows."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PairsError(f"pairs file {path} does not exist")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PairsError(f"cannot read pairs file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PairsError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    if not text.strip():
        raise PairsError(f"pairs file {path} is empty")
    file_format = detect_format(path, text)
    if file_format in ("jsonl", "json"):
        records, columns = _json_records(text, file_format, path, image_column, caption_column)
    else:
        records, columns = _csv_records(text, "\t" if file_format == "tsv" else ",", path, image_column, caption_column)
    folder = path.resolve().parent
    pairs: list[Pair] = []
    skipped: list[SkippedRow] = []
    duplicates: list[DuplicateRow] = []
    first_rows: dict[tuple[Path, str], int] = {}
    for row, image, caption, problem in records:
        if problem is None:
            problem, pair = _check_row(row, image, caption, folder)
        else:
            pair = None
        if pair is not None:
            first = first_rows.setdefault((pair.image, pair.caption), pair.row)
            if first == pair.row:
                pairs.append(pair)
            else:
                duplicates.append(DuplicateRow(pair.row, first, pair.image, pair.caption))
            continue
        skip = SkippedRow(row, problem)
        skipped.append(skip)
        log.debug("skipping %s", skip)
        if on_skip is not None:
            on_skip(skip)
    if not pairs:
        detail = f"; first problem: {skipped[0]}" if skipped else ""
        raise PairsError(f"{path} holds no usable pairs ({len(skipped)} rows skipped{detail})")
    return PairsFile(
        path=path.resolve(),
        format=file_format,
        image_column=columns[0],
        caption_column=columns[1],
        pairs=tuple(pairs),
        skipped=tuple(skipped),
        sha256=hashlib.sha256(raw).hexdigest(),
        duplicates=tuple(duplicates),
    )


def detect_format(path: Path, text: str) -> str:
    """By suffix where it says (.jsonl, .json, .tsv), else by the first line: '{' JSONL, a tab TSV, else CSV."""
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix == ".json":
        return "json" if text.lstrip().startswith("[") else "jsonl"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    first = next((line for line in text.splitlines() if line.strip()), "")
    if first.lstrip().startswith("{"):
        return "jsonl"
    if "\t" in first and first.count("\t") >= first.count(","):
        return "tsv"
    return "csv"


# A record: (row number, image text or None, caption text or None, reason it is unusable or None)
_Record = tuple[int, "str | None", "str | None", "str | None"]


def _pick_column(names: Iterable[str], wanted: str | None, defaults: tuple[str, ...], what: str,
                 flag: str, path: Path) -> str | None:
    """The column to use: the flag's (must exist) or the first known default present; None if none."""
    by_lower = {}
    for name in names:
        by_lower.setdefault(name.strip().lower(), name)
    if wanted is not None:
        if wanted in names:
            return wanted
        if wanted.strip().lower() in by_lower:
            return by_lower[wanted.strip().lower()]
        raise PairsError(f"{path}: no {what} column {wanted!r} ({flag}); columns: {_show(names)}")
    for candidate in defaults:
        if candidate in by_lower:
            return by_lower[candidate]
    return None


def _show(names: Iterable[str]) -> str:
    shown = [repr(name) for name in names]
    return ", ".join(shown) if shown else "none"


def _no_columns(path: Path, names: list[str], missing: str) -> PairsError:
    return PairsError(
        f"{path}: found no {missing} column among {_show(names)}; name it with "
        f"--image-column/--caption-column (known names: image: {', '.join(IMAGE_COLUMNS)}; "
        f"caption: {', '.join(CAPTION_COLUMNS)})"
    )


def _csv_records(text: str, delimiter: str, path: Path, image_column: str | None,
                 caption_column: str | None) -> tuple[Iterator[_Record], tuple[str, str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    for fields in reader:
        if any(field.strip() for field in fields):
            header = fields
            break
    if header is None:
        raise PairsError(f"pairs file {path} is empty")
    header_line = reader.line_num
    image_name = _pick_column(header, image_column, IMAGE_COLUMNS, "image", "--image-column", path)
    caption_name = _pick_column(header, caption_column, CAPTION_COLUMNS, "caption", "--caption-column", path)
    if image_name is not None and caption_name is not None:
        image_at, caption_at = header.index(image_name), header.index(caption_name)
        first_rows: list[tuple[int, list[str]]] = []
        columns = (image_name, caption_name)
    elif image_column is None and caption_column is None and _looks_like_data(header, path):
        # No header: the first row already pairs an image path with a caption.
        image_at, caption_at = 0, 1
        first_rows = [(header_line, header)]
        columns = ("1", "2")
    else:
        raise _no_columns(path, header, "image" if image_name is None else "caption")

    def records() -> Iterator[_Record]:
        def one(line: int, fields: list[str]) -> _Record:
            image = fields[image_at] if image_at < len(fields) else None
            caption = fields[caption_at] if caption_at < len(fields) else None
            return line, image, caption, None

        for line, fields in first_rows:
            yield one(line, fields)
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield reader.line_num, None, None, f"malformed CSV row: {exc}"
                continue
            if any(field.strip() for field in fields):
                yield one(reader.line_num, fields)

    return records(), columns


def _looks_like_data(fields: list[str], path: Path) -> bool:
    if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
        return False
    candidate = Path(fields[0].strip()).expanduser()
    if not candidate.is_absolute():
        candidate = path.resolve().parent / candidate
    return candidate.is_file()


def _json_records(text: str, file_format: str, path: Path, image_column: str | None,
                  caption_column: str | None) -> tuple[Iterator[_Record], tuple[str, str]]:
    parsed: list[tuple[int, object, str | None]] = []  # (line, object, parse problem)
    if file_format == "json":
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise PairsError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(items, list):
            raise PairsError(f"{path}: expected a JSON array of objects or JSON lines")
        parsed = [(index, item, None) for index, item in enumerate(items, start=1)]
    else:
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                parsed.append((line_number, json.loads(line), None))
            except ValueError as exc:
                parsed.append((line_number, None, f"not valid JSON: {exc.msg}"))
    objects = [item for _, item, problem in parsed if problem is None and isinstance(item, dict)]
    if not objects:
        raise PairsError(f"{path}: no JSON objects found (one object per line, e.g. "
                         '{"image": "a.jpg", "caption": "a red circle"})')
    keys = list(dict.fromkeys(key for item in objects for key in item))
    image_name = _pick_column(keys, image_column, IMAGE_COLUMNS, "image", "--image-column", path)
    caption_name = _pick_column(keys, caption_column, CAPTION_COLUMNS, "caption", "--caption-column", path)
    if image_name is None or caption_name is None:
        raise _no_columns(path, keys, "image" if image_name is None else "caption")

    def records() -> Iterator[_Record]:
        for line, item, problem in parsed:
            if problem is not None:
                yield line, None, None, problem
            elif not isinstance(item, dict):
                yield line, None, None, "not a JSON object"
            else:
                image, caption = item.get(image_name), item.get(caption_name)
                yield (line, None if image is None else str(image),
                       None if caption is None else str(caption), None)

    return records(), (image_name, caption_name)


def _check_row(row: int, image: str | None, caption: str | None, folder: Path) -> tuple[str | None, Pair | None]:
    if image is None or not image.strip():
        return "no image path", None
    if caption is None or not caption.strip():
        return f"empty caption for {image.strip()}", None
    image_path = Path(image.strip()).expanduser()
    if not image_path.is_absolute():
        image_path = folder / image_path
    image_path = Path(os.path.normpath(image_path))
    if not image_path.is_file():
        return f"image not found: {image_path}", None
    return None, Pair(image=image_path, caption=" ".join(caption.split()), row=row)


@dataclass(frozen=True)
class PairIndex:
    """Pairs as ids into their unique images and unique captions (several rows may share either)."""

    images: tuple[Path, ...]
    captions: tuple[str, ...]
    image_ids: np.ndarray  # per pair, int64
    caption_ids: np.ndarray  # per pair, int64

    def __len__(self) -> int:
        return len(self.image_ids)


def index_pairs(pairs: Sequence[Pair]) -> PairIndex:
    image_slots: dict[Path, int] = {}
    caption_slots: dict[str, int] = {}
    image_ids = [image_slots.setdefault(pair.image, len(image_slots)) for pair in pairs]
    caption_ids = [caption_slots.setdefault(pair.caption, len(caption_slots)) for pair in pairs]
    return PairIndex(
        images=tuple(image_slots),
        captions=tuple(caption_slots),
        image_ids=np.asarray(image_ids, dtype=np.int64),
        caption_ids=np.asarray(caption_ids, dtype=np.int64),
    )


def split_pairs(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, held out): about `fraction` of the distinct images, with every row that uses them, held out.

    Splitting by image keeps one picture from landing on both sides. At least one image is held out
    when fraction > 0 and at least one stays for training.
    """
    if not 0 <= fraction < 1:
        raise PairsError(f"the held-out fraction must be in [0, 1), got {fraction}")
    images = list(dict.fromkeys(pair.image for pair in pairs))
    if fraction == 0 or len(images) < 2:
        return list(pairs), []
    count = min(len(images) - 1, max(1, round(len(images) * fraction)))
    order = np.random.default_rng([seed, 7919]).permutation(len(images))
    held = {images[i] for i in order[:count]}
    return [p for p in pairs if p.image not in held], [p for p in pairs if p.image in held]


def drop_failed_images(pairs: Sequence[Pair], failures: dict[Path, str],
                       on_skip: OnSkip | None = None) -> tuple[list[Pair], list[SkippedRow]]:
    """Pairs whose image decoded, and a SkippedRow for every row whose image did not."""
    kept, skipped = [], []
    for pair in pairs:
        reason = failures.get(pair.image)
        if reason is None:
            kept.append(pair)
            continue
        skip = SkippedRow(pair.row, f"unreadable image {pair.image}: {reason}")
        skipped.append(skip)
        if on_skip is not None:
            on_skip(skip)
    return kept, skipped
