"""`mmsearch finetune` killed with SIGKILL mid-run resumes from its last saved state."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

MICRO = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    "seed": 0,
}


def _command(pairs, base, out):
    return [sys.executable, "-m", "cli.app", "finetune", str(pairs), "--base", str(base), "--out", str(out),
            "--epochs", "4", "--batch-size", "8", "--checkpoint-every", "1", "--seed", "0", "--json"]


@pytest.fixture(scope="module")
def uninterrupted(shape_pairs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("finetune-whole")
    base = folder / "micro.json"
    base.write_text(json.dumps(MICRO))
    whole = subprocess.run(_command(shape_pairs, base, folder / "whole"), env=_env(), capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    return base, folder / "whole"


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.mark.parametrize("trial", [0])
def test_finetune_killed_then_resumed_matches_an_uninterrupted_run(trial, shape_pairs, uninterrupted, tmp_path):
    base, whole_dir = uninterrupted
    env = _env()

    out = tmp_path / "killed"
    state = out / ".resume" / "state.pt"
    rng = np.random.default_rng(trial)
    process = subprocess.Popen(_command(shape_pairs, base, out), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(float(rng.uniform(0, 0.6)))  # somewhere in the following steps, maybe mid-save
    process.send_signal(signal.SIGKILL)
    process.wait()
    if process.returncode == 0:
        pytest.skip("the run finished before the kill landed (machine too fast for this trial)")
    assert process.returncode == -signal.SIGKILL
    assert not (out / "mmsearch_model.json").exists()
    saved_step = torch.load(state, weights_only=False)["progress"]["step"] if state.exists() else 0

    resumed = subprocess.run(_command(shape_pairs, base, out), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    steps = [int(match) for match in re.findall(r"^step (\d+)/", resumed.stderr, flags=re.M)]
    assert steps and steps[0] == saved_step + 1  # continued after the saved step, not from zero
    assert "before training" not in resumed.stderr or saved_step == 0
    record = json.loads(resumed.stdout)
    assert record["out"] == str(out) and not list(out.glob(".resume/*.tmp-*"))
    from safetensors.torch import load_file

    for name in ("image.safetensors", "text.safetensors"):
        left, right = load_file(str(whole_dir / name)), load_file(str(out / name))
        assert all(torch.equal(left[key], right[key]) for key in left), name
