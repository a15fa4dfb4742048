"""Typed errors of the fine-tuning package; the CLI shows them as `Error: ...`."""
from __future__ import annotations

from indexer.errors import MmsearchError


class PairsError(MmsearchError):
    """A pairs file that cannot be used at all: unreadable, no usable columns, no usable rows."""


class TrainingError(MmsearchError):
    """Settings that cannot train (nothing unlocked, too few pairs, an output folder in the way)."""


class ResumeMismatchError(TrainingError):
    """The output folder holds a resumable state made from other pairs or other settings."""
