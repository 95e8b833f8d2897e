"""Write the synthetic chart QA demo set (images, SFT and DPO JSONL, README).

    python scripts/make_demo_data.py --output-dir vlm_unsloth/data/demo
    python scripts/make_demo_data.py --output-dir /tmp/demo --train-count 20 --eval-count 5

The same seed gives byte-identical files; see vlm_unsloth/data/demo_charts.py for what is drawn.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from transformers import HfArgumentParser

    from vlm_unsloth.data.demo_charts import DemoDataConfig, write_demo_dataset
    from vlm_unsloth.errors import VlmUnslothError

    parser = HfArgumentParser(DemoDataConfig, description=__doc__.splitlines()[0])
    try:
        (config,) = parser.parse_args_into_dataclasses(args=argv)
        summary = write_demo_dataset(config)
    except VlmUnslothError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    rows = ", ".join(f"{name} {count}" for name, count in summary.rows.items())
    print(
        f"wrote {summary.image_count} images ({summary.image_bytes / 1e6:.2f} MB) and {rows} rows"
        f" to {summary.output_dir} ({summary.total_bytes / 1e6:.2f} MB in all)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
