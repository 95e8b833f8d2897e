"""Check a dataset the way training will, without training: rows kept and rejected (with
reasons), images resized, and tokens per sample as the model's processor counts them.

    python scripts/inspect_data.py --dataset my_data.jsonl --model tiny-qwen2-vl --max-side 768
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console

from vlm_unsloth.config import DataArgs
from vlm_unsloth.data.loaders import data_spec, load_preference_dataset, load_sft_dataset
from vlm_unsloth.data.splits import dataset_paths, first_rows
from vlm_unsloth.data.validation import (
    ValidationReport,
    print_report,
    print_token_histogram,
    validate_dataset,
    write_rejected,
)
from vlm_unsloth.families import default_family, tiny_names
from vlm_unsloth.models.loading import load_processor, resolve_model


@dataclass
class InspectArgs:
    """What inspect_data.py adds to the data flags."""

    model: str = field(
        default=default_family().default_model,
        metadata={
            "help": "Whose processor counts the tokens: hub id, local folder, or a tiny offline "
            f"model ({tiny_names()})."
        },
    )
    preference: bool = field(
        default=False,
        metadata={"help": "Preference (DPO) data: image, question, chosen, rejected."},
    )
    rejected_file: str | None = field(
        default=None, metadata={"help": "Write the rejected rows here as JSONL."}
    )
    num_proc: int | None = field(
        default=None, metadata={"help": "Processes that decode images (default: this one)."}
    )


def inspect_dataset(
    data_args: DataArgs,
    *,
    model: str,
    preference: bool = False,
    rejected_file: str | None = None,
    num_proc: int | None = None,
    console: Console | None = None,
) -> ValidationReport:
    """Load `data_args.dataset` with `model`'s processor, validate it, print the tables.

    The body of scripts/inspect_data.py. Raises DataError/ModelError/ConfigError (one line) when
    the dataset or model cannot be read; rejected rows are reported, not raised (unless strict).
    """
    console = console or Console()
    path, _ = dataset_paths(data_args, preference=preference)  # "demo": the shipped set
    loader = load_preference_dataset if preference else load_sft_dataset
    # The data first: a bad --dataset fails in a second, before any model file is read.
    dataset = first_rows(loader(data_spec(data_args, path)), data_args.max_samples)
    ref = resolve_model(model)
    processor = load_processor(ref)
    console.print(f"[bold]{path}[/bold]: {len(dataset)} rows; {ref.name} ({ref.family.key})")
    report = validate_dataset(
        dataset,
        family=ref.family,
        processor=processor,
        max_side=data_args.max_side,
        max_seq_length=data_args.max_seq_length,
        strict=data_args.strict,
        fit_images=data_args.fit_images,
        num_proc=num_proc,
    )
    print_report(report, console)
    print_token_histogram(report.token_counts, console)
    if rejected_file:
        console.print(f"rejected rows written to {write_rejected(report, rejected_file)}")
    return report
