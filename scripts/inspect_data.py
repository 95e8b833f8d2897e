"""Check a dataset before training: rows kept and rejected (and why), tokens per sample.

    python scripts/inspect_data.py --model tiny-qwen2-vl                      # the demo set
    python scripts/inspect_data.py --dataset train.jsonl --model tiny-qwen2-vl --max-side 1024
    python scripts/inspect_data.py --dataset HuggingFaceM4/ChartQA --max-seq-length 1024 \\
        --rejected-file rejected.jsonl

Takes the data flags of train_sft.py (--dataset, --image-column, --instruction, --max-side,
--max-seq-length, --fit-images, ...). Exits 0 whenever it could read the dataset, whatever it
rejected (unless --strict); bad input prints one `error: ...` line and exits 2.
The work is done by vlm_unsloth.train.inspect.inspect_dataset.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from vlm_unsloth.cli import inspect_data_main

    return inspect_data_main(argv)


if __name__ == "__main__":
    sys.exit(main())
