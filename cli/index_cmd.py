"""`mmsearch index`: walk folders, embed new and changed images, drop vanished ones."""
from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from cli.common import (
    BUNDLED_NOTICE,
    DbOption,
    ModelOption,
    db_dir,
    err_console,
    friendly_errors,
    is_terminal,
    rich_tqdm,
    setup_logging,
)
from retrieval.models.hub import RECOMMENDED_MODEL


class GpuDecode(str, enum.Enum):
    auto = "auto"
    on = "on"
    off = "off"


class VideoFrames(str, enum.Enum):
    keyframes = "keyframes"
    dense = "dense"


class OcrMode(str, enum.Enum):
    auto = "auto"
    on = "on"
    off = "off"


@friendly_errors
def index(
    folders: Annotated[Optional[List[Path]], typer.Argument(help="Folders (or files) to index. None: every folder this index was given before, each with its own settings.", exists=True, show_default=False)] = None,
    db: DbOption = None,
    model: ModelOption = None,
    exclude: Annotated[Optional[List[str]], typer.Option("--exclude", "-x", help="Glob of names or paths to skip; repeatable. Remembered for the folder: the next run uses it too (give --exclude '' to clear).")] = None,
    hidden: Annotated[Optional[bool], typer.Option("--hidden/--no-hidden", show_default=False, help="Also index hidden files and folders (remembered for the folder; default: no).")] = None,
    follow_outside: Annotated[Optional[bool], typer.Option("--follow-outside/--stay-inside", show_default=False, help="Follow symbolic links that lead outside the folder (remembered for the folder; default: stay inside, and name each such link once).")] = None,
    video_frames: Annotated[Optional[VideoFrames], typer.Option("--video-frames", show_default=False, help="Which frames of a video are looked at (remembered for the folder). keyframes (the default): only the pictures a video can be cut at, which phones write every second or two and encoders put at most scene cuts: fast (1080p H.264 indexes at 35-88x real time on 2 cores), but a shot that starts between two keyframes far apart is found from the next one, or missed if it ends first. dense: also decodes long stretches between keyframes to find every cut and a frame a second: finds every shot, but decoding those stretches is most of the work: 2.8x real time against 88x for 1080p H.264 with x264's 250-frame keyframe gaps. Videos indexed before a change keep their moments until they change or `mmsearch reindex`.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model batch.")] = 32,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Decode threads (default: CPU count, at most 8; every core when the GPU decodes JPEGs).")] = None,
    exact_decode: Annotated[bool, typer.Option("--exact-decode", help="Decode JPEGs at full size (draft mode is on by default: faster, nearly identical).")] = False,
    max_megapixels: Annotated[float, typer.Option(help="Skip images larger than this.")] = 100.0,
    decode_timeout: Annotated[float, typer.Option(min=0, help="Give up on a file that takes longer than this many seconds to read and decode (0: no limit).")] = 30.0,
    index_type: Annotated[Optional[str], typer.Option(help="auto (exact below 100k, IVF above; on disk past --max-index-memory), flat, ivf, hnsw, ondisk, or a faiss index_factory string.")] = None,
    max_index_memory: Annotated[Optional[str], typer.Option("--max-index-memory", help="Memory the vector index may take (4GB, 500MB, 2GiB): past it, auto puts the index on disk (IVF-PQ, re-ranked by exact vectors). Recorded in the index; default: half of this machine's memory, at most 4 GB.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    gpu_decode: Annotated[GpuDecode, typer.Option("--gpu-decode", help="JPEGs decoded on the GPU (nvJPEG) when the image tower runs on CUDA. auto: whenever possible; on: fail without it.")] = GpuDecode.auto,
    cpu_assist: Annotated[float, typer.Option("--assist-megapixels", min=0, help="With GPU decoding: while a full batch of JPEGs already waits for the GPU, a decode thread decodes the next JPEG of at least this many megapixels itself, so the CPU and the GPU share big photos (0: the GPU decodes every JPEG).")] = 4.0,
    precision: Annotated[Optional[str], typer.Option(help="CPU image tower: onnx-int8 (fastest; default for a new index), onnx, int8, bf16 or fp32. Recorded in the index; image queries use the same.")] = None,
    audio_model: Annotated[Optional[str], typer.Option("--audio-model", envvar="MMSEARCH_AUDIO_MODEL", show_default=False, help="Sounds (wav, flac, mp3, ogg, opus, m4a ...): bundled (the default; offline, shares the bundled model's text space), none (leave sounds out; remembered by the index), clap (LAION-CLAP, downloaded on first use), clap:HUB_ID_OR_FOLDER, or a fine-tuned tower's folder. Recorded in the index.")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for another indexer on the same index.")] = 0.0,
    db_url: Annotated[Optional[str], typer.Option("--db-url", metavar="URL", show_default=False, help="Keep the index's metadata in PostgreSQL: a SQLAlchemy URL, postgresql+psycopg://USER@HOST:PORT/DBNAME (pip install 'mmsearch[postgres]'). Remembered in the index folder (without the password: give it in the URL or PGPASSWORD each time); the vector files stay in the folder.")] = None,
    ocr: Annotated[Optional[OcrMode], typer.Option("--ocr", show_default=False, help="Read the words in pictures with Tesseract, for `search --ocr`. auto (the default for a new index): the pictures a quick text test finds text in; without Tesseract a one-line note says so and the run goes on. on: every picture (an error without Tesseract). off: none. Remembered by the index (an index made before auto was the default stays off until asked). On photos without text, auto costs little beside a CLIP-sized model (0.8x-1x the speed of off) but most of the speed of the small bundled one (about 0.24x: its text test costs more than that model's embedding); see docs/BENCHMARKS.md.")] = None,
    ocr_lang: Annotated[str, typer.Option("--ocr-lang", help="Tesseract languages, e.g. eng or eng+deu (Debian: apt install tesseract-ocr-deu). Pictures read in another language are read again.")] = "eng",
    ocr_timeout: Annotated[float, typer.Option("--ocr-timeout", min=1, help="Seconds Tesseract may spend on one picture; past it the picture keeps its vector and gets no words.")] = 20.0,
    ray: Annotated[Optional[str], typer.Option("--ray", metavar="ADDRESS", show_default=False, help="Embed on a Ray cluster: HOST:PORT (what `ray start --head` prints), auto, or local (start one here). The folders and the index must be on a filesystem every worker mounts at the same path.")] = None,
    ray_actors: Annotated[Optional[int], typer.Option("--ray-actors", min=1, show_default=False, help="With --ray: model copies (default: one per node, with all its CPUs, or one per GPU).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the run's summary as JSON on stdout, with every skipped file and why.")] = False,
    report_limit: Annotated[int, typer.Option(min=0, help="Name at most this many skipped files on stderr, then only count them (0: name all).")] = 100,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Index images and sounds under FOLDERS; run again to pick up changes (only new or changed files are embedded).

    Example:  mmsearch index ~/Pictures --exclude '*/thumbnails/*'
    """
    setup_logging(verbose)
    from cli.config import load_config
    from cli.progress import RunProgress
    from indexer.media.image import DecodeOptions
    from indexer.media.ocr import OcrOptions
    from indexer.pipeline.embed import PipelineConfig
    from retrieval.indexing import Callbacks, IndexRequest, index_library
    from retrieval.media import MediaOptions
    from retrieval.ray_embed import RayOptions

    config = load_config()
    request = IndexRequest(
        db=db_dir(db), roots=tuple(str(folder) for folder in folders or ()), model=model,
        configured_model=config.get("model"), device=device, precision=precision, index_type=index_type,
        exclude=None if exclude is None else tuple(pattern for pattern in exclude if pattern),
        hidden=hidden, follow_outside=follow_outside, video_frames=video_frames.value if video_frames else None,
        default_exclude=tuple(config.get("exclude", ())), default_hidden=bool(config.get("hidden", False)),
        pipeline=PipelineConfig(batch_size=batch_size, workers=workers, decode_timeout_s=decode_timeout or None),
        media=MediaOptions(decode=DecodeOptions(draft=not exact_decode, max_megapixels=max_megapixels),
                           gpu_decode=gpu_decode.value, assist_megapixels=cpu_assist or None),
        wait_s=wait, max_index_memory=_parse_budget(max_index_memory),
        ray=RayOptions(ray, actors=ray_actors) if ray else None,
        ocr=OcrOptions(mode=ocr.value if ocr else None, lang=ocr_lang, timeout_s=ocr_timeout),
        audio_model=audio_model, configured_audio_model=config.get("audio_model"),
    )
    if db_url:
        from indexer.store.location import remember_database_url

        remember_database_url(request.db, db_url)
    reported = 0

    def file_error(path: str, reason: str) -> None:
        nonlocal reported
        reported += 1
        if not report_limit or reported <= report_limit:
            err_console.print(f"skipping {path}: {reason}", markup=False, highlight=False)

    def on_model(choice, info) -> None:
        if choice.fallback:
            err_console.print(BUNDLED_NOTICE.format(recommended=RECOMMENDED_MODEL), markup=False)
        if not is_terminal():
            err_console.print(f"indexing {', '.join(request.roots) or 'the known folders'} with {info.name}", markup=False)

    with RunProgress() as progress:
        outcome = index_library(request, Callbacks(on_progress=progress.update, on_file_error=file_error,
                                                   on_model=on_model, tqdm_class=rich_tqdm(), on_step=progress.step))
    report = outcome.report
    summary = outcome.as_dict()
    for note in outcome.notes:
        err_console.print(f"Note: {note}", markup=False, highlight=False)
    if json_output:
        summary["failures"] = [{"path": path, "reason": reason} for path, reason in report.failures]
        print(json.dumps(summary), flush=True)  # ASCII-escaped: safe for names that are not UTF-8
    if report_limit and len(report.failures) > report_limit:
        err_console.print(f"... and {len(report.failures) - report_limit} more skipped files (--report-limit 0 names "
                          f"them all; `mmsearch status --failures N` lists the recorded ones)", markup=False)
    setup = [f"model set-up {report.prepare_seconds:.1f} s" if report.prepare_seconds >= 0.5 else "",
             f"text export {outcome.export_seconds:.1f} s" if outcome.export_seconds >= 0.5 else ""]
    text_export = outcome.text_export
    if text_export is not None:  # it ran beside the images: the run waited only for its end
        setup[1] = f"waiting for the text export {text_export.waited:.1f} s" if text_export.waited >= 0.5 else ""
        setup.append(f"text export {text_export.seconds:.1f} s beside the images" +
                     ("" if text_export.ok else ", FAILED (see the note above)"))
    setup_note = f"; of which {', '.join(part for part in setup if part)}" if any(setup) else ""
    if report.embedding.get("where") == "ray":
        where = report.embedding
        err_console.print(f"embedded on Ray at {where['address']}: {where['actors']} actors, "
                          f"{where['files_per_s_per_actor']:.1f} files/s each", markup=False)
    err_console.print(
        f"indexed {report.embedded}, reused {report.reused}, unchanged {report.unchanged}, removed {report.removed}, "
        f"failed {report.failed}{f', skipped {report.skipped}' if report.skipped else ''} in {outcome.seconds:.1f} s "
        f"({report.images_per_s:.1f} images/s{setup_note}; image tower {outcome.image_precision})",
        markup=False,
    )
    words = outcome.words
    if words is not None and (words.read or words.skipped or words.failed or words.copied):
        err_console.print(
            f"words: read {words.read} pictures, skipped {words.skipped} without text, copied {words.copied}, "
            f"failed {words.failed} in {words.seconds:.1f} s", markup=False)
        for path, reason in words.failures[:report_limit or None]:
            err_console.print(f"no words for {path}: {reason}", markup=False, highlight=False)


def _parse_budget(text: str | None) -> int | None:
    if text is None:
        return None
    from indexer.store.index_choice import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--max-index-memory") from exc
