"""Why a search found nothing, in words: an empty index, a filter no item passes, filters that
each pass items but not together. Called only when a search came back empty (it costs one count
per filter)."""
from __future__ import annotations

import dataclasses
from datetime import datetime

from indexer.store.library import Library
from retrieval.query.search import Filters


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment).strftime("%Y-%m-%d %H:%M")


def why_nothing(library: Library, filters: Filters) -> list[str]:
    """Sentences saying why `filters` (or the index) leave no result."""
    counts = library.reads.counts()
    if counts["items"] == 0:
        if counts["rows"]:
            return [f"the index holds no searchable item: all {counts['rows']} files it knows failed to index "
                    f"(`mmsearch status --failures 20` lists why)"]
        return ["the index is empty: run `mmsearch index FOLDER` first"]
    if not filters.active:
        return ["no item is close enough to the query"]
    alone = {
        "path": (dataclasses.replace(Filters(), path_glob=filters.path_glob),
                 f"no item's path matches --path {filters.path_glob!r}"),
        "after": (dataclasses.replace(Filters(), after=filters.after),
                  f"no item was taken (or, without a capture date, modified) on or after "
                  f"{_when(filters.after) if filters.after is not None else ''}"),
        "before": (dataclasses.replace(Filters(), before=filters.before),
                   f"no item was taken (or, without a capture date, modified) before "
                   f"{_when(filters.before) if filters.before is not None else ''}"),
        "ext": (dataclasses.replace(Filters(), extensions=filters.extensions),
                f"no item has the extension{'s' if len(filters.extensions) > 1 else ''} "
                f"{', '.join(filters.extensions)}"),
        "modality": (dataclasses.replace(Filters(), modalities=filters.modalities),
                     f"no item is a {' or '.join(filters.modalities)}"),
    }
    active = {
        "path": filters.path_glob, "after": filters.after is not None, "before": filters.before is not None,
        "ext": bool(filters.extensions), "modality": bool(filters.modalities),
    }
    notes = []
    for name, (single, sentence) in alone.items():
        if active[name] and not _matches(library, single):
            notes.append(sentence)
    if not notes:
        notes.append(f"each filter matches items, but no item matches them all "
                     f"({', '.join(name for name, on in active.items() if on)})")
    return notes


def _matches(library: Library, filters: Filters) -> bool:
    return len(library.reads.filter_ids(path_like=filters.path_glob, after=filters.after, before=filters.before,
                                        extensions=filters.extensions, modalities=filters.modalities,
                                        encoder=None)) > 0
