"""Checkpoints written whole, and resumed from only when they are whole and readable.

    trainer_class = with_whole_checkpoints(trainer_class)   # steps.build_trainer
    checkpoint = checkpoint_to_resume(output, console)      # steps.check_output, with --resume

transformers' Trainer writes checkpoint-N in place, file by file: a process killed during a save
left a half-written (even empty) checkpoint-N, and --resume picked it and crashed. Here the
trainer writes into OUTPUT/partial-checkpoint/checkpoint-N and, once every process has written
its part, the main process renames it to OUTPUT/checkpoint-N: a rename on one filesystem is
atomic, so a checkpoint-N folder is always complete. A save cut short leaves only
partial-checkpoint/, which the next save replaces; one cut short by a full disk is removed at
once, and the run stops with one line naming the last complete checkpoint (full_disk.py).

--resume passes over incomplete checkpoint-N folders (an older version's cut-short save) with a
notice, and reads every file of the one it picks before anything loads: a damaged file (say,
truncated by a full disk or a copy cut short) is one error line naming it and what to do, not a
traceback from deep inside the trainer.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

from vlm_unsloth import distributed, run_dir
from vlm_unsloth.errors import OutputDirError
from vlm_unsloth.train import full_disk


class WholeCheckpointsTrainer:
    """Trainer mixin (before the trainer class in the bases): see the module docstring."""

    _saving_into: str | None = None

    def _get_output_dir(self, trial) -> str:
        # While a checkpoint is saved, the trainer's run folder is the staging folder: the
        # checkpoint (and the trainer's rotation of old ones) happen there.
        return self._saving_into or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

        output = Path(self.args.output_dir)
        staging = output / run_dir.PARTIAL_CHECKPOINT_DIR
        main = self.args.should_save
        if main and staging.exists():
            shutil.rmtree(staging)  # a save that was cut short
        distributed.wait_for_everyone()  # no process writes into it before it is cleared
        self._saving_into = str(staging)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        try:
            # A full disk: one line, and the partial save removed (it would keep the disk full).
            with full_disk.saving_to(staging, name, output, remove=main):
                super()._save_checkpoint(model, trial)
        finally:
            self._saving_into = None
        # Every process writes part of a checkpoint (its rng_state_N.pth): all must be done.
        distributed.wait_for_everyone()
        if not main:
            return
        final = output / name
        if final.exists():
            shutil.rmtree(final)  # an incomplete one that --resume passed over
        os.replace(staging / name, final)
        staging.rmdir()
        rotate_checkpoints(
            output_dir=str(output),
            save_total_limit=self.args.save_total_limit,
            best_model_checkpoint=self.state.best_model_checkpoint,
            use_mtime=True,
        )


def with_whole_checkpoints(trainer_class: type) -> type:
    """`trainer_class` with WholeCheckpointsTrainer mixed in."""
    return type(
        f"WholeCheckpoints{trainer_class.__name__}", (WholeCheckpointsTrainer, trainer_class), {}
    )


def checkpoint_to_resume(output: Path, console) -> Path:
    """The newest complete checkpoint of the run in `output`, every file of it read; notices
    for the incomplete ones passed over. Raises OutputDirError when there is none, or when a
    file of it is damaged."""
    chosen = run_dir.last_checkpoint(output)
    newer = run_dir.checkpoint_dirs(output)
    if chosen is not None:
        newer = [c for c in newer if run_dir.checkpoint_step(c) > run_dir.checkpoint_step(chosen)]
    for folder in newer:  # all incomplete: `chosen` is the newest complete one
        missing = run_dir.missing_from_checkpoint(folder)
        if missing:
            console.print(
                f"[yellow]{folder.name} is incomplete (no {', '.join(missing)}: a save cut "
                "short), so --resume passes over it[/]"
            )
    if (output / run_dir.PARTIAL_CHECKPOINT_DIR).exists():
        console.print(
            f"[yellow]{run_dir.PARTIAL_CHECKPOINT_DIR}/ holds a save that was cut short; "
            "it is ignored and replaced at the next save[/]"
        )
    if chosen is None:
        raise OutputDirError(
            f"nothing to resume in {output}: it has no complete checkpoint-N folder",
            where="--resume",
            fix="drop --resume to start a new run (with --overwrite to replace this one), or "
            "point --output-dir at an earlier run",
        )
    check_readable(chosen)
    return chosen


def check_readable(checkpoint: Path) -> None:
    """Read every file of `checkpoint` that resuming loads (JSON, safetensors, torch's zip
    files): OutputDirError naming the first damaged one and what to do."""
    for path in run_dir.files_in(checkpoint):
        problem = _damage(path)
        if problem is None:
            continue
        earlier = [
            c
            for c in run_dir.checkpoint_dirs(checkpoint.parent)
            if run_dir.checkpoint_step(c) < run_dir.checkpoint_step(checkpoint)
            and not run_dir.missing_from_checkpoint(c)
        ]
        fix = (
            f"delete {checkpoint.name} to resume from {earlier[-1].name}, or start over with "
            "--overwrite"
            if earlier
            else f"start over with --overwrite ({checkpoint.name} is the run's only checkpoint)"
        )
        raise OutputDirError(f"{path} is damaged: {problem}", where="--resume", fix=fix)


def _damage(path: Path) -> str | None:
    """What is wrong with one checkpoint file (None: it reads whole)."""
    from safetensors import SafetensorError, safe_open

    try:
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".safetensors":
            # The header names every tensor's byte range: a cut-short file does not cover it.
            with safe_open(str(path), framework="pt"):
                pass
        elif path.suffix in (".pt", ".pth", ".bin"):
            # torch.save writes a zip archive: its directory is at the end, and each member
            # has a CRC, so a truncated or altered file fails here without unpickling anything.
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                return f"{bad} fails its checksum"
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, SafetensorError) as error:
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    return None
