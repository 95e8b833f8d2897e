"""What inference needs to know about a fine-tuned model: its base, its adapter, and the
training run's settings (image cap, system prompt, CPU threads), read from the run folder.

    run = resolve_adapter("outputs/sft", None)   # a run folder, its adapter/, or any LoRA folder
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vlm_unsloth import run_dir
from vlm_unsloth.data.images import DEFAULT_MAX_SIDE
from vlm_unsloth.errors import ConfigError


@dataclass
class TrainedRun:
    """What inference needs to know about the model: its base, adapter and training settings."""

    base_model: str
    adapter_dir: str | None
    max_side: int
    """The run's --max-side (768 when the model is not from a training run)."""
    system_prompt: str | None
    run_folder: Path | None = None
    """The training output folder, when the model comes from one (its run_config.yaml)."""
    cpu_threads: int | None = None
    """The run's --cpu-threads (None: PyTorch's default)."""


def resolve_adapter(adapter: str | None, model: str | None) -> TrainedRun:
    """`--adapter` (a training output folder or an adapter folder) and/or `--model`.

    An explicit `--model` always wins as the base; settings come from the training run the
    adapter (or the merged `--model` folder) belongs to, if any.
    """
    if adapter is None:
        if model is None:
            raise ConfigError(
                "nothing to load", where="--model/--adapter", fix="pass --model, --adapter or both"
            )
        parent = Path(model).expanduser().resolve().parent
        if Path(model).expanduser().is_dir() and (parent / run_dir.RUN_MARKER).is_file():
            return _from_run(parent, base_model=model, adapter_dir=None)  # OUTPUT/merged
        return TrainedRun(model, None, DEFAULT_MAX_SIDE, None)
    folder = Path(adapter).expanduser().resolve()
    if (folder / run_dir.RUN_MARKER).is_file():
        if not (folder / run_dir.ADAPTER_DIR / "adapter_config.json").is_file():
            raise no_adapter_yet(folder)
        return _from_run(folder, base_model=model, adapter_dir=folder / run_dir.ADAPTER_DIR)
    if not (folder / "adapter_config.json").is_file():
        raise ConfigError(
            f"{folder} is neither a training output folder nor a LoRA adapter",
            where="--adapter",
            fix="pass the --output-dir of a training run or its adapter/ folder",
        )
    if (folder.parent / run_dir.RUN_MARKER).is_file():  # OUTPUT/adapter: the run's settings apply
        return _from_run(folder.parent, base_model=model, adapter_dir=folder)
    saved = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    base = model or saved["base_model_name_or_path"]
    return TrainedRun(base, str(folder), DEFAULT_MAX_SIDE, None)


# The training script of a run, by the method's own options in its run_config.yaml.
_SCRIPTS = {"DpoArgs": "train_dpo.py", "GrpoArgs": "train_grpo.py"}


def no_adapter_yet(folder: Path) -> ConfigError:
    """The error for a run folder without adapter/, with advice that works for its state: an
    evaluation folder is no model; a run that saved a checkpoint can be resumed (or that
    checkpoint used as it is); one that saved nothing can only be trained again."""
    config = run_dir.load_run_config(folder)
    if config.get("job") == "evaluate":
        return ConfigError(
            f"{folder} is an evaluation folder (no {run_dir.ADAPTER_DIR}/ adapter)",
            where="--adapter",
            fix="pass the training run's folder, the one holding adapter/",
        )
    name = next((name for key, name in _SCRIPTS.items() if key in config), "train_sft.py")
    script = f"python scripts/{name}"
    checkpoint = run_dir.last_checkpoint(folder)
    if checkpoint is None:
        return ConfigError(
            f"{folder} has no {run_dir.ADAPTER_DIR}/ adapter and no checkpoint: the run stopped "
            "before it saved anything",
            where="--adapter",
            fix=f"train it again: {script} <its options> --output-dir {folder} --overwrite",
        )
    return ConfigError(
        f"{folder} has no {run_dir.ADAPTER_DIR}/ adapter yet: the run stopped after saving "
        f"{checkpoint.name}",
        where="--adapter",
        fix=f"finish it with the command that started it plus --resume ({script} <its options> "
        f"--output-dir {folder} --resume), or use that checkpoint as it is: --adapter {checkpoint}",
    )


def _from_run(folder: Path, *, base_model: str | None, adapter_dir: Path | None) -> TrainedRun:
    config = run_dir.load_run_config(folder)
    return TrainedRun(
        # The run's own --model (e.g. "tiny-qwen2-vl"), not the adapter's absolute base path,
        # which for a tiny model points into a cache that may have been rebuilt elsewhere.
        base_model=base_model or config["ModelArgs"]["model"],
        adapter_dir=str(adapter_dir) if adapter_dir else None,
        max_side=config["DataArgs"]["max_side"],
        system_prompt=config["DataArgs"]["system_prompt"],
        run_folder=folder,
        cpu_threads=config["ModelArgs"].get("cpu_threads"),  # runs saved before it lack it
    )
