"""Every YAML file the package reads (a --config file, a run's run_config.yaml) goes through
`read_yaml`: PyYAML's safe loader, except that a key repeated in one mapping is an error.

    values = read_yaml(Path("run.yaml"), error=ConfigError)
    # run.yaml: key lora_r appears twice (lines 3 and 9) — keep one

Footgun: YAML says keys are unique, but PyYAML keeps the last value of a repeated key without a
word, so `lora_r: 8` near the top silently loses to `lora_r: 64` further down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vlm_unsloth.errors import VlmUnslothError

_MERGE_TAG = "tag:yaml.org,2002:merge"


class RepeatedKeyError(yaml.constructor.ConstructorError):
    """A key that appears twice in one mapping; lines numbered as in an editor."""

    def __init__(self, key: Any, first_line: int, second_line: int):
        self.key, self.first_line, self.second_line = key, first_line, second_line
        lines = (
            f"line {first_line}"
            if first_line == second_line
            else f"lines {first_line} and {second_line}"
        )
        super().__init__(problem=f"key {key} appears twice ({lines})")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with a repeated key (a `<<` merge may still override:
    that is what merging is for)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in first_lines:
                        raise RepeatedKeyError(key, first_lines[key], line)
                    first_lines[key] = line
                except TypeError:  # an unhashable key: the safe loader's own error names it
                    continue
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """The YAML document in `text` (safe loader, repeated keys refused: RepeatedKeyError)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects


def read_yaml(
    path: Path,
    *,
    error: type[VlmUnslothError],
    what: str = "not valid YAML",
    fix: str | None = None,
) -> Any:
    """The YAML document in `path`, or `error` in one line naming the file: a repeated key (with
    both lines), text that is not YAML or not UTF-8 (`what (the parser's first line)` and `fix`),
    or a file that cannot be read."""
    try:
        return load_yaml(path.read_text(encoding="utf-8"))
    except RepeatedKeyError as repeated:
        raise error(repeated.problem, where=str(path), fix="keep one") from repeated
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as problem:
        detail = str(problem).strip().splitlines()[0] if str(problem).strip() else ""
        detail = detail or type(problem).__name__
        raise error(f"{what} ({detail})", where=str(path), fix=fix) from problem
