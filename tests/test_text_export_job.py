"""The text tower's export beside the images of a first index run (retrieval.text_export_job, issue 22)."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.app import app
from conftest import write_image
from indexer.store.library import Library
from retrieval.models.fast_text import is_optimised
from retrieval.models.onnx_text import OnnxTextEncoder, exported_fingerprint
from retrieval.text_export_job import TextExportJob, text_export_needed

runner = CliRunner()


def _pictures(folder, count=4):
    for seed in range(count):
        write_image(folder / f"p{seed}.png", seed)
    return folder


def test_the_text_export_starts_before_the_images_and_finishes_after_them(tmp_path, tiny_model_config, tiny_model,
                                                                          monkeypatch):
    import threading

    import retrieval.text_export_job as job_module
    from retrieval.indexing import Callbacks, IndexRequest, index_library

    pics = _pictures(tmp_path / "pics")
    db = tmp_path / "db"
    events, images_written, export_began = [], threading.Event(), threading.Event()
    real_export = job_module.write_text_export

    def export_after_the_images(folder, model):  # held until the run's last image step: it must wait
        export_began.set()
        assert images_written.wait(120)
        return real_export(folder, model)

    def on_progress(event):
        events.append((event.phase, event.done, event.total))
        if event.phase == "finish":
            assert export_began.is_set()  # it ran beside the images
            images_written.set()

    monkeypatch.setattr(job_module, "write_text_export", export_after_the_images)
    request = IndexRequest(db=db, roots=(str(pics),), model=str(tiny_model_config), device="cpu")
    outcome = index_library(request, Callbacks(on_progress=on_progress))
    started, ended = events.index(("export", 0, 1)), events.index(("export", 1, 1))
    first_embed = next(at for at, (phase, *_) in enumerate(events) if phase == "embed")
    finished = next(at for at, (phase, *_) in enumerate(events) if phase == "finish")
    assert started < first_embed < finished < ended  # shown from its start, closed after the images
    result = outcome.text_export
    assert result is not None and result.ok and result.error is None
    assert result.seconds > 0 and 0 < result.waited <= result.seconds + 1
    assert outcome.export_seconds == result.waited and outcome.seconds >= outcome.report.seconds + result.waited
    assert outcome.as_dict()["text_export"]["ok"] is True
    # the export is the model's, current and optimised: the next run has nothing to export
    folder = db / "text_encoder"
    assert exported_fingerprint(folder) == tiny_model.info.fingerprint and is_optimised(folder)
    assert not text_export_needed(folder, tiny_model.info.fingerprint)
    vectors = OnnxTextEncoder(folder).embed_texts(["a cat", "a red square"])
    expected = tiny_model.text.embed_texts(["a cat", "a red square"])
    assert abs(vectors - expected).max() < 1e-4
    with Library(db) as library:
        assert library.vectors_for_search().ntotal == 4
    again = index_library(IndexRequest(db=db, roots=(str(pics),), device="cpu"))
    assert again.text_export is None and again.report.unchanged == 4  # current: no job, no child


def test_a_failing_text_export_keeps_the_pictures_and_says_so(tmp_path, tiny_model_config):
    pics = _pictures(tmp_path / "pics")
    db = tmp_path / "db"
    db.mkdir()
    (db / "text_encoder").write_text("not a folder")  # the export cannot replace it: a real failure
    result = runner.invoke(app, ["index", str(pics), "--db", str(db), "--model", str(tiny_model_config), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["embedded"] == 4 and summary["failed"] == 0
    assert summary["text_export"]["ok"] is False and summary["text_export"]["error"]
    assert "text tower's ONNX export failed" in result.stderr and "mmsearch repair" in result.stderr
    assert "FAILED" in result.stderr
    with Library(db) as library:
        assert library.vectors_for_search().ntotal == 4
    found = runner.invoke(app, ["search", "a picture", "--db", str(db), "--json"])
    assert found.exit_code == 0, found.output  # the torch text tower answers instead


def test_a_job_never_started_runs_in_the_callers_process(tmp_path, tiny_model):
    folder = tmp_path / "text_encoder"
    job = TextExportJob(folder, tiny_model)
    result = job.finish()
    assert not job.started and result.ok and result.waited >= result.seconds > 0
    assert exported_fingerprint(folder) == tiny_model.info.fingerprint and is_optimised(folder)


def test_one_towers_weights_are_read_alone_from_a_safetensors_checkpoint(tmp_path, tiny_model):
    import torch
    from open_clip.factory import load_state_dict
    from open_clip.model import convert_to_custom_text_state_dict
    from safetensors.torch import save_file

    from retrieval.models.towers import IMAGE, TEXT, _tower_state, checkpoint_tower_state

    # open_clip's old (CLIP) layout: the text tower's keys at the top level, the image tower's under visual.
    visual = {f"visual.{key}": value.contiguous() for key, value in tiny_model.image.tower.state_dict().items()}
    text = {key: value.contiguous() for key, value in tiny_model.text.tower.state_dict().items()}
    for layout, state in (("old", {**visual, **text, "logit_scale": torch.ones(())}),
                          ("custom", {**visual, **{f"text.{key}": value for key, value in text.items()}}),
                          ("module", {f"module.{key}": value for key, value in {**visual, **text}.items()})):
        path = tmp_path / f"{layout}.safetensors"
        save_file(state, str(path))
        whole = convert_to_custom_text_state_dict(load_state_dict(str(path)))
        for which in (IMAGE, TEXT):
            expected, alone = _tower_state(whole, which), checkpoint_tower_state(str(path), which)
            assert sorted(alone) == sorted(expected) and expected, (layout, which)
            assert all(torch.equal(alone[key], expected[key]) for key in expected), (layout, which)


def test_towers_built_at_once_on_two_threads_get_their_own_seeded_weights(tiny_model):
    import threading

    import torch

    from retrieval.models.towers import IMAGE, TEXT, build_tower

    alone = {which: build_tower(tiny_model.card, which).state_dict() for which in (IMAGE, TEXT)}
    together = {}
    threads = [threading.Thread(target=lambda which=which: together.__setitem__(which, build_tower(tiny_model.card, which)))
               for which in (IMAGE, TEXT, IMAGE, TEXT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for which in (IMAGE, TEXT):
        state = together[which].state_dict()
        assert all(torch.equal(state[key], alone[which][key]) for key in alone[which]), which


def test_both_towers_traced_at_once_keep_the_int8_image_tower(tmp_path):
    """The bundled model's CNN image tower and its text tower both go through torch.onnx.export; the
    text export runs on its own thread beside the image export, and neither may fall back to torch."""
    for seed in range(3):
        write_image(tmp_path / "pics" / f"p{seed}.png", seed)
    db = tmp_path / "db"
    result = runner.invoke(app, ["index", str(tmp_path / "pics"), "--db", str(db), "--model", "bundled",
                                 "--precision", "onnx-int8"])
    assert result.exit_code == 0, result.output
    assert "unavailable" not in result.output, result.output
    status = json.loads(runner.invoke(app, ["status", "--db", str(db), "--json"]).stdout)
    # onnx-int8, or fp32 ONNX where this CPU's int8 graph misses the cosine check: never the torch fallback
    assert status["image_precision"] in ("onnx-int8", "onnx")
