"""`mmsearch status`: what is in the index, which model made it, how big it is."""
from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.table import Table

from cli.common import DbOption, db_dir, friendly_errors, out_console


@friendly_errors
def status(
    db: DbOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the status as one JSON object.")] = False,
    failures: Annotated[int, typer.Option(help="How many failed files to list.")] = 5,
) -> None:
    """Show items, failures, model, index type, size on disk and the last run.

    Example:  mmsearch status --json
    """
    from indexer.status import read_status
    from indexer.store.library import Library

    with Library(db_dir(db), create=False) as library:
        info = read_status(library, failures)
    if json_output:
        print(json.dumps(info))
        return
    table = Table(show_header=False, box=None)
    table.add_row("index", info["db"])
    if info.get("database") == "postgresql":
        table.add_row("metadata", f"PostgreSQL at {info['database_at']}")
    modalities = ", ".join(f"{count} {kind}" for kind, count in sorted(info.get("modalities", {}).items()))
    table.add_row("items", f"{info['items']}" + (f" ({modalities})" if modalities and len(info["modalities"]) > 1 else ""))
    table.add_row("failed", str(info["failed"]))
    model = info["model"] or {}
    table.add_row("model", f"{model.get('name', '-')} ({model.get('dim', '?')}-d, weights {model.get('weights', '-')})")
    if info.get("model_reason"):
        table.add_row("model chosen", info["model_reason"])
    if info.get("image_precision"):
        setting = info.get("image_precision_setting")
        table.add_row("image tower (CPU)", info["image_precision"] + (
            f" (setting: {setting})" if setting and setting != info["image_precision"] else ""))
    table.add_row("index type", f"{info['index_type']} (setting: {info['index_type_setting']})")
    table.add_row("vector index", f"{info['index_choice']}{'' if info['max_index_memory_setting'] else ' (default budget)'}")
    if info.get("search_tuning"):
        table.add_row("search tuning", info["search_tuning"])
    words = info.get("words") or {}
    mode = info.get("ocr_mode") or "off"
    if words.get("read") or words.get("skipped") or words.get("failed"):
        table.add_row("words in pictures", f"--ocr {mode}: {words['with_words']} pictures with words (read {words['read']}, "
                                           f"no text found {words['skipped']}, failed {words['failed']})")
    elif info.get("ocr_mode"):
        table.add_row("words in pictures", f"--ocr {mode}: none read yet")
    table.add_row("size on disk", f"{info['size_bytes'] / 1e6:.1f} MB")
    run = info["last_run"]
    if run:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run["started_at"]))
        state = "finished" if run["finished_at"] else "interrupted"
        table.add_row("last run", f"{when} {state}: embedded {run['embedded']}, reused {run['reused']}, "
                                  f"removed {run['removed']}, failed {run['failed']}")
    for root in info.get("roots", []):
        settings = [f"exclude {', '.join(root['exclude'])}" if root["exclude"] else "",
                    "hidden files too" if root["hidden"] else "",
                    "links outside followed" if root.get("follow_outside") else "",
                    f"video frames: {root['video_frames']}" if root.get("video_frames") else "",
                    f"forgotten: {', '.join(root['forgotten'])}" if root["forgotten"] else ""]
        details = "; ".join(part for part in settings if part)
        table.add_row("folder", root["path"] + (f" ({details})" if details else ""))
    out_console.print(table)
    for failure in info["failures"]:
        out_console.print(f"  failed: {failure['path']}: {failure['error']}", markup=False, highlight=False)
