"""Default model policy, offline: real CLIP when its weights are cached, the bundled model otherwise."""
import json
import socket

import pytest
import torch
from typer.testing import CliRunner

from cli.app import app
from conftest import write_image
from retrieval.models.hub import RECOMMENDED_MODEL, cached_weights, choose_default_model
from retrieval.models.registry import BUNDLED_DIR, BUNDLED_NAME, MANIFEST_NAME

runner = CliRunner()
bundled_installed = pytest.mark.skipif(not (BUNDLED_DIR / MANIFEST_NAME).is_file(), reason="bundled model not built yet")


@pytest.fixture(scope="session")
def fake_hub_cache(tmp_path_factory):
    """RANDOM weights for the recommended model, in the model hub's cache layout (like shared/bench/fake_hub.py)."""
    import open_clip
    from safetensors.torch import save_file

    from retrieval.models.hub import hub_location

    cache = tmp_path_factory.mktemp("hf-cache")
    arch, tag = RECOMMENDED_MODEL.split(":")
    repo_id, candidates = hub_location(arch, tag)
    org, name = repo_id.split("/")
    sha = "0" * 40
    snapshot = cache / f"models--{org}--{name}" / "snapshots" / sha
    snapshot.mkdir(parents=True)
    (cache / f"models--{org}--{name}" / "refs").mkdir()
    (cache / f"models--{org}--{name}" / "refs" / "main").write_text(sha)
    torch.manual_seed(0)
    model = open_clip.create_model(arch)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(snapshot / candidates[0]))
    return cache


@pytest.fixture()
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture()
def isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("MMSEARCH_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.delenv("MMSEARCH_MODEL", raising=False)
    monkeypatch.delenv("MMSEARCH_DB", raising=False)


def _pics(tmp_path):
    for i in range(2):
        write_image(tmp_path / "pics" / f"p{i}.png", seed=i)
    return tmp_path / "pics"


def test_offline_empty_cache_chooses_bundled(isolated_env, no_network):
    choice = choose_default_model()
    assert choice.name == BUNDLED_NAME and "offline" in choice.reason


def test_cached_weights_choose_real_clip_without_network(isolated_env, no_network, fake_hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(fake_hub_cache))
    arch, tag = RECOMMENDED_MODEL.split(":")
    assert cached_weights(arch, tag) is not None
    choice = choose_default_model()
    assert choice.name == RECOMMENDED_MODEL and "cache" in choice.reason


def test_new_index_uses_cached_real_clip_and_status_says_why(isolated_env, no_network, fake_hub_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(fake_hub_cache))
    db = tmp_path / "db"
    result = runner.invoke(app, ["index", str(_pics(tmp_path)), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "bundled" not in result.stderr
    status = json.loads(runner.invoke(app, ["status", "--db", str(db), "--json"]).stdout)
    assert status["model"]["name"] == RECOMMENDED_MODEL and status["model"]["dim"] == 512
    assert "cache" in status["model_reason"] and status["items"] == 2
    listed = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    recommended = next(entry for entry in listed if entry["kind"] == "recommended")
    assert recommended["available"] and recommended["size_bytes"] > 100e6
    assert any(entry["kind"] == "bundled" for entry in listed)


@bundled_installed
def test_new_index_offline_uses_bundled_and_says_so(isolated_env, no_network, tmp_path):
    db = tmp_path / "db"
    result = runner.invoke(app, ["index", str(_pics(tmp_path)), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "bundled offline model" in result.stderr and "mmsearch models pull" in result.stderr
    status = json.loads(runner.invoke(app, ["status", "--db", str(db), "--json"]).stdout)
    assert status["model"]["name"] == BUNDLED_NAME and "offline" in status["model_reason"]
    # the existing index keeps its model: no notice, no new choice on the next run
    again = runner.invoke(app, ["index", str(tmp_path / "pics"), "--db", str(db)])
    assert again.exit_code == 0 and "bundled offline model" not in again.stderr


def test_pull_offline_is_a_clear_error(isolated_env, no_network):
    result = runner.invoke(app, ["models", "pull"])
    assert result.exit_code == 1 and "HF_HUB_OFFLINE" in result.stderr


def test_config_file_then_env_then_flag(isolated_env, tiny_model_config, tmp_path, monkeypatch):
    other = tmp_path / "other.json"
    other.write_text(tiny_model_config.read_text().replace('"seed": 0', '"seed": 3'))
    config = tmp_path / "config.toml"
    config.write_text(f'model = "{tiny_model_config}"\n')
    monkeypatch.setenv("MMSEARCH_CONFIG", str(config))
    pics = _pics(tmp_path)
    result = runner.invoke(app, ["index", str(pics), "--db", str(tmp_path / "db1")])
    assert result.exit_code == 0, result.output
    status = json.loads(runner.invoke(app, ["status", "--db", str(tmp_path / "db1"), "--json"]).stdout)
    assert status["model"]["name"] == str(tiny_model_config) and "config" in status["model_reason"]
    monkeypatch.setenv("MMSEARCH_MODEL", str(other))
    runner.invoke(app, ["index", str(pics), "--db", str(tmp_path / "db2")])
    status = json.loads(runner.invoke(app, ["status", "--db", str(tmp_path / "db2"), "--json"]).stdout)
    assert status["model"]["name"] == str(other)
    bad = tmp_path / "bad.toml"
    bad.write_text('colour = "blue"\n')
    monkeypatch.setenv("MMSEARCH_CONFIG", str(bad))
    result = runner.invoke(app, ["status"])  # no --db: the config file is read, and refused
    assert result.exit_code == 1 and "unknown setting" in result.stderr
