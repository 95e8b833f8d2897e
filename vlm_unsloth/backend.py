"""Pick the backend and the device/precision a run uses, and say why.

Two backends, same options, same outputs:
- unsloth: Unsloth's FastVisionModel on an NVIDIA GPU (the product path: fastest, leanest).
- hf: transformers + PEFT (+ bitsandbytes quantization): CPU, non-NVIDIA GPUs, and the baseline.

`resolve_backend` must run BEFORE transformers/TRL/PEFT are imported when it may choose
unsloth: Unsloth patches them on import (`unsloth_backend.import_unsloth`).
"""

from __future__ import annotations

from dataclasses import dataclass

from vlm_unsloth.errors import BackendError, ConfigError


@dataclass(frozen=True)
class DevicePlan:
    backend: str
    """"unsloth" or "hf"."""
    device: str
    """"cuda" or "cpu"."""
    dtype: str
    """Compute dtype: "bfloat16", "float16" or "float32"."""
    why: str
    """One sentence for the start banner: why this backend, device and dtype."""


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_backend(choice: str) -> tuple[str, str]:
    """("unsloth"|"hf", reason). `auto` picks unsloth when CUDA is available."""
    if choice not in ("auto", "unsloth", "hf"):
        raise ConfigError(
            f"unknown backend {choice!r}", where="--backend", fix="use auto, unsloth or hf"
        )
    has_cuda = cuda_available()
    if choice == "unsloth" and not has_cuda:
        raise BackendError(
            "the unsloth backend needs an NVIDIA GPU with CUDA, and none is visible here",
            where="--backend unsloth",
            fix="run on a CUDA machine, or use --backend hf (e.g. the offline CPU demo: "
            "--model tiny-qwen2-vl --backend hf)",
        )
    if choice == "auto":
        if has_cuda:
            return "unsloth", "auto: CUDA is available, so Unsloth"
        return "hf", "auto: no CUDA GPU, so transformers + PEFT"
    return choice, f"--backend {choice}"


def activate_backend(choice: str) -> tuple[str, str]:
    """`resolve_backend`, then import Unsloth when it is the one that will run (it must come
    before transformers/TRL/PEFT patch points are used). Every entry point calls this first."""
    backend, why = resolve_backend(choice)
    if backend == "unsloth":
        from vlm_unsloth.unsloth_backend import import_unsloth

        import_unsloth()
    return backend, why


def backend_module(backend: str):
    """The module implementing `backend` (load, add_lora, for_training, for_inference, ...)."""
    if backend == "unsloth":
        from vlm_unsloth import unsloth_backend

        return unsloth_backend
    from vlm_unsloth import hf_backend

    return hf_backend


def plan_device(backend: str, backend_reason: str, precision: str) -> DevicePlan:
    """Device and compute dtype for `backend` under the `--precision` choice."""
    import torch

    if backend == "unsloth" or torch.cuda.is_available():
        device = "cuda"
        bf16_ok = torch.cuda.is_bf16_supported()
        if precision == "auto":
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
    return DevicePlan(backend=backend, device=device, dtype=dtype, why=f"{backend_reason}; {why}")
