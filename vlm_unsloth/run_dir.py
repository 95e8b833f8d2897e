"""A run's output folder: what is in it, which folder --overwrite may replace, and how.

OUTPUT/
  vlm_unsloth_run.json    the manifest: the run's id and job, and the files the run wrote
  adapter/                LoRA adapter + processor (load with FastVisionModel or PEFT)
  checkpoint-N/           trainer checkpoints (for --resume)
  run_config.yaml         every option as resolved, plus package versions
  metrics.jsonl           one line per log: step, loss, lr, grad norm, samples/s, tokens/s, GiB
  loss_curve.png
  rejected_rows.jsonl     rows validation skipped, with reasons
  summary.json
  README.md               TRL's model card, written with each checkpoint
  merged/                 with --save-merged: a merged 16-bit model
  eval/                   with --eval-at-end or evaluate.py: an evaluation (its own manifest)

How --overwrite keeps the user's work:
- Only our own folders are replaced. A run_config.yaml proves nothing (anyone can write one): a
  folder is a vlm-unsloth run when it holds the manifest, which only `start_run` writes. Files
  the manifest does not list (the user's notes, a file dropped into adapter/) are never deleted:
  --overwrite refuses and names them. A folder from before manifests is refused too.
- Nothing is written before everything that can be checked is: options, model, data,
  validation and batch size come first, and a run claims its folder (`start_run`) right before
  it trains. A run that fails before that leaves the folder as it found it.
- Even then the earlier run is only set aside, as the sibling OUTPUT.previous, and deleted
  (`discard_previous_run`) once the new run has saved a checkpoint; a new run that fails before
  saving anything removes its own files and puts the earlier run back (`abandon_run`). The new
  manifest names the run it replaces, so a folder of the user's that happens to be called
  OUTPUT.previous is never touched. If the process is killed in between, OUTPUT.previous stays
  and the next --overwrite refuses to start until the user keeps one of the two.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from vlm_unsloth import output_access
from vlm_unsloth.errors import OutputDirError
from vlm_unsloth.yaml_files import read_yaml

MANIFEST_FILE = "vlm_unsloth_run.json"
RUN_MARKER = "run_config.yaml"
"""The resolved configuration: what inference and evaluation read back from a run folder."""
ADAPTER_DIR = "adapter"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
MERGED_DIR = "merged"
METRICS_FILE = "metrics.jsonl"
REJECTED_FILE = "rejected_rows.jsonl"
SUMMARY_FILE = "summary.json"
LOSS_CURVE_FILE = "loss_curve.png"
MODEL_CARD_FILE = "README.md"
PREVIOUS_SUFFIX = ".previous"
PARTIAL_CHECKPOINT_DIR = "partial-checkpoint"
"""Where the trainer writes a checkpoint before it becomes checkpoint-N (train/checkpoints.py)."""
CHECKPOINT_NEEDS = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
"""Files every complete checkpoint holds (besides its weights and rng_state*.pth)."""
_CHECKPOINT_NAME = re.compile(r"checkpoint-\d+")
TRAINING_JOBS = ("SFT", "DPO", "GRPO")
LISTED_AT_MOST = 5
"""Files named in a refusal (then "and N more")."""

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


def check_output_dir(
    path: str | Path, *, overwrite: bool, jobs: Iterable[str] = TRAINING_JOBS, what: str = "run"
) -> Path:
    """`path` for a new run (or evaluation), checked by every process; nothing is written. An
    empty or new folder is fine. One with files only with --overwrite, only when it is a
    vlm-unsloth folder of one of `jobs` (its manifest), and only when it holds nothing but files
    that folder's runs wrote."""
    output = Path(path).expanduser().resolve()
    if output.exists() and not output.is_dir():
        raise OutputDirError(
            f"{output} is a file", where="--output-dir", fix="choose a folder path"
        )
    if not (output.is_dir() and any(output.iterdir())):
        return output
    if not overwrite:
        raise OutputDirError(
            f"{output} is not empty",
            where="--output-dir",
            fix="pass --resume to continue that run, --overwrite to replace it, or choose "
            "another --output-dir",
        )
    previous = previous_run_dir(output)
    if previous.exists():  # --overwrite would set the earlier run aside there
        raise OutputDirError(
            f"{previous} exists: an earlier {what} that an --overwrite set aside, whose "
            f"replacement stopped before saving anything (or a folder of yours)",
            where="--overwrite",
            fix=f"keep one of the two: delete {output} and rename {previous} back to "
            f"{output.name}, or move {previous} away",
        )
    unwritable = output_access.why_unwritable(output.parent)
    if unwritable is not None:  # --overwrite would rename the earlier run there
        raise OutputDirError(
            f"it would set the earlier {what} aside as {previous}, but {unwritable}",
            where="--overwrite",
            fix="empty the folder yourself, or choose another --output-dir",
        )
    manifest = read_manifest(output)
    if manifest is None or manifest.get("job") not in tuple(jobs):
        raise OutputDirError(
            f"{output} holds files but no {MANIFEST_FILE} of a {what}, so it is not a vlm-unsloth "
            f"{what} (or one made before runs recorded their files); --overwrite only replaces "
            f"those",
            where="--output-dir",
            fix="choose an empty or new folder (or delete that one yourself)",
        )
    # An evaluation writing eval/ right now.
    output_access.refuse_held_locks_under(output, where="--overwrite")
    foreign = files_not_written_by_runs(output)
    if foreign:
        names = [str(p.relative_to(output)) for p in foreign[:LISTED_AT_MOST]]
        more = f" and {len(foreign) - LISTED_AT_MOST} more" if len(foreign) > LISTED_AT_MOST else ""
        raise OutputDirError(
            f"{output} holds files no {what} wrote, which --overwrite never deletes: "
            f"{', '.join(names)}{more}",
            where="--overwrite",
            fix="move them out of the folder, or choose another --output-dir",
        )
    return output


def previous_run_dir(output: Path) -> Path:
    """Where `start_run` sets an earlier run aside while a new one replaces it."""
    return output.with_name(output.name + PREVIOUS_SUFFIX)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest (None: not a vlm-unsloth folder, or one from before manifests)."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:
        raise OutputDirError(
            f"{path} cannot be read ({error})",
            where="--output-dir",
            fix="delete the folder yourself, or choose another --output-dir",
        ) from error


def start_run(output: Path, *, job: str, files: Iterable[str] = ()) -> None:
    """Make `output` the folder of a new run (or evaluation) of `job`, after every check
    (`check_output_dir`); the main process calls it. An earlier run in it is set aside (see the
    module docstring); the manifest lists `files` (relative paths; "name/" for a whole folder)."""
    manifest = {
        "run_id": uuid.uuid4().hex,
        "job": job,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": sorted({MANIFEST_FILE, *files}),
    }
    if output.is_dir() and any(output.iterdir()):
        # Named in the new manifest: only that run is ever deleted or put back from
        # OUTPUT.previous, never a folder the user happens to have given that name.
        manifest["replaces"] = read_manifest(output)["run_id"]
        output.rename(previous_run_dir(output))
    output.mkdir(parents=True, exist_ok=True)
    _write_manifest(output, manifest)


def record_files(output: Path, paths: Iterable[str | Path]) -> None:
    """Add files the run wrote (paths, or names relative to `output`; "name/" for a whole
    folder) to its manifest. A run from before manifests has none and gets none."""
    manifest = read_manifest(output)
    if manifest is None:
        return
    names = set()
    for path in paths:
        names.add(Path(path).relative_to(output).as_posix() if Path(path).is_absolute() else path)
    manifest["files"] = sorted(set(manifest["files"]) | names)
    _write_manifest(output, manifest)


def files_in(folder: Path) -> list[Path]:
    """Every file under `folder` (none when it does not exist)."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def files_not_written_by_runs(folder: Path) -> list[Path]:
    """The files under `folder` that its manifest does not list. A sub-folder with a manifest
    of its own (an evaluation in eval/) answers for the files under it. The lock file of an
    evaluation killed with kill -9 (`.eval.lock`, output_access.py) is the runs' too."""
    listed: dict[Path, set[str]] = {}
    locks = set(output_access.lock_files_under(folder))
    found = []
    for path in sorted(folder.rglob("*")):
        if (path.is_dir() and not path.is_symlink()) or path in locks:
            continue
        owner = next(p for p in path.parents if p == folder or (p / MANIFEST_FILE).is_file())
        if owner not in listed:
            listed[owner] = set((read_manifest(owner) or {"files": []})["files"])
        if not _listed(path.relative_to(owner).as_posix(), listed[owner]):
            found.append(path)
    return found


def _listed(name: str, listed: set[str]) -> bool:
    """Whether a manifest's `listed` names cover `name`: the file, a folder holding it
    ("folder/"), or the file the temporary `.NAME.tmp` of `_write_atomically` was to become."""
    parent, _, leaf = name.rpartition("/")
    if leaf.startswith(".") and leaf.endswith(".tmp"):
        name = f"{parent}/{leaf[1:-4]}" if parent else leaf[1:-4]
    return name in listed or any(name.startswith(n) for n in listed if n.endswith("/"))


def discard_previous_run(output: Path) -> None:
    """Delete the earlier run `start_run` set aside: the new run has saved something of its own."""
    manifest = read_manifest(output)
    if manifest is None or "replaces" not in manifest:
        return
    if _set_aside(output, manifest) is not None:
        shutil.rmtree(previous_run_dir(output))
    del manifest["replaces"]
    _write_manifest(output, manifest)


def abandon_run(output: Path) -> Path | None:
    """Undo `start_run` for a run that saved nothing: delete the files its manifest lists and
    put back the earlier run it set aside. Returns where that earlier run is now (None: there
    was none)."""
    manifest = read_manifest(output) or {"files": []}
    previous = _set_aside(output, manifest)
    for name in manifest["files"]:
        path = output / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.is_file() or path.is_symlink():
            path.unlink()
    if previous is None:
        return None
    if output.is_dir() and any(output.iterdir()):
        return previous  # files no run wrote appeared meanwhile: leave both as they are
    if output.is_dir():
        output.rmdir()
    previous.rename(output)
    return output


def _set_aside(output: Path, manifest: dict[str, Any]) -> Path | None:
    """OUTPUT.previous when it holds the run that `manifest`'s run replaced, else None."""
    previous = previous_run_dir(output)
    earlier = read_manifest(previous) if previous.is_dir() else None
    if earlier is None or "replaces" not in manifest:
        return None
    return previous if earlier.get("run_id") == manifest["replaces"] else None


def _write_manifest(output: Path, manifest: dict[str, Any]) -> None:
    _write_atomically(output / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")


def _write_atomically(path: Path, text: str) -> None:
    """Write the whole text or nothing: a temporary file, then a rename (atomic on POSIX)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def checkpoint_dirs(output: Path) -> list[Path]:
    """The run's checkpoint-N folders, lowest N first."""
    if not output.is_dir():
        return []
    found = [p for p in output.iterdir() if p.is_dir() and _CHECKPOINT_NAME.fullmatch(p.name)]
    return sorted(found, key=checkpoint_step)


def checkpoint_step(checkpoint: Path) -> int:
    """N of checkpoint-N: the optimizer steps trained when it was saved."""
    return int(checkpoint.name.rsplit("-", 1)[1])


def missing_from_checkpoint(checkpoint: Path) -> list[str]:
    """What a checkpoint-N folder lacks to be resumed from (nothing: it is complete). Since
    checkpoints are written whole (train/checkpoints.py) only an older version's save, cut short,
    leaves one incomplete."""
    missing = [name for name in CHECKPOINT_NEEDS if not (checkpoint / name).is_file()]
    if not any(checkpoint.glob("*.safetensors")):
        missing.append("the weights (*.safetensors)")
    if not any(checkpoint.glob("rng_state*.pth")):
        missing.append("rng_state.pth")
    return missing


def last_checkpoint(output: Path) -> Path | None:
    """The newest complete checkpoint-N folder of a run, or None."""
    complete = [p for p in checkpoint_dirs(output) if not missing_from_checkpoint(p)]
    return complete[-1] if complete else None


def has_saved(output: Path) -> bool:
    """Whether a run saved something to resume or use: a complete checkpoint or its adapter."""
    adapter = output / ADAPTER_DIR / "adapter_config.json"
    return adapter.is_file() or last_checkpoint(output) is not None


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


def load_run_config(output: str | Path) -> dict[str, Any]:
    """The configuration a run saved (resuming, inference and evaluation read it back)."""
    path = Path(output) / RUN_MARKER
    if not path.is_file():
        raise OutputDirError(
            f"{path} not found", where="--adapter", fix="pass a training output folder"
        )
    fix = "restore the file, or start a new run in another --output-dir"
    config = read_yaml(path, error=OutputDirError, what="cannot read the run's options", fix=fix)
    if not isinstance(config, dict):
        raise OutputDirError(
            "cannot read the run's options (not a mapping)", where=str(path), fix=fix
        )
    return config


def append_metrics(output: Path, record: dict[str, Any]) -> None:
    """One line of metrics.jsonl: a training log, or an event such as an out-of-memory split."""
    with (output / METRICS_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def drop_metrics_after(output: Path, step: int) -> None:
    """Remove the metrics.jsonl lines logged after `step`: a resumed run continues from its
    checkpoint at `step` and logs the later steps again."""
    rows = read_metrics(output)
    kept = [row for row in rows if row.get("step", 0) <= step]
    if len(kept) < len(rows):
        _write_atomically(output / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in kept))


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


def read_summary(output: Path) -> dict[str, Any] | None:
    """summary.json of a run that got to the end of one (None before)."""
    path = output / SUMMARY_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def finished_at(output: Path, step: int) -> bool:
    """Whether the run finished (not interrupted) at `step` and its adapter is in place."""
    summary = read_summary(output)
    adapter = output / ADAPTER_DIR
    return (
        summary is not None
        and summary.get("global_step") == step
        and not summary.get("interrupted")
        and all((adapter / name).is_file() for name in ADAPTER_FILES)
    )


def write_summary(output: Path, summary: dict[str, Any]) -> Path:
    """Write summary.json."""
    path = output / SUMMARY_FILE
    path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return path
