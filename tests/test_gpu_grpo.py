"""GPU tests (marker `gpu`): GRPO on the unsloth backend. Skipped without CUDA.

Run on the GPU machine:  python -m pytest -m gpu tests/test_gpu_grpo.py -s

Unsloth rewrites GRPOTrainer's sampling, log-probability and loss code; these record what reaches
the model's forward in the real training loop (a forward pre-hook inside PEFT) and check the run's
outputs: rewards, completion lengths, seconds per step and generated tokens/s, the held-out reward.
"""

from __future__ import annotations

import json

import pytest
from conftest import forward_input_recorder

from vlm_unsloth.families import TINY_MODEL_NAMES

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize(
    "name",
    [
        n
        for n, f in TINY_MODEL_NAMES.items()
        if f.unsloth_trains and not f.images_by_cross_attention
    ],
)
def test_train_grpo_on_the_unsloth_backend_feeds_the_images(name, tmp_path):
    from vlm_unsloth.config import DataArgs, ModelArgs
    from vlm_unsloth.models.lora import LoraArgs
    from vlm_unsloth.train.grpo import train_grpo
    from vlm_unsloth.train.grpo_options import GrpoArgs, GrpoTrainArgs

    recorder = forward_input_recorder(graph_only=True)
    result = train_grpo(
        ModelArgs(model=name, backend="unsloth"),
        LoraArgs(),
        DataArgs(max_samples=8),  # the shipped demo charts (vlm_unsloth/data/demo)
        GrpoTrainArgs(
            output_dir=str(tmp_path / "run"),
            max_steps=3,
            batch_size=4,
            grad_accum=1,
            save_steps=2,
        ),  # fmt: skip
        GrpoArgs(
            rewards=["exact_match", "relaxed_accuracy", "format"],
            reward_weights=[1, 1, 0.1],
            num_generations=4,
            max_completion_length=16,
            reward_rows=8,
        ),  # fmt: skip
        extra_callbacks=[recorder],
    )
    summary = result.summary
    assert summary["global_step"] == 3 and summary["backend"] == "unsloth"
    assert (result.adapter_dir / "adapter_config.json").is_file()
    # Written whole through the staging folder (train/checkpoints.py), with Unsloth's trainer.
    checkpoint = result.output_dir / "checkpoint-2"
    for part in ("adapter_model.safetensors", "optimizer.pt", "trainer_state.json"):
        assert (checkpoint / part).is_file(), part
    assert not (result.output_dir / "partial-checkpoint").exists()
    assert summary["heldout_rows_before"] == 8 and "heldout_reward_after" in summary
    assert summary["seconds_per_step"] > 0 and summary["generated_tokens_per_second"] > 0
    assert summary["peak_gpu_memory_gib"] > 0
    print(name, "forwards with gradients:", recorder.calls[:2])
    with_images = [c for c in recorder.calls if "pixel_values" in c]
    assert with_images, recorder.calls
    logged = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").open()]
    steps = [row for row in logged if "loss" in row]
    for key in ("reward", "rewards/exact_match/mean", "rewards/format/std",
                "completions/mean_length", "generated_tokens_per_second"):  # fmt: skip
        assert all(key in row for row in steps), key


def test_llama_vision_grpo_is_refused_on_the_unsloth_backend(tmp_path):
    from vlm_unsloth.config import DataArgs, ModelArgs
    from vlm_unsloth.errors import ConfigError
    from vlm_unsloth.models.lora import LoraArgs
    from vlm_unsloth.train.grpo import train_grpo
    from vlm_unsloth.train.grpo_options import GrpoArgs, GrpoTrainArgs

    with pytest.raises(ConfigError, match="--backend hf"):
        train_grpo(
            ModelArgs(model="tiny-llama-3.2-vision", backend="unsloth"),
            LoraArgs(),
            DataArgs(max_samples=4),
            GrpoTrainArgs(output_dir=str(tmp_path / "run"), max_steps=1, batch_size=4),
            GrpoArgs(),
        )
    assert not (tmp_path / "run").exists()


def test_llama_vision_grpo_trains_on_the_hf_backend_on_a_gpu(tmp_path):
    """The command a user runs (a fresh process: Unsloth, imported by the tests before this one,
    patches TRL's GRPOTrainer for its whole process, and the hf backend refuses that)."""
    import subprocess
    import sys

    from conftest import REPO

    run = tmp_path / "run"
    command = [
        sys.executable, str(REPO / "scripts" / "train_grpo.py"), "--model",
        "tiny-llama-3.2-vision", "--backend", "hf", "--max-samples", "8", "--output-dir",
        str(run), "--max-steps", "2", "--batch-size", "4", "--grad-accum", "1",
        "--num-generations", "4", "--max-completion-length", "8", "--reward-rows", "4",
        "--beta", "0.04",
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 2
    assert "aspect_ratio_ids" in summary["model_inputs_first_step"]
