"""Embedding on a Ray cluster: the files of an index run read, decoded and embedded by Ray actors.

The run itself stays where `mmsearch index` runs (the driver): it walks the folders, tells changed
files from unchanged ones, and commits rows and vectors batch by batch, exactly as a local run
does (indexer.pipeline.sync), so a killed driver resumes the same way and redoes at most the
batches in flight. Ray Data takes the files to embed; one actor per worker loads the model once
(`num_gpus` per actor where the cluster has GPUs) and runs this machine's pipeline on its share:
decode threads with their time budget, the model's readers and encoders. A lost worker's batch is
retried by Ray.

Sounds are embedded on the actors too, by the run's audio model (each actor loads it once beside
the image model, and checks it is the driver's: same weights, same fingerprint).

Workers read files by path: the folders must be on a filesystem every worker mounts at the same
path (NFS, a cluster filesystem), and so must the index folder (the model's ONNX export is read
from it). Only vectors travel back to the driver, never pixels.
"""
from __future__ import annotations

import logging
import pickle
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import numpy as np

from indexer.errors import MmsearchError
from indexer.media.scan import FoundFile
from indexer.pipeline.embed import PipelineConfig, embed_batches, prepare_files
from indexer.pipeline.sync import IndexProgress
from indexer.store.records import NewItem
from retrieval.media import MediaOptions

log = logging.getLogger(__name__)


class RayError(MmsearchError):
    """Ray is missing, or its cluster cannot be reached."""


@dataclass(frozen=True)
class RayOptions:
    address: str  # HOST:PORT of a running cluster (what `ray start --head` prints), "auto", or "local"
    actors: int | None = None  # default: one per worker node's CPUs / cpus_per_actor (GPUs: one per GPU)
    cpus_per_actor: float = 1.0
    files_per_task: int = 64  # files a task gives an actor at once


@dataclass(frozen=True)
class ModelRecipe:
    """How an actor opens the index's model: as the driver did (name, precision, export folder)."""

    name: str
    image_precision: str
    image_export_dir: str | None
    media: MediaOptions = MediaOptions()
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    audio_model: str | None = None  # sounds: the index run's audio model (retrieval.media.choose_audio_model)
    audio_fingerprint: str | None = None  # ... as the driver loads it: an actor's must match


def _ray():
    try:
        import ray
    except ImportError:
        raise RayError("embedding on Ray needs Ray: pip install 'mmsearch[ray]'") from None
    return ray


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT that answers on TCP, checked first: ray.init retries an unreachable head for minutes."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise RayError(f"cannot reach the Ray cluster at {address!r}: give HOST:PORT (what `ray start --head` "
                       f"prints), auto or local")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise RayError(f"cannot reach the Ray cluster at {address!r}: {exc.strerror or exc} (is `ray start --head` "
                       f"running there, and the port open?)") from None


def connect(address: str) -> dict:
    """Join (or, for "local", start) the cluster; its resources."""
    ray = _ray()
    if not ray.is_initialized():
        target = None if address == "local" else address
        if address not in ("local", "auto"):
            _reachable(address)
        try:
            ray.init(address=target, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                     configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayError(f"cannot reach the Ray cluster at {address!r}: {exc} (a cluster with token "
                           f"authentication needs its token here too: RAY_AUTH_TOKEN or ~/.ray/auth_token)") from None
        except Exception as exc:  # noqa: BLE001 - ray.init raises a bare Exception when a local node starts too slowly
            ray.shutdown()  # what it started of a local node
            raise RayError(f"could not start or join the Ray cluster {address!r}: {exc}") from None
    return dict(ray.cluster_resources())


class _EmbedActor:
    """One per worker: the model, loaded once, and this machine's pipeline over each task's files."""

    def __init__(self, recipe: ModelRecipe, known_hashes: dict[str, int], device: str):
        from retrieval.media import media_for, open_audio_model
        from retrieval.models.encoders import load_model

        self.model = load_model(recipe.name, device=device, image_precision=recipe.image_precision,
                                image_export_dir=recipe.image_export_dir)
        audio = open_audio_model(recipe.audio_model, self.model, device=device)  # None: no sounds
        if audio is not None and audio.info.fingerprint != recipe.audio_fingerprint:
            raise RayError(f"the audio model {recipe.audio_model} loads with other weights on "
                           f"{socket.gethostname()} than on the driver: install the same mmsearch everywhere")
        self.media = media_for(self.model, recipe.media, audio)
        self.pipeline = recipe.pipeline
        self.known_hashes = known_hashes
        for encoder in self.media.encoders.values():
            encoder.warm()

    def __call__(self, batch: dict) -> dict:
        files = [FoundFile(str(path), int(size), float(mtime))
                 for path, size, mtime in zip(batch["path"], batch["size"], batch["mtime"])]
        vanished: list[tuple[str, str]] = []
        rows: list[NewItem] = []
        prepared = prepare_files(files, self.known_hashes, self.media.by_extension(), self.pipeline)
        for written in embed_batches(prepared, self.media.encoders, self.pipeline,
                                     on_vanished=lambda path, reason: vanished.append((path, reason))):
            rows.extend(written)
        outcomes = [pickle.dumps(("row", row)) for row in rows] + [pickle.dumps(("vanished", gone)) for gone in vanished]
        return {"outcome": np.array(outcomes, dtype=object)}


class RayEmbedding:
    """indexer.pipeline.sync.Embedding on a Ray cluster."""

    def __init__(self, options: RayOptions, recipe: ModelRecipe, device: str = "auto"):
        self.options = options
        self.recipe = recipe
        self.device = device
        self.resources: dict = {}
        self.actors = 0
        self.gpus_per_actor = 0.0
        self.started = 0.0
        self.files = 0

    def prepare(self, progress: Callable[[IndexProgress], None]) -> float:
        started = time.perf_counter()
        progress(IndexProgress("prepare", 0, 1))
        self.resources = connect(self.options.address)
        gpus = int(self.resources.get("GPU", 0)) if self.device != "cpu" else 0
        cpus = float(self.resources.get("CPU", 1))
        self.gpus_per_actor = 1.0 if gpus else 0.0
        self.actors = self.options.actors or (gpus or max(1, int(cpus // self.options.cpus_per_actor)))
        progress(IndexProgress("prepare", 1, 1))
        return time.perf_counter() - started

    def batches(self, files: list[FoundFile], known_hashes: dict[str, int],
                on_vanished: Callable[[str, str], None]) -> Iterator[list[NewItem]]:
        ray = _ray()
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        device = "cuda" if self.gpus_per_actor else "cpu"
        recipe = self.recipe
        if recipe.pipeline.workers is None:  # an actor decodes on its own share of a node, not on every core
            recipe = replace(recipe, pipeline=replace(recipe.pipeline, workers=max(1, int(self.options.cpus_per_actor))))
        tasks = max(1, -(-len(files) // self.options.files_per_task))
        dataset = ray.data.from_items([{"path": file.path, "size": file.size, "mtime": file.mtime} for file in files],
                                      override_num_blocks=tasks)  # one block per task, not one per file
        results = dataset.map_batches(
            _EmbedActor, fn_constructor_args=(recipe, dict(known_hashes), device),
            batch_size=self.options.files_per_task, batch_format="numpy", compute=ray.data.ActorPoolStrategy(
                size=min(self.actors, tasks)),
            num_cpus=self.options.cpus_per_actor, num_gpus=self.gpus_per_actor)
        self.started = time.perf_counter()
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            rows = []
            for blob in batch["outcome"]:
                kind, value = pickle.loads(blob)
                if kind == "vanished":
                    on_vanished(*value)
                else:
                    rows.append(value)
            self.files += len(batch["outcome"])
            if rows:
                yield rows

    def describe(self) -> dict:
        seconds = time.perf_counter() - self.started if self.started else 0.0
        rate = self.files / seconds if seconds > 0 else 0.0
        return {"where": "ray", "address": self.options.address, "actors": self.actors,
                "gpus_per_actor": self.gpus_per_actor, "cluster_cpus": self.resources.get("CPU"),
                "cluster_gpus": self.resources.get("GPU", 0), "files_per_s": round(rate, 2),
                "files_per_s_per_actor": round(rate / max(1, self.actors), 2)}
