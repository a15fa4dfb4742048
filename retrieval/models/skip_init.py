"""Building a tower whose every weight is about to be overwritten, without drawing its random start.

A tower loaded from a checkpoint is built first (open_clip's constructors fill every Linear,
embedding and attention weight through torch.nn.init) and then `load_state_dict(strict=True)`
replaces every parameter and persistent buffer. The random start is thrown away: for a ViT-B-32 it
is 0.7 of the 0.8 s a build takes (docs/BENCHMARKS.md "Towers built without their random start").

`weights_to_follow()` turns torch.nn.init's random initialisers into no-ops **on the calling thread
only**, for the duration of the block (the pattern of transformers' `no_init_weights`, gated per
thread: an index run builds towers beside decode and export threads). The deterministic ones
(zeros_, ones_, constant_, eye_, dirac_) still run: cheap, and a non-persistent buffer made with
them stays right. Only code that looks the initialiser up on torch.nn.init at call time is
affected (a module that bound one at import keeps initialising: slower, never wrong).
"""
from __future__ import annotations

import contextlib
import functools
import threading

RANDOM_INITIALISERS = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                       "xavier_uniform_", "xavier_normal_", "orthogonal_", "sparse_")

_state = threading.local()
_install_lock = threading.Lock()


def _skippable(real):
    @functools.wraps(real)
    def initialiser(tensor, *args, **kwargs):
        if getattr(_state, "skipping", False):
            return tensor
        return real(tensor, *args, **kwargs)

    initialiser.__mmsearch_skippable__ = True
    return initialiser


def _install() -> None:
    from torch.nn import init

    with _install_lock:
        for name in RANDOM_INITIALISERS:
            real = getattr(init, name, None)
            if real is not None and not getattr(real, "__mmsearch_skippable__", False):
                setattr(init, name, _skippable(real))


@contextlib.contextmanager
def weights_to_follow():
    """Within the block, on this thread, torch.nn.init's random initialisers leave tensors as they are
    (uninitialised memory: the caller must load every weight afterwards, strictly)."""
    _install()
    before = getattr(_state, "skipping", False)
    _state.skipping = True
    try:
        yield
    finally:
        _state.skipping = before
