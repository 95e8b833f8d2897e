"""Supervised fine-tuning (QLoRA) of a vision-language model, top to bottom.

    python scripts/train_sft.py --max-side 768                      # Qwen2-VL-7B, demo data, GPU
    python scripts/train_sft.py --model tiny-qwen2-vl --backend hf  # offline CPU demo

backend → output folder checked → data (load, split, validate with the model's processor; no
row kept stops here) → model + LoRA → collator → TRL SFTTrainer → the run claims the folder →
train (resumable, Ctrl-C safe) → save adapter (+ merged) → loss curve and summary.
"""

from __future__ import annotations

import time

from vlm_unsloth import distributed
from vlm_unsloth.config import DataArgs, ModelArgs, TrainArgs, to_dict
from vlm_unsloth.console import make_console
from vlm_unsloth.data.splits import has_eval_rows
from vlm_unsloth.errors import ConfigError
from vlm_unsloth.infer.evaluate import evaluate_run
from vlm_unsloth.models.backend import backend_module
from vlm_unsloth.models.lora import LoraArgs
from vlm_unsloth.train import steps
from vlm_unsloth.train.batch_size import settle_batch_size
from vlm_unsloth.train.summary import (
    FinishedRun,
    TrainResult,
    already_finished,
    finish,
    print_banner,
)


@steps.holding_the_output_dir
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
    resolved = steps.resolve_for_training(model_args, train_args)
    if train_args.eval_at_end and not has_eval_rows(data_args):  # say so now, not after training
        raise ConfigError(
            "--eval-at-end needs evaluation rows and there are none",
            where="--eval-at-end",
            fix="pass --eval-dataset, --eval-split or --eval-fraction (or drop --eval-at-end)",
        )
    console = console or make_console()
    config = to_dict(model_args, lora_args, data_args, train_args)
    output = steps.check_output(train_args, console)  # writes nothing: see claim_output
    if steps.resumes_a_finished_run(train_args, output):
        return already_finished(output, console)

    data = steps.load_training_data(data_args, resolved.ref, train_args, preference=False)
    loaded = steps.load_model_for_training(resolved, model_args, lora_args, data_args, train_args)
    collator = backend_module(loaded.setup.backend).make_sft_collator(
        loaded.model,
        loaded.processor,
        loaded.family,
        max_side=data_args.max_side,
        train_on_prompt=train_args.train_on_prompt,
        max_seq_length=data_args.max_seq_length,
    )

    from trl import SFTConfig, SFTTrainer

    trainer_config = SFTConfig(
        **steps.trainer_arguments(train_args, loaded.setup, output, has_eval=data.eval is not None),
        # Vision batches are built by our collator from raw records: TRL must not tokenize,
        # truncate or drop the columns it does not know.
        remove_unused_columns=False,
        dataset_text_field="",
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,
    )
    trainer = steps.build_trainer(
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
        callbacks=steps.callbacks(output, console) + list(extra_callbacks or []),
    )
    if loaded.setup.backend == "hf" and trainer_config.loss_type == "chunked_nll":
        # Qwen2.5-VL, Qwen3-VL, Qwen3.5, Gemma 3n and Gemma 4 declare accepts_loss_kwargs=False,
        # so the Trainer would not pass num_items_in_batch and TRL's chunked loss would average
        # each micro-batch on its own: gradient accumulation (and the out-of-memory split) would
        # weight a short micro-batch's tokens more. TRL's chunked forward takes it for every model.
        trainer.model_accepts_loss_kwargs = True
    train_args = settle_batch_size(trainer, train_args, data, loaded, output, console)
    print_banner(console, "SFT", loaded, data, train_args, output)
    with steps.claim_output(
        output, train_args, config, loaded.setup, data, job="SFT", console=console
    ):
        outcome = steps.run_training(trainer, train_args, output, console)
        if outcome == steps.ALREADY_FINISHED:
            return already_finished(output, console)
        interrupted = outcome == steps.INTERRUPTED
        run = FinishedRun("SFT", trainer, loaded, data, train_args, output, started, interrupted)
        result = finish(run, console)
    if train_args.eval_at_end and not interrupted and distributed.is_main_process():
        # The model just trained answers (no reload, no second copy); base answers come from
        # the same weights with the adapter switched off. Writes OUTPUT/eval/.
        evaluate_run(output, loaded=loaded, records=data.eval, console=console)
    return result
