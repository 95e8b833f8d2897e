"""Out of GPU memory mid-training: halve the micro-batch, double the accumulation, carry on.

A rare long batch (the biggest images of the set landing together) can overflow memory hours into
a run. Rather than crash, the trainer retries the failing micro-batch in two halves — from the
same optimizer step, with the gradients of the step's earlier micro-batches restored — and keeps
splitting every later micro-batch the same way. The effective batch and the data order do not
change, so the result is the one a run started at the smaller batch would give.

transformers' own `auto_find_batch_size` is not used: it restarts training from step 0 and keeps
the accumulation, so the effective batch shrinks.

How: `RecordKeepingCollator` puts each batch's source records beside its tensors, so a half can be
collated afresh (padding to its own longest row, image tensors rebuilt); `OomRecoveringTrainer`
is mixed into TRL's SFTTrainer/DPOTrainer (also Unsloth's patched ones).
"""

from __future__ import annotations

import gc
from typing import Any

RECORDS_KEY = "_records"
"""Batch entry holding the records the batch was collated from (popped before the model)."""


class RecordKeepingCollator:
    """Wraps a collator: the batch also carries its source records (see the module docstring)."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(records)
        batch[RECORDS_KEY] = list(records)
        return batch


def split_evenly(items: list, pieces: int) -> list[list]:
    """`items` in `pieces` consecutive runs whose sizes differ by at most one (none empty)."""
    pieces = min(pieces, len(items))
    size, extra = divmod(len(items), pieces)
    runs, start = [], 0
    for index in range(pieces):
        end = start + size + (1 if index < extra else 0)
        runs.append(items[start:end])
        start = end
    return runs


class OomRecoveringTrainer:
    """Trainer mixin (put it first in the bases): see the module docstring.

    `loss_is_mean_over_rows`: True for a loss averaged over the rows of a micro-batch (DPO), whose
    halves must be weighted by their share of the rows; False for a token-sum loss normalised by
    the whole accumulation window's token count (SFT), whose halves simply add up.
    """

    loss_is_mean_over_rows = False
    micro_batch_pieces = 1
    on_split = None
    """Called as on_split(step, rows, pieces) after a split (the run's console line / log)."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        import torch

        records = inputs.pop(RECORDS_KEY, None)
        while True:
            backup = self._gradients(model) if self._can_split(records) else None
            try:
                if self.micro_batch_pieces == 1:
                    return super().training_step(model, inputs, num_items_in_batch)
                return self._step_in_pieces(model, records, num_items_in_batch)
            except torch.OutOfMemoryError:
                if backup is None:
                    raise
            # Outside the except block the traceback, and the activations its frames hold, are
            # gone: now the memory can really be freed.
            self._restore(model, backup)
            gc.collect()
            torch.cuda.empty_cache()
            self.micro_batch_pieces *= 2
            # Evaluation batches (forward only, built when evaluation starts) shrink alike.
            eval_batch = self.args.per_device_eval_batch_size
            self.args.per_device_eval_batch_size = max(1, eval_batch // 2)
            if self.on_split is not None:
                self.on_split(self.state.global_step, len(records), self.micro_batch_pieces)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs.pop(RECORDS_KEY, None)
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def _can_split(self, records) -> bool:
        from vlm_unsloth import distributed

        # Under DDP every process must run the same number of backward passes (each one is a
        # gradient all-reduce), so one process cannot split alone.
        if records is None or distributed.is_distributed():
            return False
        return len(records) >= 2 * self.micro_batch_pieces

    def _step_in_pieces(self, model, records, num_items_in_batch):
        collate = self.data_collator.collator
        pieces = split_evenly(records, self.micro_batch_pieces)
        accumulation = self.current_gradient_accumulation_steps
        total = 0.0
        try:
            for piece in pieces:
                if self.loss_is_mean_over_rows:
                    # The trainer divides a mean loss by the accumulation steps: dividing by
                    # steps x rows / piece rows instead weights the piece by its share of rows.
                    self.current_gradient_accumulation_steps = (
                        accumulation * len(records) / len(piece)
                    )
                total = total + super().training_step(model, collate(piece), num_items_in_batch)
        finally:
            self.current_gradient_accumulation_steps = accumulation
        return total

    @staticmethod
    def _gradients(model) -> list | None:
        """A copy of the gradients accumulated so far in this optimizer step ([] before the
        first micro-batch). The price of recovery: one copy of the LoRA gradients (about 200 MB
        for a 7B model at r16) held while accumulating; nothing at accumulation 1."""
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        if all(g is None for g in grads):
            return []
        return [None if g is None else g.detach().clone() for g in grads]

    @staticmethod
    def _restore(model, backup: list) -> None:
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not backup:
            for parameter in trainable:
                parameter.grad = None
            return
        for parameter, saved in zip(trainable, backup, strict=True):
            parameter.grad = saved


def with_oom_recovery(trainer_class: type, *, loss_is_mean_over_rows: bool) -> type:
    """`trainer_class` (e.g. TRL's SFTTrainer as Unsloth left it) with OomRecoveringTrainer."""
    return type(
        f"OomRecovering{trainer_class.__name__}",
        (OomRecoveringTrainer, trainer_class),
        {"loss_is_mean_over_rows": loss_is_mean_over_rows},
    )
