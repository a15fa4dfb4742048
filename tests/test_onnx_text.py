"""The torch-free text path must give the same tokens and (nearly) the same vectors as torch."""
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from retrieval.models.onnx_text import OnnxTextEncoder, export_text_encoder, exported_fingerprint

TEXTS = ["a dog on a beach", "Beach + SUNSET!!", "the café's crème brûlée", "2 red cars, 3 blue bikes",
         "émoji 😀 face", "word " * 60, "x"]


def test_clip_bpe_tokens_and_vectors_match(tmp_path, tiny_model):
    folder = export_text_encoder(tiny_model, tmp_path / "text")
    fast = OnnxTextEncoder(folder)
    assert exported_fingerprint(folder) == tiny_model.info.fingerprint
    expected_tokens = tiny_model.text.tokenizer(TEXTS).numpy()
    np.testing.assert_array_equal(fast.tokenize(TEXTS), expected_tokens)
    cosines = (fast.embed_texts(TEXTS) * tiny_model.text.embed_texts(TEXTS)).sum(axis=1)
    assert cosines.min() > 0.9999


def test_bundled_hf_tokenizer_matches(tmp_path):
    from retrieval.models.encoders import load_model
    from retrieval.models.registry import BUNDLED_DIR, MANIFEST_NAME

    if not (BUNDLED_DIR / MANIFEST_NAME).is_file():
        pytest.skip("bundled model not built yet")
    model = load_model("bundled", device="cpu")
    fast = OnnxTextEncoder(export_text_encoder(model, tmp_path / "text"))
    np.testing.assert_array_equal(fast.tokenize(TEXTS), model.text.tokenizer(TEXTS).numpy())
    cosines = (fast.embed_texts(TEXTS) * model.text.embed_texts(TEXTS)).sum(axis=1)
    assert cosines.min() > 0.9999


def test_text_search_on_indexed_folder_never_imports_torch(tmp_path, tiny_model_config):
    """The cold-start property: a text query runs on the exported tower, without torch or open_clip."""
    import json
    import subprocess
    import sys

    from conftest import write_image

    for i in range(3):
        write_image(tmp_path / "pics" / f"p{i}.png", seed=i)
    db = tmp_path / "db"
    subprocess.run([sys.executable, "-m", "cli.app", "index", str(tmp_path / "pics"), "--db", str(db),
                    "--model", str(tiny_model_config)], check=True, capture_output=True)
    assert (db / "text_encoder" / "text.onnx").is_file()
    probe = (
        "import sys, json\n"
        "from cli.app import app\n"
        "try:\n"
        f"    app(['search', 'a red dog', '--db', {str(db)!r}, '--json'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(m for m in ('torch', 'open_clip', 'transformers') if m in sys.modules)), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert len(json.loads(result.stdout)) == 3
    assert json.loads(result.stderr.strip().splitlines()[-1]) == []
