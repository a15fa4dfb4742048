"""Shared helpers for the reliability tests (no tests here).

`CliProcess` runs the real `mmsearch` command line (`cli.app.main` with argv) in its own process
that a test can SIGKILL at any moment. Starting a fresh interpreter costs ~5 s of imports (torch,
open_clip) on our 2-core CI, so the processes are forked from a multiprocessing *forkserver* that
imported those modules once: each run is then a new process with its own pid, file descriptors,
SQLite connections and flock, started in milliseconds, dying exactly like a started `mmsearch`
would (no atexit, no finally blocks, no flush). `test_reliability_concurrency.py` also execs the
installed `mmsearch` script once, to prove the real entry point behaves the same.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import TINY_CONFIG

# TINY_CONFIG with a 32-px input and a 2-layer vision tower: the kill trials embed thousands of images.
FAST_CONFIG = {**TINY_CONFIG, "vision_cfg": {**TINY_CONFIG["vision_cfg"], "image_size": 32, "layers": 2}}
PRELOAD = ["cli.app", "cli.index_cmd", "cli.reindex_cmd", "cli.search_cmd", "cli.check_cmd", "indexer.pipeline.sync",
           "indexer.pipeline.reindex", "indexer.integrity", "retrieval.models.encoders", "retrieval.models.towers",
           "retrieval.query.search", "retrieval.indexing",
           "open_clip", "open_clip.model", "faiss", "sqlalchemy", "PIL.Image", "PIL.PngImagePlugin", "numpy"]
_context = None


def write_model(folder: Path, name: str = "fast.json", **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps({**FAST_CONFIG, **changes}))
    return path


def write_tiny_pngs(folder: Path, count: int, size: int = 16, seed: int = 0) -> list[Path]:
    """`count` distinct small noise PNGs (distinct bytes: no vector reuse between them)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for number in range(count):
        path = folder / f"img{number:05d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _cli_context():
    global _context
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        _context = context
    return _context


def _run_cli(args: list[str], stdout_path: str, stderr_path: str, env: dict) -> None:
    """Body of a CliProcess: point fds 1 and 2 at files, then run mmsearch as `mmsearch ARGS`."""
    for fd, path in ((1, stdout_path), (2, stderr_path)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    os.environ.update(env)
    import torch

    torch.set_num_threads(1)  # 2 shared cores: oversubscribed OpenMP threads are 10x slower
    sys.argv = ["mmsearch", *args]
    from cli.app import main

    main()


class CliProcess:
    """`mmsearch ARGS` in a killable process; stdout and stderr go to files in `folder`."""

    def __init__(self, args: list[str], folder: Path, env: dict | None = None):
        folder.mkdir(parents=True, exist_ok=True)
        self.args = [str(arg) for arg in args]
        self.stdout_path, self.stderr_path = folder / "stdout", folder / "stderr"
        defaults = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MMSEARCH_CONFIG": str(folder / "none.toml")}
        self.process = _cli_context().Process(
            target=_run_cli, args=(self.args, str(self.stdout_path), str(self.stderr_path), {**defaults, **(env or {})}),
            daemon=True)
        self.started = time.monotonic()
        self.process.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="backslashreplace") if self.stdout_path.exists() else ""

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="backslashreplace") if self.stderr_path.exists() else ""

    def alive(self) -> bool:
        return self.process.is_alive()

    def wait_until(self, condition, timeout_s: float = 60.0, what: str = "condition") -> bool:
        """Poll condition() until true; False if the process ended first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            if not self.alive():
                return condition()
            time.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}; stderr:\n{self.stderr}")

    def kill(self) -> bool:
        """SIGKILL it now; True if it was still running (a real kill, not a finished run)."""
        running = self.alive()
        if running:
            os.kill(self.pid, signal.SIGKILL)
        self.process.join(30)
        return running and self.process.exitcode == -signal.SIGKILL

    def wait(self, timeout_s: float = 120.0) -> int:
        self.process.join(timeout_s)
        if self.process.is_alive():
            os.kill(self.pid, signal.SIGKILL)
            self.process.join(10)
            raise AssertionError(f"mmsearch {' '.join(self.args)} did not finish in {timeout_s} s:\n{self.stderr}")
        return self.process.exitcode


# --- looking at an index from outside (plain sqlite3, not the code under test) ------------------
def connect(db_folder: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(f"file:{db_folder / 'mmsearch.db'}?mode=ro", uri=True, timeout=30)
    connection.text_factory = lambda data: data.decode("utf-8", "surrogateescape")
    return connection


def count(db_folder: Path, sql: str) -> int:
    if not (db_folder / "mmsearch.db").exists():
        return 0
    try:
        with connect(db_folder) as connection:
            return connection.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # schema not created yet
        return 0


def committed_rows(db_folder: Path) -> dict[str, tuple]:
    """path -> (item id, indexed_at, digest of its vector) for every item with a vector."""
    with connect(db_folder) as connection:
        return {path: (item_id, indexed_at, hashlib.blake2b(blob, digest_size=8).hexdigest())
                for path, item_id, indexed_at, blob in connection.execute(
                    "SELECT items.path, items.id, items.indexed_at, vectors.vector FROM items "
                    "JOIN vectors ON vectors.item_id = items.id")}


def assert_database_consistent(db_folder: Path, dim: int | None = None) -> None:
    """SQLite intact, WAL on (or the index's PostgreSQL database), every row a vector or an error, no
    vector without a row."""
    from contextlib import closing

    from indexer.store.database import connect_read_only
    from indexer.store.location import database_url_of

    url = database_url_of(db_folder)
    with closing(connect_read_only(url)) if url else connect(db_folder) as connection:
        def one(sql: str, *params):
            return connection.execute(sql, params).fetchone()[0]

        if url is None:
            assert one("PRAGMA integrity_check") == "ok"
            assert one("PRAGMA journal_mode") == "wal"
        assert one("SELECT count(*) FROM vectors WHERE item_id NOT IN (SELECT id FROM items)") == 0, "orphan vectors"
        assert one("SELECT count(*) FROM staged_vectors WHERE item_id NOT IN (SELECT id FROM items)") == 0
        assert one("SELECT count(*) FROM items WHERE error IS NULL AND id NOT IN (SELECT item_id FROM vectors)") == 0, \
            "rows with neither vector nor error"
        assert one("SELECT count(*) FROM items") == one("SELECT count(DISTINCT path) FROM items")
        if dim is not None:
            assert one("SELECT count(*) FROM vectors WHERE length(vector) != ?", dim * 4) == 0
