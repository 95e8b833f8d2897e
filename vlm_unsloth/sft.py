"""Supervised fine-tuning (QLoRA) of a vision-language model, top to bottom.

    python scripts/train_sft.py --max-side 768                      # Qwen2-VL-7B, demo data, GPU
    python scripts/train_sft.py --model tiny-qwen2-vl --backend hf  # offline CPU demo

backend → output folder → model + LoRA → data (load, validate, split) → collator → TRL
SFTTrainer → train (resumable, Ctrl-C safe) → save adapter (+ merged) → loss curve and summary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_unsloth import distributed, pipeline
from vlm_unsloth.config import DataArgs, ModelArgs, TrainArgs, to_dict
from vlm_unsloth.console import make_console
from vlm_unsloth.lora import LoraArgs


@dataclass
class TrainResult:
    output_dir: Path
    adapter_dir: Path
    summary: dict[str, Any]


def train_sft(
    model_args: ModelArgs,
    lora_args: LoraArgs,
    data_args: DataArgs,
    train_args: TrainArgs,
    *,
    console=None,
    extra_callbacks: list | None = None,
) -> TrainResult:
    """Train a LoRA adapter with TRL's SFTTrainer on either backend; see the module docstring.

    `extra_callbacks`: more `transformers.TrainerCallback`s (e.g. a notebook's own logging).
    """
    started = time.perf_counter()
    # Backend first: Unsloth must be imported before transformers/TRL/PEFT to patch them.
    plan = pipeline.resolve_plan(model_args, train_args)
    if train_args.eval_at_end:  # no eval rows: say so now, not after training
        from vlm_unsloth.evaluate import check_eval_at_end

        check_eval_at_end(data_args, train_args)
    console = console or make_console()
    output = pipeline.prepare_output(
        train_args, to_dict(model_args, lora_args, data_args, train_args), plan
    )

    loaded = pipeline.load_model_for_training(model_args, lora_args, data_args, train_args, plan)
    data = pipeline.load_sft_data(data_args, loaded, train_args, output)
    collator = pipeline.make_sft_collator(loaded, data_args, train_args)

    from trl import SFTConfig, SFTTrainer

    trainer_config = SFTConfig(
        **pipeline.trainer_arguments(train_args, plan, output, has_eval=data.eval is not None),
        # Vision batches are built by our collator from raw records: TRL must not tokenize,
        # truncate or drop the columns it does not know.
        remove_unused_columns=False,
        dataset_text_field="",
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,
    )
    trainer = pipeline.build_trainer(
        SFTTrainer,
        # The loss sums the answer tokens over the step's token count: halves add up.
        loss_is_mean_over_rows=False,
        console=console,
        output=output,
        model=loaded.model,
        args=trainer_config,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=collator,
        processing_class=loaded.processor,
        callbacks=pipeline.callbacks(output, console) + list(extra_callbacks or []),
    )
    train_args = pipeline.settle_batch_size(trainer, train_args, data, loaded, output, console)
    pipeline.print_banner(console, "SFT", loaded, data, train_args, output)
    interrupted = pipeline.run_training(trainer, train_args, output)
    result = pipeline.finish(
        console, "SFT", trainer, loaded, data, train_args, output, started, interrupted
    )
    if train_args.eval_at_end and not interrupted and distributed.is_main_process():
        # The model just trained answers (no reload, no second copy); base answers come from
        # the same weights with the adapter switched off. Writes OUTPUT/eval/.
        from vlm_unsloth.evaluate import evaluate_run

        evaluate_run(output, loaded=loaded, records=data.eval, console=console)
    return result
