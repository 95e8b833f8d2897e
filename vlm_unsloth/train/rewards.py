"""GRPO reward functions: the built-ins, the user's own, and the checks that name both.

    python scripts/train_grpo.py --rewards relaxed_accuracy format --reward-weights 1 0.2
    python scripts/train_grpo.py --rewards my_rewards.py:brevity mypackage.rewards:units

Every reward has TRL's signature: keyword arguments `prompts`, `completions`, `completion_ids`,
the dataset's columns (`answer`: the reference answer, `source`: "file:row", `images`) and
`trainer_state`, `log_extra`, `log_metric`; it returns one float (or None: "does not apply")
per completion. A completion is `[{"role": "assistant", "content": text}]` from TRL, a plain
string from Unsloth's trainer on image batches: `completion_text` reads both.

`load_rewards` resolves the names before the model loads and wraps each function in a check:
a missing file or function, an exception inside it, a list of the wrong length or a value that
is not a finite number (NaN and infinity included) stops training with one line (RewardError)
naming the function and the row. None is the one way to say "does not apply".

`check_rewards_can_score` reads the training rows' reference answers before the model loads:
it says which rows each built-in cannot score (`numeric`: answers that are not numbers), and
stops the run when no reward can score any row.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_unsloth.errors import RewardError
from vlm_unsloth.infer.metrics import exact_match as exact_match_score
from vlm_unsloth.infer.metrics import parse_number
from vlm_unsloth.infer.metrics import relaxed_accuracy as relaxed_accuracy_score

RewardFunction = Callable[..., list]


@dataclass(frozen=True)
class AnswerFormat:
    """The shape `--answer-format` asks for (`shape` must match the whole completion) and where
    the final answer sits in it (group `answer` of the last match of `answer`)."""

    shape: re.Pattern
    answer: re.Pattern


_TAG = re.compile(r"<answer>(?P<answer>.*?)</answer>", re.DOTALL)
ANSWER_FORMATS = {
    # Some reasoning, then the final answer in a tag: "The red bar is tallest. <answer>37</answer>"
    "answer_tag": AnswerFormat(
        re.compile(r"\s*\S.*?<answer>(?P<answer>.+?)</answer>\s*", re.DOTALL), _TAG
    ),
    # DeepSeek-R1 style: "<think>...</think><answer>37</answer>"
    "think_answer": AnswerFormat(
        re.compile(r"\s*<think>.+?</think>\s*<answer>(?P<answer>.+?)</answer>\s*", re.DOTALL), _TAG
    ),
}


def answer_format(spec: str) -> AnswerFormat:
    """A preset of ANSWER_FORMATS, or a regular expression with a group named `answer` (matched
    against the whole completion). Raises ValueError for a bad expression."""
    if spec in ANSWER_FORMATS:
        return ANSWER_FORMATS[spec]
    pattern = re.compile(spec, re.DOTALL)
    if "answer" not in pattern.groupindex:
        raise ValueError("the expression has no group named answer, e.g. (?P<answer>.+)")
    return AnswerFormat(pattern, pattern)


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or the last message of a conversational one."""
    if isinstance(completion, str):
        return completion
    content = completion[-1].get("content") or ""
    if isinstance(content, list):  # typed parts
        return "".join(part.get("text") or "" for part in content if part.get("type") == "text")
    return content


def final_answer(completion: Any, shape: AnswerFormat) -> str:
    """The answer inside the format's answer part (the last one) if the completion has one, else
    the whole completion: the same rewards score short answers and reasoning-then-answer."""
    text = completion_text(completion)
    found = [match.group("answer") for match in shape.answer.finditer(text)]
    return (found[-1] if found else text).strip()


# ---------------------------------------------------------------------------------------------
# Built-ins (each takes the answer format as `shape`, bound by load_rewards)


def finite_number(text: str | None) -> float | None:
    """The number in an answer (infer/metrics.parse_number), or None for text that is not one
    or one too long for a float: "9" x 400 parses as infinity, and a relative error against
    infinity is NaN."""
    number = parse_number(text or "")
    return number if number is not None and math.isfinite(number) else None


def has_no_reference(reference: str | None) -> bool:
    """Whether a row has no reference answer (exact_match and relaxed_accuracy cannot score it)."""
    return not reference


def is_not_a_number(reference: str | None) -> bool:
    """Whether a reference answer is not a (finite) number (numeric cannot score its row)."""
    return finite_number(reference) is None


def exact_match(completions, answer, *, shape: AnswerFormat, **kwargs) -> list[float | None]:
    """1.0 when the final answer equals the reference after normalisation (case, articles,
    punctuation; infer/metrics.exact_match), else 0.0; None for a row without a reference."""
    return [
        None
        if has_no_reference(reference)
        else exact_match_score(final_answer(c, shape), reference)
        for c, reference in zip(completions, answer, strict=True)
    ]


def relaxed_accuracy(completions, answer, *, shape: AnswerFormat, **kwargs) -> list[float | None]:
    """ChartQA's rule: numbers within 5% of the reference score 1.0, other answers need an exact
    match (infer/metrics.relaxed_accuracy); None for a row without a reference."""
    return [
        None
        if has_no_reference(reference)
        else relaxed_accuracy_score(final_answer(c, shape), reference)
        for c, reference in zip(completions, answer, strict=True)
    ]


def numeric(completions, answer, *, shape: AnswerFormat, **kwargs) -> list[float | None]:
    """A dense reward for numeric answers: 1 - relative error, clipped to [0, 1] (0 for an answer
    that is not a number). None where the reference is not a number, so in a mixed dataset it
    shapes only the numeric rows."""
    scores: list[float | None] = []
    for completion, reference in zip(completions, answer, strict=True):
        if is_not_a_number(reference):
            scores.append(None)
            continue
        target = finite_number(reference)
        predicted = finite_number(final_answer(completion, shape))
        if predicted is None:
            scores.append(0.0)
            continue
        error = abs(predicted - target) / abs(target) if target else abs(predicted)
        scores.append(max(0.0, 1.0 - error))
    return scores


def answer_shape(completions, *, shape: AnswerFormat, **kwargs) -> list[float]:
    """`format`: 1.0 when the whole completion has the shape --answer-format asks for (by
    default some reasoning, then <answer>...</answer>), else 0.0. Give it a small weight."""
    return [float(shape.shape.fullmatch(completion_text(c)) is not None) for c in completions]


BUILT_IN: dict[str, Callable[..., list]] = {
    "exact_match": exact_match,
    "relaxed_accuracy": relaxed_accuracy,
    "numeric": numeric,
    "format": answer_shape,
}

CANNOT_SCORE: dict[str, tuple[str, Callable[[str | None], bool]]] = {
    "exact_match": ("rows without a reference answer", has_no_reference),
    "relaxed_accuracy": ("rows without a reference answer", has_no_reference),
    "numeric": ("answers that are not numbers", is_not_a_number),
}
"""The rows each built-in returns None for (`format` scores every row), in words, and the test
on a row's reference answer that the built-in itself applies."""


def check_rewards_can_score(
    specs: Sequence[str], answers: Sequence[str], sources: Sequence[str]
) -> list[str]:
    """Before the model loads: one notice per built-in of `specs` that cannot score some of the
    rows (`answers`: their reference answers), e.g. "numeric cannot score 37 of 50 rows (answers
    that are not numbers, e.g. train.jsonl:3 'red')". Raises RewardError when no reward can score
    any row: every step would go without a score. Your own rewards count as scoring every row
    (what they return is known only once they run)."""
    notices = []
    unscorable_by_all = set(range(len(answers)))
    for spec in specs:
        if spec not in CANNOT_SCORE:
            unscorable_by_all = set()
            continue
        words, cannot_score = CANNOT_SCORE[spec]
        rows = [index for index, answer in enumerate(answers) if cannot_score(answer)]
        unscorable_by_all &= set(rows)
        if rows:
            example = f"{sources[rows[0]]} {answers[rows[0]][:40]!r}"
            notices.append(
                f"{spec} cannot score {len(rows)} of {len(answers)} rows ({words}, e.g. {example})"
            )
    if answers and len(unscorable_by_all) == len(answers):
        raise RewardError(
            f"no reward can score any of the {len(answers)} training rows: {'; '.join(notices)}",
            where=f"--rewards {' '.join(specs)}",
            fix="choose rewards that fit these answers (exact_match and relaxed_accuracy score "
            "any answer, numeric only numbers), or add your own",
        )
    return notices


# ---------------------------------------------------------------------------------------------
# Loading and checking


def load_rewards(specs: Sequence[str], *, answer_format_spec: str) -> list[RewardFunction]:
    """The checked reward functions of `--rewards` (built-in names, `path/file.py:function`,
    `package.module:function`), each named as TRL will log it (rewards/<name>/mean)."""
    shape = answer_format(answer_format_spec)
    functions = []
    for spec in specs:
        if spec in BUILT_IN:
            built_in = BUILT_IN[spec]
            functions.append(checked(spec, lambda f=built_in, **kw: f(shape=shape, **kw)))
        else:
            function = load_user_function(spec)
            functions.append(checked(function.__name__, function, spec=spec))
    names = [f.__name__ for f in functions]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise RewardError(
            f"two rewards are named {', '.join(repeated)}: their metrics would mix",
            where="--rewards",
            fix="give each function its own name",
        )
    return functions


def load_user_function(spec: str) -> Callable:
    """The function of `path/to/file.py:function` or `package.module:function`."""
    where = f"--rewards {spec}"
    location, _, name = spec.rpartition(":")
    if not location or not name:
        raise RewardError(
            f"unknown reward {spec!r}",
            where="--rewards",
            fix=f"use a built-in ({', '.join(BUILT_IN)}), path/to/file.py:function or "
            "package.module:function",
        )
    module = _load_file(location, where) if _is_path(location) else _import(location, where)
    function = getattr(module, name, None)
    if function is None:
        found = sorted(n for n, v in vars(module).items() if inspect.isfunction(v))
        raise RewardError(
            f"{location} has no function {name!r} (it has: {', '.join(found) or 'none'})",
            where=where,
        )
    if not callable(function):
        raise RewardError(f"{name} in {location} is not a function", where=where)
    parameters = inspect.signature(function).parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        raise RewardError(
            f"{name} does not take **kwargs",
            where=where,
            fix="define it as def name(completions, answer, **kwargs): every reward also "
            "receives prompts, completion_ids, source, images, trainer_state, log_extra and "
            "log_metric as keywords",
        )
    return function


def _is_path(location: str) -> bool:
    return location.endswith(".py") or "/" in location or "\\" in location


def _load_file(location: str, where: str):
    path = Path(location).expanduser().resolve()
    if not path.is_file():
        raise RewardError(f"no such file {path}", where=where, fix="check the path")
    module_name = f"vlm_unsloth_rewards_{path.stem}_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # picklable functions (data-parallel runs pickle them)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's file: say which one failed, and how
        del sys.modules[module_name]
        raise RewardError(
            f"importing {path} raised {type(error).__name__}: {error}", where=where
        ) from error
    return module


def _import(location: str, where: str):
    try:
        return importlib.import_module(location)
    except ImportError as error:
        raise RewardError(
            f"cannot import module {location} ({error})",
            where=where,
            fix="install it or put its folder on PYTHONPATH, or pass path/to/file.py:function",
        ) from error


def checked(name: str, function: Callable, *, spec: str | None = None) -> RewardFunction:
    """`function` in TRL's signature, stopping with one line naming `name` and the row when it
    raises or returns anything but one number (or None) per completion."""
    shown = spec or name

    def reward(*, prompts, completions, **columns) -> list[float | None]:
        sources = columns.get("source")
        try:
            values = function(prompts=prompts, completions=completions, **columns)
        except Exception as error:  # the user's code: find the row, then stop with one line
            row = _failing_row(function, prompts, completions, columns)
            raise RewardError(
                f"raised {type(error).__name__}: {error}".replace("\n", " "),
                where=f"reward {shown}, {row}",
            ) from error
        if not isinstance(values, Sequence) or isinstance(values, str):
            raise RewardError(
                f"returned {type(values).__name__}, not a list of one float or None per completion",
                where=f"reward {shown}, {_rows(sources, range(len(completions)))}",
            )
        if len(values) != len(completions):
            raise RewardError(
                f"returned {len(values)} values for {len(completions)} completions",
                where=f"reward {shown}, {_rows(sources, range(len(completions)))}",
                fix="return exactly one float (or None) per completion, in order",
            )
        for index, value in enumerate(values):
            number = None if value is None else _as_float(value)
            if value is not None and number is None:
                raise RewardError(
                    f"returned {value!r} for {_completion(completions, index)}: not a number or "
                    "None",
                    where=f"reward {shown}, {_rows(sources, [index])}",
                )
            if number is not None and not math.isfinite(number):
                # NaN too: TRL would take it for None without a word, and infinity wrecks the
                # group's advantages. None is the one way to say "does not apply".
                raise RewardError(
                    f"returned {value!r} for {_completion(completions, index)}: not a finite "
                    "number",
                    where=f"reward {shown}, {_rows(sources, [index])}",
                    fix="return a finite float, or None for a completion the reward does not "
                    "apply to",
                )
        return [None if value is None else float(value) for value in values]

    reward.__name__ = name  # TRL logs rewards/<name>/mean and /std
    reward.__qualname__ = name
    return reward


def _as_float(value: Any) -> float | None:
    """`value` as a float (NaN and infinity included), or None when it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _completion(completions, index: int) -> str:
    """ "completion 1 ('The square is red. <answer>…')" for error messages."""
    text = completion_text(completions[index])
    return f"completion {index} ({text[:40] + ('…' if len(text) > 40 else '')!r})"


def _rows(sources: list | None, indices) -> str:
    """ "row train.jsonl:12" (or several) for error messages."""
    indices = list(indices)
    if sources is None:
        return f"completion {indices[0]}" if len(indices) == 1 else f"{len(indices)} completions"
    unique = list(dict.fromkeys(sources[i] for i in indices))
    if len(unique) == 1:
        return f"row {unique[0]}"
    shown = ", ".join(map(str, unique[:3])) + (", ..." if len(unique) > 3 else "")
    return f"rows {shown}"


def _failing_row(function: Callable, prompts, completions, columns: dict) -> str:
    """The first row that raises on its own (calling the function one completion at a time)."""
    sources = columns.get("source")
    for index in range(len(completions)):
        single = {
            key: [value[index]] if isinstance(value, list) and len(value) == len(completions)
            else value
            for key, value in columns.items()
        }  # fmt: skip
        try:
            function(prompts=[prompts[index]], completions=[completions[index]], **single)
        except Exception:  # noqa: BLE001 - looking for the row that raises, then re-raised
            return _rows(sources, [index])
    return _rows(sources, range(len(completions)))
