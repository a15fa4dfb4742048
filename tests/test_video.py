"""Videos: the moments of a clip are found, searched, reused on rename, and bad files cost themselves.

Clips are made here with PyAV: shots of a few seconds, each its own picture (a block pattern with
a moving bar), in several codecs and containers, with and without sound, with constant and
variable frame rates. A still of one shot, searched by image, must find its video at that shot.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.app import app
from conftest import write_image

av = pytest.importorskip("av")
runner = CliRunner()
SIZE = (160, 96)


def shot(number: int, step: int = 0) -> np.ndarray:
    """Shot `number`'s picture; `step` moves a bar across it (motion within the shot)."""
    rng = np.random.default_rng(number)
    pattern = rng.integers(0, 255, (SIZE[1] // 8, SIZE[0] // 8, 3)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
    pattern[:, (step * 3) % SIZE[0]] = 255
    return pattern


def make_clip(path, shots, *, codec="libx264", seconds=3.0, fps=10, gop=250, audio=False, times=None,
              cut_keyframes=True):
    """A clip of `shots` (shot numbers) lasting `seconds` each; `times`: explicit frame times (VFR).
    Keyframes every `gop` frames, and at each shot's first frame when `cut_keyframes` (what encoders
    with scene-cut detection write; x264's own detection is switched off to keep the clip exact):
    True for all, False for none, or the set of shots whose start gets one."""
    out = av.open(str(path), "w")
    stream = out.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
    stream.codec_context.gop_size = gop
    if codec == "libx264":
        stream.options = {"preset": "ultrafast", "sc_threshold": "0"}  # keyframes far apart, not at the cuts
    sound = out.add_stream("aac", rate=16000) if audio else None
    frames = [(number, step) for number in shots for step in range(int(seconds * fps))]
    for index, (number, step) in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(shot(number, step), format="rgb24")
        frame.pts = index if times is None else int(times[index] * fps)
        if step == 0 and (cut_keyframes is True or cut_keyframes and number in cut_keyframes):
            frame.pict_type = av.video.frame.PictureType.I  # a keyframe at the cut
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    if sound is not None:
        samples = (np.sin(np.linspace(0, 440 * 2 * np.pi * 2, 32000)) * 0.3).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in sound.encode(frame):
            out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)
    out.close()
    return path


def still(path, number: int):
    Image.fromarray(shot(number, 5)).save(path)
    return path


def run(*args):
    return runner.invoke(app, [str(arg) for arg in args])


@pytest.fixture()
def clips(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    make_clip(media / "holiday.mp4", [10, 11, 12, 13])  # H.264, keyframes at the cuts and 25 s apart
    make_clip(media / "party.webm", [20, 21], codec="libvpx-vp9", gop=100)
    make_clip(media / "old.mkv", [30, 31, 32], codec="mpeg4", gop=12)
    make_clip(media / "talk.mov", [40, 41], audio=True)
    write_image(media / "photo.png", 1)
    return media


def test_videos_are_indexed_with_their_moments_and_a_still_finds_its_shot(clips, tmp_path, tiny_model_config):
    db = tmp_path / "db"
    result = run("index", clips, "--db", db, "--model", tiny_model_config, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["embedded"], summary["failed"]) == (5, 0)
    status = json.loads(run("status", "--db", db, "--json").stdout)
    assert status["modalities"] == {"image": 1, "video": 4}
    assert status["vectors"] >= 1 + 4 + 2 + 3 + 2  # every shot of every clip has a moment
    for number, name, start in ((12, "holiday.mp4", 6.0), (21, "party.webm", 3.0), (31, "old.mkv", 3.0),
                                (41, "talk.mov", 3.0)):
        query = still(tmp_path / f"still{number}.png", number)
        hits = json.loads(run("search", "--image", query, "--db", db, "--json", "--modality", "video").stdout)
        assert hits[0]["path"].endswith(name) and hits[0]["modality"] == "video", hits[0]
        assert abs(hits[0]["time"] - start) <= 1.0, hits[0]  # the right moment, within a second
        assert len([hit for hit in hits if hit["path"].endswith(name)]) == 1  # one hit per video
    text = run("search", "--image", tmp_path / "still12.png", "--db", db, "--top", "1").stdout
    assert "holiday.mp4 @ 00:0" in text
    with_photo = json.loads(run("search", "--image", tmp_path / "still12.png", "--db", db, "--json",
                                "--modality", "image,video").stdout)
    assert {hit["modality"] for hit in with_photo} == {"image", "video"}


def test_a_video_index_is_incremental(clips, tmp_path, tiny_model_config):
    db = tmp_path / "db"
    assert run("index", clips, "--db", db, "--model", tiny_model_config).exit_code == 0
    vectors = json.loads(run("status", "--db", db, "--json").stdout)["vectors"]
    os.rename(clips / "holiday.mp4", clips / "renamed.mp4")
    summary = json.loads(run("index", clips, "--db", db, "--json").stdout)
    assert (summary["embedded"], summary["reused"], summary["removed"]) == (0, 1, 1)
    assert json.loads(run("status", "--db", db, "--json").stdout)["vectors"] == vectors
    hits = json.loads(run("search", "--image", still(tmp_path / "s.png", 12), "--db", db, "--json").stdout)
    assert hits[0]["path"].endswith("renamed.mp4") and abs(hits[0]["time"] - 6.0) <= 1.0
    make_clip(clips / "party.webm", [22], codec="libvpx-vp9", gop=100)  # changed
    os.remove(clips / "old.mkv")  # deleted
    summary = json.loads(run("index", clips, "--db", db, "--json").stdout)
    assert (summary["embedded"], summary["removed"]) == (1, 1)
    hits = json.loads(run("search", "--image", still(tmp_path / "t.png", 22), "--db", db, "--json").stdout)
    assert hits[0]["path"].endswith("party.webm")
    check = json.loads(run("check", "--db", db, "--json", "--no-model").stdout)
    assert check["healthy"], check["problems"]


def test_variable_frame_rate_times_are_the_streams_own(tmp_path, tiny_model):
    from indexer.media.video_reader import VideoReader

    times = [0.0, 0.1, 0.5, 0.6, 2.5, 2.6, 2.7, 6.0, 6.1]  # uneven gaps; the second shot starts at 2.5
    path = make_clip(tmp_path / "vfr.mp4", [50], seconds=0.9, fps=10, times=times)
    decoded = VideoReader(tiny_model.preprocess).read_path(str(path), lambda: False)
    starts = [segment.start_s for segment in decoded.segments]
    assert starts[0] == 0.0 and all(start in times for start in starts) and starts == sorted(starts)
    assert decoded.duration_s and decoded.duration_s >= 6.0


def test_bad_videos_cost_one_line_each(tmp_path, tiny_model_config):
    media = tmp_path / "media"
    media.mkdir()
    whole = make_clip(tmp_path / "whole.mp4", [60, 61]).read_bytes()
    (media / "truncated.mp4").write_bytes(whole[: len(whole) // 3])
    (media / "text.mp4").write_text("this is not a video at all\n" * 50)
    (media / "empty.mkv").write_bytes(b"")
    sound_only = av.open(str(media / "sound.mp4"), "w")
    audio = sound_only.add_stream("aac", rate=16000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
    frame.sample_rate = 16000
    for packet in list(audio.encode(frame)) + list(audio.encode()):
        sound_only.mux(packet)
    sound_only.close()
    make_clip(media / "good.mp4", [62])
    result = run("index", media, "--db", tmp_path / "db", "--model", tiny_model_config, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    reasons = {os.path.basename(failure["path"]): failure["reason"] for failure in summary["failures"]}
    assert summary["embedded"] >= 1 and "good.mp4" not in reasons
    assert "no video stream" in reasons["sound.mp4"] and "empty" in reasons["empty.mkv"]
    assert "text.mp4" in reasons and "Traceback" not in result.output
    for name in reasons:
        assert result.stderr.count(f"skipping {media / name}") == 1


def test_a_long_video_has_a_bounded_number_of_moments(tmp_path, tiny_model):
    from indexer.media.video_reader import VideoReader, VideoReadOptions

    path = make_clip(tmp_path / "long.mp4", list(range(70, 90)), seconds=1.0, fps=5, gop=5)  # a shot a second
    decoded = VideoReader(tiny_model.preprocess, VideoReadOptions(max_moments=8)).read_path(str(path), lambda: False)
    assert len(decoded.segments) <= 8
    starts = [segment.start_s for segment in decoded.segments]
    assert starts[-1] - starts[0] >= 10  # spread over the video, not its first seconds


def rotate_mp4(path, matrix=(0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)):
    """Write a display matrix into the mp4's track header, as a phone does for a portrait video (the
    default: shown turned 90 degrees clockwise). PyAV's muxer has no option for it."""
    import struct

    data = bytearray(path.read_bytes())
    box = data.find(b"tkhd")
    assert box > 0 and data[box + 4] == 0, "a version-0 track header"
    data[box + 44:box + 80] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))
    return path


def half_white_clip(path):
    """160x96 frames, the left half white and the right half black."""
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
    pixels = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    pixels[:, : SIZE[0] // 2] = 255
    for _ in range(20):
        for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


def test_rotation_metadata_turns_the_frames_as_they_are_shown(tmp_path, tiny_model):
    from indexer.media.video_frames import frame_at
    from indexer.media.video_reader import VideoReader

    plain = half_white_clip(tmp_path / "plain.mp4")
    portrait = rotate_mp4(half_white_clip(tmp_path / "portrait.mp4"))
    reader = VideoReader(tiny_model.preprocess)
    flat, turned = (reader.read_path(str(path), lambda: False) for path in (plain, portrait))
    assert (flat.width, flat.height) == SIZE and (turned.width, turned.height) == (SIZE[1], SIZE[0])
    as_stored = flat.segments[0].payload.astype(np.float32).mean(axis=0)  # (S, S), the centre crop
    shown = turned.segments[0].payload.astype(np.float32).mean(axis=0)
    half = as_stored.shape[0] // 2
    assert as_stored[:, :half - 2].mean() > 200 and as_stored[:, half + 2:].mean() < 50  # white on the left
    # turned clockwise, the left half is on top, for the image tower and for the thumbnail alike
    assert shown[:half - 2].mean() > 200 and shown[half + 2:].mean() < 50
    picture = np.asarray(frame_at(str(portrait), 0.0, 128).convert("L"), np.float32)
    assert picture.shape[1] < picture.shape[0]  # portrait
    assert picture[: picture.shape[0] // 2 - 2].mean() > 200 and picture[picture.shape[0] // 2 + 2:].mean() < 50


def test_the_frame_at_a_moment_is_the_frame_that_was_embedded(tmp_path):
    from indexer.media.video_frames import frame_at

    path = make_clip(tmp_path / "far.mp4", [90, 91, 92], cut_keyframes=False)  # one keyframe: decoded forward from 0
    for number, start in ((90, 0.0), (91, 3.0), (92, 6.0), (92, 8.9)):
        step = round((start - 3.0 * (number - 90)) * 10)
        picture = np.asarray(frame_at(str(path), start, 256).convert("RGB"), np.float32)
        assert picture.shape[:2] == (SIZE[1], SIZE[0])  # never scaled up
        errors = {other: np.abs(picture - shot(other, step)).mean() for other in (90, 91, 92)}
        assert min(errors, key=errors.get) == number and errors[number] < 12, errors
    with open(path, "rb") as handle:  # a file object (the server's open descriptor) works the same
        assert frame_at(handle, 3.0, 64).size == (64, 38)
    from indexer.errors import DecodeError

    with pytest.raises(DecodeError):
        frame_at(str(tmp_path / "missing.mp4"), 0.0, 64)


def test_search_json_carries_a_video_hits_time_and_frame(clips, tmp_path, tiny_model_config):
    import base64
    import io

    db = tmp_path / "db"
    assert run("index", clips, "--db", db, "--model", tiny_model_config).exit_code == 0
    query = still(tmp_path / "still12.png", 12)
    hits = json.loads(run("search", "--image", query, "--db", db, "--json", "--modality", "video").stdout)
    first = hits[0]
    assert first["path"].endswith("holiday.mp4") and abs(first["time"] - 6.0) <= 1.0
    prefix = "data:image/jpeg;base64,"
    assert first["thumbnail"].startswith(prefix)
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(first["thumbnail"][len(prefix):]))).convert("RGB"),
                         np.float32)
    assert max(picture.shape[:2]) == 128
    reference = np.asarray(Image.fromarray(shot(12, round((first["time"] - 6.0) * 10))).resize(
        (picture.shape[1], picture.shape[0])), np.float32)
    others = [np.asarray(Image.fromarray(shot(number)).resize((picture.shape[1], picture.shape[0])), np.float32)
              for number in (10, 11, 13)]
    assert np.abs(picture - reference).mean() < min(np.abs(picture - other).mean() for other in others)
    photos = json.loads(run("search", "--image", query, "--db", db, "--json", "--modality", "image").stdout)
    assert photos and all("thumbnail" not in hit for hit in photos)
    plain = json.loads(run("search", "--image", query, "--db", db, "--json", "--no-thumbnails").stdout)
    assert all("thumbnail" not in hit for hit in plain)
    os.remove(clips / "holiday.mp4")  # gone since indexed: the hit stays, without a frame
    gone = json.loads(run("search", "--image", query, "--db", db, "--json", "--modality", "video").stdout)
    assert gone[0]["path"].endswith("holiday.mp4") and gone[0]["thumbnail"] is None


def write_wav(path, samples: np.ndarray, rate: int = 16000):
    import wave

    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def test_a_videos_soundtrack_is_embedded_by_the_audio_tower_and_found_by_a_sound(tmp_path, tiny_model_config):
    media = tmp_path / "media"
    media.mkdir()
    make_clip(media / "talk.mov", [40, 41], audio=True)  # 6 s of pictures, a 2 s 440 Hz tone
    make_clip(media / "quiet.mp4", [42])  # no sound
    tone = (np.sin(np.linspace(0, 440 * 2 * np.pi * 2, 32000)) * 0.3).astype(np.float32)
    query = write_wav(tmp_path / "tone.wav", tone)
    write_wav(media / "noise.wav", np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.3)
    db = tmp_path / "db"
    summary = json.loads(run("index", media, "--db", db, "--model", tiny_model_config, "--audio-model", "bundled",
                             "--json").stdout)
    assert (summary["embedded"], summary["failed"]) == (3, 0), summary
    status = json.loads(run("status", "--db", db, "--json").stdout)
    assert status["modalities"] == {"video": 2, "audio": 1}
    assert status["vectors"] == 2 + 1 + 1 + 1  # talk.mov: two shots and its soundtrack; quiet.mp4: one shot; noise.wav

    hits = json.loads(run("search", "--audio", query, "--db", db, "--json").stdout)
    assert [os.path.basename(hit["path"]) for hit in hits] == ["talk.mov", "noise.wav"], hits
    assert hits[0]["modality"] == "video" and hits[0]["time"] == 0.0 and hits[0]["score"] > 0.95
    videos = json.loads(run("search", "--audio", query, "--db", db, "--json", "--modality", "video").stdout)
    assert [os.path.basename(hit["path"]) for hit in videos] == ["talk.mov"]
    words = json.loads(run("search", "a tone", "--db", db, "--json", "--modality", "video").stdout)
    names = [os.path.basename(hit["path"]) for hit in words]
    assert sorted(names) == ["quiet.mp4", "talk.mov"]  # one hit per video, from its frames or its soundtrack

    none = tmp_path / "none"
    run("index", media, "--db", none, "--model", tiny_model_config, "--audio-model", "none")
    assert json.loads(run("status", "--db", none, "--json").stdout)["vectors"] == 2 + 1  # frames only
