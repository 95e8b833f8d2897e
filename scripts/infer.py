"""Ask a (fine-tuned) vision-language model about images.

    python scripts/infer.py --adapter outputs/sft --image chart.png --prompt "Which bar is highest?"
    python scripts/infer.py --adapter outputs/sft --input eval.jsonl --output pred.jsonl
    python scripts/infer.py --model tiny-qwen2-vl --backend hf --image x.png --prompt "Colour?"

--image/--prompt streams one answer to the terminal; --input/--output answers every row (the
training data formats and column flags) and writes each row with an added `prediction`.
Greedy unless --temperature > 0. All options: --help. The work is done by
vlm_unsloth.infer.predict.run_inference.
"""

import sys


def main(argv=None) -> int:
    from vlm_unsloth.cli import infer_main

    return infer_main(argv)


if __name__ == "__main__":
    sys.exit(main())
