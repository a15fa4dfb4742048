"""Hostile query input: each gets results or a one-line `Error:` with exit code 1, never a traceback or a hang.

(tests/test_cli.py and tests/test_query.py cover no query, "- dog", a bad --after, a text file as
--image and the parser's limits; these add what they do not.)
"""
from __future__ import annotations

import json
import os

import pytest
from test_hostile_files import png_claiming
from typer.testing import CliRunner

from cli.app import app
from conftest import write_image

runner = CliRunner()


@pytest.fixture(scope="module")
def db(tmp_path_factory, tiny_model_config):
    folder = tmp_path_factory.mktemp("queries")
    for number in range(5):
        write_image(folder / "pics" / f"img{number}.png", seed=number, size=(32, 32))
    result = runner.invoke(app, ["index", str(folder / "pics"), "--db", str(folder / "db"), "--model", str(tiny_model_config)])
    assert result.exit_code == 0, result.output
    return folder / "db"


def _search(db, *args):
    result = runner.invoke(app, ["search", *args, "--db", str(db), "--json"])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.mark.parametrize("query", ["", "   ", "\t\n"])
def test_blank_queries(db, query):
    result = _search(db, query)
    assert result.exit_code == 1 and "Error:" in result.stderr and result.stdout == ""


@pytest.mark.parametrize("query", [
    "一只在海滩上的狗", "собака на пляже", "كلب على الشاطئ", "कुत्ता", "🐶🏖️", "a dog \u200b\u200d on a beach",
    "Ωmega + naïve - café",
])
def test_non_latin_text_finds_results(db, query):
    result = _search(db, query, "--top", "3")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 3


def test_very_long_queries(db):
    words = " ".join(["a very long description of a sunny beach with a dog"] * 37)[:1999]
    result = _search(db, words, "--top", "2")
    assert result.exit_code == 0, result.output  # far past the model's 32 tokens: truncated, not refused
    result = _search(db, "x " * 1001)
    assert result.exit_code == 1 and "limit is 2000" in result.stderr


@pytest.mark.parametrize("name, data, reason", [
    ("empty.png", b"", "empty file"),
    ("bomb.png", png_claiming(30_000, 30_000), "pixels"),
    ("truncated.png", None, "cannot"),
], ids=["empty", "pixel-bomb", "truncated"])
def test_query_images_that_are_not_usable(db, tmp_path, name, data, reason):
    path = tmp_path / name
    if data is None:
        write_image(path, seed=1, size=(64, 64))
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.write_bytes(data)
    result = _search(db, "--image", str(path))
    assert result.exit_code == 1 and f"query image {path}" in result.stderr and reason in result.stderr


def test_a_named_pipe_as_query_image_does_not_hang(db, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    result = _search(db, "--image", str(fifo))
    assert result.exit_code == 1 and "not a regular file" in result.stderr


def test_a_queries_file_that_is_not_utf8(db, tmp_path):
    queries = tmp_path / "queries.txt"
    queries.write_bytes(b"caf\xe9\nbeach\n")
    result = _search(db, "--queries", str(queries))
    assert result.exit_code == 1 and "not UTF-8" in result.stderr and "Traceback" not in result.output


def test_a_query_of_too_many_terms_is_refused_with_the_limit(db):
    result = _search(db, " + ".join(f"word{number}" for number in range(150)))
    assert result.exit_code == 1 and "150 terms; the limit is 16" in result.stderr


@pytest.mark.parametrize("query", ["1" + "0" * 40 + ":a red car", "1" + "0" * 400 + ":a red car", "101:a red car",
                                   "a blue car - 1000:a red car"])
def test_absurd_weights_are_refused(db, query):
    """Issue 14: a weight of 1e40 overflowed float32 into NaN and found nothing (HTTP 200, 0 results)."""
    result = _search(db, query)
    assert result.exit_code == 1 and "weights go from -100 to 100" in result.stderr


def test_combine_never_returns_a_non_finite_vector():
    import numpy as np

    from retrieval.errors import QueryError
    from retrieval.query.parse import combine

    vectors = np.eye(3, dtype=np.float32)
    combined = combine(vectors[:2], [1e40, 1.0])  # float32 would overflow to inf, then NaN
    assert np.isfinite(combined).all() and np.linalg.norm(combined) == pytest.approx(1.0)
    np.testing.assert_allclose(combined, [1.0, 0.0, 0.0], atol=1e-6)
    for weights in ([float("inf"), 1.0], [float("nan"), 1.0], [0.0, 0.0]):
        with pytest.raises(QueryError):
            combine(vectors[:2], weights)
