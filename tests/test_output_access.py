"""Who may write an output folder (issue #33): one run at a time, a killed run's lock taken over,
and an output path that cannot be written (inside a file, on a read-only disk) is one line before
anything loads.

The training end-to-end test starts two real processes on one folder: the first is held right
after it checked the folder (before it writes anything) until the second has been refused, so
the order never depends on timing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, in_a_mount_namespace, must_not_be_called, on_a_tmpfs

from vlm_unsloth import run_dir
from vlm_unsloth.cli import infer_main, train_sft_main
from vlm_unsloth.data.splits import DEMO_DIR
from vlm_unsloth.errors import OutputDirError

DATA = str(DEMO_DIR / "train.jsonl")  # no eval rows: the end of a run evaluates nothing
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def _cli(output: Path, *more: str) -> list[str]:
    return [
        "--model", "tiny-qwen2-vl", "--backend", "hf", "--dataset", DATA, "--max-samples", "8",
        "--batch-size", "1", "--grad-accum", "1", "--lora-r", "8", "--max-steps", "2",
        "--output-dir", str(output), *more,
    ]  # fmt: skip


def _error_line(err: str) -> str:
    """The command's one `error:` line (asserting there is one, and no traceback)."""
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def _in_use_by(pid: int) -> str:
    return f"is in use by another run (process {pid} on host {socket.gethostname()}, started "


# A process that holds a folder (argv[1]) until its stdin closes, after forking a child that
# lives on (as a data-loader worker would). The CHILD prints its pid: by then its fork handlers
# have run (os.fork runs them before it returns), so the test never races a child that has not
# yet closed its copy of the lock.
HOLDER = """
import os, sys, time
from pathlib import Path
from vlm_unsloth import output_access

held = output_access.hold(Path(sys.argv[1]))
if os.fork() == 0:
    print(os.getpid(), flush=True)
    time.sleep(600)
    os._exit(0)
sys.stdin.read()
"""


@pytest.fixture
def holder():
    """holder(folder) -> (process, child pid): another process holding `folder`."""
    started = []

    def start(folder: Path):
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(folder)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV,
        )  # fmt: skip
        child = int(process.stdout.readline())
        started.append((process, child))
        return process, child

    yield start
    for process, child in started:
        with contextlib.suppress(ProcessLookupError):  # it has ended already
            os.kill(child, signal.SIGKILL)
        process.kill()
        process.wait()
        process.stdin.close()
        process.stdout.close()


# ---------------------------------------------------------------------------------------------
# 1. One run at a time


def test_a_held_folder_is_refused_naming_its_holder_and_freed_when_it_lets_go(tmp_path):
    from vlm_unsloth import output_access

    folder = tmp_path / "new" / "outputs" / "run"  # its parents do not exist yet
    held = output_access.hold(folder)
    assert output_access.lock_file(folder).is_file() and not folder.exists()  # nothing inside
    with pytest.raises(OutputDirError) as refused:  # a second claim, even from this process
        output_access.hold(folder)
    assert f"--output-dir: {folder} {_in_use_by(os.getpid())}" in str(refused.value)
    assert str(refused.value).endswith("— wait for it to finish, or choose another --output-dir")
    held.release()
    # A run that wrote nothing leaves nothing, not even the parents made for the lock file.
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    output_access.hold(folder).release()


def test_a_killed_holders_lock_is_taken_over_though_its_children_live_on(tmp_path, holder):
    from vlm_unsloth import output_access

    folder = tmp_path / "run"
    process, child = holder(folder)
    with pytest.raises(OutputDirError) as refused:
        output_access.hold(folder)
    assert _in_use_by(process.pid) in str(refused.value)
    process.kill()  # kill -9: the lock file stays, naming a dead process
    process.wait()
    os.kill(child, 0)  # its forked child still runs, and must not keep the folder locked
    assert json.loads(output_access.lock_file(folder).read_text())["pid"] == process.pid
    held = output_access.hold(folder)
    assert json.loads(output_access.lock_file(folder).read_text())["pid"] == os.getpid()
    held.release()
    assert not output_access.lock_file(folder).exists()


def test_an_evaluation_killed_in_a_run_folder_leaves_a_lock_that_overwrite_takes_over(
    tmp_path, holder
):
    from vlm_unsloth import output_access

    run = tmp_path / "run"
    run_dir.start_run(run, job="SFT", files=["adapter/"])
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_config.json").write_text("{}")
    process, _ = holder(run / "eval")  # an evaluation of that run, still evaluating
    with pytest.raises(OutputDirError) as refused:
        run_dir.check_output_dir(run, overwrite=True)
    assert f"--overwrite: {run / 'eval'} {_in_use_by(process.pid)}" in str(refused.value)
    process.kill()  # kill -9: its lock file stays in the run folder
    process.wait()
    assert output_access.lock_file(run / "eval").is_file()
    assert run_dir.files_not_written_by_runs(run) == []
    assert run_dir.check_output_dir(run, overwrite=True) == run
    (run / ".notes.lock").write_text("the user's own file, not a lock record\n")
    with pytest.raises(OutputDirError, match=r"holds files no run wrote.*\.notes\.lock"):
        run_dir.check_output_dir(run, overwrite=True)


def test_a_run_on_a_folder_another_process_holds_stops_before_loading(
    tmp_path, holder, capsys, monkeypatch
):
    from vlm_unsloth.train import steps

    monkeypatch.setattr(steps, "load_model_for_training", must_not_be_called)
    run = tmp_path / "run"
    process, _ = holder(run)
    for more in ((), ("--resume",), ("--overwrite",)):
        assert train_sft_main(_cli(run, *more)) == 2
        line = _error_line(capsys.readouterr().err)
        assert line.startswith(f"error: --output-dir: {run} {_in_use_by(process.pid)}")
    assert not run.exists()  # nothing written


FIRST_RUN = """
import sys
from transformers import TrainerCallback
from vlm_unsloth.cli import train_sft_main
from vlm_unsloth.train import steps


class WaitAfterCheckingTheFolder(TrainerCallback):
    # The trainer is built: the folder was checked (still empty), nothing is written yet.
    def on_init_end(self, args, state, control, **kwargs):
        print("checked", flush=True)
        sys.stdin.readline()


ours = steps.callbacks
steps.callbacks = lambda *a: [*ours(*a), WaitAfterCheckingTheFolder()]
sys.exit(train_sft_main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_two_runs_on_one_folder_the_second_stops_at_once_and_the_first_finishes(
    tmp_path, holder, monkeypatch
):
    run = tmp_path / "run"
    with (tmp_path / "first.err").open("w") as first_err:  # the process writes to its own copy
        first = subprocess.Popen(
            [sys.executable, "-c", FIRST_RUN, *_cli(run)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=first_err, text=True, env=ENV,
        )  # fmt: skip
    try:
        while (line := first.stdout.readline()) and line.strip() != "checked":
            pass
        assert line, (tmp_path / "first.err").read_text()[-3000:]
        assert not run.exists() or not any(run.iterdir())  # both runs would pass the check

        # The second run (same command, later max-steps) stops at once, naming the first.
        command = [sys.executable, "-m", "vlm_unsloth.cli", "train-sft"]
        second = subprocess.run(
            [*command, *_cli(run, "--max-steps", "3")], capture_output=True, text=True, env=ENV
        )
        assert second.returncode == 2
        line = _error_line(second.stderr)
        assert line.startswith(f"error: --output-dir: {run} {_in_use_by(first.pid)}")

        out, _ = first.communicate("go on\n", timeout=900)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0, (tmp_path / "first.err").read_text()[-3000:]
    # The first run's own folder: its steps, logged once, and its adapter.
    assert [r["step"] for r in run_dir.read_metrics(run) if "loss" in r] == [1, 2]
    assert run_dir.read_summary(run)["max_steps"] == 2 and (run / "adapter").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.err", "run"]  # no lock left

    # A killed run's lock does not stop the next one: --resume of the finished run answers.
    process, _ = holder(run)
    resumed = subprocess.run(
        [*command, *_cli(run, "--resume")], capture_output=True, text=True, env=ENV
    )
    assert resumed.returncode == 2 and _in_use_by(process.pid) in _error_line(resumed.stderr)
    process.kill()
    process.wait()
    resumed = subprocess.run(
        [*command, *_cli(run, "--resume")], capture_output=True, text=True, env=ENV
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "already finished" in " ".join(resumed.stdout.split())  # rich wraps lines

    # An evaluation into a folder another one is writing stops before loading anything too.
    from vlm_unsloth import output_access
    from vlm_unsloth.infer import evaluate

    monkeypatch.setattr(evaluate, "load_for_inference", must_not_be_called)
    with output_access.holding(run / "eval"), pytest.raises(OutputDirError) as refused:
        evaluate.evaluate_adapter(str(run))
    assert f"{run / 'eval'} {_in_use_by(os.getpid())}" in str(refused.value)


# ---------------------------------------------------------------------------------------------
# 10. An output path that cannot be written: one line, before the model loads


def test_an_output_path_inside_a_file_is_one_line_before_anything_loads(
    tmp_path, capsys, monkeypatch
):
    from vlm_unsloth.infer import predict
    from vlm_unsloth.train import steps

    monkeypatch.setattr(steps, "load_model_for_training", must_not_be_called)
    monkeypatch.setattr(predict, "load_for_inference", must_not_be_called)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")

    assert train_sft_main(_cli(notes / "run")) == 2
    line = _error_line(capsys.readouterr().err)
    assert line == (
        f"error: --output-dir: {notes / 'run'} is inside {notes}, which is a file — choose "
        "another --output-dir"
    )
    predictions = ["--model", "tiny-qwen2-vl", "--backend", "hf", "--input", DATA, "--output"]
    assert infer_main([*predictions, str(notes / "predictions.jsonl")]) == 2
    assert f"--output: {notes} is a file" in _error_line(capsys.readouterr().err)
    assert infer_main([*predictions, str(tmp_path)]) == 2  # a folder, where a file goes
    assert f"--output {tmp_path} is a folder" in _error_line(capsys.readouterr().err)
    assert notes.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.txt"
    ]


TRY_TO_WRITE = """
import sys
from pathlib import Path
from vlm_unsloth.cli import infer_main, train_sft_main

disk, argv = Path(sys.argv[1]), sys.argv[2:]
for output in (disk / "run", disk):  # a new folder on the disk, and its (empty) mount point
    print(train_sft_main([*argv, "--output-dir", str(output)]), flush=True)
print(infer_main(["--model", "tiny-qwen2-vl", "--backend", "hf", "--input", argv[argv.index(
    "--dataset") + 1], "--output", str(disk / "predictions.jsonl")]), flush=True)
"""


def test_an_output_path_on_a_read_only_disk_is_one_line_before_anything_loads(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    argv = _cli(tmp_path / "unused")[:-2]  # the output folder comes from the script
    done = on_a_tmpfs(disk, [sys.executable, "-c", TRY_TO_WRITE, str(disk), *argv], read_only=True)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stdout.split()[-3:] == ["2", "2", "2"]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: --output-dir: {disk} cannot be written (Read-only file system) — choose "
        "another --output-dir",
    ] * 2 + [f"error: options: --output: {disk} cannot be written (Read-only file system)"]


HOLD_A_MOUNT_POINT = """
import os, sys
from pathlib import Path
from vlm_unsloth import output_access, run_dir
from vlm_unsloth.errors import OutputDirError

folder = Path(sys.argv[1])
held = output_access.hold(folder)
try:
    output_access.hold(folder)
except OutputDirError as refused:
    print(refused)
held.release()
print(sorted(os.listdir(folder)))
run_dir.start_run(folder, job="SFT")  # an earlier run in it: --overwrite must set it aside
try:
    run_dir.check_output_dir(folder, overwrite=True)
except OutputDirError as refused:
    print(refused)
"""


def test_a_folder_whose_parent_is_read_only_is_held_itself_and_overwrite_says_why_not(tmp_path):
    # A writable disk mounted inside a read-only one: no lock file can go beside the folder.
    parent, folder = tmp_path / "parent", tmp_path / "parent" / "out"
    parent.mkdir()
    script = (
        'mount -t tmpfs tmpfs "$1" && mkdir "$2" && mount -o remount,ro "$1" && '
        'mount -t tmpfs tmpfs "$2" && exec "$3" -c "$4" "$2"'
    )
    done = in_a_mount_namespace(
        script, str(parent), str(folder), sys.executable, HOLD_A_MOUNT_POINT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [
        f"--output-dir: {folder} is in use by another run — wait for it to finish, or choose "
        "another --output-dir",
        "[]",  # the folder itself is locked: nothing was written in it
        f"--overwrite: it would set the earlier run aside as {folder}.previous, but "
        f"{parent} cannot be written (Read-only file system) — empty the folder yourself, or "
        "choose another --output-dir",
    ]
