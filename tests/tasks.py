"""Tiny learnable tasks for end-to-end tests: a model can only answer them by looking at the image.

    from tasks import write_colour_task
    task = write_colour_task(tmp_path / "colours")   # train.jsonl, eval.jsonl, blank_eval.jsonl

The colour task: 84x84 white images with one filled square (24-48 px, random position) in one of
four colours; the question is always "What colour is the square?" and the answer the colour's
name. Measured on the tiny Qwen2-VL (CPU, hf backend, 60 steps of batch 8 at lr 5e-3, LoRA r16
alpha 64 with lm_head saved): 100% held-out exact match after ~12 s of training, 0% for the base
model, and ~25% (chance) when every eval image is replaced by a blank one — so a high score
means the model reads the image, not the question.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 30),
    "blue": (30, 60, 220),
    "yellow": (230, 210, 20),
}
QUESTION = "What colour is the square?"
IMAGE_SIDE = 84


@dataclass(frozen=True)
class ColourTask:
    folder: Path
    train: Path
    """JSONL of {"image", "question", "answer"}, image paths relative to the file."""
    eval: Path
    """Held-out rows, same format (other images, same colours)."""
    blank_eval: Path
    """The eval rows with every image replaced by a plain white one (chance = 1 / 4)."""


def draw_square(
    colour: str, rng: random.Random, side: int = IMAGE_SIDE, sizes: tuple[int, int] = (24, 48)
) -> Image.Image:
    """A white `side` x `side` image with one square of `colour` (`sizes` px) somewhere inside."""
    image = Image.new("RGB", (side, side), "white")
    size = rng.randint(*sizes)
    left, top = rng.randint(0, side - size), rng.randint(0, side - size)
    ImageDraw.Draw(image).rectangle(
        [left, top, left + size - 1, top + size - 1], fill=COLOURS[colour]
    )
    return image


def write_colour_task(
    folder: str | Path, *, train_rows: int = 240, eval_rows: int = 40, seed: int = 0
) -> ColourTask:
    """Write the colour task into `folder` (images/ and three JSONL files) and return the paths."""
    folder = Path(folder)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    splits: dict[str, list[dict]] = {}
    for split, count in (("train", train_rows), ("eval", eval_rows)):
        rows = []
        for index in range(count):
            colour = rng.choice(sorted(COLOURS))
            name = f"images/{split}_{index:04d}.png"
            draw_square(colour, rng).save(folder / name)
            rows.append({"image": name, "question": QUESTION, "answer": colour})
        splits[split] = rows
    Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), "white").save(images / "blank.png")
    splits["blank_eval"] = [{**row, "image": "images/blank.png"} for row in splits["eval"]]
    for split, rows in splits.items():
        lines = "".join(json.dumps(row) + "\n" for row in rows)
        (folder / f"{split}.jsonl").write_text(lines, encoding="utf-8")
    return ColourTask(
        folder=folder,
        train=folder / "train.jsonl",
        eval=folder / "eval.jsonl",
        blank_eval=folder / "blank_eval.jsonl",
    )


def colour_training_args(
    task: ColourTask, output: Path, *, backend: str = "hf", model: str = "tiny-qwen2-vl"
) -> list[str]:
    """train-sft flags of the measured recipe that learns the colour task (see the docstring)."""
    return [
        "--model", model, "--backend", backend, "--dataset", str(task.train),
        "--eval-dataset", str(task.eval), "--output-dir", str(output), "--max-steps", "60",
        "--batch-size", "8", "--grad-accum", "1", "--learning-rate", "5e-3", "--lora-r", "16",
        "--lora-alpha", "64", "--modules-to-save", "lm_head", "--warmup-ratio", "0.1",
        "--save-steps", "1000",
    ]  # fmt: skip
