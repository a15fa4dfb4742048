"""`mmsearch search`: find images and sounds by words, by example image or sound, or by a weighted mix."""
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
    audio: Annotated[Optional[List[Path]], typer.Option("--audio", "-a", exists=True, dir_okay=False, help="Find sounds like this sound file (repeatable; words given too are added).")] = None,
    queries: Annotated[Optional[Path], typer.Option("--queries", exists=True, dir_okay=False, help="A file with one query per line: batch search.")] = None,
    top: Annotated[int, typer.Option("--top", "-n", min=1, help="How many results.")] = 10,
    path: Annotated[Optional[str], typer.Option("--path", help="Only paths matching this glob, e.g. '*/2023/*'; a relative glob is taken from the current folder.")] = None,
    after: Annotated[Optional[str], typer.Option(help="Only items taken (EXIF capture time; else the file's modified time) on or after this date, YYYY-MM-DD or YYYY-MM-DDTHH:MM.")] = None,
    before: Annotated[Optional[str], typer.Option(help="Only items taken (as --after) before this date.")] = None,
    modality: Annotated[Optional[List[str]], typer.Option("--modality", help="Only these kinds of items: image, video, audio (repeat or comma-separate; all: every kind).")] = None,
    ext: Annotated[Optional[List[str]], typer.Option("--ext", help="Only these extensions: repeat or comma-separate, e.g. --ext jpg,png (jpg also matches .jpeg, tif .tiff).")] = None,
    ocr: Annotated[Optional[str], typer.Option("--ocr", help='Only pictures whose words (read at index time with Tesseract) match these, e.g. --ocr "invoice 2041"; alone they rank the pictures, with a QUERY the pictures holding them are ranked by it. Each hit shows the line that matched (--json: ocr_snippet).', show_default=False)] = None,
    json_output: Annotated[bool, typer.Option("--json", help="JSON on stdout: an array of {path, score, ...}; with --queries one {query, results} object per line. A video hit has time (seconds), moments and thumbnail (its frame then, a small JPEG data: URI).")] = False,
    thumbnails: Annotated[bool, typer.Option("--thumbnails/--no-thumbnails", help="With --json: decode each video hit's frame for its thumbnail (--no-thumbnails: faster, no thumbnail).")] = True,
    min_relevance: Annotated[float, typer.Option(
        "--min-relevance", min=0.0, max=1.0, envvar="MMSEARCH_MIN_RELEVANCE",
        help="Drop results whose relevance (estimated probability of being what was asked for, 0-1) is below "
             "this, e.g. 0.5; a query for something the collection lacks then comes back empty.")] = 0.0,
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
    """Search the index by text, by image or sound, or a mix.

    Examples:
      mmsearch search "a dog on a beach" --top 20
      mmsearch search --image ./query.jpg
      mmsearch search "a dog barking" --modality audio
      mmsearch search --audio ./clip.wav
      mmsearch search "beach + sunset - people"
      mmsearch search "a red bicycle" --min-relevance 0.5
      mmsearch search --queries queries.txt --json
      mmsearch search --ocr "invoice 2041"
      mmsearch search "a receipt" --ocr coffee
    """
    setup_logging(verbose)
    if queries is not None and (query or image or audio):
        fail("--queries takes the queries from the file: give no QUERY, --image or --audio with it")
    if queries is not None and ocr is not None:
        fail("--ocr searches one query at a time: give it without --queries")
    if queries is None and not query and not image and not audio and ocr is None:
        fail('nothing to search for: give a QUERY, --image PATH, --audio PATH or --queries FILE (see mmsearch search --help)')
    if audio and image:
        fail("--audio ranks sounds and --image pictures: give one of them")
    from cli.config import load_config
    from retrieval.query.run import QueryRequest, make_filters, read_queries, search_index, search_queries
    from retrieval.query.thumbnails import hit_json

    request = QueryRequest(
        db=db_dir(db), top=top, model=model, configured_model=load_config().get("model"), device=device,
        search_threads=search_threads, min_relevance=min_relevance,
        filters=make_filters(path, parse_date(after, "--after"), parse_date(before, "--before"), ext or (),
                             modality or ()),
    )
    if queries is not None:
        batch = search_queries(request, read_queries(queries))
        for line, hits in batch.results:
            if json_output:
                _print_json({"query": line, "results": [hit_json(hit, thumbnails) for hit in hits]})
            else:
                console(stderr=False).print(f"# {line}", markup=False)
                _print_hits(hits)
        _print_notes(batch.notes)
        return
    outcome = search_index(request, query, tuple(str(path) for path in image or ()),
                           tuple(str(path) for path in audio or ()), words=ocr)
    if json_output:
        _print_json([hit_json(hit, thumbnails) for hit in outcome.hits])
    else:
        _print_hits(outcome.hits)
    _print_notes(outcome.notes)


def _print_notes(notes) -> None:
    for note in notes:
        console(stderr=True).print(f"note: {note}", markup=False, highlight=False)


def _print_json(value) -> None:
    """UTF-8 JSON; a file name that is not valid UTF-8 comes out \\u-escaped (json.loads + os.fsencode restore its bytes)."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value)
    print(text, flush=True)


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


def _print_hits(hits) -> None:
    """`score<TAB>relevance<TAB>path` lines (`path @ 01:23` for a moment in a sound or video); paths are written as
    their exact bytes, as ls and find do."""
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    for hit in hits:
        where = f"{hit.path} @ {_clock(hit.time)}" if hit.time is not None else hit.path
        relevance = f"{hit.relevance:.2f}" if hit.relevance is not None else "-"
        line = f"{hit.score:.4f}\t{relevance}\t{where}\n"
        if hit.ocr_snippet is not None:  # --ocr: the line of the picture's words that matched
            line = f"{hit.score:.4f}\t{relevance}\t{where}\t{' '.join(hit.ocr_snippet.split())}\n"
        if out is None:
            sys.stdout.write(line)
        else:
            out.write(line.encode("utf-8", "surrogateescape"))
    if out is not None:
        out.flush()
