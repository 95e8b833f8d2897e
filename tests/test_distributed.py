"""Data parallelism: the same command under torchrun (2 CPU processes, gloo) trains one adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent


def _train(output: Path, *launcher: str) -> subprocess.CompletedProcess:
    command = [
        *launcher, "-m", "vlm_unsloth.cli", "train-sft", "--model", "tiny-qwen2-vl",
        "--backend", "hf", "--dataset", str(REPO / "data" / "demo" / "train.jsonl"),
        "--max-samples", "24", "--max-steps", "3", "--batch-size", "2", "--grad-accum", "1",
        "--lora-r", "8", "--output-dir", str(output),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_two_process_ddp_trains_one_adapter_like_the_single_process_one(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    ddp = _train(tmp_path / "ddp", *torchrun)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = _train(tmp_path / "single", sys.executable)
    assert single.returncode == 0, single.stderr[-3000:]

    ddp_weights = load_file(tmp_path / "ddp" / "adapter" / "adapter_model.safetensors")
    single_weights = load_file(tmp_path / "single" / "adapter" / "adapter_model.safetensors")
    assert {k: v.shape for k, v in ddp_weights.items()} == {
        k: v.shape for k, v in single_weights.items()
    }
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in ddp_weights.items())
    # The main process alone logs and summarises: one metrics line per step, not two.
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
        if '"loss"' in line
    ]
    assert steps == [1, 2, 3]

    # Real data parallelism: each step consumed 2 processes x 2 samples, so 3 steps covered
    # twice the share of the epoch that the single process covered.
    def last_epoch(folder):
        lines = (tmp_path / folder / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["epoch"] for line in lines if '"loss"' in line][-1]

    assert last_epoch("ddp") == pytest.approx(2 * last_epoch("single"))
    config = (tmp_path / "ddp" / "run_config.yaml").read_text()
    assert "processes: 2" in config
    assert ddp.stdout.count("SFT summary") == 1
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["global_step"] == 3
