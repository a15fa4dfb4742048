"""Which frames of a video become moments: `--video-frames keyframes` (the default) and `dense`.

Clips are made here with PyAV (tests/test_video.make_clip): shots of 3 s, keyframes 25 s apart
(longer than any clip here) and, where asked, at a shot's first frame. keyframes mode must sample
the keyframes and nothing between them (the decoder never hands it a predicted frame); dense mode
must find every shot, keyframe or not; the mode is remembered for the folder it was given for.
"""
from __future__ import annotations

import json

import pytest
from test_video import make_clip, run

av = pytest.importorskip("av")


def moments(path, frames: str) -> list[float]:
    from indexer.media.preprocess import PreprocessConfig
    from indexer.media.video_reader import VideoReader, VideoReadOptions

    reader = VideoReader(PreprocessConfig(image_size=32), VideoReadOptions(frames=frames))
    return [segment.start_s for segment in reader.read_path(str(path), lambda: False).segments]


def keyframe_times(path) -> list[float]:
    with av.open(str(path)) as container:
        return [round(float(packet.pts * packet.time_base), 3) for packet in container.demux(video=0)
                if packet.is_keyframe and packet.pts is not None]


def test_keyframes_mode_samples_the_keyframes_and_nothing_between(tmp_path):
    # keyframes at the starts of shots 1 and 3 only: shots 2 and 4 start without one
    path = make_clip(tmp_path / "some.mp4", [1, 2, 3, 4], cut_keyframes={1, 3})
    assert keyframe_times(path) == [0.0, 6.0]
    assert moments(path, "keyframes") == [0.0, 6.0]  # the shots at 3 s and 9 s are not seen
    dense = moments(path, "dense")
    for start in (0.0, 3.0, 6.0, 9.0):  # dense decodes the long GOPs: every shot, within a second
        assert any(0 <= moment - start <= 1.0 for moment in dense), (start, dense)
    assert len(dense) > 4


def test_keyframes_at_every_cut_give_each_shot_at_its_first_frame(tmp_path):
    path = make_clip(tmp_path / "cuts.mp4", [5, 6, 7, 8])
    assert keyframe_times(path) == [0.0, 3.0, 6.0, 9.0]
    assert moments(path, "keyframes") == [0.0, 3.0, 6.0, 9.0]


def test_far_apart_keyframes_and_no_cuts_give_one_moment_unless_dense(tmp_path):
    path = make_clip(tmp_path / "far.mp4", [1, 2, 3, 4], cut_keyframes=False)
    assert keyframe_times(path) == [0.0]
    assert moments(path, "keyframes") == [0.0]
    assert len(moments(path, "dense")) >= 4


def test_a_still_shot_between_keyframes_costs_one_moment(tmp_path):
    # keyframes every second (gop 10 at 10 fps) over one unchanging shot: the repeats are dropped
    # until still_gap_s (10 s) passed
    path = make_clip(tmp_path / "still.mp4", [9], seconds=12.0, gop=10, cut_keyframes=False)
    assert keyframe_times(path)[:3] == [0.0, 1.0, 2.0]
    sampled = moments(path, "keyframes")
    assert sampled[0] == 0.0 and len(sampled) <= 3 and all(moment in keyframe_times(path) for moment in sampled)


def test_unknown_mode_is_refused():
    from indexer.errors import MmsearchError
    from indexer.media.video_reader import VideoReadOptions

    with pytest.raises(MmsearchError):
        VideoReadOptions(frames="every")


def vectors(db) -> int:
    return json.loads(run("status", "--db", db, "--json").stdout)["vectors"]


def test_video_frames_is_remembered_per_folder(tmp_path, tiny_model_config):
    dense_folder, plain_folder = tmp_path / "films", tmp_path / "phone"
    dense_folder.mkdir()
    plain_folder.mkdir()
    make_clip(dense_folder / "a.mp4", [1, 2, 3, 4], cut_keyframes=False)
    db = tmp_path / "db"
    result = run("index", dense_folder, "--db", db, "--model", tiny_model_config, "--video-frames", "dense")
    assert result.exit_code == 0, result.output
    after_dense = vectors(db)
    assert after_dense >= 4  # every shot of a.mp4
    make_clip(dense_folder / "b.mp4", [5, 6, 7, 8], cut_keyframes=False)
    make_clip(plain_folder / "c.mp4", [9, 10, 11, 12], cut_keyframes=False)
    assert run("index", dense_folder, "--db", db).exit_code == 0  # no flag: the folder's own choice
    assert vectors(db) - after_dense >= 4
    before_plain = vectors(db)
    assert run("index", plain_folder, "--db", db).exit_code == 0  # a new folder: the default, keyframes
    assert vectors(db) - before_plain == 1
    roots = {root["path"]: root for root in json.loads(run("status", "--db", db, "--json").stdout)["roots"]}
    assert roots[str(dense_folder)]["video_frames"] == "dense"
    assert roots[str(plain_folder)]["video_frames"] is None
    refused = run("index", plain_folder, "--db", db, "--video-frames", "every")
    assert refused.exit_code == 2 and "every" in refused.output
