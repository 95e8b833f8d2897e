"""Supervised fine-tuning (QLoRA) of a vision-language model on your images.

    python scripts/train_sft.py --max-side 768                      # GPU: Qwen2-VL-7B, demo data
    python scripts/train_sft.py --model tiny-qwen2-vl --backend hf  # offline CPU demo
    python scripts/train_sft.py --config configs/qwen2-vl-7b-12gb.yaml  # a preset, flags override

All options: --help. The work is done by vlm_unsloth.train.sft.train_sft.
"""

import sys


def main(argv=None) -> int:
    from vlm_unsloth.cli import train_sft_main

    return train_sft_main(argv)


if __name__ == "__main__":
    sys.exit(main())
