"""Did fine-tuning help? The base model and the fine-tuned adapter answer the same eval rows.

    python scripts/evaluate.py --adapter outputs/sft          # the run's own eval data
    python scripts/evaluate.py --adapter outputs/sft --dataset eval.jsonl --num-samples 24
    python scripts/train_sft.py ... --eval-at-end             # writes OUTPUT/eval after training

From a notebook: `evaluate_adapter("outputs/sft", max_samples=50).metrics`.

Both answer greedily with the run's image cap, chat template and system prompt, and are scored
with `metrics.score_predictions` (exact match, relaxed accuracy, ANLS, CER). The output folder:

    report.html        self-contained (inline CSS, base64 thumbnails): metrics table and gallery
    report.md          the same metrics table and gallery, text only
    predictions.jsonl  every row: source, question, reference, base and fine-tuned answers
    metrics.json       base, fine_tuned and delta (fine-tuned minus base) per metric
    run_config.yaml    this evaluation's settings (and the marker --overwrite looks for)

The weights are loaded ONCE: the fine-tuned answers come from the PEFT model, the base answers
from the same model inside `model.disable_adapter()` (LoRA layers and modules_to_save copies
bypassed). That holds one copy of the weights instead of two, works the same on both backends
(Unsloth's LoRA kernels honour PEFT's disabled flag) and cannot compare against a different
base than the adapter was trained on. A merged model has no adapter to switch off: pass the
adapter instead.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm_unsloth import pipeline, run_dir
from vlm_unsloth.backend import backend_module
from vlm_unsloth.config import DEMO_DATASET, DataArgs, ModelArgs, TrainArgs
from vlm_unsloth.errors import ConfigError, OutputDirError
from vlm_unsloth.infer import (
    GenerationArgs,
    ModelChoiceArgs,
    PromptDataArgs,
    TrainedRun,
    generate_answers,
    load_for_inference,
    resolve_adapter,
)
from vlm_unsloth.metrics import METRICS, exact_match, score_predictions
from vlm_unsloth.models import LoadedModel

EVAL_DIR = "eval"
"""Where `train_sft.py --eval-at-end` (and evaluate.py with a run folder) writes: OUTPUT/eval."""
LOWER_IS_BETTER = {"cer"}
THUMBNAIL_SIDE = 160
SHOWN_CHARS = 240


@dataclass
class EvalArgs(ModelChoiceArgs):
    """What to compare and where the report goes (--adapter: the fine-tuned model)."""

    output_dir: str | None = field(
        default=None,
        metadata={"help": "Folder for report.html, report.md, predictions.jsonl, metrics.json "
                  "(default: ADAPTER_RUN/eval for a training run folder, else outputs/eval)."},
    )  # fmt: skip
    overwrite: bool = field(
        default=False, metadata={"help": "Replace an earlier evaluation in --output-dir."}
    )
    num_samples: int = field(
        default=12, metadata={"help": "Rows shown in the report's gallery (the first N)."}
    )

    def problems(self) -> list[str]:
        found = []
        if self.adapter is None:
            found.append("--adapter: required (the fine-tuned run folder or adapter to evaluate)")
        if self.num_samples < 0:
            found.append(f"--num-samples {self.num_samples}: must be >= 0")
        return found


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


# ---------------------------------------------------------------------------------------------
# Entry points


def evaluate_adapter(
    adapter: str,
    *,
    model: str | None = None,
    data_args: DataArgs | None = None,
    output_dir: str | Path | None = None,
    overwrite: bool = False,
    generation: GenerationArgs | None = None,
    num_samples: int = 12,
    max_samples: int | None = None,
    backend: str = "auto",
    quantization: str = "auto",
    console=None,
) -> EvalResult:
    """Evaluate base vs fine-tuned on an eval split and write the report; see the module doc.

    adapter: a training output folder or an adapter folder. data_args: dataset and column flags
    (`PromptDataArgs()`: the run's eval data when `adapter` is a training run, else the demo
    eval split). max_samples: evaluate only the first N rows (default: data_args.max_samples).
    """
    data_args = data_args or PromptDataArgs()
    generation = generation or GenerationArgs()
    run = resolve_adapter(adapter, model)
    if run.adapter_dir is None:
        raise ConfigError(
            "no adapter to evaluate", where="--adapter", fix="pass a run or adapter folder"
        )
    output = _check_eval_dir(output_dir, run, overwrite=overwrite)
    loaded = load_for_inference(
        ModelArgs(model=run.base_model, backend=backend, quantization=quantization), run.adapter_dir
    )
    eval_args, seed = _eval_data_args(data_args, run)
    max_side = data_args.max_side or run.max_side
    records, rejected = _validated(eval_records(eval_args, seed=seed), loaded, eval_args, max_side)
    return _evaluate(
        loaded,
        records,
        run,
        output,
        generation=generation,
        num_samples=num_samples,
        max_samples=max_samples if max_samples is not None else data_args.max_samples,
        max_side=max_side,
        info={"dataset": _describe_data(eval_args), "rejected_rows": rejected},
        settings={"DataArgs": dataclasses.asdict(eval_args)},
        console=console,
    )


def evaluate_run(
    output_dir: str | Path,
    *,
    loaded: LoadedModel | None = None,
    records: Any = None,
    generation: GenerationArgs | None = None,
    num_samples: int = 12,
    max_samples: int | None = None,
    console=None,
) -> EvalResult:
    """Evaluate a training run into OUTPUT/eval (what `train_sft.py --eval-at-end` calls).

    `loaded` and `records` let the training process pass its own model and validated eval rows:
    no second copy of the weights, no reload, exactly the adapter just trained. Without them,
    the run's adapter is loaded and its eval data re-read from run_config.yaml.
    """
    folder = Path(output_dir).expanduser().resolve()
    if loaded is None or records is None:
        return evaluate_adapter(
            str(folder),
            output_dir=folder / EVAL_DIR,
            overwrite=True,
            generation=generation,
            num_samples=num_samples,
            max_samples=max_samples,
            console=console,
        )
    run = resolve_adapter(str(folder), None)
    output = _check_eval_dir(folder / EVAL_DIR, run, overwrite=True)
    loaded.model = backend_module(loaded.plan.backend).for_inference(loaded.model)
    saved = run_dir.load_run_config(folder)["DataArgs"]
    return _evaluate(
        loaded,
        records,
        run,
        output,
        generation=generation or GenerationArgs(),
        num_samples=num_samples,
        max_samples=max_samples,
        max_side=run.max_side,
        info={"dataset": _describe_data(DataArgs(**saved)), "rejected_rows": None},
        settings={"DataArgs": saved},
        console=console,
    )


def check_eval_at_end(data_args: DataArgs, train_args: TrainArgs) -> None:
    """`--eval-at-end` needs eval rows: raise before training rather than after it."""
    if not train_args.eval_at_end:
        return
    _, eval_path = pipeline.dataset_paths(data_args, preference=False)
    if not (eval_path or data_args.eval_split or data_args.eval_fraction):
        raise ConfigError(
            "--eval-at-end needs evaluation rows and there are none",
            where="--eval-at-end",
            fix="pass --eval-dataset, --eval-split or --eval-fraction (or drop --eval-at-end)",
        )


# ---------------------------------------------------------------------------------------------
# Eval data


def eval_records(data_args: DataArgs, *, seed: int) -> Any:
    """The eval rows of `data_args` as training holds them out: --eval-dataset, --eval-split,
    --eval-fraction (same seed, same rows), the demo's eval split; a dataset without any of
    these is evaluated whole."""
    from vlm_unsloth.data import data_spec, load_sft_dataset, split_dataset

    train_path, eval_path = pipeline.dataset_paths(data_args, preference=False)
    if eval_path:
        return load_sft_dataset(
            data_spec(data_args, eval_path, split=data_args.eval_split or "train")
        )
    dataset = load_sft_dataset(data_spec(data_args, train_path, split=data_args.split))
    if not (data_args.eval_split or data_args.eval_fraction):
        return dataset
    _, held_out = split_dataset(
        dataset,
        eval_split=data_args.eval_split,
        eval_fraction=data_args.eval_fraction or None,
        seed=seed,
        spec=data_spec(data_args, train_path, split=data_args.eval_split),
        loader=load_sft_dataset,
    )
    return held_out


def _eval_data_args(data_args: DataArgs, run: TrainedRun) -> tuple[DataArgs, int]:
    """(DataArgs to read eval rows with, split seed): the run's own data unless --dataset.
    The seed is the run's, so --eval-fraction holds out the rows training held out."""
    config = run_dir.load_run_config(run.run_folder) if run.run_folder is not None else None
    seed = config["TrainArgs"]["seed"] if config else TrainArgs().seed
    if data_args.dataset is None and config is not None:
        return DataArgs(**config["DataArgs"]), seed
    return dataclasses.replace(data_args, dataset=data_args.dataset or DEMO_DATASET), seed


def _validated(dataset, loaded: LoadedModel, data_args: DataArgs, max_side: int):
    """Rows the model can be asked about (images readable, a reference answer, not too long)."""
    from vlm_unsloth.validation import validate_dataset

    report = validate_dataset(
        dataset,
        family=loaded.family,
        processor=loaded.processor,
        max_side=max_side,
        max_seq_length=data_args.max_seq_length,
        fit_images=data_args.fit_images,
    )
    if len(report.kept) == 0:
        reasons = "; ".join(f"{r.source} {r.reason}" for r in report.rejected[:3])
        raise ConfigError(f"no usable eval rows ({reasons})", where="--dataset")
    return report.kept, report.rejected_count


def _describe_data(data_args: DataArgs) -> str:
    train_path, eval_path = pipeline.dataset_paths(data_args, preference=False)
    if eval_path:
        return str(eval_path)
    if data_args.eval_split:
        return f"{train_path} (split {data_args.eval_split})"
    if data_args.eval_fraction:
        return f"{train_path} (held-out {data_args.eval_fraction:g})"
    return str(train_path)


# ---------------------------------------------------------------------------------------------
# Evaluation


def _check_eval_dir(output_dir: str | Path | None, run: TrainedRun, *, overwrite: bool) -> Path:
    """The evaluation folder, checked before any slow work; `_evaluate` replaces it later, once
    the model and the rows have loaded (a typo in --dataset never costs an earlier report)."""
    if output_dir is None:
        output_dir = run.run_folder / EVAL_DIR if run.run_folder else Path("outputs") / EVAL_DIR
    output = Path(output_dir).expanduser().resolve()
    adapter = Path(run.adapter_dir).resolve()
    if output == adapter or output in adapter.parents:
        # --overwrite replaces folders holding run_config.yaml: a training run is one.
        raise ConfigError(
            f"{output} holds the adapter being evaluated",
            where="--output-dir",
            fix=f"choose another folder, e.g. {adapter.parent / EVAL_DIR}",
        )
    if output.exists() and not output.is_dir():
        raise OutputDirError(
            f"{output} is a file", where="--output-dir", fix="choose a folder path"
        )
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise OutputDirError(
                f"{output} is not empty",
                where="--output-dir",
                fix="pass --overwrite to replace an earlier evaluation, or choose another folder",
            )
        if not (output / run_dir.RUN_MARKER).is_file():
            raise OutputDirError(
                f"{output} holds files but no {run_dir.RUN_MARKER}, so it is not an earlier "
                "evaluation; --overwrite only replaces those",
                where="--output-dir",
                fix="choose an empty or new folder",
            )
    return output


def _text(message: dict) -> str:
    return " ".join(p["text"] for p in message["content"] if p["type"] == "text" and p["text"])


def _question_and_reference(record: dict) -> tuple[str, str]:
    """The last question and the reference answer (a preference record's chosen answer)."""
    messages = record["messages"] if "messages" in record else record["prompt"] + record["chosen"]
    reference = _text(messages[-1]) if messages[-1]["role"] == "assistant" else ""
    users = [m for m in messages if m["role"] == "user"]
    return (_text(users[-1]) if users else ""), reference


def _evaluate(
    loaded: LoadedModel,
    records,
    run: TrainedRun,
    output: Path,
    *,
    generation: GenerationArgs,
    num_samples: int,
    max_samples: int | None,
    max_side: int,
    info: dict[str, Any],
    settings: dict[str, Any],
    console,
) -> EvalResult:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from vlm_unsloth.console import make_console

    console = console or make_console()
    if max_samples is not None:
        records = records.select(range(min(max_samples, len(records))))
    # Checked by _check_eval_dir: empty, or an earlier evaluation (run_config.yaml) to replace.
    run_dir.prepare_output_dir(output, overwrite=True, resume=False)
    run_dir.save_run_config(
        output,
        {
            "job": "evaluate",
            "model": run.base_model,
            "adapter": run.adapter_dir,
            "max_side": max_side,
            "system_prompt": run.system_prompt,
            "GenerationArgs": dataclasses.asdict(generation),
            "num_samples": num_samples,
            "max_samples": max_samples,
            **settings,
        },
    )
    started = time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    answer = dict(max_side=max_side, system_prompt=run.system_prompt)
    with Progress(*columns, console=console) as progress:
        tuned_task = progress.add_task("fine-tuned", total=len(records))
        tuned = generate_answers(
            loaded,
            records,
            generation,
            **answer,
            progress=lambda n: progress.advance(tuned_task, n),
        )
        base_task = progress.add_task("base      ", total=len(records))
        with loaded.model.disable_adapter():
            base = generate_answers(
                loaded,
                records,
                generation,
                **answer,
                progress=lambda n: progress.advance(base_task, n),
            )
    samples = []
    for index, (base_answer, tuned_answer) in enumerate(zip(base, tuned, strict=True)):
        record = records[index]
        question, reference = _question_and_reference(record)
        samples.append(
            EvalSample(
                source=record["source"],
                question=question,
                reference=reference,
                base=base_answer,
                fine_tuned=tuned_answer,
                base_correct=bool(exact_match(base_answer, reference)),
                fine_tuned_correct=bool(exact_match(tuned_answer, reference)),
                image=(record["images"] or [None])[0],
            )
        )
    references = [s.reference for s in samples]
    scores = {
        "base": score_predictions(base, references),
        "fine_tuned": score_predictions(tuned, references),
    }
    scores["delta"] = {name: scores["fine_tuned"][name] - scores["base"][name] for name in METRICS}
    info = {
        "model": run.base_model,
        "adapter": run.adapter_dir,
        "backend": f"{loaded.plan.backend} on {loaded.plan.device} ({loaded.plan.dtype})",
        **info,
        "rows": len(samples),
        "max_side": max_side,
        "generation": "greedy"
        if generation.temperature == 0
        else f"sampled at T={generation.temperature}",
        "seconds": round(time.perf_counter() - started, 1),
    }
    result = EvalResult(
        output_dir=output,
        metrics=scores,
        samples=samples,
        report_html=output / "report.html",
        report_md=output / "report.md",
        predictions=output / "predictions.jsonl",
        info=info,
    )
    write_outputs(result, num_samples=num_samples)
    console.print(_summary_table(result))
    return result


# ---------------------------------------------------------------------------------------------
# Outputs


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


def _summary_table(result: EvalResult):
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
    from vlm_unsloth.images import load_image

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
