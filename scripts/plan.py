"""Predict peak GPU memory for batch sizes 1..N and recommend max side, batch and accumulation.

    python scripts/plan.py --model qwen2-vl-7b --max-side 768 --gpu-memory-gib 12

Calibrated from measured runs (vlm_unsloth/calibration/peak_memory.json);
see vlm_unsloth.perf.memory_plan.
"""

import sys


def main(argv=None) -> int:
    from vlm_unsloth.cli import plan_main

    return plan_main(argv)


if __name__ == "__main__":
    sys.exit(main())
