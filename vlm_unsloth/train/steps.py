"""The steps every training method takes, in the order `sft.py` and `dpo.py` call them:

    resolve_for_training → check_output → load_training_data → load_model_for_training →
    trainer_arguments → build_trainer (callbacks, OOM recovery, whole checkpoints, optimizer) →
    with claim_output(...): run_training

`resolve_for_training` resolves --model once (backend, checkpoint, family, device, precision):
every later step takes that object.

The data is validated with the model's processor, loaded alone, before the model: a run whose
rows are all rejected stops in seconds with one line, not after minutes of loading.

Sizing the batch (`batch_size.py`) and the end of a run (`summary.py`: save, summarise, print)
are steps too, in their own modules. Importing them imports no transformers, TRL or PEFT: Unsloth
must be imported before those (`resolve_for_training` does it), so they are imported inside the
steps.

A method holds its output folder for the whole call (`@holding_the_output_dir`): a second run on
the same folder stops at once. Nothing is written to the folder before `claim_output`, right
before training: a run that fails while it loads or checks leaves the folder as it found it
(run_dir's docstring tells how --overwrite replaces an earlier run).
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from vlm_unsloth import distributed, output_access, run_dir
from vlm_unsloth.config import DataArgs, ModelArgs, TrainArgs
from vlm_unsloth.data.splits import eval_rows_flag, first_rows, load_train_and_eval
from vlm_unsloth.data.validation import (
    LENGTH_COLUMN,
    ValidationReport,
    check_rows_kept,
    validate_dataset,
    write_rejected,
)
from vlm_unsloth.errors import BackendError, OutputDirError
from vlm_unsloth.families import TINY_MODEL_NAMES, tiny_family
from vlm_unsloth.models.device import DeviceSetup, cap_gpu_memory, cuda_available
from vlm_unsloth.models.loading import (
    LoadedModel,
    ModelRef,
    ResolvedModel,
    load_model,
    load_processor,
    resolve_run_model,
)
from vlm_unsloth.models.lora import LoraArgs
from vlm_unsloth.perf.oom import RecordKeepingCollator, with_oom_recovery
from vlm_unsloth.perf.optimizer import optimizer_cls_and_kwargs
from vlm_unsloth.train import full_disk
from vlm_unsloth.train.checkpoints import checkpoint_to_resume, with_whole_checkpoints
from vlm_unsloth.train.hub import check_can_push

P = ParamSpec("P")
R = TypeVar("R")
TRAINED, INTERRUPTED, ALREADY_FINISHED = "trained", "interrupted", "already finished"
"""What `run_training` reports."""


@dataclass
class TrainingData:
    train: Any
    """datasets.Dataset of validated canonical records (images as references)."""
    eval: Any | None
    report: ValidationReport
    """What validating the training rows found."""


def resolve_for_training(model_args: ModelArgs, train_args: TrainArgs) -> ResolvedModel:
    """--model resolved once: backend (Unsloth imported first when it runs), checkpoint (a tiny
    one built), family, device and precision; the GPU capped to `--gpu-memory-gib`. Refuses to
    train a real-size model on a CPU unless asked for."""
    if not Path(model_args.model).expanduser().exists():
        tiny_family(model_args.model)  # a tiny-* name no family has: that line, not the next
    if (
        model_args.backend == "auto"
        and not cuda_available()
        and model_args.model not in TINY_MODEL_NAMES
    ):
        # Training a multi-billion-parameter model on a CPU would run for days: refuse unless
        # the user asks for it with --backend hf.
        raise BackendError(
            f"no NVIDIA GPU found, and training {model_args.model} needs one",
            where="--backend auto",
            fix="for the offline CPU demo: python scripts/train_sft.py --config "
            "configs/tiny-cpu-demo.yaml (or pass --backend hf to train this model on CPU anyway)",
        )
    resolved = resolve_run_model(model_args, precision=train_args.precision)
    if train_args.gpu_memory_gib is not None:
        cap_gpu_memory(train_args.gpu_memory_gib, resolved.setup)
    return resolved


def holding_the_output_dir(train: Callable[P, R]) -> Callable[P, R]:
    """`train` (train_sft, train_dpo, train_grpo) holding its --output-dir for the whole call:
    from before the folder is checked to the end of the evaluation after training. A second
    run on the folder, or a --resume of this one, stops at once naming this run's process
    (output_access.py). Under torchrun the main process holds it: the others are its own."""

    @functools.wraps(train)
    def holding(*args: P.args, **kwargs: P.kwargs) -> R:
        train_args = inspect.signature(train).bind(*args, **kwargs).arguments["train_args"]
        folder = Path(train_args.output_dir).expanduser().resolve()
        # Told by the launcher's environment: the process group is joined after Unsloth loads.
        with output_access.holding(folder) if distributed.is_rank_zero() else nullcontext():
            return train(*args, **kwargs)

    return holding


def check_output(train_args: TrainArgs, console) -> Path:
    """--output-dir, checked by every process before anything loads; nothing is written. A new
    run: the folder is empty, or --overwrite and an earlier run (nothing else) in it. --resume:
    a complete checkpoint to continue from, every file of it readable."""
    check_can_push(train_args.push_to_hub)
    if not train_args.resume:
        return run_dir.check_output_dir(train_args.output_dir, overwrite=train_args.overwrite)
    output = Path(train_args.output_dir).expanduser().resolve()
    checkpoint_to_resume(output, console)
    return output


@contextmanager
def claim_output(
    output: Path,
    train_args: TrainArgs,
    config: dict[str, Any],
    setup: DeviceSetup,
    data: TrainingData,
    *,
    job: str,
    console,
) -> Iterator[None]:
    """Around training and saving: a new run takes --output-dir (the main process writes its
    manifest, run_config.yaml and rejected rows; an earlier run is set aside). If the block
    fails before the run saved anything, its files go and the earlier run comes back; once it
    has saved, the earlier run is deleted. A resumed run keeps its folder and configuration."""
    main = distributed.is_main_process()
    distributed.wait_for_everyone()  # every process checked the folder before it changes
    if main and not train_args.resume:
        new_files = (
            run_dir.RUN_MARKER, run_dir.REJECTED_FILE, run_dir.METRICS_FILE,
            run_dir.MODEL_CARD_FILE, f"{run_dir.PARTIAL_CHECKPOINT_DIR}/",
        )  # fmt: skip
        run_dir.start_run(output, job=job, files=new_files)
        resolved = {
            "backend": setup.backend, "device": setup.device, "dtype": setup.dtype,
            "processes": distributed.world_size(),
            "batch_size": train_args.batch_size, "grad_accum": train_args.grad_accum,
        }  # fmt: skip
        run_dir.save_run_config(output, {**config, "resolved": resolved})
        write_rejected(data.report, output / run_dir.REJECTED_FILE)
    distributed.wait_for_everyone()
    try:
        yield
    except OutputDirError:
        raise
    except Exception as error:
        # The saves say which one a full disk stopped (full_disk.saving_to); any other write
        # (a metrics line, the summary) says so in one line too.
        if full_disk.is_full_disk(error):
            raise full_disk.no_space(output, "the run's files") from error
        raise
    finally:
        if main and not train_args.resume:
            if run_dir.has_saved(output):
                run_dir.discard_previous_run(output)
            else:
                restored = run_dir.abandon_run(output)
                console.print(
                    "[yellow]the run stopped before saving anything: its files are removed"
                    + (f"; the earlier run is in {restored}" if restored else "")
                    + "[/]"
                )


def load_training_data(
    data_args: DataArgs,
    ref: ModelRef,
    train_args: TrainArgs,
    *,
    preference: bool,
) -> TrainingData:
    """Train and eval records (SFT, or preference pairs for DPO), validated with the model's
    processor; stops with one line (DataError) when validation keeps no train row, or no eval
    row where eval rows were asked for. `claim_output` writes the rejected rows to the run
    folder."""
    with distributed.main_process_first():
        train, held_out = load_train_and_eval(
            data_args, preference=preference, seed=train_args.seed
        )
        train = first_rows(train, data_args.max_samples)
        check = dict(
            family=ref.family,
            # The processor alone (no weights), so that bad data stops the run before the model
            # loads. It counts as the one the backend loads with the model: both are
            # AutoProcessor.from_pretrained of the same files (Unsloth's also pads on the left
            # and back-fills a missing chat template: neither changes a row's length).
            processor=load_processor(ref),
            max_side=data_args.max_side,
            max_seq_length=data_args.max_seq_length,
            strict=data_args.strict,
            fit_images=data_args.fit_images,
        )
        report = validate_dataset(train, **check)
        eval_report = validate_dataset(held_out, **check) if held_out is not None else None
    check_rows_kept(report, where="--dataset")
    if eval_report is not None:
        # Asked-for eval rows that are all rejected stop the run too: training on without
        # them would drop the evaluation the user asked for (and --eval-at-end's report).
        check_rows_kept(eval_report, where=eval_rows_flag(data_args))
    eval_kept = eval_report.kept if eval_report is not None else None
    return TrainingData(train=report.kept, eval=eval_kept, report=report)


def load_model_for_training(
    resolved: ResolvedModel,
    model_args: ModelArgs,
    lora_args: LoraArgs,
    data_args: DataArgs,
    train_args: TrainArgs,
) -> LoadedModel:
    """The model with trainable LoRA, loaded by every process at once (a tiny checkpoint was
    built by `resolve_for_training`)."""
    # Every process loads at once: Unsloth's loader runs collectives across the ranks while it
    # compiles (unsloth_zoo's distributed_function), so a rank held back in a barrier would
    # desynchronise them (seen on 2 H100s: "too many values to unpack" in rank 1).
    return load_model(
        model_args,
        lora_args,
        resolved.setup,
        seed=train_args.seed,
        max_seq_length=data_args.max_seq_length,
        ref=resolved.ref,
    )


def dataloader_workers(train_args: TrainArgs, setup: DeviceSetup) -> int:
    """--dataloader-num-workers, or by default: on a GPU, up to 4 worker processes decode,
    resize and process images while it computes (measured on an H100 with 1280 px JPEGs: the
    GPU waited for data 24-35% of the time with none); on CPU none (they would compete with the
    training for the same cores)."""
    if train_args.dataloader_num_workers is not None:
        return train_args.dataloader_num_workers
    if setup.device != "cuda":
        return 0
    return min(4, max((os.cpu_count() or 1) - 1, 0))


def trainer_arguments(
    train_args: TrainArgs, setup: DeviceSetup, output: Path, *, has_eval: bool
) -> dict:
    """TrainingArguments shared by SFTConfig and DPOConfig, from our options and the device."""
    optim = train_args.optim
    if optim == "auto":
        # 8-bit AdamW states, paged to CPU under memory pressure: the QLoRA recipe on CUDA.
        optim = "paged_adamw_8bit" if setup.device == "cuda" else "adamw_torch"
    evaluate_during = has_eval and train_args.eval_steps > 0
    # With --batch-size auto, 1 until batch_size.settle_batch_size measures it.
    batch_size = 1 if train_args.auto_batch_size else train_args.batch_size
    return dict(
        output_dir=str(output),
        num_train_epochs=train_args.epochs,
        max_steps=train_args.max_steps,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        gradient_accumulation_steps=train_args.grad_accum,
        learning_rate=train_args.learning_rate,
        warmup_steps=train_args.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
        lr_scheduler_type=train_args.lr_scheduler_type,
        weight_decay=train_args.weight_decay,
        max_grad_norm=train_args.max_grad_norm,
        optim=optim,
        seed=train_args.seed,
        data_seed=train_args.seed,
        bf16=setup.dtype == "bfloat16",
        fp16=setup.dtype == "float16",
        use_cpu=setup.device == "cpu",
        logging_steps=train_args.logging_steps,
        save_strategy="steps",
        save_steps=train_args.save_steps,
        save_total_limit=train_args.save_total_limit,
        eval_strategy="steps" if evaluate_during else "no",
        eval_steps=train_args.eval_steps if evaluate_during else None,
        report_to=train_args.report_to,
        dataloader_num_workers=dataloader_workers(train_args, setup),
        train_sampling_strategy="group_by_length" if train_args.group_by_length else "random",
        length_column_name=LENGTH_COLUMN,
        # Gradient checkpointing is set up when the model is loaded (Unsloth's own variant on
        # the unsloth backend); the trainer must not wrap the model a second time.
        gradient_checkpointing=False,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,  # the rich progress line replaces tqdm
        logging_first_step=True,
    )


def callbacks(output: Path, console) -> list:
    """Our trainer callbacks, each installed once (`installed_callback` finds them)."""
    # callbacks.py imports transformers: imported once the backend is active (Unsloth first).
    from vlm_unsloth.train.callbacks import (
        DataWaitCallback,
        GracefulInterruptCallback,
        MetricsCallback,
        ModelInputsCallback,
        RichProgressCallback,
        RunFolderCallback,
    )

    return [
        RunFolderCallback(output),  # first: when it stops a resumed run, nothing else started
        DataWaitCallback(),  # first: its log entry must exist when MetricsCallback writes
        MetricsCallback(output),
        RichProgressCallback(console),
        GracefulInterruptCallback(console),
        ModelInputsCallback(),
    ]


def saving_whole_checkpoints(trainer_class: type, **kwargs):
    """`trainer_class(**kwargs)` with checkpoints written whole (checkpoints.py) and the
    optimizer of perf/optimizer.py: what every training method's trainer gets."""
    trainer = with_whole_checkpoints(trainer_class)(**kwargs)
    # --optim as transformers resolves it, without bitsandbytes' per-parameter GPU stalls.
    trainer.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs(trainer.args, trainer.model)
    return trainer


def build_trainer(trainer_class: type, *, loss_is_mean_over_rows: bool, console, output, **kwargs):
    """`trainer_class` (TRL's SFTTrainer/DPOTrainer, as Unsloth patched them) with out-of-memory
    recovery (perf/oom.py: its collator keeps each batch's records so a batch can be split),
    checkpoints written whole (checkpoints.py) and the optimizer of perf/optimizer.py."""
    recovering = with_oom_recovery(trainer_class, loss_is_mean_over_rows=loss_is_mean_over_rows)
    collator = RecordKeepingCollator(kwargs.pop("data_collator"))
    trainer = saving_whole_checkpoints(recovering, data_collator=collator, **kwargs)

    def on_split(step: int, rows: int, pieces: int) -> None:
        line = (
            f"out of GPU memory at step {step + 1}: batch of {rows} now runs as {pieces} pieces "
            f"(accumulation x{pieces}); same effective batch, same step"
        )
        console.print(f"[yellow]{line}[/]")
        if distributed.is_main_process():
            # The step it happened in (as above): a resumed run drops it with that step's log.
            event = {"step": step + 1, "event": "oom_split", "pieces": pieces}
            run_dir.append_metrics(output, event)

    trainer.on_split = on_split
    return trainer


def resumes_a_finished_run(train_args: TrainArgs, output: Path) -> bool:
    """Whether --resume finds the run finished at its last checkpoint, asked to train as long as
    then: `run_training` would return ALREADY_FINISHED. Checked first, so that nothing is loaded,
    validated or scored for a run with nothing left to do."""
    checkpoint = run_dir.last_checkpoint(output) if train_args.resume else None
    if checkpoint is None or not run_dir.finished_at(output, run_dir.checkpoint_step(checkpoint)):
        return False
    summary = run_dir.read_summary(output)
    return (summary.get("max_steps"), summary.get("epochs")) == (
        train_args.max_steps, train_args.epochs,
    )  # fmt: skip


def run_training(trainer, train_args: TrainArgs, output: Path, console) -> str:
    """Train (from the last complete checkpoint with --resume). Returns TRAINED, INTERRUPTED
    (Ctrl-C: saved and stopped early) or ALREADY_FINISHED (a resumed run that had finished:
    nothing to do, nothing changed). A resumed run whose checkpoint is its final step but which
    did not finish (it died right after that save) trains no further: TRAINED, with the
    checkpoint's weights in the model, for the caller to save."""
    from transformers.trainer_callback import PrinterCallback

    from vlm_unsloth.train.callbacks import GracefulInterruptCallback, NothingLeftToTrain

    # The rich progress line and metrics.jsonl replace the trainer's raw dict printing.
    trainer.remove_callback(PrinterCallback)
    resume_from = run_dir.last_checkpoint(output) if train_args.resume else None
    if resume_from is not None:
        distributed.let_cpu_processes_load_checkpoints()
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except NothingLeftToTrain as stop:
        if run_dir.finished_at(output, stop.step):
            return ALREADY_FINISHED
        console.print(
            f"checkpoint-{stop.step} is the run's final step: saving its adapter, "
            "no further training"
        )
    finally:
        installed_callback(trainer, GracefulInterruptCallback).restore_handler()
    if installed_callback(trainer, GracefulInterruptCallback).interrupted:
        return INTERRUPTED
    return TRAINED


def installed_callback(trainer, kind: type):
    """The trainer's instance of one of our callbacks (`callbacks()` installs each once)."""
    return next(c for c in trainer.callback_handler.callbacks if isinstance(c, kind))
