"""One process per GPU under `torchrun` / `accelerate launch`: which process writes, who waits.

Data parallelism itself is PyTorch DDP driven by the transformers Trainer (through accelerate);
this module only answers the questions our own code asks around it. Outside a launcher there
is one process, which is the main one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def _state():
    # accelerate's PartialState reads the launcher's environment (RANK, WORLD_SIZE, ...) and
    # joins the process group; the Trainer later reuses this shared state, so it must be made
    # as the Trainer would: on a machine without CUDA that is `cpu=True` (gloo), else NCCL.
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def is_distributed() -> bool:
    """Whether this process is one of several (launched by torchrun or accelerate)."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """Whether this process prints, logs and saves (rank 0, or the only one)."""
    return not is_distributed() or _state().is_main_process


def is_rank_zero() -> bool:
    """`is_main_process`, read from the launcher's environment alone: for the first steps of a
    run, before it joins the process group (it must import Unsloth first)."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    """How many processes train together (1 without a launcher)."""
    return _state().num_processes if is_distributed() else 1


def local_index() -> int:
    """This process's GPU index on its machine (0 without a launcher)."""
    return _state().local_process_index if is_distributed() else 0


def wait_for_everyone() -> None:
    """A barrier across the processes (nothing without a launcher)."""
    if is_distributed():
        _state().wait_for_everyone()


@contextmanager
def main_process_first() -> Iterator[None]:
    """The main process runs the block first (building a tiny checkpoint, filling the datasets
    cache), the others after it: no two processes write the same files at once."""
    if not is_distributed():
        yield
        return
    with _state().main_process_first():
        yield


def smallest_across_processes(value: int) -> int:
    """The minimum of `value` over all processes (itself outside a launcher)."""
    if not is_distributed():
        return value
    import torch
    import torch.distributed as dist

    device = _state().device
    tensor = torch.tensor([value], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def leave_process_group() -> None:
    """Close the launcher's process group at the end of a command: PyTorch warns (and may leak
    NCCL resources) when a process exits with it still open. Nothing to do outside a launcher."""
    if not is_distributed():
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def let_cpu_processes_load_checkpoints() -> None:
    """Resuming with several CPU processes (gloo): accelerate names each process's device
    `cpu:0`, the Trainer reloads the optimizer with `map_location=` that device, and torch.load
    knows no `cpu:0` location ("don't know how to restore data location ... cpu:0"). Teach it
    that `cpu:N` is the CPU. GPUs (`cuda:N`) and single processes never need this."""
    global _cpu_index_locations_known
    import torch

    if _cpu_index_locations_known or not is_distributed() or torch.cuda.is_available():
        return

    def restore(storage, location: str):
        return storage if location.startswith("cpu:") else None

    # Priority after torch's own cpu (10) and cuda (20) entries; the tagger never claims a
    # storage, so saving is unchanged.
    torch.serialization.register_package(30, lambda storage: None, restore)
    _cpu_index_locations_known = True


_cpu_index_locations_known = False
