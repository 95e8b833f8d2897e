"""What GRPO's rewards scored besides each training step's own groups: the held-out reward (the
rewards on greedy answers to the eval rows, before and after training) and the run's scoring
report (steps in which no reward scored any answer, rewards that scored nothing at all).

    score = held_out_scorer(loaded, data, data_args, train_args, grpo_args, trainer)
    before = score()  # HeldOutReward, or None without eval rows
    summary = {**held_out_summary(before, "before"), **scoring_summary(output, names, console)}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_unsloth import run_dir
from vlm_unsloth.config import DataArgs, TrainArgs
from vlm_unsloth.data.collate import PromptRows
from vlm_unsloth.infer.args import GenerationArgs
from vlm_unsloth.infer.generation import generate_answers
from vlm_unsloth.models.backend import backend_module
from vlm_unsloth.models.loading import LoadedModel


@dataclass(frozen=True)
class HeldOutReward:
    total: float | None
    """Mean over rows of the weighted sum of the rewards (functions returning None skipped;
    None when no reward scored any row)."""
    per_reward: dict[str, float | None]
    """Each reward's mean over the rows it scored (None: it scored none)."""
    rows: int


def held_out_reward(
    loaded: LoadedModel,
    records: Sequence[dict[str, Any]],
    rewards: Sequence,
    *,
    weights: Sequence[float] | None = None,
    max_new_tokens: int,
    max_side: int,
    batch_size: int = 8,
    trainer_state: Any = None,
) -> HeldOutReward:
    """The rewards of the model's greedy answers to `records` (canonical SFT records: their
    final answer is the reference), called as GRPOTrainer calls them."""
    implementation = backend_module(loaded.setup.backend)
    rows = PromptRows(loaded.family, max_side=max_side)(
        {key: [r[key] for r in records] for key in records[0]}
    )
    was_training = loaded.model.training
    implementation.for_inference(loaded.model)
    try:
        answers = generate_answers(
            loaded, records, GenerationArgs(max_new_tokens=max_new_tokens, batch_size=batch_size),
            max_side=max_side,
        )  # fmt: skip
    finally:
        if was_training:
            implementation.for_training(loaded.model)
    tokenizer = loaded.processor.tokenizer
    columns = {key: value for key, value in rows.items() if key != "prompt"}
    scores = [
        function(
            prompts=rows["prompt"],
            completions=[[{"role": "assistant", "content": answer}] for answer in answers],
            completion_ids=[tokenizer.encode(a, add_special_tokens=False) for a in answers],
            trainer_state=trainer_state,
            log_extra=lambda *a, **k: None,
            log_metric=lambda *a, **k: None,
            **columns,
        )
        for function in rewards
    ]
    # The checked rewards return floats or None (never NaN: `rewards.checked` refuses it).
    weights = list(weights or [1.0] * len(rewards))
    totals = []
    for row in zip(*scores, strict=True):
        scored = [(w, s) for w, s in zip(weights, row, strict=True) if s is not None]
        if scored:
            totals.append(sum(w * s for w, s in scored))
    per_reward = {}
    for function, values in zip(rewards, scores, strict=True):
        scored = [s for s in values if s is not None]
        per_reward[function.__name__] = sum(scored) / len(scored) if scored else None
    total = sum(totals) / len(totals) if totals else None
    return HeldOutReward(total=total, per_reward=per_reward, rows=len(records))


def held_out_scorer(
    loaded: LoadedModel, data, data_args: DataArgs, train_args: TrainArgs, grpo_args, trainer
):
    """score() -> HeldOutReward of the policy on the first --reward-rows eval rows (score()
    is None without eval rows or with --reward-rows 0)."""
    if data.eval is None or grpo_args.reward_rows == 0 or len(data.eval) == 0:
        return lambda: None
    rows = data.eval.select(range(min(grpo_args.reward_rows, len(data.eval))))
    records = [rows[i] for i in range(len(rows))]
    return lambda: held_out_reward(
        loaded, records, trainer.reward_funcs, weights=grpo_args.reward_weights,
        max_new_tokens=grpo_args.max_completion_length, max_side=data_args.max_side,
        batch_size=train_args.batch_size, trainer_state=trainer.state,
    )  # fmt: skip


def describe_held_out(score: HeldOutReward) -> str:
    """`0.412 (exact_match 0.400, format 0.060) on 40 eval rows, greedy answers`."""
    parts = ", ".join(
        f"{name} {'n/a' if value is None else f'{value:.3f}'}"
        for name, value in score.per_reward.items()
    )
    total = "n/a" if score.total is None else f"{score.total:.3f}"
    return f"{total} ({parts}) on {score.rows} eval rows, greedy answers"


def held_out_summary(score: HeldOutReward | None, when: str) -> dict[str, Any]:
    """Flat summary.json entries (also the summary table's rows): heldout_reward_{when}, one
    per reward, heldout_rows_{when}."""
    if score is None:
        return {}
    total = None if score.total is None else round(score.total, 4)
    entries: dict[str, Any] = {f"heldout_reward_{when}": total}
    for name, value in score.per_reward.items():
        entries[f"heldout_{name}_{when}"] = None if value is None else round(value, 4)
    entries[f"heldout_rows_{when}"] = score.rows
    return entries


def scoring_summary(output: Path, reward_names: Sequence[str], console) -> dict[str, Any]:
    """summary.json's `steps_without_scores` (summed over metrics.jsonl, so a resumed run counts
    its earlier steps) and `rewards_that_scored_nothing`: those whose mean was missing from every
    logged step (TRL logs None for a reward that scored no answer). A notice names those."""
    logged = [row for row in run_dir.read_metrics(output) if "loss" in row]
    silent = []
    for name in reward_names:
        means = [row[key] for row in logged if (key := f"rewards/{name}/mean") in row]
        if means and all(mean is None for mean in means):
            silent.append(name)
    if silent:
        console.print(
            f"[yellow]{', '.join(silent)} scored no answer in the whole run: check that it fits "
            "this data (it returned None for every completion)[/]"
        )
    return {
        "steps_without_scores": sum(row.get("steps_without_scores", 0) for row in logged),
        "rewards_that_scored_nothing": silent,
    }
