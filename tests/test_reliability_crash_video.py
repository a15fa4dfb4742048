"""Crash safety for videos: `mmsearch index` SIGKILLed at seeded random moments over a folder of clips.

A video is one item with many vectors (its moments), written in one transaction with its row: after
every kill, each committed video keeps exactly the vectors it had (none lost, none doubled, none
rewritten), and the resumed run embeds only the videos that were not committed. The kill harness
is test_reliability_crash's (a forked `mmsearch` process, SIGKILL).
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
import time

import pytest
from test_reliability_crash import _check_json
from test_reliability_support import CliProcess, assert_database_consistent, connect, count, write_model
from test_video import make_clip

pytest.importorskip("av")

CLIPS = 48
BATCH = 4  # segments per embedding call: a batch is a video or two
VIDEOS_DONE = "SELECT count(DISTINCT item_id) FROM vectors"


@pytest.fixture(scope="module")
def clip_pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("video-pool") / "clips"
    folder.mkdir()
    for number in range(CLIPS):  # three shots of a second each, keyframes every second: three moments or so
        make_clip(folder / f"clip{number:03d}.mp4", [1000 + 3 * number, 1001 + 3 * number, 1002 + 3 * number],
                  seconds=1.0, fps=10, gop=10)
    return folder


def committed_videos(db) -> dict[str, tuple]:
    """path -> (item id, indexed_at, its vectors as sorted (start_s, digest) pairs)."""
    out: dict[str, tuple] = {}
    with connect(db) as connection:
        rows = connection.execute("SELECT items.path, items.id, items.indexed_at, vectors.start_s, vectors.vector "
                                  "FROM items JOIN vectors ON vectors.item_id = items.id ORDER BY vectors.id")
        for path, item_id, indexed_at, start_s, blob in rows:
            _, _, moments = out.setdefault(path, (item_id, indexed_at, []))
            moments.append((start_s, hashlib.blake2b(blob, digest_size=8).hexdigest()))
    return {path: (item_id, indexed_at, tuple(sorted(moments))) for path, (item_id, indexed_at, moments) in out.items()}


def assert_no_moment_twice(db) -> None:
    with connect(db) as connection:
        doubled = connection.execute("SELECT item_id, start_s, count(*) FROM vectors GROUP BY item_id, start_s "
                                     "HAVING count(*) > 1").fetchall()
    assert not doubled, f"moments stored twice: {doubled[:3]}"


def kill_at_random_moment(process: CliProcess, db, rng: random.Random) -> bool:
    """Kill during start-up (1 in 4), else after 1-8 more videos committed, with a little jitter so
    the kill lands anywhere in decode / embed / commit. True if it was a real kill."""
    done = count(db, VIDEOS_DONE)
    target = min(done + rng.randint(1, 8), CLIPS - 4)
    if rng.random() < 0.25 or target <= done:
        process.wait_until(lambda: "indexing" in process.stderr or count(db, VIDEOS_DONE) > done, what="start")
        time.sleep(rng.uniform(0.0, 0.2))
    else:
        process.wait_until(lambda: count(db, VIDEOS_DONE) >= target, what=f"{target} videos committed")
        time.sleep(rng.uniform(0.0, 0.05))
    return process.kill()


def test_video_index_killed_at_random_moments_resumes_without_losing_or_doubling(tmp_path, clip_pool):
    from indexer.media.preprocess import PreprocessConfig
    from indexer.media.video_reader import VideoReader

    clips = tmp_path / "clips"
    shutil.copytree(clip_pool, clips)
    files = {str(path) for path in clips.iterdir()}
    model = write_model(tmp_path / "models")
    db = tmp_path / "db"
    args = ["index", clips, "--db", db, "--model", model, "--batch-size", BATCH, "--json"]
    rng = random.Random(1616)
    committed: dict[str, tuple] = {}
    kills = 0
    for trial in range(6):
        kills += kill_at_random_moment(CliProcess(args, tmp_path / f"run{trial}"), db, rng)
        if not (db / "mmsearch.db").exists():
            continue
        assert_database_consistent(db, dim=64)
        assert_no_moment_twice(db)
        now = committed_videos(db)
        assert set(now) <= files
        changed = [path for path, row in committed.items() if now.get(path) != row]
        assert not changed, f"trial {trial}: committed videos lost or rewrote vectors: {changed[:3]}"
        committed = now
        problems = _check_json(db, "--no-model")["problem_counts"]
        assert set(problems) <= {"vector_index_stale", "vector_index_missing"}, problems
    assert kills >= 4, "most trials must kill a running process"
    assert 0 < len(committed) < CLIPS, "the kills must land mid-run"

    final = CliProcess(args, tmp_path / "final")
    assert final.wait() == 0, final.stderr
    summary = json.loads(final.stdout)
    assert summary["embedded"] == CLIPS - len(committed)  # nothing committed is embedded again
    assert (summary["unchanged"], summary["failed"], summary["removed"]) == (len(committed), 0, 0)
    rows = committed_videos(db)
    assert set(rows) == files
    assert all(rows[path] == row for path, row in committed.items())
    assert_no_moment_twice(db)
    reader = VideoReader(PreprocessConfig(image_size=32))  # every video holds exactly its moments
    for path, (_, _, moments) in rows.items():
        starts = [segment.start_s for segment in reader.read_path(path, lambda: False).segments]
        assert [start for start, _ in moments] == sorted(starts), path
    assert_database_consistent(db, dim=64)
    report = _check_json(db)
    assert report["healthy"], report["problems"]
    assert report["vector_index"]["ntotal"] == report["counts"]["vectors"] == sum(len(row[2]) for row in rows.values())
