"""Write the coloured-squares demo set of the offline CPU quickstart (images, JSONL, README).

    python scripts/make_colour_demo.py --output-dir vlm_unsloth/data/demo_colours
    python scripts/make_colour_demo.py --output-dir /tmp/colours --train-count 40 --eval-count 8

The same seed gives byte-identical files; see vlm_unsloth/data/demo_colours.py for what is drawn.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from transformers import HfArgumentParser

    from vlm_unsloth.data.demo_colours import ColourDemoConfig, write_colour_demo
    from vlm_unsloth.errors import VlmUnslothError

    parser = HfArgumentParser(ColourDemoConfig, description=__doc__.splitlines()[0])
    try:
        (config,) = parser.parse_args_into_dataclasses(args=argv)
        summary = write_colour_demo(config)
    except VlmUnslothError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    rows = ", ".join(f"{name} {count}" for name, count in summary.rows.items())
    print(
        f"wrote {summary.image_count} images and {rows} rows to {summary.output_dir}"
        f" ({summary.total_bytes / 1e3:.0f} kB in all)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
