"""The resumable training state in `<out>/.resume/state.pt`, written atomically, checked before use.

The state holds the trained weights (current and best), optimiser, scheduler and scaler states,
the step reached, torch's RNG state, metrics so far, and the *identity* of the run: pairs file
hashes plus every setting that changes the result. A state is only resumed when its identity
equals the new run's; finishing a fine-tune replaces `<out>` with the model folder, so the state
goes with it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from retrieval.finetune.errors import ResumeMismatchError

RESUME_DIR = ".resume"
STATE_FILE = "state.pt"
STATE_FORMAT = "mmsearch-finetune-state"
STATE_VERSION = 1


def state_path(out: Path) -> Path:
    return Path(out) / RESUME_DIR / STATE_FILE


def has_state(out: Path) -> bool:
    return state_path(out).is_file()


def save_state(out: Path, state: dict) -> Path:
    """Write the state to a temp file beside it, then move it into place."""
    path = state_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{STATE_FILE}.tmp-{os.getpid()}")
    torch.save({"format": STATE_FORMAT, "version": STATE_VERSION, **state}, temporary)
    os.replace(temporary, path)
    return path


def load_state(out: Path) -> dict | None:
    """The saved state, or None when there is none. Raises ResumeMismatchError for an unreadable one."""
    path = state_path(out)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: torch raises many kinds
        raise ResumeMismatchError(f"cannot read the resume state {path} ({exc}); pass --restart to discard it") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
        raise ResumeMismatchError(f"{path} is not a resume state this mmsearch understands; pass --restart to discard it")
    return state


def check_identity(saved: dict, current: dict, out: Path) -> None:
    """Raise ResumeMismatchError naming what differs between a saved run and the requested one."""
    if saved == current:
        return
    keys = sorted(set(saved) | set(current))
    differences = [f"{key}: saved {saved.get(key)!r}, now {current.get(key)!r}"
                   for key in keys if saved.get(key) != current.get(key)]
    raise ResumeMismatchError(
        f"{out} holds an unfinished fine-tune of other pairs or settings ({'; '.join(differences[:4])}"
        f"{'; ...' if len(differences) > 4 else ''}). Run again with the same settings to resume it, "
        f"pass --restart to discard it, or choose another --out"
    )


def discard_state(out: Path) -> None:
    shutil.rmtree(Path(out) / RESUME_DIR, ignore_errors=True)
