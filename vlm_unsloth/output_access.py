"""Whether this process may write an output folder: it can be written at all, and no other run
is writing it. Both are answered before anything slow loads, each as one error line.

    with output_access.holding(output):   # the whole run: steps.holding_the_output_dir, evaluate
        ...
    problem = output_access.why_unwritable(folder)   # infer.py's --output: a reason, or None

Holding a folder is an OS advisory lock (flock) on a hidden sibling file, `.NAME.lock` beside
OUTPUT, which records the holder's process id, host and start time for the refusal:

- Beside the folder, not in it: an empty or new folder must stay empty for run_dir's checks,
  and --overwrite renames OUTPUT to OUTPUT.previous while the run holds it.
- The kernel drops the lock when its holder dies (even by kill -9), so a lock file left by a
  killed run is taken over without asking anyone. Processes the holder forks (data-loader
  workers) close their copy at once: they would otherwise keep a killed run's folder locked.
- The file is removed when the run lets go. A run that opened it just before then locks a file
  no longer in place: it sees that (the path names another inode, or none) and tries again.
- A folder whose parent this process cannot write (a mount point) is locked itself: the same
  exclusion, without the holder's name in the refusal.
- flock locks an open file, not a process: a second claim from the same process (two runs in
  threads of one notebook) is refused like one from another process.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vlm_unsloth.errors import OutputDirError

_held: set[int] = set()
"""Descriptors of the lock files this process holds (closed in forked children)."""
_closing_in_children = False


def lock_file(folder: Path) -> Path:
    """The lock file of `folder`: the hidden sibling `.NAME.lock`."""
    return folder.with_name(f".{folder.name}.lock")


def why_unwritable(folder: Path) -> str | None:
    """Why this process cannot create files in `folder` (or create `folder` itself): a file
    where a folder is needed, a read-only file system, no permission. None: it can. Nothing
    that stays is written (a probe file, deleted by the OS when closed)."""
    existing = folder
    try:
        while not _exists(existing):
            existing = existing.parent
        if not existing.is_dir():
            inside = "is" if existing == folder else f"is inside {existing}, which is"
            return f"{folder} {inside} a file"
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        return f"{existing} cannot be written ({error.strerror or error})"
    return None


def _exists(path: Path) -> bool:
    # Path.exists answers False for a path under a file (ENOTDIR): the walk up finds the file.
    try:
        path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


@dataclass
class HeldFolder:
    """A folder this process holds (`hold`); `release` lets go."""

    folder: Path
    descriptor: int
    created: list[Path] = field(default_factory=list)
    """Folders made to hold the lock file, deepest first: removed at release when empty."""

    def release(self) -> None:
        """Remove the lock file (while still holding it; none when the folder itself is locked),
        unlock, and remove the folders made for it if nothing else went into them (a run that
        failed before writing)."""
        path = lock_file(self.folder)
        if _names_locked_file(path, self.descriptor):
            path.unlink()
        _held.discard(self.descriptor)
        os.close(self.descriptor)  # unlocks
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:  # not empty (the run's outputs), or already gone: keep the rest
                break


def hold(folder: Path, *, where: str = "--output-dir") -> HeldFolder:
    """Take `folder` (resolved) for this process, after checking it can be written; raises
    OutputDirError naming the holder when another run has it, or why it cannot be written."""
    problem = why_unwritable(folder)
    if problem is not None:
        raise OutputDirError(problem, where=where, fix=f"choose another {where}")
    created = _missing_folders(folder.parent)
    try:
        descriptor = _locked_lock_file(folder, where)
    except OSError as error:
        if not folder.is_dir():
            raise OutputDirError(
                f"{folder.parent} cannot be written ({error.strerror or error})",
                where=where,
                fix=f"choose another {where}",
            ) from error
        # A folder whose parent is not ours to write (a mount point, a shared scratch root):
        # lock the folder itself. It records no holder: the folder must stay as it is.
        descriptor = os.open(folder, os.O_RDONLY)
        _lock_or_refuse(descriptor, folder, None, where)
        _close_in_forked_children(descriptor)
        return HeldFolder(folder, descriptor)
    _close_in_forked_children(descriptor)
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    os.ftruncate(descriptor, 0)  # a killed holder's record
    os.pwrite(descriptor, (json.dumps(holder) + "\n").encode(), 0)
    return HeldFolder(folder, descriptor, created)


def _locked_lock_file(folder: Path, where: str) -> int:
    """The descriptor of `folder`'s lock file (made with its parents), locked by this process.
    OSError: the parent cannot be written."""
    path = lock_file(folder)
    while True:
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # a run letting go removed the empty parent it had made
            continue
        _lock_or_refuse(descriptor, folder, path, where)
        if _names_locked_file(path, descriptor):
            return descriptor
        os.close(descriptor)  # the holder removed this file as it let go: lock the new one


def _lock_or_refuse(descriptor: int, folder: Path, record: Path | None, where: str) -> None:
    """Lock `descriptor`, or close it and raise the refusal naming the holder (from `record`)."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        holder = _describe_holder(record) if record is not None else ""
        raise _in_use(folder, holder, where, f"choose another {where}") from None


def _in_use(folder: Path, holder: str, where: str, instead: str) -> OutputDirError:
    return OutputDirError(
        f"{folder} is in use by another run{holder}",
        where=where,
        fix=f"wait for it to finish, or {instead}",
    )


def refuse_held_locks_under(folder: Path, *, where: str) -> None:
    """Raise the refusal `hold` gives when a folder inside `folder` (an evaluation's eval/) is
    held by a live run; a killed holder's lock file is no obstacle."""
    for lock in lock_files_under(folder):
        holder = holder_of(lock)
        if holder is not None:
            held = lock.with_name(lock.name[1 : -len(".lock")])  # lock_file's inverse
            raise _in_use(held, holder, where, "choose another --output-dir")


@contextmanager
def holding(folder: Path, *, where: str = "--output-dir") -> Iterator[Path]:
    """`hold` `folder` for the block (yields it)."""
    held = hold(folder, where=where)
    try:
        yield folder
    finally:
        held.release()


def lock_files_under(folder: Path) -> list[Path]:
    """The lock files `hold` made for folders inside `folder` (an evaluation's `.eval.lock` in
    its run folder), held or left by a killed holder: `.NAME.lock` files whose text is a holder
    record or empty (one killed before writing it)."""
    found = []
    for path in sorted(folder.rglob(".*.lock")):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            text = path.read_text(encoding="utf-8").strip()
            if not text or {"pid", "host", "started"} <= set(json.loads(text)):
                found.append(path)
        except (OSError, ValueError, TypeError):  # not one of ours: a file of the user's
            continue
    return found


def holder_of(lock: Path) -> str | None:
    """Who holds the lock file `lock`, as a refusal names it (` (process N on host h, started
    ...)`, or empty when unrecorded); None when nobody does: a killed holder left it, and it may
    go with the folder holding it. A lock this process holds counts as held."""
    try:
        descriptor = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:  # its holder let go meanwhile
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _describe_holder(lock)
    finally:
        os.close(descriptor)  # unlocks, had it locked
    return None


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not _exists(folder):
        missing.append(folder)
        folder = folder.parent
    return missing


def _names_locked_file(path: Path, descriptor: int) -> bool:
    """Whether `path` still names the file open as `descriptor`."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _describe_holder(path: Path) -> str:
    """The holder as the refusal names it, ` (process 12345 on host h, started ...)`, read from
    the lock file; empty when it cannot be read (the holder is writing it this very moment)."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return f" (process {holder['pid']} on host {holder['host']}, started {holder['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _close_in_forked_children(descriptor: int) -> None:
    """Forked children (data-loader workers) share the lock: close their copy right after the
    fork, so that the lock goes when this process dies. exec'd children never had it (Python
    opens files non-inheritable)."""
    global _closing_in_children
    _held.add(descriptor)
    if not _closing_in_children:
        os.register_at_fork(after_in_child=_close_held_descriptors)
        _closing_in_children = True


def _close_held_descriptors() -> None:
    for descriptor in _held:
        os.close(descriptor)
    _held.clear()
