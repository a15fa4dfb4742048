"""Building a tower whose every weight is about to be overwritten, without drawing its random start.

A tower loaded from a checkpoint is built first (open_clip's constructors fill every Linear,
embedding and attention weight through torch.nn.init) and then `load_state_dict(strict=True)`
replaces every parameter and persistent buffer. The random start is thrown away: for a ViT-B-32 it
is 0.7 of the 0.8 s a build takes (docs/BENCHMARKS.md "Towers built without their random start").

`weights_to_follow()` turns torch.nn.init's random initialisers into no-ops **on the calling thread
only**, for the duration of the block (the pattern of transformers' `no_init_weights`, gated per
thread: an index run builds towers beside decode and export threads). The deterministic ones
(zeros_, ones_, constant_, eye_, dirac_) still run: cheap, and a non-persistent buffer made with
them stays right. Only code that looks the initialiser up at call time on torch.nn.init (or on the
torch modules that bound one at import, `_MODULES`) is affected; one bound elsewhere keeps
initialising (timm's own trunc_normal_, open_clip's torch.randn): slower, never wrong. Once
installed, `torch.jit.script` cannot compile a function that calls a wrapped initialiser (nothing
here scripts one; torch.jit.script is deprecated).
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


# where torch binds initialisers by name at import (nn.MultiheadAttention, open_clip's default
# attention, draws its in_proj_weight through torch.nn.modules.activation's own xavier_uniform_)
_MODULES = ("torch.nn.init", "torch.nn.modules.activation", "torch.nn.modules.transformer")


_installed = False


def _install() -> None:
    global _installed
    if _installed:  # once per process: each tower build asks
        return
    import importlib

    with _install_lock:
        wrapped: dict[int, object] = {}
        for module_name in _MODULES:
            module = importlib.import_module(module_name)
            for name in RANDOM_INITIALISERS:
                real = getattr(module, name, None)
                if real is None or getattr(real, "__mmsearch_skippable__", False):
                    continue
                if id(real) not in wrapped:
                    wrapped[id(real)] = _skippable(real)
                setattr(module, name, wrapped[id(real)])
        _installed = True


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
