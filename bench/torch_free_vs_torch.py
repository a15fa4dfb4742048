"""A first run's torch-free exports against the torch towers they stand for (issue 22; prints JSON).

Loads the model's torch towers the torch way (open_clip's config, `load_state_dict`), then compares:
the text export an index folder holds (written from the checkpoint by `mmsearch index`) on a few
texts; the fp32 ViT graph written from the checkpoint on `check_pixels`; and the index's int8
graph on the same pixels (its cosine to torch, what the export's check stands for).

    HF_HUB_OFFLINE=1 HF_HUB_CACHE=/tmp/perf-hf .venv/bin/mmsearch index /tmp/perf-jpegs --db /tmp/tf-index \\
        --model ViT-B-32-256:datacomp_s34b_b86k --ocr off
    HF_HUB_OFFLINE=1 HF_HUB_CACHE=/tmp/perf-hf .venv/bin/python bench/torch_free_vs_torch.py /tmp/tf-index
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
TEXTS = ["a cat", "a photo of a small red dog running on a sunny beach", "invoice 2041", "Paris at night"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", type=Path, help="an index folder a first run of this code wrote")
    parser.add_argument("--model", default="ViT-B-32-256:datacomp_s34b_b86k")
    args = parser.parse_args()
    import onnxruntime
    import torch

    from retrieval.models.fast_image import INT8_NAME, OnnxImageEncoder, _normalise, check_pixels, checkpoint_vit
    from retrieval.models.onnx_text import OnnxTextEncoder
    from retrieval.models.registry import describe_model, resolve_model
    from retrieval.models.towers import IMAGE, TEXT, build_tokenizer, load_tower
    from retrieval.models.vit_onnx import vit_graph

    card = describe_model(resolve_model(args.model))
    text_tower, tokenizer = load_tower(card, TEXT), build_tokenizer(card)
    with torch.inference_mode():
        expected_text = _normalise(text_tower(tokenizer(TEXTS)).numpy())
    export = OnnxTextEncoder(args.index / "text_encoder")
    pixels = check_pixels(int(card.preprocess.image_size), count=4, seed=5)
    with torch.inference_mode():
        expected_image = _normalise(load_tower(card, IMAGE)(torch.from_numpy(pixels)).numpy())
    recipe, weights = checkpoint_vit(card)
    session = onnxruntime.InferenceSession(vit_graph(recipe, weights).SerializeToString(), providers=["CPUExecutionProvider"])
    fp32 = _normalise(session.run(["features"], {"pixels": pixels})[0])
    int8 = OnnxImageEncoder(args.index / "image_encoder" / INT8_NAME, None, "onnx-int8").embed_pixels(pixels)
    print(json.dumps({
        "text_export": {"writer": export.meta.get("writer"), "weights": export.meta.get("weights"),
                        "max_abs_diff_vs_torch": float(np.abs(export.embed_texts(TEXTS) - expected_text).max())},
        "fp32_image_graph_max_abs_diff_vs_torch": float(np.abs(fp32 - expected_image).max()),
        "int8_image_cosine_vs_torch": [round(float(value), 6) for value in (int8 * expected_image).sum(axis=1)],
    }, indent=1))


if __name__ == "__main__":
    main()
