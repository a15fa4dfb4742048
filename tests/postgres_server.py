"""A real PostgreSQL 15 for the tests: `initdb` in a temp dir, `pg_ctl` on a free port, stopped by its
process id afterwards. Skips (with the reason) where the binaries or psycopg are absent.

As root the server runs as the `postgres` user (PostgreSQL refuses to run as root), in a temp dir
that user owns. Each test that wants a database gets its own (`new_database`).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

BIN = Path(os.environ.get("MMSEARCH_PG_BIN", "/usr/lib/postgresql/15/bin"))


@dataclass
class PostgresServer:
    port: int
    user: str
    data: Path
    pid: int

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh UTF-8 database (template0: no extensions yet); returns its URL."""
        import psycopg

        name = "mms_" + uuid.uuid4().hex[:12]
        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres",
                             autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'")
        return self.url(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def why_unavailable() -> str | None:
    if not (BIN / "initdb").exists() or not (BIN / "pg_ctl").exists():
        return f"PostgreSQL 15 binaries not found in {BIN} (Debian: apt install postgresql-15 postgresql-contrib)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'mmsearch[postgres]')"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: cannot start PostgreSQL as another user"
    return None


def start() -> PostgresServer:
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    user = "postgres" if as_root else os.environ.get("USER", "postgres")
    base = Path(tempfile.mkdtemp(prefix="mms-pg-"))
    if as_root:
        shutil.chown(base, "postgres", "postgres")
    data = base / "data"
    subprocess.run(run_as + [str(BIN / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8",
                             "--locale=C.UTF-8"], check=True, capture_output=True)
    port = _free_port()
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    subprocess.run(run_as + [str(BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"), "-w",
                             "-t", "60", "start"], check=True, capture_output=True)
    pid = int((data / "postmaster.pid").read_text().split()[0])
    return PostgresServer(port=port, user=user, data=data, pid=pid)


def stop(server: PostgresServer) -> None:
    """SIGINT to the postmaster (a fast shutdown), wait for it, remove its files."""
    try:
        os.kill(server.pid, signal.SIGINT)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(server.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    shutil.rmtree(server.data.parent, ignore_errors=True)
