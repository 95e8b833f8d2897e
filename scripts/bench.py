"""Benchmark backends and batch settings on the same data (samples/s, tokens/s, GiB, MFU).

    python scripts/bench.py --model qwen2-vl-7b --backends unsloth hf --settings 2x4 8x1 16x1
    python scripts/bench.py --model tiny-qwen2-vl --backends hf --settings 1x1 2x1 --steps 3

Each run is `vlm-unsloth train-sft` (or `--command train-grpo`) in its own process; see
vlm_unsloth.perf.bench.
"""

import sys


def main(argv=None) -> int:
    from vlm_unsloth.cli import run_reporting_errors
    from vlm_unsloth.config import parse_args
    from vlm_unsloth.console import make_console
    from vlm_unsloth.perf.bench import BenchArgs, run_benchmark

    def run():
        (args,) = parse_args([BenchArgs], argv)
        run_benchmark(args, console=make_console())

    return run_reporting_errors(run, argv)


if __name__ == "__main__":
    sys.exit(main())
