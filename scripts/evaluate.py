"""Compare the base model and a fine-tuned adapter on an eval split; write an HTML report.

    python scripts/evaluate.py --adapter outputs/sft                  # the run's eval data
    python scripts/evaluate.py --adapter outputs/sft --dataset eval.jsonl --max-samples 200
    python scripts/evaluate.py --adapter outputs/sft --output-dir outputs/eval --overwrite

Writes report.html (self-contained: metrics table, gallery of --num-samples rows), report.md,
predictions.jsonl and metrics.json (exact match, relaxed accuracy, ANLS, CER). All options:
--help. The work is done by vlm_unsloth.infer.evaluate.evaluate_adapter.
"""

import sys


def main(argv=None) -> int:
    from vlm_unsloth.cli import evaluate_main

    return evaluate_main(argv)


if __name__ == "__main__":
    sys.exit(main())
