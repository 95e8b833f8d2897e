"""Write a random-weight checkpoint of a real model size (for GPU memory/speed measurements).

    python scripts/make_random_checkpoint.py --arch qwen2-vl-7b --output-dir /tmp/qwen2-vl-7b
    python scripts/train_sft.py --model /tmp/qwen2-vl-7b --max-side 768 --max-steps 30

Architectures: the family modules' sizes with a real configuration (`--help` lists them).
"""

import sys
from dataclasses import dataclass, field

from vlm_unsloth.models.random_weights import REAL_ARCHITECTURES  # a table: no torch import


@dataclass
class RandomCheckpointArgs:
    arch: str = field(
        default="qwen2-vl-7b",
        metadata={"help": "Real architecture to build: " + ", ".join(REAL_ARCHITECTURES)},
    )
    output_dir: str = field(
        default="outputs/random-qwen2-vl-7b", metadata={"help": "Folder to write."}
    )


def main(argv=None) -> int:
    from vlm_unsloth.cli import run_reporting_errors
    from vlm_unsloth.config import parse_args
    from vlm_unsloth.models.random_weights import build_random_checkpoint

    def run():
        (args,) = parse_args([RandomCheckpointArgs], argv)
        print(build_random_checkpoint(args.arch, args.output_dir))

    return run_reporting_errors(run, argv)


if __name__ == "__main__":
    sys.exit(main())
