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
import os
import pickle
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import numpy as np

from indexer.errors import MmsearchError
from indexer.media.scan import FoundFile
from indexer.pipeline.embed import PipelineConfig, embed_batches, prepare_files
from indexer.pipeline.sync import IndexProgress
from indexer.pipeline.workers import usable_cores
from indexer.store.records import NewItem
from retrieval.media import MediaOptions

log = logging.getLogger(__name__)


class RayError(MmsearchError):
    """Ray is missing, or its cluster cannot be reached."""


@dataclass(frozen=True)
class RayOptions:
    address: str  # HOST:PORT of a running cluster (what `ray start --head` prints), "auto", or "local"
    actors: int | None = None  # default: one per node (GPUs: one per GPU); see plan_actors
    cpus_per_actor: float | None = None  # default: a whole node's CPUs (GPUs: the node's CPUs per GPU)
    files_per_task: int | None = None  # files a task gives an actor at once; default: task_size


# A task's files stream back batch by batch, so a big task costs no commit latency; a few tasks per
# actor keep the actors evenly busy, and every task boundary drains the actor's decode pipeline once.
TASKS_PER_ACTOR = 2
MAX_FILES_PER_TASK = 1024  # what a lost worker's retry redoes at most
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20  # only vectors travel back: the node started for "local" keeps a small store


@dataclass(frozen=True)
class ActorPlan:
    actors: int
    cpus_per_actor: float
    gpus_per_actor: float


def plan_actors(nodes: list[dict], options: RayOptions, use_gpus: bool) -> ActorPlan:
    """How many model copies, and each one's share of a node, from `ray.nodes()`.

    By default one actor takes a whole node (its decode threads and onnxruntime threads then use
    that node's cores as the plain path uses this machine's); on GPU nodes one actor per GPU, with
    that node's CPUs shared among them. Two actors of one CPU on a two-core node ran the same work
    ~4x slower than one actor of two: each loads the model, and their threads were oversubscribed.
    """
    alive = [node.get("Resources", {}) for node in nodes if node.get("Alive", True)]
    gpu_nodes = [res for res in alive if res.get("GPU", 0) >= 1] if use_gpus else []
    if gpu_nodes:
        cpus = options.cpus_per_actor or max(1.0, min(res.get("CPU", 1.0) / int(res["GPU"]) for res in gpu_nodes) // 1)
        actors = options.actors or sum(int(res["GPU"]) for res in gpu_nodes)
        return ActorPlan(actors, cpus, 1.0)
    cpu_nodes = [res.get("CPU", 0.0) for res in alive if res.get("CPU", 0.0) >= 1] or [1.0]
    cpus = options.cpus_per_actor or float(min(cpu_nodes) // 1)
    actors = options.actors or max(1, sum(int(node_cpus // cpus) for node_cpus in cpu_nodes))
    return ActorPlan(actors, cpus, 0.0)


def task_size(files: int, actors: int, batch_size: int, options: RayOptions) -> int:
    """Files per task: TASKS_PER_ACTOR tasks per actor, at least one write batch, at most MAX_FILES_PER_TASK."""
    if options.files_per_task:
        return options.files_per_task
    return max(batch_size, min(MAX_FILES_PER_TASK, -(-files // (actors * TASKS_PER_ACTOR))))


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


def _cluster_errors_to_log() -> None:
    """Ray's driver prints the cluster's error messages (a worker died, its task is retried) on stdout,
    where `mmsearch index --json` writes its summary: send them to this module's log instead."""
    try:
        from ray._private import worker
    except ImportError:
        return
    shown = getattr(worker, "print_to_stdstream", None)
    if shown is None or getattr(shown, "to_log", False):
        return

    def to_log(data: dict, ignore_prefix: bool) -> None:
        if data.get("pid") == "raylet" and not data.get("is_err"):
            for line in data.get("lines", ()):
                log.warning("ray: %s", line)
        else:
            shown(data, ignore_prefix)

    to_log.to_log = True
    worker.print_to_stdstream = to_log


def connect(address: str) -> dict:
    """Join (or, for "local", start) the cluster; its resources."""
    ray = _ray()
    if not ray.is_initialized():
        _cluster_errors_to_log()
        target = None if address == "local" else address
        if address not in ("local", "auto"):
            _reachable(address)
        node = {}
        if address == "local":  # a node of this machine's cores, nothing to watch it with, a small object store
            # and workers as nice as this process (Ray starts them at +15, behind everything else on the machine)
            node = {"num_cpus": usable_cores(), "object_store_memory": LOCAL_OBJECT_STORE_BYTES,
                    "_system_config": {"worker_niceness": 0}}
        try:
            ray.init(address=target, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                     configure_logging=False, **node)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayError(f"cannot reach the Ray cluster at {address!r}: {exc} (a cluster with token "
                           f"authentication needs its token here too: RAY_AUTH_TOKEN or ~/.ray/auth_token)") from None
        except Exception as exc:  # noqa: BLE001 - ray.init raises a bare Exception when a local node starts too slowly
            ray.shutdown()  # what it started of a local node
            raise RayError(f"could not start or join the Ray cluster {address!r}: {exc}") from None
    return dict(ray.cluster_resources())


class _EmbedActor:
    """One per worker: the model, loaded once, and this machine's pipeline over each task's files.

    A task's outcomes go back batch by batch as the pipeline writes them (one row per batch: Ray
    Data makes each its own block), so the driver commits while the task runs on. Each outcome
    carries the file's number in the run, so the driver can drop a retried task's second copy."""

    def __init__(self, recipe: ModelRecipe, known_hashes: dict[str, int], device: str, threads: int | None):
        from retrieval.media import media_for, open_audio_model
        from retrieval.models.encoders import load_model
        from retrieval.models.fast_image import cap_session_threads

        if threads:  # the actor's own CPUs, not every core of its node (onnxruntime's default); torch reads
            cap_session_threads(threads)  # OMP_NUM_THREADS, which Ray sets to them
        self.model = load_model(recipe.name, device=device, image_precision=recipe.image_precision,
                                image_export_dir=recipe.image_export_dir)
        audio = open_audio_model(recipe.audio_model, self.model, device=device)  # None: no sounds
        if audio is not None and audio.info.fingerprint != recipe.audio_fingerprint:
            raise RayError(f"the audio model {recipe.audio_model} loads with other weights on "
                           f"{socket.gethostname()} than on the driver: install the same mmsearch everywhere")
        self.media = media_for(self.model, recipe.media, audio)
        self.pipeline = recipe.pipeline
        self.known_hashes = known_hashes
        self.process = f"{socket.gethostname()}:{os.getpid()}"
        for encoder in self.media.encoders.values():
            encoder.warm()

    def __call__(self, batch: dict) -> Iterator[dict]:
        files = [FoundFile(str(path), int(size), float(mtime))
                 for path, size, mtime in zip(batch["path"], batch["size"], batch["mtime"])]
        number = {file.path: int(index) for file, index in zip(files, batch["index"])}
        vanished: list[tuple[str, str]] = []
        prepared = prepare_files(files, self.known_hashes, self.media.by_extension(), self.pipeline)
        for rows in embed_batches(prepared, self.media.encoders, self.pipeline,
                                  on_vanished=lambda path, reason: vanished.append((path, reason))):
            yield self._outcomes(rows, vanished, number)
        if vanished:
            yield self._outcomes([], vanished, number)

    def _outcomes(self, rows: list[NewItem], vanished: list[tuple[str, str]], number: dict[str, int]) -> dict:
        outcomes = ([("row", number[row.path], row) for row in rows]
                    + [("vanished", number[gone[0]], gone) for gone in vanished])
        vanished.clear()
        return {"outcomes": np.array([pickle.dumps(outcomes)], dtype=object), "process": np.array([self.process])}


class RayEmbedding:
    """indexer.pipeline.sync.Embedding on a Ray cluster."""

    def __init__(self, options: RayOptions, recipe: ModelRecipe, device: str = "auto", here=None):
        self.options = options
        self.here = here  # this process's Media of the same model (see prepare), or None
        self.recipe = recipe
        self.device = device
        self.resources: dict = {}
        self.plan = ActorPlan(0, 0.0, 0.0)
        self.files_per_task = 0
        self.started = 0.0
        self.files = 0
        self.processes: Counter[str] = Counter()  # files per actor process (a restarted actor is a new one)
        self.repeated = 0  # outcomes of a retried task that had already come back

    @property
    def actors(self) -> int:
        return self.plan.actors

    def prepare(self, progress: Callable[[IndexProgress], None], extensions: set[str] | None = None) -> float:
        """Join (or start) the cluster. For a node started here (`local`), the encoders the run's files
        reach are set up in this process meanwhile, on a thread: a new index's one-time ONNX export is
        then written while Ray starts, and the actor, on this machine, finds it made instead of
        making it after the node is up (an export's steps reach the model's on_step, as they would here)."""
        started = time.perf_counter()
        progress(IndexProgress("prepare", 0, 1))
        warming, failed = None, []
        if self.here is not None and self.options.address == "local" and self.device == "cpu":
            from indexer.pipeline.sync import warm_encoders

            def warm() -> None:
                try:
                    warm_encoders(self.here, lambda event: None, extensions)
                except Exception as exc:  # noqa: BLE001 - the actor sets its encoders up itself and says what fails
                    failed.append(exc)

            warming = threading.Thread(target=warm, name="warm-encoders", daemon=True)
            warming.start()
        try:
            self.resources = connect(self.options.address)
            self.plan = plan_actors(_ray().nodes(), self.options, use_gpus=self.device != "cpu")
        finally:
            if warming is not None:
                warming.join()
        if failed:
            log.info("setting the encoders up before the Ray actors failed (%s); the actors set them up", failed[0])
        progress(IndexProgress("prepare", 1, 1))
        return time.perf_counter() - started

    def batches(self, files: list[FoundFile], known_hashes: dict[str, int],
                on_vanished: Callable[[str, str], None]) -> Iterator[list[NewItem]]:
        ray = _ray()
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.target_max_block_size = 1  # every batch an actor yields (one row) is a block of its own: it streams back
        plan = self.plan
        device = "cuda" if plan.gpus_per_actor else "cpu"
        threads = max(1, int(plan.cpus_per_actor))
        recipe = self.recipe
        if recipe.pipeline.workers is None:  # an actor decodes on its own share of a node, not on every core
            recipe = replace(recipe, pipeline=replace(recipe.pipeline, workers=threads))
        self.files_per_task = task_size(len(files), plan.actors, recipe.pipeline.batch_size, self.options)
        tasks = max(1, -(-len(files) // self.files_per_task))
        dataset = ray.data.from_items(
            [{"index": index, "path": file.path, "size": file.size, "mtime": file.mtime}
             for index, file in enumerate(files)], override_num_blocks=tasks)  # one block per task, not one per file
        results = dataset.map_batches(
            _EmbedActor, fn_constructor_args=(recipe, dict(known_hashes), device, threads),
            batch_size=self.files_per_task, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(plan.actors, tasks)),
            # a lost actor is started again and its tasks run again there: Ray Data's actor pools default to
            # max_restarts=-1 and max_task_retries=-1 (tests/test_ray.py kills one mid-run)
            num_cpus=plan.cpus_per_actor, num_gpus=plan.gpus_per_actor)
        self.started = time.perf_counter()
        delivered = bytearray(len(files))
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            for blob, process in zip(batch["outcomes"], batch["process"]):
                rows = []
                for kind, index, value in pickle.loads(blob):
                    if delivered[index]:  # a retried task's second pass over a file already written
                        self.repeated += 1
                        continue
                    delivered[index] = 1
                    self.files += 1
                    self.processes[str(process)] += 1
                    if kind == "vanished":
                        on_vanished(*value)
                    else:
                        rows.append(value)
                if rows:
                    yield rows

    def describe(self) -> dict:
        seconds = time.perf_counter() - self.started if self.started else 0.0
        rate = self.files / seconds if seconds > 0 else 0.0
        return {"where": "ray", "address": self.options.address, "actors": self.actors,
                "cpus_per_actor": self.plan.cpus_per_actor, "gpus_per_actor": self.plan.gpus_per_actor,
                "cluster_cpus": self.resources.get("CPU"), "cluster_gpus": self.resources.get("GPU", 0),
                "files_per_task": self.files_per_task, "actor_processes": len(self.processes),
                "repeated_outcomes": self.repeated, "files_per_s": round(rate, 2),
                "files_per_s_per_actor": round(rate / max(1, self.actors), 2)}
