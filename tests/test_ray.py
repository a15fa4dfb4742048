"""Embedding on Ray: a real head started here on a free port, the same index as a local run.

The head runs as `ray start --head --block` in its own process, stopped by its pid at the end.
"""
from __future__ import annotations

import json
import os
import signal
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
def ray_head_process(tmp_path_factory):
    """(address, pid of the `ray start --head --block` process) of a head started here."""
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--port", str(port),
               "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--include-dashboard", "false",
               "--disable-usage-stats", "--temp-dir", str(temp)]
    # loopback only, and the same on every machine: no token authentication on either side (Ray 2.5x
    # turns it on by itself once ~/.ray/auth_token exists, e.g. after any `ray.init()` of a local cluster)
    saved_mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # workers as nice as the tests (Ray adds 15 to the head's niceness: under `nice -n 15` they crawl)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_worker_niceness": "0"}
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
    yield address, head.pid
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


@pytest.fixture(scope="module")
def ray_head(ray_head_process):
    return ray_head_process[0]


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc: each one's parent)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rpartition(")")[2].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _embed_actor_pids(head_pid: int) -> list[int]:
    """This head's embedding actors: Ray titles a worker process after its actor class."""
    pids = []
    for pid in _descendants(head_pid):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "_EmbedActor" in title:
            pids.append(pid)
    return pids


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


def test_words_are_read_by_default_and_the_actors_text_test_spares_the_driver_a_decode(ray_head, tmp_path,
                                                                                       tiny_model_config, monkeypatch):
    from test_ocr import needs_tesseract_here, smooth_photo, text_picture

    import indexer.pipeline.words as words_pass

    needs_tesseract_here()
    pics = tmp_path / "pics"
    text_picture(pics / "slide.png", ["Quarterly review", "- harbor 4821", "- next steps"])
    for seed in range(3):
        smooth_photo(pics / f"photo{seed}.jpg", seed)
    opened = []
    read_file = words_pass.read_file
    monkeypatch.setattr(words_pass, "read_file", lambda path: opened.append(os.path.basename(path)) or read_file(path))
    db = tmp_path / "db"
    result = runner.invoke(app, ["index", str(pics), "--db", str(db), "--model", str(tiny_model_config),
                                 "--ray", ray_head, "--json"])  # no --ocr: auto for a new index
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["embedding"]["where"] == "ray"
    assert (summary["words"]["read"], summary["words"]["skipped"]) == (1, 3), summary["words"]
    assert opened == ["slide.png"]  # the photos were tested on the actors, where decoded: not read again here
    hits = json.loads(runner.invoke(app, ["search", "--ocr", "harbor 4821", "--db", str(db), "--json"]).stdout)
    assert hits[0]["path"].endswith("slide.png")


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


@pytest.mark.slow
def test_a_lost_actor_is_restarted_and_every_file_is_embedded_once(ray_head_process, tmp_path, tiny_model_config):
    from test_reliability_support import CliProcess, assert_database_consistent, committed_rows, count, write_tiny_pngs

    if ray.is_initialized():  # this process's own driver from an earlier test: its actors leave the head's CPUs
        ray.shutdown()
    address, head_pid = ray_head_process
    pics, db = tmp_path / "pics", tmp_path / "db"
    total = 2000  # work left for the actor when it is killed, after the first batch came back
    write_tiny_pngs(pics, total, size=48)
    process = CliProcess(["index", pics, "--db", db, "--model", tiny_model_config, "--ray", address, "--json"],
                         tmp_path / "run")
    assert process.wait_until(lambda: count(db, "SELECT count(*) FROM vectors") > 0, timeout_s=900,
                              what="a first batch"), process.stderr
    actors = _embed_actor_pids(head_pid)
    assert len(actors) == 1, actors  # a 2-CPU head: one actor with both CPUs
    os.kill(actors[0], signal.SIGKILL)
    assert process.wait(timeout_s=900) == 0, process.stderr
    summary = json.loads(process.stdout)  # only the summary: Ray's note of the lost worker went to the log
    assert (summary["embedded"], summary["failed"]) == (total, 0)
    # the files after the kill were embedded by the actor Ray started again, in a new process
    assert summary["embedding"]["actor_processes"] == 2, summary["embedding"]
    assert actors[0] not in _embed_actor_pids(head_pid)
    rows = committed_rows(db)
    assert len(rows) == total and {os.path.basename(path) for path in rows} == {p.name for p in pics.iterdir()}
    assert count(db, "SELECT count(*) FROM items") == total == count(db, "SELECT count(*) FROM vectors")
    assert_database_consistent(db)


def test_a_local_node_starts_while_this_process_sets_the_encoders_up(monkeypatch):
    """`--ray local`: the encoders the run's files reach are set up here (a new index's one-time
    export) on a thread while the node starts, not after it by the actor; never for a remote cluster."""
    import threading

    import retrieval.ray_embed as ray_embed
    from indexer.store.records import IMAGE

    events = []

    class Encoder:
        def __init__(self, name):
            self.name = name

        def warm(self):
            events.append(("warm", self.name, threading.current_thread().name))
            time.sleep(0.2)
            events.append(("warmed", self.name))

    class Here:
        encoders = {IMAGE: Encoder(IMAGE), "audio": Encoder("audio")}

        def encoders_for(self, extensions):
            return [IMAGE] if ".png" in extensions else list(self.encoders)

    def connect(address):
        events.append(("connect", address))
        time.sleep(0.1)
        events.append(("connected", address))
        return {"CPU": 2.0}

    monkeypatch.setattr(ray_embed, "connect", connect)
    monkeypatch.setattr(ray_embed, "_ray", lambda: type("R", (), {"nodes": staticmethod(lambda: [])}))
    monkeypatch.setattr(ray_embed, "plan_actors", lambda nodes, options, use_gpus: ray_embed.ActorPlan(1, 2.0, 0.0))
    recipe = ray_embed.ModelRecipe("m", "onnx-int8", "/nowhere")
    embedding = ray_embed.RayEmbedding(ray_embed.RayOptions("local"), recipe, "cpu", here=Here())
    embedding.prepare(lambda event: None, {".png"})
    assert ("warm", IMAGE, "warm-encoders") in events and not any(event[1] == "audio" for event in events)
    assert events.index(("connect", "local")) < events.index(("warmed", IMAGE))  # side by side, not one after the other
    assert ("warmed", IMAGE) in events  # joined before prepare returned
    events.clear()
    ray_embed.RayEmbedding(ray_embed.RayOptions("10.0.0.1:6379"), recipe, "cpu", here=Here()).prepare(lambda e: None, {".png"})
    assert events == [("connect", "10.0.0.1:6379"), ("connected", "10.0.0.1:6379")]  # the actors' machines set up their own


def test_ray_local_from_the_command_line_embeds_every_file(tmp_path, tiny_model_config):
    pics = tmp_path / "pics"
    for seed in range(6):
        write_image(pics / f"p{seed}.png", seed)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    command = [str(Path(sys.executable).with_name("mmsearch")), "index", str(pics), "--db", str(tmp_path / "db"),
               "--model", str(tiny_model_config), "--ray", "local", "--ocr", "off", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["embedded"] == 6 and summary["embedding"]["address"] == "local"
    assert summary["embedding"]["actor_processes"] == 1
    assert (tmp_path / "db" / "image_encoder").is_dir()  # the index's export, on this machine (the unit test
    # above shows it is made by this process while the node starts)
