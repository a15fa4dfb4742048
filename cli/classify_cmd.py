"""`mmsearch classify`: zero-shot labels for images."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from cli.common import err_console, fail, friendly_errors, out_console, setup_logging


@friendly_errors
def classify(
    images: Annotated[List[Path], typer.Argument(help="Image files to label.", exists=True, dir_okay=False,
                                                 show_default=False)],
    labels: Annotated[Optional[str], typer.Option("--labels", "-l", help='Comma-separated labels, e.g. "cat,dog,car".',
                                                  show_default=False)] = None,
    labels_file: Annotated[Optional[Path], typer.Option("--labels-file", exists=True, dir_okay=False,
                                                        help="A file with one label per line.", show_default=False)] = None,
    template: Annotated[Optional[List[str]], typer.Option("--template", help='Prompt with {} for the label (repeatable), '
                                                          'e.g. "a photo of a {}."; default: five photo/picture/emoji/drawing/icon prompts.',
                                                          show_default=False)] = None,
    top: Annotated[int, typer.Option("--top", "-n", min=1, help="How many labels to show per image.")] = 5,
    model: Annotated[Optional[str], typer.Option("--model", "-m", envvar="MMSEARCH_MODEL", show_default=False,
                                                 help="Model: ARCH:TAG, a model folder, a .json config, or 'bundled'. "
                                                      "Default: the --db index's model, else the config file's, else bundled.")] = None,
    db: Annotated[Optional[Path], typer.Option("--db", file_okay=False, show_default=False,
                                               help="Use this index's model, run as the index runs it (its CPU image precision).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help='JSON on stdout: [{"image", "labels": [{"label", "probability", "similarity"}]}].')] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "cpu",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Zero-shot classification: the most likely of your labels for each image, with probabilities.

    Examples:
      mmsearch classify photo.jpg --labels "cat,dog,car"
      mmsearch classify *.png --labels-file labels.txt --top 3 --json
    """
    setup_logging(verbose)
    from cli.config import load_config
    from retrieval.classify import DEFAULT_TEMPLATES, classify_files, parse_labels, read_labels_file
    from retrieval.index_model import model_outside_an_index

    label_list = parse_labels(labels, read_labels_file(labels_file) if labels_file else ())
    loaded = model_outside_an_index(db, model, load_config().get("model"), device=device)

    def on_error(path: str, reason: str) -> None:
        err_console.print(f"skipping {path}: {reason}", markup=False, highlight=False)

    results = classify_files(loaded, [str(path) for path in images], label_list,
                             templates=tuple(template) if template else DEFAULT_TEMPLATES, top=top, on_error=on_error)
    if not results:
        fail("no image could be read")
    if json_output:
        print(json.dumps([result.to_dict() for result in results], ensure_ascii=False))
        return
    for result in results:
        out_console.print(result.image, markup=False, highlight=False)
        for score in result.labels:
            out_console.print(f"  {score.probability:6.3f}  {score.label}", markup=False, highlight=False)
