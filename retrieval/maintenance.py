"""`check` and `repair` of a whole index: the stores (indexer.integrity) and the model's exports.

The text tower's ONNX export beside the index is what makes a text search fast (no torch): without
it, or with one for another model, every search silently loads the torch tower instead (0.7 s ->
8 s once measured). `check` says so in a note (the index itself is consistent: searches work, only
slower); `repair` writes the export again (it needs the model's weights) after putting the stores
right.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from indexer.integrity import CheckReport, Problem, RepairReport, check_index, repair_index
from indexer.store.library import TEXT_EXPORT_NAME, Library
from indexer.store.records import ModelInfo
from retrieval.index_model import model_for_check, open_model


def text_export_problem(folder: Path, model: ModelInfo | None) -> Problem | None:
    """A missing or stale text export of the index's model (None: current)."""
    from retrieval.models.onnx_text import exported_fingerprint

    if model is None:
        return None
    export = Path(folder) / TEXT_EXPORT_NAME
    fingerprint = exported_fingerprint(export)
    if fingerprint is None:
        return Problem("text_export_missing", f"{export} is missing: text searches load the torch text tower instead "
                                              f"(seconds each); `mmsearch repair` writes it again")
    if fingerprint != model.fingerprint:
        return Problem("text_export_stale", f"{export} was exported from another model than the index's "
                                            f"{model.name}: it is not used; `mmsearch repair` writes it again")
    return None


def check(folder: Path, *, files: bool = True, model: bool = True, quick: bool = False) -> CheckReport:
    """Everything that can be wrong with the index in `folder`, read-only."""
    report = check_index(folder, files=files, model=model, quick=quick, load_model=model_for_check)
    if report.facts.get("model"):
        recorded = ModelInfo(**report.facts["model"])
        problem = text_export_problem(Path(folder).expanduser().absolute(), recorded)
        if problem is not None:
            report.notes.append(problem.detail)
    return report


@dataclass
class RepairOutcome:
    repaired: RepairReport
    after: CheckReport
    rebuilt: list[str] = field(default_factory=list)  # derived files written again
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"repaired": {**self.repaired.as_dict(), "rebuilt": list(self.rebuilt)}, "healthy": self.after.healthy,
                "check": self.after.as_dict(), "notes": list(self.notes)}


def repair(folder: Path, *, drop_missing: bool = False, wait_s: float = 0.0) -> RepairOutcome:
    """Make the index consistent again, write its text export again where it is missing or stale,
    then check it. Takes the write lock."""
    notes, rebuilt = [], []
    with Library(folder, create=False) as library, library.lock(wait_s):
        repaired = repair_index(library, drop_missing=drop_missing)
        recorded = library.model()
        if text_export_problem(library.folder, recorded) is not None:
            from retrieval.indexing import export_text_tower

            try:
                export_text_tower(library, open_model(library, recorded.name, device="cpu"))
                rebuilt.append(str(library.text_export_path))
            except Exception as exc:  # noqa: BLE001 - the weights may be gone; the stores are repaired anyway
                notes.append(f"the text export could not be written ({exc}); text searches use the torch tower")
    after = check(folder, model=False)
    return RepairOutcome(repaired, after, rebuilt, notes)
