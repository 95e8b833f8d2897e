"""What inference needs to know about a fine-tuned model: its base, its adapter, and the
training run's settings (image cap, system prompt, CPU threads), read from the run folder.

    run = resolve_adapter("outputs/sft", None)   # a run folder, its adapter/, or any LoRA folder
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from vlm_unsloth import run_dir
from vlm_unsloth.config import DataArgs, ModelArgs, TrainArgs
from vlm_unsloth.data.images import DEFAULT_MAX_SIDE
from vlm_unsloth.errors import ConfigError, OutputDirError
from vlm_unsloth.models.saved_adapter import (
    ADAPTER_CONFIG,
    adapter_weights,
    check_adapter_folder,
    check_same_family,
)
from vlm_unsloth.resume_options import saved_run_options

_NEEDED = ("ModelArgs.model", "DataArgs.max_side")
"""Options a run's file must hold for inference: a default would be another model or cap."""


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
    data_args: DataArgs | None = None
    """The run's data options (evaluate.py reads the run's eval rows with them)."""
    seed: int | None = None
    """The run's --seed (the same seed holds out the same --eval-fraction rows)."""


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
    if (folder / run_dir.RUN_MARKER).is_file():  # a training output folder
        run, adapter_dir = folder, folder / run_dir.ADAPTER_DIR
        if not ((adapter_dir / ADAPTER_CONFIG).is_file() or adapter_weights(adapter_dir)):
            raise no_adapter_yet(folder)
    elif (folder / ADAPTER_CONFIG).is_file() or adapter_weights(folder):
        adapter_dir = folder  # OUTPUT/adapter and checkpoint-N belong to a run: its settings apply
        run = folder.parent if (folder.parent / run_dir.RUN_MARKER).is_file() else None
    else:
        raise ConfigError(
            f"{folder} is neither a training output folder nor a LoRA adapter",
            where="--adapter",
            fix="pass the --output-dir of a training run or its adapter/ folder",
        )
    spare = run_dir.last_checkpoint(run) if run else None
    saved = check_adapter_folder(adapter_dir, spare=spare if spare != adapter_dir else None)
    if run is not None:
        return _from_run(run, base_model=model, adapter_dir=adapter_dir)
    trained_on = saved.get("base_model_name_or_path")
    if not isinstance(trained_on, str):
        if model is None:
            raise ConfigError(
                f"{adapter_dir / ADAPTER_CONFIG} does not name the model it was trained on",
                where="--adapter",
                fix="pass that base model with --model",
            )
    elif model is not None:
        check_same_family(model, trained_on, adapter_dir)
    return TrainedRun(model or trained_on, str(adapter_dir), DEFAULT_MAX_SIDE, None)


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
    model_args, data_args, train_args = run_options(folder)
    if base_model is not None and adapter_dir is not None:  # before any weights load
        check_same_family(base_model, model_args.model, adapter_dir)
    return TrainedRun(
        # The run's own --model (e.g. "tiny-qwen2-vl"), not the adapter's absolute base path,
        # which for a tiny model points into a cache that may have been rebuilt elsewhere.
        base_model=base_model or model_args.model,
        adapter_dir=str(adapter_dir) if adapter_dir else None,
        max_side=data_args.max_side,
        system_prompt=data_args.system_prompt,
        run_folder=folder,
        cpu_threads=model_args.cpu_threads,
        data_args=data_args,
        seed=train_args.seed,
    )


def run_options(folder: Path) -> tuple[ModelArgs, DataArgs, TrainArgs]:
    """The model, data and training options of the run in `folder`, checked as the command line
    checks them: every value's type, and the model and data options' `problems` (those are what
    inference uses; of the training options only the seed). An option the file lacks takes its
    default (runs saved before --cpu-threads existed lack it), except the two inference cannot
    guess: the model and the image cap."""
    path = folder / run_dir.RUN_MARKER
    options = saved_run_options(folder, (ModelArgs, DataArgs, TrainArgs))
    problems = [f"{key}: missing" for key in _NEEDED if key.split(".")[1] not in options]
    built = []
    for cls in (ModelArgs, DataArgs, TrainArgs):
        names = {field.name for field in dataclasses.fields(cls)}
        built.append(cls(**{name: value for name, value in options.items() if name in names}))
    problems += built[0].problems() + built[1].problems()
    if problems:
        raise OutputDirError(
            "; ".join(problems),
            where=str(path),
            fix="write the options the run was trained with back into the file, or train a new run",
        )
    return tuple(built)
