"""faiss index files for the on-disk index: shards merged into OnDiskInvertedLists, lists rewritten
packed, indexes read with their lists mapped from wherever their folder now is, written atomically.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from indexer.errors import StoreError


def _faiss():
    import faiss

    return faiss


def apply_chain(index, queries: np.ndarray) -> np.ndarray:
    """Queries through the index's pre-transforms (OPQ), as its IVF part sees them."""
    faiss = _faiss()
    if isinstance(index, faiss.IndexPreTransform):
        for number in range(index.chain.size()):
            queries = index.chain.at(number).apply(queries)
    return np.ascontiguousarray(queries, dtype=np.float32)


@contextlib.contextmanager
def quiet_stdout():
    """File descriptor 1 sent to /dev/null meanwhile: OnDiskInvertedLists printf()s a line each time
    its file grows, which would land in the middle of a command's --json output."""
    import sys

    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout at all
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def write_shard(folder: Path, stem: str, number: int, shard) -> str:
    name = f"{stem}.shard{number}"
    _faiss().write_index(shard, str(folder / name))
    return name


def merge_lists(empty, invlists_seq, lists_path: Path):
    """`empty` (a trained index without vectors) holding the given lists, merged into one
    OnDiskInvertedLists file (faiss contrib's merge_ondisk, for lists already open)."""
    faiss = _faiss()
    ivf = faiss.extract_index_ivf(empty)
    merged = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(lists_path))
    vector = faiss.InvertedListsPtrVector()
    for invlists in invlists_seq:
        vector.push_back(invlists)
    with quiet_stdout():
        ntotal = merged.merge_from_multiple(vector.data(), vector.size(), False, False)
    empty.ntotal = ivf.ntotal = ntotal
    ivf.replace_invlists(merged, True)
    merged.this.disown()
    return empty


def rewrite_lists(empty, sources, lists_path: Path):
    """`empty` (a trained index without vectors) holding, list by list, the entries of each source
    but its dropped ids: `sources` is [(inverted lists, ids to drop or None)]. Written packed into a
    new OnDiskInvertedLists file: sizes first, then each list in place (what merge_from_multiple
    does), never by growing or shrinking a list of an on-disk file: OnDiskInvertedLists moves a
    resized list over the slot it just freed, which scrambled ids in faiss 1.15.1 (seen in this
    module's tests)."""
    faiss = _faiss()
    ivf = faiss.extract_index_ivf(empty)
    nlist, code_size = ivf.nlist, ivf.code_size

    def entries(list_no):
        for invlists, drop in sources:
            size = invlists.list_size(list_no)
            if not size:
                continue
            ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), size)
            codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), size * code_size).reshape(size, code_size)
            if drop is not None and len(drop):
                keep = ~np.isin(ids, drop)
                yield ids[keep], codes[keep]
            else:
                yield ids, codes

    sizes = np.zeros(nlist, dtype=np.uint64)
    for list_no in range(nlist):
        sizes[list_no] = sum(len(ids) for ids, _ in entries(list_no))
    merged = faiss.OnDiskInvertedLists(nlist, code_size, str(lists_path))
    total = int(sizes.sum()) * (8 + code_size)
    if total:
        with quiet_stdout():
            merged.update_totsize(total)  # the file, mapped (as merge_from_multiple sizes it)
    merged.set_all_lists_sizes(faiss.swig_ptr(sizes))
    for list_no in range(nlist):
        if sizes[list_no]:
            parts = list(entries(list_no))
            ids = np.ascontiguousarray(np.concatenate([ids for ids, _ in parts]), dtype=np.int64)
            codes = np.ascontiguousarray(np.concatenate([codes for _, codes in parts]), dtype=np.uint8)
            merged.update_entries(list_no, 0, len(ids), faiss.swig_ptr(ids), faiss.swig_ptr(codes))
    empty.ntotal = ivf.ntotal = int(sizes.sum())
    ivf.replace_invlists(merged, True)
    merged.this.disown()
    return empty


def empty_like(index_path: Path):
    """A trained, empty, in-memory copy of the index at index_path (its lists not read)."""
    faiss = _faiss()
    index = faiss.read_index(str(index_path), faiss.IO_FLAG_SKIP_IVF_DATA)
    ivf = faiss.extract_index_ivf(index)
    lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index owns it now
    index.ntotal = ivf.ntotal = 0
    return index


def read_mapped(folder: Path, index_name: str, lists_name: str):
    """The base index with its lists mapped read-only from `folder` (wherever the folder now is:
    the lists' path recorded inside the index file is replaced by the folder's)."""
    faiss = _faiss()
    index = faiss.read_index(str(folder / index_name), faiss.IO_FLAG_SKIP_IVF_DATA | faiss.IO_FLAG_READ_ONLY)
    ivf = faiss.extract_index_ivf(index)
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    if not isinstance(lists, faiss.OnDiskInvertedLists):
        raise StoreError(f"{folder / index_name} has no on-disk lists")
    lists.filename = str(folder / lists_name)
    lists.read_only = True
    if lists.totsize:
        lists.do_mmap()
    return index


def read_index_file(path: Path):
    return _faiss().read_index(str(path))


def write_index(index, path: Path) -> None:
    """write_index to a temp name, fsync, os.replace: the name holds a whole file or nothing."""
    faiss = _faiss()
    tmp = path.with_name(path.name + ".tmp")
    try:
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def list_spans(lists_path: Path, ivf) -> tuple[int | None, np.ndarray]:
    """(a descriptor of the lists file, [nlist, 2] byte offset and length of each list in it)."""
    faiss = _faiss()
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    if not isinstance(lists, faiss.OnDiskInvertedLists) or not lists.totsize:
        return None, np.zeros((ivf.nlist, 2), np.int64)
    spans = np.zeros((ivf.nlist, 2), np.int64)
    entry = 8 + ivf.code_size
    for list_no in range(ivf.nlist):
        one = lists.lists.at(list_no)
        spans[list_no] = (one.offset, one.capacity * entry if one.size else 0)
    return os.open(lists_path, os.O_RDONLY), spans
