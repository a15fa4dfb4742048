"""The folders an index was given, each with its scan settings, and the paths forgotten under them.

A root remembers what it was indexed with (`--exclude`, `--hidden`, `--follow-outside`,
`--video-frames`), so the
next plain `mmsearch index` walks it the same way; and `mmsearch forget PATH` under a root is kept
as an exclusion, so indexing the root again does not bring PATH back (indexing PATH itself does).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace

from sqlalchemy import delete, select

from indexer.store.database import Database
from indexer.store.schema import RootRow


@dataclass(frozen=True)
class RootSettings:
    path: str  # absolute
    exclude: tuple[str, ...] = ()
    hidden: bool = False
    follow_outside: bool = False
    forgotten: tuple[str, ...] = field(default=())  # absolute paths under `path`, skipped by its walks
    video_frames: str | None = None  # keyframes | dense, as chosen with --video-frames (None: the default)

    def to_json(self) -> str:
        return json.dumps({"exclude": list(self.exclude), "hidden": self.hidden,
                           "follow_outside": self.follow_outside, "forgotten": list(self.forgotten),
                           **({"video_frames": self.video_frames} if self.video_frames else {})})

    @classmethod
    def from_json(cls, path: str, text: str) -> "RootSettings":
        data = json.loads(text or "{}")
        return cls(path, tuple(data.get("exclude", ())), bool(data.get("hidden", False)),
                   bool(data.get("follow_outside", False)), tuple(data.get("forgotten", ())),
                   data.get("video_frames") or None)

    def as_dict(self) -> dict:
        return {"path": self.path, "exclude": list(self.exclude), "hidden": self.hidden,
                "follow_outside": self.follow_outside, "forgotten": list(self.forgotten),
                "video_frames": self.video_frames}


def is_under(path: str, folder: str) -> bool:
    folder = folder.rstrip(os.sep) or os.sep
    return path == folder or path.startswith(folder if folder.endswith(os.sep) else folder + os.sep)


class RootStore:
    def __init__(self, db: Database):
        self.db = db

    def all(self) -> list[RootSettings]:
        with self.db.reading() as session:
            return [RootSettings.from_json(path, settings)
                    for path, settings in session.execute(select(RootRow.path, RootRow.settings).order_by(RootRow.path))]

    def get(self, path: str) -> RootSettings | None:
        with self.db.reading() as session:
            row = session.get(RootRow, path)
            return RootSettings.from_json(row.path, row.settings) if row else None

    def covering(self, path: str) -> RootSettings | None:
        """The root that holds `path` (the deepest one when roots nest), or None."""
        found = [root for root in self.all() if is_under(path, root.path)]
        return max(found, key=lambda root: len(root.path)) if found else None

    def save(self, settings: RootSettings) -> None:
        with self.db.transaction() as session:
            session.merge(RootRow(path=settings.path, settings=settings.to_json()))

    def remember(self, settings: RootSettings) -> RootSettings:
        """Save the settings a run walks `settings.path` with; indexing a path itself takes it out
        of the forgotten list of the roots above it."""
        with self.db.transaction() as session:
            for path, text in session.execute(select(RootRow.path, RootRow.settings)).all():
                root = RootSettings.from_json(path, text)
                if root.path != settings.path and settings.path in root.forgotten:
                    kept = tuple(forgotten for forgotten in root.forgotten if forgotten != settings.path)
                    session.merge(RootRow(path=root.path, settings=replace(root, forgotten=kept).to_json()))
            session.merge(RootRow(path=settings.path, settings=settings.to_json()))
        return settings

    def forget(self, path: str) -> None:
        """`path` leaves the index: a root at or under it is dropped, and a root above it skips it."""
        with self.db.transaction() as session:
            for root_path, text in session.execute(select(RootRow.path, RootRow.settings)).all():
                root = RootSettings.from_json(root_path, text)
                if is_under(root.path, path):
                    session.execute(delete(RootRow).where(RootRow.path == root.path))
                elif is_under(path, root.path) and path not in root.forgotten:
                    session.merge(RootRow(path=root.path, settings=replace(
                        root, forgotten=tuple(sorted(root.forgotten + (path,)))).to_json()))

    def served(self) -> list[tuple[str, tuple[str, ...]]]:
        """(root, its forgotten paths) of every root: what a server may serve files from."""
        return [(root.path, root.forgotten) for root in self.all()]
