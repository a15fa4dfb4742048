import numpy as np
import pytest

from retrieval.errors import QueryError
from retrieval.query.parse import Term, combine, parse_query


def test_plain_query_is_one_term():
    assert parse_query("a dog on a beach") == [Term("a dog on a beach", 1.0)]


def test_plus_minus_and_weights():
    assert parse_query("beach + sunset - people") == [Term("beach", 1.0), Term("sunset", 1.0), Term("people", -1.0)]
    assert parse_query("2:red car + 0.5:night") == [Term("red car", 2.0), Term("night", 0.5)]
    assert parse_query("cat - 0.5:dog") == [Term("cat", 1.0), Term("dog", -0.5)]


def test_hyphenated_words_stay_whole():
    assert parse_query("a t-shirt") == [Term("a t-shirt", 1.0)]
    assert parse_query("2:00 pm") == [Term("00 pm", 2.0)]  # documented: N: is a weight


@pytest.mark.parametrize("bad", ["", "   ", "- people", "a +  + b", "x" * 3000])
def test_bad_queries_raise(bad):
    with pytest.raises(QueryError):
        parse_query(bad)


def test_combine_is_unit_and_weighted():
    vectors = np.eye(3, dtype=np.float32)
    combined = combine(vectors[:2], [1.0, 1.0])
    assert np.linalg.norm(combined) == pytest.approx(1.0)
    np.testing.assert_allclose(combined, [2 ** -0.5, 2 ** -0.5, 0], atol=1e-6)
    subtracted = combine(vectors, [1.0, 0.0, -1.0])
    assert subtracted[2] < 0 < subtracted[0]
    with pytest.raises(QueryError):
        combine(np.stack([vectors[0], vectors[0]]), [1.0, -1.0])
