"""SmolVLM (idefics3), SmolVLM2 (smolvlm) and Pixtral (llava) end to end on the tiny checkpoints
(hf backend, CPU): what --max-side means and what inspect_data counts, checked against the
processors; resume, merge, --batch-size auto and out-of-memory recovery; and a learning test per
family with the blank-image control. (SFT save/reload/generate, DPO, inference, LoRA selection
and collation run over every tiny model in their own test files.)

Learning (the colour task of tests/tasks.py, Qwen2-VL's recipe unchanged: 60 steps of 8 at
lr 5e-3, LoRA r16 alpha 64 with lm_head saved; measured on 2 CPU cores shared with other jobs):
held-out exact match 0% (base) -> 100% for all three, 22.5% / 22.5% / 25% on blank images
(chance 25%). Training took 7.6 s (SmolVLM2) and 7.7 s (Pixtral) on a quiet machine; 100-130 s
each (and 110 s for tiny Qwen2-VL's own run) while other test suites loaded the cores.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
import transformers
from conftest import assert_same_adapters
from PIL import Image
from tasks import colour_training_args, write_colour_task
from test_batch_memory import GradientRecorder, assert_same_gradients

from vlm_unsloth.config import DataArgs, ModelArgs, TrainArgs
from vlm_unsloth.data.collate import SftCollator
from vlm_unsloth.data.image_tokens import count_image_tokens, image_cap
from vlm_unsloth.data.loaders import DataSpec, load_sft_dataset
from vlm_unsloth.data.splits import DEMO_DIR
from vlm_unsloth.models.lora import LoraArgs
from vlm_unsloth.train.inspect import inspect_dataset
from vlm_unsloth.train.sft import train_sft

NEW = ["tiny-smolvlm", "tiny-smolvlm2", "tiny-pixtral"]
INNER_MODEL = {"tiny-smolvlm": "Idefics3Model", "tiny-smolvlm2": "SmolVLMModel",
               "tiny-pixtral": "LlavaModel"}  # fmt: skip


# --- --max-side and inspect_data's counts ------------------------------------------------------


def _sizes_dataset(folder, sizes) -> str:
    (folder / "images").mkdir(parents=True)
    rows = []
    for index, (width, height) in enumerate(sizes):
        name = f"images/{index:03d}.png"
        Image.new("RGB", (width, height), (200, 40 + index % 200, 40)).save(folder / name)
        rows.append({"image": name, "question": "What colour is it?", "answer": "red"})
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


SIZES = [
    (1, 1), (3, 700), (700, 3), (60, 40), (84, 84), (127, 129), (300, 200), (500, 333),
    (640, 480), (767, 769), (1000, 1000), (1025, 1023), (2000, 11), (1600, 1200), (300, 4500),
]  # fmt: skip


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("max_side", [768, 1024, 300])
def test_inspect_data_counts_what_the_processor_makes_and_never_cuts_an_image(
    name, max_side, tmp_path, tiny_ref, tiny_processor, capsys
):
    """inspect_data's count of every row equals the processor's input_ids; rows over
    --max-seq-length are rejected whole (never truncated inside their image tokens); the image
    the model sees is never longer than --max-side (one tile at least, for SmolVLM)."""
    sizes = SIZES + [(random.Random(i).randint(1, 2500), random.Random(-i).randint(1, 2500))
                     for i in range(1, 6)]  # fmt: skip
    dataset = _sizes_dataset(tmp_path, sizes)
    family, processor = tiny_ref(name).family, tiny_processor(name)
    everything = inspect_dataset(
        DataArgs(dataset=dataset, max_side=max_side, max_seq_length=100_000), model=name
    )
    assert everything.kept_count == len(sizes)
    totals = sorted(set(everything.token_counts))
    limit = totals[len(totals) // 2]  # the rows above it are too long
    capsys.readouterr()
    report = inspect_dataset(
        DataArgs(dataset=dataset, max_side=max_side, max_seq_length=limit), model=name
    )
    printed = capsys.readouterr().out
    assert report.rejected_count == sum(t > limit for t in everything.token_counts) > 0
    assert {r.reason for r in report.rejected} == {"too_long"}
    assert f"max_seq_length {limit}" in printed and str(max(report.token_counts)) in printed
    collator = SftCollator(processor, family, max_side=max_side, train_on_prompt=False)
    image_id = processor.tokenizer.convert_tokens_to_ids(family.image_token)
    tile = 0
    if family.image_scheme.name == "idefics3":  # an image under one tile is one tile-sized view
        tile = processor.image_processor.max_image_size["longest_edge"]
    for record in everything.kept:
        batch = collator([record])
        size = Image.open(record["images"][0]["path"]).size
        expected = count_image_tokens(family, *_capped(family, processor, size, max_side),
                                      processor)  # fmt: skip
        # inspect_data's count is the processor's length, image tokens whole.
        assert batch["input_ids"].shape[1] == record["num_tokens"], (record["source"], size)
        assert int((batch["input_ids"][0] == image_id).sum()) == expected.vision_tokens
        assert max(expected.resized) <= max(max_side, tile)


def _capped(family, processor, size, max_side):
    from vlm_unsloth.data.images import cap_longest_side

    return cap_longest_side(*size, image_cap(family, max_side, processor))


# --- resume, merge, --batch-size auto, out-of-memory recovery ----------------------------------


def _sft(name, output, callbacks=(), **train):
    """A short run on the demo charts, capped at 256 px: these tests check the mechanics."""
    return train_sft(
        ModelArgs(model=name, backend="hf"),
        LoraArgs(lora_r=8, lora_alpha=16, lora_dropout=0.0),
        DataArgs(max_samples=16, max_side=256),
        TrainArgs(output_dir=str(output), **{"max_steps": 2, "learning_rate": 1e-3, **train}),
        extra_callbacks=list(callbacks),
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_resume_and_merge(name, tmp_path):

    from vlm_unsloth.infer.generation import _inputs, load_for_inference

    # A constant learning rate: the 2-step run's schedule is then the 4-step run's first half.
    train = dict(batch_size=2, grad_accum=1, learning_rate=1e-2, save_steps=2,
                 lr_scheduler_type="constant", warmup_ratio=0.0)  # fmt: skip
    _sft(name, tmp_path / "straight", max_steps=4, save_merged=True, **train)
    _sft(name, tmp_path / "resumed", max_steps=2, **train)
    resumed = _sft(name, tmp_path / "resumed", max_steps=4, resume=True, **train)
    assert resumed.summary["global_step"] == 4
    assert_same_adapters(tmp_path / "straight", tmp_path / "resumed")

    merged = transformers.AutoModelForImageTextToText.from_pretrained(
        tmp_path / "straight" / "merged"
    )
    tuned = load_for_inference(
        ModelArgs(model=name, backend="hf"), str(tmp_path / "straight" / "adapter")
    )
    record = load_sft_dataset(DataSpec(dataset=str(DEMO_DIR / "eval.jsonl")))[0]
    batch = _inputs(tuned, [record], 256, None)
    with torch.no_grad():
        merged_logits, tuned_logits = merged(**batch).logits, tuned.model(**batch).logits
        with tuned.model.disable_adapter():
            base_logits = tuned.model(**batch).logits
    effect = (tuned_logits - base_logits).abs().max()
    assert effect > 1e-2
    assert (merged_logits - tuned_logits).abs().max() < 1e-2 * effect


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_auto_batch_size_and_out_of_memory_recovery(name, tmp_path, memory_limit):
    sgd = dict(batch_size=4, grad_accum=2, optim="sgd", weight_decay=0.0)
    plain_grads, split_grads = GradientRecorder(), GradientRecorder()
    _sft(name, tmp_path / "plain", [plain_grads], **sgd)
    calls = memory_limit(rows=2, model_class=getattr(transformers, INNER_MODEL[name]))
    split = _sft(name, tmp_path / "split", [split_grads], **sgd)
    assert calls["oom"] == 1 and split.summary["global_step"] == 2
    assert_same_gradients(plain_grads, split_grads)

    auto = _sft(name, tmp_path / "auto", batch_size="auto", effective_batch_size=8, max_steps=1)
    assert (auto.summary["batch_size"], auto.summary["grad_accum"]) == (2, 4)


# --- learning, with the blank-image control ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_learns_what_only_the_image_shows(name, tmp_path):
    """The colour task: the base model 0%, fine-tuned >= 95% (evaluate's report, written by
    --eval-at-end), and back to chance when every eval image is blank."""
    from vlm_unsloth.cli import train_sft_main
    from vlm_unsloth.infer.args import PromptDataArgs
    from vlm_unsloth.infer.evaluate import evaluate_adapter

    task = write_colour_task(tmp_path / "task")
    run = tmp_path / "run"
    assert train_sft_main([*colour_training_args(task, run, model=name), "--eval-at-end"]) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert (run / "eval" / "report.html").is_file()
    blank = evaluate_adapter(
        str(run), data_args=PromptDataArgs(dataset=str(task.blank_eval)),
        output_dir=tmp_path / "blank", num_samples=2,
    )  # fmt: skip
    base, tuned = metrics["base"]["exact_match"], metrics["fine_tuned"]["exact_match"]
    on_blank = blank.metrics["fine_tuned"]["exact_match"]
    seconds = json.loads((run / "summary.json").read_text())["wall_time_s"]
    print(f"{name}: base {base:.1%} -> fine-tuned {tuned:.1%}; blank images {on_blank:.1%}; "
          f"{seconds} s")  # fmt: skip
    assert base <= 0.3 and tuned >= 0.95
    assert on_blank <= 0.4  # 40 rows, chance 25%


# --- the course's preset -------------------------------------------------------------------------


def test_the_course_preset_is_smolvlm_instruct_on_chartqa_at_768():
    from conftest import REPO

    from vlm_unsloth.config import parse_args

    preset = REPO / "configs" / "smolvlm-instruct-12gb.yaml"
    model, lora, data, train = parse_args(
        [ModelArgs, LoraArgs, DataArgs, TrainArgs], ["--config", str(preset)]
    )
    assert (model.model, data.dataset, data.max_side) == (
        "HuggingFaceTB/SmolVLM-Instruct", "HuggingFaceM4/ChartQA", 768,
    )  # fmt: skip
    assert (train.batch_size, train.grad_accum, train.learning_rate) == (4, 4, 1e-4)
    assert data.system_prompt.startswith("You are a Vision Language Model specialized")


@pytest.mark.slow
def test_the_course_preset_trains_offline_on_a_local_chartqa_copy(tmp_path):
    """The course reader's command, with the tiny SmolVLM and a ChartQA-shaped local copy (the
    real one needs the Hub): the recipe's options run end to end."""
    from conftest import REPO
    from datasets import DatasetDict, Features, Sequence, Value
    from datasets import Image as ImageFeature

    from vlm_unsloth.cli import train_sft_main

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
