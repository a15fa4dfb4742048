"""One way to open an index's model: chosen, checked against the index, configured from what it records.

Every command that embeds for an index goes through here (index, reindex, search, serve, check,
classify and eval with --db), so a file gets the same vector whichever way it is embedded: the
model the index records (or, for a new index, the default policy), its fingerprint checked, and
on a CPU the image tower at the precision the index was filled with (onnx-int8 for new indexes),
with the index's own ONNX export folder. Nothing here prints: a fallback to the bundled model is
reported through the choice it returns.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from indexer.store.library import Library
from indexer.store.records import check_same_model
from retrieval.models.encoders import Model, load_model
from retrieval.models.fast_image import DEFAULT_CPU_PRECISION, check_precision
from retrieval.models.query_model import SearchModel
from retrieval.models.registry import BUNDLED_NAME

EXPLICIT_REASON = "chosen with --model or MMSEARCH_MODEL"
CONFIG_REASON = "chosen in the config file"


@dataclass(frozen=True)
class ModelChoice:
    name: str
    reason: str | None  # why a new index gets it (stored, shown by `status`); None: the index's own model
    fallback: bool = False  # the default policy fell back to the bundled model (offline)


def choose_model(library: Library | None, explicit: str | None = None, configured: str | None = None, *,
                 default_policy: bool = False, tqdm_class=None) -> ModelChoice:
    """flag/env, else the index's own model, else the config file's, else the default.

    The default is the bundled model, or with `default_policy` (a new index) the recommended CLIP
    when its weights are cached or downloadable now (retrieval.models.hub)."""
    if explicit:
        return ModelChoice(explicit, EXPLICIT_REASON)
    recorded = library.model() if library is not None else None
    if recorded is not None:
        return ModelChoice(recorded.name, None)
    if configured:
        return ModelChoice(configured, CONFIG_REASON)
    if not default_policy:
        return ModelChoice(BUNDLED_NAME, None)
    from retrieval.models.hub import choose_default_model

    choice = choose_default_model(tqdm_class=tqdm_class)
    return ModelChoice(choice.name, choice.reason, fallback=choice.name == BUNDLED_NAME)


def image_precision_for(library: Library | None, asked: str | None = None) -> str:
    """The CPU image precision: asked, else the index's recorded one; a new index gets the fast
    default, an index older than the setting keeps the fp32 it was filled with."""
    if asked:
        return check_precision(asked)
    if library is None:
        return "fp32"
    recorded = library.image_precision
    if recorded:
        return check_precision(recorded)
    return "fp32" if library.model() is not None else DEFAULT_CPU_PRECISION


def open_model(library: Library | None, name: str, *, device: str = "auto", precision: str | None = None,
               export_dir: Path | None = None, check: bool = True) -> Model:
    """Load `name` configured for `library`: its image precision and export folder (`export_dir`
    overrides the folder: a reindex exports the new model beside the old one's); with `check`, refuse
    a model that differs from the one the index records."""
    if library is None:
        return load_model(name, device=device, image_precision=image_precision_for(None, precision))
    model = load_model(name, device=device, image_precision=image_precision_for(library, precision),
                       image_export_dir=export_dir or library.image_export_path)
    recorded = library.model()
    if check and recorded is not None:
        check_same_model(recorded, model.info)
    return model


def search_model(library: Library, explicit: str | None = None, configured: str | None = None, *,
                 device: str = "cpu", one_query: bool = False):
    """The model to search `library` with: its ONNX text export when current (no torch), the full
    model, checked and configured, loaded only when a query needs it."""
    recorded = library.model()
    if recorded is not None and not explicit:
        return SearchModel(recorded, library.text_export_path,
                           lambda: open_model(library, recorded.name, device=device), prepack=not one_query)
    choice = choose_model(library, explicit, configured)
    return open_model(library, choice.name, device=device)


def model_for_check(name: str, device: str = "cpu") -> Model:
    """The recorded model as `mmsearch check` loads it: its plain towers, so a read-only check never
    writes an ONNX export (the fingerprint and the weights are what it checks)."""
    return open_model(None, name, device=device)


def model_outside_an_index(db: Path | None, explicit: str | None = None, configured: str | None = None, *,
                           device: str = "auto") -> Model:
    """The model of a command that embeds without writing an index (classify, eval): with `db`, that
    index's model configured as the index runs it; else flag, config file or the bundled model."""
    if db is None:
        return open_model(None, choose_model(None, explicit, configured).name, device=device)
    with Library(db, create=False) as library:
        return open_model(library, choose_model(library, explicit, configured).name, device=device)
