"""SFT end to end on the tiny Qwen2-VL (hf backend, CPU): Ctrl-C and resume, resume from the CLI,
output-folder protection, --save-merged, --push-to-hub, the course preset on a local ChartQA copy,
and the CLI's behaviour. (Train → save → reload → generate, resume and merge for every family:
tests/test_every_family.py.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, assert_same_adapters
from transformers import TrainerCallback

from vlm_unsloth.cli import train_sft_main
from vlm_unsloth.config import DataArgs, ModelArgs, TrainArgs
from vlm_unsloth.data.splits import DEMO_DIR
from vlm_unsloth.errors import OutputDirError
from vlm_unsloth.models.lora import LoraArgs
from vlm_unsloth.train.sft import train_sft


def _args(output, **train):
    return (
        ModelArgs(model="tiny-qwen2-vl", backend="hf"),
        LoraArgs(lora_r=8, lora_alpha=16),
        DataArgs(max_samples=24),
        TrainArgs(
            output_dir=str(output), **{"max_steps": 4, "batch_size": 2, "grad_accum": 2, **train}
        ),
    )


class _InterruptAt(TrainerCallback):
    """Sends the process a real SIGINT (what Ctrl-C does) after a given step."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            signal.raise_signal(signal.SIGINT)


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_matches_an_uninterrupted_run(tmp_path):
    straight = train_sft(*_args(tmp_path / "straight", max_steps=6, save_steps=100))
    assert straight.summary["global_step"] == 6

    # Ctrl-C during step 3 (sent at the end of step 2, after our handler's check) stops after
    # step 3 with a checkpoint, as a real Ctrl-C mid-step does.
    ctrl_c = signal.getsignal(signal.SIGINT)
    stopped = train_sft(
        *_args(tmp_path / "resumed", max_steps=6, save_steps=100), extra_callbacks=[_InterruptAt(2)]
    )
    assert stopped.summary["interrupted"] and stopped.summary["global_step"] == 3
    assert (tmp_path / "resumed" / "checkpoint-3").is_dir()
    assert (tmp_path / "resumed" / "adapter" / "adapter_model.safetensors").is_file()
    assert signal.getsignal(signal.SIGINT) is ctrl_c  # handler restored

    resumed = train_sft(*_args(tmp_path / "resumed", max_steps=6, save_steps=100, resume=True))
    assert resumed.summary["global_step"] == 6
    assert_same_adapters(tmp_path / "straight", tmp_path / "resumed")


@pytest.mark.slow
def test_resume_from_the_cli_needs_only_the_folder(tmp_path):
    """`--output-dir X --resume` continues with the options the run saved (none typed again);
    --max-steps may extend it, and the result is the straight run's."""
    flags = [
        "--model", "tiny-qwen2-vl", "--backend", "hf", "--max-samples", "16", "--lora-r", "8",
        "--batch-size", "2", "--grad-accum", "1", "--learning-rate", "1e-2", "--seed", "5",
        "--lr-scheduler-type", "constant", "--warmup-ratio", "0", "--save-steps", "2",
        "--no-gradient-checkpointing",
    ]  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train_sft_main([*flags, "--output-dir", str(straight), "--max-steps", "4"]) == 0
    assert train_sft_main([*flags, "--output-dir", str(resumed), "--max-steps", "2"]) == 0
    assert train_sft_main(["--output-dir", str(resumed), "--resume", "--max-steps", "4"]) == 0
    assert json.loads((resumed / "summary.json").read_text())["global_step"] == 4
    assert_same_adapters(straight, resumed)


@pytest.mark.slow
def test_output_folder_is_protected(tmp_path):
    train_sft(*_args(tmp_path / "run", max_steps=1))
    with pytest.raises(OutputDirError, match="--overwrite"):
        train_sft(*_args(tmp_path / "run", max_steps=1))
    train_sft(*_args(tmp_path / "run", max_steps=2, overwrite=True))
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["global_step"] == 2

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputDirError, match="not a vlm-unsloth run"):
        train_sft(*_args(precious, max_steps=1, overwrite=True))
    assert (precious / "thesis.tex").read_text() == "years of work"
    with pytest.raises(OutputDirError, match="nothing to resume"):
        train_sft(*_args(tmp_path / "new", max_steps=1, resume=True))


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    assert train_sft_main(["--model", "tiny-qwen2-vl", "--backend", "hf", "--lora-r", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--lora-r 0" in err and "\n" not in err
    missing = [
        "--model", "tiny-qwen2-vl", "--backend", "hf",
        "--dataset", str(tmp_path / "no.jsonl"), "--output-dir", str(tmp_path / "out"),
    ]  # fmt: skip
    assert train_sft_main(missing) == 2
    assert "no.jsonl" in capsys.readouterr().err


def test_default_command_without_a_gpu_says_how_to_run_the_demo():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_sft.py"), "--max-side", "768"],
        capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no NVIDIA GPU found" in lines[0]
    assert "--config configs/tiny-cpu-demo.yaml" in lines[0]


def test_every_script_has_help():
    for script in ("train_sft.py", "inspect_data.py", "make_demo_data.py", "make_colour_demo.py",
                   "bench.py", "plan.py", "make_random_checkpoint.py"):  # fmt: skip
        result = subprocess.run(
            [sys.executable, str(REPO / "scripts" / script), "--help"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, (script, result.stderr[-500:])
        assert "usage:" in result.stdout


@pytest.mark.slow
def test_save_merged_writes_a_model_that_answers_like_the_adapter(tmp_path):
    from transformers import AutoModelForImageTextToText

    from vlm_unsloth.infer.generation import _inputs, load_for_inference

    output = tmp_path / "run"
    train_sft(*_args(output, max_steps=2, save_merged=True, eval_steps=1, learning_rate=1e-2))
    metrics = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "eval_loss" in m][:2] == [1, 2]  # eval during training
    merged = AutoModelForImageTextToText.from_pretrained(output / "merged")
    assert not any("lora" in name for name, _ in merged.named_parameters())
    tuned = load_for_inference(
        ModelArgs(model="tiny-qwen2-vl", backend="hf"), str(output / "adapter")
    )
    from vlm_unsloth.data.loaders import DataSpec, load_sft_dataset
    from vlm_unsloth.data.splits import DEMO_DIR

    record = load_sft_dataset(DataSpec(dataset=str(DEMO_DIR / "eval.jsonl")))[0]
    batch = _inputs(tuned, [record], 768, None)
    with torch.no_grad():
        merged_logits, tuned_logits = merged(**batch).logits, tuned.model(**batch).logits
        with tuned.model.disable_adapter():
            base_logits = tuned.model(**batch).logits
    # Measured against what the adapter changes, so the check holds on any CPU's rounding and
    # fails if the merge lost (or doubled) the adapter.
    effect = (tuned_logits - base_logits).abs().max()
    assert effect > 1e-2, "two steps at lr 1e-2 must move the logits"
    assert (merged_logits - tuned_logits).abs().max() < 1e-2 * effect


def test_push_to_hub_is_checked_before_training(tmp_path, monkeypatch, capsys):
    base = ["--model", "tiny-qwen2-vl", "--backend", "hf", "--output-dir", str(tmp_path / "o")]
    assert train_sft_main([*base, "--push-to-hub", "me/charts"]) == 2  # tests run offline
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err
    assert train_sft_main([*base, "--push-to-hub", "charts"]) == 2
    assert "use OWNER/NAME" in capsys.readouterr().err
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no stored token
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert train_sft_main([*base, "--push-to-hub", "me/charts"]) == 2
    assert "not logged in" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_gpu_memory_cap_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    argv = ["--model", "tiny-qwen2-vl", "--backend", "hf", "--gpu-memory-gib", "12",
            "--output-dir", str(tmp_path / "o")]  # fmt: skip
    assert train_sft_main(argv) == 2
    assert "--gpu-memory-gib: there is no GPU to cap" in capsys.readouterr().err


@pytest.mark.slow
def test_time_spent_waiting_for_images_is_reported(tmp_path):
    import numpy as np
    from PIL import Image

    # Large noisy photos: decoding and capping them costs far more than the tiny model's step.
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    rows = []
    for index in range(12):
        pixels = rng.integers(0, 255, size=(1800, 2400, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "images" / f"{index}.png")
        rows.append({"image": f"images/{index}.png", "question": "Colour?", "answer": "grey"})
    data = tmp_path / "big.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = train_sft(
        ModelArgs(model="tiny-qwen2-vl", backend="hf"),
        LoraArgs(lora_r=8),
        DataArgs(dataset=str(data), max_side=256),
        TrainArgs(output_dir=str(tmp_path / "run"), max_steps=4, batch_size=2, grad_accum=1),
    )
    logged = [
        json.loads(line)
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if '"loss"' in line
    ]
    # How large the share is depends on this machine's speed (tests/test_callbacks.py checks the
    # arithmetic with a scripted clock); here: every log and the summary carry it.
    assert len(logged) == 4 and all(0.0 <= log["data_wait_fraction"] <= 1.0 for log in logged)
    assert 0.0 < result.summary["data_wait_fraction"] <= 1.0


@pytest.mark.slow
def test_push_to_hub_uploads_the_adapter_and_the_merged_model(tmp_path, monkeypatch):
    """The upload at the end of training, against a stand-in for the Hub's API (tests are
    offline): the adapter goes to the repo, the merged model to REPO-merged."""
    import huggingface_hub

    calls = []

    class RecordingApi:
        def create_repo(self, repo_id, **options):
            calls.append(("create", repo_id, options))

        def upload_folder(self, *, repo_id, folder_path):
            calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    output = tmp_path / "run"
    code = train_sft_main(
        ["--model", "tiny-qwen2-vl", "--backend", "hf", "--output-dir", str(output),
         "--max-steps", "1", "--max-samples", "4", "--save-merged", "--push-to-hub", "me/charts"]
    )  # fmt: skip
    assert code == 0
    assert [c[:2] for c in calls] == [
        ("create", "me/charts"), ("upload", "me/charts"),
        ("create", "me/charts-merged"), ("upload", "me/charts-merged"),
    ]  # fmt: skip
    assert calls[0][2] == {"exist_ok": True, "private": True}
    assert "adapter_model.safetensors" in calls[1][2] and "model.safetensors" in calls[3][2]
    summary = json.loads((output / "summary.json").read_text())
    assert summary["pushed_to"] == [
        "https://huggingface.co/me/charts", "https://huggingface.co/me/charts-merged"
    ]  # fmt: skip


@pytest.mark.slow
def test_text_only_rows_train_in_batches_with_image_rows(tmp_path):
    """A table whose empty image cells are text-only examples (--text-only-rows): every row is
    kept and one batch of 8 holds both kinds (the collators' mixing is tested per family in
    test_collate.py, Unsloth's included)."""
    demo = [json.loads(line) for line in (DEMO_DIR / "train.jsonl").read_text().splitlines()]
    rows = [{**row, "image": str(DEMO_DIR / row["image"])} for row in demo[:4]]
    rows += [
        {"image": None, "question": f"Say {w}.", "answer": w}
        for w in ["one", "two", "three", "four"]
    ]
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    run = tmp_path / "run"
    argv = [
        "--model", "tiny-qwen2-vl", "--backend", "hf", "--dataset", str(data), "--text-only-rows",
        "--output-dir", str(run), "--max-steps", "1", "--batch-size", "8", "--grad-accum", "1",
    ]  # fmt: skip
    assert train_sft_main(argv) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 1 and summary["train_rows"] == 8
    assert "pixel_values" in summary["model_inputs_first_step"]
    assert (run / "rejected_rows.jsonl").read_text() == ""


@pytest.mark.slow
def test_the_course_preset_trains_offline_on_a_local_chartqa_copy(tmp_path):
    """The course reader's command, with the tiny SmolVLM and a ChartQA-shaped local copy (the
    real one needs the Hub): the recipe's options run end to end."""
    from datasets import DatasetDict, Features, Sequence, Value
    from datasets import Image as ImageFeature

    charts = sorted((DEMO_DIR / "images").glob("*.png"))
    features = Features(
        {"image": ImageFeature(), "query": Value("string"), "label": Sequence(Value("string"))}
    )

    def rows(paths):
        return {"image": [str(p) for p in paths], "query": ["Which bar is highest?"] * len(paths),
                "label": [["A", "a"]] * len(paths)}  # fmt: skip

    from datasets import Dataset

    copy = DatasetDict(
        train=Dataset.from_dict(rows(charts[:16]), features=features),
        val=Dataset.from_dict(rows(charts[16:20]), features=features),
    )
    copy.save_to_disk(tmp_path / "chartqa")
    output = tmp_path / "run"
    argv = [
        "--config", str(REPO / "configs" / "smolvlm-instruct-12gb.yaml"),
        "--model", "tiny-smolvlm", "--backend", "hf", "--quantization", "16bit",
        "--dataset", str(tmp_path / "chartqa"), "--dataset-adapter", "chartqa",
        "--max-samples", "16", "--max-steps", "1", "--output-dir", str(output),
    ]  # fmt: skip
    assert train_sft_main(argv) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["global_step"] == 1 and summary["batch_size"] == 4
    import yaml

    saved = yaml.safe_load((output / "run_config.yaml").read_text())
    assert "specialized in interpreting visual data" in saved["DataArgs"]["system_prompt"]
