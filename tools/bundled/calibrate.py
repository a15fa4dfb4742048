"""Fit a model's relevance calibration, and measure it on a drawing style and concepts it never saw.

    python -m tools.bundled.calibrate --work /tmp/calibration-work            # fit, measure, write the figures
    python -m tools.bundled.calibrate --work /tmp/calibration-work --install  # and ship calibration.json
    python -m tools.bundled.calibrate --model ViT-B-32-256:datacomp_s34b_b86k --work /tmp/cal-clip --install

The bundled model's goes to retrieval/models/bundled/calibration.json, an open_clip model's to
retrieval/models/calibrations/ARCH_TAG.json (retrieval.query.relevance.calibration_path); the
open_clip one needs its weights on the machine (the default CLIP's are not on the build machine).

The query concepts are every concept of make_pairs' held-out split (seed 0: the bundled model never
saw them) plus SEEN_QUERIES of its training concepts (what a user of that model mostly asks for),
split in two halves, so that the measurement shares neither style nor concepts with the fit:
- fit:     the concepts of half A drawn in OpenMoji, among OpenMoji distractors (other train concepts);
- measure: the concepts of half B drawn in Noto Color Emoji, among Noto distractors.
Each gallery is indexed with `mmsearch index`'s own code and the model (its default CPU precision).
Text queries are the plain names of *every* held-out concept, so half of them ask for
something the gallery does not hold (A's names against B's gallery): those should come back empty.
Image queries are the query concepts drawn in the other style. For each query, its top TOP_K hits
are what the calibration sees and is measured on: a hit "matches" when it shows the query's concept.

Output in --work: `report.json` (coefficients, ECE, reliability tables, the empty-answer figures),
and with --figure PATH the reliability diagram as a PNG (docs/relevance-reliability.png).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.bundled import emoji_data, styles
from tools.bundled.make_pairs import eval_jobs, run_jobs

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
TOP_K = 20
SIZE = 128
DISTRACTORS = 800  # train concepts in the fit gallery
MEASURE_DISTRACTORS = 800  # and in the measuring one
THRESHOLDS = (0.1, 0.2, 0.3, 0.5, 0.7)
SEEN_QUERIES = 220  # training concepts among the query concepts (about as many as the held-out ones)


@dataclass(frozen=True)
class Split:
    half_a: list  # query concepts in the fit gallery
    half_b: list  # query concepts in the measuring gallery
    distract_fit: list
    distract_eval: list
    seen: frozenset  # codepoints (upper case) of the query concepts the bundled model was trained on


def split(seed: int = 0) -> Split:
    concepts = emoji_data.list_concepts()
    train, held = emoji_data.split_concepts(concepts, 0.1, seed)  # the bundled recipe's split
    font = emoji_data.find_noto_font()

    def drawable(concept) -> bool:
        return font is not None and emoji_data.noto_renderable(concept, font)

    ranked = [concept for concept in sorted(train, key=lambda c: emoji_data.stable_fraction(c.codepoints, seed, "distractor"))
              [:4 * (DISTRACTORS + MEASURE_DISTRACTORS + SEEN_QUERIES)] if drawable(concept)]
    seen, rest = ranked[:SEEN_QUERIES], ranked[SEEN_QUERIES:]
    queries = [concept for concept in held if drawable(concept)] + seen
    half = [emoji_data.stable_fraction(concept.codepoints, seed, "calibration") < 0.5 for concept in queries]
    return Split([c for c, a in zip(queries, half) if a], [c for c, a in zip(queries, half) if not a],
                 rest[:DISTRACTORS], rest[DISTRACTORS:DISTRACTORS + MEASURE_DISTRACTORS],
                 frozenset(concept.codepoints.upper() for concept in seen))


def render(work: Path, parts: Split, seed: int, workers: int) -> None:
    """Galleries fit/ (OpenMoji) and measure/ (Noto); the other-style renders of their concepts in queries/."""
    every = parts.half_a + parts.half_b + parts.distract_fit + parts.distract_eval
    found, drawable = styles.find_styles([styles.OPENMOJI, styles.NOTO], every)
    by_name = {style.name: style for style in found}
    plans = [("fit", styles.OPENMOJI, parts.half_a + parts.distract_fit),
             ("measure", styles.NOTO, parts.half_b + parts.distract_eval),
             ("queries_fit", styles.NOTO, parts.half_a), ("queries_measure", styles.OPENMOJI, parts.half_b)]
    for folder, style, concepts in plans:
        if (work / folder / "done").exists():
            continue
        jobs = eval_jobs(concepts, by_name[style], drawable[style], seed, SIZE, "heldout")
        run_jobs(jobs, work / folder, workers)
        (work / folder / "done").write_text("1")


def concept_of(path: str) -> str:
    return Path(path).name.split("_", 1)[0].upper()


def index_gallery(work: Path, name: str, model: str, device: str) -> Path:
    from retrieval.indexing import IndexRequest, index_library

    db = work / f"index_{name}"
    index_library(IndexRequest(db=db, roots=(str(work / name / "images"),), model=model, device=device))
    return db


@dataclass
class Collected:
    scores: np.ndarray
    z: np.ndarray
    labels: np.ndarray
    query: np.ndarray  # which query each row belongs to
    present: np.ndarray  # per query: does the gallery hold its concept
    count: int
    seen: np.ndarray | None = None  # per query: was its concept among the model's training concepts


def collect(db: Path, queries: list[tuple[str, np.ndarray]], seen: frozenset = frozenset(), top: int = TOP_K) -> Collected:
    """Features and labels of each query's top hits in the gallery at `db` (exact scores)."""
    from indexer.store.library import Library
    from retrieval.query.relevance import collection_sample, collection_size, query_stats, z_scores

    with Library(db, create=False, read_only=True) as library:
        info = library.model()
        encoders = library.encoders_sharing(info)
        ids, vectors = next(library.reads.iter_vectors(info.dim, chunk=10**7))
        paths = {vector_id: hit.item.path for vector_id, hit in library.reads.hits(ids.tolist()).items()}
        concepts = np.array([concept_of(paths[int(vector_id)]) for vector_id in ids])
        query_vectors = np.stack([vector for _, vector in queries])
        stats = query_stats(collection_sample(library, info.dim, encoders), query_vectors,
                            collection_size(library, encoders))
    held = set(concepts.tolist())
    scores_all = query_vectors @ vectors.T
    rows = {"scores": [], "z": [], "labels": [], "query": []}
    for row, (concept, _) in enumerate(queries):
        best = np.argsort(-scores_all[row])[:top]
        rows["scores"].append(scores_all[row, best])
        rows["z"].append(z_scores(scores_all[row, best], float(stats.mean[row]), float(stats.std[row])))
        rows["labels"].append(concepts[best] == concept)
        rows["query"].append(np.full(len(best), row))
    return Collected(*(np.concatenate(rows[key]) for key in ("scores", "z", "labels", "query")),
                     present=np.array([concept in held for concept, _ in queries]), count=stats.count,
                     seen=np.array([concept in seen for concept, _ in queries]))


def text_queries(model, concepts) -> list[tuple[str, np.ndarray]]:
    vectors = model.text.embed_texts([concept.name for concept in concepts])
    return [(concept.codepoints.upper(), vector) for concept, vector in zip(concepts, vectors)]


def image_queries(model, folder: Path) -> list[tuple[str, np.ndarray]]:
    from retrieval.query.search import embed_image_file

    return [(concept_of(str(path)), embed_image_file(model, str(path))) for path in sorted(folder.rglob("*.jpg"))]


def empty_answers(relevance: np.ndarray, data: Collected, threshold: float) -> dict:
    """At `threshold`: the share of absent-concept queries with no hit left, of present-concept queries
    whose match is still shown (all, and those of concepts the model was / was not trained on), and
    the share of shown hits that match."""
    kept = relevance >= threshold
    queries = np.unique(data.query)
    absent = [q for q in queries if not data.present[q]]
    present = [q for q in queries if data.present[q]]

    def share(chosen, hits) -> float | None:
        return round(float(np.mean([hits[data.query == q].any() for q in chosen])), 3) if chosen else None

    shown = kept.sum()
    out = {"threshold": threshold,
           "absent_queries_empty": round(float(np.mean([not kept[data.query == q].any() for q in absent])), 3)
           if absent else None,
           "present_queries_match_shown": share(present, kept & data.labels),
           "present_queries_match_in_top": share(present, data.labels),
           "shown_hits_matching": round(float((kept & data.labels).sum() / shown), 3) if shown else None,
           "shown_hits": int(shown)}
    if data.seen is not None:
        out["seen_concepts_match_shown"] = share([q for q in present if data.seen[q]], kept & data.labels)
        out["unseen_concepts_match_shown"] = share([q for q in present if not data.seen[q]], kept & data.labels)
    return out


def auc(predicted: np.ndarray, labels: np.ndarray) -> float:
    """The chance that a matching hit gets a higher relevance than a missing one (ties count half):
    what ECE does not say, how well relevance tells them apart."""
    labels = np.asarray(labels, bool)
    if labels.all() or not labels.any():
        return float("nan")
    order = np.argsort(predicted, kind="stable")
    ranks = np.empty(len(predicted))
    sorted_values = np.asarray(predicted)[order]
    _, starts, counts = np.unique(sorted_values, return_index=True, return_counts=True)
    for start, count in zip(starts, counts):
        ranks[order[start:start + count]] = start + (count + 1) / 2
    positives = labels.sum()
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * (len(labels) - positives)))


def measure(fitted, data: Collected, kind: str) -> dict:
    from retrieval.query.relevance import expected_calibration_error, label_free_relevance, reliability_table

    out = {}
    candidates = {"fitted (cosine + z)": fitted(data.scores, data.z),
                  "label-free (z, collection size)": label_free_relevance(data.z, data.count)}
    for name, predicted in candidates.items():
        out[name] = {"ece": round(expected_calibration_error(predicted, data.labels), 4),
                     "auc": round(auc(predicted, data.labels), 4),
                     "log_loss": round(float(-np.mean(np.where(data.labels, np.log(predicted + 1e-12),
                                                                np.log(1 - predicted + 1e-12)))), 4),
                     "reliability": reliability_table(predicted, data.labels),
                     "empty_answers": [empty_answers(predicted, data, t) for t in THRESHOLDS]}
    out["hits"] = int(len(data.labels))
    out["matching_hits"] = int(data.labels.sum())
    out["queries"] = int(len(data.present))
    out["absent_queries"] = int((~data.present).sum())
    out["kind"] = kind
    return out


def ablations(fit: Collected, held: Collected) -> dict:
    """ECE on the measuring data of maps fitted on the cosine alone and on z alone (the design's two parts)."""
    from retrieval.query.relevance import LogisticMap, expected_calibration_error, fit_logistic

    cosine = fit_logistic(fit.scores, np.zeros_like(fit.z), fit.labels)
    z_only = fit_logistic(np.zeros_like(fit.scores), fit.z, fit.labels)
    return {"cosine only": round(expected_calibration_error(LogisticMap(cosine.score_weight, 0, cosine.bias)(held.scores, held.z),
                                                            held.labels), 4),
            "z only": round(expected_calibration_error(LogisticMap(0, z_only.z_weight, z_only.bias)(held.scores, held.z),
                                                       held.labels), 4)}


def run(work: Path, seed: int = 0, workers: int = 2, model_name: str = "bundled", device: str = "cpu") -> dict:
    from indexer.store.library import Library
    from retrieval.index_model import open_model
    from retrieval.query.relevance import Calibration, fit_logistic

    started = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    parts = split(seed)
    render(work, parts, seed, workers)
    dbs = {name: (work / f"index_{name}") if (work / f"index_{name}" / "mmsearch.db").exists()
           else index_gallery(work, name, model_name, device) for name in ("fit", "measure")}
    with Library(dbs["fit"], create=False) as library:
        model = open_model(library, model_name, device=device)
    every = parts.half_a + parts.half_b
    text = text_queries(model, every)
    data = {("text", "fit"): collect(dbs["fit"], text, parts.seen),
            ("text", "measure"): collect(dbs["measure"], text, parts.seen),
            ("image", "fit"): collect(dbs["fit"], image_queries(model, work / "queries_fit"), parts.seen),
            ("image", "measure"): collect(dbs["measure"], image_queries(model, work / "queries_measure"), parts.seen)}
    maps = {kind: fit_logistic(data[(kind, "fit")].scores, data[(kind, "fit")].z, data[(kind, "fit")].labels)
            for kind in ("text", "image")}
    report = {"model": model.info.name, "seed": seed, "top_k": TOP_K, "image_size": SIZE,
              "split": {"fit_concepts": len(parts.half_a), "measure_concepts": len(parts.half_b),
                        "seen_query_concepts": len(parts.seen),
                        "distractors": {"fit": DISTRACTORS, "measure": MEASURE_DISTRACTORS}},
              "coefficients": {kind: vars(fitted) for kind, fitted in maps.items()},
              "fit": {kind: measure(maps[kind], data[(kind, "fit")], kind) for kind in maps},
              "held_out": {kind: measure(maps[kind], data[(kind, "measure")], kind) for kind in maps},
              "ablations_held_out": {kind: ablations(data[(kind, "fit")], data[(kind, "measure")]) for kind in maps},
              "seconds": round(time.perf_counter() - started, 1)}
    calibration = Calibration(text=maps["text"], image=maps["image"],
                              source="fitted on emoji concepts (held-out and trained on) drawn in OpenMoji "
                                     "(tools/bundled/calibrate.py)",
                              fitted_on={kind: {"ece_fit": report["fit"][kind]["fitted (cosine + z)"]["ece"],
                                                "ece_held_out_style": report["held_out"][kind]["fitted (cosine + z)"]["ece"],
                                                "hits": report["fit"][kind]["hits"]} for kind in maps})
    report["calibration"] = {**calibration.to_dict(), "fingerprint": model.info.fingerprint}
    (work / "report.json").write_text(json.dumps(report, indent=1))
    return report


def draw_reliability(report: dict, path: Path) -> None:
    """The reliability diagram: per bin, the share of hits that matched against their mean relevance."""
    from PIL import Image, ImageDraw

    panels = [(kind, name) for kind in ("text", "image") for name in ("fitted (cosine + z)", "label-free (z, collection size)")]
    width, height, margin = 420, 420, 56
    image = Image.new("RGB", (width * len(panels), height + 40), "white")
    draw = ImageDraw.Draw(image)
    for column, (kind, name) in enumerate(panels):
        result = {**report["held_out"][kind][name], "hits": report["held_out"][kind]["hits"]}
        left, top = column * width + margin, 40
        side = width - 2 * margin + 10
        draw.rectangle((left, top, left + side, top + side), outline="black")
        draw.line((left, top + side, left + side, top), fill=(160, 160, 160), width=1)
        for tick in range(0, 11, 2):
            x = left + side * tick / 10
            y = top + side - side * tick / 10
            draw.line((x, top + side, x, top + side + 4), fill="black")
            draw.text((x - 8, top + side + 6), f"{tick / 10:.1f}", fill="black")
            draw.line((left - 4, y, left, y), fill="black")
            draw.text((left - 28, y - 6), f"{tick / 10:.1f}", fill="black")
        total = sum(row["count"] for row in result["reliability"]) or 1
        for row in result["reliability"]:
            if not row["count"]:
                continue
            x0, x1 = left + side * row["low"], left + side * row["high"]
            y = top + side - side * row["matched"]
            draw.rectangle((x0 + 2, y, x1 - 2, top + side), fill=(90, 140, 210), outline=(40, 80, 160))
            cx, cy = left + side * row["mean_relevance"], top + side - side * row["mean_relevance"]
            draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=(200, 60, 40))
            share = row["count"] / total
            draw.text((x0 + 3, top + side - 14), f"{share:.0%}" if share >= 0.02 else "", fill="white")
        draw.text((left, 4), f"{kind} queries, {name}", fill="black")
        draw.text((left, 20), f"{report.get('model', 'bundled')}: held-out style (Noto), ECE {result['ece']:.3f}, "
                              f"{result['hits']} hits", fill="black")
        draw.text((left + side / 2 - 50, top + side + 22), "predicted relevance", fill="black")
    draw.text((8, height + 22), "bars: share of hits that matched, per bin (bin's share of hits inside); red dot: "
              "mean predicted; grey line: perfect calibration", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def install(report: dict, model_name: str = "bundled") -> Path:
    from retrieval.models.registry import resolve_model
    from retrieval.query.relevance import calibration_path

    path = calibration_path(resolve_model(model_name))
    if path is None:
        raise SystemExit(f"{model_name}: no place to ship a calibration for it (a checkpoint file or a config)")
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(path.name + ".tmp")
    staged.write_text(json.dumps(report["calibration"], indent=1) + "\n")
    staged.replace(path)
    return path


def summary_lines(report: dict) -> list[str]:
    def num(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = []
    for kind in ("text", "image"):
        for name, result in report["held_out"][kind].items():
            if not isinstance(result, dict):
                continue
            lines.append(f"{kind:5} {name:32} held-out ECE {result['ece']:.4f}  AUC {result['auc']:.3f}  "
                         f"log loss {result['log_loss']:.4f}  "
                         f"(fit ECE {report['fit'][kind][name]['ece']:.4f})")
            for row in result["empty_answers"]:
                lines.append(f"      P>={row['threshold']:.1f}: absent queries empty {num(row['absent_queries_empty'])}, "
                             f"present queries with their match shown {num(row['present_queries_match_shown'])} "
                             f"(seen concepts {num(row.get('seen_concepts_match_shown'))}, unseen "
                             f"{num(row.get('unseen_concepts_match_shown'))}; in top {TOP_K}: "
                             f"{num(row['present_queries_match_in_top'])}), shown hits matching "
                             f"{num(row['shown_hits_matching'])}")
        lines.append(f"      ablations (held-out ECE): {report['ablations_held_out'][kind]}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bundled.calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--figure", type=Path, default=None, help="write the reliability diagram here (PNG)")
    parser.add_argument("--model", default="bundled", help="bundled, or an open_clip ARCH:TAG whose weights are here")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--install", action="store_true",
                        help="ship it: the model folder's calibration.json, or retrieval/models/calibrations/ARCH_TAG.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    report = run(args.work, args.seed, args.workers, args.model, args.device)
    print("\n".join(summary_lines(report)))
    if args.figure:
        draw_reliability(report, args.figure)
        print(f"wrote {args.figure}")
    if args.install:
        print(f"wrote {install(report, args.model)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
