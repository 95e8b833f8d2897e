"""Run configuration: one dataclass per concern, one parser for flags and YAML.

    python scripts/train_sft.py --config configs/qwen2-vl-7b-12gb.yaml --max-steps 50

`parse_args` reads `--config run.yaml` (keys are the field names below, e.g. `lora_r: 16`),
then the command-line flags, which win; with `--resume`, the run's own options come first
(resume_options.py). Unknown YAML keys and unknown flags are errors. Every
field is a flag in both spellings (`--max-side` and `--max_side`); booleans take
`--finetune-vision-layers` / `--no-finetune-vision-layers`.

Training options are declared here rather than by exposing TRL's SFTConfig directly: the product
has fixed flag names (`--batch-size`, `--grad-accum`, `--epochs`), precision is decided from the
device at run time (SFTConfig refuses bf16 while parsing on a CPU), and `build_trainer_config`
maps them onto SFTConfig/DPOConfig in one place.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm_unsloth.config_types import flag_problem, yaml_value_problems
from vlm_unsloth.errors import ConfigError
from vlm_unsloth.families import default_family, tiny_names
from vlm_unsloth.resume_options import check_resume_keeps_the_run, resumed_run_options
from vlm_unsloth.yaml_files import read_yaml

BACKENDS = ("auto", "unsloth", "hf")
QUANTIZATIONS = ("auto", "4bit", "8bit", "16bit")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
AUTO_BATCH_SIZE = "auto"
DEFAULT_AUTO_EFFECTIVE_BATCH = 16


@dataclass
class ModelArgs:
    """Which checkpoint, loaded how."""

    model: str = field(
        default=default_family().default_model,
        metadata={
            "help": "Hub id, local folder, or a tiny offline model: "
            f"{tiny_names()} (`vlm-unsloth models` lists every family and checkpoint)."
        },
    )
    backend: str = field(
        default="auto",
        metadata={
            "help": "unsloth (NVIDIA GPU, fastest), hf (transformers + PEFT: CPU, other GPUs), "
            "or auto (unsloth when CUDA is available).",
            "choices": BACKENDS,
        },
    )
    quantization: str = field(
        default="auto",
        metadata={
            "help": "Weights: 4bit (QLoRA, nf4), 8bit, or 16bit. auto = 4bit on CUDA, 16bit "
            "(float32 compute) on CPU.",
            "choices": QUANTIZATIONS,
        },
    )
    adapter: str | None = field(
        default=None,
        metadata={"help": "Start from this LoRA adapter folder (e.g. an earlier SFT run)."},
    )
    gradient_checkpointing: bool = field(
        default=True,
        metadata={
            "help": "Recompute activations in the backward pass (Unsloth's offloaded variant on "
            "the unsloth backend): much less memory for long image-token sequences."
        },
    )
    cpu_threads: int | None = field(
        default=None,
        metadata={
            "help": "Threads a CPU run computes with (default: PyTorch's, one per core). 1 suits "
            "the tiny models: their matrices are too small to share out, and on a busy machine "
            "every split operation waits for its slowest thread. infer.py and evaluate.py use "
            "the training run's."
        },
    )

    def problems(self) -> list[str]:
        if self.cpu_threads is not None and self.cpu_threads < 1:
            return [f"--cpu-threads {self.cpu_threads}: must be >= 1 (or unset: one per core)"]
        return []


@dataclass
class TrainArgs:
    """The optimisation loop and where its outputs go."""

    output_dir: str = field(
        default="outputs/sft", metadata={"help": "Folder for the adapter, checkpoints, metrics."}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Replace a previous run in --output-dir."}
    )
    resume: bool = field(
        default=False,
        metadata={"help": "Continue the run in --output-dir from its last checkpoint."},
    )
    epochs: float = field(default=1.0, metadata={"help": "Passes over the training data."})
    max_steps: int = field(
        default=-1, metadata={"help": "Stop after this many optimizer steps (overrides --epochs)."}
    )
    batch_size: str = field(
        default="2",
        metadata={
            "help": "Samples per device per forward pass, or auto: the largest that fits the GPU "
            "memory (--gpu-memory-gib) on the dataset's longest samples, measured before "
            "training; gradient accumulation then keeps --effective-batch-size."
        },
    )
    """An int once parsed ("8" -> 8), or "auto" until the run measures it."""
    grad_accum: int = field(
        default=4, metadata={"help": "Forward passes accumulated per optimizer step."}
    )
    effective_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Samples per optimizer step over all processes; --grad-accum is then derived "
            "as N / (batch size x processes). Default: 16 with --batch-size auto, else "
            "batch size x --grad-accum x processes."
        },
    )
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate."})
    warmup_ratio: float = field(
        default=0.03, metadata={"help": "Fraction of the steps spent warming the learning rate up."}
    )
    lr_scheduler_type: str = field(
        default="linear", metadata={"help": "linear, cosine, constant, ... (transformers names)."}
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    optim: str = field(
        default="auto",
        metadata={
            "help": "Optimizer (transformers names). auto = paged_adamw_8bit on CUDA (8-bit "
            "states, paged to CPU under pressure), adamw_torch elsewhere."
        },
    )
    gpu_memory_gib: float | None = field(
        default=None,
        metadata={
            "help": "Cap this process's GPU memory (torch.cuda.set_per_process_memory_fraction): "
            "a run on a big GPU then behaves like one on a card of this size. Default: no cap."
        },
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "auto = bf16 where the GPU supports it, else fp16 (e.g. T4) or, for models "
            "whose activations overflow fp16 (Gemma 3), fp32; fp32 on CPU.",
            "choices": PRECISIONS,
        },
    )
    seed: int = field(default=3407, metadata={"help": "Seed for weights, data order, dropout."})
    logging_steps: int = field(default=1, metadata={"help": "Log metrics every N steps."})
    save_steps: int = field(default=50, metadata={"help": "Save a checkpoint every N steps."})
    save_total_limit: int = field(default=3, metadata={"help": "Checkpoints kept on disk."})
    eval_steps: int = field(
        default=0, metadata={"help": "Evaluate every N steps (0: only at the end, if eval data)."}
    )
    train_on_prompt: bool = field(
        default=False,
        metadata={"help": "Also compute the loss on the prompt (default: answers only)."},
    )
    save_merged: bool = field(
        default=False, metadata={"help": "Also write a merged 16-bit model to OUTPUT/merged."}
    )
    eval_at_end: bool = field(
        default=False,
        metadata={
            "help": "After training, answer the eval rows with the base and the fine-tuned model "
            "and write OUTPUT/eval/report.html (+ report.md, metrics.json, predictions.jsonl)."
        },
    )
    push_to_hub: str | None = field(
        default=None,
        metadata={
            "help": "Upload the adapter (and, with --save-merged, the merged model to "
            "REPO-merged) to this Hugging Face Hub repo, e.g. me/qwen2-vl-charts."
        },
    )
    report_to: str = field(
        default="none", metadata={"help": "Trainer loggers: none, tensorboard, wandb, ..."}
    )
    group_by_length: bool = field(
        default=False,
        metadata={
            "help": "Batch samples of similar token counts together (image tokens dominate) to "
            "cut padding; the start banner shows the padding it would save. Off by default: "
            "when lengths follow the answers (same-size images, short labels), batches become "
            "single-answer and training can collapse to one answer."
        },
    )
    dataloader_num_workers: int | None = field(
        default=None,
        metadata={
            "help": "Worker processes decoding and resizing images while the GPU computes "
            "(default: up to 4 on a GPU, 0 on CPU)."
        },
    )

    def __post_init__(self):
        if isinstance(self.batch_size, str) and self.batch_size.strip().isdigit():
            self.batch_size = int(self.batch_size)

    @property
    def auto_batch_size(self) -> bool:
        return self.batch_size == AUTO_BATCH_SIZE

    def samples_per_step(self, world_size: int = 1) -> int:
        """Samples per optimizer step over all processes (a settled batch size only)."""
        return self.batch_size * self.grad_accum * world_size

    def problems(self) -> list[str]:
        found = []
        settled = isinstance(self.batch_size, int) and self.batch_size >= 1
        if not (self.auto_batch_size or settled):
            found.append(f"--batch-size {self.batch_size}: must be a number >= 1 or auto")
        if self.effective_batch_size is not None and self.effective_batch_size < 1:
            found.append(f"--effective-batch-size {self.effective_batch_size}: must be >= 1")
        if self.grad_accum < 1:
            found.append(f"--grad-accum {self.grad_accum}: must be >= 1")
        if self.learning_rate <= 0:
            found.append(f"--learning-rate {self.learning_rate}: must be > 0")
        if self.max_steps == 0 or self.max_steps < -1:
            found.append(f"--max-steps {self.max_steps}: must be > 0 (or -1 for --epochs)")
        if self.max_steps == -1 and self.epochs <= 0:
            found.append(f"--epochs {self.epochs}: must be > 0")
        if self.overwrite and self.resume:
            found.append("--overwrite and --resume contradict each other: choose one")
        if not 0 <= self.warmup_ratio < 1:
            found.append(f"--warmup-ratio {self.warmup_ratio}: must be in [0, 1)")
        return found


def parse_args(dataclass_types: Sequence[type], argv: Sequence[str] | None = None) -> tuple:
    """Parse flags (and `--config YAML`) into instances of `dataclass_types`, validated.

    Raises ConfigError (one line) for an unknown YAML key, a value of the wrong type (checked
    before TRL's parser runs), a bad value or inconsistent options. `--help` prints the help and
    exits as usual.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path = _config_path(argv)
    yaml_values = _checked_yaml_values(config_path, dataclass_types) if config_path else {}
    saved, saved_path = resumed_run_options(dataclass_types, argv, yaml_values)

    from trl import TrlParser

    # exit_on_error=False: a flag argparse cannot convert raises instead of printing usage.
    parser = TrlParser(dataclass_types=list(dataclass_types), exit_on_error=False)
    if saved:  # --resume: the run's options under the --config file's and the flags
        parser.set_defaults_with_config(**saved)
    try:
        parsed = parser.parse_args_and_config(argv)
    except argparse.ArgumentError as error:
        flag, what = flag_problem(error)
        raise ConfigError(what, where=flag) from error
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error), where=str(config_path or "command line")) from error
    problems = [p for obj in parsed for p in getattr(obj, "problems", list)()]
    if problems:
        raise ConfigError("; ".join(problems), where="options")
    if saved:
        check_resume_keeps_the_run(parsed, saved, saved_path)
    return tuple(parsed)


def chosen_backend(dataclass_types: Sequence[type], argv: Sequence[str]) -> str | None:
    """The --backend these arguments choose (flag, else YAML, else auto), read with the standard
    library before `parse_args`: Unsloth patches transformers, TRL and PEFT on import and must
    come before them, and the flag parser itself imports TRL. None when the options have no
    backend, or for --help."""
    argv = list(argv)
    has_backend = any(f.name == "backend" for c in dataclass_types for f in dataclasses.fields(c))
    if not has_backend or "-h" in argv or "--help" in argv:
        return None
    return _peeked_values(dataclass_types, argv, ("backend",))["backend"] or "auto"


def chosen_model(dataclass_types: Sequence[type], argv: Sequence[str]) -> str | None:
    """The model these arguments name (--model, else --adapter; flag, else YAML), read like
    `chosen_backend` so that --backend auto can see its family before Unsloth is imported; None
    when the options name none (inference then finds it in the training run)."""
    names = {f.name for c in dataclass_types for f in dataclasses.fields(c)}
    values = _peeked_values(dataclass_types, list(argv), ("model", "adapter"))
    for name in ("model", "adapter"):
        if name in names and values[name]:
            return str(values[name])
    return next(
        (f.default for c in dataclass_types for f in dataclasses.fields(c) if f.name == "model"),
        None,
    )


def _peeked_values(
    dataclass_types: Sequence[type], argv: list[str], names: Sequence[str]
) -> dict[str, Any]:
    """name -> the value of --name (flag, else the --config YAML's key, else with --resume the
    run's, else None), read with the standard library; a flag without its value is a one-line
    ConfigError."""
    config_path = _config_path(argv)
    yaml_values = _checked_yaml_values(config_path, dataclass_types) if config_path else {}
    saved, _ = resumed_run_options(dataclass_types, argv, yaml_values)
    peek = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    for name in names:
        peek.add_argument(f"--{name}")
    try:
        flags = peek.parse_known_args(argv)[0]
    except argparse.ArgumentError as error:  # e.g. --model with no value
        flag, what = flag_problem(error)
        raise ConfigError(what, where=flag) from error
    return {
        name: getattr(flags, name) or yaml_values.get(name) or saved.get(name) for name in names
    }


def option_origin(flag: str | None, argv: Sequence[str]) -> str | None:
    """`FILE: key` when the value of option `flag` (e.g. --eval-split) came from the --config
    file FILE because the command line `argv` did not set it, for an error to blame the line the
    user wrote rather than a flag they never typed; None otherwise (and for anything that is not
    an option's flag)."""
    key = (flag or "")[2:].replace("-", "_")
    spellings = {f"--{key}", f"--{key.replace('_', '-')}"}
    if not (flag or "").startswith("--") or not key.isidentifier() or key == "config":
        return None
    if any(arg.split("=", 1)[0] in spellings for arg in argv):
        return None
    try:
        path = _config_path(list(argv))
        values = read_yaml(path, error=ConfigError) if path else None
    except ConfigError:  # the file's own problem was reported when it was read
        return None
    return f"{path}: {key}" if isinstance(values, dict) and key in values else None


def _config_path(argv: list[str]) -> Path | None:
    if "--config" not in argv:
        return None
    index = argv.index("--config")
    if index + 1 >= len(argv):
        raise ConfigError("--config needs a YAML file path", where="--config")
    path = Path(argv[index + 1])
    if not path.is_file():
        raise ConfigError(f"no such file {path}", where="--config", fix="pass a YAML file")
    return path


def _checked_yaml_values(path: Path, dataclass_types: Sequence[type]) -> dict[str, Any]:
    values = read_yaml(path, error=ConfigError)
    if not isinstance(values, dict):
        raise ConfigError("must be a YAML mapping of option: value", where=str(path))
    known = {f.name for cls in dataclass_types for f in dataclasses.fields(cls)} | {"env"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)}",
            where=str(path),
            fix="use the field names that --help lists, with underscores (e.g. lora_r)",
        )
    problems = yaml_value_problems(values, dataclass_types)
    if not isinstance(values.get("env", {}), dict):
        problems.append(f"env: expected a mapping of VARIABLE: value, got {values['env']!r}")
    if problems:
        raise ConfigError("; ".join(problems), where=str(path))
    return values


def to_dict(*configs: Any) -> dict[str, dict[str, Any]]:
    """The resolved configuration, grouped by concern, for saving next to a run's outputs."""
    return {type(config).__name__: dataclasses.asdict(config) for config in configs}


DEMO_DATASET = "demo"
COLOUR_DEMO_DATASET = "demo-colours"
MIN_MAX_SIDE, MAX_SIDE_RULE = 28, "must be at least 28 px (768 or 1024 usual)"
CLEARABLE = ("eval_dataset", "eval_split")
"""Options that `--NAME none` clears (a preset may set them; a flag cannot pass null)."""


@dataclass
class DataArgs:
    """Where the examples come from, how columns map, and how images are capped."""

    dataset: str = field(
        default=DEMO_DATASET,
        metadata={
            "help": "JSONL/JSON/CSV/Parquet file, image folder, dataset saved with save_to_disk, "
            "or hub name. 'demo' = the shipped synthetic chart set (vlm_unsloth/data/demo); "
            "'demo-colours' = the coloured squares a tiny model learns on a CPU "
            "(vlm_unsloth/data/demo_colours)."
        },
    )
    split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_adapter: str = field(
        default="auto",
        metadata={
            "help": "Column layout of a known dataset: chartqa (HuggingFaceM4/ChartQA), "
            "latex_ocr (unsloth/LaTeX_OCR), rlaif_v (openbmb/RLAIF-V-Dataset), none, or auto "
            "(recognised by the dataset name).",
            "choices": ("auto", "none", "chartqa", "latex_ocr", "rlaif_v"),
        },
    )
    eval_dataset: str | None = field(
        default=None, metadata={"help": "A separate file/dataset to evaluate on (none: no file)."}
    )
    eval_split: str | None = field(
        default=None,
        metadata={
            "help": "A split of --dataset to evaluate on (e.g. test); none clears a --config "
            "file's (e.g. a preset's ChartQA split, for a file of your own)."
        },
    )
    eval_fraction: float = field(
        default=0.0,
        metadata={"help": "Hold out this fraction of --dataset for evaluation (seeded)."},
    )
    max_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training rows (quick runs)."}
    )
    image_column: str | None = field(default=None, metadata={"help": "Column with the image."})
    question_column: str | None = field(
        default=None, metadata={"help": "Column with the question / prompt text."}
    )
    answer_column: str | None = field(
        default=None, metadata={"help": "Column with the answer (SFT target)."}
    )
    chosen_column: str | None = field(
        default=None, metadata={"help": "Column with the preferred answer (DPO)."}
    )
    rejected_column: str | None = field(
        default=None, metadata={"help": "Column with the dispreferred answer (DPO)."}
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message put before every conversation."}
    )
    text_only_rows: bool = field(
        default=False,
        metadata={
            "help": "Table layout: a row with an empty image cell is a text-only example (to "
            "keep the model's text skills), not a missing image. Messages rows without image "
            "parts are always text-only."
        },
    )
    instruction: str | None = field(
        default=None,
        metadata={"help": "Fixed question for every image (when the data has no question)."},
    )
    max_side: int = field(
        default=768,
        metadata={
            "help": "Cap every image's longest side at this many pixels (aspect kept, never "
            "upscaled). Image tokens decide memory: 768 suits 12 GB, 1024 for more detail."
        },
    )
    max_seq_length: int = field(
        default=2048,
        metadata={"help": "Longest sample in tokens (image tokens included); longer are rejected."},
    )
    strict: bool = field(
        default=False, metadata={"help": "Stop before training if any row is rejected."}
    )
    fit_images: bool = field(
        default=False,
        metadata={
            "help": "Downscale a too-long sample's image until it fits, instead of rejecting."
        },
    )

    def __post_init__(self):  # `--eval-split none` (or '') clears a --config file's value
        for name in CLEARABLE:
            value = getattr(self, name)
            if isinstance(value, str) and value.strip().lower() in ("", "none"):
                setattr(self, name, None)

    def problems(self) -> list[str]:
        found = []
        if self.max_side < MIN_MAX_SIDE:
            found.append(f"--max-side {self.max_side}: {MAX_SIDE_RULE}")
        if self.max_seq_length < 32:
            found.append(f"--max-seq-length {self.max_seq_length}: must be at least 32")
        if not 0.0 <= self.eval_fraction < 1.0:
            found.append(f"--eval-fraction {self.eval_fraction}: must be in [0, 1)")
        if self.eval_fraction and (self.eval_split or self.eval_dataset):
            found.append("--eval-fraction with --eval-split/--eval-dataset: choose one")
        if self.max_samples is not None and self.max_samples < 1:
            found.append(f"--max-samples {self.max_samples}: must be >= 1")
        return found
