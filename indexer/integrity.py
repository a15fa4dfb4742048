"""Integrity tools: `check_index` reads, `repair_index` fixes what can be fixed from the database.

check is read-only (a `mode=ro` SQLite connection, one snapshot, no lock), so it is safe beside a
running index. It compares SQLite's own integrity check, vectors against rows, the FAISS file
against the database, rows against files on disk, and the recorded model against the model that
loads today. repair takes the write lock, drops what cannot be right (vectors without a row, rows
without a vector, vectors of the wrong size, leftover staged vectors), forgets rows whose files
now hold other content than was indexed (their vectors describe something else; the next index
run embeds the files afresh) and rows whose files are gone only when asked, and rebuilds the
FAISS file from the vectors in the database.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np

from indexer.errors import MmsearchError, StoreError
from indexer.media.files import content_hash as content_hash_of
from indexer.media.files import read_file_checked, sample_file_checked
from indexer.store.inspect import DatabaseFacts, inspect_database, iter_item_paths
from indexer.store.library import DB_NAME, Library, vector_file_name
from indexer.store.records import IMAGE
from indexer.store.vectors import file_digest, sidecar_path
from indexer.store.version import SCHEMA_VERSION

log = logging.getLogger(__name__)

DETAILS_PER_KIND = 20  # problems of one kind listed one by one before a summary line


@dataclass(frozen=True)
class Problem:
    kind: str
    detail: str
    path: str | None = None

    def as_dict(self) -> dict:
        out = {"kind": self.kind, "detail": self.detail}
        if self.path is not None:
            out["path"] = self.path
        return out


@dataclass
class CheckReport:
    db: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    checked: dict = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def kinds(self) -> Counter:
        return Counter(problem.kind for problem in self.problems)

    def listed(self, per_kind: int | None = DETAILS_PER_KIND) -> list[Problem]:
        """Problems with at most `per_kind` of each kind, then one `... and N more` line per kind."""
        if per_kind is None:
            return list(self.problems)
        shown: Counter = Counter()
        out = []
        for problem in self.problems:
            shown[problem.kind] += 1
            if shown[problem.kind] <= per_kind:
                out.append(problem)
        for kind, count in self.kinds().items():
            if count > per_kind:
                out.append(Problem(kind, f"... and {count - per_kind} more of this kind"))
        return out

    def as_dict(self, per_kind: int | None = None) -> dict:
        return {
            "healthy": self.healthy,
            "db": self.db,
            "problems": [problem.as_dict() for problem in self.listed(per_kind)],
            "problem_counts": dict(self.kinds()),
            "notes": list(self.notes),
            **self.facts,
            "checked": dict(self.checked),
        }


def check_index(folder: Path, *, files: bool = True, model: bool = True, quick: bool = False,
                load_model: Callable | None = None) -> CheckReport:
    """Everything that can be wrong with the index in `folder`, read-only."""
    from indexer.store.location import database_url_of

    folder = Path(folder).expanduser().absolute()
    db_path = folder / DB_NAME
    database_url = database_url_of(folder)  # None: SQLite in the folder
    if database_url is None and not db_path.exists():
        raise StoreError(f"no index at {folder}: run `mmsearch index FOLDER` first (or pass --db)")
    target = database_url or db_path
    report = CheckReport(db=str(folder), checked={"files": files, "model": model, "quick": quick})
    try:
        facts = inspect_database(target, quick=quick)
    except sqlite3.DatabaseError as exc:
        report.problems.append(Problem("database_unreadable", f"SQLite cannot read {db_path}: {exc}. It cannot be "
                                                              f"repaired: restore a backup, or move the folder aside "
                                                              f"(mv {folder} {folder}.broken) and run `mmsearch index` "
                                                              f"again"))
        return report
    report.facts = {
        "schema_version": facts.schema_version, "generation": facts.generation,
        "counts": {"rows": facts.rows, "vectors": facts.vectors, "failed": facts.failed, "staged": facts.staged},
        "model": _model_dict(facts.model),
    }
    if facts.integrity != ["ok"]:
        for message in facts.integrity:
            report.problems.append(Problem("integrity", f"SQLite {'quick_check' if quick else 'integrity_check'}: {message}"))
    if facts.schema_version is None:
        empty = database_url is None and db_path.stat().st_size == 0
        report.problems.append(Problem("schema", "the database has no mmsearch schema" + (
            " (it is empty, 0 bytes: truncated or replaced; restore a backup, or move the folder aside and run "
            "`mmsearch index FOLDER` again)" if empty else
            " (not an index, or created by a run killed in its first second: run `mmsearch index` again)")))
        return report
    if facts.schema_version > SCHEMA_VERSION:
        report.problems.append(Problem("schema", f"schema version {facts.schema_version} is newer than this mmsearch "
                                                 f"knows ({SCHEMA_VERSION}); upgrade mmsearch"))
        return report
    if facts.schema_version < SCHEMA_VERSION:
        report.notes.append(f"schema version {facts.schema_version}: the next mmsearch command that opens the index "
                            f"(index, search, status, repair) migrates it to {SCHEMA_VERSION}, in one transaction")
    _check_rows(report, facts)
    for encoder in [IMAGE] + sorted(name for name in facts.models if name != IMAGE):
        _check_vector_file(report, facts, folder, encoder)
    if files:
        _check_files(report, target)
    if model:
        _check_model(report, facts, load_model)
    _notes(report, facts, folder)
    return report


def _model_dict(info) -> dict | None:
    return {"name": info.name, "weights": info.weights, "dim": info.dim, "fingerprint": info.fingerprint} if info else None


def _check_rows(report: CheckReport, facts: DatabaseFacts) -> None:
    for vector_id in facts.orphan_vectors:
        report.problems.append(Problem("orphan_vector", f"vector {vector_id} belongs to no item"))
    for item_id, path in facts.rows_without_vector:
        report.problems.append(Problem("row_without_vector", f"item {item_id} has neither a vector nor an error", path))
    for vector_id, size in facts.bad_vectors:
        report.problems.append(Problem("bad_vector", f"vector {vector_id} has {size} bytes, not a whole vector of its "
                                                     f"encoder's model"))
    for vector_id in facts.orphan_staged:
        report.problems.append(Problem("orphan_staged_vector", f"staged vector {vector_id} belongs to no item"))
    if facts.staged and facts.staged_model is None:
        report.problems.append(Problem("orphan_staged_vector", f"{facts.staged} staged vectors but no reindex in progress"))
    if facts.bad_staged:
        report.problems.append(Problem("bad_vector", f"{facts.bad_staged} staged vectors are not "
                                                     f"{facts.staged_model.dim}-d"))
    for problem in facts.bad_info:
        report.problems.append(Problem("schema_info", f"{problem}; `mmsearch repair` cannot guess the right value: "
                                                      f"move the index folder aside and index again"))
    if facts.model is None and facts.vectors:
        report.problems.append(Problem("model_missing", f"{facts.vectors} vectors but no model recorded"))


def _check_vector_file(report: CheckReport, facts: DatabaseFacts, folder: Path, encoder: str = IMAGE) -> None:
    """One encoder's vector index against the database (the image encoder's facts are `vector_index`,
    the others' `vector_indexes[encoder]`)."""
    from indexer.store import index_choice

    files = index_choice.VectorFiles.of(folder / vector_file_name(encoder))
    path = files.ondisk if (files.ondisk / "manifest.json").exists() else files.memory
    ids_in_db = facts.encoder_vector_ids.get(encoder, facts.vector_ids if encoder == IMAGE else np.zeros(0, np.int64))
    good = np.setdiff1d(ids_in_db, np.asarray(facts.orphan_vectors + [i for i, _ in facts.bad_vectors], np.int64))
    live = len(good)
    model = facts.models.get(encoder, facts.model if encoder == IMAGE else None)
    info: dict = {"path": str(path), "exists": path.exists()}
    if encoder == IMAGE:
        report.facts["vector_index"] = info
    else:
        report.facts.setdefault("vector_indexes", {})[encoder] = info
    if not path.exists():
        if live:
            report.problems.append(Problem("vector_index_missing", f"{path} is missing ({live} vectors in the database); "
                                                                   f"`mmsearch repair` rebuilds it"))
        return
    saved = index_choice.load_saved(files, generation=facts.generation)
    if saved is None:
        report.problems.append(Problem("vector_index_unreadable", f"{path} or its sidecar cannot be read or do not "
                                                                  f"agree; `mmsearch repair` rebuilds it"))
        return
    kind = index_choice.index_kind(saved)
    info.update({"spec": saved.spec, "generation": saved.generation, "ntotal": saved.ntotal, "dim": saved.dim,
                 "kind": kind})
    if kind == "memory":  # an on-disk index's files are new with each save and named by its manifest
        try:
            recorded = json.loads(sidecar_path(path).read_text()).get("file_blake2b")
        except (OSError, ValueError):
            recorded = None
        if recorded is None:
            report.notes.append(f"{path} was written by an older mmsearch without a digest of its bytes: its content "
                                f"is checked by count and ids only (the next run that changes the index adds one)")
        elif file_digest(path) != recorded:
            report.problems.append(Problem(
                "vector_index_corrupt", f"{path} is not the file that was written (its bytes changed: a disk error, "
                                        f"or an edit); searches may rank wrongly; `mmsearch repair` rebuilds it from "
                                        f"the database"))
            return
    if saved.generation != facts.generation:
        report.problems.append(Problem(
            "vector_index_stale", f"{path} was built at generation {saved.generation}, the database is at "
                                  f"{facts.generation} (a run is in progress or was interrupted; searches rebuild it in "
                                  f"memory meanwhile; the next run or `mmsearch repair` rewrites it)"))
        return  # counts and ids of an older generation are expected to differ
    if model is not None and saved.dim != model.dim:
        report.problems.append(Problem("vector_index_dim", f"{path} holds {saved.dim}-d vectors, the model "
                                                           f"makes {model.dim}-d"))
    if saved.ntotal != live:
        report.problems.append(Problem("vector_index_count", f"{path} holds {saved.ntotal} vectors, the database "
                                                             f"{live}"))
    try:
        ids = np.sort(saved.ids())
    except (AttributeError, RuntimeError) as exc:
        report.problems.append(Problem("vector_index_unreadable", f"{path} has no id map ({exc})"))
        return
    if not np.array_equal(ids, good):
        extra, lacking = np.setdiff1d(ids, good), np.setdiff1d(good, ids)
        report.problems.append(Problem("vector_index_ids", f"{path} holds {len(extra)} ids the database has no vector "
                                                           f"for and lacks {len(lacking)} it has"))


def _check_files(report: CheckReport, db_path: Path | str) -> None:
    missing, changed = 0, []
    for rows in iter_item_paths(db_path):
        for item_id, path, size, mtime in rows:
            try:
                stat = _stat_or_none(path)
            except OSError as exc:
                report.notes.append(f"cannot look at {path}: {exc.strerror or exc}")
                continue
            if stat is None:
                missing += 1
                report.problems.append(Problem("missing_file", f"item {item_id}: the file is gone; `mmsearch repair "
                                                               f"--drop-missing` forgets it (or index its folder again)",
                                               path))
            elif size >= 0 and (stat.st_size, stat.st_mtime) != (size, mtime):
                changed.append(path)
    report.facts["missing_files"] = missing
    report.facts["changed_files"] = len(changed)
    if changed:  # its vector describes what the file held when indexed: the next run re-embeds it
        report.notes.append(f"{len(changed)} files changed since they were indexed (e.g. {changed[0]}): their "
                            f"vectors describe the old content until the next `mmsearch index` of their folder "
                            f"(repair cannot tell what a file should hold)")


def _stat_or_none(path: str):
    """The file's stat, None when it is gone; OSError when that cannot be told (permissions, I/O)."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _holds(path: str, size_now: int, size_indexed: int, content_hash: str | None) -> bool:
    """Whether the file at `path` still holds what was indexed from it: its stat changed, so its
    content hash tells (whole-file for pictures, sampled for streamed sounds and videos)."""
    if size_now != size_indexed or content_hash is None:
        return False
    try:
        if sample_file_checked(path)[0] == content_hash:
            return True
        return content_hash_of(read_file_checked(path)[0]) == content_hash
    except (OSError, MmsearchError):
        return True  # cannot read it now: keep it, as a file that cannot be looked at


def _check_model(report: CheckReport, facts: DatabaseFacts, load_model: Callable | None) -> None:
    if facts.model is None:
        return
    if load_model is None:  # the caller gives the model layer's factory; without one the model is not checked
        report.notes.append("the model was not checked (no model loader given)")
        return
    recorded = facts.model
    try:
        model = load_model(recorded.name, device="cpu")
        info = model.info
    except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
        report.problems.append(Problem("model_unavailable", f"the index's model {recorded.name} cannot be loaded: {exc}"))
        return
    if info.fingerprint != recorded.fingerprint or info.dim != recorded.dim:
        report.problems.append(Problem(
            "model_changed", f"{recorded.name} now has fingerprint {info.fingerprint[:12]} ({info.dim}-d), the index "
                             f"was built with {recorded.fingerprint[:12]} ({recorded.dim}-d): its vectors no longer match "
                             f"queries; `mmsearch reindex --model {recorded.name}` re-embeds them"))
        return
    try:
        model.image  # noqa: B018 - building the towers proves the weights load
        model.text  # noqa: B018
    except Exception as exc:  # noqa: BLE001
        report.problems.append(Problem("model_unavailable", f"the weights of {recorded.name} do not load: {exc}"))


def _notes(report: CheckReport, facts: DatabaseFacts, folder: Path) -> None:
    if facts.staged_model is not None:
        report.notes.append(f"a reindex to {facts.staged_model.name} is half done ({facts.staged} of {facts.vectors} "
                            f"staged); run it again to finish")
    run = facts.last_run
    if run and run["finished_at"] is None:
        when = datetime.fromtimestamp(run["started_at"]).strftime("%Y-%m-%d %H:%M")
        report.notes.append(f"the last {run['command']} run (started {when}) did not finish, or is still running; "
                            f"its finished batches are kept and the next run resumes")
    for leftover in _leftovers(folder):
        report.notes.append(f"leftover temporary file {leftover} (from an interrupted save; repair removes it)")


def _leftovers(folder: Path) -> list[Path]:
    """Files and folders an interrupted save or export left behind (`name.tmp`, `name.tmp-PID`)."""
    return sorted(path for path in folder.iterdir() if path.name.endswith(".tmp") or ".tmp-" in path.name)


@dataclass
class RepairReport:
    dropped: dict = field(default_factory=dict)
    vectors_in_index: int = 0
    removed_files: list[str] = field(default_factory=list)
    changed_files: list[str] = field(default_factory=list)  # forgotten: their files hold other content now

    def as_dict(self) -> dict:
        return {"dropped": dict(self.dropped), "vectors_in_index": self.vectors_in_index,
                "removed_files": list(self.removed_files), "changed_files": list(self.changed_files)}


def repair_index(library: Library, *, drop_missing: bool = False) -> RepairReport:
    """Make the index consistent again. Call with the library's write lock held.

    Refuses a database SQLite itself reports damaged: that needs a backup or a fresh index.
    """
    facts = inspect_database(library.database_target, quick=True)
    if facts.integrity != ["ok"]:
        raise StoreError(
            f"SQLite reports {library.db_path} damaged ({'; '.join(facts.integrity[:3])}); repair cannot fix that. "
            f"Restore a backup of the index folder, or move it away and run `mmsearch index` again"
        )
    missing_ids: list[int] = []
    candidates: dict[int, tuple[str, int, int]] = {}  # stat changed since indexed: (path, size now, size then)
    for rows in iter_item_paths(library.database_target):
        for item_id, path, size, mtime in rows:
            try:
                stat = _stat_or_none(path)
            except OSError as exc:  # cannot tell: keep it
                log.info("keeping %s: %s", path, exc)
                continue
            if stat is None:
                if drop_missing:
                    missing_ids.append(item_id)
            elif size >= 0 and (stat.st_size, stat.st_mtime) != (size, mtime):
                candidates[item_id] = (path, stat.st_size, size)
    hashes = library.reads.content_hashes(list(candidates))
    changed = {item_id: path for item_id, (path, size_now, size_then) in candidates.items()
               if not _holds(path, size_now, size_then, hashes.get(item_id))}
    report = RepairReport(changed_files=sorted(changed.values()))
    base_generation = library.generation
    staged = library.staging.model()
    report.dropped = library.items.drop_inconsistent(dims={encoder: model.dim for encoder, model in facts.models.items()},
                                                     staged_dim=staged.dim if staged else None,
                                                     missing_ids=missing_ids, changed_ids=list(changed))
    for leftover in _leftovers(library.folder):  # the write lock is held: no run is writing them now
        try:
            shutil.rmtree(leftover) if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink()
            report.removed_files.append(str(leftover))
        except FileNotFoundError:
            pass
    for encoder in [IMAGE] + sorted(name for name in facts.models if name != IMAGE):  # every encoder's index
        saved = library.update_vector_file(encoder, base_generation=base_generation, rebuild=True)
        if saved is None:  # no model: nothing can be indexed, so no vector file should claim otherwise
            for path in (library.vectors_path(encoder), sidecar_path(library.vectors_path(encoder))):
                if path.exists():
                    path.unlink()
                    report.removed_files.append(str(path))
            ondisk_folder = library.vector_files(encoder).ondisk
            if ondisk_folder.exists():
                shutil.rmtree(ondisk_folder, ignore_errors=True)
                report.removed_files.append(str(ondisk_folder))
        report.vectors_in_index += saved.ntotal if saved is not None else 0
    return report
