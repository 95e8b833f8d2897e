"""What a run prints: the start banner and the final summary, as rich tables."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def make_console():
    """The run's console; silent in the non-main processes of a multi-GPU run."""
    from rich.console import Console

    from vlm_unsloth.distributed import is_main_process

    return Console(highlight=False, quiet=not is_main_process())


def key_value_table(title: str, rows: Iterable[tuple[str, Any]]):
    """A two-column rich table of (name, value) rows, for banners and summaries."""
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for key, value in rows:
        table.add_row(key, str(value))
    return table


def format_count(number: int) -> str:
    """1234567 -> "1.23M"."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if number >= size:
            return f"{number / size:.2f}{unit}"
    return str(number)
