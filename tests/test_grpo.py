"""GRPO on the tiny models (hf backend, CPU): image token types line up with left-padded prompts,
image placeholders are never sampled, an SFT adapter run resumes, a bad reward stops with one
line, and GRPO on an image-dependent task raises held-out accuracy (and does not with blank
images). Plus the options and --help. (The images reach the loss, and the real command trains,
logs, saves and resumes, for every family in tests/test_every_family.py, with this file's
`_trainer`.)"""

from __future__ import annotations

import io
import json
import random
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY_MODELS, each_family, must_not_be_called
from datasets import Dataset
from PIL import Image
from tasks import colour_training_args, write_colour_task

from vlm_unsloth.cli import grpo_main, train_sft_main
from vlm_unsloth.config import DataArgs, ModelArgs, parse_args
from vlm_unsloth.data.demo_colours import COLOURS, IMAGE_SIDE, QUESTION, draw_square
from vlm_unsloth.data.records import SFT_FEATURES
from vlm_unsloth.data.splits import DEMO_DIR
from vlm_unsloth.errors import ConfigError
from vlm_unsloth.families import TINY_MODEL_NAMES
from vlm_unsloth.models.device import DeviceSetup
from vlm_unsloth.models.loading import load_model
from vlm_unsloth.models.lora import LoraArgs
from vlm_unsloth.train.grpo import build_trainer
from vlm_unsloth.train.grpo_options import GrpoArgs, GrpoTrainArgs
from vlm_unsloth.train.rewards import checked, completion_text
from vlm_unsloth.train.steps import TrainingData

CPU = DeviceSetup(backend="hf", device="cpu", dtype="float32", why="test")
GRPO_ARGS = [ModelArgs, LoraArgs, DataArgs, GrpoTrainArgs, GrpoArgs]


def _png(image: Image.Image) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _records(count: int = 4, sides: tuple[int, ...] = (IMAGE_SIDE,)) -> list[dict]:
    """Canonical SFT records of the colour task (the answer is only in the image), with images
    of the given sizes in turn."""
    rng = random.Random(0)
    records = []
    for index in range(count):
        colour = sorted(COLOURS)[index % 4]
        side = sides[index % len(sides)]
        user = [{"type": "image", "text": None}, {"type": "text", "text": QUESTION}]
        records.append(
            {
                "messages": [
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": [{"type": "text", "text": colour}]},
                ],
                "images": [_png(draw_square(colour, rng, side=side))],
                "source": f"test.jsonl:{index + 1}",
            }
        )
    return records


# Varies between sampled answers (so advantages, and gradients, are not zero) and needs no
# trained model. (Their lengths did not: four random answers of tiny SmolVLM2 had 11 characters.)
text_checksum = checked("text_checksum", lambda completions, **kw: [
    float(zlib.crc32(completion_text(c).encode()) % 1000) for c in completions
])  # fmt: skip


def _trainer(
    name: str, output: Path, *, batch_size=4, sides=(IMAGE_SIDE,), checkpointing=False,
    max_steps=1, callbacks=(), lora_dropout=0.0, **grpo,
):  # fmt: skip
    """The trainer `train_grpo` builds, on four records, with a reward that varies."""
    lora = LoraArgs(lora_r=8, lora_alpha=16, modules_to_save=["lm_head"], lora_dropout=lora_dropout)
    model_args = ModelArgs(model=name, backend="hf", gradient_checkpointing=checkpointing)
    loaded = load_model(model_args, lora, CPU, seed=0)
    records = Dataset.from_list(_records(sides=sides), features=SFT_FEATURES)
    data = TrainingData(train=records, eval=None, report=None)
    train_args = GrpoTrainArgs(
        output_dir=str(output), batch_size=batch_size, grad_accum=1, max_steps=max_steps,
        learning_rate=1e-3, logging_steps=1,
    )  # fmt: skip
    grpo_args = GrpoArgs(**{"num_generations": 4, "max_completion_length": 4, **grpo})
    trainer = build_trainer(
        loaded, data, DataArgs(), train_args, grpo_args, [text_checksum], output,
        callbacks=callbacks,
    )  # fmt: skip
    return loaded, trainer


def _loss_batch(trainer) -> dict:
    """The batch GRPOTrainer's loss received at its first step (after sampling and scoring)."""
    seen = []
    original = trainer._compute_loss

    def keep(model, inputs):
        if not seen:
            seen.append({k: v.clone() if torch.is_tensor(v) else v for k, v in inputs.items()})
        return original(model, inputs)

    trainer._compute_loss = keep
    try:
        trainer.train()
    finally:
        del trainer._compute_loss
    return seen[0]


def _loss_path_logps(trainer, inputs: dict) -> torch.Tensor:
    """The policy's per-token log-probabilities as `_compute_loss` computes them for `inputs`."""
    seen = []
    original = trainer._get_per_token_logps_and_entropies

    def keep(*args, **kwargs):
        result = original(*args, **kwargs)
        seen.append(result[0].detach())
        return result

    trainer._get_per_token_logps_and_entropies = keep
    try:
        with torch.no_grad():
            trainer._compute_loss(trainer.model, inputs)
    finally:
        del trainer._get_per_token_logps_and_entropies
    return seen[0]


# ---------------------------------------------------------------------------------------------
# Prompts and sampling


@each_family(
    name for name, f in TINY_MODEL_NAMES.items() if f.image_scheme.name in ("qwen", "qwen3")
)  # the families whose processor writes mm_token_type_ids (M-RoPE image positions)
def test_image_token_types_line_up_with_left_padded_prompts(name, tmp_path, one_thread):
    """TRL left-pads the prompt ids, and its loss-path processor call pads mm_token_type_ids (which
    place Qwen's M-RoPE image positions) on the tokenizer's side: they must agree on prompts of
    different lengths."""
    from trl import GRPOTrainer

    # 4 prompts x 2 answers: all four records, images of two sizes, so prompts of two lengths.
    loaded, trainer = _trainer(name, tmp_path, batch_size=8, num_generations=2, sides=(84, 112))
    tokenizer = loaded.processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids(loaded.family.image_token)
    rows = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()

    def image_types_match(batch) -> bool:
        prompt_ids = batch["prompt_ids"]
        types = batch["mm_token_type_ids"][:, : prompt_ids.size(1)]
        return torch.equal(types == 1, prompt_ids == image_id)

    ours = trainer._generate_and_score_completions(rows)
    assert len(set(ours["prompt_mask"].sum(1).tolist())) == 2  # there is padding to get right
    assert image_types_match(ours)
    assert tokenizer.padding_side == "right"  # restored for the collators and the saved files
    plain = GRPOTrainer._generate_and_score_completions(trainer, rows)
    assert not image_types_match(plain)  # TRL alone (if it matches, the padding can go)


def test_media_tokens_are_never_sampled(tiny_processor, tiny_ref):
    from vlm_unsloth.train.grpo_trainer import media_token_ids

    for name in TINY_MODELS:
        tokenizer = tiny_processor(name).tokenizer
        family = tiny_ref(name).family
        ids = media_token_ids(tokenizer, family)
        names = tokenizer.convert_ids_to_tokens(ids)
        print(name, names)
        assert set(family.unsupervised_tokens) <= set(names)  # images and their layout
        if family.image_scheme.name == "qwen":
            assert {"<|vision_start|>", "<|vision_end|>", "<|video_pad|>"} <= set(names)
        end_of_turn = tokenizer.convert_tokens_to_ids(family.end_of_turn)
        assert end_of_turn not in ids


# ---------------------------------------------------------------------------------------------
# Speed: sampling in inference mode, the step's phases, TRL's generation knobs


def _greedy(trainer) -> None:
    trainer.generation_config.do_sample = False
    trainer.generation_kwargs["do_sample"] = False


def test_answers_are_sampled_from_the_policy_in_inference_mode(tmp_path, one_thread):
    """The answers sampled for training are the ones the policy gives in inference mode (greedy:
    token for token), with --lora-dropout and gradient checkpointing on, LoRA unmerged; the
    model is back in its training setup after. (TRL alone samples in training mode: with LoRA
    dropout on, from a noisier policy.)"""
    loaded, trainer = _trainer(
        "tiny-qwen2-vl", tmp_path, checkpointing=True, max_completion_length=12,
        lora_dropout=0.5,
    )  # fmt: skip
    _greedy(trainer)
    model = trainer.model
    torch.manual_seed(0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # a trained adapter's B is not zero: its dropout then matters
            torch.nn.init.normal_(parameter, std=0.5)
    rows = next(iter(trainer.get_train_dataloader()))
    model.train()
    assert model.is_gradient_checkpointing
    sampled = trainer._generate_and_score_completions(rows)["completion_ids"]
    assert model.training and model.is_gradient_checkpointing  # restored for the loss
    lora_layers = [m for m in model.modules() if hasattr(m, "merged")]
    assert lora_layers and not any(m.merged for m in lora_layers)

    # The reference: the same batch with the model set up for inference by hand (the switch
    # then changes nothing).
    model.gradient_checkpointing_disable()
    model.eval()
    reference = trainer._generate_and_score_completions(rows)["completion_ids"]
    assert (reference != loaded.processor.tokenizer.pad_token_id).sum(1).min() > 2
    assert torch.equal(sampled, reference)


def test_phases_add_up_to_the_step_and_num_iterations_halves_sampling(tmp_path, one_thread):
    """`sample_seconds + reward_seconds + train_seconds` is the step's wall time (here: from
    on_step_begin to on_step_end, which holds the micro-batches' forward/backward with the
    sampling inside the first, and the optimizer step) within 10%; with --num-iterations 2
    every other step reuses its generation batch: half the generate calls, and those steps log
    0 sample seconds."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.seconds = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.started)

    calls = {}
    for iterations in (1, 2):
        clock = StepClock()
        _, trainer = _trainer(
            "tiny-qwen2-vl", tmp_path / str(iterations), checkpointing=True, max_steps=4,
            num_iterations=iterations, max_completion_length=8, callbacks=[clock],
        )  # fmt: skip
        assert trainer.args.num_iterations == iterations
        calls[iterations] = 0
        generate = trainer.model.generate

        def counting(*args, _generate=generate, _n=iterations, **kwargs):
            calls[_n] += 1
            return _generate(*args, **kwargs)

        trainer.model.generate = counting
        trainer.train()
        logs = [log for log in trainer.state.log_history if "loss" in log]
        assert len(logs) == len(clock.seconds) == 4
        for log, seconds in zip(logs, clock.seconds, strict=True):
            phases = log["sample_seconds"] + log["reward_seconds"] + log["train_seconds"]
            assert abs(phases - seconds) <= 0.1 * seconds, (log, seconds)
            assert log["train_seconds"] > 0
        sampled = [log["sample_seconds"] > 0 for log in logs]
        assert sampled == ([True] * 4 if iterations == 1 else [True, False, True, False])
        for log, sampling in zip(logs, sampled, strict=True):
            # Tokens over sampling seconds; nothing to divide in a step that sampled nothing.
            assert (log.get("generated_tokens_per_second", 0) > 0) == sampling
    assert calls == {1: 4, 2: 2}  # one generate call for each generation batch of 4 answers


def test_generation_options_reach_trl_and_bad_ones_stop_with_one_line(tmp_path, capsys):
    *_, train, grpo = parse_args(
        GRPO_ARGS,
        ["--generation-batch-size", "8", "--num-iterations", "2", "--max-completion-length",
         "32", "--batch-size", "4", "--grad-accum", "1"],
    )  # fmt: skip
    assert (grpo.generation_batch_size, grpo.num_iterations) == (8, 2)
    assert grpo.steps_per_generation is None and grpo.cache_implementation is None
    with pytest.raises(ConfigError) as error:
        parse_args(
            GRPO_ARGS,
            ["--generation-batch-size", "6", "--steps-per-generation", "2",
             "--num-iterations", "0"],
        )  # fmt: skip
    message = str(error.value)
    assert "--generation-batch-size 6 is not a multiple of --num-generations 4" in message
    assert "use 8" in message and "give one" in message and "--num-iterations 0" in message
    assert "\n" not in message

    base = ["--backend", "hf", "--model", "tiny-qwen2-vl", "--output-dir", str(tmp_path / "r")]
    for flags, expected in (
        (["--batch-size", "4", "--generation-batch-size", "6", "--num-generations", "2"],
         "--generation-batch-size 6 is not a multiple of batch 4 x 1 process(es) = 4"),
        (["--batch-size", "2", "--grad-accum", "2", "--steps-per-generation", "1"],
         "--steps-per-generation 1 x batch 2 x 1 process(es) = 2 answers sampled together"),
    ):  # fmt: skip
        assert grpo_main(base + flags) == 2
        error = capsys.readouterr().err.strip()
        print(error)
        assert error.startswith("error: ") and expected in error and "\n" not in error
        assert "use --" in error
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_auto_batch_size_samples_the_step_and_picks_the_micro_batch_that_fits(
    tmp_path, memory_limit, capsys, one_thread
):
    """--batch-size auto: a step's 8 answers sampled together at full length, then micro-batches
    1, 2, 4, 8 probed with the GRPO loss; a training forward of more than 2 rows runs out of
    memory (simulated, as SFT's tests do), so 2 x 4, generation batch 8; training never ran out."""
    calls = memory_limit(rows=2)
    train, _ = _write_task(tmp_path / "task")
    code = grpo_main([
        "--backend", "hf", "--model", "tiny-qwen2-vl", "--dataset", str(train),
        "--batch-size", "auto", "--effective-batch-size", "8", "--num-generations", "4",
        "--max-completion-length", "6", "--max-steps", "2", "--reward-rows", "0",
        "--output-dir", str(tmp_path / "run"), "--cpu-threads", "1",
    ])  # fmt: skip
    assert code == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "batch size auto: sampling 8 answers: ran" in out
    assert "batch size auto -> 2 x 4 accumulation, 8 answers sampled" in out
    assert "sampled 8 at a time" in out  # the generation batch TRL was given
    assert calls["oom"] == 1  # the probe of 4 only
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["batch_size"], summary["grad_accum"], summary["global_step"]) == (2, 4, 2)
    logs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
            .splitlines() if '"loss"' in line]  # fmt: skip
    assert all(log["sample_seconds"] > 0 for log in logs)  # one sampling a step


def test_auto_batch_size_refuses_partial_groups_and_a_hand_set_generation_batch(tmp_path, capsys):
    base = ["--backend", "hf", "--model", "tiny-qwen2-vl", "--batch-size", "auto",
            "--output-dir", str(tmp_path / "r")]  # fmt: skip
    for flags, expected in (
        (["--effective-batch-size", "6", "--num-generations", "4"],
         "6 answers a step (6 a process) are not whole groups of --num-generations 4 — use "
         "--effective-batch-size 8"),
        (["--generation-batch-size", "8"],
         "--batch-size auto samples each step's answers together and picks the micro-batch"),
    ):  # fmt: skip
        assert grpo_main(base + flags) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        print(error)
        assert error.startswith("error: ") and expected in error
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------
# The real command on every family: train, log, save, resume; a bad reward stops with one line


def _write_task(folder: Path, rows: int = 8) -> tuple[Path, Path]:
    task = write_colour_task(folder, train_rows=rows, eval_rows=4)
    return task.train, task.eval


@pytest.mark.slow
def test_resuming_an_sft_adapter_run_with_a_reference_continues_from_the_checkpoint(
    tmp_path, one_thread
):
    """--adapter with --beta > 0: TRL keeps a frozen "ref" copy of the SFT adapter, and the
    checkpoint holds both; --resume must continue from the trained one (reference.py)."""
    from safetensors.torch import load_file

    train, _ = _write_task(tmp_path / "task")
    sft_model = load_model(
        ModelArgs(model="tiny-qwen2-vl", backend="hf"), LoraArgs(lora_r=4), CPU, seed=0
    ).model
    with torch.no_grad():  # an SFT adapter that differs from the base
        for parameter in (p for p in sft_model.parameters() if p.requires_grad):
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=torch.manual_seed(7)))
    sft_model.save_pretrained(tmp_path / "sft_adapter")
    rewards_file = tmp_path / "length.py"  # varies between answers: the adapter moves
    rewards_file.write_text(
        "def length(completions, **kwargs):\n"
        "    return [float(len(c[-1]['content'])) for c in completions]\n"
    )
    run = tmp_path / "run"
    common = [
        "--model", "tiny-qwen2-vl", "--backend", "hf", "--adapter", str(tmp_path / "sft_adapter"),
        "--dataset", str(train), "--output-dir", str(run), "--beta", "0.04",
        "--rewards", f"{rewards_file}:length",
        "--num-generations", "2", "--batch-size", "4", "--grad-accum", "1",
        "--max-completion-length", "3", "--max-steps", "2", "--save-steps", "2",
        "--learning-rate", "1e-2", "--no-gradient-checkpointing",
    ]  # fmt: skip
    assert grpo_main(common) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert "frozen copy of the starting adapter" in summary["reference"]
    assert (run / "checkpoint-2" / "ref").is_dir() and not (run / "adapter" / "ref").exists()
    checkpoint = load_file(run / "checkpoint-2" / "adapter_model.safetensors")
    (run / "adapter" / "adapter_model.safetensors").unlink()
    assert grpo_main([*common, "--resume"]) == 0  # 0 steps left: saves what it resumed
    resumed = load_file(run / "adapter" / "adapter_model.safetensors")
    sft = load_file(tmp_path / "sft_adapter" / "adapter_model.safetensors")
    assert resumed.keys() == checkpoint.keys()
    assert all(torch.equal(resumed[key], checkpoint[key]) for key in checkpoint)
    assert not all(torch.equal(resumed[key], sft[key]) for key in sft)


@pytest.mark.slow
def test_a_reward_that_raises_in_training_stops_with_one_line(tmp_path, capsys, one_thread):
    train, evaluation = _write_task(tmp_path / "task")
    rewards_file = tmp_path / "flaky.py"
    rewards_file.write_text(
        "def flaky(completions, source, **kwargs):\n"
        "    return [1 / 0 if s.endswith('train.jsonl:3') else 0.0 for s in source]\n"
    )
    ctrl_c = signal.getsignal(signal.SIGINT)
    code = grpo_main([
        "--model", "tiny-qwen2-vl", "--backend", "hf", "--dataset", str(train),
        "--output-dir", str(tmp_path / "run"), "--rewards", f"{rewards_file}:flaky",
        # 8 prompts x 2 answers: every row of the 8-row set is in the first step
        "--num-generations", "2", "--batch-size", "16", "--grad-accum", "1",
        "--max-completion-length", "2", "--max-steps", "1", "--no-gradient-checkpointing",
    ])  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    print(error)
    assert error.startswith("error: reward ") and "flaky.py:flaky" in error
    assert "row train.jsonl:3" in error and "ZeroDivisionError" in error
    # Training ended in an exception: Ctrl-C is given back all the same (a notebook's next one
    # must interrupt, not be taken for a request to save)
    assert signal.getsignal(signal.SIGINT) is ctrl_c


def test_rewards_that_can_score_no_row_stop_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """`numeric` on the colour set's answers (words): every step would go without a score."""
    from vlm_unsloth.train import steps as train_steps

    monkeypatch.setattr(train_steps, "load_model_for_training", must_not_be_called)
    code = grpo_main([
        "--model", "tiny-qwen2-vl", "--backend", "hf", "--dataset", "demo-colours",
        "--rewards", "numeric", "--max-samples", "8", "--output-dir", str(tmp_path / "run"),
        "--num-generations", "2", "--batch-size", "2",
    ])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        "error: --rewards numeric: no reward can score any of the 8 training rows: numeric cannot "
        "score 8 of 8 rows (answers that are not numbers, e.g. train.jsonl:1 'yellow') — choose "
        "rewards that fit these answers (exact_match and relaxed_accuracy score any answer, "
        "numeric only numbers), or add your own"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_step_without_scores_is_skipped_counted_and_reported(tmp_path, capsys, one_thread):
    """Step 1 is scored; in steps 2 and 3 every reward returns None. Those steps leave the
    weights exactly as step 1 left them (TRL alone would still move them: Adam's momentum and
    weight decay), are counted in metrics.jsonl and summary.json, and the reward that never
    scored is named."""
    from safetensors.torch import load_file

    rewards_file = tmp_path / "rewards.py"
    rewards_file.write_text(
        "import zlib\n"
        "def first_step(completions, trainer_state, **kwargs):\n"
        "    if trainer_state.global_step > 0:\n"
        "        return [None] * len(completions)\n"
        "    return [float(zlib.crc32(c[-1]['content'].encode()) % 1000) for c in completions]\n"
        "def never(completions, **kwargs):\n"
        "    return [None] * len(completions)\n"
    )
    run = tmp_path / "run"
    code = grpo_main([
        "--model", "tiny-qwen2-vl", "--backend", "hf", "--dataset", "demo-colours",
        "--max-samples", "8", "--output-dir", str(run),
        "--rewards", f"{rewards_file}:first_step", f"{rewards_file}:never",
        "--num-generations", "2", "--batch-size", "4", "--grad-accum", "1",
        "--max-completion-length", "3", "--max-steps", "3", "--save-steps", "1",
        "--learning-rate", "1e-3", "--reward-rows", "0", "--no-gradient-checkpointing",
    ])  # fmt: skip
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert code == 0
    for step in (2, 3):
        assert (
            f"step {step}: no reward (first_step, never) scored any of its 4 answers: skipped, "
            "the weights are not updated" in out
        )
    assert "never scored no answer in the whole run" in out
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in logged if "loss" in row]
    assert [row["steps_without_scores"] for row in steps] == [0, 1, 1]
    assert steps[0]["rewards/first_step/mean"] is not None and steps[0]["grad_norm"] > 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 3 and summary["steps_without_scores"] == 2
    assert summary["rewards_that_scored_nothing"] == ["never"]
    after_step_1 = load_file(run / "checkpoint-1" / "adapter_model.safetensors")
    final = load_file(run / "adapter" / "adapter_model.safetensors")
    assert after_step_1.keys() == final.keys()
    assert all(torch.equal(final[key], after_step_1[key]) for key in final)


# ---------------------------------------------------------------------------------------------
# Learning: GRPO with exact_match after a short SFT run, through the real scripts


@pytest.fixture(scope="module")
def sft_start(tmp_path_factory):
    """The colour task and a 48-step SFT adapter on it (the colour recipe at seed 0: ~50%
    held-out exact match, above chance and clearly short of perfect), made once per module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder = tmp_path_factory.mktemp("grpo-learning")
        task = write_colour_task(folder / "task", seed=0)
        flags = colour_training_args(task, folder / "sft") + ["--max-steps", "48", "--seed", "0"]
        assert train_sft_main(flags) == 0
    finally:
        torch.set_num_threads(threads)
    return task, folder / "sft" / "adapter"


def _grpo(task, adapter: Path, train: Path, output: Path) -> dict:
    """100 GRPO steps of 4 prompts x 8 answers with exact_match, through scripts/train_grpo.py."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import train_grpo  # the real script
    finally:
        sys.path.remove(str(REPO / "scripts"))
    code = train_grpo.main([
        "--model", "tiny-qwen2-vl", "--backend", "hf", "--adapter", str(adapter),
        "--dataset", str(train), "--eval-dataset", str(task.eval), "--output-dir", str(output),
        "--rewards", "exact_match", "--num-generations", "8", "--batch-size", "32",
        "--grad-accum", "1", "--max-completion-length", "4", "--temperature", "1.0",
        "--max-steps", "100", "--learning-rate", "5e-4",
        "--lr-scheduler-type", "constant_with_warmup", "--warmup-ratio", "0.05",
        "--save-steps", "1000", "--no-gradient-checkpointing", "--seed", "0",
    ])  # fmt: skip
    assert code == 0
    return json.loads((output / "summary.json").read_text())


@pytest.mark.slow
def test_grpo_raises_held_out_accuracy_on_a_task_that_needs_the_image(
    sft_start, tmp_path, one_thread
):
    task, adapter = sft_start
    summary = _grpo(task, adapter, task.train, tmp_path / "grpo")
    before, after = summary["heldout_exact_match_before"], summary["heldout_exact_match_after"]
    print(f"GRPO on images: held-out exact match {before:.1%} -> {after:.1%} "
          f"({summary['wall_time_s']} s, {summary['seconds_per_step']} s/step)")  # fmt: skip
    assert 0.3 <= before <= 0.8  # the SFT start: above chance, clearly short of perfect
    assert after - before >= 0.2 or after >= 0.9


@pytest.mark.slow
def test_grpo_on_blank_images_does_not(sft_start, tmp_path, one_thread):
    """The control: the same run with every training image blank has nothing to learn from."""
    task, adapter = sft_start
    rows = [json.loads(line) for line in task.train.read_text().splitlines()]
    blank = task.folder / "blank_train.jsonl"
    blank.write_text("".join(json.dumps({**r, "image": "images/blank.png"}) + "\n" for r in rows))
    summary = _grpo(task, adapter, blank, tmp_path / "grpo")
    before, after = summary["heldout_exact_match_before"], summary["heldout_exact_match_after"]
    print(f"GRPO on blank images: held-out exact match {before:.1%} -> {after:.1%}")
    assert 0.3 <= before <= 0.8
    assert after - before < 0.2 and after < 0.9


# ---------------------------------------------------------------------------------------------
# Options and the script


def test_grpo_defaults_and_flags():
    *_, train, grpo = parse_args(GRPO_ARGS, [])
    assert train.output_dir == "outputs/grpo"
    assert (train.learning_rate, train.warmup_ratio) == (5e-6, 0.1)
    assert (grpo.rewards, grpo.num_generations, grpo.loss_type, grpo.beta) == (
        ["exact_match"], 4, "dapo", 0.0,
    )  # fmt: skip
    *_, grpo = parse_args(
        GRPO_ARGS,
        ["--rewards", "relaxed_accuracy", "format", "--reward-weights", "1", "0.2",
         "--loss-type", "grpo", "--importance-sampling-level", "sequence"],
    )  # fmt: skip
    assert grpo.rewards == ["relaxed_accuracy", "format"] and grpo.reward_weights == [1.0, 0.2]
    assert (grpo.loss_type, grpo.importance_sampling_level) == ("grpo", "sequence")


def test_every_grpo_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as error:
        parse_args(
            GRPO_ARGS,
            ["--group-by-length", "--num-generations", "1",
             "--rewards", "exact_match", "--reward-weights", "1", "2", "--temperature", "0",
             "--answer-format", "(no group", "--use-vllm", "--eval-at-end"],
        )  # fmt: skip
    message = str(error.value)
    for expected in ("--group-by-length", "--num-generations 1",
                     "--reward-weights has 2 values", "--temperature 0", "--answer-format",
                     "--use-vllm", "--eval-at-end"):  # fmt: skip
        assert expected in message
    assert "\n" not in message


def test_use_vllm_and_a_batch_of_partial_groups_stop_with_one_line(tmp_path, capsys):
    assert grpo_main(["--backend", "hf", "--model", "tiny-qwen2-vl", "--use-vllm"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "--use-vllm" in error and "\n" not in error
    code = grpo_main([
        "--backend", "hf", "--model", "tiny-qwen2-vl", "--batch-size", "3", "--grad-accum", "1",
        "--num-generations", "4", "--output-dir", str(tmp_path / "run"),
    ])  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert "3 answers a step, not whole groups of 4" in error and "\n" not in error
    assert not (tmp_path / "run").exists()  # stopped before anything was written


def test_a_text_only_prompt_stops_grpo_with_one_line(tmp_path, capsys):
    image = str(DEMO_DIR / "images" / "bar_0001.png")
    rows = [{"image": image, "question": "Colour?", "answer": "red"}] * 2
    rows += [{"image": None, "question": "Say one.", "answer": "one"}] * 2
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code = grpo_main([
        "--backend", "hf", "--model", "tiny-qwen2-vl", "--dataset", str(data), "--text-only-rows",
        "--output-dir", str(tmp_path / "run"), "--num-generations", "2", "--batch-size", "2",
    ])  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: mixed.jsonl:3: a prompt without an image") and "SFT" in error
    assert not (tmp_path / "run").exists()


def test_train_grpo_script_help():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_grpo.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for flag in ("--rewards", "--reward-weights", "--answer-format", "--num-generations",
                 "--max-completion-length", "--temperature", "--beta", "--loss-type",
                 "--importance-sampling-level", "--use-vllm", "--adapter", "--resume"):  # fmt: skip
        assert flag in result.stdout
    assert "(default: 5e-06)" in result.stdout


def test_hf_backend_refuses_a_grpo_trainer_unsloth_replaced():
    """Unsloth, once imported, swaps TRL's GRPOTrainer for its own (module unsloth_compiled_cache
    .UnslothGRPOTrainer) process-wide: the hf backend stops with one line, not in the first step."""
    from trl import GRPOTrainer

    from vlm_unsloth.train.grpo_trainer import (
        VisionGRPOTrainer,
        check_grpo_trainer_matches_backend,
    )

    unsloths = type("UnslothGRPOTrainer", (GRPOTrainer,), {})
    unsloths.__module__ = "unsloth_compiled_cache.UnslothGRPOTrainer"
    ours_on_unsloths = type("VisionGRPOTrainer", (unsloths,), {})
    with pytest.raises(ConfigError, match="fresh process") as error:
        check_grpo_trainer_matches_backend(ours_on_unsloths, "hf")
    assert "--backend hf" in str(error.value) and "\n" not in str(error.value)
    check_grpo_trainer_matches_backend(ours_on_unsloths, "unsloth")  # Unsloth's is what it wants
    check_grpo_trainer_matches_backend(VisionGRPOTrainer, "hf")  # ours on TRL's: trains


_CONFIG_SCRIPT = """
import json, sys
if sys.argv[1] == "unsloth":
    import unsloth  # noqa: F401
    from unsloth.models.rl import _patch_trl_rl_trainers
    _patch_trl_rl_trainers("grpo_trainer")  # what FastVisionModel's loading does on a GPU
import trl
from vlm_unsloth.train.grpo_trainer import grpo_config
base = {"output_dir": sys.argv[2], "report_to": [], "per_device_train_batch_size": 4,
        "bf16": False, "use_cpu": True}
stock = trl.GRPOConfig(**base, loss_type="dapo", num_generations=4)  # the control
out = {"stock dapo": [stock.mask_truncated_completions, stock.epsilon_high]}
print("--- ours")
for loss, scale in [("dapo", "group"), ("dr_grpo", "group"), ("grpo", "batch")]:
    c = grpo_config(base, loss_type=loss, scale_rewards=scale, num_generations=4)
    out[loss] = [c.loss_type, c.mask_truncated_completions, c.epsilon, c.epsilon_high,
                 c.scale_rewards]
print("RESULT", json.dumps(out))
"""


def test_grpo_loss_options_mean_the_same_on_both_backends(tmp_path):
    """Unsloth's GRPOConfig turns an explicit dapo into DAPO-paper settings (truncated answers
    masked out of the loss, epsilon_high 0.28) and drops group scaling for dr_grpo; grpo_config
    keeps TRL's meaning on both backends. Each backend in its own process (Unsloth patches TRL
    for the whole process); the control shows the patch was in effect."""
    results = {}
    for backend in ("hf", "unsloth"):
        finished = subprocess.run(
            [sys.executable, "-c", _CONFIG_SCRIPT, backend, str(tmp_path)],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )  # fmt: skip
        assert finished.returncode == 0, finished.stderr[-3000:]
        lines = finished.stdout.splitlines()
        results[backend] = json.loads(next(x for x in lines if x.startswith("RESULT "))[7:])
        ours = finished.stdout.split("--- ours", 1)[1]
        assert "recommends" not in ours and "override" not in ours.lower(), ours
    assert results["unsloth"].pop("stock dapo") == [True, 0.28]
    assert results["hf"].pop("stock dapo") == [False, None]
    assert (
        results["unsloth"]
        == results["hf"]
        == {
            "dapo": ["dapo", False, 0.2, 0.2, "group"],
            "dr_grpo": ["dr_grpo", False, 0.2, 0.2, "group"],
            "grpo": ["grpo", False, 0.2, 0.2, "batch"],
        }
    )
