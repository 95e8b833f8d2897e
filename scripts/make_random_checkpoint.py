"""Write a random-weight checkpoint of a real model size (for GPU memory/speed measurements).

    python scripts/make_random_checkpoint.py --arch qwen2-vl-7b --output-dir /tmp/qwen2-vl-7b
    python scripts/train_sft.py --model /tmp/qwen2-vl-7b --max-side 768 --max-steps 30

Architectures (vlm_unsloth/models/random_weights.py): qwen2-vl-7b, qwen2.5-vl-7b,
llama-3.2-11b-vision, smolvlm-instruct, pixtral-12b, qwen3-vl-8b, gemma-3-4b, gemma-3-12b.
"""

import sys
from dataclasses import dataclass, field


@dataclass
class RandomCheckpointArgs:
    arch: str = field(
        default="qwen2-vl-7b",
        metadata={"help": "Real architecture to build (an unknown name is refused with the list)."},
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
