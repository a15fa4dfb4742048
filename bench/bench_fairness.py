"""Can one client sending heavy queries slow another client down? A bounded load test on localhost.

One `mmsearch serve` over a synthetic index (bench_serve's: rows + random vectors, the bundled model's
real weights by default, its ONNX text export made as `mmsearch index` makes it). Then, each phase
`--seconds` long and stopping by itself:
1. alone: the normal client (127.0.0.1) sends short text queries back to back, each new to the server
   ("a photo of a red dog near a bridge": the text tower runs every time);
2. beside heavy: the same, while a heavy client (127.0.0.2, `--heavy-connections` keep-alive connections)
   sends heavy queries back to back: `--heavy-terms` terms (16, the most a query may have) of ~110
   characters each, every term new (so each query is a full batch through the text tower).
It prints the normal client's latency (p50/p95/p99/max) in both phases, what the heavy client got
(HTTP statuses, requests/s) and the load average; `--checkout DIR` runs a server from another
checkout as well (e.g. main before the change): phases of the two servers interleave, round by round.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_fairness.py --items 20000 --seconds 20
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_fairness.py --items 20000 --seconds 20 --checkout /tmp/main
"""
from __future__ import annotations

import argparse
import asyncio
import fcntl
import itertools
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from bench_serve import ADJECTIVES, NOUNS, build_synthetic_index, free_port, percentiles, stop_server, write_model_config  # noqa: E402
from benchlib import machine_line, median  # noqa: E402

NORMAL_ADDRESS, HEAVY_ADDRESS = "127.0.0.1", "127.0.0.2"
LOCK = "/tmp/mms-bench.lock"
MAX_SECONDS = 300.0
PLACES = ("in the rain", "at night", "from above", "in winter", "on a summer morning", "near the sea",
          "in an old photograph", "seen through a window", "in soft evening light", "in a crowded street")


def normal_queries(seed: int):
    """Short queries, each new: 20 x 20 x 20 combinations, shuffled."""
    combos = list(itertools.product(ADJECTIVES, NOUNS, NOUNS))
    random.Random(seed).shuffle(combos)
    for number, (adj, noun, other) in enumerate(itertools.cycle(combos)):
        yield f"a photo of a {adj} {noun} near a {other}" + (f" {number}" if number >= len(combos) else "")


def heavy_query(rng: random.Random, counter: itertools.count, terms: int) -> str:
    """`terms` long terms joined with " + ", each with a number of its own (never cached); under 2,000 chars."""
    parts = []
    for _ in range(terms):
        words = " ".join(f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(PLACES)}" for _ in range(3))
        parts.append(f"{words} {next(counter)}"[:110])
    return " + ".join(parts)[:1999]


def start_server(db: Path, log: Path, checkout: Path | None) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    cwd = checkout or ROOT
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    command = [sys.executable, "-c", "import sys; from cli.app import main; sys.argv[0] = 'mmsearch'; sys.exit(main())",
               "serve", "--db", str(db), "--port", str(port)]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"mmsearch serve exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(base + "/api/health", timeout=2).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("mmsearch serve did not start in 300 s")


async def run_phase(base: str, seconds: float, heavy_connections: int, heavy_terms: int, queries,
                    polite: bool = False) -> dict:
    import httpx

    deadline = time.monotonic() + seconds
    normal_ms: list[float] = []
    normal_errors: dict[str, int] = {}
    heavy_statuses: dict[str, int] = {}
    heavy_ms: list[float] = []

    async def normal(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                response = await client.get("/api/search", params={"q": next(queries), "limit": 48})
                if response.status_code != 200:
                    normal_errors[str(response.status_code)] = normal_errors.get(str(response.status_code), 0) + 1
            except httpx.HTTPError as exc:
                normal_errors[type(exc).__name__] = normal_errors.get(type(exc).__name__, 0) + 1
            normal_ms.append((time.perf_counter() - started) * 1000)

    async def heavy(client: httpx.AsyncClient, number: int) -> None:
        rng, counter = random.Random(number), itertools.count(number * 10_000_000)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                response = await client.get("/api/search", params={"q": heavy_query(rng, counter, heavy_terms)})
                key = str(response.status_code)
                if response.status_code == 200:
                    heavy_ms.append((time.perf_counter() - started) * 1000)
                elif response.status_code == 429 and polite:  # wait as told, then send again
                    await asyncio.sleep(min(float(response.headers.get("retry-after", "1")),
                                            max(0.0, deadline - time.monotonic())))
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            heavy_statuses[key] = heavy_statuses.get(key, 0) + 1

    def client_from(address: str, connections: int) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=address, limits=httpx.Limits(
            max_connections=connections, max_keepalive_connections=connections))
        return httpx.AsyncClient(base_url=base, transport=transport, timeout=120)

    heavy_client_of = client_from(HEAVY_ADDRESS, max(1, heavy_connections))
    async with client_from(NORMAL_ADDRESS, 1) as normal_client, heavy_client_of as heavy_client:
        started = time.perf_counter()
        await asyncio.gather(normal(normal_client), *(heavy(heavy_client, n) for n in range(heavy_connections)))
        elapsed = time.perf_counter() - started
    return {"normal": percentiles(normal_ms), "normal_errors": normal_errors, "heavy_statuses": heavy_statuses,
            "heavy_rps": sum(heavy_statuses.values()) / elapsed, "heavy_answered_rps": len(heavy_ms) / elapsed,
            "heavy": percentiles(heavy_ms) if heavy_ms else None, "seconds": elapsed}


def ensure_text_export(db: Path, model_config) -> None:
    """The ONNX text export `mmsearch index` writes beside the index (the server's text path)."""
    from indexer.store.library import Library
    from retrieval.models.encoders import load_model
    from retrieval.models.fast_text import optimise_text_export
    from retrieval.models.onnx_text import ensure_exported

    with Library(db, create=False) as library:
        model = load_model(str(model_config), device="cpu")
        if ensure_exported(model, library.text_export_path):
            optimise_text_export(library.text_export_path)


def settle(base: str, seconds: float = 3.0) -> None:
    """Wait until the server answers a cached query quickly again (queued heavy work done), then a little."""
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        started = time.perf_counter()
        httpx.get(base + "/api/search", params={"q": "settle"}, timeout=120)
        if time.perf_counter() - started < 0.2:
            break
        time.sleep(0.5)
    time.sleep(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="bundled", help="bundled (real weights), tiny, or an open_clip architecture")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (alone, beside heavy) per server")
    parser.add_argument("--heavy-connections", type=int, default=8)
    parser.add_argument("--heavy-terms", type=int, default=16)
    parser.add_argument("--polite", action="store_true", help="the heavy client waits Retry-After after a 429 "
                        "(by default it sends again at once, as a hostile client would)")
    parser.add_argument("--checkout", type=Path, help="also run `mmsearch serve` from this checkout (e.g. main "
                        "before the change): its phases interleave with this checkout's")
    parser.add_argument("--workdir", type=Path, help="keep (and reuse) the synthetic index here")
    args = parser.parse_args()
    if args.seconds > MAX_SECONDS or args.heavy_connections > 64 or args.rounds > 5:
        raise SystemExit(f"keep it bounded: at most {MAX_SECONDS:.0f} s a phase, 5 rounds, 64 heavy connections")
    temporary = None
    if args.workdir is None:
        temporary = tempfile.TemporaryDirectory(prefix="bench_fairness_")
        args.workdir = Path(temporary.name)
    args.workdir.mkdir(parents=True, exist_ok=True)
    db = args.workdir / f"db-{args.arch}-{args.items}"
    model_config = write_model_config(args.workdir, args.arch)
    if not (db / "mmsearch.db").exists():
        print(f"building {args.items:,} synthetic items in {db} ...", file=sys.stderr)
        build_synthetic_index(db, model_config, args.items)
    ensure_text_export(db, model_config)
    import httpx

    variants = [("this checkout", None)] + ([(f"checkout {args.checkout}", args.checkout)] if args.checkout else [])
    servers = {}
    queries = normal_queries(seed=1)
    results: dict[str, list[tuple[dict, dict]]] = {name: [] for name, _ in variants}
    try:
        for index, (name, checkout) in enumerate(variants):
            servers[name] = start_server(db, args.workdir / f"serve-{index}.log", checkout)
            for _ in range(30):  # warm-up: first calls, allocator, page cache
                httpx.get(servers[name][1] + "/api/search", params={"q": next(queries)}, timeout=60)
        with open(LOCK, "w") as lock:
            print(f"waiting for {LOCK} ...", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
            load_before = os.getloadavg()
            for round_number in range(args.rounds):
                for name, _ in variants:
                    base = servers[name][1]
                    print(f"round {round_number + 1}: {name} ...", file=sys.stderr)
                    alone = asyncio.run(run_phase(base, args.seconds, 0, args.heavy_terms, queries))
                    beside = asyncio.run(run_phase(base, args.seconds, args.heavy_connections, args.heavy_terms,
                                                   queries, polite=args.polite))
                    settle(base)
                    results[name].append((alone, beside))
            load_after = os.getloadavg()
    finally:
        for process, _ in servers.values():
            stop_server(process)
    print(f"{args.items:,} items, model {args.arch}; {machine_line()}")
    print(f"load average {load_before[0]:.2f} -> {load_after[0]:.2f}; {args.rounds} rounds of {args.seconds:g} s phases; "
          f"heavy client: {args.heavy_connections} connections, {args.heavy_terms} terms a query, "
          f"{'polite' if args.polite else 'ignoring Retry-After'}")
    for name, rounds in results.items():
        for number, (alone, beside) in enumerate(rounds, 1):
            for label, phase in (("alone", alone), ("beside heavy", beside)):
                normal = phase["normal"]
                print(f"{name}, round {number}, normal client {label}: n={normal['n']} p50 {normal['p50']:.1f} ms, "
                      f"p95 {normal['p95']:.1f}, p99 {normal['p99']:.1f}, max {normal['max']:.1f}; "
                      f"errors {phase['normal_errors'] or 'none'}")
            heavy = beside["heavy"]
            print(f"{name}, round {number}, heavy client: {beside['heavy_rps']:.1f} requests/s, "
                  f"{beside['heavy_answered_rps']:.1f} answered (200) per s, statuses {beside['heavy_statuses']}"
                  + (f", answered p50 {heavy['p50']:.0f} ms" if heavy else ""))
        alone_p50s = [alone["normal"]["p50"] for alone, _ in rounds]
        beside_p50s = [beside["normal"]["p50"] for _, beside in rounds]
        print(f"{name}: normal client p50, median over rounds: alone {median(alone_p50s):.1f} ms, "
              f"beside heavy {median(beside_p50s):.1f} ms")
    if temporary is not None:
        temporary.cleanup()


if __name__ == "__main__":
    main()
