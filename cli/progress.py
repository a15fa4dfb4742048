"""Rich progress for index runs: one bar that follows the run's phases."""
from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cli.common import err_console, is_terminal

PHASES = {"scan": "scanning", "prepare": "preparing the model", "embed": "embedding", "finish": "saving index",
          "export": "exporting the text tower", "words": "reading words (OCR)"}


class RunProgress:
    """`with RunProgress() as progress:` then pass `progress.update` as an on_progress callback."""

    def __init__(self, verb: str = "embedding"):
        self.verb = verb
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("[cyan]{task.fields[rate]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=err_console, disable=not is_terminal(), transient=False,
        )
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> "RunProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def step(self, text: str) -> None:
        """A step within the model's set-up (a one-time image export): shown as that line's text."""
        task = self.tasks.get("prepare")
        if task is None:
            task = self.tasks["prepare"] = self.progress.add_task(text, total=None, rate="")
        self.progress.update(task, description=text)

    def update(self, event) -> None:
        """An indexer.pipeline.sync.IndexProgress: each phase gets its own line."""
        phase = "embed" if event.phase == "finish" else event.phase
        description = self.verb if phase == "embed" else PHASES.get(phase, phase)
        task = self.tasks.get(phase)
        if task is None:
            task = self.tasks[phase] = self.progress.add_task(description, total=event.total or None, rate="")
        rate = ""
        if phase == "embed":
            speed = self.progress.tasks[task].speed
            rate = f"{speed:.1f} files/s" if speed else ""
            if event.phase == "finish":
                self.progress.update(task, description="saving index")
        if phase == "prepare" and event.total and event.done >= event.total:
            self.progress.update(task, description=PHASES["prepare"])  # the last export step's text goes
        self.progress.update(task, completed=event.done, total=event.total or None, rate=rate)
