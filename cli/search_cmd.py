"""`mmsearch search`: find images by words, by example image, or by a weighted mix."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from cli.common import DbOption, ModelOption, console, db_dir, fail, friendly_errors, parse_date, setup_logging


@friendly_errors
def search(
    query: Annotated[Optional[str], typer.Argument(help='Words; combine with " + " and " - ", weight with "2:words". '
                                                        'An existing image path counts as an image.', show_default=False)] = None,
    image: Annotated[Optional[List[Path]], typer.Option("--image", "-i", exists=True, dir_okay=False, help="Search by this image (repeatable; adds to the query).")] = None,
    queries: Annotated[Optional[Path], typer.Option("--queries", exists=True, dir_okay=False, help="A file with one query per line: batch search.")] = None,
    top: Annotated[int, typer.Option("--top", "-n", min=1, help="How many results.")] = 10,
    path: Annotated[Optional[str], typer.Option("--path", help="Only paths matching this glob, e.g. '*/2023/*'.")] = None,
    after: Annotated[Optional[str], typer.Option(help="Only files modified on or after this date (YYYY-MM-DD).")] = None,
    before: Annotated[Optional[str], typer.Option(help="Only files modified before this date (YYYY-MM-DD).")] = None,
    ext: Annotated[Optional[List[str]], typer.Option("--ext", help="Only these extensions (repeatable), e.g. --ext jpg.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="JSON on stdout: an array of {path, score, ...}; with --queries one {query, results} object per line.")] = False,
    db: DbOption = None,
    model: ModelOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ... for the query towers; with --queries on a CUDA "
                                             "device, batches of 64 or more are also ranked on the GPU.")] = "cpu",
    search_threads: Annotated[Optional[int], typer.Option(
        "--search-threads", envvar="MMSEARCH_SEARCH_THREADS", min=1, show_default=False,
        help="CPU threads for the vector search. Default: 1 for one query (more threads only wait on each "
             "other, 5-10x slower on a busy machine), FAISS's default (all cores) for --queries.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Search the index by text, by image, or both.

    Examples:
      mmsearch search "a dog on a beach" --top 20
      mmsearch search --image ./query.jpg
      mmsearch search "beach + sunset - people"
      mmsearch search --queries queries.txt --json
    """
    setup_logging(verbose)
    if queries is not None and (query or image):
        fail("--queries takes the queries from the file: give no QUERY or --image with it")
    if queries is None and not query and not image:
        fail('nothing to search for: give a QUERY, --image PATH or --queries FILE (see mmsearch search --help)')
    from cli.config import load_config
    from indexer.store.library import Library
    from retrieval.index_model import search_model
    from retrieval.query.search import Filters, build_terms, embed_queries, embed_terms, rank

    filters = Filters(path_glob=path, after=parse_date(after, "--after"), before=parse_date(before, "--before"),
                      extensions=tuple(ext or ()))
    with Library(db_dir(db), create=False, read_only=True) as library:
        loaded = search_model(library, model, load_config().get("model"), device=device, one_query=queries is None)
        if queries is not None:
            try:
                text = queries.read_text(encoding="utf-8-sig")
            except UnicodeDecodeError as exc:
                fail(f"{queries} is not UTF-8 text (byte {exc.start}); save it as UTF-8")
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            vectors = embed_queries(loaded, lines)
            _set_search_threads(search_threads)
            if device == "auto":
                from retrieval.models.encoders import pick_device

                device = pick_device(device)
            results = rank(library, vectors, top, filters, device=device)
            for line, hits in zip(lines, results):
                if json_output:
                    _print_json({"query": line, "results": [hit.as_dict() for hit in hits]})
                else:
                    console(stderr=False).print(f"# {line}", markup=False)
                    _print_hits(hits)
            return
        vector = embed_terms(loaded, build_terms(query, image or ()))
        _set_search_threads(search_threads or 1)
        hits = rank(library, vector, top, filters)[0]
    if json_output:
        _print_json([hit.as_dict() for hit in hits])
    else:
        _print_hits(hits)


def _set_search_threads(threads: Optional[int]) -> None:
    """FAISS's OpenMP threads for this process; None leaves its default. See docs/BENCHMARKS.md, "Cold start"."""
    if threads:
        import faiss  # the search imports it anyway

        faiss.omp_set_num_threads(threads)


def _print_json(value) -> None:
    """UTF-8 JSON; a file name that is not valid UTF-8 comes out \\u-escaped (json.loads + os.fsencode restore its bytes)."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value)
    print(text, flush=True)


def _print_hits(hits) -> None:
    """`score<TAB>path` lines; paths are written as their exact bytes, as ls and find do."""
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    for hit in hits:
        line = f"{hit.score:.4f}\t{hit.path}\n"
        if out is None:
            sys.stdout.write(line)
        else:
            out.write(line.encode("utf-8", "surrogateescape"))
    if out is not None:
        out.flush()
