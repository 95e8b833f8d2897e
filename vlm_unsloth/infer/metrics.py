"""Answer scores for VQA-style evaluation: exact match, ChartQA relaxed accuracy, ANLS, CER.

Plain functions over strings, one score per sample; `score_predictions` averages them:

    from vlm_unsloth.infer.metrics import score_predictions
    score_predictions(["37", "red"], ["37", "Red."])  # {"exact_match": 1.0, ...}

A reference may be one string or a list of acceptable strings; the best match counts (the highest
score, or the lowest error rate for CER). Levenshtein distance is the small DP below: neither
`Levenshtein` nor `rapidfuzz` is a project dependency, and answers are short.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from vlm_unsloth.errors import ConfigError

Reference = str | Sequence[str]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_QUOTES = "\"'`“”‘’«»"
_TRAILING_PUNCTUATION = ".,;:!?"
# "1,234", "-3.5", "$5", "€1.2", "12%", ".5": optional sign and currency, digits with optional
# thousands commas, optional decimals, optional percent sign.
_NUMBER = re.compile(r"^([-+]?)[$€£¥]?([-+]?)(\d{1,3}(?:,\d{3})+|\d*)(\.\d+)?\s*%?$")


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation: lowercase, drop surrounding quotes and trailing punctuation,
    drop the articles a/an/the, collapse whitespace.

    Footgun: an answer that IS an article vanishes ("A" -> ""), so a label set with "A" cannot
    be scored by exact match; the demo data (`demo_data.py`) uses no such labels.
    """
    text = text.lower().strip()
    previous = None
    while text != previous:  # '"Red."' and '"red".' both end as 'red'
        previous = text
        text = text.strip().strip(_QUOTES).rstrip(_TRAILING_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _as_list(reference: Reference) -> list[str]:
    references = [reference] if isinstance(reference, str) else list(reference)
    if not references:
        raise ValueError("a sample has an empty list of references; give at least one string")
    return references


def exact_match(prediction: str, reference: Reference) -> float:
    """1.0 when the normalised prediction equals a normalised reference, else 0.0."""
    predicted = normalize_answer(prediction)
    return max(float(predicted == normalize_answer(ref)) for ref in _as_list(reference))


def parse_number(text: str) -> float | None:
    """The number in an answer like "1,234", "12%", "$5", "-3.5" or "37." (None if not one).

    A percent sign is a unit, not a /100 scale: "12%" parses as 12.0, so it matches a "12" label
    (the usual ChartQA case: the chart prints "12%", the label says "12").
    """
    text = text.strip().strip(_QUOTES).rstrip(_TRAILING_PUNCTUATION)
    match = _NUMBER.match(text)
    if match is None:
        return None
    sign_before, sign_after, digits, decimals = match.groups()
    if (sign_before and sign_after) or not (digits or decimals):
        return None
    sign = "-" if "-" in (sign_before + sign_after) else ""
    return float(sign + digits.replace(",", "") + (decimals or ""))


def relaxed_accuracy(prediction: str, reference: Reference, tolerance: float = 0.05) -> float:
    """ChartQA relaxed accuracy: numbers within `tolerance` of the reference, else exact match.

    When both parse as numbers (`parse_number`), correct iff |pred - ref| <= tolerance * |ref|
    (a reference of 0 needs exactly 0). Written as a product, not a relative change, so the
    boundary is inclusive without float noise (105 vs 100 is correct at 5%). Otherwise the
    normalised exact match decides.

    Deviations from the pix2struct reference code: "12%" is 12 (not 0.12) and "1,234" parses.
    """
    predicted_number = parse_number(prediction)
    best = 0.0
    for ref in _as_list(reference):
        ref_number = parse_number(ref)
        if predicted_number is not None and ref_number is not None:
            correct = abs(predicted_number - ref_number) <= tolerance * abs(ref_number)
        else:
            correct = normalize_answer(prediction) == normalize_answer(ref)
        best = max(best, float(correct))
    return best


def levenshtein_distance(a: str, b: str) -> int:
    """Edits (insertions, deletions, substitutions) that turn `a` into `b`; two-row DP."""
    if len(a) < len(b):
        a, b = b, a  # keep the rows as short as the shorter string
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(
                min(
                    previous[j] + 1,  # delete char_a
                    current[j - 1] + 1,  # insert char_b
                    previous[j - 1] + (char_a != char_b),  # substitute (or keep)
                )
            )
        previous = current
    return previous[-1]


def _docvqa_normalize(text: str) -> str:
    # The DocVQA evaluation only lowercases and collapses whitespace (no article/punctuation rules).
    return " ".join(text.lower().split())


def anls(prediction: str, references: Reference, threshold: float = 0.5) -> float:
    """Average Normalized Levenshtein Similarity (DocVQA) of one sample.

    NL = levenshtein / max(len(pred), len(ref)); the score is 1 - NL when NL < threshold, else 0
    (an answer half wrong or worse scores nothing), the best over references. Two empty strings
    score 1.
    """
    predicted = _docvqa_normalize(prediction)
    best = 0.0
    for ref in _as_list(references):
        target = _docvqa_normalize(ref)
        longest = max(len(predicted), len(target))
        distance = levenshtein_distance(predicted, target) / longest if longest else 0.0
        best = max(best, 1.0 - distance if distance < threshold else 0.0)
    return best


def character_error_rate(prediction: str, reference: Reference) -> float:
    """Levenshtein distance on characters / len(reference) (LaTeX OCR); lower is better.

    Strings are compared as written (case, spaces and punctuation count) after stripping
    surrounding whitespace. Not capped: a prediction much longer than the reference scores > 1.
    An empty reference gives 0.0 for an empty prediction and 1.0 for any other (there is no
    length to divide by). With several references the lowest rate counts.
    """
    predicted = prediction.strip()
    rates = []
    for ref in _as_list(reference):
        target = ref.strip()
        if not target:
            rates.append(0.0 if not predicted else 1.0)
        else:
            rates.append(levenshtein_distance(predicted, target) / len(target))
    return min(rates)


METRICS: dict[str, Callable[[str, Reference], float]] = {
    "exact_match": exact_match,
    "relaxed_accuracy": relaxed_accuracy,
    "anls": anls,
    "cer": character_error_rate,
}
"""Metric name (as `score_predictions` and the CLIs take it) -> per-sample scoring function."""


def score_predictions(
    predictions: Sequence[str],
    references: Sequence[Reference],
    metrics: Sequence[str] = ("exact_match", "relaxed_accuracy", "anls", "cer"),
) -> dict[str, float]:
    """Mean per-sample score of each metric, e.g. {"exact_match": 0.5, "cer": 0.12, ...}.

    Raises ConfigError for an unknown metric name and ValueError when the two lists differ in
    length or are empty (an average of nothing would be a made-up number).
    """
    unknown = [name for name in metrics if name not in METRICS]
    if unknown:
        raise ConfigError(
            f"unknown metric(s) {', '.join(map(repr, unknown))}",
            where="metrics",
            fix=f"choose from {', '.join(METRICS)}",
        )
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references; "
            "give one reference (or list of references) per prediction"
        )
    if not predictions:
        raise ValueError("no predictions to score")
    return {
        name: sum(METRICS[name](p, r) for p, r in zip(predictions, references, strict=True))
        / len(predictions)
        for name in metrics
    }
