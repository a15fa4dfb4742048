"""A summary of an index, as plain data."""
from __future__ import annotations

from dataclasses import asdict

from indexer.store.library import Library
from indexer.store.records import IMAGE
from indexer.store.vectors import VectorIndex, choose_index_spec


def read_status(library: Library, failures: int = 5) -> dict:
    counts = library.reads.counts()
    model = library.model()
    path = library.vectors_path(IMAGE)
    saved = VectorIndex.load(path) if path.exists() else None
    index_type = saved.spec if saved is not None else choose_index_spec(counts["vectors"], library.index_type)
    return {
        "db": str(library.folder),
        "items": counts["items"],
        "rows": counts["rows"],
        "vectors": counts["vectors"],
        "failed": counts["failed"],
        "modalities": library.reads.counts_by_modality(),
        "model": asdict(model) if model else None,
        "model_reason": library.get_info("model_reason"),
        "image_precision": library.image_precision,
        "index_type": index_type,
        "index_type_setting": library.index_type,
        "vectors_in_index": saved.ntotal if saved is not None else None,
        "index_up_to_date": saved is not None and saved.generation == library.generation,
        # the last autotune of an IVF/HNSW index: its setting, recall and single-query latency
        "search_tuning": (getattr(saved, "tuning_report", None) or {}).get("status") if saved is not None else None,
        "size_bytes": library.size_on_disk(),
        "last_run": library.runs.last(),
        "roots": [root.as_dict() for root in library.roots.all()],
        "failures": [{"path": path, "error": error} for path, error in library.reads.failures(failures)],
    }
