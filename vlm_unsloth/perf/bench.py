"""Benchmark: backends x batch settings on the same data, each run in its own process.

    python scripts/bench.py --model qwen2-vl-7b --backends unsloth hf --settings 2x4 8x1 16x1
    python scripts/bench.py --model qwen2-vl-7b --settings hf:2x4 unsloth:auto \
        --gpu-memory-gib 12 --image-side 1280 --max-side 1024
    python scripts/bench.py --command train-grpo --model qwen2.5-vl-7b --settings 2x2 \
        --gpu-memory-gib 12 --train-flags='--num-generations 4 --max-completion-length 64'

Every run is the real `train-sft` (or `--command train-grpo`) command (a fresh process, so one
backend's patches or memory never leak into the next) for `--warmup-steps + --steps` optimizer
steps; only the steps after the warm-up are measured (Unsloth compiles on the first). `--model`
may name a real architecture (`models/random_weights.py`: qwen2-vl-7b, qwen3-vl-8b,
gemma-3-4b, smolvlm-instruct, pixtral-12b, ...): a random-weight checkpoint of that size is
built once, since speed and memory do not depend on trained values.

A setting is BATCHxACCUM or `auto` (`--batch-size auto --effective-batch-size
--auto-effective-batch`), optionally for one backend only (`hf:2x4`). `seed:BATCHxACCUM` (SFT
only; `seed:2x4` is the course's) runs the seed recipe once, whatever --backends says: TRL's
SFTTrainer + bitsandbytes 4-bit + PEFT with TRL's collator and no workers
(`train/seed_recipe.py`), the baseline a user compares our speed with; --train-flags do not
reach it. `--image-side` upscales a
copy of the dataset's images to that longest side first, so that --max-side 768 and 1024 differ
(the demo charts are at most 480 px).

Writes a JSON file and prints a table: the batch used, samples/s, tokens/s, seconds per step,
for GRPO the step's phases (sample, reward and train seconds a step), the sampling speed
(generated tokens/s: answer tokens per second of sampling) and the answer tokens per second of
step time (what today's main calls generated tokens/s: compare that column across branches),
peak reserved GiB, the memory planner's prediction for that batch (where the model is
calibrated), MFU (SFT only: 6 x parameters x tokens/s over the GPU's dense bf16 peak), the share
of step time spent waiting for data, and the ratio to the baseline row. For train-grpo a
setting's batch counts sampled answers (2x2 with 4 generations: one prompt's 4 answers a step,
trained 2 at a time). Each run's output goes to WORK_DIR/BACKEND-SETTING.log as it runs, and
`--run-timeout` stops a run that takes longer (its row names the step it reached): one hung run
(say, a first step compiling for minutes) does not cost the rest. A benchmark script, not a
timed test.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vlm_unsloth import run_dir
from vlm_unsloth.data.splits import DEMO_DIR
from vlm_unsloth.errors import BenchmarkError, ConfigError
from vlm_unsloth.models.loading import resolve_model
from vlm_unsloth.models.random_weights import REAL_ARCHITECTURES
from vlm_unsloth.run_dir import LISTED_AT_MOST

# Dense bf16 (fp16 for T4) tensor-core peaks from the vendors' data sheets, FLOP/s.
PEAK_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "T4": 65e12,
}


@dataclass
class BenchArgs:
    """What to benchmark."""

    model: str = field(
        default="qwen2-vl-7b",
        metadata={
            "help": "A real architecture (random weights, built once into --work-dir: "
            f"{', '.join(REAL_ARCHITECTURES)}), a model folder, a hub id or tiny-*."
        },
    )
    command: str = field(
        default="train-sft",
        metadata={
            "help": "The training command every run is: train-sft, or train-grpo (its --rewards, "
            "--num-generations, --max-completion-length ... through --train-flags).",
            "choices": ("train-sft", "train-grpo"),
        },
    )
    backends: list[str] = field(
        default_factory=lambda: ["unsloth", "hf"], metadata={"help": "Backends to run."}
    )
    settings: list[str] = field(
        default_factory=lambda: ["2x4", "8x1", "16x1"],
        metadata={
            "help": "Per-device batch x gradient accumulation (2x4), or auto; prefix a backend "
            "to run it on that one only (hf:2x4 unsloth:auto); seed:2x4 runs the course's seed "
            "recipe (TRL SFTTrainer + bitsandbytes 4-bit + PEFT, TRL's collator) once."
        },
    )
    auto_effective_batch: int = field(
        default=16, metadata={"help": "Effective batch of the auto settings."}
    )
    image_side: int | None = field(
        default=None,
        metadata={"help": "Upscale a copy of the dataset's images to this longest side first."},
    )
    baseline: str = field(
        default="hf:2x4", metadata={"help": "The row other rows' speed is compared with."}
    )
    dataset: str = field(
        default=str(DEMO_DIR / "train.jsonl"),
        metadata={"help": "Training data (same for every run)."},
    )
    max_side: int = field(default=768, metadata={"help": "Image cap, as --max-side."})
    gpu_memory_gib: float | None = field(
        default=None, metadata={"help": "Cap every run's GPU memory, as --gpu-memory-gib."}
    )
    train_flags: str = field(
        default="",
        metadata={
            "help": "More training flags for every run, as one string after '=': "
            "--train-flags='--group-by-length --dataloader-num-workers 0'."
        },
    )
    steps: int = field(default=10, metadata={"help": "Optimizer steps measured per run."})
    warmup_steps: int = field(
        default=3, metadata={"help": "Optimizer steps run first and not measured."}
    )
    work_dir: str = field(
        default="outputs/bench", metadata={"help": "Run folders and built checkpoints."}
    )
    output: str = field(default="outputs/bench.json", metadata={"help": "The results file."})
    run_timeout: int | None = field(
        default=None,
        metadata={
            "help": "Stop a run after this many seconds (loading and compiling included): its "
            "row says so with the step it reached, and the next run starts."
        },
    )

    def problems(self) -> list[str]:
        found = [
            f"--settings {s}: use BATCHxACCUM (e.g. 2x4) or auto, optionally backend:setting"
            for s in self.settings
            if _bad(s)
        ]
        if self.steps < 1 or self.warmup_steps < 0:
            found.append("--steps must be >= 1 and --warmup-steps >= 0")
        if self.run_timeout is not None and self.run_timeout < 1:
            found.append(f"--run-timeout {self.run_timeout}: must be >= 1 second")
        unknown = [b for b in self.backends if b not in ("unsloth", "hf")]
        if unknown:
            found.append(f"--backends {' '.join(unknown)}: use unsloth and/or hf")
        seeds = [s for s in self.settings if s.startswith(f"{SEED}:") and not _bad(s)]
        if seeds and self.command != "train-sft":
            found.append(
                f"--settings {' '.join(seeds)}: the seed recipe is SFT; drop it or use "
                "--command train-sft"
            )
        ours = ("", SEED, *self.backends)  # a setting without a prefix runs on every backend
        elsewhere = [s for s in self.settings if s.rpartition(":")[0] not in ours and not _bad(s)]
        if elsewhere:  # it would be skipped without a word: most likely a typo
            found.append(
                f"--settings {' '.join(elsewhere)}: its backend is not in --backends "
                f"{' '.join(self.backends)}, so it would never run (add it there, or drop the "
                "prefix)"
            )
        if not found and not runs(self):
            found.append("--backends/--settings: no run to make")
        return found


SEED = "seed"
"""The prefix of a seed-recipe setting (seed:2x4) and the backend column of its row."""


def _bad(setting: str) -> bool:
    backend, _, setting = setting.rpartition(":")
    if backend not in ("", "unsloth", "hf", SEED):
        return True
    if setting == "auto":
        return backend == SEED  # the recipe's batch is fixed
    parts = setting.split("x")
    return len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts)


def runs(args: BenchArgs) -> list[tuple[str, str]]:
    """(backend, setting) pairs in order: the seed recipe's first, then each setting for every
    backend unless prefixed."""
    pairs = [(SEED, s.partition(":")[2]) for s in args.settings if s.startswith(f"{SEED}:")]
    for backend in args.backends:
        for entry in args.settings:
            only, _, setting = entry.rpartition(":")
            if only in ("", backend):
                pairs.append((backend, setting))
    return pairs


@dataclass
class BenchRow:
    backend: str
    setting: str
    batch: str | None = None
    """The batch x accumulation the run used (what auto settled on)."""
    samples_per_second: float | None = None
    tokens_per_second: float | None = None
    seconds_per_step: float | None = None
    sample_seconds: float | None = None
    """GRPO: seconds a step spent sampling answers (0 in a step that reused its batch)."""
    reward_seconds: float | None = None
    train_seconds: float | None = None
    generated_tokens_per_second: float | None = None
    """GRPO: answer tokens per second of sampling."""
    answer_tokens_per_second: float | None = None
    """GRPO: answer tokens per second of step time (main's `generated tok/s` before the phases
    were measured: the column to compare across branches)."""
    peak_reserved_gib: float | None = None
    planned_gib: float | None = None
    """The memory planner's prediction for this batch at the data's longest sample."""
    mfu: float | None = None
    data_wait_fraction: float | None = None
    ratio_to_baseline: float | None = None
    error: str | None = None
    command: str = ""


def peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of a known GPU (by name) for MFU, or None."""
    for key, flops in PEAK_FLOPS.items():
        if key in device_name:
            return flops
    return None


def run_benchmark(args: BenchArgs, *, console=None) -> list[BenchRow]:
    """Run every backend x setting, write `args.output`, print the table; return the rows.

    The options, the model and the data are checked before the first run starts (one line each,
    not one failed row per run). When no run measures anything, the table and the JSON are still
    written, then BenchmarkError says why: a benchmark of nothing is no success."""
    problems = args.problems()
    if problems:
        raise ConfigError("; ".join(problems), where="bench options")
    if not Path(args.dataset).expanduser().is_file():
        raise ConfigError(
            f"no such file {args.dataset}", where="--dataset", fix="pass a JSONL training file"
        )
    work = Path(args.work_dir)
    model = _model_path(args.model, work)
    # The family from its config.json, no weights: a wrong name fails here. The seed recipe
    # gets the checkpoint's path (it knows no tiny-* names).
    checkpoint = resolve_model(model).path
    dataset = args.dataset
    if args.image_side:
        dataset = str(upscaled_copy(Path(args.dataset), args.image_side, work))
    rows = [
        _run_one(args, checkpoint if backend == SEED else model, dataset, backend, setting, work)
        for backend, setting in runs(args)
    ]
    _add_ratios(rows, args.baseline)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps({"args": asdict(args), "rows": [asdict(r) for r in rows]}, indent=2)
    )
    if console is not None:
        title = f"bench {args.command}: {args.model}, max side {args.max_side}"
        console.print(results_table(rows, title=title, grpo=args.command == "train-grpo"))
    if all(row.error for row in rows):
        failures = "; ".join(f"{r.backend} {r.setting}: {r.error}" for r in rows[:LISTED_AT_MOST])
        more = f" and {len(rows) - LISTED_AT_MOST} more" if len(rows) > LISTED_AT_MOST else ""
        raise BenchmarkError(
            f"every run failed, nothing was measured ({failures}{more})",
            where=str(output),
            fix=f"read the runs' logs in {work} (BACKEND-SETTING.log)",
        )
    return rows


def _model_path(model: str, work: Path) -> str:
    from vlm_unsloth.models.random_weights import build_random_checkpoint

    if model in REAL_ARCHITECTURES:
        return str(build_random_checkpoint(model, work / f"random-{model}"))
    return model


def upscaled_copy(dataset: Path, side: int, work: Path) -> Path:
    """A copy of a JSONL dataset whose images are upscaled (aspect kept) to `side` px on their
    longest side, as JPEG (photo-like decode cost); returns the new JSONL file."""
    from PIL import Image

    folder = work / f"data-{side}px"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in dataset.read_text().splitlines() if line.strip()]
    for row in rows:
        source = dataset.parent / row["image"]
        target = folder / "images" / f"{Path(row['image']).stem}.jpg"
        if not target.exists():
            with Image.open(source) as image:
                scale = side / max(image.size)
                size = (round(image.width * scale), round(image.height * scale))
                image.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(target, quality=90)
        row["image"] = f"images/{target.name}"
    output = folder / dataset.name
    output.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return output


def _run_one(
    args: BenchArgs, model: str, dataset: str, backend: str, setting: str, work: Path
) -> BenchRow:
    if setting == "auto":
        batch_flags = ["--batch-size", "auto", "--effective-batch-size"]
        batch_flags.append(str(args.auto_effective_batch))
    else:
        batch, accum = setting.split("x")
        batch_flags = ["--batch-size", batch, "--grad-accum", accum]
    output = work / f"{backend}-{setting}"
    steps = str(args.warmup_steps + args.steps)
    if backend == SEED:
        command = [
            sys.executable, "-m", "vlm_unsloth.train.seed_recipe", "--model", model,
            "--dataset", dataset, "--max-side", str(args.max_side), *batch_flags,
            "--max-steps", steps, "--output-dir", str(output),
        ]  # fmt: skip
    else:
        command = [
            sys.executable, "-m", "vlm_unsloth.cli", args.command, "--model", model,
            "--backend", backend, "--dataset", dataset, "--max-side", str(args.max_side),
            *batch_flags,
            "--max-steps", steps, "--logging-steps", "1",
            "--save-steps", "1000000", "--output-dir", str(output), "--overwrite",
        ]  # fmt: skip
        command += shlex.split(args.train_flags)
    if args.gpu_memory_gib is not None:
        command += ["--gpu-memory-gib", str(args.gpu_memory_gib)]
    row = BenchRow(backend=backend, setting=setting, command=" ".join(command[1:]))
    # The run's output goes to its log as it runs: a run that hangs or is stopped leaves it.
    work.mkdir(parents=True, exist_ok=True)
    log = work / f"{backend}-{setting}.log"
    with log.open("w") as handle:
        try:
            returncode = subprocess.run(
                command, stdout=handle, stderr=subprocess.STDOUT, timeout=args.run_timeout
            ).returncode
        except subprocess.TimeoutExpired:  # the run was killed
            steps = _steps_logged(output)
            total = args.warmup_steps + args.steps
            row.error = f"timed out after {args.run_timeout} s at step {steps} of {total}"
            return row
    if returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-30:] or ["failed"]
        oom = any("out of memory" in line.lower() for line in tail)
        row.error = "out of memory" if oom else tail[-1]
        return row
    measured = [
        log
        for log in run_dir.read_metrics(output)
        if "loss" in log and log["step"] > args.warmup_steps and "samples_per_second" in log
    ]
    summary = json.loads((output / run_dir.SUMMARY_FILE).read_text())
    row.batch = f"{summary['batch_size']}x{summary['grad_accum']}"
    row.planned_gib = summary.get("planned_peak_gib")
    row.samples_per_second = _mean(measured, "samples_per_second")
    row.tokens_per_second = _mean(measured, "tokens_per_second")
    row.seconds_per_step = _mean(measured, "seconds_per_step")
    for phase in ("sample_seconds", "reward_seconds", "train_seconds"):
        setattr(row, phase, _mean(measured, phase))
    row.generated_tokens_per_second = _mean(measured, "generated_tokens_per_second")
    row.answer_tokens_per_second = answer_tokens_per_second(
        measured, summary["batch_size"] * summary["grad_accum"]
    )
    row.peak_reserved_gib = summary.get("peak_gpu_memory_gib")
    row.data_wait_fraction = _mean(measured, "data_wait_fraction")
    flops = peak_flops(summary.get("device_name", ""))
    if flops and args.command == "train-sft":  # GRPO's steps also sample: not 6 x N x tokens
        row.mfu = 6 * summary["parameters"]["total"] * row.tokens_per_second / flops
    return row


def answer_tokens_per_second(logs: list[dict], answers_per_step: int) -> float | None:
    """GRPO's answer tokens over the steps' wall time. From `generated_tokens` (tokens sampled
    a step, logged since the phases are); for runs of code that logged only TRL's
    `completions/mean_length`, one generation batch of `answers_per_step` a step."""
    seconds = sum(log.get("seconds_per_step") or 0 for log in logs)
    if not seconds:
        return None
    if any("generated_tokens" in log for log in logs):
        tokens = sum(log.get("generated_tokens") or 0 for log in logs)
    elif any("completions/mean_length" in log for log in logs):
        lengths = [log.get("completions/mean_length") or 0 for log in logs]
        tokens = answers_per_step * sum(lengths)
    else:
        return None
    return tokens / seconds


def _steps_logged(output: Path) -> int:
    """Training steps a killed run logged (its last line may be cut short: not parsed)."""
    metrics = output / run_dir.METRICS_FILE
    if not metrics.is_file():
        return 0
    return sum('"loss"' in line for line in metrics.read_text(errors="replace").splitlines())


def _mean(logs: list[dict], key: str) -> float | None:
    values = [log[key] for log in logs if log.get(key) is not None]
    return sum(values) / len(values) if values else None


def _add_ratios(rows: list[BenchRow], baseline: str) -> None:
    backend, _, setting = baseline.partition(":")
    base = next((r for r in rows if (r.backend, r.setting) == (backend, setting)), None)
    if base is None or not base.samples_per_second:
        return
    for row in rows:
        if row.samples_per_second:
            row.ratio_to_baseline = row.samples_per_second / base.samples_per_second


def results_table(rows: list[BenchRow], *, title: str, grpo: bool = False):
    """The rich table of bench rows (GRPO's: its phases and sampling speeds instead of the
    planner's prediction and MFU, which count SFT's work)."""
    from rich.table import Table

    def number(value, template):
        return template.format(value) if value is not None else "-"

    columns = {
        "backend": lambda r: r.backend,
        "setting": lambda r: r.setting,
        "batch": lambda r: r.batch or "-",
        "samples/s": lambda r: r.error or number(r.samples_per_second, "{:.2f}"),
        "tokens/s": lambda r: number(r.tokens_per_second, "{:.0f}"),
        "s/step": lambda r: number(r.seconds_per_step, "{:.2f}"),
    }
    if grpo:
        columns.update({
            "sample s": lambda r: number(r.sample_seconds, "{:.2f}"),
            "reward s": lambda r: number(r.reward_seconds, "{:.2f}"),
            "train s": lambda r: number(r.train_seconds, "{:.2f}"),
            "generated tok/s (sampling)": lambda r: number(r.generated_tokens_per_second, "{:.0f}"),
            "answer tok/s (step)": lambda r: number(r.answer_tokens_per_second, "{:.0f}"),
        })  # fmt: skip
    else:
        columns.update({
            "planned": lambda r: number(r.planned_gib, "{:.2f}"),
            "MFU": lambda r: number(r.mfu, "{:.1%}"),
        })  # fmt: skip
    columns.update({
        "peak GiB": lambda r: number(r.peak_reserved_gib, "{:.2f}"),
        "data wait": lambda r: number(r.data_wait_fraction, "{:.1%}"),
        "vs base": lambda r: number(r.ratio_to_baseline, "{:.2f}x"),
    })  # fmt: skip
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(cell(row) for cell in columns.values()))
    return table
