"""Direct preference optimisation (DPO) of a vision-language model, top to bottom.

    python scripts/train_dpo.py --model tiny-qwen2-vl --backend hf --max-steps 20  # CPU demo
    python scripts/train_dpo.py --adapter outputs/sft/adapter --max-side 768        # GPU, after SFT

backend → output folder checked → preference data (load, validate with the model's processor;
no pair kept stops here) → model + LoRA (or the SFT adapter of --adapter) → collator → TRL
DPOTrainer → held-out preference accuracy → the run claims the folder → train (resumable, Ctrl-C
safe) → preference accuracy again → save adapter (+ merged) → loss curve and summary.

The reference policy is never a second model in memory (`reference.py`). Given a PEFT model and
no ref_model, TRL's DPOTrainer scores the reference pass through the same weights: with the
adapter disabled, or with a frozen copy of the starting adapter named "ref" that it adds to the
model. `reference_is_the_starting_policy` keeps that copy only when it differs from the base (an SFT
adapter from --adapter, which DPO must stay close to); a fresh LoRA adapter is the identity, so
there the reference is the base with the adapter disabled and nothing is copied.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlm_unsloth.config import DataArgs, ModelArgs, TrainArgs, to_dict
from vlm_unsloth.console import make_console
from vlm_unsloth.data.collate import PreferenceCollator
from vlm_unsloth.data.images import DEFAULT_MAX_SIDE
from vlm_unsloth.families import family_for_config
from vlm_unsloth.models.loading import LoadedModel
from vlm_unsloth.models.lora import LoraArgs
from vlm_unsloth.train import steps
from vlm_unsloth.train.batch_size import settle_batch_size
from vlm_unsloth.train.reference import (
    reference_is_the_starting_policy,
    restore_trained_adapter,
)
from vlm_unsloth.train.summary import (
    FinishedRun,
    TrainResult,
    already_finished,
    finish,
    print_banner,
)

if TYPE_CHECKING:
    import torch
    from trl import DPOTrainer

# TRL 1.14.2's DPO losses (DPOConfig.loss_type); several may be combined with loss_weights.
LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)  # fmt: skip


@dataclass
class DpoArgs:
    """The preference loss (TRL DPOConfig fields of the same names) and its held-out check."""

    beta: float = field(
        default=0.1,
        metadata={
            "help": "How far the policy may move from the reference: the reward is beta x the "
            "log-probability ratio. Higher stays closer to the reference."
        },
    )
    loss_type: list[str] = field(
        default_factory=lambda: ["sigmoid"],
        metadata={
            "help": "sigmoid (DPO), ipo, hinge, robust, apo_zero, ... (TRL's names). Several are "
            "summed, e.g. sigmoid sft (RPO: DPO plus the SFT loss on the chosen answer)."
        },
    )
    loss_weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per --loss-type (default: 1 each)."}
    )
    label_smoothing: float = field(
        default=0.0,
        metadata={"help": "Assumed rate of flipped preference labels (robust loss, in [0, 0.5))."},
    )
    accuracy_rows: int = field(
        default=200,
        metadata={
            "help": "Eval rows scored for preference accuracy (log p(chosen) > log p(rejected)) "
            "before and after training; 0 skips it."
        },
    )

    def problems(self) -> list[str]:
        found = []
        if self.beta <= 0:
            found.append(f"--beta {self.beta}: must be > 0 (0.1 is usual)")
        unknown = [name for name in self.loss_type if name not in LOSS_TYPES]
        if unknown:
            found.append(f"--loss-type {' '.join(unknown)}: unknown; use {', '.join(LOSS_TYPES)}")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            found.append(
                f"--loss-weights has {len(self.loss_weights)} values for "
                f"{len(self.loss_type)} --loss-type: give one weight per loss"
            )
        if not 0.0 <= self.label_smoothing < 0.5:
            found.append(f"--label-smoothing {self.label_smoothing}: must be in [0, 0.5)")
        if self.accuracy_rows < 0:
            found.append(f"--accuracy-rows {self.accuracy_rows}: must be >= 0")
        return found


@dataclass
class DpoTrainArgs(TrainArgs):
    """TrainArgs with DPO's defaults: its own output folder and a 4x lower learning rate.

    A preference gradient is a difference of two answers' gradients scaled by beta, and it keeps
    pushing the margin after the preference is already right: SFT's 2e-4 on LoRA drifts far from
    the reference within a few steps. 5e-5 is the usual LoRA DPO rate (full fine-tuning uses
    ~1e-6). `train_dpo` takes any TrainArgs; pass this class to get these defaults.
    """

    output_dir: str = field(
        default="outputs/dpo", metadata={"help": "Folder for the adapter, checkpoints, metrics."}
    )
    learning_rate: float = field(
        default=5e-5, metadata={"help": "Peak learning rate (LoRA DPO: 5e-5; SFT's default 2e-4)."}
    )

    def problems(self) -> list[str]:
        found = super().problems()
        if self.eval_at_end:
            found.append(
                "--eval-at-end writes SFT's answer report; DPO reports held-out preference "
                "accuracy instead (--accuracy-rows): drop --eval-at-end"
            )
        return found


@dataclass(frozen=True)
class PreferenceAccuracy:
    accuracy: float
    """Fraction of rows with log p(chosen | prompt, image) > log p(rejected | prompt, image)."""
    mean_margin: float
    """Mean of log p(chosen) - log p(rejected), in nats (sums over answer tokens)."""
    rows: int


@steps.holding_the_output_dir
def train_dpo(
    model_args: ModelArgs,
    lora_args: LoraArgs,
    data_args: DataArgs,
    train_args: TrainArgs,
    dpo_args: DpoArgs,
    *,
    console=None,
    extra_callbacks: list | None = None,
) -> TrainResult:
    """Train a LoRA adapter with TRL's DPOTrainer on either backend; see the module docstring.

    `extra_callbacks`: more `transformers.TrainerCallback`s (e.g. a notebook's own logging).
    """
    started = time.perf_counter()
    # Backend first: Unsloth must be imported before transformers/TRL/PEFT to patch them.
    resolved = steps.resolve_for_training(model_args, train_args)
    console = console or make_console()
    config = to_dict(model_args, lora_args, data_args, train_args, dpo_args)
    output = steps.check_output(train_args, console)  # writes nothing: see claim_output
    if steps.resumes_a_finished_run(train_args, output):
        return already_finished(output, console)

    data = steps.load_training_data(data_args, resolved.ref, train_args, preference=True)
    loaded = steps.load_model_for_training(resolved, model_args, lora_args, data_args, train_args)
    trainer = build_trainer(
        loaded, data, data_args, train_args, dpo_args, output, console=console,
        callbacks=steps.callbacks(output, console) + list(extra_callbacks or []),
    )  # fmt: skip
    train_args = settle_batch_size(trainer, train_args, data, loaded, output, console)
    from_adapter = model_args.adapter is not None
    reference = reference_is_the_starting_policy(trainer, started_from_adapter=from_adapter)
    print_banner(console, "DPO", loaded, data, train_args, output)
    console.print(
        f"DPO: loss {' + '.join(dpo_args.loss_type)}, beta {dpo_args.beta}, "
        f"learning rate {train_args.learning_rate}; reference: {reference}"
    )

    score = _scorer(loaded, data, data_args, dpo_args)
    before = score()  # the starting policy, i.e. the reference (also when resuming)
    if before is not None:
        console.print(f"preference accuracy before DPO: {_describe(before)}")
    if train_args.resume:
        restore_trained_adapter(trainer, output)
    claim = steps.claim_output(
        output, train_args, config, loaded.setup, data, job="DPO", console=console
    )
    with claim, logits_cover_input_ids(loaded):
        outcome = steps.run_training(trainer, train_args, output, console)
        if outcome == steps.ALREADY_FINISHED:
            return already_finished(output, console)
        interrupted = outcome == steps.INTERRUPTED
        after = None if interrupted else score()
        extra = {"reference": reference, **_summary(before, "before"), **_summary(after, "after")}
        run = FinishedRun("DPO", trainer, loaded, data, train_args, output, started, interrupted)
        return finish(run, console, extra=extra)


def build_trainer(
    loaded: LoadedModel,
    data: steps.TrainingData,
    data_args: DataArgs,
    train_args: TrainArgs,
    dpo_args: DpoArgs,
    output: Path,
    *,
    callbacks: Sequence = (),
    console=None,
) -> DPOTrainer:
    """TRL's DPOTrainer over our preference records, with our collator and no truncation."""
    from trl import DPOConfig, DPOTrainer

    collator = PreferenceCollator(loaded.processor, loaded.family, max_side=data_args.max_side)
    has_eval = data.eval is not None
    trainer_config = DPOConfig(
        **steps.trainer_arguments(train_args, loaded.setup, output, has_eval=has_eval),
        beta=dpo_args.beta,
        loss_type=dpo_args.loss_type,
        loss_weights=dpo_args.loss_weights,
        label_smoothing=dpo_args.label_smoothing,
        # Batches are built by our collator from raw records: TRL must not drop their columns.
        remove_unused_columns=False,
        # Nothing is truncated: validation rejected (or shrank, --fit-images) every conversation
        # longer than --max-seq-length, and a cut would separate image tokens from their pixels.
        max_length=None,
    )
    return steps.build_trainer(
        DPOTrainer,
        loss_is_mean_over_rows=True,  # the DPO loss is a mean over the batch's pairs
        console=console or make_console(),
        output=output,
        model=loaded.model,
        args=trainer_config,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=collator,
        processing_class=loaded.processor,
        callbacks=list(callbacks),
    )


def preference_accuracy(
    model,
    processor,
    records: Sequence[dict[str, Any]],
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    batch_size: int = 8,
    dtype=None,
) -> PreferenceAccuracy:
    """How often the model prefers each record's chosen answer: log p(chosen | prompt, images) >
    log p(rejected | prompt, images), each the sum of the answer tokens' log-probabilities (the
    tokens SFT supervises and DPO scores: answer and end of turn).

    `model`: a transformers or PEFT model (`LoadedModel.model`); `records`: preference records
    (a list or a datasets.Dataset). `dtype`: autocast dtype on a GPU (torch.bfloat16 / float16),
    as training used; None runs in the model's own dtype.
    """
    import torch

    family = family_for_config(model.config, where="preference_accuracy")
    collator = PreferenceCollator(processor, family, max_side=max_side)
    device = model.device
    autocast = torch.autocast(
        device.type, dtype=dtype, enabled=dtype in (torch.bfloat16, torch.float16)
    )
    margins: list[float] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast:
            for start in range(0, len(records), batch_size):
                rows = range(start, min(start + batch_size, len(records)))
                batch = collator([records[i] for i in rows])
                chosen, rejected = answer_log_probs(model, batch.to(device)).chunk(2)
                margins.extend((chosen - rejected).tolist())
    finally:
        model.train(was_training)
    if not margins:
        return PreferenceAccuracy(accuracy=float("nan"), mean_margin=float("nan"), rows=0)
    return PreferenceAccuracy(
        accuracy=sum(m > 0 for m in margins) / len(margins),
        mean_margin=sum(margins) / len(margins),
        rows=len(margins),
    )


def answer_log_probs(model, batch) -> torch.Tensor:
    """Per row of a PreferenceCollator batch: the sum of log p(token) over its completion_mask."""
    import torch

    inputs = {key: value for key, value in batch.items() if key != "completion_mask"}
    logits = model(**inputs, use_cache=False).logits[:, :-1]
    targets = batch["input_ids"][:, 1:]
    scored = batch["completion_mask"][:, 1:].bool()
    # Only answer positions are gathered: Mllama's <|image|> id lies outside the LM head.
    token_log_probs = torch.zeros(scored.shape, device=logits.device)
    picked = logits[scored].float().log_softmax(-1)
    token_log_probs[scored] = picked.gather(-1, targets[scored].unsqueeze(-1)).squeeze(-1)
    return token_log_probs.sum(-1)


@contextmanager
def logits_cover_input_ids(loaded: LoadedModel) -> Iterator[None]:
    """On CPU, give Mllama's logits a column for every id its input holds, at probability 0.

    Mllama's <|image|> id equals the text vocab_size: the embedding has rows beyond the LM head.
    TRL 1.14.2's CPU log-prob path gathers the logits at EVERY input id before masking the prompt
    out, so an <|image|> position is an out-of-bounds index (RuntimeError); on CUDA its Triton
    kernel skips masked positions and needs nothing. The extra columns sit 200 below each row's
    smallest logit, so exp() underflows to exactly 0 and every real token's log-probability and
    the entropy are unchanged (only TRL's logged mean logit moves, by ~200/vocab_size).
    """
    import torch

    tokenizer = loaded.processor.tokenizer
    largest_id = tokenizer.convert_tokens_to_ids(loaded.family.image_token)
    head = loaded.model.get_output_embeddings()
    width = loaded.model.config.get_text_config().vocab_size
    if loaded.setup.device != "cpu" or largest_id < width:
        yield
        return
    missing = largest_id + 1 - width

    def widen(module, args, logits):
        floor = logits.detach().amin(dim=-1, keepdim=True) - 200.0
        return torch.cat([logits, floor.expand(*logits.shape[:-1], missing)], dim=-1)

    handle = head.register_forward_hook(widen)
    try:
        yield
    finally:
        handle.remove()


def _scorer(loaded: LoadedModel, data, data_args: DataArgs, dpo_args: DpoArgs):
    """score() -> PreferenceAccuracy of the policy on the first --accuracy-rows eval rows."""
    import torch

    if data.eval is None or dpo_args.accuracy_rows == 0:
        return lambda: None
    rows = data.eval.select(range(min(dpo_args.accuracy_rows, len(data.eval))))
    dtype = getattr(torch, loaded.setup.dtype)
    return lambda: preference_accuracy(
        loaded.model, loaded.processor, rows, max_side=data_args.max_side, dtype=dtype
    )


def _describe(score: PreferenceAccuracy) -> str:
    return (
        f"{100 * score.accuracy:.1f}% of {score.rows} eval rows "
        f"(mean log-prob margin {score.mean_margin:+.3f})"
    )


def _summary(score: PreferenceAccuracy | None, when: str) -> dict[str, Any]:
    """Flat summary.json entries (also the summary table's rows)."""
    if score is None:
        return {}
    return {
        f"preference_accuracy_{when}": round(score.accuracy, 4),
        f"preference_margin_{when}": round(score.mean_margin, 4),
        f"preference_rows_{when}": score.rows,
    }
