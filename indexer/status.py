"""A summary of an index, as plain data."""
from __future__ import annotations

from dataclasses import asdict

from indexer.store.library import Library
from indexer.store.vectors import VectorIndex, choose_index_spec


def read_status(library: Library, failures: int = 5) -> dict:
    counts = library.meta.counts()
    model = library.meta.model()
    saved = VectorIndex.load(library.vectors_path) if library.vectors_path.exists() else None
    index_type = saved.spec if saved is not None else choose_index_spec(counts["items"], library.index_type)
    return {
        "db": str(library.folder),
        "items": counts["items"],
        "rows": counts["rows"],
        "failed": counts["failed"],
        "model": asdict(model) if model else None,
        "model_reason": library.meta.get_info("model_reason"),
        "index_type": index_type,
        "index_type_setting": library.index_type,
        "vectors_in_index": saved.ntotal if saved is not None else None,
        "index_up_to_date": saved is not None and saved.generation == library.meta.generation,
        # the last autotune of an IVF/HNSW index: its setting, recall and single-query latency
        "search_tuning": (getattr(saved, "tuning_report", None) or {}).get("status") if saved is not None else None,
        "size_bytes": library.size_on_disk(),
        "last_run": library.meta.last_run(),
        "failures": [{"path": path, "error": error} for path, error in library.meta.failures(failures)],
    }
