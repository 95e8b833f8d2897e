"""`vlm-unsloth models`: every family the registry holds, with what it answers to and what trains
it, as a table, JSON or the README's Markdown table.

    vlm-unsloth models              # a table
    vlm-unsloth models --json       # a list of objects: family, model_type, tiny, checkpoints,
                                    #   backends, methods, method_backends, planner_calibrated
    vlm-unsloth models --markdown   # the README's family table (a test keeps the two equal)

Everything is derived: the families from their modules, the backends from each family's
`unsloth_trains`, the methods from the checks the training commands make (GRPO refuses
cross-attention families on a backend whose trainer cannot carry their inputs), the planner's
coverage from its calibration points.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from vlm_unsloth.errors import ConfigError
from vlm_unsloth.families import FAMILIES, Family
from vlm_unsloth.perf.memory_plan import calibrated_fit
from vlm_unsloth.train.grpo import check_backend_trains_family

BACKENDS = ("unsloth", "hf")
METHODS = ("sft", "dpo", "grpo")


@dataclass
class ModelsArgs:
    """How `vlm-unsloth models` prints the families."""

    json: bool = field(default=False, metadata={"help": "Print a JSON list, one object a family."})
    markdown: bool = field(
        default=False, metadata={"help": "Print the README's Markdown table of the families."}
    )

    def problems(self) -> list[str]:
        if self.json and self.markdown:
            return ["--json and --markdown: choose one"]
        return []


def backends_of(family: Family) -> list[str]:
    """The backends that train `family` (Unsloth only where it can)."""
    return [b for b in BACKENDS if b != "unsloth" or family.unsloth_trains]


def method_backends(family: Family) -> dict[str, list[str]]:
    """Method -> the backends that train `family` with it."""
    trained_by = {}
    for method in METHODS:
        backends = []
        for backend in backends_of(family):
            if method == "grpo":
                try:
                    check_backend_trains_family(family, backend)
                except ConfigError:
                    continue
            backends.append(backend)
        trained_by[method] = backends
    return trained_by


def planner_calibrated(family: Family) -> dict[str, list[str]]:
    """Backend -> the family's sizes the memory planner can plan there (two measured points)."""
    return {
        backend: [size.name for size in family.sizes if calibrated_fit(size.name, backend)]
        for backend in BACKENDS
    }


def family_rows() -> list[dict[str, Any]]:
    """One object per family: what `--json` prints."""
    rows = []
    for family in FAMILIES.values():
        by_method = method_backends(family)
        rows.append(
            {
                "family": family.key,
                "model_type": family.model_type,
                "tiny": family.tiny_name,
                "default_model": family.default_model,
                "checkpoints": list(family.checkpoints),
                "sizes": [size.name for size in family.sizes],
                "backends": backends_of(family),
                "methods": [method for method, backends in by_method.items() if backends],
                "method_backends": by_method,
                "planner_calibrated": planner_calibrated(family),
            }
        )
    return rows


def describe_methods(row: dict[str, Any]) -> str:
    """`sft, dpo, grpo (hf)`: a method on fewer backends than the family names them."""
    return ", ".join(
        method if backends == row["backends"] else f"{method} ({', '.join(backends)})"
        for method, backends in row["method_backends"].items()
        if backends
    )


def describe_planner(row: dict[str, Any]) -> str:
    """`unsloth: qwen2-vl-7b; hf: qwen2-vl-7b`, or `no`."""
    planned = "; ".join(
        f"{backend}: {', '.join(sizes)}"
        for backend, sizes in row["planner_calibrated"].items()
        if sizes
    )
    return planned or "no"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The README's family table."""
    lines = [
        "| family | `model_type` | tiny checkpoint | default checkpoint (Hub ids) | backends | "
        "methods | planner calibrated |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['family']} | `{row['model_type']}` | `{row['tiny']}` | "
            f"`{row['default_model']}` ({len(row['checkpoints'])}) | "
            f"{', '.join(row['backends'])} | {describe_methods(row)} | {describe_planner(row)} |"
        )
    return "\n".join(lines) + "\n"


def print_models(args: ModelsArgs, console) -> None:
    """Print the families as `args` asks: a rich table, JSON or Markdown."""
    rows = family_rows()
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    if args.markdown:
        print(markdown_table(rows), end="")
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} families (vlm-unsloth models --json for every Hub id)")
    for column in ("family", "model_type", "tiny", "default checkpoint", "backends", "methods"):
        table.add_column(column)
    table.add_column("planner", overflow="fold")
    for row in rows:
        table.add_row(
            row["family"], row["model_type"], row["tiny"],
            f"{row['default_model']} (+{len(row['checkpoints']) - 1})",
            ", ".join(row["backends"]), describe_methods(row), describe_planner(row),
        )  # fmt: skip
    console.print(table)
