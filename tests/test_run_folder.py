"""A run folder keeps the user's work (issue #17): --resume stops at the run's final step,
--overwrite checks everything before it replaces an earlier run and never deletes files a run did
not write, checkpoints are written whole, a resumed run logs each step once, a damaged checkpoint
is a one-line error, and Ctrl-C makes the command exit 130 after saving.

The end-to-end tests train tiny-qwen2-vl (hf backend, CPU) for a few steps on 8 demo rows with no
eval rows, so that nothing but the behaviour under test takes time."""

from __future__ import annotations

import json
import re
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch
from conftest import must_not_be_called, on_a_tmpfs
from safetensors.torch import load_file
from transformers import TrainerCallback

from vlm_unsloth import run_dir
from vlm_unsloth.cli import train_sft_main
from vlm_unsloth.config import DataArgs, ModelArgs, TrainArgs
from vlm_unsloth.data.splits import DEMO_DIR
from vlm_unsloth.errors import ConfigError, OutputDirError, VlmUnslothError
from vlm_unsloth.infer.trained_run import resolve_adapter
from vlm_unsloth.models.lora import LoraArgs
from vlm_unsloth.train.sft import train_sft

DATA = str(DEMO_DIR / "train.jsonl")  # no eval rows: the end of a run evaluates nothing


def _args(output: Path, *, dataset: str = DATA, **train):
    settings = dict(
        max_steps=2, batch_size=1, grad_accum=1, learning_rate=1e-2, lr_scheduler_type="constant"
    )
    return (
        ModelArgs(model="tiny-qwen2-vl", backend="hf"),
        LoraArgs(lora_r=8, lora_alpha=16),
        DataArgs(dataset=dataset, max_samples=8),
        TrainArgs(output_dir=str(output), **{**settings, **train}),
    )


def _cli(output: Path, *more: str) -> list[str]:
    return [
        "--model", "tiny-qwen2-vl", "--backend", "hf", "--dataset", DATA, "--max-samples", "8",
        "--batch-size", "1", "--grad-accum", "1", "--lora-r", "8", "--output-dir", str(output),
        *more,
    ]  # fmt: skip


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes): what "changed nothing" compares."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _printed(capsys) -> str:
    """What the run printed, as one line (rich wraps long lines at the terminal's width)."""
    return " ".join(capsys.readouterr().out.split())


def _logged_steps(folder: Path) -> list[int]:
    return [row["step"] for row in run_dir.read_metrics(folder) if "loss" in row]


class _Killed(Exception):
    """Stands for the process dying (kill -9, power loss) at a chosen point."""


class _DieAfterLogging(TrainerCallback):
    """The process dies right after a step's metrics were written (before any later save)."""

    def __init__(self, step: int):
        self.step = step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step == self.step and logs and "loss" in logs:
            raise _Killed(f"killed after step {self.step}")


class _FailAt(TrainerCallback):
    """A failure inside a training step (an error the new run cannot get past)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError(f"failed in step {self.step}")


# ---------------------------------------------------------------------------------------------
# 1. --resume never trains past the run's final step


@pytest.mark.slow
def test_resuming_a_finished_run_changes_nothing_and_a_cut_short_end_is_completed(
    tmp_path, capsys, monkeypatch
):
    from vlm_unsloth.train import steps

    run = tmp_path / "run"
    train_sft(*_args(run))  # 2 of 8 steps in the epoch: the final step saves checkpoint-2
    finished = _files(run)
    capsys.readouterr()

    ctrl_c = signal.getsignal(signal.SIGINT)
    with monkeypatch.context() as patched:  # nothing left to do: the model is not even loaded
        patched.setattr(steps, "load_model_for_training", must_not_be_called)
        again = train_sft(*_args(run, resume=True))
    assert "already finished" in _printed(capsys)
    assert signal.getsignal(signal.SIGINT) is ctrl_c  # given back though training never began
    assert again.summary["global_step"] == 2
    assert _files(run) == finished  # no checkpoint-3, the same adapter, metrics and summary

    # The process died right after the last checkpoint: no adapter, no summary yet. Resuming
    # saves the final checkpoint's adapter without training another step.
    shutil.rmtree(run / "adapter")
    (run / "summary.json").unlink()
    completed = train_sft(*_args(run, resume=True))
    assert completed.summary["global_step"] == 2 and not completed.summary["interrupted"]
    assert not (run / "checkpoint-3").exists()
    assert _logged_steps(run) == [1, 2]
    saved = load_file(run / "adapter" / "adapter_model.safetensors")
    final = load_file(run / "checkpoint-2" / "adapter_model.safetensors")
    assert saved.keys() == final.keys()
    assert all(torch.equal(saved[key], final[key]) for key in final)


# ---------------------------------------------------------------------------------------------
# 2, 3. --overwrite: everything is checked first, the earlier run survives a new run that saves
# nothing, and only files a run wrote are ever deleted


def test_a_run_that_fails_before_training_leaves_the_folder_as_it_was(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(VlmUnslothError, match="missing.jsonl"):
        train_sft(*_args(run, dataset=str(tmp_path / "missing.jsonl")))
    # Nothing written, so the corrected command is not refused as "not empty".
    assert not run.exists() or not any(run.iterdir())


@pytest.mark.slow
def test_overwrite_replaces_an_earlier_run_only_once_the_new_one_has_saved(tmp_path):
    run = tmp_path / "run"
    train_sft(*_args(run, max_steps=1))
    earlier = _files(run)

    # A mistake in the new command (a missing dataset): refused before anything is deleted.
    with pytest.raises(VlmUnslothError, match="missing.jsonl"):
        train_sft(*_args(run, overwrite=True, dataset=str(tmp_path / "missing.jsonl")))
    assert _files(run) == earlier

    # A new run that fails in its first step, before it saved anything: the earlier run is back.
    with pytest.raises(RuntimeError, match="failed in step 1"):
        train_sft(*_args(run, overwrite=True), extra_callbacks=[_FailAt(1)])
    assert _files(run) == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing left beside it

    replaced = train_sft(*_args(run, overwrite=True))
    assert replaced.summary["global_step"] == 2 and _logged_steps(run) == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    # Files the user put into a run folder are never deleted: --overwrite names them instead.
    (run / "notes.txt").write_text("what I tried")
    (run / "adapter" / "my_eval.md").write_text("looks good")
    kept = _files(run)
    with pytest.raises(OutputDirError, match="notes.txt") as refused:
        train_sft(*_args(run, overwrite=True))
    assert "my_eval.md" in str(refused.value)
    assert _files(run) == kept


def test_overwrite_never_deletes_a_folder_that_only_looks_like_a_run(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "run_config.yaml").write_text("my own experiment settings\n")
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputDirError, match="not a vlm-unsloth run"):
        train_sft(*_args(precious, overwrite=True))
    assert _files(precious) == {
        "run_config.yaml": b"my own experiment settings\n",
        "thesis.tex": b"years of work",
    }


# ---------------------------------------------------------------------------------------------
# 4, 5. Checkpoints are written whole; a resumed run logs each step once


@pytest.mark.slow
def test_a_save_cut_short_leaves_no_checkpoint_and_resume_uses_the_previous_one(
    tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    real_save = torch.save

    def dies_writing_the_second_checkpoint(obj, f, *args, **kwargs):
        if str(f).endswith("optimizer.pt") and "checkpoint-4" in str(f):
            raise _Killed("killed while saving checkpoint-4")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dies_writing_the_second_checkpoint)
    with pytest.raises(_Killed):
        train_sft(*_args(run, max_steps=4, save_steps=2))
    monkeypatch.undo()
    assert (run / "checkpoint-2").is_dir()
    assert not (run / "checkpoint-4").exists()  # a half-written save never has a checkpoint name
    (run / "checkpoint-3").mkdir()  # what an older version's cut-short save left: an empty folder
    capsys.readouterr()

    resumed = train_sft(*_args(run, max_steps=4, save_steps=2, resume=True))
    out = _printed(capsys)
    assert "checkpoint-3 is incomplete" in out  # passed over, with a notice
    assert resumed.summary["global_step"] == 4
    state = (run / "checkpoint-4" / "trainer_state.json").read_text()
    assert '"global_step": 4' in state


@pytest.mark.slow
def test_a_killed_run_resumed_logs_each_step_once(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(_Killed):
        train_sft(*_args(run, max_steps=4, save_steps=2), extra_callbacks=[_DieAfterLogging(3)])
    assert _logged_steps(run) == [1, 2, 3]  # step 3 was logged after checkpoint-2
    train_sft(*_args(run, max_steps=4, save_steps=2, resume=True))
    assert _logged_steps(run) == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------
# 6. A damaged checkpoint file is one line naming it and what to do


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    train_sft(*_args(run, max_steps=1))
    return run


DAMAGEABLE = [
    "adapter_model.safetensors",
    "optimizer.pt",
    "scheduler.pt",
    "trainer_state.json",
    "rng_state.pth",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", DAMAGEABLE)
def test_a_damaged_checkpoint_file_is_one_line_naming_it(name, finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    damaged = run / "checkpoint-1" / name
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # a cut-short write

    assert train_sft_main(_cli(run, "--max-steps", "2", "--resume")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert str(damaged) in err and "--overwrite" in err


# ---------------------------------------------------------------------------------------------
# A full disk (issue #33): one line naming the disk and the last complete checkpoint, the
# partial save removed, and --resume carries on once there is space again

FILL_THE_DISK_THEN_RESUME = """
import json, shutil, sys
from pathlib import Path
from transformers import TrainerCallback
from vlm_unsloth import run_dir
from vlm_unsloth.cli import train_sft_main
from vlm_unsloth.train import steps

disk, fill_at, room, argv = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]


class FillTheDisk(TrainerCallback):
    # Once checkpoint-{fill_at} is saved, something else fills the disk: `room` bytes stay free.
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == fill_at:
            (disk / "filler").write_bytes(bytes(shutil.disk_usage(disk).free - room))


ours = steps.callbacks
steps.callbacks = lambda *a: [*ours(*a), FillTheDisk()]
stopped = train_sft_main(argv)
left = sorted(str(p.relative_to(disk)) for p in disk.rglob("*"))
(disk / "filler").unlink()
steps.callbacks = ours
resumed = train_sft_main([*argv, "--resume"])
summary = run_dir.read_summary(disk / "run")
print(json.dumps({"stopped": stopped, "left": left, "resumed": resumed, "summary": summary}))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fill_at", "room", "saving", "last"),
    [
        # 256 KiB: the adapter weights fit, optimizer.pt (260 KB) does not; torch's writer
        # says only "unexpected pos ...".
        (2, 256 * 1024, "checkpoint-4", "checkpoint-2"),
        # 64 KiB: room for a metrics line, not for the adapter (safetensors says "os error 28").
        (4, 64 * 1024, "the adapter", "checkpoint-4"),
    ],
)
def test_a_full_disk_is_one_line_and_leaves_no_partial_save(tmp_path, fill_at, room, saving, last):
    disk = tmp_path / "disk"  # a 16 MB file system of its own: a run takes about 2 MB
    disk.mkdir()
    argv = _cli(disk / "run", "--max-steps", "4", "--save-steps", "2")
    script = [sys.executable, "-c", FILL_THE_DISK_THEN_RESUME, str(disk), str(fill_at), str(room)]
    done = on_a_tmpfs(disk, [*script, *argv])
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    outcome = json.loads(done.stdout.splitlines()[-1])

    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and outcome["stopped"] == 2
    said = re.fullmatch(
        rf"error: no space left on {re.escape(str(disk))} \(([0-9.]+) MB free\) while saving "
        rf"{saving}; the last complete checkpoint is {last} — free space on "
        rf"{re.escape(str(disk))} \(or move the run to a larger disk\), then --resume",
        errors[0],
    )
    assert said is not None, errors[0]
    assert float(said.group(1)) < 1  # the free space the failed save left
    left = outcome["left"]
    assert any(name.startswith(f"run/{last}/") for name in left)
    assert not any(name.startswith(("run/partial-checkpoint", "run/adapter")) for name in left)
    assert "run/checkpoint-4" in left if last == "checkpoint-4" else "run/checkpoint-4" not in left
    # With space again, --resume finishes the run (from the last complete checkpoint).
    assert outcome["resumed"] == 0 and outcome["summary"]["global_step"] == 4


# ---------------------------------------------------------------------------------------------
# 9. Ctrl-C exits non-zero after saving; infer.py's advice for a run without an adapter works


class _InterruptAt(TrainerCallback):
    """Sends the process a real SIGINT (what Ctrl-C does) after a given step."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            signal.raise_signal(signal.SIGINT)


@pytest.mark.slow
def test_ctrl_c_saves_then_the_command_exits_130(tmp_path, monkeypatch):
    from vlm_unsloth.train import steps

    ours = steps.callbacks
    monkeypatch.setattr(steps, "callbacks", lambda *a: [*ours(*a), _InterruptAt(1)])
    run = tmp_path / "run"
    assert train_sft_main(_cli(run, "--max-steps", "4")) == 130
    summary = run_dir.read_summary(run)
    assert summary["interrupted"] and (run / f"checkpoint-{summary['global_step']}").is_dir()


class _InterruptTwiceAt(_InterruptAt):
    """Ctrl-C twice: the second one aborts without saving."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)


@pytest.mark.slow
def test_a_second_ctrl_c_aborts_in_one_line_and_leaves_no_half_run(tmp_path, monkeypatch, capsys):
    from vlm_unsloth.train import steps

    ours = steps.callbacks
    monkeypatch.setattr(steps, "callbacks", lambda *a: [*ours(*a), _InterruptTwiceAt(1)])
    run = tmp_path / "run"
    assert train_sft_main(_cli(run, "--max-steps", "4")) == 130
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith("aborted by Ctrl-C") and "Traceback" not in err
    assert not run.exists() or not any(run.iterdir())  # nothing saved: the new run's files go


def test_infer_on_a_run_without_an_adapter_gives_advice_that_works(tmp_path):
    config = {
        "ModelArgs": {"model": "tiny-qwen2-vl"},
        "DataArgs": {"max_side": 768, "system_prompt": None},
        "TrainArgs": {"output_dir": str(tmp_path)},
    }
    # Stopped before its first checkpoint: there is nothing to resume.
    empty = tmp_path / "empty"
    empty.mkdir()
    run_dir.save_run_config(empty, config)
    with pytest.raises(ConfigError) as error:
        resolve_adapter(str(empty), None)
    assert "--resume" not in str(error.value) and "--overwrite" in str(error.value)
    # A DPO run is trained again with train_dpo.py.
    dpo = tmp_path / "dpo"
    dpo.mkdir()
    run_dir.save_run_config(dpo, {**config, "DpoArgs": {"beta": 0.1}})
    with pytest.raises(ConfigError, match="train_dpo.py"):
        resolve_adapter(str(dpo), None)
    # ...and a GRPO run with train_grpo.py.
    grpo = tmp_path / "grpo"
    grpo.mkdir()
    run_dir.save_run_config(grpo, {**config, "GrpoArgs": {"num_generations": 4}})
    with pytest.raises(ConfigError, match="train_grpo.py"):
        resolve_adapter(str(grpo), None)


@pytest.mark.slow
def test_infer_on_a_run_stopped_after_a_checkpoint_says_how_to_resume(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    shutil.rmtree(run / "adapter")
    with pytest.raises(ConfigError) as error:
        resolve_adapter(str(run), None)
    advice = str(error.value)
    assert f"--output-dir {run} --resume" in advice and "train_sft.py" in advice
    assert str(run / "checkpoint-1") in advice  # ...or try the last checkpoint as it is
    assert resolve_adapter(str(run / "checkpoint-1"), None).run_folder == run


# ---------------------------------------------------------------------------------------------
# The manifest's rules, without training


def test_only_the_run_an_overwrite_set_aside_is_ever_deleted_or_put_back(tmp_path):
    run = tmp_path / "run"
    run_dir.start_run(run, job="SFT", files=["metrics.jsonl"])
    (run / "metrics.jsonl").write_text("earlier\n")
    (run / ".metrics.jsonl.tmp").write_text("")  # a rewrite cut short: still the run's file
    evaluation = run / "eval"  # an evaluation answers for its own files
    run_dir.start_run(evaluation, job="evaluate")
    (evaluation / "report.md").write_text("report")
    run_dir.record_files(evaluation, run_dir.files_in(evaluation))
    assert run_dir.files_not_written_by_runs(run) == []

    # A folder of the user's that happens to be called run.previous: never touched.
    mine = tmp_path / "run.previous"
    mine.mkdir()
    (mine / "backup.txt").write_text("mine")
    run_dir.discard_previous_run(run)  # what each save of a (resumed) run calls
    assert (mine / "backup.txt").read_text() == "mine"
    with pytest.raises(OutputDirError, match="run.previous exists"):
        run_dir.check_output_dir(run, overwrite=True)
    shutil.move(mine, tmp_path / "elsewhere")

    # --overwrite sets the earlier run aside; a new run that saved nothing puts it back.
    assert run_dir.check_output_dir(run, overwrite=True) == run.resolve()
    earlier = _files(run)
    run_dir.start_run(run, job="DPO", files=["metrics.jsonl"])
    assert (tmp_path / "run.previous" / "metrics.jsonl").read_text() == "earlier\n"
    (run / "metrics.jsonl").write_text("new\n")
    assert run_dir.abandon_run(run) == run
    assert _files(run) == earlier and not (tmp_path / "run.previous").exists()

    # One that saved something replaces it.
    run_dir.start_run(run, job="SFT", files=["metrics.jsonl"])
    run_dir.discard_previous_run(run)
    assert not (tmp_path / "run.previous").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "run"]


def test_a_run_previous_that_is_not_the_replaced_run_is_never_deleted_or_put_back(tmp_path):
    """The new run replaced an earlier one, but OUTPUT.previous now holds something else: the
    user's own folder, or another run (another run_id). Neither a save of the new run nor its
    failure touches it."""

    def replaced_then_swapped(run: Path, stranger: str) -> Path:
        run_dir.start_run(run, job="SFT")
        run_dir.start_run(run, job="SFT")  # replaces the first: its manifest says so
        previous = run_dir.previous_run_dir(run)
        shutil.rmtree(previous)
        if stranger == "another run":
            run_dir.start_run(previous, job="SFT")  # a manifest with another run_id
        else:
            previous.mkdir()
        (previous / "backup.txt").write_text("mine")
        return previous

    for index, stranger in enumerate(("the user's folder", "another run")):
        saved, failed = tmp_path / f"saved{index}", tmp_path / f"failed{index}"
        previous = replaced_then_swapped(saved, stranger)
        run_dir.discard_previous_run(saved)  # the new run saved something
        assert (previous / "backup.txt").read_text() == "mine"
        previous = replaced_then_swapped(failed, stranger)
        assert run_dir.abandon_run(failed) is None  # the new run saved nothing
        assert (previous / "backup.txt").read_text() == "mine"
