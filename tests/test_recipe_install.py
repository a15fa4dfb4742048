"""The recipe's install swaps the bundled model in whole, keeping the files it does not make."""
import json

from tools.bundled.recipe import install


def test_install_replaces_the_model_and_keeps_the_audio_tower_beside_it(tmp_path):
    model = tmp_path / "run" / "model"
    model.mkdir(parents=True)
    (model / "mmsearch_model.json").write_text(json.dumps({"fingerprint": "new"}))
    (model / "image.safetensors").write_bytes(b"new image")
    target = tmp_path / "bundled"
    target.mkdir()
    (target / "mmsearch_model.json").write_text(json.dumps({"fingerprint": "old"}))
    (target / "image.safetensors").write_bytes(b"old image")
    (target / "audio.safetensors").write_bytes(b"audio tower")
    (target / "audio.json").write_text("{}")

    install(model, target, {"recipe": {"train_styles": ["openmoji"]}})

    assert (target / "image.safetensors").read_bytes() == b"new image"
    assert json.loads((target / "mmsearch_model.json").read_text()) == {
        "fingerprint": "new", "recipe": {"train_styles": ["openmoji"]}}
    assert (target / "audio.safetensors").read_bytes() == b"audio tower"
    assert (target / "audio.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundled", "run"]  # no staging left behind
