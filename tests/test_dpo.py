"""DPO on the tiny models (hf backend, CPU): Mllama's logits widened on CPU, the reference is the
starting policy without a second model, and preference training on a task that needs the image
raises held-out preference accuracy. Plus the DPO options and the script's --help. (The images
reach the DPO loss for every family in tests/test_every_family.py, with this file's `_trainer`.)"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO
from datasets import Dataset
from PIL import Image

from vlm_unsloth.cli import dpo_main
from vlm_unsloth.config import DataArgs, ModelArgs, parse_args
from vlm_unsloth.data.demo_colours import COLOURS, IMAGE_SIDE, QUESTION, draw_square
from vlm_unsloth.data.records import PREFERENCE_FEATURES
from vlm_unsloth.errors import ConfigError
from vlm_unsloth.models.device import DeviceSetup
from vlm_unsloth.models.loading import load_model
from vlm_unsloth.models.lora import LoraArgs
from vlm_unsloth.train.dpo import (
    DpoArgs,
    DpoTrainArgs,
    answer_log_probs,
    build_trainer,
    logits_cover_input_ids,
    preference_accuracy,
    reference_is_the_starting_policy,
)
from vlm_unsloth.train.steps import TrainingData

CPU = DeviceSetup(backend="hf", device="cpu", dtype="float32", why="test")
# Squares of 24-48 px (the SFT colour task) make DPO's escape from its colour-prior plateau
# seed-dependent within 60 steps; at 48-76 px six seeds out of six reached 100%.
SQUARE_SIZES = (48, 76)


def write_colour_preferences(folder: Path, *, train_rows=240, eval_rows=40, seed=0) -> dict:
    """train/eval/blank_eval JSONL of {image, question, chosen, rejected}: chosen is the square's
    colour, rejected one of the other three. blank_eval: the eval rows on a plain white image."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows: dict[str, list[dict]] = {}
    for split, count in (("train", train_rows), ("eval", eval_rows)):
        rows[split] = []
        for index in range(count):
            colour = rng.choice(sorted(COLOURS))
            wrong = rng.choice([other for other in sorted(COLOURS) if other != colour])
            name = f"images/{split}_{index:04d}.png"
            draw_square(colour, rng, sizes=SQUARE_SIZES).save(folder / name)
            rows[split].append(
                {"image": name, "question": QUESTION, "chosen": colour, "rejected": wrong}
            )
    Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), "white").save(folder / "images" / "blank.png")
    rows["blank_eval"] = [{**row, "image": "images/blank.png"} for row in rows["eval"]]
    paths = {}
    for split, lines in rows.items():
        paths[split] = folder / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(line) + "\n" for line in lines))
    return paths


def _png(image: Image.Image) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _record(image: Image.Image, chosen: str, rejected: str) -> dict:
    return {
        "prompt": [
            {
                "role": "user",
                "content": [{"type": "image", "text": None}, {"type": "text", "text": QUESTION}],
            }
        ],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": chosen}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": rejected}]}],
        "images": [_png(image)],
        "source": "test",
    }


def _records(images: list[Image.Image]) -> list[dict]:
    answers = [("red", "blue"), ("green", "yellow"), ("blue", "red"), ("yellow", "green")]
    return [_record(image, *answers[i % 4]) for i, image in enumerate(images)]


def _coloured_images() -> list[Image.Image]:
    rng = random.Random(0)
    return [
        draw_square(colour, rng, sizes=SQUARE_SIZES)
        for colour in ("red", "green", "blue", "yellow")
    ]


def _trainer(name: str, output: Path, *, adapter: str | None = None):
    """The trainer `train_dpo` builds, on a few made-up records: (loaded, trainer, reference)."""
    lora = LoraArgs(lora_r=8, lora_alpha=16, modules_to_save=["lm_head"])
    loaded = load_model(ModelArgs(model=name, backend="hf", adapter=adapter), lora, CPU, seed=0)
    records = Dataset.from_list(_records(_coloured_images()), features=PREFERENCE_FEATURES)
    data = TrainingData(train=records, eval=None, report=None)
    train_args = DpoTrainArgs(output_dir=str(output))
    trainer = build_trainer(loaded, data, DataArgs(), train_args, DpoArgs(), output)
    reference = reference_is_the_starting_policy(trainer, started_from_adapter=adapter is not None)
    return loaded, trainer, reference


def _perturb_adapter(model, seed: int = 1) -> None:
    """Move the trainable weights away from the start, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))


# ---------------------------------------------------------------------------------------------
# The images reach the DPO loss


def test_mllama_on_cpu_needs_its_logits_widened(tmp_path):
    """TRL 1.14.2's CPU log-prob gathers at every input id; Mllama's <|image|> id is past the LM
    head. If this starts passing without the widening, `logits_cover_input_ids` can go."""
    loaded, trainer, _ = _trainer("tiny-llama-3.2-vision", tmp_path)
    batch = trainer.data_collator(_records(_coloured_images()))
    with pytest.raises(RuntimeError, match="out of bounds"):
        trainer.compute_ref_log_probs(trainer.model, batch)
    with logits_cover_input_ids(loaded):
        trained = torch.cat(trainer.compute_ref_log_probs(trainer.model, batch))
    # The widened columns have probability exactly 0: the answers' log-probs are unchanged.
    with torch.no_grad(), trainer.model.disable_adapter():
        ours = answer_log_probs(trainer.model, batch)
    torch.testing.assert_close(trained, ours, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The reference is the starting policy, never a second model


def test_reference_is_the_adapter_disabled_policy(tmp_path):
    lora = LoraArgs(lora_r=8, lora_alpha=16, modules_to_save=["lm_head"])
    parameters_before = sum(
        p.numel()
        for p in load_model(
            ModelArgs(model="tiny-qwen2-vl", backend="hf"), lora, CPU, seed=0
        ).model.parameters()
    )
    loaded, trainer, reference = _trainer("tiny-qwen2-vl", tmp_path)
    model = trainer.model
    assert trainer.ref_model is None  # TRL loads no second model for a PEFT model
    assert list(model.peft_config) == ["default"]  # and keeps no copy of a fresh adapter
    assert sum(p.numel() for p in model.parameters()) == parameters_before
    assert "adapter disabled" in reference

    batch = trainer.data_collator(_records(_coloured_images()))
    _perturb_adapter(model)  # as after some training
    with torch.no_grad():
        policy = answer_log_probs(model, batch)
        with model.disable_adapter():
            base = answer_log_probs(model, batch)
    trainer_reference = torch.cat(trainer.compute_ref_log_probs(model, batch))
    torch.testing.assert_close(trainer_reference, base, rtol=1e-5, atol=1e-5)
    assert (policy - base).abs().max() > 1e-2


def test_reference_of_an_sft_adapter_run_is_that_adapter(tmp_path):
    """--adapter: DPO stays close to the SFT policy it starts from, not to the base model."""
    sft_model = load_model(
        ModelArgs(model="tiny-qwen2-vl", backend="hf"),
        LoraArgs(lora_r=8, lora_alpha=16, modules_to_save=["lm_head"]),
        CPU,
        seed=0,
    ).model
    _perturb_adapter(sft_model, seed=7)
    sft_model.save_pretrained(tmp_path / "sft_adapter")

    loaded, trainer, reference = _trainer(
        "tiny-qwen2-vl", tmp_path / "run", adapter=str(tmp_path / "sft_adapter")
    )
    model = trainer.model
    assert trainer.ref_model is None
    assert "frozen copy" in reference and set(model.peft_config) == {"default", "ref"}
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".ref." in n)

    batch = trainer.data_collator(_records(_coloured_images()))
    with torch.no_grad():
        sft_policy = answer_log_probs(model, batch)
        with model.disable_adapter():
            base = answer_log_probs(model, batch)
    _perturb_adapter(model)  # the trained adapter moves; the reference must not
    trainer_reference = torch.cat(trainer.compute_ref_log_probs(model, batch))
    torch.testing.assert_close(trainer_reference, sft_policy, rtol=1e-5, atol=1e-5)
    assert (sft_policy - base).abs().max() > 1e-2


@pytest.mark.slow
def test_resuming_an_sft_adapter_run_continues_from_the_checkpoint(tmp_path):
    """With TRL's "ref" copy in the checkpoint, transformers restores only that sub-folder
    adapter; `restore_trained_adapter` must bring the trained one back."""
    from safetensors.torch import load_file

    paths = write_colour_preferences(tmp_path / "task", train_rows=8, eval_rows=4)
    sft_model = load_model(
        ModelArgs(model="tiny-qwen2-vl", backend="hf"), LoraArgs(lora_r=8), CPU, seed=0
    ).model
    _perturb_adapter(sft_model, seed=7)
    sft_model.save_pretrained(tmp_path / "sft_adapter")
    run = tmp_path / "run"
    common = [
        "--model", "tiny-qwen2-vl", "--backend", "hf", "--adapter", str(tmp_path / "sft_adapter"),
        "--dataset", str(paths["train"]), "--output-dir", str(run), "--batch-size", "2",
        "--grad-accum", "1", "--max-steps", "2", "--save-steps", "2", "--learning-rate", "1e-2",
        "--accuracy-rows", "0",
    ]  # fmt: skip
    assert dpo_main(common) == 0
    checkpoint = load_file(run / "checkpoint-2" / "adapter_model.safetensors")
    assert (run / "checkpoint-2" / "ref").is_dir()  # the layout that trips transformers
    assert not (run / "adapter" / "ref").exists()  # the saved adapter is the trained one only
    (run / "adapter" / "adapter_model.safetensors").unlink()
    assert dpo_main([*common, "--resume"]) == 0  # 0 steps left: saves what it resumed
    resumed = load_file(run / "adapter" / "adapter_model.safetensors")
    sft = load_file(tmp_path / "sft_adapter" / "adapter_model.safetensors")
    assert resumed.keys() == checkpoint.keys()
    assert all(torch.equal(resumed[key], checkpoint[key]) for key in checkpoint)
    assert not all(torch.equal(resumed[key], sft[key]) for key in sft)


# ---------------------------------------------------------------------------------------------
# Learning: DPO makes the model prefer the right colour, read from the image


@pytest.mark.slow
def test_dpo_learns_a_preference_that_needs_the_image(tmp_path):
    from vlm_unsloth.data.loaders import DataSpec, load_preference_dataset
    from vlm_unsloth.infer.generation import load_for_inference

    paths = write_colour_preferences(tmp_path / "task")
    output = tmp_path / "run"
    code = dpo_main(
        [
            "--model", "tiny-qwen2-vl", "--backend", "hf",
            "--dataset", str(paths["train"]), "--eval-dataset", str(paths["eval"]),
            "--output-dir", str(output),
            # The tiny model's LM head is random: train it too (as in the SFT colour recipe).
            "--lora-r", "16", "--lora-alpha", "64", "--modules-to-save", "lm_head",
            "--beta", "0.5", "--learning-rate", "3e-3", "--warmup-ratio", "0.1",
            "--batch-size", "16", "--grad-accum", "1", "--max-steps", "60",
            "--save-steps", "1000", "--no-gradient-checkpointing",
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((output / "summary.json").read_text())
    before, after = summary["preference_accuracy_before"], summary["preference_accuracy_after"]
    margin, seconds = summary["preference_margin_after"], summary["wall_time_s"]
    print(f"held-out preference accuracy {before:.1%} -> {after:.1%} ({margin:+.2f}), {seconds} s")
    assert 0.3 <= before <= 0.7
    assert after >= 0.9
    assert summary["preference_rows_after"] == 40

    # TRL's DPO metrics reach metrics.jsonl, and the reward accuracy rose.
    logged = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in logged if "loss" in row]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                "logps/chosen", "logps/rejected"):  # fmt: skip
        assert all(key in row for row in steps), key
    assert max(row["rewards/accuracies"] for row in steps[-10:]) == 1.0
    assert any("eval_rewards/accuracies" in row for row in logged)

    # It reads the image: on blank images the trained adapter is back near chance.
    adapter = str(output / "adapter")
    loaded = load_for_inference(ModelArgs(model="tiny-qwen2-vl", backend="hf"), adapter)
    blank = load_preference_dataset(DataSpec(dataset=str(paths["blank_eval"])))
    on_blank = preference_accuracy(loaded.model, loaded.processor, blank, max_side=768)
    print(f"same adapter on blank images: {on_blank.accuracy:.1%}, "
          f"margin {on_blank.mean_margin:+.2f} nats")  # fmt: skip
    assert on_blank.accuracy <= 0.75  # 40 rows at chance: 50% +- 8%
    assert abs(on_blank.mean_margin) < margin / 3


# ---------------------------------------------------------------------------------------------
# Options and the script


def test_dpo_defaults_differ_from_sft_where_they_should():
    model, lora, data, train, dpo = parse_args(
        [ModelArgs, LoraArgs, DataArgs, DpoTrainArgs, DpoArgs], []
    )
    assert (train.learning_rate, train.output_dir) == (5e-5, "outputs/dpo")
    assert (dpo.beta, dpo.loss_type) == (0.1, ["sigmoid"])
    *_, train, dpo = parse_args(
        [ModelArgs, LoraArgs, DataArgs, DpoTrainArgs, DpoArgs],
        ["--learning-rate", "1e-5", "--loss-type", "sigmoid", "sft", "--loss-weights", "1", "0.5"],
    )
    assert train.learning_rate == 1e-5
    assert (dpo.loss_type, dpo.loss_weights) == (["sigmoid", "sft"], [1.0, 0.5])


def test_every_dpo_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as error:
        parse_args(
            [ModelArgs, LoraArgs, DataArgs, DpoTrainArgs, DpoArgs],
            ["--beta", "0", "--loss-type", "sigmoid", "nope", "--loss-weights", "1",
             "--eval-at-end"],
        )  # fmt: skip
    message = str(error.value)
    for expected in ("--beta 0", "--loss-type nope", "--loss-weights", "--eval-at-end"):
        assert expected in message


def test_train_dpo_script_help():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_dpo.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for flag in ("--beta", "--loss-type", "--adapter", "--chosen-column", "--rejected-column",
                 "--accuracy-rows", "--learning-rate"):  # fmt: skip
        assert flag in result.stdout
    assert "(default: 5e-05)" in result.stdout


@pytest.mark.slow
def test_text_only_preference_rows_train_with_image_rows(tmp_path):
    """--text-only-rows in a preference table: all 8 rows kept, one batch holds both kinds."""
    from vlm_unsloth.data.splits import DEMO_DIR

    image = str(DEMO_DIR / "images" / "bar_0001.png")
    rows = [{"image": image, "question": "Colour?", "chosen": "red", "rejected": "blue"}] * 4
    rows += [{"image": None, "question": "Say one.", "chosen": "one", "rejected": "two"}] * 4
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    run = tmp_path / "run"
    code = dpo_main([
        "--model", "tiny-qwen2-vl", "--backend", "hf", "--dataset", str(data), "--text-only-rows",
        "--output-dir", str(run), "--max-steps", "1", "--batch-size", "8", "--grad-accum", "1",
    ])  # fmt: skip
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 1 and summary["train_rows"] == 8
    assert summary["model_inputs_first_step"]["image_grid_thw"][0] == 8  # 4 rows x chosen/rejected
