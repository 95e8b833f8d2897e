"""The shipped demo set: synthetic bar and line charts drawn with Pillow, with exact answers.

    python scripts/make_demo_data.py --output-dir vlm_unsloth/data/demo

Every question needs the image and has one short exact answer: the value printed on a labelled
bar/point ("37"), the label with the highest/lowest value ("Plum", "Mar"), the colour of a bar
("red"), the number of bars/points ("5"). Charts are drawn with Pillow, not matplotlib: faster,
and the same seed gives byte-identical files (for a given Pillow build, which bundles FreeType
and zlib). Each chart comes from its own RNG seeded by (seed, split, index), so a chart does not
change when the counts do.

Written into the output folder (image paths are relative to the JSONL files):
- images/{bar,line}_NNNN.png: palette PNGs, 320-480 px per side, varied aspect ratios;
- train.jsonl / eval.jsonl: {"image", "question", "answer"};
- dpo_train.jsonl / dpo_eval.jsonl: {"image", "question", "chosen", "rejected"} on the same
  images but a different question type than the SFT row; "rejected" is a plausible wrong answer
  of the same kind (another value/label/colour of the same chart, the count off by one);
- charts.jsonl: each image's spec (kind, size, labels, values, colours) and both questions with
  their type: the ground truth the tests re-derive answers from;
- README.md: what this is, the command, counts and sizes.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from vlm_unsloth.errors import ConfigError, OutputDirError

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "blue": (31, 99, 212),
    "green": (44, 160, 44),
    "orange": (247, 140, 20),
    "purple": (128, 60, 180),
    "brown": (140, 86, 45),
    "pink": (236, 110, 186),
}
"""Bar/line colours, named by the word the answer uses. No gray: "gray"/"grey" is ambiguous."""

# Labels never an article ("A" normalises to "" in exact match) nor a number (a year label would
# be scored as a number by relaxed accuracy: 2019 is within 5% of 2020).
BAR_LABELS = ("Fig", "Kiwi", "Lime", "Pear", "Plum", "Date", "Kale", "Leek", "Corn", "Bean", "Okra")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
BAR_TITLES = ("Units sold", "Harvest (tonnes)", "Stock on hand", "Orders this week", "Crates")
LINE_TITLES = ("Visitors per month", "Rainfall (mm)", "Active users", "Orders", "Sunny days")

QUESTION_TYPES = ("value", "highest", "lowest", "colour", "count")
"""Every question type; line charts have all but "colour" (one line, one colour)."""

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "value": (
        "What is the value of {target}?",
        "What value does the chart show for {target}?",
    ),
    "highest": (
        "Which {item} has the highest value?",
        "Which {item} is the largest?",
    ),
    "lowest": (
        "Which {item} has the lowest value?",
        "Which {item} is the smallest?",
    ),
    "colour": (
        "What colour is the bar for {target}?",
        "Which colour is used for the {target} bar?",
    ),
    "count": (
        "How many {items} are in the chart?",
        "How many {items} does the chart show?",
    ),
}
_ITEM = {"bar": ("label", "bars"), "line": ("month", "points")}

SIZE_RANGE = (320, 480)
"""Width and height are each drawn from this range (px), so aspect ratios vary from 2:3 to 3:2."""
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 40, 14, 34, 26
_WHITE, _BLACK, _GRID = (255, 255, 255), (0, 0, 0), (225, 225, 225)
_IMAGE_NAME = re.compile(r"^(bar|line)_\d{4}\.png$")
_OUTPUT_FILES = (
    "train.jsonl",
    "eval.jsonl",
    "dpo_train.jsonl",
    "dpo_eval.jsonl",
    "charts.jsonl",
    "README.md",
)


@dataclass(frozen=True)
class ChartSpec:
    """Everything drawn on one chart; the single source of every answer about it."""

    kind: str
    """"bar" or "line"."""
    width: int
    height: int
    title: str
    labels: tuple[str, ...]
    """Bar labels or months, left to right."""
    values: tuple[int, ...]
    """One distinct integer per label (distinct: "highest"/"lowest" have one answer)."""
    colours: tuple[str, ...]
    """Bar charts: one distinct colour name per bar; line charts: the line's colour."""


@dataclass(frozen=True)
class ChartQuestion:
    type: str
    """One of QUESTION_TYPES."""
    target: str | None
    """The label the question names ("value", "colour"), else None."""
    question: str
    answer: str
    rejected: str
    """A plausible wrong answer of the same kind (for DPO)."""


@dataclass(frozen=True)
class ChartLayout:
    """Pixel geometry of a chart (pure arithmetic, also used by the tests to read pixels)."""

    plot: tuple[int, int, int, int]
    """(left, top, right, bottom) of the plotting area; bottom is the x axis."""
    y_max: int
    y_ticks: tuple[int, ...]
    centres: tuple[tuple[int, int], ...]
    """Per label: top-centre of its bar, or its line point."""
    bars: tuple[tuple[int, int, int, int], ...]
    """Per label (bar charts only): the bar's (x0, y0, x1, y1), inclusive."""


@dataclass
class DemoDataConfig:
    """What `scripts/make_demo_data.py` takes."""

    output_dir: str = field(metadata={"help": "Folder to write images/ and the JSONL files into."})
    train_count: int = field(default=300, metadata={"help": "Number of training charts."})
    eval_count: int = field(default=60, metadata={"help": "Number of evaluation charts."})
    seed: int = field(default=0, metadata={"help": "Seed; the same seed gives identical files."})
    overwrite: bool = field(
        default=False,
        metadata={"help": "Replace a demo set already in --output-dir (its files only)."},
    )

    def __post_init__(self) -> None:
        problems = [
            # <= 4999 each: images are numbered across both splits with 4 digits.
            f"--{flag.replace('_', '-')}={value} must be between 1 and 4999"
            for flag, value in (("train_count", self.train_count), ("eval_count", self.eval_count))
            if not 1 <= value <= 4999
        ]
        if problems:
            raise ConfigError("; ".join(problems), fix="pass smaller positive counts")


@dataclass(frozen=True)
class DemoDataSummary:
    output_dir: Path
    rows: dict[str, int]
    """JSONL file name -> number of rows."""
    question_types: dict[str, dict[str, int]]
    """JSONL file name -> question type -> rows."""
    image_count: int
    image_bytes: int
    total_bytes: int
    """All files written (images, JSONL, README)."""


def random_chart_spec(rng: random.Random) -> ChartSpec:
    """A random bar or line chart: 3-7 bars or 4-9 points, distinct values 5..95."""
    kind = rng.choice(("bar", "line"))
    width, height = rng.randint(*SIZE_RANGE), rng.randint(*SIZE_RANGE)
    if kind == "bar":
        count = rng.randint(3, len(COLOURS))
        labels = tuple(rng.sample(BAR_LABELS, count))
        colours = tuple(rng.sample(tuple(COLOURS), count))
        title = rng.choice(BAR_TITLES)
    else:
        count = rng.randint(4, 9)
        start = rng.randint(0, len(MONTHS) - count)
        labels = MONTHS[start : start + count]
        colours = (rng.choice(tuple(COLOURS)),)
        title = rng.choice(LINE_TITLES)
    values = tuple(rng.sample(range(5, 96), count))
    return ChartSpec(kind, width, height, title, labels, values, colours)


def question_types_for(kind: str) -> tuple[str, ...]:
    """The question types a chart kind can answer (line charts have no colours)."""
    return QUESTION_TYPES if kind == "bar" else tuple(t for t in QUESTION_TYPES if t != "colour")


def answer_for(spec: ChartSpec, question_type: str, target: str | None = None) -> str:
    """The exact answer to a question about `spec` (the ground truth)."""
    if question_type == "value":
        return str(spec.values[spec.labels.index(target)])
    if question_type == "highest":
        return spec.labels[spec.values.index(max(spec.values))]
    if question_type == "lowest":
        return spec.labels[spec.values.index(min(spec.values))]
    if question_type == "colour":
        return spec.colours[spec.labels.index(target)]
    if question_type == "count":
        return str(len(spec.labels))
    raise ValueError(f"unknown question type {question_type!r}; expected one of {QUESTION_TYPES}")


def wrong_answer_for(
    spec: ChartSpec, question_type: str, target: str | None, rng: random.Random
) -> str:
    """A plausible wrong answer: what a model misreading this chart would say."""
    by_value = sorted(spec.labels, key=lambda label: spec.values[spec.labels.index(label)])
    if question_type == "value":
        others = [v for label, v in zip(spec.labels, spec.values, strict=True) if label != target]
        return str(rng.choice(others))
    if question_type == "highest":
        return by_value[-2]  # the runner-up
    if question_type == "lowest":
        return by_value[1]
    if question_type == "colour":
        return rng.choice(
            [c for label, c in zip(spec.labels, spec.colours, strict=True) if label != target]
        )
    if question_type == "count":
        return str(len(spec.labels) + rng.choice((-1, 1)))
    raise ValueError(f"unknown question type {question_type!r}; expected one of {QUESTION_TYPES}")


def make_question(spec: ChartSpec, question_type: str, rng: random.Random) -> ChartQuestion:
    """A question of `question_type` about `spec`, with its exact answer."""
    target = rng.choice(spec.labels) if question_type in ("value", "colour") else None
    item, items = _ITEM[spec.kind]
    text = rng.choice(_TEMPLATES[question_type]).format(target=target, item=item, items=items)
    return ChartQuestion(
        type=question_type,
        target=target,
        question=text,
        answer=answer_for(spec, question_type, target),
        rejected=wrong_answer_for(spec, question_type, target, rng),
    )


def make_chart(seed: int, split: str, index: int) -> tuple[ChartSpec, ChartQuestion, ChartQuestion]:
    """Chart `index` of `split`: its spec, its SFT question and its DPO question (another type).

    The RNG is seeded from a string (hashed with SHA-512 by `random`, so PYTHONHASHSEED does not
    matter) and is private to this chart.
    """
    rng = random.Random(f"vlm-unsloth-demo:{seed}:{split}:{index}")
    spec = random_chart_spec(rng)
    # Colour questions exist on bar charts only (about half): weight them 2x there so every
    # type is 17-21% of the rows instead of colour alone at 10%.
    types = list(question_types_for(spec.kind))
    weights = [2 if t == "colour" else 1 for t in types]
    sft_type = rng.choices(types, weights)[0]
    weights.pop(types.index(sft_type))
    types.remove(sft_type)
    dpo_type = rng.choices(types, weights)[0]
    return spec, make_question(spec, sft_type, rng), make_question(spec, dpo_type, rng)


def _y_axis(max_value: int) -> tuple[int, tuple[int, ...]]:
    step = 10 if max_value <= 50 else 20
    y_max = (max_value // step + 1) * step  # headroom above the tallest bar for its value label
    return y_max, tuple(range(0, y_max + 1, step))


def chart_layout(spec: ChartSpec) -> ChartLayout:
    """Where the axes, bars or points of `spec` are drawn, in pixels."""
    left, top = _MARGIN_LEFT, _MARGIN_TOP
    right, bottom = spec.width - _MARGIN_RIGHT, spec.height - _MARGIN_BOTTOM
    y_max, y_ticks = _y_axis(max(spec.values))
    slot = (right - left) / len(spec.labels)
    centres, bars = [], []
    for i, value in enumerate(spec.values):
        x = round(left + slot * (i + 0.5))
        y = round(bottom - value / y_max * (bottom - top))
        centres.append((x, y))
        if spec.kind == "bar":
            half = round(slot * 0.3)
            bars.append((x - half, y, x + half, bottom - 1))  # stop above the axis line
    return ChartLayout((left, top, right, bottom), y_max, y_ticks, tuple(centres), tuple(bars))


@cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled Aileron via FreeType: no files


def _fitting_font(texts: tuple[str, ...], width: float) -> ImageFont.FreeTypeFont:
    # x labels shrink (down to 9 px) until the widest fits its slot: 7 bars on a 320 px chart.
    for size in range(13, 8, -1):
        font = _font(size)
        if max(font.getlength(text) for text in texts) <= width - 4:
            return font
    return _font(9)


def _palette() -> Image.Image:
    # The chart colours, the grid and a gray ramp for antialiased text; quantizing to exactly
    # these (no dithering) keeps bars pure and the PNGs small.
    entries = [_WHITE, _BLACK, _GRID, *COLOURS.values()]
    entries += [(v, v, v) for v in range(17, 255, 17) if (v, v, v) not in entries]
    palette = Image.new("P", (1, 1))
    palette.putpalette([channel for rgb in entries for channel in rgb])
    return palette


def draw_chart(spec: ChartSpec) -> Image.Image:
    """The chart as a palette ("P") image of spec.width x spec.height."""
    layout = chart_layout(spec)
    left, top, right, bottom = layout.plot
    image = Image.new("RGB", (spec.width, spec.height), _WHITE)
    draw = ImageDraw.Draw(image)
    draw.text((spec.width // 2, 8), spec.title, font=_font(15), fill=_BLACK, anchor="mt")
    for tick in layout.y_ticks:
        y = round(bottom - tick / layout.y_max * (bottom - top))
        if tick:
            draw.line((left, y, right, y), fill=_GRID)
        draw.text((left - 5, y), str(tick), font=_font(11), fill=_BLACK, anchor="rm")
    label_font = _fitting_font(spec.labels, (right - left) / len(spec.labels))
    value_font = _font(12)
    if spec.kind == "bar":
        for box, colour in zip(layout.bars, spec.colours, strict=True):
            draw.rectangle(box, fill=COLOURS[colour])
    else:
        draw.line(layout.centres, fill=COLOURS[spec.colours[0]], width=2)
        for x, y in layout.centres:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=COLOURS[spec.colours[0]])
    for i, ((x, y), label, value) in enumerate(
        zip(layout.centres, spec.labels, spec.values, strict=True)
    ):
        # A line's valley gets its value label below the point, away from both segments; the
        # white stroke keeps a label readable where a segment still crosses it.
        neighbours = [v for v in spec.values[max(i - 1, 0) : i + 2] if v != value]
        below = spec.kind == "line" and min(neighbours) > value and y + 22 < bottom
        draw.text(
            (x, y + 7) if below else (x, y - 6),
            str(value),
            font=value_font,
            fill=_BLACK,
            anchor="mt" if below else "ms",
            stroke_width=2,
            stroke_fill=_WHITE,
        )
        draw.text((x, bottom + 5), label, font=label_font, fill=_BLACK, anchor="mt")
    draw.line((left, top, left, bottom, right, bottom), fill=_BLACK)
    return image.quantize(palette=_palette(), dither=Image.Dither.NONE)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """One JSON object a line, UTF-8, "\n" line ends on every OS (the shipped files are
    compared byte for byte)."""
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def prepare_output_dir(
    output_dir: Path,
    overwrite: bool,
    *,
    files: tuple[str, ...] = _OUTPUT_FILES,
    image_name: re.Pattern = _IMAGE_NAME,
    what: str = "demo set",
) -> None:
    """Make `output_dir` ready for a generated set: refuse one already there unless
    `overwrite`, then delete only the generator's own `files` and images/ named `image_name`."""
    images = output_dir / "images"
    ours = [output_dir / name for name in files if (output_dir / name).exists()]
    if images.is_dir():
        ours += [path for path in images.iterdir() if image_name.match(path.name)]
    if ours and not overwrite:
        raise OutputDirError(
            f"already holds a {what} ({len(ours)} files)",
            where=str(output_dir),
            fix="pass --overwrite to replace it, or choose another --output-dir",
        )
    for path in ours:  # only files this generator writes: a stale larger set leaves no orphans
        path.unlink()
    images.mkdir(parents=True, exist_ok=True)


def write_demo_dataset(config: DemoDataConfig) -> DemoDataSummary:
    """Draw the charts and write images, SFT/DPO JSONL, charts.jsonl and README.md."""
    output_dir = Path(config.output_dir)
    prepare_output_dir(output_dir, config.overwrite)
    files: dict[str, list[dict]] = {name: [] for name in _OUTPUT_FILES if name != "README.md"}
    question_types: dict[str, Counter] = {name: Counter() for name in files}
    number = 0
    for split, count in (("train", config.train_count), ("eval", config.eval_count)):
        sft_file, dpo_file = f"{split}.jsonl", f"dpo_{split}.jsonl"
        for index in range(count):
            number += 1
            spec, sft, dpo = make_chart(config.seed, split, index)
            image = f"images/{spec.kind}_{number:04d}.png"
            draw_chart(spec).save(output_dir / image, format="PNG", optimize=True)
            files[sft_file].append({"image": image, "question": sft.question, "answer": sft.answer})
            files[dpo_file].append(
                {
                    "image": image,
                    "question": dpo.question,
                    "chosen": dpo.answer,
                    "rejected": dpo.rejected,
                }
            )
            files["charts.jsonl"].append(
                {
                    "image": image,
                    "split": split,
                    **asdict(spec),
                    "sft": asdict(sft),
                    "dpo": asdict(dpo),
                }
            )
            question_types[sft_file][sft.type] += 1
            question_types[dpo_file][dpo.type] += 1
    for name, file_rows in files.items():
        write_jsonl(output_dir / name, file_rows)
    rows = {name: len(file_rows) for name, file_rows in files.items() if name != "charts.jsonl"}
    types = {name: dict(sorted(question_types[name].items())) for name in rows}
    image_bytes = sum(path.stat().st_size for path in (output_dir / "images").glob("*.png"))
    data_bytes = image_bytes + sum((output_dir / name).stat().st_size for name in files)
    readme = _readme(config, rows, types, number, image_bytes, data_bytes)
    (output_dir / "README.md").write_text(readme, encoding="utf-8", newline="\n")
    return DemoDataSummary(
        output_dir=output_dir,
        rows=rows,
        question_types=types,
        image_count=number,
        image_bytes=image_bytes,
        total_bytes=data_bytes + len(readme.encode()),
    )


def _readme(
    config: DemoDataConfig,
    rows: dict[str, int],
    question_types: dict[str, dict[str, int]],
    image_count: int,
    image_bytes: int,
    data_bytes: int,
) -> str:
    command = f"python scripts/make_demo_data.py --output-dir {config.output_dir}"
    if (config.train_count, config.eval_count, config.seed) != (300, 60, 0):
        command += (
            f" --train-count {config.train_count} --eval-count {config.eval_count}"
            f" --seed {config.seed}"
        )
    lines = [
        "# Demo data: synthetic chart QA",
        "",
        "Bar and line charts drawn with Pillow (`vlm_unsloth/data/demo_charts.py`), each with",
        "questions whose short exact answers need the image: the value printed for a bar/month,",
        "the label with the highest/lowest value, the colour of a bar, the number of bars/points.",
        "Made by",
        "",
        f"    {command}",
        "",
        "(the same seed gives byte-identical files with the same Pillow build).",
        "",
        "| file | rows | question types |",
        "|---|---|---|",
    ]
    for name, count in rows.items():
        types = ", ".join(f"{t} {n}" for t, n in question_types[name].items())
        lines.append(f"| `{name}` | {count} | {types} |")
    lines += [
        "",
        f"- `images/`: {image_count} palette PNGs, {SIZE_RANGE[0]}-{SIZE_RANGE[1]} px per side,",
        f"  {image_bytes / 1e6:.2f} MB; with the JSONL files {data_bytes / 1e6:.2f} MB in all.",
        "- `train.jsonl`, `eval.jsonl`: `{image, question, answer}`, image paths relative to the",
        "  JSONL file.",
        "- `dpo_train.jsonl`, `dpo_eval.jsonl`: `{image, question, chosen, rejected}` on the same",
        "  images with a different question type than the SFT row; `rejected` is a plausible",
        "  wrong answer of the same kind (another value, label or colour of that chart; the count",
        "  off by one).",
        "- `charts.jsonl`: each image's spec (kind, size, labels, values, colours) and both",
        "  questions with their type, the ground truth `tests/test_demo_data.py` checks against.",
        "",
    ]
    return "\n".join(lines)
