"""`mmsearch reindex --audio-model NAME`: the index's sounds re-embedded with another audio model.

The pictures and their model stay as they are. The sounds' new vectors are staged beside the live
ones and swapped in with one transaction (indexer.pipeline.reindex, encoder "audio"), so searches
keep finding sounds with the old audio model until then, and a killed run resumes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from indexer.errors import MmsearchError
from indexer.media.audio_reader import AUDIO
from indexer.media.kinds import Media
from indexer.pipeline.embed import PipelineConfig
from indexer.pipeline.reindex import ReindexReport, reindex
from indexer.store.library import Library
from indexer.store.records import ModelInfo
from indexer.store.staging import Staging
from retrieval.media import NO_AUDIO, audio_media, open_audio_model
from retrieval.models.encoders import resolve_device

log = logging.getLogger(__name__)


class AudioReindexError(MmsearchError):
    """A sounds' reindex that cannot be done as asked (no sounds, no model, another reindex half done)."""


@dataclass(frozen=True)
class AudioReindexRequest:
    db: Path
    audio_model: str
    device: str = "auto"
    restart: bool = False  # discard a half-finished reindex to another model
    pipeline: PipelineConfig = PipelineConfig()
    wait_s: float = 0.0


@dataclass
class AudioReindexOutcome:
    report: ReindexReport
    model: ModelInfo
    previous: ModelInfo | None

    def as_dict(self) -> dict:
        return {**self.report.as_dict(), "audio_model": self.model.name,
                "previous_audio_model": self.previous.name if self.previous else None}


def reindex_sounds(request: AudioReindexRequest, on_progress=None, on_file_error=None) -> AudioReindexOutcome:
    """Re-embed every indexed sound with `request.audio_model` (see the module docstring)."""
    if request.audio_model.strip().lower() in NO_AUDIO:
        raise AudioReindexError(f"--audio-model {request.audio_model}: reindex re-embeds the sounds with another "
                                "audio model; to take sounds out of the index, `mmsearch forget` their files")
    device, _ = resolve_device(request.device)
    with Library(request.db, create=False) as library, library.lock(request.wait_s):
        previous = library.model(AUDIO)
        if previous is None or library.reads.counts_by_modality().get(AUDIO, 0) == 0:
            raise AudioReindexError("this index holds no sounds to re-embed: index them with "
                                    f"`mmsearch index FOLDER --audio-model {request.audio_model}`")
        audio = open_audio_model(request.audio_model, None, device=device)
        staging = Staging(library.db, AUDIO)
        staged, staged_encoder = staging.model(), staging.staged_encoder()
        if staged is not None and (staged.fingerprint != audio.info.fingerprint or staged_encoder != AUDIO):
            again = f"--audio-model {staged.name}" if staged_encoder == AUDIO else f"--model {staged.name}"
            if not request.restart:
                raise AudioReindexError(f"a reindex to {staged.name} is half done; run `mmsearch reindex {again}` to "
                                        f"finish it, or add --restart to discard it and switch to {audio.info.name}")
            staging.abandon()
        reader, encoder = audio_media(audio)
        run_id = library.runs.start("reindex", [])
        report = reindex(library, Media(readers=(reader,), encoders={AUDIO: encoder}), request.pipeline,
                         on_progress=on_progress, on_file_error=on_file_error, encoder=AUDIO)
        library.set_info("audio_model_reason", f"switched with `mmsearch reindex --audio-model {audio.info.name}`")
        library.runs.finish(run_id, embedded=report.embedded, failed=report.failed, seconds=round(report.seconds, 3))
        return AudioReindexOutcome(report, audio.info, previous)
