"""`--resume` continues a run with the options it was started with (which inference and
evaluation read back too: `saved_run_options`).

    python scripts/train_sft.py --output-dir outputs/mine --resume        # nothing else to retype
    python scripts/train_sft.py --output-dir outputs/mine --resume --max-steps 400   # longer

The run's run_config.yaml holds every option as it started; with --resume those are the
defaults the flags and a --config file apply over. An option that would make the resumed run a
different run (the model, the data, LoRA, the batch, the learning rate, ...) must equal the
run's: a different value is one error line naming each, never a silently different run. Only
`RESUME_MAY_CHANGE` may differ: how long to train, how often to log and save, where to report.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlm_unsloth.config_types import converted_values, yaml_value_problems
from vlm_unsloth.errors import ConfigError, OutputDirError
from vlm_unsloth.run_dir import RUN_MARKER, load_run_config

RESUME_MAY_CHANGE = frozenset(
    {
        "output_dir", "resume", "overwrite", "epochs", "max_steps", "logging_steps", "save_steps",
        "save_total_limit", "eval_steps", "report_to", "push_to_hub", "save_merged",
        "eval_at_end", "dataloader_num_workers", "cpu_threads", "gpu_memory_gib", "reward_rows",
    }
)  # fmt: skip
"""Options a resumed run may take anew: they change neither the model nor what a step does
(and the run is the folder it is in now, wherever it was first written)."""

_RUN_SECTIONS_NOT_OPTIONS = ("resolved", "versions")
_TRUE = {"yes", "true", "t", "y", "1"}


def resumed_run_options(
    dataclass_types: Sequence[type], argv: Sequence[str], yaml_values: dict[str, Any]
) -> tuple[dict[str, Any], Path | None]:
    """With --resume (flag or YAML): the options the run in --output-dir started with (field
    name -> value, only fields of `dataclass_types`) and its run_config.yaml; ({}, None) without
    --resume, or when the folder has no run config (resuming then says what is missing)."""
    fields = {f.name: f for cls in dataclass_types for f in dataclasses.fields(cls)}
    if "resume" not in fields or "output_dir" not in fields:
        return {}, None
    peek = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    peek.add_argument("--resume", nargs="?", const="true")
    peek.add_argument("--output-dir", "--output_dir", dest="output_dir")
    try:
        flags = peek.parse_known_args(list(argv))[0]
    except argparse.ArgumentError:
        return {}, None  # the real parser reports it
    resume = flags.resume if flags.resume is not None else yaml_values.get("resume", False)
    if str(resume).lower() not in _TRUE:
        return {}, None
    output = flags.output_dir or yaml_values.get("output_dir") or fields["output_dir"].default
    folder = Path(output).expanduser()
    if not (folder / RUN_MARKER).is_file():
        return {}, None
    return saved_run_options(folder, dataclass_types), folder / RUN_MARKER


def saved_run_options(folder: Path, dataclass_types: Sequence[type]) -> dict[str, Any]:
    """The options the run in `folder` started with: field name -> value for the fields of
    `dataclass_types`, from the sections of its run_config.yaml (one per options dataclass, as
    `config.to_dict` groups them; a field is found in whichever section holds it).

    A hand-edited file is checked as a --config file is (`config_types.yaml_value_problems`),
    and text a flag would take is converted ("1024" -> 1024): a bad value is one error line
    naming the file, the section and key, and the fix, never a traceback further on."""
    path = folder / RUN_MARKER
    saved = load_run_config(folder)
    fields = {f.name for cls in dataclass_types for f in dataclasses.fields(cls)}
    option_sections = {cls.__name__ for cls in dataclass_types}
    options: dict[str, Any] = {}
    problems = []
    for section, values in saved.items():
        if section in _RUN_SECTIONS_NOT_OPTIONS:
            continue
        if not isinstance(values, dict):
            if section in option_sections:
                problems.append(f"{section}: expected a mapping of option: value, got {values!r}")
            continue
        mine = {name: value for name, value in values.items() if name in fields}
        problems += [f"{section}.{p}" for p in yaml_value_problems(mine, dataclass_types)]
        options.update(mine)
    if problems:
        raise OutputDirError(
            "; ".join(problems),
            where=str(path),
            fix="write each value as its option takes it (train_sft.py --help lists them)",
        )
    return converted_values(options, dataclass_types)


def check_resume_keeps_the_run(parsed: Sequence[Any], saved: dict[str, Any], path: Path) -> None:
    """One error line naming every option whose value differs from the run's, except those of
    `RESUME_MAY_CHANGE`."""
    changed = []
    for options in parsed:
        for name, value in dataclasses.asdict(options).items():
            if name in saved and name not in RESUME_MAY_CHANGE and value != saved[name]:
                flag = "--" + name.replace("_", "-")
                changed.append(f"{flag} {value!r} (the run's: {saved[name]!r})")
    if changed:
        raise ConfigError(
            "a resumed run continues with the options it started with, but " + "; ".join(changed),
            where="--resume",
            fix=f"drop those options (the run's are in {path}), or start a new run in another "
            "--output-dir",
        )
