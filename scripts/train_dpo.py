"""Preference optimisation (DPO) of a vision-language model on (image, prompt, chosen, rejected).

    python scripts/train_dpo.py --model tiny-qwen2-vl --backend hf --max-steps 20  # CPU demo
    python scripts/train_dpo.py --adapter outputs/sft/adapter                      # GPU, after SFT
    python scripts/train_dpo.py --dataset openbmb/RLAIF-V-Dataset --max-samples 2000

All options: --help. The work is done by vlm_unsloth.train.dpo.train_dpo.
"""

import sys


def main(argv=None) -> int:
    from vlm_unsloth.cli import dpo_main

    return dpo_main(argv)


if __name__ == "__main__":
    sys.exit(main())
