"""First-run exports written from a safetensors checkpoint with neither torch nor open_clip (issue 22):
retrieval.models.tower_weights, clip_vocab, held_weights and the checkpoint paths of fast_image and
onnx_text, each against what the torch towers compute."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_CONFIG

ARCH = "tiny-torch-free-arch"
TEXTS = ["a cat", "a photo of a small red dog running on a sunny beach", "x", "invoice 2041 " * 20]


def _perturbed(state: dict, seed: int) -> dict:
    """Weights whose norms and biases are not 1/0 (a fresh init would hide mistakes there)."""
    generator = torch.Generator().manual_seed(seed)
    return {key: value + 0.05 * torch.randn(value.shape, generator=generator) if value.is_floating_point() else value
            for key, value in state.items()}


@pytest.fixture(scope="module")
def open_clip_checkpoint(tmp_path_factory):
    """(ARCH:checkpoint name, the whole open_clip model): a tiny CLIP in the hub's safetensors layout
    (text keys at the top level, as open_clip's CLIP checkpoints keep them)."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("torch-free")
    config = {key: value for key, value in TINY_CONFIG.items() if key != "seed"}
    (folder / f"{ARCH}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / f"{ARCH}.json")
    torch.manual_seed(5)
    model = open_clip.create_model(ARCH).eval()
    model.load_state_dict(_perturbed(model.state_dict(), 6))
    path = folder / "open_clip_model.safetensors"
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))
    return f"{ARCH}:{path}", model


@pytest.fixture()
def fresh_model(open_clip_checkpoint):
    from retrieval.models.encoders import load_model

    return load_model(open_clip_checkpoint[0], device="cpu")


def _no_torch_towers(monkeypatch):
    monkeypatch.setattr("retrieval.models.towers.load_tower", lambda *a, **k: pytest.fail("a torch tower was built"))


def _pixels(count: int = 3) -> np.ndarray:
    return np.random.default_rng(2).normal(0, 1, (count, 3, 64, 64)).astype(np.float32)


def _torch_image_vectors(whole, pixels: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.nn.functional.normalize(whole.encode_image(torch.from_numpy(pixels)), dim=-1).numpy()


def test_tower_arrays_are_the_tensors_open_clip_would_load(open_clip_checkpoint, fresh_model):
    from retrieval.models.tower_weights import IMAGE, TEXT, tower_arrays
    from retrieval.models.towers import checkpoint_tower_state

    path = open_clip_checkpoint[0].split(":", 1)[1]
    for which in (IMAGE, TEXT):
        arrays, tensors = tower_arrays(fresh_model.card, which), checkpoint_tower_state(path, which)
        assert sorted(arrays) == sorted(tensors) and arrays
        for key, tensor in tensors.items():
            assert arrays[key].dtype == np.float32 and np.array_equal(arrays[key], tensor.numpy()), key


def test_tower_key_names_strip_module_and_move_old_text_keys():
    from retrieval.models.tower_weights import tower_key_names

    keys = ["module.visual.proj", "module.text_projection", "module.transformer.resblocks.0.ln_1.weight",
            "module.logit_scale"]
    assert tower_key_names(keys, "image") == {"proj": "module.visual.proj"}
    assert tower_key_names(keys, "text") == {"text_projection": "module.text_projection",
                                             "transformer.resblocks.0.ln_1.weight": "module.transformer.resblocks.0.ln_1.weight"}
    assert tower_key_names(["visual.proj", "text.ln_final.weight"], "text") == {"ln_final.weight": "text.ln_final.weight"}


def test_weights_torch_must_read_are_refused(tmp_path, tiny_model, fresh_model):
    from dataclasses import replace

    from safetensors.torch import save_file

    from retrieval.models.registry import ModelSpec
    from retrieval.models.tower_weights import NotReadable, tower_arrays

    with pytest.raises(NotReadable, match="config"):  # random weights: no checkpoint at all
        tower_arrays(tiny_model.card, "image")
    pickled = tmp_path / "weights.bin"
    pickled.write_bytes(b"not read")
    with pytest.raises(NotReadable, match="not a safetensors"):
        tower_arrays(replace(fresh_model.card, spec=ModelSpec(name="x", source="open_clip", arch=ARCH,
                                                              pretrained=str(pickled))), "image")
    integers = tmp_path / "int.safetensors"
    save_file({"visual.proj": torch.zeros(2, 2, dtype=torch.int32)}, str(integers))
    with pytest.raises(NotReadable, match="int32"):
        tower_arrays(replace(fresh_model.card, spec=ModelSpec(name="y", source="open_clip", arch=ARCH,
                                                              pretrained=str(integers))), "image")


def test_bfloat16_weights_read_as_torch_widens_them(tmp_path, fresh_model):
    from dataclasses import replace

    from safetensors.torch import save_file

    from retrieval.models.registry import ModelSpec
    from retrieval.models.tower_weights import tower_arrays

    weights = torch.randn(3, 5).to(torch.bfloat16)
    path = tmp_path / "bf16.safetensors"
    save_file({"visual.proj": weights}, str(path))
    arrays = tower_arrays(replace(fresh_model.card, spec=ModelSpec(name="z", source="open_clip", arch=ARCH,
                                                                   pretrained=str(path))), "image")
    assert arrays["proj"].dtype == np.float32 and np.array_equal(arrays["proj"], weights.float().numpy())


def test_the_vocabulary_is_open_clips_own():
    from open_clip.tokenizer import SimpleTokenizer

    from retrieval.models.clip_vocab import clip_vocabulary

    reference, ours = SimpleTokenizer(context_length=32), clip_vocabulary(32)
    assert ours.encoder == reference.encoder and ours.bpe_ranks == reference.bpe_ranks
    assert (ours.sot_token_id, ours.eot_token_id, ours.context_length) == \
        (reference.sot_token_id, reference.eot_token_id, 32)


def test_held_weights_run_and_quantise_as_the_graph_filled_in(fresh_model):
    from retrieval.models import held_weights
    from retrieval.models.fast_image import checkpoint_vit
    from retrieval.models.int8_graph import quantise_matmuls
    from retrieval.models.vit_onnx import held_vit_graph, vit_graph

    recipe, weights = checkpoint_vit(fresh_model.card)
    filled = vit_graph(recipe, weights)
    held, arrays = held_vit_graph(recipe, weights)
    assert arrays and held.ByteSize() < filled.ByteSize() / 10  # the weights are not in its protobuf
    pixels = _pixels()
    expected = held_weights.session(filled, {}).run(["features"], {"pixels": pixels})[0]
    np.testing.assert_allclose(held_weights.session(held, arrays).run(["features"], {"pixels": pixels})[0], expected,
                               atol=1e-6)  # the same graph and weights; only the buffers differ
    one_shot = held_weights.session(held, arrays, one_shot=True)  # no pre-packing: other kernels, same numbers
    np.testing.assert_allclose(one_shot.run(["features"], {"pixels": pixels})[0], expected, atol=2e-5)
    assert quantise_matmuls(held, per_column=True, arrays=arrays) == quantise_matmuls(filled, per_column=True) > 0
    assert not any(held_weights.is_held(tensor) for tensor in held.graph.initializer)  # self-contained after
    assert held.SerializeToString() == filled.SerializeToString()


@pytest.mark.parametrize("precision", ["onnx-int8", "onnx"])
def test_image_export_from_the_checkpoint_builds_no_torch_tower(tmp_path, open_clip_checkpoint, fresh_model,
                                                                precision, monkeypatch):
    from retrieval.models import fast_image

    expected = _torch_image_vectors(open_clip_checkpoint[1], _pixels())
    _no_torch_towers(monkeypatch)
    # any cosine keeps the first int8 recipe: the comparison below runs whatever this CPU measures
    monkeypatch.setattr(fast_image, "MIN_INT8_COSINE", -1.0)
    steps = []
    folder = tmp_path / "image_encoder"
    encoder = fast_image.build_image_encoder(fresh_model, precision, folder, on_step=steps.append)
    assert encoder.precision == fast_image.effective_precision(folder, precision)
    meta = fast_image.exported_meta(folder)
    assert meta["fp32"]["writer"] == "vit_onnx" and meta["fp32"]["reference"] == "fp32 graph"
    assert steps[0] == "image tower: reading the weights (once per model)"
    if precision == "onnx":
        np.testing.assert_allclose(encoder.embed_pixels(_pixels()), expected, atol=2e-5)
        assert (folder / fast_image.FP32_NAME).is_file()
        return
    entry = meta["int8"]  # its recorded check (against the fp32 graph) is what torch would have measured
    assert entry["recipe"] == "int7-per-column" and not (folder / fast_image.FP32_NAME).exists()
    check = fast_image.check_pixels(64)
    int8 = fast_image.OnnxImageEncoder(folder / fast_image.INT8_NAME, None, "onnx-int8").embed_pixels(check)
    torch_cosine = float((int8 * _torch_image_vectors(open_clip_checkpoint[1], check)).sum(axis=1).min())
    assert abs(torch_cosine - entry["min_cosine"]) < 1e-4
    # asked for fp32 ONNX later: its graph is written from the checkpoint as well, then checked
    fp32 = fast_image.build_image_encoder(fresh_model, "onnx", folder)
    assert fp32.precision == "onnx"
    np.testing.assert_allclose(fp32.embed_pixels(_pixels()), expected, atol=2e-5)
    assert fast_image.exported_meta(folder)["fp32"]["min_cosine"] >= fast_image.MIN_FP32_COSINE


def test_a_tower_it_cannot_read_goes_through_torch(tmp_path, tiny_model):
    from retrieval.models import fast_image

    folder = tmp_path / "image_encoder"
    steps = []
    assert fast_image.build_image_encoder(tiny_model, "onnx-int8", folder, on_step=steps.append).precision == "onnx-int8"
    assert "image tower: loading the torch weights (once per model)" in steps
    assert fast_image.exported_meta(folder)["fp32"]["reference"] == "torch"


def _torch_text_vectors(whole, texts) -> np.ndarray:
    import open_clip

    with torch.inference_mode():
        return torch.nn.functional.normalize(whole.encode_text(open_clip.get_tokenizer(ARCH)(texts)), dim=-1).numpy()


def test_text_export_from_the_checkpoint_is_written_optimised_without_torch(tmp_path, open_clip_checkpoint,
                                                                            fresh_model, monkeypatch):
    from retrieval.models.encoders import Model
    from retrieval.models.fast_text import is_optimised
    from retrieval.models.onnx_text import LAYOUT, OnnxTextEncoder, export_text_encoder

    expected = _torch_text_vectors(open_clip_checkpoint[1], TEXTS)
    monkeypatch.setattr(Model, "text", property(lambda self: pytest.fail("the torch text tower was built")))
    folder = export_text_encoder(fresh_model, tmp_path / "text")
    meta = json.loads((folder / "text_encoder.json").read_text())
    assert (meta["weights"], meta["writer"], meta["sequence"], meta["layout"]) == \
        ("checkpoint", "clip_text_onnx", "trimmed", LAYOUT)
    assert is_optimised(folder) and (folder / "text.onnx.data").is_file()
    encoder = OnnxTextEncoder(folder)
    np.testing.assert_allclose(encoder.embed_texts(TEXTS), expected, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([encoder.embed_texts([text]) for text in TEXTS]), expected, atol=1e-5)


def test_a_text_export_that_fails_its_check_is_made_through_torch(tmp_path, open_clip_checkpoint, fresh_model,
                                                                  monkeypatch):
    from retrieval.models import onnx_text

    monkeypatch.setattr(onnx_text, "_check_against_full_length", lambda folder, session=None: "forced by the test")
    folder = onnx_text.export_text_encoder(fresh_model, tmp_path / "text")
    meta = json.loads((folder / "text_encoder.json").read_text())
    assert "weights" not in meta and meta["sequence"] == "trimmed"  # the torch route, checked against torch
    np.testing.assert_allclose(onnx_text.OnnxTextEncoder(folder).embed_texts(TEXTS),
                               _torch_text_vectors(open_clip_checkpoint[1], TEXTS), atol=1e-5)


INDEX_IN_A_FRESH_PROCESS = """
import json, sys
from retrieval.indexing import Callbacks, IndexRequest, index_library
from indexer.media.ocr import OcrOptions
outcome = index_library(IndexRequest(db=sys.argv[1], roots=(sys.argv[2],), model=sys.argv[3], precision="onnx-int8",
                                     ocr=OcrOptions(mode="off")), Callbacks())
print(json.dumps({"embedded": outcome.report.embedded, "text_export": outcome.text_export.ok,
                  "imported": sorted(name for name in ("torch", "open_clip", "torchvision", "transformers")
                                     if name in sys.modules)}))
"""


def test_a_first_index_run_imports_neither_torch_nor_open_clip(tmp_path, open_clip_checkpoint, fresh_model):
    from PIL import Image

    from retrieval.models.fast_image import exported_meta

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for index, colour in enumerate(("red", "green", "blue")):
        Image.new("RGB", (80, 60), colour).save(pictures / f"{index}.png")
    db = tmp_path / "index"
    # the model card is cached (per open_clip version) by the fixture's describe: no open_clip import for it
    run = subprocess.run([sys.executable, "-c", INDEX_IN_A_FRESH_PROCESS, str(db), str(pictures), open_clip_checkpoint[0]],
                         capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1],
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report == {"embedded": 3, "text_export": True, "imported": []}
    assert exported_meta(db / "image_encoder")["fp32"]["reference"] == "fp32 graph"


def test_a_model_folder_is_read_too_half_precision_included(tmp_path, open_clip_checkpoint, fresh_model):
    from retrieval.models.checkpoint import save_model_folder
    from retrieval.models.encoders import load_model
    from retrieval.models.tower_weights import tower_arrays

    whole = open_clip_checkpoint[1]
    text_state = {key[len("text."):]: value for key, value in _text_state(whole).items()}
    folder = save_model_folder(tmp_path / "saved", model_cfg=fresh_model.card.model_cfg,
                               preprocess=fresh_model.preprocess, image_state=whole.visual.state_dict(),
                               text_state=text_state, dtype=torch.float16)
    card = load_model(str(folder), device="cpu").card
    image = tower_arrays(card, "image")
    assert sorted(image) == sorted(whole.visual.state_dict())
    for key, value in whole.visual.state_dict().items():
        assert image[key].dtype == np.float32 and np.array_equal(image[key], value.half().float().numpy()), key
    assert sorted(tower_arrays(card, "text")) == sorted(text_state)


def _text_state(whole) -> dict:
    from retrieval.models.tower_weights import TEXT, tower_key_names

    state = whole.state_dict()
    return {"text." + name: state[key] for name, key in tower_key_names(state, TEXT).items()}


def test_choosing_the_default_model_imports_no_open_clip_once_its_card_is_cached(tmp_path):
    from retrieval.models.hub import RECOMMENDED_MODEL
    from retrieval.models.registry import describe_model, resolve_model

    describe_model(resolve_model(RECOMMENDED_MODEL))  # its card, cached in MMSEARCH_CACHE_DIR (conftest)
    code = ("import sys; from retrieval.models.hub import choose_default_model; choice = choose_default_model(); "
            "print(choice.name, 'open_clip' in sys.modules, 'torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1],
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path),
                              "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["bundled", "False", "False"]  # nothing cached here: the offline model


def test_a_checkpoint_export_that_fails_falls_back_to_the_torch_export(tmp_path, fresh_model, monkeypatch, caplog):
    from retrieval.models import fast_image

    def broken(*args, **kwargs):
        raise RuntimeError("onnxruntime refused the graph (simulated)")

    monkeypatch.setattr(fast_image, "export_checkpoint_vit", broken)
    folder = tmp_path / "image_encoder"
    with caplog.at_level("WARNING"):
        encoder = fast_image.build_image_encoder(fresh_model, "onnx-int8", folder)
    assert encoder.precision == fast_image.effective_precision(folder, "onnx-int8")  # an ONNX export, not torch
    assert fast_image.exported_meta(folder)["fp32"]["reference"] == "torch"
    assert "exporting through torch" in caplog.text and not list(tmp_path.glob("image_encoder.tmp-*"))


def test_a_text_session_that_fails_sends_the_export_through_torch(tmp_path, fresh_model, monkeypatch):
    from retrieval.models import held_weights, onnx_text

    def broken(*args, **kwargs):
        raise RuntimeError("onnxruntime could not write the optimised graph (simulated)")

    monkeypatch.setattr(held_weights, "session", broken)
    folder = onnx_text.export_text_encoder(fresh_model, tmp_path / "text")
    meta = json.loads((folder / "text_encoder.json").read_text())
    assert "weights" not in meta and meta["writer"] == "clip_text_onnx"  # written from the torch tower instead


def test_a_siglip_name_keeps_its_own_tokenizer_through_torch(tmp_path, fresh_model):
    from dataclasses import replace
    from types import SimpleNamespace

    from retrieval.models.onnx_text import _written_from_checkpoint

    card = replace(fresh_model.card, spec=replace(fresh_model.card.spec, arch="ViT-B-16-SigLIP"))
    staging = tmp_path / "staging"
    staging.mkdir()
    assert not _written_from_checkpoint(SimpleNamespace(card=card, info=fresh_model.info), staging)
    assert list(staging.iterdir()) == []


def _open_clip_configs() -> list[Path]:
    from retrieval.models.clip_vocab import open_clip_folder

    return sorted((open_clip_folder() / "model_configs").glob("*.json"))


def test_every_open_clip_config_the_readers_accept_builds_that_tower():
    """Each of open_clip's own architecture configs that the config readers take gives the recipe and
    the state_dict shapes of the tower open_clip builds from it (on the meta device: no weights)."""
    from open_clip.model import _build_text_tower, _build_vision_tower

    from retrieval.models.clip_text_onnx import text_recipe, text_recipe_from_cfg
    from retrieval.models.vit_onnx import vit_recipe, vit_recipe_from_cfg

    sides = (("vision_cfg", vit_recipe_from_cfg, vit_recipe, _build_vision_tower),
             ("text_cfg", text_recipe_from_cfg, text_recipe, _build_text_tower))
    accepted = {"vision_cfg": [], "text_cfg": []}
    for path in _open_clip_configs():
        cfg = json.loads(path.read_text())
        for key, from_cfg, from_tower, build in sides:
            try:
                recipe = from_cfg(cfg)
            except ValueError:
                continue
            with torch.device("meta"):
                tower = build(cfg["embed_dim"], dict(cfg[key]), cfg.get("quick_gelu", False), None).eval()
            assert recipe == from_tower(tower), path.name
            assert recipe.weight_shapes() == {name: tuple(value.shape) for name, value in tower.state_dict().items()}, \
                path.name
            accepted[key].append(path.stem)
    assert "ViT-B-32-256" in accepted["vision_cfg"] and "ViT-B-32-256" in accepted["text_cfg"]
    assert "RN50" not in accepted["vision_cfg"] and "ViT-B-16-SigLIP" not in accepted["text_cfg"]
