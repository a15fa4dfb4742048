"""Random starts drawn from a seed, one build at a time.

torch's CPU generator is the process's: two models built at once on two threads (an index run's
image tower beside its audio model, or beside the text export's text tower) would draw from each
other's seed and come out different from the same models built alone, so an index's vectors
would not match the query encoder's. Every seeded build in mmsearch (the towers, a CLAP config, the
bundled audio tower) goes through `seeded`, which holds one process-wide lock, forks the generator
(the caller's stream is left as it was) and seeds it. The guarantee holds against other `seeded`
callers only: a draw outside it on another thread (a training loop's) is not kept out."""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_LOCK = threading.RLock()  # re-entrant: a seeded builder may call another without a deadlock (none does today)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    import torch

    with _LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
