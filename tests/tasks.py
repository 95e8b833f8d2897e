"""Tiny learnable tasks for end-to-end tests: a model can only answer them by looking at the image.

    from tasks import write_colour_task
    task = write_colour_task(tmp_path / "colours")   # train.jsonl, eval.jsonl, blank_eval.jsonl

The colour task is the offline demo set (`vlm_unsloth/data/demo_colours.py`, shipped as
`--dataset demo-colours`), written by the same generator: 84x84 white images with one filled
square (24-48 px, random position) in one of four colours; the question is always "What colour
is the square?" and the answer the colour's name. With the default counts and seed it is the
shipped set, file for file. Measured on the tiny Qwen2-VL (CPU, hf backend, 60 steps of batch 8
at lr 5e-3, LoRA r16 alpha 64 with lm_head saved): 100% held-out exact match after ~12 s of
training, 0% for the base model, and ~25% (chance) when every eval image is replaced by a blank
one — so a high score means the model reads the image, not the question.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vlm_unsloth.data.demo_colours import ColourDemoConfig, write_colour_demo


@dataclass(frozen=True)
class ColourTask:
    folder: Path
    train: Path
    """JSONL of {"image", "question", "answer"}, image paths relative to the file."""
    eval: Path
    """Held-out rows, same format (other images, same colours)."""
    blank_eval: Path
    """The eval rows with every image replaced by a plain white one (chance = 1 / 4)."""


def write_colour_task(
    folder: str | Path, *, train_rows: int = 240, eval_rows: int = 40, seed: int = 0
) -> ColourTask:
    """Write the colour task into `folder` (images/ and three JSONL files) and return the paths."""
    folder = Path(folder)
    config = ColourDemoConfig(
        output_dir=str(folder), train_count=train_rows, eval_count=eval_rows, seed=seed
    )
    write_colour_demo(config)
    return ColourTask(
        folder=folder,
        train=folder / "train.jsonl",
        eval=folder / "eval.jsonl",
        blank_eval=folder / "blank_eval.jsonl",
    )


def colour_training_args(
    task: ColourTask,
    output: Path,
    *,
    backend: str = "hf",
    model: str = "tiny-qwen2-vl",
    max_steps: int = 60,
) -> list[str]:
    """train-sft flags of the measured recipe that learns the colour task (see the docstring;
    tests/test_every_family.py has every tiny model's numbers)."""
    return [
        "--model", model, "--backend", backend, "--dataset", str(task.train),
        "--eval-dataset", str(task.eval), "--output-dir", str(output),
        "--max-steps", str(max_steps),
        "--batch-size", "8", "--grad-accum", "1", "--learning-rate", "5e-3", "--lora-r", "16",
        "--lora-alpha", "64", "--modules-to-save", "lm_head", "--warmup-ratio", "0.1",
        "--save-steps", "1000",
    ]  # fmt: skip
