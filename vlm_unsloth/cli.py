"""Command-line entry points: parse flags/YAML into the config dataclasses, call the library.

    vlm-unsloth train-sft --model tiny-qwen2-vl --backend hf --max-steps 20
    python scripts/train_sft.py ...   (the same function)

A problem the user can fix prints one line (`error: ...`) and exits 2; a training run stopped by
Ctrl-C (saved, resumable) exits 130, as shells report a command Ctrl-C stopped, so scripts and
schedulers can tell it from a finished one. Nothing else is caught.
Heavy modules are imported inside each command: `--help` and a bad flag answer at once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from vlm_unsloth import distributed
from vlm_unsloth.config import chosen_backend, chosen_model, option_origin, parse_args
from vlm_unsloth.console import quiet_library_notices
from vlm_unsloth.errors import VlmUnslothError, error_line

INTERRUPTED = 130
"""Exit status of a run stopped by Ctrl-C: 128 + SIGINT, what shells report for one."""


def run_reporting_errors(run: Callable[[], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a command: its exit status (0 unless it returns one); a VlmUnslothError becomes one
    `error:` line and exit status 2; a Ctrl-C that aborts (a second one during training, which
    the first one's save would have finished) one line and INTERRUPTED.

    An error that blames an option the command line (`argv`, default sys.argv[1:]) did not set
    names the --config file and key that did: `configs/x.yaml: eval_split: ...`, not a flag the
    user never typed. Library notices the user cannot act on are dropped first, before torch is
    imported (`console.quiet_library_notices`)."""
    quiet_library_notices()
    try:
        return run() or 0
    except VlmUnslothError as error:
        origin = option_origin(error.where, sys.argv[1:] if argv is None else argv)
        line = error_line(error.what, where=origin, fix=error.fix) if origin else str(error)
        print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "aborted by Ctrl-C: nothing more was saved (a training run's last complete "
            "checkpoint is still there for --resume)",
            file=sys.stderr,
        )
        return INTERRUPTED
    finally:
        distributed.leave_process_group()


def training_exit_status(result) -> int:
    """0 for a run that trained to its end (or had already), INTERRUPTED for one that Ctrl-C
    stopped after saving (the training functions return its summary either way)."""
    return INTERRUPTED if result.summary["interrupted"] else 0


def parse(dataclass_types: Sequence[type], argv: Sequence[str] | None) -> tuple:
    """`config.parse_args`, with Unsloth imported first when the arguments choose it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    backend = chosen_backend(dataclass_types, argv)
    if backend is not None:
        from vlm_unsloth.models.backend import activate_backend
        from vlm_unsloth.models.checkpoints import peek_family
        from vlm_unsloth.models.device import backend_notice

        model = chosen_model(dataclass_types, argv)
        family = peek_family(model) if model else None
        _, why = activate_backend(backend, model)
        if family is not None and why == backend_notice(family):  # Unsloth can't train it
            print(f"note: {why}", file=sys.stderr)
    return parse_args(dataclass_types, argv)


def train_sft_main(argv: Sequence[str] | None = None) -> int:
    """`vlm-unsloth train-sft` / scripts/train_sft.py."""

    def run():
        from vlm_unsloth.config import DataArgs, ModelArgs, TrainArgs
        from vlm_unsloth.models.lora import LoraArgs

        model_args, lora_args, data_args, train_args = parse(
            [ModelArgs, LoraArgs, DataArgs, TrainArgs], argv
        )
        from vlm_unsloth.train.sft import train_sft

        return training_exit_status(train_sft(model_args, lora_args, data_args, train_args))

    return run_reporting_errors(run, argv)


def dpo_main(argv: Sequence[str] | None = None) -> int:
    """`vlm-unsloth train-dpo` / scripts/train_dpo.py."""

    def run():
        from vlm_unsloth.config import DataArgs, ModelArgs
        from vlm_unsloth.models.lora import LoraArgs
        from vlm_unsloth.train.dpo import DpoArgs, DpoTrainArgs

        model_args, lora_args, data_args, train_args, dpo_args = parse(
            [ModelArgs, LoraArgs, DataArgs, DpoTrainArgs, DpoArgs], argv
        )
        from vlm_unsloth.train.dpo import train_dpo

        result = train_dpo(model_args, lora_args, data_args, train_args, dpo_args)
        return training_exit_status(result)

    return run_reporting_errors(run, argv)


def grpo_main(argv: Sequence[str] | None = None) -> int:
    """`vlm-unsloth train-grpo` / scripts/train_grpo.py."""

    def run():
        from vlm_unsloth.config import DataArgs, ModelArgs
        from vlm_unsloth.models.lora import LoraArgs
        from vlm_unsloth.train.grpo_options import GrpoArgs, GrpoTrainArgs

        model_args, lora_args, data_args, train_args, grpo_args = parse(
            [ModelArgs, LoraArgs, DataArgs, GrpoTrainArgs, GrpoArgs], argv
        )
        from vlm_unsloth.train.grpo import train_grpo

        result = train_grpo(model_args, lora_args, data_args, train_args, grpo_args)
        return training_exit_status(result)

    return run_reporting_errors(run, argv)


def infer_main(argv: Sequence[str] | None = None) -> int:
    """`vlm-unsloth infer` / scripts/infer.py."""

    def run():
        from vlm_unsloth.infer.args import GenerationArgs, InferArgs, PromptDataArgs
        from vlm_unsloth.infer.predict import run_inference

        args, data_args, generation = parse([InferArgs, PromptDataArgs, GenerationArgs], argv)
        run_inference(args, data_args, generation)

    return run_reporting_errors(run, argv)


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """`vlm-unsloth evaluate` / scripts/evaluate.py."""

    def run():
        from vlm_unsloth.infer.args import EvalArgs, GenerationArgs, PromptDataArgs
        from vlm_unsloth.infer.evaluate import evaluate_adapter

        args, data_args, generation = parse([EvalArgs, PromptDataArgs, GenerationArgs], argv)
        evaluate_adapter(
            args.adapter,
            model=args.model,
            data_args=data_args,
            output_dir=args.output_dir,
            overwrite=args.overwrite,
            generation=generation,
            num_samples=args.num_samples,
            backend=args.backend,
            quantization=args.quantization,
        )

    return run_reporting_errors(run, argv)


def inspect_data_main(argv: Sequence[str] | None = None) -> int:
    """`vlm-unsloth inspect-data` / scripts/inspect_data.py."""

    def run():
        from vlm_unsloth.config import DataArgs
        from vlm_unsloth.train.inspect import InspectArgs, inspect_dataset

        data_args, args = parse([DataArgs, InspectArgs], argv)
        inspect_dataset(
            data_args,
            model=args.model,
            preference=args.preference,
            rejected_file=args.rejected_file,
            num_proc=args.num_proc,
        )

    return run_reporting_errors(run, argv)


def plan_main(argv: Sequence[str] | None = None) -> int:
    """`vlm-unsloth plan` / scripts/plan.py."""

    def run():
        from vlm_unsloth.console import make_console
        from vlm_unsloth.perf.memory_plan import PlanArgs, plan_memory, print_plan

        # No backend is activated: planning is arithmetic, on any machine.
        (args,) = parse_args([PlanArgs], argv)
        print_plan(plan_memory(args), args, make_console())

    return run_reporting_errors(run, argv)


def models_main(argv: Sequence[str] | None = None) -> int:
    """`vlm-unsloth models`."""

    def run():
        from vlm_unsloth.console import make_console
        from vlm_unsloth.train.catalog import ModelsArgs, print_models

        # No backend is activated: the list is read from the family modules, on any machine.
        (args,) = parse_args([ModelsArgs], argv)
        print_models(args, make_console())

    return run_reporting_errors(run)


COMMANDS: dict[str, tuple[str, Callable[[Sequence[str]], int]]] = {
    "train-sft": ("Supervised fine-tuning (QLoRA) of a VLM.", train_sft_main),
    "train-dpo": ("Preference optimisation (DPO) of a VLM's LoRA adapter.", dpo_main),
    "train-grpo": (
        "Reinforcement learning (GRPO) of a VLM's LoRA adapter with verifiable rewards.",
        grpo_main,
    ),
    "infer": ("Answer questions about images (streamed, or a dataset in batches).", infer_main),
    "plan": (
        "Predict peak GPU memory per batch size; recommend batch and accumulation.",
        plan_main,
    ),
    "inspect-data": (
        "Validate a dataset: rows kept/rejected, tokens per sample.",
        inspect_data_main,
    ),
    "evaluate": ("Base vs fine-tuned on an eval split: metrics and an HTML report.", evaluate_main),
    "models": (
        "The supported families: checkpoints, backends, methods (--json, --markdown).",
        models_main,
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """`vlm-unsloth COMMAND [options]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: vlm-unsloth COMMAND [options]   (COMMAND --help for its options)\n")
        for name, (help_text, _) in COMMANDS.items():
            print(f"  {name:<14} {help_text}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    _, command = COMMANDS[argv[0]]
    return command(argv[1:])


if __name__ == "__main__":  # python -m vlm_unsloth.cli COMMAND ... (what bench.py runs)
    sys.exit(main())
