"""Reinforcement learning with verifiable rewards (GRPO) of a vision-language model's adapter.

    python scripts/train_grpo.py --adapter outputs/mine --dataset charts.jsonl \
        --rewards relaxed_accuracy format --max-side 768                 # GPU, after SFT
    python scripts/train_grpo.py --model tiny-qwen2-vl --backend hf --adapter outputs/tiny-sft \
        --dataset colours.jsonl --eval-fraction 0.1                      # offline CPU demo

All options: --help. The work is done by vlm_unsloth.train.grpo.train_grpo.
"""

import sys


def main(argv=None) -> int:
    from vlm_unsloth.cli import grpo_main

    return grpo_main(argv)


if __name__ == "__main__":
    sys.exit(main())
