"""The offline CPU demo set: coloured squares, a task a tiny random-weight model learns in seconds.

    python scripts/make_colour_demo.py --output-dir vlm_unsloth/data/demo_colours

84x84 white images with one filled square (24-48 px, random position) in one of four colours;
the question is always "What colour is the square?" and the answer the colour's name. The
question never changes, so only the image tells the answers apart: a model that scores well
reads the image (the blank-image rows check that: shown a white image it can only guess, 1 in
4). `--dataset demo-colours` trains on it (configs/tiny-cpu-demo.yaml); the chart demo
(`demo_charts.py`) stays the GPU default, since a tiny random model cannot learn to read charts.

One RNG seeded with --seed draws every row in order (train, then eval): the same seed gives
byte-identical files (for a given Pillow build). tests/tasks.py writes the tests' colour task
with these same functions.

Written into the output folder (image paths are relative to the JSONL files):
- images/{train,eval}_NNNN.png: RGB PNGs, a few hundred bytes each; images/blank.png;
- train.jsonl / eval.jsonl: {"image", "question", "answer"};
- blank_eval.jsonl: the eval rows with every image replaced by images/blank.png;
- README.md: what this is, the command, counts and sizes.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from vlm_unsloth.data.demo_charts import prepare_output_dir, write_jsonl
from vlm_unsloth.errors import ConfigError

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 30),
    "blue": (30, 60, 220),
    "yellow": (230, 210, 20),
}
"""Square colours, named by the word the answer uses."""
QUESTION = "What colour is the square?"
IMAGE_SIDE = 84
SQUARE_SIZES = (24, 48)
"""Side of the square in px (inclusive range)."""

_SPLITS = ("train", "eval")
_IMAGE_NAME = re.compile(r"^((train|eval)_\d{4}|blank)\.png$")
_OUTPUT_FILES = ("train.jsonl", "eval.jsonl", "blank_eval.jsonl", "README.md")


@dataclass
class ColourDemoConfig:
    """What `scripts/make_colour_demo.py` takes."""

    output_dir: str = field(metadata={"help": "Folder to write images/ and the JSONL files into."})
    train_count: int = field(default=240, metadata={"help": "Number of training images."})
    eval_count: int = field(default=40, metadata={"help": "Number of evaluation images."})
    seed: int = field(default=0, metadata={"help": "Seed; the same seed gives identical files."})
    overwrite: bool = field(
        default=False,
        metadata={"help": "Replace a colour demo set already in --output-dir (its files only)."},
    )

    def __post_init__(self) -> None:
        problems = [
            # <= 9999 each: images are numbered per split with 4 digits.
            f"--{flag.replace('_', '-')}={value} must be between 1 and 9999"
            for flag, value in (("train_count", self.train_count), ("eval_count", self.eval_count))
            if not 1 <= value <= 9999
        ]
        if problems:
            raise ConfigError("; ".join(problems), fix="pass smaller positive counts")


@dataclass(frozen=True)
class ColourDemoSummary:
    output_dir: Path
    rows: dict[str, int]
    """JSONL file name -> number of rows."""
    answers: dict[str, dict[str, int]]
    """JSONL file name -> colour -> rows."""
    image_count: int
    """Images written, the blank one included."""
    total_bytes: int
    """All files written (images, JSONL, README)."""


def draw_square(
    colour: str, rng: random.Random, side: int = IMAGE_SIDE, sizes: tuple[int, int] = SQUARE_SIZES
) -> Image.Image:
    """A white `side` x `side` image with one square of `colour` (`sizes` px) somewhere inside."""
    image = Image.new("RGB", (side, side), "white")
    size = rng.randint(*sizes)
    left, top = rng.randint(0, side - size), rng.randint(0, side - size)
    ImageDraw.Draw(image).rectangle(
        [left, top, left + size - 1, top + size - 1], fill=COLOURS[colour]
    )
    return image


def blank_image(side: int = IMAGE_SIDE) -> Image.Image:
    """The plain white image of the blank-image control (no square: the colour is a guess)."""
    return Image.new("RGB", (side, side), "white")


def colour_rows(counts: dict[str, int], seed: int) -> dict[str, list[tuple[dict, Image.Image]]]:
    """split -> [(row, image)] for `counts` (split -> rows), drawn in order from one RNG.

    A row is {"image": "images/SPLIT_NNNN.png", "question": QUESTION, "answer": colour}.
    """
    rng = random.Random(seed)
    splits: dict[str, list[tuple[dict, Image.Image]]] = {}
    for split, count in counts.items():
        splits[split] = []
        for index in range(count):
            colour = rng.choice(sorted(COLOURS))
            image = draw_square(colour, rng)
            row = {"image": f"images/{split}_{index:04d}.png", "question": QUESTION}
            splits[split].append(({**row, "answer": colour}, image))
    return splits


def write_colour_demo(config: ColourDemoConfig) -> ColourDemoSummary:
    """Draw the squares and write images, train/eval/blank_eval JSONL and README.md."""
    output_dir = Path(config.output_dir)
    prepare_output_dir(
        output_dir,
        config.overwrite,
        files=_OUTPUT_FILES,
        image_name=_IMAGE_NAME,
        what="colour demo set",
    )
    counts = {"train": config.train_count, "eval": config.eval_count}
    files: dict[str, list[dict]] = {}
    for split, pairs in colour_rows(counts, config.seed).items():
        for row, image in pairs:
            image.save(output_dir / row["image"], format="PNG")
        files[f"{split}.jsonl"] = [row for row, _ in pairs]
    blank_image().save(output_dir / "images" / "blank.png", format="PNG")
    files["blank_eval.jsonl"] = [
        {**row, "image": "images/blank.png"} for row in files["eval.jsonl"]
    ]
    for name, rows in files.items():
        write_jsonl(output_dir / name, rows)
    rows = {name: len(file_rows) for name, file_rows in files.items()}
    answers = {
        name: dict(sorted(Counter(row["answer"] for row in file_rows).items()))
        for name, file_rows in files.items()
    }
    data_bytes = sum(path.stat().st_size for path in (output_dir / "images").glob("*.png"))
    data_bytes += sum((output_dir / name).stat().st_size for name in files)
    readme = _readme(config, rows, answers, data_bytes)
    (output_dir / "README.md").write_text(readme, encoding="utf-8", newline="\n")
    return ColourDemoSummary(
        output_dir=output_dir,
        rows=rows,
        answers=answers,
        image_count=sum(counts.values()) + 1,
        total_bytes=data_bytes + len(readme.encode()),
    )


def _readme(
    config: ColourDemoConfig,
    rows: dict[str, int],
    answers: dict[str, dict[str, int]],
    data_bytes: int,
) -> str:
    command = f"python scripts/make_colour_demo.py --output-dir {config.output_dir}"
    if (config.train_count, config.eval_count, config.seed) != (240, 40, 0):
        command += (
            f" --train-count {config.train_count} --eval-count {config.eval_count}"
            f" --seed {config.seed}"
        )
    lines = [
        "# Demo data: coloured squares (the offline CPU demo)",
        "",
        f"{IMAGE_SIDE}x{IMAGE_SIDE} white images with one filled square "
        f"({SQUARE_SIZES[0]}-{SQUARE_SIZES[1]} px) in one of",
        f'{len(COLOURS)} colours; every row asks "{QUESTION}", so only the image tells the',
        "answers apart. A tiny random-weight model learns it on a CPU in seconds",
        "(`--dataset demo-colours`, `configs/tiny-cpu-demo.yaml`). Drawn by",
        "`vlm_unsloth/data/demo_colours.py`; made by",
        "",
        f"    {command}",
        "",
        "(the same seed gives byte-identical files with the same Pillow build).",
        "",
        "| file | rows | answers |",
        "|---|---|---|",
    ]
    for name, count in rows.items():
        colours = ", ".join(f"{colour} {n}" for colour, n in answers[name].items())
        lines.append(f"| `{name}` | {count} | {colours} |")
    lines += [
        "",
        f"- `images/`: {sum(rows[f'{s}.jsonl'] for s in _SPLITS)} PNGs and `blank.png`; with "
        f"the JSONL files {data_bytes / 1e3:.0f} kB in all.",
        "- `train.jsonl`, `eval.jsonl`: `{image, question, answer}`, image paths relative to the",
        "  JSONL file.",
        "- `blank_eval.jsonl`: the eval rows on a plain white image (the control): there a model",
        "  can only guess, about 1 in 4 right.",
        "",
    ]
    return "\n".join(lines)
