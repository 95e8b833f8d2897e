"""A disk that fills up while a run saves: one line naming the disk, its free space and the last
complete checkpoint, and no half-written save left behind to keep the disk full.

    with saving_to(staging, "checkpoint-4", output):   # checkpoints.py, summary.py
        ...write into staging...
    if is_full_disk(error): raise no_space(output, "the run's files") from error  # steps.py

The libraries report a full disk in their own words: Python `OSError(ENOSPC)`, safetensors
"No space left on device (os error 28)", and torch's zip writer `unexpected pos 576 vs 534`
(no errno at all). A write error of torch's is taken for a full disk when the disk is in fact
(nearly) full.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vlm_unsloth import run_dir
from vlm_unsloth.errors import OutputDirError

NEARLY_FULL = 64 * 2**20
"""Free bytes below which a save's bare write error is the disk being full (a failed write
leaves what it wrote: free space is then about 0, well below this)."""
_NO_SPACE_WORDS = ("No space left on device", f"os error {errno.ENOSPC}")


def is_full_disk(error: BaseException) -> bool:
    """Whether `error` (or an error it was raised from) says the disk is full."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if any(words in str(error) for words in _NO_SPACE_WORDS):
            return True
        error = error.__cause__ or error.__context__
    return False


@contextmanager
def saving_to(folder: Path, what: str, output: Path, *, remove: bool = True) -> Iterator[None]:
    """Around writing `folder` (`what`: "checkpoint-4", "the adapter"...) in the run folder
    `output`: when the disk fills up, remove the half-written `folder` (with `remove`: the
    main process, under torchrun) and raise the one-line OutputDirError of `no_space`."""
    try:
        yield
    except Exception as error:  # safetensors' own error is a bare Exception subclass
        if not (is_full_disk(error) or _write_failed_on_a_full_disk(error, output)):
            raise
        refusal = no_space(output, what)  # the free space as the failed write left it
        if remove and folder.exists():
            shutil.rmtree(folder)
        raise refusal from error


def _write_failed_on_a_full_disk(error: BaseException, output: Path) -> bool:
    # torch's writer says only "unexpected pos ..." or "file write failed": ask the disk.
    return isinstance(error, RuntimeError) and shutil.disk_usage(output).free < NEARLY_FULL


def no_space(output: Path, what: str) -> OutputDirError:
    """The one line for a disk that filled up while the run in `output` wrote `what`."""
    disk = mount_point(output)
    free = shutil.disk_usage(disk).free / 2**20
    last = run_dir.last_checkpoint(output)
    if last is not None:
        state = f"the last complete checkpoint is {last.name}"
        fix = f"free space on {disk} (or move the run to a larger disk), then --resume"
    else:
        state = "the run has no complete checkpoint yet"
        fix = f"free space on {disk} (or choose an --output-dir on a larger disk) and start again"
    return OutputDirError(
        f"no space left on {disk} ({free:.1f} MB free) while saving {what}; {state}", fix=fix
    )


def mount_point(path: Path) -> Path:
    """The mount point of the file system that holds `path` (the disk `df` names)."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path
