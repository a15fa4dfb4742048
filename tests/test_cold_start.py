"""What a one-shot `mmsearch search "words"` loads: only its own command module, no Pillow, no
SQLAlchemy, no torch, no rich.

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
sys.argv = ["mmsearch", "search", "a red thing", "--db", {db!r}, "--json"]
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
    out = subprocess.run([sys.executable, "-c", PROBE.format(db=str(db))], check=True, capture_output=True, text=True).stdout
    hits_line, loaded_line = out.strip().splitlines()[-2:]
    assert len(json.loads(hits_line)) == 3
    loaded = set(loaded_line.split()[1:])
    top_level = {name.split(".")[0] for name in loaded}
    assert not top_level & {"PIL", "sqlalchemy", "torch", "open_clip", "torchvision", "rich"}, top_level
    other_commands = {target.split(":")[0] for name, target in COMMANDS.items() if name != "search"}
    assert not loaded & other_commands, loaded & other_commands
