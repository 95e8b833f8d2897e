"""Group relative policy optimisation (GRPO) with verifiable rewards, top to bottom.

    python scripts/train_grpo.py --adapter outputs/mine --dataset charts.jsonl \\
        --rewards relaxed_accuracy format --max-side 768                   # GPU, after SFT
    python scripts/train_grpo.py --model tiny-qwen2-vl --backend hf --adapter outputs/tiny-sft

backend → rewards (a missing file or function stops here, before anything slow) → output folder
→ data (the SFT layouts, validated with the model's processor; prompts only, never truncated; no
row kept, or no row the rewards can score, stops here) → model + LoRA (or the adapter of
--adapter) → TRL GRPOTrainer → held-out reward → train (resumable, Ctrl-C safe) → held-out
reward again → save adapter (+ merged) → summary.

Each step samples --num-generations answers to each prompt (at --temperature, up to
--max-completion-length tokens, from the policy itself: no vLLM), scores each with the rewards
(rewards.py) against the row's reference answer, and pushes up the answers that scored above
their group's mean. The held-out reward is the same rewards on greedy answers to the eval rows.
A step in which no reward scores any answer is skipped (`grpo_trainer.py`) and counted: the
summary gives `steps_without_scores` and names the rewards that scored nothing in the whole run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from vlm_unsloth import distributed
from vlm_unsloth.config import DataArgs, ModelArgs, TrainArgs, to_dict
from vlm_unsloth.console import make_console
from vlm_unsloth.data.collate import PromptRows, reference_answer
from vlm_unsloth.data.validation import LENGTH_COLUMN
from vlm_unsloth.errors import ConfigError, DataError
from vlm_unsloth.families import Family
from vlm_unsloth.models.backend import backend_module
from vlm_unsloth.models.loading import LoadedModel
from vlm_unsloth.models.lora import LoraArgs
from vlm_unsloth.train import steps
from vlm_unsloth.train.batch_size import accumulation_for_effective_batch
from vlm_unsloth.train.grpo_batch import placeholder_batch, settle_grpo_batch
from vlm_unsloth.train.grpo_options import (
    GrpoArgs,
    check_auto_batch,
    check_batch_holds_groups,
)
from vlm_unsloth.train.grpo_scores import (
    describe_held_out,
    held_out_scorer,
    held_out_summary,
    scoring_summary,
)
from vlm_unsloth.train.reference import (
    reference_is_the_starting_policy,
    restore_trained_adapter,
)
from vlm_unsloth.train.rewards import (
    check_rewards_can_score,
    load_rewards,
)
from vlm_unsloth.train.summary import (
    FinishedRun,
    TrainResult,
    already_finished,
    finish,
    print_banner,
)

if TYPE_CHECKING:
    from trl import GRPOTrainer


@steps.holding_the_output_dir
def train_grpo(
    model_args: ModelArgs,
    lora_args: LoraArgs,
    data_args: DataArgs,
    train_args: TrainArgs,
    grpo_args: GrpoArgs,
    *,
    console=None,
    extra_callbacks: list | None = None,
) -> TrainResult:
    """Train a LoRA adapter with TRL's GRPOTrainer on either backend; see the module docstring.

    `extra_callbacks`: more `transformers.TrainerCallback`s (e.g. a notebook's own logging).
    """
    started = time.perf_counter()
    # Backend first: Unsloth must be imported before transformers/TRL/PEFT to patch them.
    resolved = steps.resolve_for_training(model_args, train_args)
    console = console or make_console()
    rewards = load_rewards(grpo_args.rewards, answer_format_spec=grpo_args.answer_format)
    if train_args.auto_batch_size:  # measured once the trainer is built (grpo_batch.py)
        check_auto_batch(train_args, grpo_args)
    else:
        train_args = accumulation_for_effective_batch(train_args)
        check_batch_holds_groups(train_args, grpo_args)
    check_backend_trains_family(resolved.family, resolved.setup.backend)
    config = to_dict(model_args, lora_args, data_args, train_args, grpo_args)
    output = steps.check_output(train_args, console)  # writes nothing: see claim_output
    if steps.resumes_a_finished_run(train_args, output):
        return already_finished(output, console)

    data = steps.load_training_data(data_args, resolved.ref, train_args, preference=False)
    check_every_prompt_has_an_image(data.train)
    check_rewards_fit_the_rows(grpo_args, data.train, console)
    loaded = steps.load_model_for_training(resolved, model_args, lora_args, data_args, train_args)
    built_with = placeholder_batch(train_args) if train_args.auto_batch_size else train_args
    trainer = build_trainer(
        loaded, data, data_args, built_with, grpo_args, rewards, output, console=console,
        callbacks=steps.callbacks(output, console) + list(extra_callbacks or []),
    )  # fmt: skip
    train_args = settle_grpo_batch(
        trainer, train_args, grpo_args, loaded, data.train[LENGTH_COLUMN], console
    )
    reference = "none (--beta 0: no reference pass, no KL term)"
    if grpo_args.beta > 0:
        from_adapter = model_args.adapter is not None
        reference = reference_is_the_starting_policy(trainer, started_from_adapter=from_adapter)
    print_banner(console, "GRPO", loaded, data, train_args, output)
    console.print(describe_run(train_args, grpo_args, trainer, reference))

    score = held_out_scorer(loaded, data, data_args, train_args, grpo_args, trainer)
    before = score()  # the starting policy (also when resuming)
    if before is not None:
        console.print(f"held-out reward before GRPO: {describe_held_out(before)}")
    if train_args.resume:
        restore_trained_adapter(trainer, output)
    with steps.claim_output(
        output, train_args, config, loaded.setup, data, job="GRPO", console=console
    ):
        outcome = steps.run_training(trainer, train_args, output, console)
        if outcome == steps.ALREADY_FINISHED:
            return already_finished(output, console)
        interrupted = outcome == steps.INTERRUPTED
        after = None if interrupted else score()
        if after is not None:
            console.print(f"held-out reward after GRPO: {describe_held_out(after)}")
        extra = {
            "reference": reference,
            **held_out_summary(before, "before"),
            **held_out_summary(after, "after"),
            **scoring_summary(output, trainer.reward_func_names, console),
        }
        # The trainer has no eval set (TRL would sample the eval rows): the held-out reward
        # above takes the place of an eval loss.
        no_eval = replace(data, eval=None)
        run = FinishedRun(
            "GRPO", trainer, loaded, no_eval, train_args, output, started, interrupted
        )
        return finish(run, console, extra=extra)


def check_every_prompt_has_an_image(train) -> None:
    """TRL's GRPO hands the processor one image list per prompt, which fails inside the first
    step on a text-only row (SFT and DPO train on them)."""
    rows = train.select_columns(["images", "source"])
    source = next((row["source"] for row in rows if not row["images"]), None)
    if source is not None:
        raise DataError(
            "a prompt without an image: GRPO needs one in every prompt",
            where=source,
            fix="leave text-only rows (and --text-only-rows) to SFT and DPO",
        )


def check_rewards_fit_the_rows(grpo_args: GrpoArgs, train, console) -> None:
    """Say which rows each built-in reward cannot score (from the reference answers, before the
    model loads); stop with one line when no reward can score any row."""
    rows = train.select_columns(["messages", "source"])
    answers = [reference_answer(row) for row in rows]
    for notice in check_rewards_can_score(grpo_args.rewards, answers, rows["source"]):
        console.print(f"[yellow]{notice}[/]")


def check_backend_trains_family(family: Family, backend: str) -> None:
    """Refuse a family whose images this backend's GRPO cannot carry to the loss."""
    if family.images_by_cross_attention and not backend_module(backend).GRPO_CROSS_ATTENTION_IMAGES:
        raise ConfigError(
            f"{family.key}'s images enter by cross-attention, and GRPO on the {backend} backend "
            "cannot pass them to the loss",
            where=f"--backend {backend}",
            fix="train it with --backend hf (transformers + PEFT, also on a GPU)",
        )


def build_trainer(
    loaded: LoadedModel,
    data: steps.TrainingData,
    data_args: DataArgs,
    train_args: TrainArgs,
    grpo_args: GrpoArgs,
    rewards: Sequence,
    output: Path,
    *,
    callbacks: Sequence = (),
    console=None,
) -> GRPOTrainer:
    """TRL's GRPOTrainer (`grpo_trainer.VisionGRPOTrainer`) over our validated records; a step
    in which no reward scored any answer is announced on `console` and in metrics.jsonl."""
    from vlm_unsloth.train.grpo_trainer import (
        VisionGRPOTrainer,
        check_grpo_trainer_matches_backend,
        end_completions_at_end_of_turn,
        grpo_config,
        media_token_ids,
    )

    check_grpo_trainer_matches_backend(VisionGRPOTrainer, loaded.setup.backend)
    tokenizer = loaded.processor.tokenizer
    arguments = steps.trainer_arguments(train_args, loaded.setup, output, has_eval=False)
    # TRL counts GRPO's prompt and answer tokens itself (its batches are rows, not tensors).
    arguments["include_num_input_tokens_seen"] = "no"
    trainer_config = grpo_config(
        arguments,
        num_generations=grpo_args.num_generations,
        max_completion_length=grpo_args.max_completion_length,
        generation_batch_size=grpo_args.generation_batch_size,
        steps_per_generation=grpo_args.steps_per_generation,
        num_iterations=grpo_args.num_iterations,
        cache_implementation=grpo_args.cache_implementation,
        temperature=grpo_args.temperature,
        beta=grpo_args.beta,
        loss_type=grpo_args.loss_type,
        importance_sampling_level=grpo_args.importance_sampling_level,
        scale_rewards=grpo_args.scale_rewards,
        reward_weights=grpo_args.reward_weights,
        # A sampled image placeholder would be taken for an image in the loss forward.
        generation_kwargs={"suppress_tokens": media_token_ids(tokenizer, loaded.family)},
        # `answer` and `source` must reach the rewards (GRPOConfig's default too).
        remove_unused_columns=False,
        # Prompts end as at inference (Qwen3.5: an empty think block, not an open one).
        chat_template_kwargs=loaded.family.generation_template_kwargs,
    )
    end_completions_at_end_of_turn(loaded.model, tokenizer, loaded.family)
    # Prompts are never truncated (TRL 1.14 has no max_prompt_length): validation rejected every
    # row over --max-seq-length, or shrank its images with --fit-images.
    prompts = data.train.with_transform(PromptRows(loaded.family, max_side=data_args.max_side))
    trainer = steps.saving_whole_checkpoints(
        VisionGRPOTrainer,
        model=loaded.model,
        reward_funcs=list(rewards),
        args=trainer_config,
        train_dataset=prompts,
        processing_class=loaded.processor,
        callbacks=list(callbacks),
        family=loaded.family,
    )
    console = console or make_console()

    def on_step_without_scores(step: int, answers: int) -> None:
        console.print(
            f"[yellow]step {step}: no reward ({', '.join(trainer.reward_func_names)}) scored any "
            f"of its {answers} answers: skipped, the weights are not updated[/]"
        )

    trainer.on_step_without_scores = on_step_without_scores
    return trainer


def describe_run(train_args: TrainArgs, grpo_args: GrpoArgs, trainer, reference: str) -> str:
    """The GRPO line under the start banner."""
    answers = train_args.samples_per_step(distributed.world_size())
    weights = grpo_args.reward_weights or [1.0] * len(grpo_args.rewards)
    names = trainer.reward_func_names
    rewards = " + ".join(f"{w:g} x {n}" for w, n in zip(weights, names, strict=True))
    sampling = "sequence (GSPO)" if grpo_args.importance_sampling_level == "sequence" else "token"
    sampled = trainer.args.generation_batch_size
    return (
        f"GRPO: {answers // grpo_args.num_generations} prompts x {grpo_args.num_generations} "
        f"answers a step (up to {grpo_args.max_completion_length} tokens, temperature "
        f"{grpo_args.temperature}), sampled {sampled} at a time in one generate call per "
        f"process, each generation batch trained {trainer.args.num_iterations} time(s) over "
        f"{trainer.args.steps_per_generation} micro-batch(es); reward {rewards}; loss "
        f"{grpo_args.loss_type}, "
        f"{sampling}-level importance sampling, beta {grpo_args.beta}; learning rate "
        f"{train_args.learning_rate}; reference: {reference}"
    )
