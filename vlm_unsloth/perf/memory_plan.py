"""Predict peak GPU memory for a batch size, and pick the largest batch under a memory cap.

    python scripts/plan.py --model qwen2-vl-7b --max-side 768 --gpu-memory-gib 12
    python scripts/plan.py --model unsloth/Qwen2-VL-7B-Instruct --max-side 768   # the same

`--model` is a planner architecture (qwen2-vl-7b), a hub id the planner knows (every family
module's `sizes`, offline), or a model folder / cached hub id whose config.json has a known size.

A fit, per architecture and backend, of measured peaks: peak = fixed + per_token x batch x
tokens, where `fixed` holds weights, LoRA and optimizer state and the CUDA context, and
`per_token` the activations a token keeps (image tokens dominate a sample). Only calibrated pairs
are planned: a guess for an unmeasured model would be worse than no answer.

The points are in calibration/<family key>.json, each with the command or source that produced
it: peak reserved GPU memory (torch.cuda.max_memory_reserved) of SFT runs on an H100 80GB or an
H200, random-weight checkpoints of the real architectures, 4-bit weights, gradient checkpointing
on, LoRA r16 on every linear layer of both towers, images capped at 768 or 1024 px (each point
says); tokens = the longest sample of a batch (padding makes every sample that long);
cap_gib = the --gpu-memory-gib cap a point ran under, if any (see AT_THE_CAP).
scripts/bench.py adds points.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources

from vlm_unsloth.config import MAX_SIDE_RULE, MIN_MAX_SIDE
from vlm_unsloth.data.images import cap_longest_side
from vlm_unsloth.errors import ConfigError
from vlm_unsloth.families import (
    Family,
    default_family,
    describe_sizes,
    family_for_config,
    size_for_config,
    size_named,
)
from vlm_unsloth.models.checkpoints import local_config

SAFETY_MARGIN = 0.9
"""Plan to 90% of the cap: allocator fragmentation and rare long batches need headroom."""
USUAL_SIDES = (1024, 896, 768, 640, 512, 448, 384, 320, 256)
"""The --max-side values a plan that fits nothing suggests instead, largest first."""


@dataclass
class PlanArgs:
    """What to plan for."""

    model: str = field(
        default=default_family().default_model,
        metadata={
            "help": "An architecture (qwen2-vl-7b), a supported hub checkpoint "
            "(unsloth/Qwen2-VL-7B-Instruct, HuggingFaceTB/SmolVLM-Instruct, ...) or a model "
            "folder. Planned where calibrated (perf/calibration/). `vlm-unsloth models` lists "
            "every checkpoint."
        },
    )
    backend: str = field(
        default="unsloth", metadata={"help": "unsloth or hf.", "choices": ("unsloth", "hf")}
    )
    gpu_memory_gib: float = field(default=12.0, metadata={"help": "The card's memory."})
    max_side: int = field(default=768, metadata={"help": "Image cap (longest side, px)."})
    tokens_per_sample: int | None = field(
        default=None,
        metadata={
            "help": "Longest sample in tokens (default: a 4:3 image at --max-side plus 64 text "
            "tokens; scripts/inspect_data.py prints your data's maximum)."
        },
    )
    effective_batch_size: int = field(
        default=16, metadata={"help": "Samples per optimizer step to keep (batch x accum)."}
    )
    max_batch_size: int = field(default=32, metadata={"help": "Largest batch to consider."})

    def problems(self) -> list[str]:
        """Every value training would refuse (or that plans nothing), as training words them:
        a plan must only ever recommend a command that runs."""
        found = []
        if not (math.isfinite(self.gpu_memory_gib) and self.gpu_memory_gib > 0):
            found.append(f"--gpu-memory-gib {self.gpu_memory_gib:g}: must be a number of GiB > 0")
        if self.max_side < MIN_MAX_SIDE:
            found.append(f"--max-side {self.max_side}: {MAX_SIDE_RULE}")
        if self.tokens_per_sample is not None and self.tokens_per_sample < 1:
            found.append(f"--tokens-per-sample {self.tokens_per_sample}: must be >= 1")
        for flag, value in (
            ("--effective-batch-size", self.effective_batch_size),
            ("--max-batch-size", self.max_batch_size),
        ):
            if value < 1:
                found.append(f"{flag} {value}: must be >= 1")
        return found


@dataclass(frozen=True)
class MemoryFit:
    arch: str
    backend: str
    fixed_gib: float
    gib_per_token: float
    points: int

    def peak_gib(self, batch_size: int, tokens: int) -> float:
        return self.fixed_gib + self.gib_per_token * batch_size * tokens


@dataclass
class Plan:
    fit: MemoryFit
    tokens: int
    rows: list[tuple[int, float]]
    """(batch size, predicted peak GiB) for 1..max_batch_size."""
    batch_size: int | None
    grad_accum: int | None
    cap_gib: float


def calibration_points() -> list[dict]:
    """The measured peaks the planner fits (calibration/<family key>.json, one file a family)."""
    folder = resources.files("vlm_unsloth.perf").joinpath("calibration")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".json")), key=str)
    return [point for file in files for point in json.loads(file.read_text())["points"]]


AT_THE_CAP = 0.95
"""A peak measured under a --gpu-memory-gib cap above this share of it is a lower bound, not a
measurement: near the cap the allocator hands cached blocks back and retries, so the reserved
peak stops growing with the load (Qwen2-VL-7B on hf under 12 GiB: 11.44 GiB at 2 x 776 tokens,
11.49 at 2 x 1412). Such points stay on file, with their source, and out of the fit."""


def measures_the_load(point: dict) -> bool:
    """Whether the point's peak grew with its load (it did not run into its cap_gib)."""
    return point["peak_gib"] < AT_THE_CAP * point.get("cap_gib", math.inf)


def _fittable(points: list[dict]) -> bool:
    """A line needs two different batch x tokens (a single point, kept for later, is not one)."""
    return len({p["batch_size"] * p["tokens"] for p in points}) >= 2


def fit_memory(arch: str, backend: str, *, label: str | None = None) -> MemoryFit:
    """Least-squares line through the measured peaks of `arch` on `backend` (`label`: how the
    user named the model, for the error)."""
    by_pair: dict[tuple[str, str], list[dict]] = {}
    for point in filter(measures_the_load, calibration_points()):
        by_pair.setdefault((point["arch"], point["backend"]), []).append(point)
    points = by_pair.get((arch, backend), [])
    if not _fittable(points):
        calibrated = [f"{a} on {b}" for (a, b), pair in sorted(by_pair.items()) if _fittable(pair)]
        raise ConfigError(
            f"no memory calibration for {label or arch} on the {backend} backend",
            where="--model/--backend",
            fix=f"calibrated: {', '.join(calibrated)}; measure more with scripts/bench.py",
        )
    return fit_line(arch, backend, points)


def fit_line(arch: str, backend: str, points: list[dict]) -> MemoryFit:
    """Least-squares line peak = fixed + per_token x batch x tokens through `points` (at least
    two different batch x tokens)."""
    xs = [p["batch_size"] * p["tokens"] for p in points]
    ys = [p["peak_gib"] for p in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    return MemoryFit(arch, backend, mean_y - slope * mean_x, slope, len(points))


def planner_architecture(model: str) -> str:
    """The planner's architecture for `--model` (see the module docstring); ConfigError naming
    every model it knows otherwise."""
    known = size_named(model)
    if known is not None:
        return known[1].name
    config = local_config(model)
    if config is None:
        raise ConfigError(
            f"unknown model {model!r} (not a planner architecture, a known hub checkpoint, a "
            "model folder, or a hub id in the local Hugging Face cache)",
            where="--model",
            fix=f"the planner knows: {describe_sizes()}",
        )
    family = family_for_config(config, where="--model")
    size = size_for_config(family, config)
    if size is None:
        raise ConfigError(
            f"{model} is a {family.key} model of a size the planner does not know",
            where="--model",
            fix=f"the planner knows: {describe_sizes()}",
        )
    return size.name


def default_tokens(arch: str, max_side: int) -> int:
    """Tokens of a 4:3 image capped at `max_side` (as the family caps it, counted with the real
    processor's parameters) plus 64 text tokens (prompt and answer)."""
    family, size = size_named(arch)
    scheme = family.image_scheme
    cap = scheme.cap(max_side, **size.image_settings)
    width, height = cap_longest_side(max_side, round(max_side * 3 / 4), cap)
    count = scheme.count(width, height, **size.image_settings)
    if count.text_tokens == 1:  # Mllama: the image is one prompt position, cross-attended
        raise ConfigError(
            f"the tokens of a {arch} sample do not measure its image",
            where="--tokens-per-sample",
            fix="pass --tokens-per-sample",
        )
    return count.text_tokens + 64


def plan_memory(args: PlanArgs) -> Plan:
    """Predicted peak per batch size, and the largest batch under the cap."""
    problems = args.problems()  # parse_args checked them; a notebook's PlanArgs too
    if problems:
        raise ConfigError("; ".join(problems), where="options")
    arch = planner_architecture(args.model)
    label = args.model if args.model == arch else f"{args.model} ({arch})"
    fit = fit_memory(arch, args.backend, label=label)
    tokens = args.tokens_per_sample or default_tokens(arch, args.max_side)
    rows = [(b, fit.peak_gib(b, tokens)) for b in range(1, args.max_batch_size + 1)]
    cap = args.gpu_memory_gib * SAFETY_MARGIN
    fitting = [b for b, peak in rows if peak <= cap and args.effective_batch_size % b == 0]
    batch = max(fitting) if fitting else None
    accum = args.effective_batch_size // batch if batch else None
    return Plan(fit, tokens, rows, batch, accum, cap)


def print_plan(plan: Plan, args: PlanArgs, console) -> None:
    """Print the plan as a table with its recommendation."""
    from rich.table import Table

    table = Table(
        title=f"{args.model} on {args.backend}: predicted peak at {plan.tokens} tokens/sample "
        f"(max side {args.max_side}); cap {args.gpu_memory_gib:g} GiB, planning to "
        f"{plan.cap_gib:.1f}"
    )
    table.add_column("batch", justify="right")
    table.add_column("peak GiB", justify="right")
    table.add_column("fits", justify="center")
    for batch, peak in plan.rows:
        table.add_row(str(batch), f"{peak:.2f}", "yes" if peak <= plan.cap_gib else "no")
    console.print(table)
    console.print(
        f"fit over {plan.fit.points} measured points (4-bit weights, gradient checkpointing, "
        f"LoRA r16 on every linear layer): {plan.fit.fixed_gib:.2f} GiB fixed + "
        f"{plan.fit.gib_per_token * 2**20:.3f} KiB per token"
    )
    if plan.batch_size is None:
        console.print(f"[red]{nothing_fits(plan, args)}[/]", soft_wrap=True)  # one line
    else:
        console.print(
            f"recommended: --max-side {args.max_side} --batch-size {plan.batch_size} "
            f"--grad-accum {plan.grad_accum} (effective {args.effective_batch_size})"
        )


def nothing_fits(plan: Plan, args: PlanArgs) -> str:
    """Why no batch fits the card, and the way out: a lower --max-side where that leaves room
    for a batch of 1 (the largest such of the usual sides), else the card a batch of 1 needs."""
    fit = plan.fit
    need = fit.peak_gib(1, plan.tokens) / SAFETY_MARGIN
    line = (
        f"nothing fits {args.gpu_memory_gib:g} GiB at {plan.tokens} tokens/sample: a batch of 1 "
        f"needs a card of about {need:.1f} GiB"
    )
    if fit.fixed_gib > plan.cap_gib:
        return line + f" (weights, LoRA and optimizer state alone: {fit.fixed_gib:.1f} GiB)"
    if args.tokens_per_sample is None:  # the tokens follow --max-side
        lower = [side for side in USUAL_SIDES if side < args.max_side]
        fitting = [s for s in lower if fit.peak_gib(1, default_tokens(fit.arch, s)) <= plan.cap_gib]
        if fitting:
            return line + f", or --max-side {fitting[0]} (plan again with it)"
    return line


def architecture_of(family: Family, model_config) -> str | None:
    """The real architecture (e.g. qwen2-vl-7b) a loaded model has, matched on its family and
    language-model shape; None for any other size (e.g. the tiny test models)."""
    size = size_for_config(family, model_config)
    return None if size is None else size.name


def covers(quantization: str, gradient_checkpointing: bool) -> bool:
    """Whether the calibration speaks for this setup. Every measured point used 4-bit weights
    and gradient checkpointing; without checkpointing a batch of 8 at 768 px kept 67.5 GiB
    where the fit says 9.3, so other setups get no prediction rather than a wrong one."""
    return quantization == "4bit" and gradient_checkpointing


def calibrated_fit(arch: str | None, backend: str) -> MemoryFit | None:
    """`fit_memory`, or None where `arch` (None: no planner name) has no calibration on
    `backend`: for callers that plan when they can and carry on when they cannot."""
    if arch is None:
        return None
    try:
        return fit_memory(arch, backend)
    except ConfigError:
        return None


def planned_batch_size(
    arch: str | None, backend: str, cap_gib: float, tokens: int, candidates: list[int]
) -> int | None:
    """The largest of `candidates` predicted to fit `cap_gib` at `tokens` per sample; None when
    `arch` has no calibration on `backend` (or nothing is predicted to fit)."""
    fit = calibrated_fit(arch, backend)
    if fit is None:
        return None
    fitting = [b for b in candidates if fit.peak_gib(b, tokens) <= cap_gib * SAFETY_MARGIN]
    return max(fitting) if fitting else None
