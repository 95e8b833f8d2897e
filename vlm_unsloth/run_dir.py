"""A run's output folder: protection, the resolved configuration, the loss curve, the summary.

OUTPUT/
  adapter/                LoRA adapter + processor (load with FastVisionModel or PEFT)
  checkpoint-N/           trainer checkpoints (for --resume)
  run_config.yaml         every option as resolved, plus package versions
  metrics.jsonl           one line per log: step, loss, lr, grad norm, samples/s, tokens/s, GiB
  loss_curve.png
  rejected_rows.jsonl     rows validation skipped, with reasons
  summary.json
  merged/                 with --save-merged: a merged 16-bit model
"""

from __future__ import annotations

import json
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from vlm_unsloth.errors import OutputDirError

RUN_MARKER = "run_config.yaml"
ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
METRICS_FILE = "metrics.jsonl"
REJECTED_FILE = "rejected_rows.jsonl"
SUMMARY_FILE = "summary.json"
LOSS_CURVE_FILE = "loss_curve.png"

_VERSIONED = (
    "vlm-unsloth",
    "torch",
    "transformers",
    "trl",
    "peft",
    "bitsandbytes",
    "unsloth",
    "datasets",
)


def prepare_output_dir(
    path: str | Path, *, overwrite: bool, resume: bool, check_only: bool = False
) -> Path:
    """Create or check `path`. A previous run is never replaced unless asked, and a folder that
    is not a vlm-unsloth run is never deleted, even with --overwrite. `check_only`: raise what
    would be refused, change nothing (every process of a multi-GPU run checks; one writes)."""
    output = Path(path).expanduser().resolve()
    if output.exists() and not output.is_dir():
        raise OutputDirError(
            f"{output} is a file", where="--output-dir", fix="choose a folder path"
        )
    has_content = output.is_dir() and any(output.iterdir())
    if resume:
        if last_checkpoint(output) is None:
            raise OutputDirError(
                f"nothing to resume in {output}: it has no checkpoint-N folder",
                where="--resume",
                fix="drop --resume to start a new run, or point --output-dir at an earlier run",
            )
        return output
    if has_content:
        if not overwrite:
            raise OutputDirError(
                f"{output} is not empty",
                where="--output-dir",
                fix="pass --resume to continue that run, --overwrite to replace it, or choose "
                "another --output-dir",
            )
        if not (output / RUN_MARKER).is_file():
            raise OutputDirError(
                f"{output} holds files but no {RUN_MARKER}, so it is not a vlm-unsloth run; "
                "--overwrite only replaces runs",
                where="--output-dir",
                fix="choose an empty or new folder",
            )
        if check_only:
            return output
        shutil.rmtree(output)
    if not check_only:
        output.mkdir(parents=True, exist_ok=True)
    return output


def last_checkpoint(output: Path) -> str | None:
    """The newest checkpoint-N folder of a run, or None."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output)) if output.is_dir() else None


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a run depends on (saved with its config)."""
    found = {}
    for name in _VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def save_run_config(output: Path, config: dict[str, Any]) -> Path:
    """Write run_config.yaml: the resolved options and the package versions."""
    import yaml

    path = output / RUN_MARKER
    document = {**config, "versions": package_versions()}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def update_resolved(output: Path, **values: Any) -> None:
    """Add settled values (e.g. the measured batch size) to the run's `resolved` section."""
    import yaml

    path = output / RUN_MARKER
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document.setdefault("resolved", {}).update(values)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def load_run_config(output: str | Path) -> dict[str, Any]:
    """The configuration a run saved (inference and evaluation read it back)."""
    import yaml

    path = Path(output) / RUN_MARKER
    if not path.is_file():
        raise OutputDirError(
            f"{path} not found", where="--adapter", fix="pass a training output folder"
        )
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def append_metrics(output: Path, record: dict[str, Any]) -> None:
    """One line of metrics.jsonl: a training log, or an event such as an out-of-memory split."""
    with (output / METRICS_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def read_metrics(output: Path) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl (empty before the first log)."""
    path = output / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def plot_loss_curve(output: Path) -> Path | None:
    """loss_curve.png from metrics.jsonl (training loss, and eval loss when there is one; GRPO's
    mean reward on a second axis: its loss says little, its reward is what rises)."""
    # A bare Figure needs no pyplot backend: no display on servers, and a notebook's inline
    # backend is left alone.
    from matplotlib.figure import Figure

    rows = read_metrics(output)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evaluation = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    if not train:
        return None
    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.subplots()
    axes.plot(*zip(*train, strict=True), label="train loss")
    if evaluation:
        axes.plot(*zip(*evaluation, strict=True), marker="o", label="eval loss")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left")
    reward = [(r["step"], r["reward"]) for r in rows if r.get("reward") is not None]
    if reward:
        right = axes.twinx()
        right.plot(*zip(*reward, strict=True), color="tab:green", label="reward (mean)")
        right.set_ylabel("reward")
        right.legend(loc="upper right")
    path = output / LOSS_CURVE_FILE
    figure.tight_layout()
    figure.savefig(path)
    return path


def write_summary(output: Path, summary: dict[str, Any]) -> Path:
    """Write summary.json."""
    path = output / SUMMARY_FILE
    path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return path
