"""Option values checked against their dataclass field's type, in one line a user can act on.

    python scripts/train_sft.py --config run.yaml   # lora_r: [8, 16] -> "run.yaml: lora_r:
                                                    #   expected an integer, got [8, 16]"

TRL's parser hands YAML values to the dataclasses as they are (argparse converts only text), so
`max_steps: 10.7` would reach the trainer as a float and `lora_r: [8, 16]` would fail in a
comparison deep inside; `yaml_value_problems` names them before the parser runs. A bad flag
(`--max-steps ten`) makes argparse raise `ArgumentError`; `flag_problem` words it the same way
instead of argparse's usage block.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Sequence
from typing import Any

_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "text"}
# What transformers' string_to_bool (the flag parser's bool type) takes, as text.
_BOOL_TEXT = {"yes", "no", "true", "false", "t", "f", "y", "n", "1", "0"}
_TRUE_TEXT = {"yes", "true", "t", "y", "1"}
_ARGPARSE_TYPE_WORDS = {"int": _TYPE_WORDS[int], "float": _TYPE_WORDS[float]}


def yaml_value_problems(values: dict[str, Any], dataclass_types: Sequence[type]) -> list[str]:
    """`key: expected <type>, got <value>` for every YAML value that its field cannot take.

    Text that argparse would convert is accepted as a flag would be (PyYAML reads `2e-4` and
    quoted numbers as text); a number is accepted as text (`batch_size: 2`, `split: 2023`).
    Keys that are no field (e.g. TRL's `env`) are left to the caller.
    """
    fields = _field_types(dataclass_types)
    problems = []
    for key, value in values.items():
        if key not in fields:
            continue
        hint, choices = fields[key]
        if not _fits(value, hint) or (choices and value is not None and value not in choices):
            expected = f"one of {', '.join(choices)}" if choices else _describe(hint)
            problems.append(f"{key}: expected {expected}, got {_show(value)}")
    return problems


def converted_values(values: dict[str, Any], dataclass_types: Sequence[type]) -> dict[str, Any]:
    """`values` (free of `yaml_value_problems`) with text converted as a flag's would be, for
    building the dataclasses without the parser: "1024" -> 1024 for an integer field, "2e-4" ->
    0.0002 for a number, "yes" -> True for true or false."""
    fields = _field_types(dataclass_types)
    converted = dict(values)
    for key, value in values.items():
        if key in fields and isinstance(value, str):
            arms = _arms(fields[key][0])
            if bool in arms and value.lower() in _BOOL_TEXT:
                converted[key] = value.lower() in _TRUE_TEXT
            elif str not in arms:
                number = next((t for t in (int, float) if t in arms and _converts(value, t)), None)
                converted[key] = number(value) if number else value
    return converted


def flag_problem(error: argparse.ArgumentError) -> tuple[str, str]:
    """(flag, what is wrong) of argparse's error: `("--max-steps", "expected an integer, got
    'ten'")` for `--max-steps ten`."""
    names = (error.argument_name or "").split("/")
    flag = next((name for name in names if "-" in name.lstrip("-")), names[0])
    match = re.fullmatch(r"invalid (\w+) value: (.*)", error.message)
    if match and match.group(1) in _ARGPARSE_TYPE_WORDS:
        return flag, f"expected {_ARGPARSE_TYPE_WORDS[match.group(1)]}, got {match.group(2)}"
    return flag, error.message


def _field_types(dataclass_types: Sequence[type]) -> dict[str, tuple[Any, tuple | None]]:
    """{field name: (resolved type hint, choices or None)} over all `dataclass_types`."""
    found = {}
    for cls in dataclass_types:
        hints = typing.get_type_hints(cls)  # the modules use `from __future__ import annotations`
        for field in dataclasses.fields(cls):
            found[field.name] = (hints[field.name], field.metadata.get("choices"))
    return found


def _arms(hint: Any) -> tuple[Any, ...]:
    """The types of a union (`int | None` -> (int, NoneType)), or (hint,)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _fits(value: Any, hint: Any) -> bool:
    return any(_fits_arm(value, arm) for arm in _arms(hint))


def _fits_arm(value: Any, hint: Any) -> bool:
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint) or (Any,)
        # Items are names (target_modules: [q_proj]): a number there is a mistake, not text.
        fits = (lambda e: isinstance(e, str)) if item is str else (lambda e: _fits(e, item))
        return isinstance(value, list) and all(fits(element) for element in value)
    if hint not in _TYPE_WORDS:
        return True  # a type this check does not know is left to the parser
    if value is None or isinstance(value, (list, dict)):
        return False
    if hint is bool:
        return isinstance(value, bool) or (isinstance(value, str) and value.lower() in _BOOL_TEXT)
    if isinstance(value, bool):
        return False
    if hint is str:
        return isinstance(value, (str, int, float))
    if isinstance(value, str):
        return _converts(value, hint)
    return isinstance(value, int) if hint is int else isinstance(value, (int, float))


def _converts(text: str, to: type) -> bool:
    try:
        to(text)
    except ValueError:
        return False
    return True


def _describe(hint: Any) -> str:
    words = []
    for arm in _arms(hint):
        if arm is type(None):
            continue
        if typing.get_origin(arm) is list:
            (item,) = typing.get_args(arm) or (Any,)
            words.append(f"a list of {_plural(item)}")
        else:
            words.append(_TYPE_WORDS.get(arm, getattr(arm, "__name__", str(arm))))
    return " or ".join(words) + (" or null" if type(None) in _arms(hint) else "")


def _plural(item: Any) -> str:
    return {int: "integers", float: "numbers", bool: "true/false values", str: "text"}.get(
        item, "values"
    )


def _show(value: Any) -> str:
    """`value` as it reads in YAML: null, true, 'text', [8, 16], {a: 1}."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_show(item)}" for key, item in value.items()) + "}"
    return str(value)
