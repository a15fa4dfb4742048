"""How much memory hostile image uploads take from `mmsearch serve`: the server's peak RSS around them.

A small synthetic index (bench_serve's), one `mmsearch serve` per checkout (this one, and `--checkout DIR`
for an A/B); then, for each server in turn: one upload of a 16-bit greyscale PNG, all white (65535) (`--side`
pixels square: ~220 KB that decode to side x side x 2 bytes and more), then `--at-once` of them at the
same time. Prints the HTTP statuses, the time taken and the server's peak RSS (VmHWM, reset before each
step through /proc/PID/clear_refs) above its RSS before the step.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_upload_memory.py --checkout /tmp/main
"""
from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_fairness import start_server  # noqa: E402
from bench_serve import build_synthetic_index, stop_server, write_model_config  # noqa: E402
from benchlib import machine_line  # noqa: E402


def png_16bit_white(side: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor, row = zlib.compressobj(9), b"\0" + b"\xff" * (side * 2)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def memory_kb(pid: int, key: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def upload_step(base: str, pid: int, data: bytes, count: int) -> dict:
    import httpx

    with open(f"/proc/{pid}/clear_refs", "w") as handle:
        handle.write("5")  # peak RSS := current RSS
    before = memory_kb(pid, "VmRSS")
    statuses: list[int] = []

    def one() -> None:
        response = httpx.post(base + "/api/search", content=data, headers={"Content-Type": "image/png"}, timeout=300)
        statuses.append(response.status_code)

    started = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"statuses": sorted(statuses), "seconds": time.perf_counter() - started,
            "peak_over_mb": (memory_kb(pid, "VmHWM") - before) / 1024, "rss_before_mb": before / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=10_000)
    parser.add_argument("--at-once", type=int, default=3)
    parser.add_argument("--checkout", type=Path, help="also measure a server from this checkout (an A/B)")
    args = parser.parse_args()
    if args.side > 20_000 or args.at_once > 8:
        raise SystemExit("keep it bounded: --side at most 20000, --at-once at most 8")
    data = png_16bit_white(args.side)
    with tempfile.TemporaryDirectory(prefix="bench_upload_") as work:
        work = Path(work)
        db = work / "db"
        build_synthetic_index(db, write_model_config(work, "tiny"), 1000)
        variants = [("this checkout", None)] + ([(f"checkout {args.checkout}", args.checkout)] if args.checkout else [])
        print(f"{machine_line()}; load average {os.getloadavg()[0]:.2f}")
        print(f"upload: 16-bit {args.side}x{args.side} PNG, all white, {len(data) / 1024:.0f} KB")
        for index, (name, checkout) in enumerate(variants):
            process, base = start_server(db, work / f"serve-{index}.log", checkout)
            try:
                for count in (1, args.at_once):
                    step = upload_step(base, process.pid, data, count)
                    print(f"{name}: {count} at once -> HTTP {step['statuses']} in {step['seconds']:.2f} s; "
                          f"peak RSS {step['peak_over_mb']:.0f} MB over the {step['rss_before_mb']:.0f} MB before")
            finally:
                stop_server(process)


if __name__ == "__main__":
    main()
