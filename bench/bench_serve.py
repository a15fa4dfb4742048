"""Web server speed and stability on a synthetic 100k-item index, side by side with the CLI.

Measures, in one run:
1. warm queries: p50/p95 of a text query over HTTP against `mmsearch serve` (each query a new
   text, so the text tower runs every time), next pages of one query (cached text vector),
   "more like this", and an image upload; plus the server's own `took_ms`;
2. cold CLI: `mmsearch search "..." --db ... --json --top N` as a new process each time (imports,
   model build, FAISS file load, search), on the same index, in the same run;
3. load: C concurrent clients (asyncio + httpx, keep-alive) for S seconds against 127.0.0.1 only,
   a mix of text searches (with paging), "more like this", item metadata and status; counts errors
   (anything but HTTP 200, or a transport error) and samples the server's RSS every second.

The index is built synthetically for speed: rows + random unit vectors written straight through
`ItemStore.write_batch` / `NewItem` (no files on disk, so no thumbnails are asked for), then the
FAISS file is built as `mmsearch index` would (auto type: IVF from 100k vectors). The model is an
architecture config with RANDOM weights (`--arch tiny`: the tests' 64-d towers; `--arch
ViT-B-32`: open_clip's ViT-B-32, a 512-d index and a real-sized text tower): speed only. `--arch
bundled` uses the bundled offline model (its real weights).

`--compare-text` measures only warm text queries, for three text encoders side by side in one run:
three servers on the same index, started with no text export (torch tower), with a fixed-length
ONNX export (what versions before trimming wrote) and with the current trimmed ONNX export (both
pre-optimised as `mmsearch index` leaves them); each query goes to the three servers in turn (the
order rotating), so a change in the machine's load hits all three alike.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_serve.py --items 2000 --queries 20 --seconds 5 --clients 20
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_serve.py --arch ViT-B-32 --items 100000
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_serve.py --arch ViT-B-32 --items 100000 --compare-text
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY = {"embed_dim": 64,
        "vision_cfg": {"image_size": 64, "layers": 6, "width": 256, "head_width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 6}}
ADJECTIVES = ("red", "blue", "old", "small", "wet", "sunny", "dark", "happy", "tall", "green", "foggy", "busy",
              "quiet", "snowy", "golden", "broken", "shiny", "wooden", "empty", "crowded")
NOUNS = ("dog", "cat", "beach", "mountain", "car", "bicycle", "city street", "kitchen", "forest", "boat", "bridge",
         "birthday cake", "train", "garden", "child", "sunset", "market", "lake", "church", "airplane")
EXTENSIONS = ("jpg", "jpg", "jpg", "png", "heic", "webp")


# --- set-up -----------------------------------------------------------------------------------
def write_model_config(folder: Path, arch: str) -> Path | str:
    if arch == "bundled":
        return "bundled"
    if arch == "tiny":
        cfg = TINY
    else:
        import open_clip

        cfg = open_clip.get_model_config(arch)
        if cfg is None:
            raise SystemExit(f"open_clip has no architecture {arch!r}")
    path = folder / f"{arch}-random.json"
    path.write_text(json.dumps({**cfg, "seed": 0}))
    return path


def build_synthetic_index(db: Path, model_config: Path, items: int, batch: int = 5000, vectors: str = "uniform") -> dict:
    """Rows + random unit vectors through ItemStore.write_batch, then the FAISS file.

    `vectors`: "uniform" (on the whole sphere: no structure, so the autotuner must probe every IVF
    list to reach its recall target) or "cliplike" (bench_search's stand-in for CLIP image
    embeddings: clustered in a narrow cone, like real ones).
    """
    from indexer.store.library import Library
    from indexer.store.records import NewItem, single_vector
    from retrieval.models.encoders import load_model

    model = load_model(str(model_config), device="cpu")  # a card only: no tower is built
    dim = model.info.dim
    rng = np.random.default_rng(0)
    mixture = None
    if vectors == "cliplike":
        sys.path.insert(0, str(ROOT / "bench"))
        from bench_search import ClipLikeMixture

        mixture = ClipLikeMixture.make(dim, seed=0)
    root = "/synthetic/photos"
    started = time.perf_counter()
    with Library(db) as library, library.lock():
        library.db.bind_model(model.info)
        run_id = library.runs.start("index", [root])
        now = time.time()
        for start in range(0, items, batch):
            count = min(batch, items - start)
            if mixture is not None:
                block = mixture.sample(count, rng)
            else:
                block = rng.standard_normal((count, dim), dtype=np.float32)
                block /= np.linalg.norm(block, axis=1, keepdims=True)
            rows = []
            for offset in range(count):
                number = start + offset
                ext = EXTENSIONS[number % len(EXTENSIONS)]
                rows.append(NewItem(
                    path=f"{root}/{2015 + number % 10}/{number // 1000:03d}/img{number:06d}.{ext}",
                    size=200_000 + number % 5000, mtime=now - (number % 3650) * 86400.0, content_hash=None,
                    width=4000, height=3000, format="JPEG", vectors=single_vector(block[offset])))
            library.items.write_batch(rows, run_id)
        rows_s = time.perf_counter() - started
        library.update_vectors(base_generation=-1)
        library.runs.finish(run_id, embedded=items)
        from indexer.status import read_status

        status = read_status(library)
    return {"rows_s": rows_s, "total_s": time.perf_counter() - started, "index_type": status["index_type"],
            "dim": dim, "tuning": tuning_line(db)}


def tuning_line(db: Path) -> str:
    """The autotuned search setting the FAISS sidecar records (nprobe / efSearch), as a short phrase."""
    from indexer.store.vectors import sidecar_path

    try:
        sidecar = json.loads(sidecar_path(db / "vectors.faiss").read_text())
    except (OSError, ValueError):
        return "no tuning recorded"
    tuning, spec = sidecar.get("tuning") or {}, sidecar.get("spec", "")
    key = "nprobe" if spec.startswith("IVF") else "ef_search" if "HNSW" in spec else None
    return f"{key} {tuning[key]}" if key in tuning else "exact (no setting)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mmsearch() -> str:
    return str(Path(sys.executable).with_name("mmsearch"))


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# `mmsearch serve` with the torch text tower run at the full context length, as before trimming
UNTRIMMED_SERVE = ("import sys\nimport retrieval.models.encoders as encoders\nencoders.TextEncoder.trimmed = None\n"
                   "from cli.app import main\nsys.argv[0] = 'mmsearch'\nsys.exit(main())\n")


# `mmsearch serve` with ServerConfig.text_precision="int8" (the CLI has no flag for it)
INT8_SERVE = ("import dataclasses, sys\nimport retrieval.server.engine as engine\nopen_text = engine.open_text_encoder\n"
              "engine.open_text_encoder = lambda library, model, config: open_text(library, model, "
              "dataclasses.replace(config, text_precision='int8'))\n"
              "from cli.app import main\nsys.argv[0] = 'mmsearch'\nsys.exit(main())\n")


def start_server(db: Path, log: Path, threads: int, *, variant: str = "") -> tuple[subprocess.Popen, str, float]:
    import httpx

    port = free_port()
    started = time.perf_counter()
    wrapper = {"torch-full": UNTRIMMED_SERVE, "onnx-trimmed-int8": INT8_SERVE}.get(variant)
    command = [sys.executable, "-c", wrapper] if wrapper else [mmsearch()]
    process = subprocess.Popen(command + ["serve", "--db", str(db), "--port", str(port), "--threads", str(threads)],
                               stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    while time.perf_counter() - started < 600:
        if process.poll() is not None:
            raise SystemExit(f"mmsearch serve exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(base + "/api/health", timeout=2).status_code == 200:
                return process, base, time.perf_counter() - started
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("mmsearch serve did not start in 600 s")


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


# --- measurements ----------------------------------------------------------------------------
def distinct_queries(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    pairs = [(adj, noun) for adj in ADJECTIVES for noun in NOUNS]
    rng.shuffle(pairs)
    queries = [f"a photo of a {adj} {noun}" for adj, noun in pairs]
    while len(queries) < count:  # more than 400: three-word mixes
        queries.append(f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} + {rng.choice(NOUNS)} - {rng.choice(NOUNS)}")
    return queries[:count]


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]
    return {"n": len(values), "p50": statistics.median(values), "p95": pick(0.95), "p99": pick(0.99),
            "min": ordered[0], "max": ordered[-1]}


def timed(client, method: str, url: str, **kwargs) -> tuple[float, dict]:
    started = time.perf_counter()
    response = client.request(method, url, **kwargs)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{method} {url} -> {response.status_code}: {response.text[:300]}")
    return elapsed, response.json()


def jpeg_bytes(seed: int = 1) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def measure_warm(base: str, queries: int, limit: int) -> dict:
    import httpx

    out: dict = {}
    with httpx.Client(base_url=base, timeout=60) as client:
        for query in distinct_queries(20, seed=99):  # warm-up: first-call costs, caches, page cache
            timed(client, "GET", "/api/search", params={"q": query, "limit": limit})
        texts = distinct_queries(queries, seed=1)
        wall, server = [], []
        for query in texts:
            elapsed, page = timed(client, "GET", "/api/search", params={"q": query, "limit": limit})
            wall.append(elapsed)
            server.append(page["took_ms"])
        out["text"] = percentiles(wall)
        out["text_server_took"] = percentiles(server)
        paging = [timed(client, "GET", "/api/search", params={"q": query, "offset": limit, "limit": limit})[0]
                  for query in texts[:50]]
        out["next_page"] = percentiles(paging)
        first_ids = [timed(client, "GET", "/api/search", params={"q": q, "limit": 1})[1]["results"][0]["id"]
                     for q in texts[:50]]
        out["more_like_this"] = percentiles([timed(client, "GET", f"/api/items/{item_id}/similar",
                                                   params={"limit": limit})[0] for item_id in first_ids])
        image = jpeg_bytes()
        timed(client, "POST", "/api/search", params={"limit": limit}, content=image,
              headers={"Content-Type": "image/jpeg"})  # builds the image tower
        # a different picture each time: the server keeps uploads' vectors by their bytes (?upload=ID), so
        # the same picture again would time a cache hit, not a decode and an embedding
        out["image_upload"] = percentiles([
            timed(client, "POST", "/api/search", params={"limit": limit}, content=jpeg_bytes(seed),
                  headers={"Content-Type": "image/jpeg"})[0] for seed in range(2, 22)])
        filtered = [timed(client, "GET", "/api/search", params={"q": q, "limit": limit, "ext": "png",
                                                                "after": "2020-01-01"})[0] for q in texts[:50]]
        out["text_filtered"] = percentiles(filtered)
    return out


def measure_cli(db: Path, runs: int, limit: int) -> dict:
    walls = []
    for query in distinct_queries(runs, seed=7):
        started = time.perf_counter()
        done = subprocess.run([mmsearch(), "search", query, "--db", str(db), "--json", "--top", str(limit)],
                              capture_output=True, text=True)
        walls.append((time.perf_counter() - started) * 1000)
        if done.returncode != 0:
            raise SystemExit(f"mmsearch search failed:\n{done.stderr[-2000:]}")
        assert len(json.loads(done.stdout)) == limit
    return percentiles(walls)


async def _load(base: str, clients: int, seconds: float, item_ids: list[int], pid: int) -> dict:
    import httpx

    texts = distinct_queries(600, seed=3)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    rss: list[tuple[float, float]] = []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def one_client(number: int, client: httpx.AsyncClient) -> None:
        rng = random.Random(number)
        while time.monotonic() < deadline:
            roll = rng.random()
            if roll < 0.70:
                params = {"q": rng.choice(texts), "limit": 48, "offset": 48 * rng.randrange(3)}
                url = "/api/search"
            elif roll < 0.85:
                url, params = f"/api/items/{rng.choice(item_ids)}/similar", {"limit": 48}
            elif roll < 0.97:
                url, params = f"/api/items/{rng.choice(item_ids)}", {}
            else:
                url, params = "/api/status", {}
            started = time.perf_counter()
            try:
                response = await client.get(url, params=params)
                if response.status_code != 200:
                    errors[f"HTTP {response.status_code}"] = errors.get(f"HTTP {response.status_code}", 0) + 1
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            latencies.append((time.perf_counter() - started) * 1000)

    async def sample_rss() -> None:
        started = time.monotonic()
        while time.monotonic() < deadline:
            rss.append((time.monotonic() - started, rss_mb(pid)))
            await asyncio.sleep(1.0)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        started = time.perf_counter()
        await asyncio.gather(sample_rss(), *(one_client(number, client) for number in range(clients)))
        elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "errors": sum(errors.values()), "error_kinds": errors,
            "seconds": elapsed, "rps": len(latencies) / elapsed, "latency": percentiles(latencies), "rss": rss}


def measure_load(base: str, clients: int, seconds: float, pid: int, items: int) -> dict:
    item_ids = random.Random(5).sample(range(1, items + 1), min(items, 2000))
    before = rss_mb(pid)
    result = asyncio.run(_load(base, clients, seconds, item_ids, pid))
    time.sleep(1.0)
    result["rss_start_mb"], result["rss_end_mb"] = before, rss_mb(pid)
    result["rss_max_mb"] = max([before, result["rss_end_mb"]] + [value for _, value in result["rss"]])
    warmed = [value for moment, value in result["rss"] if moment >= 5.0]  # thread pool and buffers grown
    result["rss_after_5s_mb"] = warmed[0] if warmed else result["rss_end_mb"]
    return result


# --- text encoders side by side ----------------------------------------------------------------
TEXT_VARIANTS = (("torch-full", "torch tower, full length (before this change)"),
                 ("torch", "torch tower, trimmed (no export, or not usable)"),
                 ("onnx", "ONNX, full length (an export made before this change)"),
                 ("onnx-trimmed", "ONNX, trimmed (the export `mmsearch index` writes now)"),
                 ("onnx-trimmed-int8", "ONNX int8, trimmed (`text_precision=\"int8\"`, export with `int8=True`)"))


def prepare_exports(workdir: Path, model_name: str) -> dict:
    """Both kinds of text export of the model, each pre-optimised as `mmsearch index` leaves it."""
    from retrieval.models.encoders import load_model
    from retrieval.models.fast_text import optimise_text_export
    from retrieval.models.onnx_text import export_sequence, export_text_encoder

    model = load_model(model_name, device="cpu")
    folders = {}
    for variant, trim in (("onnx", False), ("onnx-trimmed", True)):
        folder = workdir / f"export-{variant}"
        if not (folder / "text_encoder.json").is_file():
            started = time.perf_counter()
            export_text_encoder(model, folder, trim=trim, int8=trim)
            optimise_text_export(folder)
            print(f"exported {variant} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        if trim and export_sequence(folder) != "trimmed":
            raise SystemExit(f"the {model_name} text tower was exported at full length: nothing to compare")
        if trim:
            int8 = json.loads((folder / "text_encoder.json").read_text()).get("int8") or {}
            print(f"int8 text graph: least cosine to torch {int8.get('min_cosine')}, "
                  f"{'kept' if int8.get('file') else 'rejected'}", file=sys.stderr)
        folders[variant] = folder
    return folders


def token_lengths(folder: Path, texts: list[str]) -> list[int]:
    from retrieval.models.onnx_text import OnnxTextEncoder

    encoder = OnnxTextEncoder(folder, threads=1)
    return [encoder.model_input([text]).shape[1] for text in texts]


def compare_text_encoders(db: Path, workdir: Path, model_name: str, args) -> dict:
    """Warm text-query latency on one server per text encoder (TEXT_VARIANTS), queries interleaved."""
    import httpx

    from indexer.store.library import TEXT_EXPORT_NAME

    exports = prepare_exports(workdir, model_name)
    int8 = json.loads((exports["onnx-trimmed"] / "text_encoder.json").read_text()).get("int8") or {}
    order = [variant for variant, _ in TEXT_VARIANTS if variant != "onnx-trimmed-int8" or int8.get("file")]
    target = db / TEXT_EXPORT_NAME
    servers: dict[str, tuple] = {}
    try:
        for variant in order:  # each server picks its text encoder at start-up
            shutil.rmtree(target, ignore_errors=True)
            if variant.startswith("onnx"):
                shutil.copytree(exports[variant.removesuffix("-int8")], target)
            process, base, startup_s = start_server(db, workdir / f"serve-{variant}.log", args.threads, variant=variant)
            servers[variant] = (process, base, startup_s)
            backend = httpx.get(base + "/api/status", timeout=60).json()["server"]["text_encoder"]
            if backend != variant.removesuffix("-full"):
                raise SystemExit(f"server started for {variant} reports text encoder {backend}")
        clients = {variant: httpx.Client(base_url=base, timeout=60) for variant, (_, base, _) in servers.items()}
        for query in distinct_queries(20, seed=99):  # warm-up
            for variant in order:
                timed(clients[variant], "GET", "/api/search", params={"q": query, "limit": args.limit})
        texts = distinct_queries(args.queries, seed=1)
        wall = {variant: [] for variant in order}
        took = {variant: [] for variant in order}
        for number, query in enumerate(texts):
            for variant in order[number % len(order):] + order[:number % len(order)]:
                elapsed, page = timed(clients[variant], "GET", "/api/search", params={"q": query, "limit": args.limit})
                wall[variant].append(elapsed)
                took[variant].append(page["took_ms"])
        paging = [timed(clients["onnx-trimmed"], "GET", "/api/search",
                        params={"q": query, "offset": args.limit, "limit": args.limit})[0] for query in texts[:50]]
        for client in clients.values():
            client.close()
    finally:
        for process, _, _ in servers.values():
            stop_server(process)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(exports["onnx-trimmed"], target)  # leave the index as `mmsearch index` would
    lengths = token_lengths(exports["onnx-trimmed"], texts)
    return {"variants": {variant: {"text": percentiles(wall[variant]), "took": percentiles(took[variant]),
                                   "startup_s": servers[variant][2]} for variant in order},
            "next_page": percentiles(paging), "tokens": percentiles(lengths),
            "context_length": token_lengths(exports["onnx"], texts[:1])[0], "int8": int8}


def measure_in_process(db: Path, args) -> dict:
    """Where a warm text query's time goes, without HTTP: the engine `mmsearch serve` opens, called directly."""
    import torch

    from retrieval.models.encoders import load_model
    from retrieval.query.search import rank
    from retrieval.server import ServerConfig
    from retrieval.server.engine import SearchEngine, SearchRequest, WarmLibrary

    torch.set_num_threads(args.threads)
    library = WarmLibrary(db)
    model = load_model(library.model().name, device="cpu")
    engine = SearchEngine(library, model, ServerConfig(db=db, torch_threads=args.threads))
    try:
        engine.warm()
        texts = distinct_queries(args.queries, seed=1)

        def clock(function, runs: int) -> dict:
            times = []
            for number in range(runs):
                started = time.perf_counter()
                function(number)
                times.append((time.perf_counter() - started) * 1000)
            return percentiles(times)

        vector = engine.text_vectors([texts[0]])[0]
        index = library.vectors_for_search()
        ids = [hit.item_id for hit in rank(library, vector, args.limit + 1)[0]]
        return {
            "text_encoder": engine.text_backend,
            "embed": clock(lambda n: engine.text_encoder.embed_texts([texts[n % len(texts)]]), min(100, len(texts))),
            "search_cached_vector": clock(lambda n: engine.search(SearchRequest(text=texts[0], limit=args.limit)), 100),
            "faiss": clock(lambda n: index.search(vector[None], args.limit + 1), 100),
            "item_rows": clock(lambda n: library.reads.items(ids), 100),
        }
    finally:
        engine.close()


def compare_markdown(args, built: dict, result: dict, load_before, load_after) -> str:
    ms = lambda stats: f"{stats['p50']:.1f} ({stats['p95']:.1f})"
    tokens = result["tokens"]
    lines = [
        f"- Command: `HF_HUB_OFFLINE=1 flock /tmp/mms-bench.lock .venv/bin/python bench/bench_serve.py --arch {args.arch} "
        f"--items {args.items} --queries {args.queries} --threads {args.threads} --vectors {args.vectors} --compare-text`",
        f"- Machine: {machine_line()}; date {dt.date.today().isoformat()}; load average {load_before[0]:.1f} at the "
        f"start, {load_after[0]:.1f} at the end (the CPU was shared with other jobs)",
        f"- Index: {args.items:,} synthetic items, {built['dim']}-d, FAISS `{built['index_type']}`; model `{args.arch}`; "
        f"{args.queries} distinct queries ('a photo of a red dog' style), {tokens['min']}-{tokens['max']} tokens "
        f"(median {tokens['p50']:g}) against a context of {result['context_length']}; each query sent to the "
        f"{len(result['variants'])} servers in turn; vectors `{args.vectors}`, search setting {built['tuning']}",
        "",
        "| text query, p50 (p95), ms | HTTP round trip | server `took_ms` (embed + rank) | server start |",
        "| --- | --- | --- | --- |",
    ]
    for variant, label in TEXT_VARIANTS:
        stats = result["variants"].get(variant)
        if stats is None:
            lines.append(f"| {label} | not run: int8 graph rejected at export (least cosine to torch "
                         f"{result['int8'].get('min_cosine')}) | | |")
            continue
        lines.append(f"| {label} | {ms(stats['text'])} | {ms(stats['took'])} | {stats['startup_s']:.1f} s |")
    lines.append(f"| next page (vector cached: rank only) | {ms(result['next_page'])} | | |")
    return "\n".join(lines)


# --- report ----------------------------------------------------------------------------------
def machine_line() -> str:
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()}-core {platform.machine()} CPU, no GPU ({model})"


def markdown(args, built: dict, startup_s: float, warm: dict, cli: dict, load: dict | None, load_avg) -> str:
    ms = lambda stats: f"{stats['p50']:.1f} ms (p95 {stats['p95']:.1f})"
    lines = [
        f"- Command: `HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_serve.py --arch {args.arch} --items {args.items} "
        f"--queries {args.queries} --cli-runs {args.cli_runs} --clients {args.clients} --seconds {args.seconds:g} "
        f"--threads {args.threads}`",
        f"- Machine: {machine_line()}; date {dt.date.today().isoformat()}; load average at start "
        f"{load_avg[0]:.1f} (the CPU was shared with other jobs)",
        f"- Index: {args.items:,} synthetic items, {built['dim']}-d random unit vectors, FAISS `{built['index_type']}` "
        f"(auto type), model `{args.arch}` architecture with random weights; server start-up (imports, model, "
        f"index) {startup_s:.1f} s",
        "",
        "| query (limit 48) | p50 (p95) |",
        "| --- | --- |",
        f"| `mmsearch serve`: text, each query new (HTTP round trip) | {ms(warm['text'])} |",
        f"| `mmsearch serve`: same, server-side `took_ms` | {ms(warm['text_server_took'])} |",
        f"| `mmsearch serve`: next page of a query | {ms(warm['next_page'])} |",
        f"| `mmsearch serve`: text + filters (ext, after) | {ms(warm['text_filtered'])} |",
        f"| `mmsearch serve`: more like this | {ms(warm['more_like_this'])} |",
        f"| `mmsearch serve`: upload a 640x480 JPEG | {ms(warm['image_upload'])} |",
        f"| `mmsearch search` (CLI, cold process, {cli['n']} runs) | {ms(cli)} |",
    ]
    if load is not None:
        lines += [
            "",
            f"Load: {args.clients} concurrent clients for {args.seconds:g} s (127.0.0.1; 70% text search with "
            f"paging, 15% more like this, 12% item, 3% status): {load['requests']:,} requests, "
            f"**{load['errors']} errors**{' ' + json.dumps(load['error_kinds']) if load['errors'] else ''}, "
            f"{load['rps']:.0f} req/s, latency p50 {load['latency']['p50']:.0f} ms / p95 {load['latency']['p95']:.0f} ms; "
            f"server RSS {load['rss_start_mb']:.0f} MB before the load, {load['rss_after_5s_mb']:.0f} MB after "
            f"5 s (thread pool and connections set up), {load['rss_end_mb']:.0f} MB at the end "
            f"(max {load['rss_max_mb']:.0f} MB).",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="tiny", help="tiny (64-d) or an open_clip architecture, e.g. ViT-B-32")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200, help="distinct text queries for the warm p50")
    parser.add_argument("--limit", type=int, default=48)
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=1, help="mmsearch serve --threads")
    parser.add_argument("--workdir", type=Path, help="keep (and reuse) the synthetic index here")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--markdown-out", type=Path)
    parser.add_argument("--vectors", choices=("uniform", "cliplike"), default="uniform",
                        help="synthetic index vectors: uniform on the sphere, or clustered like CLIP embeddings")
    parser.add_argument("--in-process", action="store_true",
                        help="only the engine in this process: text embed, search with a cached vector, FAISS, rows")
    parser.add_argument("--compare-text", action="store_true",
                        help="only warm text queries: torch vs fixed-length ONNX vs trimmed ONNX, side by side")
    args = parser.parse_args()
    if args.clients > 500 or args.seconds > 600:
        raise SystemExit("keep the load bounded: at most 500 clients and 600 s")

    load_avg = os.getloadavg()
    temporary = None
    if args.workdir is None:
        temporary = tempfile.TemporaryDirectory(prefix="bench_serve_")
        args.workdir = Path(temporary.name)
    args.workdir.mkdir(parents=True, exist_ok=True)
    db = args.workdir / f"db-{args.arch}-{args.items}" if args.vectors == "uniform" else \
        args.workdir / f"db-{args.arch}-{args.items}-{args.vectors}"
    model_config = write_model_config(args.workdir, args.arch)
    if (db / "mmsearch.db").exists():
        from indexer.status import read_status
        from indexer.store.library import Library

        with Library(db, create=False) as library:
            status = read_status(library)
        built = {"dim": status["model"]["dim"], "index_type": status["index_type"], "rows_s": 0, "total_s": 0,
                 "tuning": tuning_line(db)}
        print(f"reusing {db}", file=sys.stderr)
    else:
        print(f"building {args.items:,} synthetic items in {db} ...", file=sys.stderr)
        built = build_synthetic_index(db, model_config, args.items, vectors=args.vectors)
        print(f"built in {built['total_s']:.0f} s ({built['index_type']})", file=sys.stderr)

    if args.in_process:
        result = measure_in_process(db, args)
        ms = lambda stats: f"{stats['p50']:.2f} ms (p95 {stats['p95']:.2f})"
        print(f"in process, text encoder {result['text_encoder']}, load average {load_avg[0]:.1f} -> "
              f"{os.getloadavg()[0]:.1f}: embed {ms(result['embed'])}; search with a cached vector "
              f"{ms(result['search_cached_vector'])}; FAISS {ms(result['faiss'])}; item rows {ms(result['item_rows'])}")
        return
    if args.compare_text:
        result = compare_text_encoders(db, args.workdir, str(model_config), args)
        report = compare_markdown(args, built, result, load_avg, os.getloadavg())
        print(report)
        if args.markdown_out:
            args.markdown_out.write_text(report + "\n")
        if args.json_out:
            args.json_out.write_text(json.dumps({"built": built, **result, "load_avg": load_avg}, indent=1))
        if temporary is not None:
            temporary.cleanup()
        return

    process, base, startup_s = start_server(db, args.workdir / "serve.log", args.threads)
    try:
        print(f"server up in {startup_s:.1f} s; warm queries ...", file=sys.stderr)
        warm = measure_warm(base, args.queries, args.limit)
        load = None
        if args.clients > 0 and args.seconds > 0:
            print(f"load: {args.clients} clients for {args.seconds:g} s ...", file=sys.stderr)
            load = measure_load(base, args.clients, args.seconds, process.pid, args.items)
    finally:
        stop_server(process)
    print(f"cold CLI x{args.cli_runs} ...", file=sys.stderr)
    cli = measure_cli(db, args.cli_runs, args.limit)

    report = markdown(args, built, startup_s, warm, cli, load, load_avg)
    print(report)
    if args.markdown_out:
        args.markdown_out.write_text(report + "\n")
    if args.json_out:
        args.json_out.write_text(json.dumps({"built": built, "startup_s": startup_s, "warm": warm, "cli": cli,
                                             "load": load, "load_avg": load_avg}, indent=1))
    if temporary is not None:
        temporary.cleanup()


if __name__ == "__main__":
    main()
