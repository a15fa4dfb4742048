"""Warm text-query latency of `mmsearch serve` with a light client, server variants side by side.

For each round and each variant (extra `mmsearch serve` arguments), starts a server on the index,
sends /api/health 200 times, then N distinct text queries ("a photo of a red dog cat" style, each
new to the server: the text tower runs) and a cached query 100 times, over one keep-alive
http.client connection (a lighter client than httpx: less of the 2 shared cores goes to it).
Prints one JSON line per run and the medians per variant.

    # an index with the text export `mmsearch index` writes (bench_serve.py builds one):
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_serve.py --arch ViT-B-32 --items 100000 --vectors cliplike \\
        --compare-text --workdir /tmp/serve-wd
    HF_HUB_OFFLINE=1 .venv/bin/python bench/serve_latency.py --db /tmp/serve-wd/db-ViT-B-32-100000-cliplike \\
        --variant "--text-threads 1" --variant "" --rounds 3
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

WORDS = ["dog", "cat", "red", "blue", "car", "tree", "house", "beach", "sunset", "bird", "boat", "flower",
         "mountain", "city", "river"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(port: int, queries: int) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(path: str) -> tuple[float, bytes]:
        started = time.perf_counter()
        connection.request("GET", path)
        body = connection.getresponse().read()
        return (time.perf_counter() - started) * 1000, body

    for _ in range(20):
        get("/api/health")
    texts = [f"a photo of a {a} {b} {c}" for a in WORDS for b in WORDS for c in WORDS][:queries + 1]
    cached = "/api/search?limit=48&q=" + urllib.parse.quote(texts[0])
    get(cached)
    result = {"health_ms": statistics.median(get("/api/health")[0] for _ in range(200)),
              "cached_query_ms": statistics.median(get(cached)[0] for _ in range(100))}
    wall, took = [], []
    for text in texts[1:]:
        elapsed, body = get("/api/search?limit=48&q=" + urllib.parse.quote(text))
        wall.append(elapsed)
        took.append(json.loads(body)["took_ms"])
    result.update({"text_query_ms": statistics.median(wall), "text_query_p95_ms": sorted(wall)[int(0.95 * len(wall))],
                   "text_took_ms": statistics.median(took)})
    connection.close()
    return {key: round(value, 2) for key, value in result.items()}


def run_variant(db: Path, extra: str, queries: int) -> dict:
    port = free_port()
    command = [str(Path(sys.executable).with_name("mmsearch")), "serve", "--db", str(db), "--port", str(port),
               *shlex.split(extra)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        for _ in range(600):
            time.sleep(0.1)
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/api/health")
                break
            except OSError:
                if process.poll() is not None:
                    raise SystemExit(f"server failed: {process.stderr.read()[-2000:]}") from None
        return measure(port, queries)
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--variant", action="append", default=None, help="extra `mmsearch serve` arguments (repeat)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=400)
    args = parser.parse_args()
    variants = args.variant or [""]
    runs: dict[str, list[dict]] = {variant: [] for variant in variants}
    load = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for variant in variants:
            result = run_variant(args.db, variant, args.queries)
            runs[variant].append(result)
            print(json.dumps({"variant": variant, **result}), flush=True)
    load.append(os.getloadavg()[0])
    summary = {variant or "(defaults)": {key: statistics.median(run[key] for run in results) for key in results[0]}
               for variant, results in runs.items()}
    print(json.dumps({"medians": summary, "rounds": args.rounds, "queries": args.queries,
                      "load_average": [round(value, 2) for value in load]}, indent=1))


if __name__ == "__main__":
    main()
