"""The reference policy of DPO and GRPO (with --beta > 0), without a second model in memory.

    reference = reference_is_the_starting_policy(trainer, started_from_adapter=True)
    ...
    if train_args.resume:
        restore_trained_adapter(trainer, output)

Given a PEFT model and no ref_model, TRL's DPOTrainer and GRPOTrainer score the reference pass
through the same weights: with the adapter disabled, or with a frozen copy of the starting
adapter named "ref" that they add to the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlm_unsloth import run_dir


def reference_is_the_starting_policy(trainer: Any, *, started_from_adapter: bool) -> str:
    """Make the trainer's reference the policy training starts from, without a second model.

    TRL copies the starting adapter into a frozen "ref" adapter. For a fresh LoRA adapter that
    copy equals the base (LoRA B starts at zero; saved modules start as the originals), so it is
    dropped: TRL then scores the reference with the adapter disabled, and checkpoints hold one
    adapter. An --adapter (e.g. SFT) run keeps it: its reference is the SFT policy. Returns a
    description for the banner and summary.
    """
    model = trainer.accelerator.unwrap_model(trainer.model)
    if started_from_adapter and "ref" in model.peft_config:
        return "a frozen copy of the starting adapter (--adapter), on the shared base weights"
    if "ref" in model.peft_config:
        model.delete_adapter("ref")
    return "the base model (adapter disabled), on the shared base weights"


def restore_trained_adapter(trainer: Any, output: Path) -> None:
    """Load the last checkpoint's trained adapter when the model also holds TRL's "ref" copy.

    Such a checkpoint has the trained adapter at its root and "ref" in a sub-folder, and
    transformers 5.17 restores only sub-folder adapters when there are any: without this, --resume
    would silently continue from the starting adapter with the checkpoint's optimizer state.
    """
    model = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" not in model.peft_config:
        return  # one adapter: the trainer's own resume loads it
    checkpoint = str(run_dir.last_checkpoint(output))
    model.load_adapter(checkpoint, model.active_adapter, is_trainable=True)
