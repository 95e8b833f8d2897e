"""Where a run computes: the backend, the device and the precision, each with the reason why.

    setup = choose_device(*resolve_backend("auto"), precision="auto")
    # DeviceSetup(backend="hf", device="cpu", dtype="float32", why="auto: no CUDA GPU, ...")

Two backends, same options, same outputs (`backend.py` has their protocol):
- unsloth: Unsloth's FastVisionModel on an NVIDIA GPU (the product path: fastest, leanest).
- hf: transformers + PEFT (+ bitsandbytes quantization): CPU, non-NVIDIA GPUs, and the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlm_unsloth import distributed
from vlm_unsloth.errors import BackendError, ConfigError
from vlm_unsloth.families import Family, default_family


@dataclass(frozen=True)
class DeviceSetup:
    backend: str
    """"unsloth" or "hf"."""
    device: str
    """"cuda" or "cpu"."""
    dtype: str
    """Compute dtype: "bfloat16", "float16" or "float32"."""
    why: str
    """One sentence for the start banner: why this backend, device and dtype."""


def cuda_available() -> bool:
    """Whether an NVIDIA GPU is usable here."""
    import torch

    return torch.cuda.is_available()


def resolve_backend(choice: str, family: Family | None = None) -> tuple[str, str]:
    """("unsloth"|"hf", reason). `auto` picks unsloth when CUDA is available, unless `family`
    (the model's, where known) is one Unsloth cannot train (`Family.unsloth_trains`)."""
    if choice not in ("auto", "unsloth", "hf"):
        raise ConfigError(
            f"unknown backend {choice!r}", where="--backend", fix="use auto, unsloth or hf"
        )
    has_cuda = cuda_available()
    if family is not None and not family.unsloth_trains:
        if choice == "unsloth":
            raise BackendError(
                f"Unsloth cannot train {family.key} models ({family.unsloth_note})",
                where="--backend unsloth",
                fix="use --backend hf (or auto, which picks it for this family)",
            )
        if choice == "auto" and has_cuda:
            return "hf", backend_notice(family)
    if choice == "unsloth" and not has_cuda:
        raise BackendError(
            "the unsloth backend needs an NVIDIA GPU with CUDA, and none is visible here",
            where="--backend unsloth",
            fix="run on a CUDA machine, or use --backend hf (e.g. the offline CPU demo: "
            f"--model {default_family().tiny_name} --backend hf)",
        )
    if choice == "auto":
        if has_cuda:
            return "unsloth", "auto: CUDA is available, so Unsloth"
        return "hf", "auto: no CUDA GPU, so transformers + PEFT"
    return choice, f"--backend {choice}"


def backend_notice(family: Family) -> str:
    """The one line `--backend auto` says when it gives a family Unsloth cannot train to hf."""
    return (
        f"--backend auto: Unsloth cannot train {family.key} models ({family.unsloth_note}), "
        "so transformers + PEFT (the hf backend)"
    )


def choose_device(
    backend: str,
    backend_reason: str,
    precision: str,
    family: Family | None = None,
    cpu_threads: int | None = None,
) -> DeviceSetup:
    """Device and compute dtype for `backend` under the `--precision` choice, for a model of
    `family` where known: a family whose activations overflow float16 (`Family.fp16_unsafe`,
    e.g. Gemma 3) gets float32 from `auto` on GPUs without bf16, and `fp16` is refused. On a
    CPU, `cpu_threads` (--cpu-threads) sets how many threads PyTorch computes with."""
    import torch

    unsafe = family.fp16_unsafe if family is not None else ""
    if backend == "unsloth" or torch.cuda.is_available():
        device = "cuda"
        bf16_ok = torch.cuda.is_bf16_supported()
        if precision == "fp16" and unsafe:
            raise ConfigError(
                f"{family.key} cannot compute in float16: {unsafe}",
                where="--precision fp16",
                fix="use --precision auto (float32 on GPUs without bf16), bf16 or fp32",
            )
        if precision == "auto" and not bf16_ok and unsafe:
            dtype = "float32"
            why = f"this GPU has no bf16 (e.g. T4), and {unsafe}: so fp32"
        elif precision == "auto":
            dtype = "bfloat16" if bf16_ok else "float16"
            why = "bf16 supported" if bf16_ok else "this GPU has no bf16 (e.g. T4), so fp16"
        else:
            dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[precision]
            if dtype == "bfloat16" and not bf16_ok:
                raise ConfigError(
                    "this GPU does not support bf16", where="--precision bf16", fix="use fp16"
                )
            why = f"--precision {precision}"
    else:
        device = "cpu"
        if precision not in ("auto", "fp32"):
            raise ConfigError(
                f"{precision} mixed precision needs a GPU",
                where=f"--precision {precision}",
                fix="use --precision auto or fp32 on CPU",
            )
        dtype, why = "float32", "CPU: float32"
        if cpu_threads is not None:
            # Process-wide: the tiny models train ~5x faster on 1 thread on a busy 2-core
            # machine (each small matmul split in two waits for the thread the OS parked).
            torch.set_num_threads(cpu_threads)
            why += f", {cpu_threads} thread{'s' if cpu_threads > 1 else ''} (--cpu-threads)"
    return DeviceSetup(backend=backend, device=device, dtype=dtype, why=f"{backend_reason}; {why}")


def cap_gpu_memory(gib: float, setup: DeviceSetup) -> None:
    """Make the allocator refuse more than `gib` on this process's GPU (OOM as on a small card)."""
    if setup.device != "cuda":
        raise ConfigError(
            "there is no GPU to cap", where="--gpu-memory-gib", fix="drop it on a CPU machine"
        )
    import torch

    device = distributed.local_index()  # under torchrun, this process's own GPU
    total = torch.cuda.get_device_properties(device).total_memory
    if gib <= 0 or gib * 2**30 > total:
        raise ConfigError(
            f"{gib} GiB is not within this GPU's {total / 2**30:.1f} GiB",
            where="--gpu-memory-gib",
            fix="pass a positive size up to the card's memory",
        )
    torch.cuda.set_per_process_memory_fraction(gib * 2**30 / total, device)


def device_name() -> str:
    """The GPU's name, or "cpu"."""
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
