"""The exceptions vlm-unsloth raises for problems the user can fix.

Each carries what failed, where (row, file, flag) and what to do, and renders as ONE line, so a
CLI can print `error: <message>` and exit non-zero instead of a traceback.
"""

from __future__ import annotations


class VlmUnslothError(Exception):
    """Base class: `str(error)` is a single line naming what, where and the fix."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(error_line(what, where=where, fix=fix))


def error_line(what: str, *, where: str | None = None, fix: str | None = None) -> str:
    """`where: what — fix` on one line: how every error of the package reads."""
    parts = [f"{where}: {what}" if where else what]
    if fix:
        parts.append(fix)
    return " — ".join(parts).replace("\n", " ")


class ConfigError(VlmUnslothError):
    """A flag or YAML value is invalid or inconsistent with another one."""


class BackendError(VlmUnslothError):
    """The chosen backend cannot run here (no CUDA for Unsloth, a missing package, ...)."""


class ModelError(VlmUnslothError):
    """A model name or folder cannot be resolved or is of an unsupported family."""


class DataError(VlmUnslothError):
    """A dataset file or row cannot be read or turned into a training record."""


class ImageError(VlmUnslothError):
    """An image cannot be loaded or is unusable for the model (size, aspect ratio, format).

    `reason` is a short stable key (e.g. "unreadable_image") used to group rejected rows.
    """

    def __init__(self, what: str, *, reason: str, where: str | None = None, fix: str | None = None):
        self.reason = reason
        super().__init__(what, where=where, fix=fix)


class RewardError(VlmUnslothError):
    """A GRPO reward function cannot be loaded, raised, or returned something other than one
    number (or None) per completion; `where` names the function and the row."""


class OutputDirError(VlmUnslothError):
    """The output folder holds a previous run and neither --resume nor --overwrite was given."""


class BenchmarkError(VlmUnslothError):
    """A benchmark measured nothing: every run failed or timed out (its rows and logs say how)."""
