"""A summary of an index, as plain data."""
from __future__ import annotations

from dataclasses import asdict

from indexer.media.ocr import CHOICE_KEY as OCR_CHOICE_KEY
from indexer.store import index_choice
from indexer.store.library import Library
from indexer.store.records import IMAGE

IMAGE_PRECISION_RAN = "image_precision_ran"  # info key: what the CPU image tower last ran at (retrieval.indexing)


def read_status(library: Library, failures: int = 5) -> dict:
    counts = library.reads.counts()
    model = library.model()
    saved = index_choice.load_saved(library.vector_files(IMAGE), generation=library.generation)
    choice = library.index_choice(counts["vectors"], model.dim if model else 512)
    index_type = saved.spec if saved is not None else choice.spec
    return {
        "db": str(library.folder),
        # where the metadata lives: "sqlite" (mmsearch.db in the folder) or "postgresql" (its URL, no password)
        "database": "postgresql" if library.database_url else "sqlite",
        "database_at": library.database_name,
        "items": counts["items"],
        "rows": counts["rows"],
        "vectors": counts["vectors"],
        "failed": counts["failed"],
        "modalities": library.reads.counts_by_modality(),
        "model": asdict(model) if model else None,
        "model_reason": library.get_info("model_reason"),
        # what ran (fp32 ONNX where int8 failed its check on this CPU); the setting where no run recorded it
        "image_precision": library.get_info(IMAGE_PRECISION_RAN) or library.image_precision,
        "image_precision_setting": library.image_precision,
        "index_type": index_type,
        "index_type_setting": library.index_type,
        # where the vectors are searched: "memory" (vectors.faiss) or "ondisk" (vectors.ondisk/), and why
        "index_kind": index_choice.index_kind(saved) if saved is not None else choice.kind,
        "index_choice": choice.reason,
        "max_index_memory": choice.budget,
        "max_index_memory_setting": library.max_index_memory,  # None: the machine's default
        "index_memory_estimate": choice.estimated_bytes,
        "vectors_in_index": saved.ntotal if saved is not None else None,
        "index_up_to_date": saved is not None and saved.generation == library.generation,
        # the last autotune of an IVF/HNSW index: its setting, recall and single-query latency
        "search_tuning": (getattr(saved, "tuning_report", None) or {}).get("status") if saved is not None else None,
        "size_bytes": library.size_on_disk(),
        "last_run": library.runs.last(),
        "roots": [root.as_dict() for root in library.roots.all()],
        "failures": [{"path": path, "error": error} for path, error in library.reads.failures(failures)],
        # words in pictures (--ocr): the index's remembered mode (None: an index from before it was
        # remembered, which runs off until asked), pictures with words, what became of each one tested or read
        "ocr_mode": library.get_info(OCR_CHOICE_KEY),
        "words": {"with_words": library.words.with_words(), "read": 0, "skipped": 0, "failed": 0,
                  **library.words.counts()},
    }
