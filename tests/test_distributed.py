"""Data parallelism: the same command under torchrun (2 CPU processes, gloo) trains one adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlm_unsloth.data.splits import DEMO_DIR

REPO = Path(__file__).resolve().parent.parent


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]


def _train(output: Path, *launcher: str, job="train-sft", dataset="train.jsonl", more=()):
    command = [
        *launcher, "-m", "vlm_unsloth.cli", job, "--model", "tiny-qwen2-vl",
        "--backend", "hf", "--dataset", str(DEMO_DIR / dataset),
        "--max-samples", "24", "--max-steps", "3", "--batch-size", "2", "--grad-accum", "1",
        "--lora-r", "8", "--output-dir", str(output), *more,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


def _logged_steps(folder: Path) -> list[int]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if '"loss"' in line]


@pytest.mark.slow
def test_two_process_ddp_trains_one_adapter_like_the_single_process_one(tmp_path):
    """2 processes x 2 rows a step end with the weights of 1 process x 4 rows on the same
    global batches: plain SGD (the weights move by the summed gradients, which float rounding
    changes by ~1e-6, where Adam's normalisation could flip tiny ones) and no dropout."""
    same = ["--optim", "sgd", "--learning-rate", "0.5", "--lora-dropout", "0", "--weight-decay",
            "0"]  # fmt: skip
    ddp = _train(tmp_path / "ddp", *TORCHRUN, more=same)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = _train(tmp_path / "single", sys.executable, more=[*same, "--batch-size", "4"])
    assert single.returncode == 0, single.stderr[-3000:]

    ddp_weights = load_file(tmp_path / "ddp" / "adapter" / "adapter_model.safetensors")
    single_weights = load_file(tmp_path / "single" / "adapter" / "adapter_model.safetensors")
    assert ddp_weights.keys() == single_weights.keys()
    # lora_B starts at zero: what it holds now is what the three steps moved it by.
    moved = [key for key in ddp_weights if "lora_B" in key]
    assert moved and all(single_weights[key].abs().sum() > 0 for key in moved)
    for key in ddp_weights:
        difference = (ddp_weights[key] - single_weights[key]).norm()
        assert difference <= 1e-3 * single_weights[key].norm(), key
    # The main process alone logs and summarises: one metrics line per step, not two.
    assert _logged_steps(tmp_path / "ddp") == [1, 2, 3]

    # Real data parallelism: each step consumed 2 processes x 2 samples, as many as the single
    # process's 4 a step.
    def last_epoch(folder):
        lines = (tmp_path / folder / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["epoch"] for line in lines if '"loss"' in line][-1]

    assert last_epoch("ddp") == pytest.approx(last_epoch("single"))
    config = (tmp_path / "ddp" / "run_config.yaml").read_text()
    assert "processes: 2" in config
    assert ddp.stdout.count("SFT summary") == 1
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["global_step"] == 3


@pytest.mark.slow
def test_a_ddp_run_resumes_under_the_launcher(tmp_path):
    run = tmp_path / "run"
    first = _train(run, *TORCHRUN, more=["--max-steps", "2", "--save-steps", "2"])
    assert first.returncode == 0, first.stderr[-3000:]
    at_2 = load_file(run / "checkpoint-2" / "adapter_model.safetensors")
    resumed = _train(run, *TORCHRUN, more=["--max-steps", "4", "--save-steps", "2", "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    assert json.loads((run / "summary.json").read_text())["global_step"] == 4
    assert _logged_steps(run) == [1, 2, 3, 4]  # steps 3-4 continued the log, once
    at_4 = load_file(run / "checkpoint-4" / "adapter_model.safetensors")
    assert at_4.keys() == at_2.keys()
    assert any(not torch.equal(at_4[key], at_2[key]) for key in at_2)  # it trained on


@pytest.mark.slow
def test_dpo_runs_data_parallel_too(tmp_path):
    ddp = _train(
        tmp_path / "dpo", *TORCHRUN, job="train-dpo", dataset="dpo_train.jsonl",
        more=["--max-steps", "2", "--batch-size", "1", "--accuracy-rows", "0"],
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    weights = load_file(tmp_path / "dpo" / "adapter" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())
    assert _logged_steps(tmp_path / "dpo") == [1, 2]
    assert "processes: 2" in (tmp_path / "dpo" / "run_config.yaml").read_text()
    assert ddp.stdout.count("DPO summary") == 1
