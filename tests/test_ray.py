"""Embedding on Ray: a real head started here on a free port, the same index as a local run.

The head runs as `ray start --head --block` in its own process, stopped by its pid at the end.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from conftest import write_image
from indexer.store.library import Library

ray = pytest.importorskip("ray")
runner = CliRunner()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--port", str(port),
               "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--include-dashboard", "false",
               "--disable-usage-stats", "--temp-dir", str(temp)]
    # loopback only, and the same on every machine: no token authentication on either side (Ray 2.5x
    # turns it on by itself once ~/.ray/auth_token exists, e.g. after any `ray.init()` of a local cluster)
    saved_mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray head exited: {head.stderr.read().decode()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    yield address
    if ray.is_initialized():
        ray.shutdown()
    head.terminate()
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait()
    if saved_mode is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = saved_mode


def _vectors(db) -> dict[str, np.ndarray]:
    with Library(db, create=False) as library:
        records = library.reads.items(range(1, 100))
        return {os.path.basename(record.path): library.reads.item_vectors(record.id, 64)[0] for record in records.values()
                if len(library.reads.item_vectors(record.id, 64))}


def test_an_unreachable_cluster_is_one_error_line(tmp_path, tiny_model_config):
    assert not ray.is_initialized()  # runs before the cluster test joins this process to a cluster
    pics = tmp_path / "pics"
    write_image(pics / "a.png", 1)
    result = runner.invoke(app, ["index", str(pics), "--db", str(tmp_path / "db"), "--model", str(tiny_model_config),
                                 "--ray", f"127.0.0.1:{_free_port()}"])
    assert result.exit_code == 1 and "cannot reach the Ray cluster" in result.stderr


def test_an_index_embedded_on_a_ray_cluster_is_the_local_one(ray_head, tmp_path, tiny_model_config):
    pics = tmp_path / "pics"
    for seed in range(12):
        write_image(pics / f"p{seed:02d}.png", seed)
    (pics / "broken.png").write_bytes(b"not a picture")
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert runner.invoke(app, ["index", str(pics), "--db", str(local), "--model", str(tiny_model_config)]).exit_code == 0
    result = runner.invoke(app, ["index", str(pics), "--db", str(remote), "--model", str(tiny_model_config),
                                 "--ray", ray_head, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["embedded"], summary["failed"]) == (12, 1)
    assert summary["embedding"]["where"] == "ray" and summary["embedding"]["address"] == ray_head
    assert summary["embedding"]["actors"] >= 1 and "embedded on Ray at" in result.stderr
    here, there = _vectors(local), _vectors(remote)
    assert here.keys() == there.keys() and len(here) == 12
    for name, vector in here.items():  # the same int8 tower (its activations scaled per batch): cos ~1
        assert float(vector @ there[name]) > 0.999, name
    for db in (local, remote):
        hits = json.loads(runner.invoke(app, ["search", "--image", str(pics / "p03.png"), "--db", str(db),
                                              "--json", "--top", "1"]).stdout)
        assert hits[0]["path"].endswith("p03.png")
    (pics / "p00.png").rename(pics / "moved.png")  # incremental, as a local run: nothing re-embedded
    again = json.loads(runner.invoke(app, ["index", str(pics), "--db", str(remote), "--ray", ray_head,
                                           "--json"]).stdout)
    assert (again["embedded"], again["reused"], again["removed"]) == (0, 1, 1)
    check = json.loads(runner.invoke(app, ["check", "--db", str(remote), "--json", "--no-model"]).stdout)
    assert check["healthy"], check["problems"]


def test_sounds_are_embedded_on_the_ray_actors_as_here(ray_head, tmp_path, tiny_model_config):
    pytest.importorskip("av")
    from test_audio import RATE, tone, varied, write_wav

    media = tmp_path / "media"
    media.mkdir()
    write_wav(media / "long.wav", varied(25, seed=5))  # windows at 0, 5, 10, 15 s
    write_wav(media / "beep.wav", tone(660, 1.0))
    (media / "broken.wav").write_bytes(b"RIFF but nothing else")
    write_image(media / "photo.png", 4)
    local, remote = tmp_path / "local", tmp_path / "remote"
    args = ["--model", str(tiny_model_config), "--audio-model", "bundled", "--json"]
    assert runner.invoke(app, ["index", str(media), "--db", str(local), *args]).exit_code == 0
    result = runner.invoke(app, ["index", str(media), "--db", str(remote), *args, "--ray", ray_head])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["embedded"], summary["failed"]) == (3, 1) and summary["embedding"]["where"] == "ray"
    with Library(local, create=False) as here, Library(remote, create=False) as there:
        assert here.reads.counts_by_modality() == there.reads.counts_by_modality() == {"image": 1, "audio": 2}
        assert there.model("audio").fingerprint == here.model("audio").fingerprint
        for name in ("long.wav", "beep.wav"):
            ids = [next(record.id for record in library.reads.items(range(1, 20)).values()
                        if record.path.endswith(name)) for library in (here, there)]
            mine, theirs = (library.reads.item_vectors(item_id, 256, "audio") for library, item_id in zip((here, there), ids))
            assert mine.shape == theirs.shape and len(mine) == (4 if name == "long.wav" else 1)
            assert np.allclose(mine, theirs, atol=1e-4), name  # the same tower on the same windows
    excerpt = write_wav(tmp_path / "excerpt.wav", varied(25, seed=5)[10 * RATE:20 * RATE])
    hits = json.loads(runner.invoke(app, ["search", "--audio", str(excerpt), "--db", str(remote), "--json"]).stdout)
    assert hits[0]["path"].endswith("long.wav") and hits[0]["time"] == 10.0


@pytest.mark.slow
def test_a_killed_driver_resumes_and_redoes_at_most_the_batches_in_flight(ray_head, tmp_path, tiny_model_config):
    from test_reliability_support import CliProcess, assert_database_consistent, committed_rows, count, write_tiny_pngs

    if ray.is_initialized():  # this process's own driver from an earlier test: its actors leave the head's CPUs
        ray.shutdown()

    pics, db = tmp_path / "pics", tmp_path / "db"
    write_tiny_pngs(pics, 400)
    process = CliProcess(["index", pics, "--db", db, "--model", tiny_model_config, "--ray", ray_head], tmp_path / "run1")
    process.wait_until(lambda: count(db, "SELECT count(*) FROM vectors") > 0, timeout_s=900, what="a first batch")
    assert process.kill(), "the run ended before it could be killed"
    before = committed_rows(db)
    assert 0 < len(before) < 400
    assert_database_consistent(db)
    result = runner.invoke(app, ["index", str(pics), "--db", str(db), "--ray", ray_head, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["embedded"] == 400 - len(before) and summary["unchanged"] == len(before)
    after = committed_rows(db)
    assert {path: after[path] for path in before} == before  # nothing committed was redone
    assert len(after) == 400
    assert_database_consistent(db)
