"""Check a dataset before training: rows kept and rejected (and why), tokens per sample.

    python scripts/inspect_data.py --model tiny-qwen2-vl                      # the demo set
    python scripts/inspect_data.py --dataset train.jsonl --model tiny-qwen2-vl --max-side 1024
    python scripts/inspect_data.py --dataset HuggingFaceM4/ChartQA --max-seq-length 1024 \\
        --rejected-file rejected.jsonl

Takes the data flags of train_sft.py (--dataset, --image-column, --instruction, --max-side,
--max-seq-length, --fit-images, ...). Exits 0 whenever it could read the dataset, whatever it
rejected (unless --strict); bad input prints one `error: ...` line and exits 1.
The work is done by vlm_unsloth.validation.inspect_dataset.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from vlm_unsloth.families import FAMILIES


@dataclass
class InspectArgs:
    """What inspect_data.py adds to the data flags."""

    model: str = field(
        default=FAMILIES["qwen2-vl"].default_model,
        metadata={
            "help": "Whose processor counts the tokens: hub id, local folder, or tiny-qwen2-vl, "
            "tiny-qwen2.5-vl, tiny-llama-3.2-vision (offline)."
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


def main(argv: list[str] | None = None) -> int:
    from vlm_unsloth.config import DataArgs, parse_args
    from vlm_unsloth.errors import VlmUnslothError
    from vlm_unsloth.validation import inspect_dataset

    try:
        data_args, args = parse_args([DataArgs, InspectArgs], argv)
        inspect_dataset(
            data_args,
            model=args.model,
            preference=args.preference,
            rejected_file=args.rejected_file,
            num_proc=args.num_proc,
        )
    except VlmUnslothError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
