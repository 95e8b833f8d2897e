"""Answer metrics against hand-computed values.

python3 -m pytest tests/test_metrics.py -q
"""

from __future__ import annotations

import pytest

from vlm_unsloth.errors import ConfigError
from vlm_unsloth.infer.metrics import (
    anls,
    character_error_rate,
    exact_match,
    levenshtein_distance,
    normalize_answer,
    parse_number,
    relaxed_accuracy,
    score_predictions,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Red", "red"),
        ("  The   red  bar ", "red bar"),
        ('"Red."', "red"),
        ('"red".', "red"),  # punctuation outside the quotes
        ("'Plum'!", "plum"),
        ("“Mar”", "mar"),
        ("an apple, a pear", "apple, pear"),  # inner punctuation stays
        ("theatre", "theatre"),  # articles are whole words only
        ("3.5.", "3.5"),
        ("12%", "12%"),
        ("A", ""),  # the documented footgun: an answer that is an article vanishes
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_normalises_and_takes_the_best_reference():
    assert exact_match("The Red bar.", "red bar") == 1.0
    assert exact_match("red", "blue") == 0.0
    assert exact_match("37", "37.0") == 0.0  # exact means exact: numbers go to relaxed_accuracy
    assert exact_match("blue", ["red", "Blue"]) == 1.0
    assert exact_match("green", ["red", "blue"]) == 0.0
    with pytest.raises(ValueError, match="empty list"):
        exact_match("red", [])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("37", 37.0),
        ("1,234", 1234.0),
        ("1,234.5", 1234.5),
        ("12%", 12.0),
        ("12 %", 12.0),
        ("$5", 5.0),
        ("-$5", -5.0),
        ("3.5", 3.5),
        (".5", 0.5),
        ("37.", 37.0),
        ('"42"', 42.0),
        ("12,34", None),  # not a thousands grouping
        ("Plum", None),
        ("", None),
        ("-", None),
        ("1e5", None),
    ],
)
def test_parse_number(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("104", "100", 1.0),
        ("105", "100", 1.0),  # the 5% boundary is inclusive (105/100 - 1 is 0.0500...04 in floats)
        ("106", "100", 0.0),
        ("95", "100", 1.0),
        ("94.9", "100", 0.0),
        ("-104", "-100", 1.0),
        ("104", "-100", 0.0),
        ("0", "0", 1.0),
        ("0.001", "0", 0.0),  # a zero reference needs exactly zero
        ("1,234", "1200", 1.0),
        ("12%", "12", 1.0),
        ("$5", "5.2", 1.0),
        ("Plum.", "plum", 1.0),  # not numbers: normalised exact match
        ("Plum", "Pear", 0.0),
        ("37", "Plum", 0.0),
    ],
)
def test_relaxed_accuracy(prediction, reference, expected):
    assert relaxed_accuracy(prediction, reference) == expected


def test_relaxed_accuracy_tolerance_and_reference_lists():
    assert relaxed_accuracy("110", "100", tolerance=0.1) == 1.0
    assert relaxed_accuracy("110", "100", tolerance=0.05) == 0.0
    assert relaxed_accuracy("110", ["50", "108"]) == 1.0


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("", "", 0),
        ("abc", "", 3),
        ("", "abc", 3),
        ("abcd", "abxd", 1),
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("abc", "cba", 2),
    ],
)
def test_levenshtein_distance(a, b, distance):
    assert levenshtein_distance(a, b) == distance
    assert levenshtein_distance(b, a) == distance


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("abcd", "abcd", 1.0),
        ("ABCD ", "abcd", 1.0),  # DocVQA normalisation: case and surrounding space
        ("abcd", "abcx", 0.75),  # NL 1/4
        ("abc", "abcd", 0.75),  # NL 1/4: divided by the longer string
        ("abcde", "abxde", 0.8),
        ("abcd", "abxy", 0.0),  # NL exactly 0.5 is not < 0.5: no credit
        ("abcdef", "abxyef", pytest.approx(2 / 3)),  # NL 1/3
        ("", "", 1.0),
        ("", "abc", 0.0),
    ],
)
def test_anls(prediction, reference, expected):
    assert anls(prediction, reference) == expected


def test_anls_threshold_and_best_reference():
    assert anls("abcd", "abxy", threshold=0.6) == 0.5
    assert anls("abcd", ["wxyz", "abcx"]) == 0.75


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("abcd", "abcd", 0.0),
        ("abxd", "abcd", 0.25),
        ("abcd", "abxd", 0.25),
        ("ab", "abcd", 0.5),
        ("abcdefgh", "abcd", 1.0),  # four insertions over four characters
        ("abcdefghij", "abcd", 1.5),  # not capped
        (r"\frac{a}{b} ", r"\frac{a}{b}", 0.0),  # surrounding whitespace is stripped
        (r"\frac {a}{b}", r"\frac{a}{b}", pytest.approx(1 / 11)),  # inner spaces count
        ("A", "a", 1.0),  # case counts
        ("", "", 0.0),  # empty reference: defined as 0.0 for an empty prediction...
        ("x", "", 1.0),  # ...and 1.0 for any other
    ],
)
def test_character_error_rate(prediction, reference, expected):
    assert character_error_rate(prediction, reference) == expected


def test_character_error_rate_takes_the_lowest_over_references():
    assert character_error_rate("abcd", ["wxyz", "abxd"]) == 0.25


def test_score_predictions_averages_each_metric():
    scores = score_predictions(
        ["37", "Red.", "104", "abxd"],
        ["37", "red", "100", "abcd"],
    )
    assert scores == {
        "exact_match": pytest.approx(2 / 4),  # 1, 1, 0, 0
        "relaxed_accuracy": pytest.approx(3 / 4),  # 1, 1, 1, 0
        # ANLS keeps punctuation: "red." vs "red" is NL 1/4 -> 0.75; "104" vs "100" NL 1/3.
        "anls": pytest.approx((1 + 0.75 + 2 / 3 + 0.75) / 4),
        "cer": pytest.approx((0 + 2 / 3 + 1 / 3 + 0.25) / 4),  # "Red." vs "red": R->r, +"."
    }


def test_score_predictions_subset_and_errors():
    assert score_predictions(["a b"], [["x", "A  B"]], metrics=["exact_match"]) == {
        "exact_match": 1.0
    }
    with pytest.raises(ConfigError, match="'bleu'.*choose from exact_match"):
        score_predictions(["a"], ["a"], metrics=["exact_match", "bleu"])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score_predictions(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no predictions"):
        score_predictions([], [])
