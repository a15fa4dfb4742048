"""What the benchmarks share: machine description, CPU-contention meter, small statistics."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import time
from dataclasses import dataclass

import numpy as np


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def cpu_flags_note() -> str:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return ""
    return "avx512" if "avx512f" in flags else ("avx2" if "avx2" in flags else "")


def memory_gib() -> float:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def machine_line() -> str:
    """One line naming the machine, for the figures and docs/BENCHMARKS.md."""
    flags = cpu_flags_note()
    return (f"{os.cpu_count()}-core {platform.machine()} CPU{f' ({flags})' if flags else ''}, "
            f"{memory_gib():.0f} GiB, no GPU; lscpu model name: {cpu_model()}")


def today() -> str:
    return _dt.date.today().isoformat()


MEASURED_CODE = ("indexer/media/image.py", "indexer/pipeline/embed.py", "indexer/pipeline/sync.py", "indexer/store/library.py",
                 "indexer/store/vectors.py", "indexer/store/items.py", "retrieval/models/encoders.py",
                 "retrieval/models/towers.py", "indexer/media/preprocess.py", "cli/index_cmd.py")


def code_version(paths: tuple[str, ...] = MEASURED_CODE) -> str:
    """The commit measured, plus which of `paths` had uncommitted changes (others edit them too)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *paths], cwd=root, capture_output=True,
                               text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    changed = sorted(line[3:] for line in dirty if line.strip())
    return f"{head}" + (f" + uncommitted changes in {', '.join(changed)}" if changed else " (clean)")


def _busy_jiffies() -> int:
    """Busy CPU time of the whole machine (all cores), in clock ticks, from /proc/stat."""
    with open("/proc/stat") as handle:
        fields = handle.readline().split()[1:]
    values = [int(v) for v in fields]
    user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@dataclass
class Contention:
    """CPU time others used while a measurement ran (average cores busy with other processes)."""

    wall_s: float
    own_cores: float
    other_cores: float

    def __str__(self) -> str:
        return f"own {self.own_cores:.2f} cores, other processes {self.other_cores:.2f} cores (avg over {self.wall_s:.0f} s)"


class ContentionMeter:
    """with ContentionMeter() as meter: ...; meter.result -> Contention. Counts waited-for children as own."""

    def __enter__(self) -> "ContentionMeter":
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._busy = _busy_jiffies()
        self._own = _own_seconds()
        self._wall = time.perf_counter()
        self.result: Contention | None = None
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._wall
        busy = (_busy_jiffies() - self._busy) / self._tick
        own = _own_seconds() - self._own
        self.result = Contention(wall, own / wall if wall else 0.0, max(0.0, busy - own) / wall if wall else 0.0)


def busy_processes(threshold: float = 50.0) -> list[str]:
    """Other processes using more than `threshold`% CPU right now (sampled over ~1 s by top)."""
    try:
        out = subprocess.run(["top", "-b", "-c", "-n", "2", "-d", "1", "-w", "250"], capture_output=True, text=True,
                             check=False, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    last = out.rsplit("PID USER", 1)[-1].splitlines()[1:]  # second sample only
    mine = {os.getpid()}
    busy = []
    for line in last:
        parts = line.split(None, 11)
        if len(parts) < 12 or not parts[0].isdigit():
            continue
        pid, cpu = int(parts[0]), float(parts[8].replace(",", "."))
        if cpu >= threshold and pid not in mine:
            busy.append(f"pid {pid} {cpu:.0f}% {parts[11][:90]}")
    return busy


def percentile_ms(seconds: np.ndarray, q: float) -> float:
    return float(np.percentile(seconds, q) * 1e3)


def median(values) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def others_cores(sample_s: float = 5.0) -> float:
    """Average cores other processes kept busy over the next sample_s seconds."""
    with ContentionMeter() as meter:
        time.sleep(sample_s)
    return meter.result.other_cores


def wait_for_quiet(max_wait_s: float, threshold: float = 100.0, max_others_cores: float = 0.5,
                   poll_s: float = 60.0) -> tuple[bool, str]:
    """Poll until no other process uses more than `threshold`% CPU and all others together use
    under `max_others_cores` cores; returns (quiet?, what was busy last)."""
    deadline = time.monotonic() + max_wait_s
    while True:
        busy = busy_processes(threshold)
        others = others_cores()
        if not busy and others < max_others_cores:
            return True, f"others {others:.2f} cores"
        state = f"others {others:.2f} cores; over {threshold:.0f}%: {busy or 'none'}"
        if time.monotonic() >= deadline:
            return False, state
        print(f"waiting for a quiet CPU: {state}", flush=True)
        time.sleep(poll_s)


if __name__ == "__main__":  # python bench/benchlib.py --wait-quiet SECONDS
    import argparse

    parser = argparse.ArgumentParser(description="machine line; or wait until other processes leave the CPU quiet")
    parser.add_argument("--wait-quiet", type=float, default=0.0, help="seconds to wait at most")
    parser.add_argument("--max-others-cores", type=float, default=0.5)
    args = parser.parse_args()
    print(machine_line())
    if args.wait_quiet:
        quiet, state = wait_for_quiet(args.wait_quiet, max_others_cores=args.max_others_cores)
        print(f"quiet ({state})" if quiet else f"still busy after {args.wait_quiet:.0f} s ({state}): running anyway",
              flush=True)
