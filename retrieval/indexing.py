"""An index run and a reindex, each one library call: everything before and after the pipeline.

`index_library`: open the index and take its write lock, choose and open the model (the index's
own, or the default policy for a new index), record the CPU image precision, run the pipeline
(indexer.pipeline.sync), then export the text tower to ONNX for torch-free text searches (a step
of its own in the progress), and remember why a new index got its model. `reindex_library` does
the same around indexer.pipeline.reindex. The CLI only parses, calls one of these and renders.
"""
from __future__ import annotations

import glob
import logging
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from indexer.errors import MmsearchError
from indexer.media.ocr import CHOICE_KEY as OCR_CHOICE_KEY
from indexer.media.ocr import OcrOptions, OcrUnavailableError, check_mode, chosen_mode, tesseract_problem
from indexer.media.scan import ScanOptions
from indexer.media.video_reader import check_frames
from indexer.pipeline.embed import PipelineConfig
from indexer.pipeline.reindex import ReindexReport, reindex
from indexer.pipeline.sync import IndexConfig, IndexProgress, IndexReport, index_folders
from indexer.pipeline.words import WordsAhead, WordsReport, read_pictures
from indexer.status import IMAGE_PRECISION_RAN
from indexer.store.library import Library
from indexer.store.records import IMAGE, ModelInfo
from indexer.store.roots import RootSettings, is_under
from indexer.store.vectors import check_index_type
from retrieval.index_model import ModelChoice, choose_model, open_model
from retrieval.media import MediaOptions, choose_audio_model, media_for, open_audio_model, remember_audio_choice
from retrieval.models.encoders import resolve_device
from retrieval.text_export_job import TextExportJob, TextExportResult, text_export_needed, write_text_export

if TYPE_CHECKING:
    from retrieval.ray_embed import RayOptions

log = logging.getLogger(__name__)

NEXT_EXPORT_SUFFIX = ".next"  # a reindex exports the new model's image tower beside the old one's


@dataclass(frozen=True)
class IndexRequest:
    db: Path
    roots: tuple[str, ...]
    model: str | None = None  # named with --model / MMSEARCH_MODEL
    configured_model: str | None = None  # from the config file
    device: str = "auto"
    precision: str | None = None  # CPU image precision; None: the index's own (onnx-int8 for a new one)
    index_type: str | None = None  # None keeps the index's own setting
    # how each root is walked: given here, else what the root was last indexed with, else the defaults
    # (the config file's), else nothing excluded and no hidden files
    exclude: tuple[str, ...] | None = None
    hidden: bool | None = None
    follow_outside: bool | None = None  # follow symbolic links that lead outside the root
    video_frames: str | None = None  # keyframes | dense (indexer.media.video_reader); remembered per root
    default_exclude: tuple[str, ...] = ()
    default_hidden: bool = False
    pipeline: PipelineConfig = PipelineConfig()
    media: MediaOptions = MediaOptions()
    wait_s: float = 0.0
    # words in pictures (--ocr, --ocr-lang); mode None: what the index remembers, else auto for a new
    # index (indexer.media.ocr.chosen_mode); a mode given is remembered
    ocr: OcrOptions = OcrOptions(mode=None)
    ray: "RayOptions | None" = None  # embed on a Ray cluster (retrieval.ray_embed) instead of here
    max_index_memory: int | None = None  # bytes the vector index may hold in memory; None keeps the index's own
    audio_model: str | None = None  # --audio-model / MMSEARCH_AUDIO_MODEL ("none": no sounds)
    configured_audio_model: str | None = None  # the config file's


@dataclass
class IndexOutcome:
    report: IndexReport
    model: ModelInfo
    choice: ModelChoice
    image_precision: str  # what the image tower ran at (a GPU runs the plain tower: fp32; see record_precision_ran)
    export_seconds: float = 0.0  # the text tower's ONNX export after the images (counted in `seconds`)
    words: WordsReport | None = None  # the words pass (None: --ocr off, or no Tesseract)
    notes: list[str] = field(default_factory=list)  # for the person running it (no Tesseract: words not read)
    text_export: TextExportResult | None = None  # an export that ran beside the images (export_seconds: its wait)

    @property
    def seconds(self) -> float:
        return self.report.seconds + self.export_seconds + (self.words.seconds if self.words else 0.0)

    def as_dict(self) -> dict:
        out = self.report.as_dict()
        out.update({"seconds": round(self.seconds, 3), "export_seconds": round(self.export_seconds, 3),
                    "model": self.model.name, "image_precision": self.image_precision})
        if self.words is not None:
            out["words"] = self.words.as_dict()
        if self.text_export is not None:
            out["text_export"] = self.text_export.as_dict()
        return out


@dataclass(frozen=True)
class Callbacks:
    on_progress: Callable[[IndexProgress], None] | None = None
    on_file_error: Callable[[str, str], None] | None = None
    on_model: Callable[[ModelChoice, ModelInfo], None] | None = None  # once the model is chosen, before any work
    tqdm_class: object = None  # draws a model download's progress (the default policy may fetch weights)
    on_step: Callable[[str], None] | None = None  # each step of a one-time image export, within "prepare"

    def progress(self, event: IndexProgress) -> None:
        if self.on_progress is not None:
            self.on_progress(event)


def index_library(request: IndexRequest, callbacks: Callbacks = Callbacks()) -> IndexOutcome:
    """Bring the index at `request.db` up to date with `request.roots` (see the module docstring)."""
    if request.index_type:
        check_index_type(request.index_type)
    device, _ = resolve_device(request.device)  # a GPU asked for and missing is an error before any work
    notes = []
    if request.ocr.mode:
        check_mode(request.ocr.mode)
    with Library(request.db) as library, library.lock(request.wait_s):
        ocr = _words_options(library, request.ocr, notes)  # before any work: --ocr on without Tesseract fails
        roots = tuple(os.path.abspath(os.path.expanduser(root)) for root in request.roots) or known_roots(library)
        if not roots:
            raise MmsearchError("say which folders to index: mmsearch index FOLDER (this index has none yet)")
        if request.max_index_memory:
            library.set_max_index_memory(request.max_index_memory)
        new_index = library.model() is None
        choice = choose_model(library, request.model, request.configured_model, default_policy=True,
                              tqdm_class=callbacks.tqdm_class)
        model = open_model(library, choice.name, device=device, precision=request.precision)
        model.on_image_step = callbacks.on_step
        if request.index_type:
            check_index_type(request.index_type, model.info.dim)
        if callbacks.on_model is not None:
            callbacks.on_model(choice, model.info)
        if library.image_precision != model.settings.image_precision:
            library.set_info("image_precision", model.settings.image_precision)
        audio = open_audio_model(choose_audio_model(library, request.audio_model, request.configured_audio_model),
                                 model, device=device)
        remember_audio_choice(library, request.audio_model)
        settings = {root: remember_root(library, root, request) for root in roots}
        # the text test runs where pictures are decoded (here, or on the Ray actors: their answers
        # come back with the rows), so the words pass never decodes a picture it skips
        request = replace(request, media=replace(with_video_frames(request.media, settings.values()),
                                                 screen_text=ocr.mode != "off"))
        here = media_for(model, request.media, audio)
        config = IndexConfig(roots=roots, pipeline=request.pipeline, index_type=request.index_type,
                             scans={root: scan_options(root_settings) for root, root_settings in settings.items()},
                             embedding=_ray_embedding(request, library, model, device, audio, here) if request.ray else None)
        ahead = WordsAhead(ocr) if ocr.mode != "off" else None  # Tesseract beside the embedding
        # a missing or stale text export starts beside the images, when the run reaches its model
        # set-up (it has files to embed), and is waited for after them (retrieval.text_export_job)
        job = TextExportJob(library.text_export_path, model) \
            if text_export_needed(library.text_export_path, model.info.fingerprint) else None

        def on_progress(event: IndexProgress) -> None:
            if job is not None and event.phase == "prepare" and not job.started:
                job.start()
                callbacks.progress(IndexProgress("export", 0, 1))
            callbacks.progress(event)

        try:
            try:
                report = index_folders(library, here, config,
                                       on_progress=on_progress, on_file_error=callbacks.on_file_error,
                                       on_written=ahead.written if ahead is not None else None)
                words = None
                if ahead is not None:
                    words = read_pictures(library, ocr, workers=request.pipeline.workers, ahead=ahead,
                                          on_progress=lambda done, total: callbacks.progress(
                                              IndexProgress("words", done, total)))
            finally:
                if ahead is not None:
                    ahead.close()
        except BaseException:
            if job is not None and job.started:
                job.finish()  # its folder is staged: a failed run leaves no half-written export behind
            raise
        export_seconds, text_export = 0.0, None
        # the index holds this model's vectors: make text searches fast (also on an unchanged re-run,
        # which replaces an export written by an older version; a current one is left alone)
        if job is not None and job.started:
            text_export = job.finish()
            callbacks.progress(IndexProgress("export", 1, 1))
            export_seconds = text_export.waited
            if not text_export.ok:
                notes.append(f"the text tower's ONNX export failed ({text_export.error}); the pictures are indexed, "
                             f"text searches use the torch text tower (slower to start) until `mmsearch repair` "
                             f"writes it")
        elif report.embedded or report.reused or report.unchanged:
            export_seconds = export_text_tower(library, model, callbacks)
        if new_index and choice.reason:
            library.set_info("model_reason", choice.reason)
        return IndexOutcome(report, model.info, choice, record_precision_ran(library, model), export_seconds, words,
                            notes, text_export)


def _words_options(library: Library, asked: OcrOptions, notes: list[str]) -> OcrOptions:
    """The run's OCR options with its mode chosen (`chosen_mode`) and remembered by the index; auto
    without Tesseract becomes off for this run, with a note."""
    remembered = library.get_info(OCR_CHOICE_KEY)
    new_index = library.model() is None
    mode = chosen_mode(asked.mode, remembered, new_index=new_index,
                       has_words=not new_index and remembered is None and bool(library.words.counts()))
    problem = tesseract_problem(asked.lang) if mode != "off" else None
    if problem is not None and mode == "on":  # not remembered: the next run is not an error too
        raise OcrUnavailableError(f"--ocr on, but {problem}")
    if mode != remembered:
        library.set_info(OCR_CHOICE_KEY, mode)  # auto without Tesseract too: words are read once it is installed
    if problem is not None:
        notes.append(f"words in pictures are not read: {problem} (--ocr off hides this note)")
        mode = "off"
    return replace(asked, mode=mode)


def record_precision_ran(library: Library, model) -> str:
    """The image precision that really ran (retrieval.models.fast_image: fp32 ONNX where the int8 graph
    failed its check on this CPU, a torch tower after a fallback), recorded for `status` when the
    tower was built this run; else the one recorded by the last run that built it."""
    if model.image_built:
        ran = model.image_precision_ran
        if library.get_info(IMAGE_PRECISION_RAN) != ran:
            library.set_info(IMAGE_PRECISION_RAN, ran)
        return ran
    return library.get_info(IMAGE_PRECISION_RAN) or model.image_precision


def _ray_embedding(request: IndexRequest, library: Library, model, device: str, audio=None, here=None):
    """Ray's embedding; `here` (this process's readers and encoders of the same model) makes the
    index's one-time exports on this machine while a local node starts (RayEmbedding.prepare)."""
    from retrieval.ray_embed import ModelRecipe, RayEmbedding

    recipe = ModelRecipe(model.info.name, model.settings.image_precision, str(library.image_export_path),
                         request.media, request.pipeline, audio_model=audio.info.name if audio is not None else None,
                         audio_fingerprint=audio.info.fingerprint if audio is not None else None)
    return RayEmbedding(request.ray, recipe, device, here=here)


def known_roots(library: Library) -> tuple[str, ...]:
    """The folders this index was given (runs before per-root settings existed count too)."""
    return tuple(dict.fromkeys([root.path for root in library.roots.all()] + library.runs.indexed_roots()))


def remember_root(library: Library, root: str, request: IndexRequest) -> RootSettings:
    """The settings `root` is walked with this time (see IndexRequest), saved for the next run. A
    folder inside an indexed root inherits that root's settings and its forgotten paths."""
    own = library.roots.get(root)
    above = own or library.roots.covering(root)
    forgotten = tuple(path for path in (above.forgotten if above else ()) if is_under(path, root) and path != root)
    settings = RootSettings(
        root,
        exclude=request.exclude if request.exclude is not None else above.exclude if above else request.default_exclude,
        hidden=request.hidden if request.hidden is not None else above.hidden if above else request.default_hidden,
        follow_outside=request.follow_outside if request.follow_outside is not None else
        above.follow_outside if above else False,
        forgotten=forgotten,
        video_frames=check_frames(request.video_frames) if request.video_frames is not None else
        above.video_frames if above else None,
    )
    return library.roots.remember(settings)


def with_video_frames(media: MediaOptions, roots) -> MediaOptions:
    """`media` with the video frames each root asked for (RootSettings.video_frames)."""
    chosen = tuple((root.path, root.video_frames) for root in roots if root.video_frames)
    return replace(media, video_frames_by_root=chosen) if chosen else media


def scan_options(settings: RootSettings) -> ScanOptions:
    """How a root is walked: its excludes, and its forgotten paths (as exact paths, glob-escaped)."""
    forgotten = tuple(pattern for path in settings.forgotten for pattern in (glob.escape(path), glob.escape(path) + "/*"))
    return ScanOptions(exclude=settings.exclude + forgotten, include_hidden=settings.hidden,
                       follow_outside=settings.follow_outside)


def export_text_tower(library: Library, model, callbacks: Callbacks = Callbacks()) -> float:
    """The text tower's ONNX export beside the index (written when missing or stale), optimised to
    open fast; a progress step of its own. Returns its seconds."""
    started = time.perf_counter()
    callbacks.progress(IndexProgress("export", 0, 1))
    write_text_export(library.text_export_path, model)
    callbacks.progress(IndexProgress("export", 1, 1))
    return time.perf_counter() - started


@dataclass(frozen=True)
class ReindexRequest:
    db: Path
    model: str
    device: str = "auto"
    restart: bool = False  # discard a half-finished reindex to another model
    pipeline: PipelineConfig = PipelineConfig()
    media: MediaOptions = MediaOptions()
    wait_s: float = 0.0


@dataclass
class ReindexOutcome:
    report: ReindexReport
    model: ModelInfo
    export_seconds: float = 0.0

    def as_dict(self) -> dict:
        return {**self.report.as_dict(), "model": self.model.name, "export_seconds": round(self.export_seconds, 3)}


class ReindexConflictError(MmsearchError):
    """A reindex to another model is half done."""


def reindex_library(request: ReindexRequest, callbacks: Callbacks = Callbacks()) -> ReindexOutcome:
    """Re-embed the whole index with `request.model`; searches keep the old model until the swap."""
    device, _ = resolve_device(request.device)
    with Library(request.db, create=False) as library, library.lock(request.wait_s):
        next_export = library.image_export_path.with_name(library.image_export_path.name + NEXT_EXPORT_SUFFIX)
        model = open_model(library, request.model, device=device, export_dir=next_export, check=False)
        model.on_image_step = callbacks.on_step
        if callbacks.on_model is not None:
            callbacks.on_model(ModelChoice(model.info.name, "switched with `mmsearch reindex`"), model.info)
        staged = library.staging.model()
        if staged is not None and staged.fingerprint != model.info.fingerprint:
            if not request.restart:
                again = "--audio-model" if library.staging.staged_encoder() not in (None, IMAGE) else "--model"
                raise ReindexConflictError(
                    f"a reindex to {staged.name} is half done; run `mmsearch reindex {again} {staged.name}` to finish "
                    f"it, or add --restart to discard it and switch to {model.info.name}")
            library.staging.abandon()
        run_id = library.runs.start("reindex", [])
        media = with_video_frames(request.media, library.roots.all())  # each folder's --video-frames
        report = reindex(library, media_for(model, media), request.pipeline,
                         on_progress=callbacks.on_progress, on_file_error=callbacks.on_file_error)
        _promote_export(next_export, library.image_export_path)
        export_seconds = export_text_tower(library, model, callbacks)
        record_precision_ran(library, model)
        library.set_info("model_reason", f"switched with `mmsearch reindex --model {model.info.name}`")
        library.runs.finish(run_id, embedded=report.embedded, failed=report.failed,
                            seconds=round(report.seconds + export_seconds, 3))
        return ReindexOutcome(report, model.info, export_seconds)


def _promote_export(staged: Path, live: Path) -> None:
    """The new model's image export takes the index's export folder (a kill in between costs a
    re-export on the next run, never a wrong one: exports carry their model's fingerprint)."""
    if not staged.is_dir():
        return
    if live.exists():
        shutil.rmtree(live)
    os.replace(staged, live)
