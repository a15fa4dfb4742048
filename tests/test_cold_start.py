"""What a one-shot `mmsearch search "words"` loads: only its own command module, no Pillow, no
SQLAlchemy, no torch, no rich, no pydantic, no `tokenizers`.

Each of these imports costs a cold CLI search 0.1-6 s (docs/BENCHMARKS.md, "Cold start"); the probe runs the real
command line in a fresh interpreter and lists what it imported.
"""
import json
import subprocess
import sys

from typer.testing import CliRunner

from cli.app import COMMANDS, app
from conftest import write_image

PROBE = """
import sys
sys.argv = {argv!r}
from cli.app import app
try:
    app()
except SystemExit:
    pass
print("LOADED", " ".join(sorted(sys.modules)))
"""


def test_text_search_imports_only_what_it_needs(tmp_path, tiny_model_config):
    for seed in range(3):
        write_image(tmp_path / "pics" / f"p{seed}.png", seed)
    db = tmp_path / "db"
    result = CliRunner().invoke(app, ["index", str(tmp_path / "pics"), "--db", str(db), "--model", str(tiny_model_config)])
    assert result.exit_code == 0, result.output
    argv = ["mmsearch", "search", "a red thing", "--db", str(db), "--json"]
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], check=True, capture_output=True, text=True).stdout
    hits_line, loaded_line = out.strip().splitlines()[-2:]
    assert len(json.loads(hits_line)) == 3
    loaded = set(loaded_line.split()[1:])
    top_level = {name.split(".")[0] for name in loaded}
    # pydantic: typer 0.29 coerces every option through it (~0.1 s a start: pyproject pins typer < 0.29);
    # tokenizers: a CLIP export's tokenizer opens from its SQLite tables (retrieval.models.clip_bpe)
    assert not top_level & {"PIL", "sqlalchemy", "torch", "open_clip", "torchvision", "rich", "pydantic",
                            "tokenizers"}, top_level
    other_commands = {target.split(":")[0] for name, target in COMMANDS.items() if name != "search"}
    assert not loaded & other_commands, loaded & other_commands


def test_one_query_opens_its_text_session_without_prepacking(tmp_path, tiny_model_config, monkeypatch):
    import retrieval.models.onnx_text as onnx_text

    for seed in range(2):
        write_image(tmp_path / "pics" / f"p{seed}.png", seed)
    db = tmp_path / "db"
    runner = CliRunner()
    indexed = runner.invoke(app, ["index", str(tmp_path / "pics"), "--db", str(db), "--model", str(tiny_model_config)])
    assert indexed.exit_code == 0
    opened = []

    class Recording(onnx_text.OnnxTextEncoder):
        def __init__(self, folder, threads=None, prepack=True):
            opened.append(prepack)
            super().__init__(folder, threads=threads, prepack=prepack)

    monkeypatch.setattr(onnx_text, "OnnxTextEncoder", Recording)
    one = runner.invoke(app, ["search", "a red thing", "--db", str(db), "--json"])
    assert one.exit_code == 0, one.output
    queries = tmp_path / "queries.txt"
    queries.write_text("a red thing\n", encoding="utf-8")
    batch = runner.invoke(app, ["search", "--queries", str(queries), "--db", str(db), "--json"])
    assert batch.exit_code == 0, batch.output
    assert opened == [False, True]  # the batch keeps prepacking: it pays off over many queries
    from_batch, alone = json.loads(batch.stdout.splitlines()[0])["results"], json.loads(one.stdout)
    assert [hit["path"] for hit in from_batch] == [hit["path"] for hit in alone]
    assert all(abs(a["score"] - b["score"]) < 1e-4 for a, b in zip(from_batch, alone))


def test_index_run_with_current_exports_imports_no_torch(tmp_path, tiny_model_config):
    """On a CPU with the ONNX image and text exports in the index, an index run embeds new files
    without importing torch or open_clip (2-12 s per run)."""
    import pytest

    from retrieval.models.encoders import gpu_possible

    if gpu_possible():
        pytest.skip("this machine may have a GPU: torch is imported to look for it")
    pics, db = tmp_path / "pics", tmp_path / "db"
    for seed in range(3):
        write_image(pics / f"p{seed}.png", seed)
    first = CliRunner().invoke(app, ["index", str(pics), "--db", str(db), "--model", str(tiny_model_config)])
    assert first.exit_code == 0, first.output
    write_image(pics / "new.png", 9)
    probe = subprocess.run([sys.executable, "-c", PROBE.format(argv=["mmsearch", "index", str(pics), "--db", str(db), "--json"])],
                           capture_output=True, text=True, timeout=300)
    summary = json.loads(probe.stdout[:probe.stdout.index("LOADED")])
    assert summary["embedded"] == 1
    loaded = set(probe.stdout.split("LOADED", 1)[1].split())
    assert not {"torch", "open_clip", "torchvision"} & loaded
