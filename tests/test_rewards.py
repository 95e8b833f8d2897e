"""GRPO rewards without a model: the built-ins, the user's own from a file and from a module, and
every way a reward can go wrong stopping with one line that names the function and the row."""

from __future__ import annotations

import sys

import pytest

from vlm_unsloth.errors import RewardError
from vlm_unsloth.train.rewards import check_rewards_can_score, load_rewards


def conversational(text: str) -> list[dict]:
    """A completion as TRL hands it over for conversational prompts."""
    return [{"role": "assistant", "content": text}]


def call(reward, completions, answers, **extra):
    """Call a loaded reward as GRPOTrainer does (keywords only, per-completion columns)."""
    return reward(
        prompts=[[{"role": "user", "content": "q"}]] * len(completions),
        completions=completions,
        completion_ids=[[1, 2]] * len(completions),
        answer=answers,
        source=[f"train.jsonl:{i + 1}" for i in range(len(completions))],
        trainer_state=None,
        log_extra=lambda *a, **k: None,
        log_metric=lambda *a, **k: None,
        **extra,
    )


def built_in(name: str, answer_format: str = "answer_tag"):
    (reward,) = load_rewards([name], answer_format_spec=answer_format)
    assert reward.__name__ == name  # TRL logs rewards/<name>/mean
    return reward


# ---------------------------------------------------------------------------------------------
# Built-ins


def test_exact_match_reads_plain_tagged_and_unsloth_string_completions():
    completions = [
        conversational("Red."),
        conversational("The square is red. <answer>red</answer>"),
        "blue",  # Unsloth's trainer passes strings on image batches
        conversational("<answer>green</answer> then more <answer>blue</answer>"),  # last tag
    ]
    assert call(built_in("exact_match"), completions, ["red", "red", "red", "blue"]) == [
        1.0,
        1.0,
        0.0,
        1.0,
    ]


def test_relaxed_accuracy_is_chartqa_5_percent():
    completions = [conversational(t) for t in ("105", "<answer>94</answer>", "Yes", "1,000")]
    scores = call(built_in("relaxed_accuracy"), completions, ["100", "100", "yes", "1000"])
    assert scores == [1.0, 0.0, 1.0, 1.0]


def test_numeric_is_dense_and_skips_non_numeric_references():
    completions = [conversational(t) for t in ("90", "<answer>50</answer>", "red", "oops", "0")]
    scores = call(built_in("numeric"), completions, ["100", "100", "red", "10", "0"])
    assert scores[0] == pytest.approx(0.9) and scores[1] == pytest.approx(0.5)
    assert scores[2] is None  # not a numeric row: left to the other rewards
    assert scores[3] == 0.0 and scores[4] == 1.0


def test_numeric_never_scores_against_a_number_too_large_for_a_float():
    """ "9" x 400 parses as infinity: the relative error against it is NaN, so the row cannot be
    scored (None), and such an answer to a finite reference is simply wrong (0.0)."""
    huge = "9" * 400
    completions = [conversational(huge), conversational("5"), conversational(huge)]
    scores = call(built_in("numeric"), completions, [huge, huge, "5"])
    assert scores == [None, None, 0.0]


def test_built_ins_say_up_front_which_rows_they_cannot_score():
    answers = ["red", "37", "blue", "1,200"]
    sources = [f"train.jsonl:{i + 1}" for i in range(len(answers))]
    notices = check_rewards_can_score(["numeric", "exact_match", "format"], answers, sources)
    assert notices == [
        "numeric cannot score 2 of 4 rows (answers that are not numbers, e.g. train.jsonl:1 'red')"
    ]
    assert check_rewards_can_score(["exact_match"], answers, sources) == []
    # Together they score every row: numeric the numbers, exact_match the rest.
    words = ["red", "blue"]
    with pytest.raises(RewardError) as error:
        check_rewards_can_score(["numeric"], words, sources[:2])
    assert _one_line(error.value) == (
        "--rewards numeric: no reward can score any of the 2 training rows: numeric cannot score "
        "2 of 2 rows (answers that are not numbers, e.g. train.jsonl:1 'red') — choose rewards "
        "that fit these answers (exact_match and relaxed_accuracy score any answer, numeric only "
        "numbers), or add your own"
    )
    # Your own reward may score them: what it returns is known only once it runs.
    assert check_rewards_can_score(["numeric", "mine.py:f"], words, sources[:2]) == [
        "numeric cannot score 2 of 2 rows (answers that are not numbers, e.g. train.jsonl:1 'red')"
    ]


def test_format_follows_the_answer_format():
    completions = [
        conversational("The bar is tallest. <answer>37</answer>"),
        conversational("<answer>37</answer>"),  # no reasoning
        conversational("37"),
        conversational("<think>tall bar</think> <answer>37</answer>"),
    ]
    assert call(built_in("format"), completions, ["37"] * 4) == [1.0, 0.0, 0.0, 1.0]
    assert call(built_in("format", "think_answer"), completions, ["37"] * 4) == [0, 0, 0, 1.0]
    custom = r"Answer: (?P<answer>\w+)"
    assert call(built_in("format", custom), [conversational("Answer: red")], ["red"]) == [1.0]
    # The other built-ins read the answer from the same place.
    assert call(built_in("exact_match", custom), [conversational("Answer: red")], ["red"]) == [1.0]


def test_rows_without_a_reference_score_none():
    assert call(built_in("exact_match"), [conversational("red")], [""]) == [None]


# ---------------------------------------------------------------------------------------------
# The user's own rewards


def test_a_reward_from_a_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(
        "def brevity(completions, answer, source, **kwargs):\n"
        "    return [1.0 / (1 + len(c[-1]['content'])) for c in completions]\n"
    )
    specs = [f"{path}:brevity", "exact_match"]
    reward, exact = load_rewards(specs, answer_format_spec="answer_tag")
    assert reward.__name__ == "brevity" and exact.__name__ == "exact_match"
    assert call(reward, [conversational("abc"), conversational("")], ["x", "y"]) == [0.25, 1.0]


def test_a_reward_from_a_module(tmp_path, monkeypatch):
    package = tmp_path / "chartrewards"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "shaping.py").write_text(
        "def says_yes(completions, **kwargs):\n"
        "    return [None if 'maybe' in c[-1]['content'] else float('yes' in c[-1]['content'])\n"
        "            for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (reward,) = load_rewards(["chartrewards.shaping:says_yes"], answer_format_spec="answer_tag")
    completions = [conversational(t) for t in ("yes", "no", "maybe")]
    assert call(reward, completions, ["", "", ""]) == [1.0, 0.0, None]
    sys.modules.pop("chartrewards.shaping", None)
    sys.modules.pop("chartrewards", None)


# ---------------------------------------------------------------------------------------------
# Every way a reward can go wrong: one line naming the function (and the row)

BAD_FILE = """
def boom(completions, answer, **kwargs):
    return [1.0 if a != "green" else 1 / 0 for a in answer]

def short(completions, **kwargs):
    return [1.0]

def words(completions, **kwargs):
    return ["good" for _ in completions]

def scalar(completions, **kwargs):
    return 1.0

def not_finite(completions, answer, **kwargs):
    return [float(a) if a in ("nan", "inf", "-inf") else 1.0 for a in answer]

def no_kwargs(completions, answer):
    return [1.0 for _ in completions]
"""


@pytest.fixture
def bad_file(tmp_path):
    path = tmp_path / "bad_rewards.py"
    path.write_text(BAD_FILE)
    return path


def _one_line(error: RewardError) -> str:
    message = str(error)
    assert "\n" not in message
    return message


def test_a_missing_file_or_function_or_module_is_named(tmp_path, bad_file):
    with pytest.raises(RewardError) as error:
        load_rewards([f"{tmp_path}/nope.py:f"], answer_format_spec="answer_tag")
    assert "nope.py:f" in _one_line(error.value) and "no such file" in str(error.value)

    with pytest.raises(RewardError) as error:
        load_rewards([f"{bad_file}:missing"], answer_format_spec="answer_tag")
    message = _one_line(error.value)
    assert "no function 'missing'" in message and "boom" in message  # what it does have

    with pytest.raises(RewardError, match="cannot import module no_such_package"):
        load_rewards(["no_such_package.rewards:f"], answer_format_spec="answer_tag")

    with pytest.raises(RewardError, match="unknown reward 'exact'"):
        load_rewards(["exact"], answer_format_spec="answer_tag")


def test_a_file_that_fails_to_import_is_named(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import no_such_module_here\n")
    with pytest.raises(RewardError) as error:
        load_rewards([f"{path}:f"], answer_format_spec="answer_tag")
    assert "broken.py" in _one_line(error.value) and "ModuleNotFoundError" in str(error.value)


def test_a_function_without_kwargs_is_refused_at_load(bad_file):
    with pytest.raises(RewardError) as error:
        load_rewards([f"{bad_file}:no_kwargs"], answer_format_spec="answer_tag")
    assert "no_kwargs does not take **kwargs" in _one_line(error.value)


def test_an_exception_names_the_function_and_the_row(bad_file):
    (reward,) = load_rewards([f"{bad_file}:boom"], answer_format_spec="answer_tag")
    completions = [conversational(t) for t in ("a", "b", "c")]
    with pytest.raises(RewardError) as error:
        call(reward, completions, ["red", "green", "blue"])
    message = _one_line(error.value)
    assert "boom" in message and "row train.jsonl:2" in message  # the row that raises
    assert "ZeroDivisionError" in message


def test_wrong_length_wrong_type_and_non_numbers_are_named(bad_file):
    short, words, scalar = load_rewards(
        [f"{bad_file}:short", f"{bad_file}:words", f"{bad_file}:scalar"],
        answer_format_spec="answer_tag",
    )
    completions = [conversational("a"), conversational("b")]
    with pytest.raises(RewardError) as error:
        call(short, completions, ["x", "y"])
    assert "short" in _one_line(error.value) and "returned 1 values for 2 completions" in str(
        error.value
    )
    assert "rows train.jsonl:1, train.jsonl:2" in str(error.value)
    with pytest.raises(RewardError) as error:
        call(words, completions, ["x", "y"])
    assert "words" in _one_line(error.value) and "'good'" in str(error.value)
    assert "row train.jsonl:1" in str(error.value)
    with pytest.raises(RewardError, match="scalar.*returned float"):
        call(scalar, completions, ["x", "y"])


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_and_infinity_are_refused_alike_naming_the_completion_and_the_row(bad_file, value):
    """NaN would be taken for None without a word; None is the way to say "does not apply"."""
    (reward,) = load_rewards([f"{bad_file}:not_finite"], answer_format_spec="answer_tag")
    completions = [conversational("fine"), conversational("The square is red.")]
    with pytest.raises(RewardError) as error:
        call(reward, completions, ["x", value])
    assert _one_line(error.value) == (
        f"reward {bad_file}:not_finite, row train.jsonl:2: returned {float(value)!r} for "
        "completion 1 ('The square is red.'): not a finite number — return a finite float, or "
        "None for a completion the reward does not apply to"
    )


def test_two_rewards_with_one_name_are_refused(tmp_path, bad_file):
    other = tmp_path / "other.py"
    other.write_text(BAD_FILE)
    with pytest.raises(RewardError, match="named boom"):
        load_rewards([f"{bad_file}:boom", f"{other}:boom"], answer_format_spec="answer_tag")
