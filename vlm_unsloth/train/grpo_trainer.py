"""TRL's GRPOTrainer with what vision GRPO needs on top (`VisionGRPOTrainer`):

- prompts padded on the left while a batch is sampled and scored: TRL left-pads the prompt ids
  itself, but its loss-path processor call pads on the tokenizer's side (ours: right), so Qwen's
  mm_token_type_ids, and with them its M-RoPE positions, would be shifted on every shorter
  prompt of a batch (silently: 1e-3 nats off on the tiny model);
- for families whose images enter by cross-attention (Llama 3.2 Vision,
  `Family.images_by_cross_attention`), the inputs TRL 1.14.2 drops: its loss batch keeps only
  `pixel_values` of Mllama's image inputs ("`aspect_ratio_ids` must be provided if
  `pixel_values` is provided"), and its generation inputs pass a cross-attention mask aligned to
  the unpadded prompt ids it then left-pads. Nothing changes for the other families. (The
  unsloth backend refuses those families: `GRPO_CROSS_ATTENTION_IMAGES`.)
- a step in which no reward scored any answer (every reward returned None, e.g. `numeric` on
  answers that are words) is skipped: no weight moves. TRL 1.14.2 zeroes such answers'
  advantages and still steps the optimizer, which is not a no-op: AdamW's momentum from earlier
  steps and its weight decay move every weight, and with --beta > 0 the KL term has a gradient.
  The step is announced (`on_step_without_scores`) and counted (`steps_without_scores` in each
  training log); it still takes one of --max-steps and a step of the learning-rate schedule.

Speed (issue 29): each optimizer step's time is split into its phases (`PhaseClock`): sampling,
rewards, training; they go into every training log (`sample_seconds`, `reward_seconds`,
`train_seconds`, `generated_tokens_per_second`). And answers are sampled from the policy in
inference mode (`sampling_mode`): TRL 1.14.2 calls `generate` on the model in training mode
(it only turns gradient checkpointing off, and back on with transformers' default options), so
LoRA dropout was on while sampling: the answers came from a noisier policy than the one
inference and the held-out reward use.

Two settings every vision GRPO run needs are here too: `media_token_ids` (never sample an image
placeholder: "Image features and image tokens do not match" in the loss forward) and
`end_completions_at_end_of_turn`; and `grpo_config`, which keeps Unsloth's GRPOConfig from
changing the loss options behind the flags. Imported by `grpo.py` once the backend is active
(it imports TRL: Unsloth must come first).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from transformers import TrainerCallback
from trl import GRPOTrainer
from trl.trainer.utils import selective_log_softmax, selective_log_softmax_and_entropy

from vlm_unsloth.errors import ConfigError
from vlm_unsloth.families import Family

CROSS_ATTENTION_KEYS = ("aspect_ratio_ids", "aspect_ratio_mask")
"""Mllama's image inputs besides pixel_values that the loss forward needs and TRL drops."""

_MEDIA_WORDS = ("image", "video", "vision")


def media_token_ids(tokenizer, family: Family) -> list[int]:
    """Ids of the tokenizer's image/video special tokens and of the family's image-layout tokens
    (SmolVLM's tile markers, Pixtral's row breaks): suppressed in sampling, since a sampled
    placeholder would be taken for an image, and a layout token is never an answer."""
    ids = {tokenizer.convert_tokens_to_ids(token) for token in family.unsupervised_tokens}
    for token_id, token in tokenizer.added_tokens_decoder.items():
        if token.special and any(word in token.content.lower() for word in _MEDIA_WORDS):
            ids.add(token_id)
    return sorted(i for i in ids if i is not None and i != tokenizer.unk_token_id)


def check_grpo_trainer_matches_backend(trainer_class: type, backend: str) -> None:
    """Refuse the hf backend in a process where Unsloth has replaced TRL's GRPOTrainer (Unsloth,
    once imported, patches TRL for the whole process: its trainer calls `model.for_training`,
    which only its own models have). A notebook that trained on the unsloth backend would
    otherwise fail deep inside the first step."""
    if backend == "hf" and is_unsloth_trainer(trainer_class):
        raise ConfigError(
            "Unsloth is loaded in this process and has replaced TRL's GRPO trainer, which the hf "
            "backend cannot use",
            where="--backend hf",
            fix="run GRPO on the hf backend in a fresh process (restart the notebook's kernel, "
            "or run scripts/train_grpo.py)",
        )


CLIP_EPSILON = 0.2
"""The policy ratio's clip range on both sides (TRL's default epsilon; epsilon_high = epsilon)."""


def grpo_config(arguments: dict, *, loss_type: str, scale_rewards: str, **options):
    """TRL's GRPOConfig (Unsloth's, on the unsloth backend) with the loss options meaning what
    TRL says on both backends. Unsloth's config changes some behind the caller's back: an
    explicit loss_type "dapo" (ours, by default) turns on mask_truncated_completions (every
    answer cut at --max-completion-length leaves the loss) and epsilon_high 0.28, and "dr_grpo"
    turns group reward scaling off. The same flags must train the same loss on either backend."""
    from trl import GRPOConfig

    config = GRPOConfig(
        **arguments,
        **options,
        loss_type=loss_type,
        # Given, so that Unsloth neither changes nor announces them: TRL's defaults.
        mask_truncated_completions=False,
        epsilon=CLIP_EPSILON,
        epsilon_high=CLIP_EPSILON,
        # Unsloth replaces "group" with "none" for dr_grpo (and prints that it does): pass the
        # value it leaves alone, then set the one asked for (TRL reads it in the trainer).
        scale_rewards="none",
    )
    config.scale_rewards = scale_rewards
    return config


def end_completions_at_end_of_turn(model, tokenizer, family: Family) -> None:
    """Make the family's end-of-turn token (what SFT taught answers to end with) one of the
    model's eos ids: TRL stops sampling, and masks a completion, at those ids only."""
    config = model.generation_config
    ids = config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    end_of_turn = tokenizer.convert_tokens_to_ids(family.end_of_turn)
    if end_of_turn not in ids:
        config.eos_token_id = [*ids, end_of_turn]


@contextmanager
def prompts_padded_left(processor) -> Iterator[None]:
    """The tokenizer pads on the left inside the block (restored after: saved processors and
    the SFT collators keep their own side)."""
    tokenizer = processor.tokenizer
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = side


def is_unsloth_trainer(trainer_class: type) -> bool:
    """Whether Unsloth has replaced TRL's GRPOTrainer under `trainer_class`."""
    # Unsloth's trainers live in unsloth_compiled_cache (or unsloth/unsloth_zoo); ours in
    # vlm_unsloth, whose name merely contains the word.
    return any(base.__module__.startswith("unsloth") for base in trainer_class.__mro__)


@contextmanager
def sampling_mode(model) -> Iterator[None]:
    """The policy set up for sampling inside the block, as inference is: eval mode (no LoRA or
    model dropout), gradient checkpointing off and the KV cache on; the training setup is
    restored after, checkpointing with the hf backend's own options (TRL's unwrap would
    re-enable it with transformers' defaults). LoRA stays unmerged: the sampled policy is the
    one the loss trains. (The unsloth backend does not come here: Unsloth's trainer wraps
    generation in its own for_inference/for_training, unsloth/models/rl.py.)"""
    checkpointing = model.is_gradient_checkpointing
    training = model.training
    config = model.config.get_text_config()
    use_cache = config.use_cache
    if checkpointing:
        model.gradient_checkpointing_disable()
    model.eval()
    config.use_cache = True
    try:
        yield
    finally:
        config.use_cache = use_cache
        model.train(training)
        if checkpointing:
            # As the hf backend enabled it (models/hf_backend.py add_lora).
            options = {"use_reentrant": False}
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


@dataclass
class PhaseTotals:
    """Seconds and sampled tokens accumulated since the last training log."""

    sample: float = 0.0
    reward: float = 0.0
    train: float = 0.0
    generated_tokens: int = 0
    steps: int = 0


class PhaseClock(TrainerCallback):
    """Times a GRPO step's phases with `time.perf_counter` (after a CUDA synchronize, so that
    queued kernels count in the phase that launched them).

    - sample: `_generate` (prompt tokenization and image processing, `generate`, decoding);
    - reward: `_calculate_rewards`;
    - train: each micro-batch's `training_step` minus the sampling and rewards inside it (the
      forward and backward, and the old-policy/reference log-probability passes of a newly
      sampled batch), plus the gradient clipping and optimizer step after the last micro-batch.

    A step's wall time (on_step_begin to on_step_end) is these three plus the learning-rate
    scheduler and zero_grad. With --steps-per-generation above --grad-accum, or --num-iterations
    2, a step that reuses an earlier generation batch samples nothing: 0 sample seconds."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.totals = PhaseTotals()
        self._train_step_end: float | None = None

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def take(self) -> PhaseTotals:
        totals, self.totals = self.totals, PhaseTotals()
        return totals

    def on_train_begin(self, args, state, control, **kwargs):
        self.totals = PhaseTotals()  # --batch-size auto's probes sampled before this

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self._train_step_end is not None:
            self.totals.train += self.now() - self._train_step_end
            self._train_step_end = None
        self.totals.steps += 1


class VisionGRPOTrainer(GRPOTrainer):
    """GRPOTrainer plus the module docstring's fixes. `family` is the model's Family;
    `on_step_without_scores(step, answers)` is called when a step's answers got no score."""

    def __init__(self, *args, family: Family, **kwargs):
        self.family = family
        self._cross_attention_batch: dict | None = None
        self.on_step_without_scores: Callable[[int, int], None] = lambda step, answers: None
        self._answers_scored = True
        """Whether any reward scored any answer of the generation batch being trained on."""
        self._steps_without_scores = 0
        """Since the last training log."""
        super().__init__(*args, **kwargs)
        self.phases = PhaseClock(self.accelerator.device)
        self.add_callback(self.phases)
        self._unsloth_switches_modes = is_unsloth_trainer(type(self))

    def _generate(self, prompts, *args, **kwargs):
        """TRL's sampling of a generation batch (all its answers in one generate call per
        process), timed."""
        start = self.phases.now()
        output = super()._generate(prompts, *args, **kwargs)
        self.phases.totals.sample += self.phases.now() - start
        # (prompt_ids, completion_ids, ...): every process's answer tokens.
        local = torch.tensor(sum(len(ids) for ids in output[1]), device=self.accelerator.device)
        self.phases.totals.generated_tokens += int(self.accelerator.gather(local).sum())
        return output

    def _generate_single_turn(self, *args, **kwargs):
        """The generate call itself, with the policy in `sampling_mode` (on hf; Unsloth switches
        itself). Only this call: TRL's `_generate` files its completion metrics under the mode
        `model.training` says, so the model must still be training there."""
        with (
            contextlib.nullcontext() if self._unsloth_switches_modes else sampling_mode(self.model)
        ):
            return super()._generate_single_turn(*args, **kwargs)

    # Every override passes its arguments through untouched for the other families: Unsloth's
    # patched trainer has its own signatures for these methods.

    def _tokenize_prompts(self, *args, **kwargs):
        """Generation inputs: the cross-attention mask re-aligned to the left-padded ids."""
        prompt_ids, images, fields = super()._tokenize_prompts(*args, **kwargs)
        mask = fields.get("cross_attention_mask")
        if self.family.images_by_cross_attention and mask is not None:
            mask = torch.as_tensor(np.asarray(mask))
            width = max(len(ids) for ids in prompt_ids)
            aligned = mask.new_zeros((mask.size(0), width, *mask.shape[2:]))
            for row, ids in enumerate(prompt_ids):
                aligned[row, width - len(ids) :] = mask[row, : len(ids)]
            fields["cross_attention_mask"] = aligned
        return prompt_ids, images, fields

    def _generate_and_score_completions(self, inputs, *args, **kwargs):
        """The scored batch (prompts padded left), plus the aspect ratios Mllama's loss forward
        needs."""
        with prompts_padded_left(self.processing_class):
            output = super()._generate_and_score_completions(inputs, *args, **kwargs)
        if self.family.images_by_cross_attention and "pixel_values" in output:
            images = [row.get("images") or [row["image"]] for row in inputs]
            extra = self.processing_class.image_processor(images=images, return_tensors="pt")
            for key in CROSS_ATTENTION_KEYS:
                output[key] = extra[key].to(self.accelerator.device)
        return output

    def _calculate_rewards(self, *args, **kwargs):
        """The rewards of a generation batch (every process's answers: all decide alike), NaN
        where a reward returned None; notes a batch that no reward scored at all. (Training
        batches only: this trainer never evaluates, `grpo_scores.held_out_reward` does.)"""
        start = self.phases.now()
        rewards_per_func = super()._calculate_rewards(*args, **kwargs)
        self.phases.totals.reward += self.phases.now() - start
        self._answers_scored = not bool(torch.isnan(rewards_per_func).all())
        if not self._answers_scored:
            self._steps_without_scores += 1
            # One generation batch per optimizer step (TRL's steps_per_generation defaults to
            # the accumulation), sampled before the step's first micro-batch.
            self.on_step_without_scores(self.state.global_step + 1, rewards_per_func.size(0))
        return rewards_per_func

    def training_step(self, model, *args, **kwargs):
        """A micro-batch's forward and backward; in a step without scores its gradients are
        then dropped (set to None), so that the optimizer skips every weight: neither the
        weights nor its moments change. (Dropped after the backward rather than skipping it:
        the loss is TRL's on one backend and Unsloth's on the other, and every process of a
        multi-GPU run still takes part in the same gradient reduction.)"""
        totals = self.phases.totals
        start, inside = self.phases.now(), totals.sample + totals.reward
        loss = super().training_step(model, *args, **kwargs)
        if not self._answers_scored:
            model.zero_grad(set_to_none=True)
        end = self.phases.now()
        totals.train += end - start - (totals.sample + totals.reward - inside)
        self.phases._train_step_end = end  # the optimizer step follows the last micro-batch
        return loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs:  # a training step's log, not the end-of-training one
            logs["steps_without_scores"] = self._steps_without_scores
            self._steps_without_scores = 0
            logs.update(phase_metrics(self.phases.take()))
        super().log(logs, *args, **kwargs)

    def _compute_loss(self, model, inputs, *args, **kwargs):
        # TRL passes the loss forward a fixed list of keys: keep the aspect ratios at hand.
        self._cross_attention_batch = {k: inputs[k] for k in CROSS_ATTENTION_KEYS if k in inputs}
        try:
            return super()._compute_loss(model, inputs, *args, **kwargs)
        finally:
            self._cross_attention_batch = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, *args, **kw):
        if not self.family.images_by_cross_attention:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, *args, **kw
            )
        # TRL 1.14.2 calls (model, input_ids, attention_mask, logits_to_keep, **keywords).
        (logits_to_keep,) = args
        ratios = {key: kw.get(key) for key in CROSS_ATTENTION_KEYS}
        if ratios["aspect_ratio_ids"] is None and self._cross_attention_batch:
            ratios = dict(self._cross_attention_batch)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False,
                  "logits_to_keep": logits_to_keep + 1}  # fmt: skip
        if kw.get("pixel_values") is not None:
            mask = self._whole_sequence_mask(input_ids, ratios["aspect_ratio_mask"])
            inputs.update(pixel_values=kw["pixel_values"], cross_attention_mask=mask, **ratios)
        with self.accelerator.autocast():
            logits = model(**inputs).logits[:, :-1, :][:, -logits_to_keep:, :]
        completion_ids = input_ids[:, -logits_to_keep:]
        row_mask = attention_mask[:, -logits_to_keep:]
        # Only completion ids are gathered: Mllama's <|image|> id (past the LM head) never is.
        if kw.get("compute_entropy"):
            logps, entropies = selective_log_softmax_and_entropy(
                logits, completion_ids, entropy_requires_grad=self._entropy_bonus_enabled,
                temperature=self.temperature, row_mask=row_mask,
            )  # fmt: skip
            return logps, entropies, None
        logps = selective_log_softmax(
            logits, completion_ids, temperature=self.temperature, row_mask=row_mask
        )
        return logps, None, None

    def _whole_sequence_mask(self, input_ids, aspect_ratio_mask):
        """Mllama's cross-attention mask over prompt + completion, rebuilt from the token ids:
        an image is attended from its <|image|> token to the end of the sequence, the span
        Mllama's generation extends token by token (transformers' processing_mllama helpers)."""
        from transformers.models.mllama.processing_mllama import (
            convert_sparse_cross_attention_mask_to_dense,
            get_cross_attention_token_mask,
        )

        image_id = self._tokenizer.convert_tokens_to_ids(self.family.image_token)
        spans = [get_cross_attention_token_mask(row, image_id) for row in input_ids.tolist()]
        tiles = aspect_ratio_mask.sum(-1).tolist()  # tiles per image, per row
        dense = convert_sparse_cross_attention_mask_to_dense(
            spans, tiles, aspect_ratio_mask.size(-1), input_ids.size(1)
        )
        return torch.as_tensor(dense, device=input_ids.device)


def phase_metrics(totals: PhaseTotals) -> dict[str, float]:
    """Seconds per optimizer step in each phase since the last log, answer tokens sampled per
    step, and the sampling speed (answer tokens over sampling seconds). The last two are absent
    when those steps sampled nothing."""
    steps = max(totals.steps, 1)
    metrics = {
        "sample_seconds": round(totals.sample / steps, 4),
        "reward_seconds": round(totals.reward / steps, 4),
        "train_seconds": round(totals.train / steps, 4),
    }
    if totals.sample > 0 and totals.generated_tokens:
        metrics["generated_tokens"] = round(totals.generated_tokens / steps, 1)
        metrics["generated_tokens_per_second"] = round(totals.generated_tokens / totals.sample, 2)
    return metrics
