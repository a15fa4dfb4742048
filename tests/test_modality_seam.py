"""A new modality plugs in with a reader and an encoder, and nothing else changes.

The "tone" files here stand in for sounds: a reader turns one into a few moments (start times)
with a payload each, an encoder of its own embeds them. Beside real pictures embedded by the tiny
model, they go through the real pipeline, store, vector files and search: one row per file, one
vector per moment, hits carry the best moment, a renamed file reuses every vector, a filter by
modality narrows the search.
"""
from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from cli.app import app
from conftest import write_image
from indexer.errors import DecodeError
from indexer.media.kinds import DecodedItem, Media, Segment
from indexer.pipeline.embed import PipelineConfig
from indexer.pipeline.sync import IndexConfig, index_folders
from indexer.store.library import Library
from retrieval.media import media_for
from retrieval.query.search import Filters, rank

TONE = "tone"
DIM = 64  # the tiny model's


def tone_vector(pitch: float) -> np.ndarray:
    rng = np.random.default_rng(int(pitch * 10))
    vector = rng.standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


class ToneReader:
    """`a.tone` holds pitches, one per line: one moment every 10 s."""

    modality = TONE
    extensions = frozenset({".tone"})
    defers = False

    def read(self, data: bytes, busy) -> DecodedItem:
        try:
            pitches = [float(line) for line in data.decode().split()]
        except ValueError:
            raise DecodeError("not a tone file") from None
        return DecodedItem([Segment(TONE, 10.0 * n, pitch) for n, pitch in enumerate(pitches)],
                           duration_s=10.0 * len(pitches), format="TONE")


class ToneEncoder:
    def __init__(self, info):
        self.info = info  # in the image model's space: its text tower's queries rank these too
        self.calls = 0

    def warm(self) -> None:
        pass

    def embed(self, payloads):
        self.calls += 1
        return [tone_vector(pitch) for pitch in payloads]


def _media(model, tones: ToneEncoder) -> Media:
    pictures = media_for(model)
    return Media(readers=(*pictures.readers, ToneReader()), encoders={**pictures.encoders, TONE: tones})


def _folder(tmp_path):
    folder = tmp_path / "media"
    write_image(folder / "red.png", seed=1)
    write_image(folder / "blue.png", seed=2)
    (folder / "song.tone").write_text("1.0\n2.0\n3.0\n")
    (folder / "hum.tone").write_text("7.0\n8.0\n")
    (folder / "broken.tone").write_text("not a number\n")
    return folder


def test_a_new_modality_is_indexed_searched_and_reused(tmp_path, tiny_model):
    folder = _folder(tmp_path)
    tones = ToneEncoder(tiny_model.info)
    config = IndexConfig(roots=(str(folder),), pipeline=PipelineConfig(batch_size=2))
    with Library(tmp_path / "db") as library, library.lock():
        report = index_folders(library, _media(tiny_model, tones), config)
        assert (report.embedded, report.failed) == (4, 1)
        assert library.reads.counts() == {"rows": 5, "items": 4, "vectors": 2 + 3 + 2, "failed": 1}
        assert library.reads.counts_by_modality() == {"image": 2, TONE: 2}
        assert library.encoders() == ["image", TONE]
        assert library.vectors_for_search(TONE).ntotal == 5 and library.vectors_for_search("image").ntotal == 2

        hits = rank(library, tone_vector(2.0), top=10)[0]  # the song's moment at 10 s, among pictures too
        song = hits[0]
        assert song.path.endswith("song.tone") and song.modality == TONE and song.score > 0.999
        assert song.time == 10.0 and [moment[0] for moment in song.moments][:1] == [10.0]
        assert len([hit for hit in hits if hit.path.endswith("song.tone")]) == 1  # one hit per item
        assert {hit.path.rsplit("/", 1)[1] for hit in hits} == {"song.tone", "hum.tone", "red.png", "blue.png"}
        only_tones = rank(library, tone_vector(2.0), top=10, filters=Filters(modalities=(TONE,)))[0]
        assert {hit.modality for hit in only_tones} == {TONE}

        calls = tones.calls
        (folder / "song.tone").rename(folder / "renamed.tone")
        again = index_folders(library, _media(tiny_model, tones), config)
        assert (again.embedded, again.reused, again.removed) == (0, 1, 1)
        assert tones.calls == calls  # nothing embedded again: the three vectors were copied
        assert library.reads.counts()["vectors"] == 7
        moved = rank(library, tone_vector(3.0), top=1)[0][0]
        assert moved.path.endswith("renamed.tone") and moved.time == 20.0
    report = json.loads(CliRunner().invoke(app, ["check", "--db", str(tmp_path / "db"), "--json", "--no-model",
                                                 "--no-files"]).stdout)
    assert report["healthy"], report["problems"]


def test_json_hits_carry_the_moment(tmp_path, tiny_model, tiny_model_config):
    folder = _folder(tmp_path)
    with Library(tmp_path / "db") as library, library.lock():
        index_folders(library, _media(tiny_model, ToneEncoder(tiny_model.info)), IndexConfig(roots=(str(folder),)))
        hit = rank(library, tone_vector(8.0), top=1)[0][0]
    row = hit.as_dict()
    assert row["modality"] == TONE and row["time"] == 10.0
    assert row["moments"][0] == {"time": 10.0, "score": round(hit.score, 6)}
    picture = rank(Library(tmp_path / "db"), tone_vector(8.0), top=10, filters=Filters(modalities=("image",)))[0][0]
    assert "time" not in picture.as_dict()


class StreamedToneReader(ToneReader):
    """The same files read from their path: what a reader of long sounds or videos does."""

    extensions = frozenset({".longtone"})
    streams = True
    reads = 0

    def read(self, data, busy):
        raise AssertionError("a streaming reader is never handed the bytes")

    def read_path(self, path, busy):
        type(self).reads += 1
        with open(path, "rb") as handle:
            return super().read(handle.read(), busy)


def test_a_streaming_reader_gets_paths_and_its_files_are_hashed_by_samples(tmp_path, tiny_model):
    from indexer.media.files import SAMPLE_WHOLE_BELOW, sample_file_checked

    folder = tmp_path / "media"
    folder.mkdir()
    big = folder / "big.longtone"
    big.write_bytes(b"1.0\n2.0\n" + b" " * (SAMPLE_WHOLE_BELOW + 12345))  # whitespace pads it past 4 MB
    (folder / "small.longtone").write_text("5.0\n")
    digest, _ = sample_file_checked(str(big))
    data = bytearray(big.read_bytes())
    data[-1:] = b"\n"  # the last byte is always sampled
    (tmp_path / "edited").write_bytes(bytes(data))
    assert sample_file_checked(str(tmp_path / "edited"))[0] != digest
    tones = ToneEncoder(tiny_model.info)
    media = Media(readers=(StreamedToneReader(),), encoders={TONE: tones})
    StreamedToneReader.reads = 0
    with Library(tmp_path / "db") as library, library.lock():
        report = index_folders(library, media, IndexConfig(roots=(str(folder),)))
        assert (report.embedded, StreamedToneReader.reads) == (2, 2)
        copy = folder / "copy.longtone"
        copy.write_bytes(big.read_bytes())
        assert sample_file_checked(str(copy))[0] == digest
        again = index_folders(library, media, IndexConfig(roots=(str(folder),)))
        assert (again.embedded, again.reused) == (0, 1)  # the copy: recognised by its sampled hash, not read
        assert StreamedToneReader.reads == 2
        assert library.reads.counts()["vectors"] == 2 + 1 + 2
