"""Every fast path against the plain one: same vectors (within a stated cosine), same results, tuned recall."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import clustered_vectors as clustered
from conftest import vector_chunks as chunks_of
from indexer.store.autotune import TuneConfig, exact_neighbours, recall_at_k, tune_index
from indexer.store.vectors import SearchTuning, VectorIndex


# --- search: mmap load, autotune -----------------------------------------------------------------
@pytest.mark.parametrize("spec", ["Flat", "IVF32,Flat", "HNSW32", "IVF32,SQfp16"])
def test_mmap_load_searches_like_a_read(tmp_path, spec):
    vectors = clustered(4000, 32, 40, 0.3, seed=1)
    index = VectorIndex.build(32, spec, [(np.arange(4000), vectors)], generation=3)
    index.tuning = SearchTuning(nprobe=4, ef_search=40)
    index.save(tmp_path / "v.faiss")
    read, mapped = VectorIndex.load(tmp_path / "v.faiss"), VectorIndex.load(tmp_path / "v.faiss", mmap=True)
    assert mapped.tuning == read.tuning == SearchTuning(nprobe=4, ef_search=40)
    for a, b in zip(read.search(vectors[:20], 10), mapped.search(vectors[:20], 10)):
        np.testing.assert_array_equal(a, b)


def test_exact_neighbours_match_brute_force():
    vectors = clustered(3000, 16, 10, 0.5, seed=2)
    queries, own = vectors[:25], np.arange(25)
    scores = queries @ vectors.T
    scores[np.arange(25), own] = -np.inf
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    found = exact_neighbours(queries, chunks_of(vectors, 700)(), 10, exclude=own)
    assert recall_at_k(found, expected) == 1.0


@pytest.mark.parametrize("spec", ["IVF64,Flat", "HNSW32"])
def test_autotune_reaches_its_recall_target(spec):
    vectors = clustered(20000, 32, 64, 0.6, seed=3)
    index = VectorIndex.build(32, spec, [(np.arange(len(vectors)), vectors)], generation=1)
    config = TuneConfig(target_recall=0.95, queries=100, timed_queries=5)
    result = tune_index(index, chunks_of(vectors), config)
    assert result.reached and result.recall >= 0.95
    assert index.tuning == result.tuning
    # check on fresh queries (not the tuning sample) with the chosen setting
    rng = np.random.default_rng(9)
    fresh = rng.choice(len(vectors), 100, replace=False)
    truth = exact_neighbours(vectors[fresh], chunks_of(vectors)(), 10, exclude=fresh)
    _, found = index.search(vectors[fresh], 11)
    found = np.stack([row[row != own][:10] for row, own in zip(found, fresh)])
    assert recall_at_k(found, truth) >= 0.9


def test_autotune_picks_a_smaller_nprobe_for_easy_data():
    easy = clustered(20000, 32, 64, 0.05, seed=4)  # tight, well separated clusters
    hard = clustered(20000, 32, 64, 1.5, seed=4)  # nearly uniform
    chosen = {}
    for name, vectors in (("easy", easy), ("hard", hard)):
        index = VectorIndex.build(32, "IVF64,Flat", [(np.arange(len(vectors)), vectors)], generation=1)
        chosen[name] = tune_index(index, chunks_of(vectors), TuneConfig(queries=100, timed_queries=3)).value
    assert chosen["easy"] < chosen["hard"]


def test_saved_tuning_is_what_searches_use(tmp_path):
    vectors = clustered(5000, 16, 16, 0.5, seed=5)
    index = VectorIndex.build(16, "IVF16,Flat", [(np.arange(5000), vectors)], generation=1)
    index.tuning = SearchTuning(nprobe=16)  # all lists: exact
    index.save(tmp_path / "v.faiss")
    loaded = VectorIndex.load(tmp_path / "v.faiss", mmap=True)
    _, found = loaded.search(vectors[:30], 10)
    scores = vectors[:30] @ vectors.T
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    assert recall_at_k(found, expected) == 1.0
    _, one_list = loaded.search(vectors[:30], 10, tuning=SearchTuning(nprobe=1))  # an explicit tuning wins
    assert recall_at_k(one_list, expected) < 1.0


# --- text: the optimised ONNX export ----------------------------------------------------------------
def test_optimised_text_export_gives_identical_vectors(tmp_path, tiny_model):
    from retrieval.models.fast_text import is_optimised, optimise_text_export
    from retrieval.models.onnx_text import OnnxTextEncoder, export_text_encoder, exported_fingerprint

    texts = ["a photo of a cat", "red square", "ein Hund am Strand", "x" * 300]
    folder = export_text_encoder(tiny_model, tmp_path / "text")
    plain = OnnxTextEncoder(folder).embed_texts(texts)
    assert optimise_text_export(folder) and is_optimised(folder)
    assert optimise_text_export(folder)  # a second call is a no-op
    assert exported_fingerprint(folder) == tiny_model.info.fingerprint
    np.testing.assert_allclose(OnnxTextEncoder(folder).embed_texts(texts), plain, atol=1e-5)


# --- images: int8 / ONNX towers --------------------------------------------------------------------
IMAGE_PRECISION_COSINE = 0.995  # the stated bound; onnx-int8 measured >= 0.9995 on ViT-B-32-256, with and without VNNI


def _pixels(model, count: int = 6) -> np.ndarray:
    from PIL import Image

    from indexer.media.preprocess import to_model_input

    rng = np.random.default_rng(7)
    images = []
    for _ in range(count):  # smooth gradients + noise: closer to photos than white noise
        gradient = np.linspace(0, 255, 96)[None, :, None] * rng.uniform(0.2, 1, 3)
        pixels = np.clip(gradient + rng.normal(0, 25, (72, 96, 3)), 0, 255).astype(np.uint8)
        images.append(to_model_input(Image.fromarray(pixels), model.preprocess))
    return np.stack(images)


@pytest.mark.parametrize("precision", ["int8", "bf16", "onnx", "onnx-int8"])
def test_image_precisions_stay_close_to_fp32(tmp_path, tiny_model_config, precision):
    from retrieval.models.encoders import load_model

    pixels = _pixels(load_model(str(tiny_model_config), device="cpu"))
    plain = load_model(str(tiny_model_config), device="cpu").image.embed_pixels(pixels)
    fast_model = load_model(str(tiny_model_config), device="cpu", image_precision=precision,
                            image_export_dir=tmp_path / "image_encoder")
    fast = fast_model.image.embed_pixels(pixels)
    assert type(fast_model.image).__name__ == ("OnnxImageEncoder" if precision.startswith("onnx") else "TorchImageEncoder")
    assert fast.shape == plain.shape
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    assert (fast * plain).sum(axis=1).min() >= IMAGE_PRECISION_COSINE


@pytest.mark.parametrize("precision", ["int8", "onnx-int8"])
def test_resnet_tower_takes_int8(tmp_path, precision):
    """A ModifiedResNet (the bundled model's kind) reads its attention pool's weights as tensors."""
    import json

    from retrieval.models.encoders import load_model

    config = tmp_path / "rn.json"
    config.write_text(json.dumps({"embed_dim": 64, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
                                  "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
                                  "seed": 0}))
    pixels = _pixels(load_model(str(config), device="cpu"))
    plain = load_model(str(config), device="cpu").image.embed_pixels(pixels)
    fast_model = load_model(str(config), device="cpu", image_precision=precision,
                            image_export_dir=tmp_path / "image_encoder")
    assert (fast_model.image.embed_pixels(pixels) * plain).sum(axis=1).min() >= IMAGE_PRECISION_COSINE


def test_int8_export_that_drifts_is_not_used(tmp_path, tiny_model_config, monkeypatch):
    from retrieval.models import fast_image
    from retrieval.models.encoders import load_model

    monkeypatch.setattr(fast_image, "MIN_INT8_COSINE", 1.01)  # no int8 graph can pass this
    folder = tmp_path / "image_encoder"
    model = load_model(str(tiny_model_config), device="cpu", image_precision="onnx-int8",
                       image_export_dir=folder)
    encoder = model.image
    assert encoder.graph == folder / fast_image.FP32_NAME and encoder.precision == "onnx"
    entry = fast_image.exported_meta(folder)["int8"]
    assert entry["recipe"] is None and not (folder / fast_image.INT8_NAME).exists()
    assert set(entry["tried"]) == set(fast_image.INT8_RECIPES)  # every recipe measured before giving up
    assert all(0.9 < cosine <= 1.0 for cosine in entry["tried"].values())
    assert fast_image.effective_precision(folder, "onnx-int8") == "onnx"


def _old_export(folder: Path, with_cosine: bool, model) -> None:
    """Turn a current export into what versions before issue 22 wrote: format /1, no "int8" entry, no
    reference vectors, the fp32 graph always kept, and an int8 graph from onnxruntime's
    quantize_dynamic with 8-bit weights."""
    import json

    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from retrieval.models import fast_image

    meta = json.loads((folder / fast_image.META_NAME).read_text())
    old = {"format": "mmsearch-onnx-image/1", "fingerprint": meta["fingerprint"], "image_size": meta["image_size"]}
    if with_cosine:
        old["int8_min_cosine"] = 0.9999
    (folder / fast_image.META_NAME).write_text(json.dumps(old))
    (folder / fast_image.REFERENCE_NAME).unlink()
    if not (folder / fast_image.FP32_NAME).exists():
        from retrieval.models.towers import IMAGE, load_tower

        fast_image.write_fp32_graph(load_tower(model.card, IMAGE), folder)
    quantize_dynamic(str(folder / fast_image.FP32_NAME), str(folder / fast_image.INT8_NAME),
                     weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                     extra_options={"DefaultTensorType": TensorProto.FLOAT})  # past the com.microsoft Gelu


@pytest.mark.parametrize("with_cosine", [False, True], ids=["unchecked", "checked-8-bit"])
def test_int8_export_from_an_older_version_is_requantised_checked_and_used(tmp_path, tiny_model_config, monkeypatch,
                                                                          with_cosine):
    """An older export keeps its fp32 graph (no torch load, no re-export); its int8 graph (8-bit weights,
    which drift on CPUs without VNNI, checked or not) is made again from it, checked and recorded."""
    import onnx

    from retrieval.models import fast_image
    from retrieval.models.encoders import load_model

    # the mechanism under test, not where this model's cosine lands: a threshold every recipe passes here
    monkeypatch.setattr(fast_image, "MIN_INT8_COSINE", 0.9)
    folder = tmp_path / "image_encoder"
    model = load_model(str(tiny_model_config), device="cpu", image_precision="onnx-int8",
                       image_export_dir=folder)
    expected = model.image.embed_pixels(fast_image.check_pixels(64))
    _old_export(folder, with_cosine, model)
    fp32_written = (folder / fast_image.FP32_NAME).stat().st_mtime_ns
    assert fast_image.effective_precision(folder, "onnx-int8") is None  # not known until it is checked

    monkeypatch.setattr("retrieval.models.towers.load_tower", lambda *a: pytest.fail("the torch tower was loaded"))
    again = load_model(str(tiny_model_config), device="cpu", image_precision="onnx-int8",
                       image_export_dir=folder)
    encoder = again.image
    assert encoder.precision == "onnx-int8" and encoder.graph == folder / fast_image.INT8_NAME
    meta = fast_image.exported_meta(folder)
    assert meta["format"] == fast_image.FORMAT and "int8_min_cosine" not in meta
    first = next(iter(fast_image.INT8_RECIPES))
    assert meta["int8"]["recipe"] == first and meta["int8"]["min_cosine"] == meta["int8"]["tried"][first]
    ops = {node.op_type for node in onnx.load(str(folder / fast_image.INT8_NAME)).graph.node}
    assert "DynamicQuantizeMatMul" in ops and "MatMulInteger" not in ops  # the 8-bit graph was replaced
    assert (folder / fast_image.FP32_NAME).stat().st_mtime_ns == fp32_written
    assert (folder / fast_image.REFERENCE_NAME).is_file()
    np.testing.assert_allclose(encoder.embed_pixels(fast_image.check_pixels(64)), expected, atol=1e-5)
    assert fast_image.effective_precision(folder, "onnx-int8") == "onnx-int8"


def test_effective_precision_says_what_runs(tmp_path, tiny_model):
    from retrieval.models import fast_image

    folder = tmp_path / "image_encoder"
    assert fast_image.effective_precision(folder, "onnx-int8") is None  # nothing exported yet
    assert fast_image.effective_precision(folder, "int8") == "int8"  # torch precisions need no export
    steps = []
    encoder = fast_image.build_image_encoder(tiny_model, "onnx-int8", folder, on_step=steps.append)
    assert encoder.precision == "onnx-int8" and fast_image.effective_precision(folder, "onnx-int8") == "onnx-int8"
    assert fast_image.effective_precision(folder, "onnx") == "onnx"
    assert fast_image.effective_precision(folder, "onnx-int8", fingerprint=tiny_model.card.fingerprint) == "onnx-int8"
    assert fast_image.effective_precision(folder, "onnx-int8", fingerprint="another model") is None
    assert any("ONNX graph" in step for step in steps) and any("checking" in step for step in steps)
    entry = fast_image.exported_meta(folder)["int8"]
    assert entry["cpu"] in ("int8-exact", "int8-saturating") and entry["seconds"]["vit_onnx"] > 0  # written, not traced
    assert fast_image.exported_meta(folder)["fp32"] == {"writer": "vit_onnx", "reference": "torch"}  # not run yet
    assert not (folder / fast_image.FP32_NAME).exists()  # nor kept: the int8 graph runs
    steps.clear()
    assert fast_image.build_image_encoder(tiny_model, "onnx-int8", folder, on_step=steps.append).precision == "onnx-int8"
    assert steps == []  # a current export: no step at all


def test_fp32_graph_is_checked_before_it_first_runs(tmp_path, tiny_model, monkeypatch):
    from retrieval.models import fast_image

    folder = tmp_path / "image_encoder"
    fast_image.build_image_encoder(tiny_model, "onnx-int8", folder)
    assert "min_cosine" not in fast_image.exported_meta(folder)["fp32"]
    assert not (folder / fast_image.FP32_NAME).exists()  # not kept beside the int8 graph that runs
    int8_written = (folder / fast_image.INT8_NAME).stat().st_mtime_ns
    steps = []
    encoder = fast_image.build_image_encoder(tiny_model, "onnx", folder, on_step=steps.append)
    assert any("fp32 ONNX graph" in step for step in steps)  # written the first time it runs, then checked
    assert (folder / fast_image.INT8_NAME).stat().st_mtime_ns == int8_written  # the export is not made again
    from retrieval.models.towers import IMAGE, load_tower

    torch_vectors = fast_image.TorchImageEncoder(load_tower(tiny_model.card, IMAGE), tiny_model.card.preprocess,
                                                 "fp32").embed_pixels(fast_image.check_pixels(64))
    np.testing.assert_allclose(encoder.embed_pixels(fast_image.check_pixels(64)), torch_vectors, atol=1e-5)
    assert encoder.precision == "onnx" and encoder.graph == folder / fast_image.FP32_NAME
    assert fast_image.exported_meta(folder)["fp32"]["min_cosine"] >= fast_image.MIN_FP32_COSINE
    monkeypatch.setattr(fast_image, "MIN_FP32_COSINE", 1.01)  # recorded: not checked again
    assert fast_image.build_image_encoder(tiny_model, "onnx", folder).precision == "onnx"
    fast_image.build_image_encoder(tiny_model, "onnx-int8", tmp_path / "other")
    encoder = fast_image.build_image_encoder(tiny_model, "onnx", tmp_path / "other")  # fails its check: torch runs
    assert encoder.precision == "fp32" and type(encoder).__name__ == "TorchImageEncoder"


def test_index_records_its_precision_and_image_queries_use_it(tmp_path, tiny_model_config):
    from typer.testing import CliRunner

    from cli.app import app
    from conftest import write_image
    from indexer.store.library import Library

    for seed in range(3):
        write_image(tmp_path / "pics" / f"p{seed}.png", seed)
    db = tmp_path / "db"
    runner = CliRunner()
    result = runner.invoke(app, ["index", str(tmp_path / "pics"), "--db", str(db), "--model", str(tiny_model_config)])
    assert result.exit_code == 0, result.output
    with Library(db, create=False) as library:
        assert library.image_precision == "onnx-int8"  # the CPU default for a new index
    result = runner.invoke(app, ["search", "--image", str(tmp_path / "pics" / "p1.png"), "--db", str(db), "--json", "--top", "1"])
    assert result.exit_code == 0, result.output
    assert '"p1.png"' in result.output.replace("/", '"') or "p1.png" in result.output
    assert '"score": 1.0' in result.output or '"score": 0.99' in result.output
    result = runner.invoke(app, ["index", str(tmp_path / "pics"), "--db", str(db), "--precision", "fp16"])
    assert result.exit_code == 1 and "unknown precision" in result.output


def test_the_precision_that_ran_is_recorded_shown_and_stepped_through(tmp_path, tiny_model_config, monkeypatch):
    """Where the int8 graph fails its check, the run summary, `status` and `status --json` say fp32
    ONNX ran (beside the onnx-int8 setting), and the one-time export's steps reach the run's callbacks."""
    import json

    from typer.testing import CliRunner

    from cli.app import app
    from conftest import write_image
    from retrieval.indexing import Callbacks, IndexRequest, index_library
    from retrieval.models import fast_image

    for seed in range(3):
        write_image(tmp_path / "pics" / f"p{seed}.png", seed)
    db = tmp_path / "db"
    monkeypatch.setattr(fast_image, "MIN_INT8_COSINE", 1.01)  # no int8 graph can pass this
    steps = []
    request = IndexRequest(db=db, roots=(str(tmp_path / "pics"),), model=str(tiny_model_config), device="cpu")
    outcome = index_library(request, Callbacks(on_step=steps.append))
    assert outcome.image_precision == "onnx" and outcome.as_dict()["image_precision"] == "onnx"
    assert any("ONNX graph" in step for step in steps) and any("checking" in step for step in steps)
    runner = CliRunner()
    status = json.loads(runner.invoke(app, ["status", "--db", str(db), "--json"]).stdout)
    assert status["image_precision"] == "onnx" and status["image_precision_setting"] == "onnx-int8"
    assert "onnx (setting: onnx-int8)" in runner.invoke(app, ["status", "--db", str(db)]).stdout
    write_image(tmp_path / "pics" / "p3.png", 3)
    steps.clear()
    again = index_library(IndexRequest(db=db, roots=(str(tmp_path / "pics"),), device="cpu"), Callbacks(on_step=steps.append))
    assert again.report.embedded == 1 and again.image_precision == "onnx" and steps == []  # the export is kept
    monkeypatch.setattr(fast_image, "MIN_INT8_COSINE", 0.9)  # not re-checked: the export recorded its choice
    unchanged = index_library(IndexRequest(db=db, roots=(str(tmp_path / "pics"),), device="cpu"))
    assert unchanged.report.embedded == 0 and unchanged.image_precision == "onnx"  # the last run's, recorded


# --- search start-up: the sqlite3 read path -------------------------------------------------------
def test_read_meta_answers_like_the_full_store(tmp_path):
    import os

    from indexer.store import schema, snapshot
    from indexer.store.library import Library
    from indexer.store.records import ModelInfo, NewItem, single_vector

    assert snapshot.SCHEMA_VERSION == schema.SCHEMA_VERSION
    odd = os.fsdecode(b"/pics/caf\xe9.jpg")  # not UTF-8: must come back as the same str
    with Library(tmp_path / "db") as library:
        library.db.bind_model(ModelInfo("m", "w", 4, "fp"))
        run = library.runs.start("index", ["/pics"])
        rows = [NewItem(path=path, size=10, mtime=5.0, content_hash=None, width=3, height=2, format="JPEG",
                        vectors=single_vector(np.ones(4, np.float32) / 2)) for path in ("/pics/a.jpg", odd)]
        library.items.write_batch(rows, run)
        library.set_info("image_precision", "onnx-int8")
        expected = library.reads.items([1, 2, 99])
        generation = library.generation
    with Library(tmp_path / "db", create=False, read_only=True) as library:
        assert isinstance(library.reads, snapshot.SnapshotReads) and "db" not in vars(library)
        assert library.model() == ModelInfo("m", "w", 4, "fp")
        assert library.generation == generation
        assert library.image_precision == "onnx-int8"
        got = library.reads.items([1, 2, 99])
        assert {key: vars(value) for key, value in got.items()} == {key: vars(value) for key, value in expected.items()}
        assert odd in {record.path for record in got.values()}
        assert library.reads.counts()["items"] == 2  # not answered here: handed to the full store
        assert "db" in vars(library)


def test_cli_text_search_never_imports_sqlalchemy(tmp_path, tiny_model_config):
    import subprocess
    import sys

    from conftest import write_image

    for seed in range(3):
        write_image(tmp_path / "pics" / f"p{seed}.png", seed)
    db = tmp_path / "db"
    mmsearch = str(Path(sys.executable).with_name("mmsearch"))
    subprocess.run([mmsearch, "index", str(tmp_path / "pics"), "--db", str(db), "--model", str(tiny_model_config)],
                   check=True, capture_output=True)
    probe = ("import sys, runpy; sys.argv = ['mmsearch', 'search', 'a red thing', '--db', %r, '--json'];"
             "from cli.app import app\ntry:\n    app()\nexcept SystemExit:\n    pass\n"
             "print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'torch', 'open_clip'}))") % str(db)
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    assert "LOADED []" in out and ".png" in out
