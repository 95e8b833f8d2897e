"""What a run prints: the start banner and the final summary, as rich tables, and not the
library notices its user cannot act on."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

LIBRARY_NOTICES = (
    # bitsandbytes, imported on a CPU with AVX512-BF16, looks for the optional `kernels` package
    # and falls back to its own 4-bit kernel: nothing is wrong and nothing needs installing.
    ("bitsandbytes.backends.cpu.ops", r"^Failed to load CPU gemm_4bit_forward from kernels-"),
    # torchao (imported by transformers) registers its Enums as pytree constants, which torch
    # now deprecates: a note between those two libraries, at every start.
    ("torch.utils._pytree", r"is an Enum subclass .* register_constant\(\) on Enum subclasses"),
    # TRL's GRPO dumps, over several lines, the columns (image objects included) of each row that
    # no reward scored. Our own notices say it in one line: which rows a built-in cannot score,
    # before training (rewards.check_rewards_can_score), and each step that nothing scored.
    ("trl.trainer.grpo_trainer", r"All reward functions returned None for the following kwargs"),
)
"""(logger, message pattern) of each notice `quiet_library_notices` drops."""


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


class _DropNotice(logging.Filter):
    """Drops its logger's records whose message matches `pattern`; keeps every other one."""

    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet_library_notices() -> None:
    """Drop the `LIBRARY_NOTICES` from the loggers that print them; their other warnings still
    show. The CLI calls this before it imports torch (a notebook may too); calling it again
    adds nothing."""
    for name, pattern in LIBRARY_NOTICES:
        logger = logging.getLogger(name)
        if not any(getattr(f, "pattern", None) == re.compile(pattern) for f in logger.filters):
            logger.addFilter(_DropNotice(pattern))
