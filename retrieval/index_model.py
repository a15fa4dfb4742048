"""How an index's model is opened: chosen, checked against the index, configured from what it records."""
from __future__ import annotations

from retrieval.models.fast_image import check_precision


def use_image_precision(library, model, precision: str | None = None, *, record: bool = False) -> str:
    """Set `model` to embed images at `precision` (default: the index's own); record it when asked."""
    precision = check_precision(precision or library.image_precision)
    model.image_precision = precision
    model.image_cache_dir = library.image_export_path
    if record and precision != library.meta.get_info("image_precision"):
        library.meta.set_info("image_precision", precision)
    return precision
