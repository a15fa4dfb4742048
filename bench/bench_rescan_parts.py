"""An unchanged re-run over a big collection: the whole `mmsearch index` command, and its parts apart.

Makes N empty files named like PNGs (or, --png, copies of 1,000 distinct 16x16 PNGs), 1,000 to a
folder, once: an unchanged re-run reads names and stat() only, never a file's content. The index
is filled directly (rows with each file's real size and mtime, random vectors of the tiny model's
size, then the FAISS file), as a first run would leave it without embedding a million pictures on
this CPU; the first timed command writes the tiny model's text export, and is not counted.

Parts, per file (each timed alone in this process, after one untimed walk so that the kernel's
dentry and inode caches are warm, as they are on a re-run):
- listing: os.scandir over every folder, names only (the floor of any walk);
- walk: `indexer.media.scan.walk` (listing + filters + one stat per file + a FoundFile);
- stat: os.stat of every path alone;
- known_files: `ItemStore.known_files(root)` (the database read of the change check);
- compare: the dictionary look-ups of `sync._split_changed` (walk results against known_files);
- mark_seen, sweep: the run's two writes over the unchanged rows;
- update_vectors: the FAISS check at the end of a run with nothing changed.

    python bench/bench_rescan_parts.py --n 1000000 --work /tmp/mms-rescan1m --commands 3
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
from bench_rescan import TINY

PER_FOLDER = 1000
MEASURED = ('indexer/media/scan.py', 'indexer/pipeline/sync.py', 'indexer/store/items.py', 'indexer/store/library.py')


def make_files(folder: Path, n: int, empty: bool) -> None:
    """n files named img0000000.png ..., 1,000 to a folder: empty (an unchanged re-run reads no file's
    content, only names and stat(); no data blocks: a million cost ~40 MB of disk) or 16x16 PNGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    payloads = []
    for _ in range(1 if empty else 1000):
        buffer = io.BytesIO()
        if not empty:
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buffer, format="PNG")
        payloads.append(buffer.getvalue())
    for start in range(0, n, PER_FOLDER):
        sub = folder / f"{start // PER_FOLDER:04d}"
        if (sub / f"img{min(n, start + PER_FOLDER) - 1:07d}.png").exists():
            continue
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(start, min(n, start + PER_FOLDER)):
            (sub / f"img{i:07d}.png").write_bytes(payloads[i % len(payloads)])


def fill_index(db: Path, images: Path, model_path: Path) -> None:
    """Rows for every file (size and mtime as the walk reads them), random unit vectors, the FAISS file."""
    from indexer.media.scan import ScanOptions, walk
    from indexer.store.library import Library
    from indexer.store.records import IMAGE, NewItem, single_vector
    from retrieval.models.encoders import load_model

    info = load_model(str(model_path), device="cpu").info
    rng = np.random.default_rng(1)
    with Library(db) as library:
        library.bind_encoder(IMAGE, info)
        run_id = library.runs.start("index", [str(images)])
        batch = []
        for found in walk(images, ScanOptions()):
            vector = rng.standard_normal(info.dim).astype(np.float32)
            batch.append(NewItem(path=found.path, size=found.size, mtime=found.mtime, content_hash=None, width=16,
                                 height=16, format="PNG", vectors=single_vector(vector / np.linalg.norm(vector))))
            if len(batch) == 5000:
                library.items.write_batch(batch, run_id)
                batch = []
        if batch:
            library.items.write_batch(batch, run_id)
        library.runs.finish(run_id)
        library.update_vectors(base_generation=-1, rebuild=True)


def per_file(seconds: float, n: int) -> str:
    return f"{seconds:.2f} s ({seconds / n * 1e6:.1f} us per file)"


class Timer:
    """Wall and CPU seconds (user + system, this process) of a block. On a CPU shared with other
    jobs the wall time swells with their load; the CPU time is what the work itself costs."""

    def __enter__(self) -> "Timer":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def line(self, n: int) -> str:
        return f"CPU {per_file(self.cpu, n)}, wall {self.wall:.2f} s"


def listing(root: str) -> int:
    count = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir():
                    stack.append(entry.path)
                else:
                    count += 1
    return count


def time_parts(images: Path, db: Path, n: int) -> dict[str, Timer]:
    from indexer.media.scan import ScanOptions, walk
    from indexer.store.library import Library

    root = str(images.absolute())
    options = ScanOptions()
    out: dict[str, Timer] = {}
    list(walk(root, options))  # warm the caches
    with Timer() as out["listing"]:
        assert listing(root) == n
    with Timer() as out["walk"]:
        found = list(walk(root, options))
    paths = [item.path for item in found]
    with Timer() as out["stat"]:
        for path in paths:
            os.stat(path)
    with Library(db) as library:
        with Timer() as out["known_files"]:
            known = library.items.known_files(root)
        with Timer() as out["compare"]:
            unchanged = []
            for item in found:
                row = known.get(item.path)
                if row is not None and row.size == item.size and row.mtime == item.mtime:
                    unchanged.append(row.item_id)
        assert len(unchanged) == n, f"{len(unchanged)} of {n} unchanged: the index does not match the files"
        run_id = library.runs.start("index", [root])
        with Timer() as out["mark_seen"]:
            library.items.mark_seen(unchanged, run_id)
        with Timer() as out["sweep"]:
            assert not library.items.sweep(root, run_id).deleted_items
        with Timer() as out["update_vectors"]:
            library.update_vectors(base_generation=library.generation)
        library.runs.finish(run_id)
    return out


def time_proposals(images: Path, db: Path, n: int) -> dict[str, Timer]:
    """What the store's half of a re-run would cost done the ways proposed to the lead (prototypes
    here, not in the product): known_files through the driver as tuples; no mark_seen (the sweep
    takes known ids minus seen ids, a set difference in memory); the FAISS check from the sidecar."""
    from indexer.media.scan import ScanOptions, walk
    from indexer.store import index_choice
    from indexer.store.items import folder_range
    from indexer.store.library import Library
    from indexer.store.records import IMAGE

    root = str(images.absolute())
    found = list(walk(root, ScanOptions()))
    out: dict[str, Timer] = {}
    with Library(db) as library:
        low, high = folder_range(root)
        with Timer() as out["known_files (driver, tuples)"]:
            with library.db.engine.connect() as connection:
                rows = connection.exec_driver_sql(
                    "SELECT path, id, size, mtime, error IS NOT NULL FROM items WHERE path >= ? AND path < ?",
                    (low, high)).fetchall()
            known = {row[0]: row for row in rows}
        with Timer() as out["compare (tuples)"]:
            unchanged = []
            for item in found:
                row = known.get(item.path)
                if row is not None and row[2] == item.size and row[3] == item.mtime:
                    unchanged.append(row[1])
        assert len(unchanged) == n
        with Timer() as out["sweep by set difference (no mark_seen)"]:
            gone = {row[1] for row in rows}.difference(unchanged)
        assert not gone
        with Timer() as out["FAISS check from the sidecar"]:
            info = index_choice.saved_info(library.vector_files(IMAGE))
            assert info is not None and info["generation"] == library.generation
    return out


def walk_ab(images: Path, other: Path, rounds: int, n: int) -> None:
    """This checkout's walk against another scan.py's, interleaved (A B B A ...), medians."""
    import importlib.util

    from indexer.media import scan

    spec = importlib.util.spec_from_file_location("other_scan", other)
    old = importlib.util.module_from_spec(spec)
    sys.modules["other_scan"] = old  # dataclasses look their module up
    spec.loader.exec_module(old)
    root = str(images.absolute())
    walks = {"other": lambda: sum(1 for _ in old.walk(root, old.ScanOptions())),
             "this": lambda: sum(1 for _ in scan.walk(root, scan.ScanOptions()))}
    walks["this"]()  # warm the caches
    times: dict[str, list[float]] = {"other": [], "this": []}
    walls: dict[str, list[float]] = {"other": [], "this": []}
    for number in range(rounds):
        for name in (("other", "this") if number % 2 == 0 else ("this", "other")):
            with Timer() as timer:
                assert walks[name]() == n
            times[name].append(timer.cpu)
            walls[name].append(timer.wall)
    for name, values in times.items():
        print(f"  walk ({name} scan.py): median CPU {per_file(statistics.median(values), n)}, median wall "
              f"{statistics.median(walls[name]):.2f} s; CPU per round {', '.join(f'{v:.2f}' for v in values)}", flush=True)
    print(f"  walk speed-up (CPU): {statistics.median(times['other']) / statistics.median(times['this']):.2f}x "
          f"(load {open('/proc/loadavg').read().split()[0]})", flush=True)


def run_command(command: list[str]) -> tuple[float, float, dict]:
    """(wall s, CPU s of the command's process tree, its --json summary); the summary gains
    `peak_rss_mib`: the most resident memory any command run so far held (getrusage's children
    maximum, so the first command's peak counts in later rows too)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = json.loads(done.stdout)
    summary["peak_rss_mib"] = round(after.ru_maxrss / 1024, 1)
    return wall, cpu, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mms-rescan1m"))
    parser.add_argument("--commands", type=int, default=3, help="timed whole `mmsearch index` runs (0: parts only)")
    parser.add_argument("--no-parts", action="store_true")
    parser.add_argument("--png", action="store_true", help="16x16 PNGs instead of empty files (4 KB of disk each)")
    parser.add_argument("--walk-ab", type=Path, default=None,
                        help="another scan.py (say `git show HEAD~1:indexer/media/scan.py > old.py`): time its walk "
                             "and this one's, interleaved, --walk-rounds rounds each, and print the medians")
    parser.add_argument("--walk-rounds", type=int, default=5)
    parser.add_argument("--mmsearch", default=str(Path(sys.executable).parent / "mmsearch"),
                        help="the mmsearch executable to time (another checkout's, for A/B)")
    args = parser.parse_args()
    images, db = args.work / "images", args.work / f"db-{args.n}"
    model = args.work / "tiny.json"
    started = time.perf_counter()
    make_files(images, args.n, empty=not args.png)
    model.write_text(json.dumps(TINY))
    if not (db / "mmsearch.db").exists():
        fill_index(db, images, model)
    print(f"files and index ready in {time.perf_counter() - started:.0f} s; {benchlib.machine_line()}; "
          f"code {benchlib.code_version(MEASURED)}",
          flush=True)
    command = [args.mmsearch, "index", str(images), "--db", str(db), "--model", str(model), "--json"]
    if args.commands:
        seconds, _, summary = run_command(command)  # writes the text export once; not counted
        print(f"untimed first command: {seconds:.1f} s, {summary}", flush=True)
    if args.walk_ab:
        walk_ab(images, args.walk_ab, args.walk_rounds, args.n)
    if not args.no_parts:
        parts = time_parts(images, db, args.n)
        for name, timer in parts.items():
            print(f"  {name:>15}: {timer.line(args.n)}", flush=True)
        print("  proposed (prototypes in this script):", flush=True)
        for name, timer in time_proposals(images, db, args.n).items():
            print(f"  {name:>40}: {timer.line(args.n)}", flush=True)
    times, cpus = [], []
    for _ in range(args.commands):
        load = open("/proc/loadavg").read().split()[0]
        seconds, cpu, summary = run_command(command)
        assert summary["embedded"] == 0 and summary["unchanged"] == args.n, summary
        times.append(seconds)
        cpus.append(cpu)
        print(f"  command: {seconds:.1f} s wall, CPU {cpu:.1f} s, {summary['seconds']:.1f} s in the run, "
              f"peak RSS {summary['peak_rss_mib']} MiB (load {load})",
              flush=True)
    if times:
        print(f"unchanged re-run of {args.n} files: median {statistics.median(times):.1f} s wall, "
              f"CPU {statistics.median(cpus):.1f} s (wall min {min(times):.1f}, max {max(times):.1f}, {len(times)} runs)")


if __name__ == "__main__":
    main()
