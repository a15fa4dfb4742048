"""The log of runs: what each `index` / `reindex` / `forget` did, and which folders were ever indexed."""
from __future__ import annotations

import time
from typing import Sequence

from sqlalchemy import select, update

from indexer.store.database import Database
from indexer.store.schema import Run

COUNTS = ("embedded", "reused", "removed", "failed", "unchanged", "seconds")


class RunLog:
    def __init__(self, db: Database):
        self.db = db

    def start(self, command: str, roots: Sequence[str]) -> int:
        with self.db.transaction() as session:
            run = Run(command=command, roots="\n".join(roots), started_at=time.time())
            session.add(run)
            session.flush()
            return run.id

    def finish(self, run_id: int, **counts) -> None:
        unknown = set(counts) - set(COUNTS)
        if unknown:
            raise ValueError(f"unknown run counts {sorted(unknown)}")
        with self.db.transaction() as session:
            session.execute(update(Run).where(Run.id == run_id).values(finished_at=time.time(), **counts))

    def last(self, command: str | None = None) -> dict | None:
        with self.db.reading() as session:
            query = select(Run).order_by(Run.id.desc())
            if command is not None:
                query = query.where(Run.command == command)
            run = session.scalars(query).first()
            if run is None:
                return None
            return {
                "command": run.command, "roots": run.roots.split("\n"), "started_at": run.started_at,
                "finished_at": run.finished_at, "embedded": run.embedded, "reused": run.reused,
                "removed": run.removed, "failed": run.failed, "unchanged": run.unchanged, "seconds": run.seconds,
            }

    def indexed_roots(self) -> list[str]:
        """Every folder (or file) an `index` run was given, as given (absolute)."""
        with self.db.reading() as session:
            listed = session.scalars(select(Run.roots).where(Run.command == "index")).all()
        return sorted({root for text in listed for root in text.split("\n") if root})

    def root_history(self) -> list[tuple[str, tuple[str, ...]]]:
        """(command, paths) of every `index` and `forget` run, oldest first: what the web server may serve
        (retrieval.server.files.ServedFolders)."""
        with self.db.reading() as session:
            rows = session.execute(select(Run.command, Run.roots).where(Run.command.in_(("index", "forget")))
                                   .order_by(Run.id)).all()
        return [(command, tuple(root for root in roots.split("\n") if root)) for command, roots in rows]

