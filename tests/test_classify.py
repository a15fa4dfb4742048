"""Zero-shot classification: label parsing, probabilities, prompt ensembling, the classify CLI."""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from conftest import SHAPE_COLOURS, draw_shape
from retrieval.classify import (
    DEFAULT_LOGIT_SCALE,
    LabelError,
    classify_files,
    classify_vectors,
    label_embeddings,
    logit_scale_of,
    parse_labels,
)

runner = CliRunner()
LABELS = ["red circle", "blue square", "green triangle", "pink cross"]


@pytest.fixture(scope="module")
def shape_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classify")
    paths = []
    for colour, shape in (("red", "circle"), ("blue", "square")):
        path = folder / f"{colour}_{shape}.png"
        draw_shape(shape, SHAPE_COLOURS[colour]).save(path)
        paths.append(path)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return paths, folder / "broken.jpg"


def test_parse_labels_from_text_and_lines():
    assert parse_labels(" cat, dog ,,car,cat") == ["cat", "dog", "car"]
    assert parse_labels(None, ["# animals", "cat", "", "sea lion"]) == ["cat", "sea lion"]
    assert parse_labels("cat", ["dog"]) == ["cat", "dog"]
    with pytest.raises(LabelError, match="no labels"):
        parse_labels(" , ", [])


def test_classify_vectors_sorts_by_probability_and_sums_to_one():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 8))
    labels = rng.normal(size=(5, 8))
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    labels /= np.linalg.norm(labels, axis=1, keepdims=True)
    names = list("abcde")
    results = classify_vectors(images, labels, names, ["x", "y", "z"], top=5, logit_scale=100.0)
    for result, image in zip(results, images):
        probabilities = [score.probability for score in result.labels]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0)
        assert result.labels[0].label == names[int(np.argmax(labels @ image))]
    top2 = classify_vectors(images, labels, names, ["x", "y", "z"], top=2, logit_scale=100.0)
    assert [len(result.labels) for result in top2] == [2, 2, 2]
    assert top2[0].labels == results[0].labels[:2]


def test_label_embeddings_average_templates_into_unit_vectors(tiny_model):
    vectors = label_embeddings(tiny_model, ["cat", "dog"], ("a photo of a {}.", "an emoji of a {}."))
    assert vectors.shape == (2, tiny_model.info.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    prompts = tiny_model.text.embed_texts(["a photo of a cat.", "an emoji of a cat."])
    mean = prompts.mean(axis=0)
    np.testing.assert_allclose(vectors[0], mean / np.linalg.norm(mean), atol=1e-5)
    with pytest.raises(LabelError, match=r"needs a \{\}"):
        label_embeddings(tiny_model, ["cat"], ("a photo",))


def test_classify_files_skips_unreadable_images(tiny_model, shape_images):
    paths, broken = shape_images
    errors = []
    results = classify_files(tiny_model, [str(paths[0]), str(broken), str(paths[1])], LABELS, top=len(LABELS),
                             on_error=lambda path, reason: errors.append(path))
    assert [result.image for result in results] == [str(paths[0]), str(paths[1])]
    assert errors == [str(broken)]
    for result in results:
        assert sorted(score.label for score in result.labels) == sorted(LABELS)
        assert sum(score.probability for score in result.labels) == pytest.approx(1.0)


def test_logit_scale_comes_from_the_manifest(tiny_model):
    assert logit_scale_of(tiny_model) == DEFAULT_LOGIT_SCALE

    class Card:
        manifest = {"logit_scale": 42.0}

    class Model:
        card = Card()

    assert logit_scale_of(Model()) == 42.0


def test_cli_classify_json(tiny_model_config, shape_images):
    paths, _ = shape_images
    result = runner.invoke(app, ["classify", *map(str, paths), "--labels", ",".join(LABELS), "--top", "2", "--json",
                                 "--model", str(tiny_model_config)])
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)
    assert [item["image"] for item in parsed] == [str(path) for path in paths]
    for item in parsed:
        assert len(item["labels"]) == 2
        assert item["labels"][0]["probability"] >= item["labels"][1]["probability"]
        assert set(item["labels"][0]) == {"label", "probability", "similarity"}


def test_cli_classify_text_output_and_labels_file(tiny_model_config, shape_images, tmp_path):
    paths, broken = shape_images
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("# shapes\nred circle\nblue square\n", encoding="utf-8")
    result = runner.invoke(app, ["classify", str(paths[0]), str(broken), "--labels-file", str(labels_file),
                                 "--model", str(tiny_model_config)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == str(paths[0]) and len(lines) == 3
    assert {line.split(maxsplit=1)[1] for line in lines[1:]} == {"red circle", "blue square"}
    assert f"skipping {broken}" in result.stderr


def test_cli_classify_errors(tiny_model_config, shape_images):
    paths, broken = shape_images
    result = runner.invoke(app, ["classify", str(paths[0]), "--model", str(tiny_model_config)])
    assert result.exit_code == 1 and "Error: no labels" in result.stderr
    result = runner.invoke(app, ["classify", str(broken), "--labels", "a,b", "--model", str(tiny_model_config)])
    assert result.exit_code == 1 and "Error: no image could be read" in result.stderr
    result = runner.invoke(app, ["classify", str(paths[0]), "--labels", "a,b", "--template", "no slot",
                                 "--model", str(tiny_model_config)])
    assert result.exit_code == 1 and "Error:" in result.stderr
