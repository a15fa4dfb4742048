"""How many token columns a batch really uses: the torch-free half of running a text tower trimmed
(`retrieval.models.trimmed_text` holds the torch half; `retrieval.models.onnx_text` uses this one)."""
from __future__ import annotations

import numpy as np


def needed_length(tokens, pad_id: int = 0) -> int:
    """The shortest length that keeps every real token of every row: last non-pad position + 1 (at least 1).

    `tokens`: (batch, context_length) numpy array or CPU torch tensor.
    """
    real = np.asarray(tokens) != pad_id
    if real.size == 0:
        return 1
    ends = real.shape[1] - np.argmax(real[:, ::-1], axis=1)  # one past the last real token of each row
    return max(1, int(np.max(np.where(real.any(axis=1), ends, 1))))
