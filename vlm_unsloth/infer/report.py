"""The evaluation report: what an evaluation found (`EvalResult`) and the files that show it.

report.html        self-contained (inline CSS, base64 thumbnails): metrics table and gallery
report.md          the same metrics table and gallery, text only
predictions.jsonl  every row: source, question, reference, base and fine-tuned answers
metrics.json       base, fine_tuned and delta (fine-tuned minus base) per metric
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm_unsloth.data.images import load_image
from vlm_unsloth.infer.metrics import METRICS

LOWER_IS_BETTER = {"cer"}
THUMBNAIL_SIDE = 160
SHOWN_CHARS = 240


@dataclass
class EvalSample:
    """One evaluated row."""

    source: str
    question: str
    reference: str
    base: str
    fine_tuned: str
    base_correct: bool
    """Exact match after normalisation (`metrics.normalize_answer`)."""
    fine_tuned_correct: bool
    image: dict[str, Any] | None = None
    """The row's first image reference ({"bytes", "path"}), for the gallery."""


@dataclass
class EvalResult:
    output_dir: Path
    metrics: dict[str, dict[str, float]]
    """{"base": {...}, "fine_tuned": {...}, "delta": {...}}; delta = fine-tuned minus base."""
    samples: list[EvalSample]
    report_html: Path
    report_md: Path
    predictions: Path
    info: dict[str, Any] = field(default_factory=dict)
    """Model, adapter, dataset, rows, timings: what the report's header shows."""


def write_outputs(result: EvalResult, *, num_samples: int) -> None:
    """predictions.jsonl, metrics.json, report.md and report.html into result.output_dir."""
    lines = []
    for sample in result.samples:
        row = {k: v for k, v in dataclasses.asdict(sample).items() if k != "image"}
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    result.predictions.write_text("".join(lines), encoding="utf-8")
    document = {**result.metrics, "info": result.info}
    (result.output_dir / "metrics.json").write_text(
        json.dumps(document, indent=2), encoding="utf-8"
    )
    gallery = result.samples[:num_samples]
    result.report_md.write_text(render_markdown(result, gallery), encoding="utf-8")
    result.report_html.write_text(render_html(result, gallery), encoding="utf-8")


def _metric_rows(result: EvalResult) -> list[tuple[str, str, str, str, bool | None]]:
    """(metric, base, fine-tuned, delta, improved?) with the direction in the metric's name."""
    rows = []
    for name in METRICS:
        base, tuned, delta = (result.metrics[k][name] for k in ("base", "fine_tuned", "delta"))
        lower = name in LOWER_IS_BETTER
        label = f"{name} ({'lower' if lower else 'higher'} is better)"
        improved = None if delta == 0 else (delta < 0) == lower
        rows.append((label, f"{base:.3f}", f"{tuned:.3f}", f"{delta:+.3f}", improved))
    return rows


def summary_table(result: EvalResult):
    """The metrics table printed at the end of an evaluation."""
    from rich.table import Table

    table = Table(title=f"Evaluation: {result.info['rows']} rows", title_justify="left")
    for column in ("metric", "base", "fine-tuned", "delta"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for label, base, tuned, delta, improved in _metric_rows(result):
        style = {True: "green", False: "red", None: ""}[improved]
        table.add_row(label, base, tuned, f"[{style}]{delta}[/]" if style else delta)
    table.caption = f"report: {result.report_html}"
    return table


def _shown(text: str) -> str:
    """An answer as the report shows it: control characters dropped, at most SHOWN_CHARS long
    (a base model may ramble for pages; predictions.jsonl keeps every answer whole)."""
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def _md(text: str) -> str:
    return html.escape(_shown(text), quote=False).replace("|", "\\|") or "∅"


def render_markdown(result: EvalResult, gallery: list[EvalSample]) -> str:
    """report.md: the metrics table and a text gallery."""
    info = result.info
    lines = [
        "# Evaluation: base vs fine-tuned",
        "",
        f"- model: `{info['model']}`",
        f"- adapter: `{info['adapter']}`",
        f"- data: `{info['dataset']}` ({info['rows']} rows, {info['generation']}, "
        f"images capped at {info['max_side']} px)",
        "",
        "| metric | base | fine-tuned | delta |",
        "|---|---:|---:|---:|",
        *(
            f"| {label} | {base} | {tuned} | {delta} |"
            for label, base, tuned, delta, _ in _metric_rows(result)
        ),
        "",
        f"## Samples (first {len(gallery)}; ✓ = exact match after normalisation)",
        "",
        "| source | question | reference | base | fine-tuned |",
        "|---|---|---|---|---|",
    ]
    for s in gallery:
        base = f"{'✓' if s.base_correct else '✗'} {_md(s.base)}"
        tuned = f"{'✓' if s.fine_tuned_correct else '✗'} {_md(s.fine_tuned)}"
        lines.append(
            f"| {_md(s.source)} | {_md(s.question)} | {_md(s.reference)} | {base} | {tuned} |"
        )
    return "\n".join(lines) + "\n"


def thumbnail_data_uri(image: dict[str, Any] | None, side: int = THUMBNAIL_SIDE) -> str | None:
    """A PNG data URI of the image capped at `side` px (None when the row has no image)."""
    if image is None:
        return None
    buffer = io.BytesIO()
    load_image(image, max_side=side).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
       color: #1d2330; background: #f6f7f9; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 10px; }
.meta { color: #5b6474; margin: 0 0 18px; } .meta code { color: #1d2330; }
table.metrics { border-collapse: collapse; background: #fff; box-shadow: 0 1px 3px #0002; }
table.metrics th, table.metrics td { padding: 7px 14px; border-bottom: 1px solid #e4e7ec; }
table.metrics th { background: #eef1f5; text-align: left; }
table.metrics td.num { text-align: right; font-variant-numeric: tabular-nums; }
.better { color: #137333; font-weight: 600; } .worse { color: #b3261e; font-weight: 600; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 14px; }
.card { background: #fff; border-radius: 8px; box-shadow: 0 1px 3px #0002; padding: 12px; }
.card img { display: block; margin: 0 auto 10px; height: 150px; max-width: 100%;
            object-fit: contain; border: 1px solid #e4e7ec; }
.noimage { height: 150px; display: flex; align-items: center; justify-content: center;
           color: #8a93a3; border: 1px dashed #c9ced6; margin-bottom: 10px; }
.field { margin: 3px 0; word-wrap: break-word; } .label { color: #5b6474; font-size: 12px; }
.answer { padding: 3px 6px; border-radius: 4px; margin: 3px 0; word-wrap: break-word; }
.answer.right { background: #e6f4ea; } .answer.wrong { background: #fce8e6; }
.mark { font-weight: 700; margin-right: 4px; }
.right .mark { color: #137333; } .wrong .mark { color: #b3261e; }
.source { color: #8a93a3; font-size: 11px; margin-top: 6px; }
"""


def _field(label: str, value_html: str) -> str:
    return f'<div class="field"><span class="label">{label}:</span> {value_html}</div>'


def _answer_html(label: str, answer: str, correct: bool) -> str:
    verdict, mark = ("right", "✓") if correct else ("wrong", "✗")
    shown = html.escape(_shown(answer)) or "<i>(empty)</i>"
    return (
        f'<div class="answer {verdict}" title="{verdict}"><span class="mark">{mark}</span>'
        f'<span class="label">{label}:</span> {shown}</div>'
    )


def _card_html(sample: EvalSample) -> str:
    esc = html.escape
    uri = thumbnail_data_uri(sample.image)
    picture = f'<img src="{uri}" alt="{esc(sample.source)}">' if uri else ""
    return (
        '<div class="card">'
        + (picture or '<div class="noimage">no image</div>')
        + _field("Question", esc(_shown(sample.question)))
        + _field("Reference", f"<b>{esc(_shown(sample.reference))}</b>")
        + _answer_html("Base", sample.base, sample.base_correct)
        + _answer_html("Fine-tuned", sample.fine_tuned, sample.fine_tuned_correct)
        + f'<div class="source">{esc(sample.source)}</div></div>'
    )


def render_html(result: EvalResult, gallery: list[EvalSample]) -> str:
    """The self-contained report page: inline CSS, thumbnails as base64 data URIs."""
    info, esc = result.info, html.escape
    metric_rows = []
    for label, base, tuned, delta, improved in _metric_rows(result):
        css = {True: "better", False: "worse", None: ""}[improved]
        metric_rows.append(
            f"<tr><td>{esc(label)}</td><td class='num'>{base}</td><td class='num'>{tuned}</td>"
            f"<td class='num {css}'>{delta}</td></tr>"
        )
    rows = len(result.samples)
    base_right = sum(s.base_correct for s in result.samples)
    tuned_right = sum(s.fine_tuned_correct for s in result.samples)
    meta = (
        f"model <code>{esc(str(info['model']))}</code> · "
        f"adapter <code>{esc(str(info['adapter']))}</code><br>"
        f"data <code>{esc(str(info['dataset']))}</code> · {rows} rows · "
        f"{esc(info['generation'])} · images capped at {info['max_side']} px · "
        f"{esc(info['backend'])}"
    )
    header = "".join(f"<th>{name}</th>" for name in ("metric", "base", "fine-tuned", "delta"))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Evaluation: base vs fine-tuned</title><style>{_CSS}</style></head>
<body>
<h1>Evaluation: base vs fine-tuned</h1>
<p class="meta">{meta}</p>
<h2>Metrics</h2>
<table class="metrics"><thead><tr>{header}</tr></thead>
<tbody>{"".join(metric_rows)}</tbody></table>
<p class="meta">Exact match: base {base_right} / {rows}, fine-tuned {tuned_right} / {rows}.</p>
<h2>Samples (first {len(gallery)}; ✓ = exact match after normalisation)</h2>
<div class="gallery">{"".join(_card_html(sample) for sample in gallery)}</div>
</body></html>
"""
