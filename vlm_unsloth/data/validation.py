"""Validation pass: every row loaded, checked and token-counted once before training starts.

    python3 scripts/inspect_data.py --dataset my_data.jsonl --model tiny-qwen2-vl

`validate_dataset` reads each record's images in full (truncated files fail here, not in the
middle of an epoch), checks the conversation, and counts its tokens exactly as the processor
will: the chat template rendered and tokenized, plus each image's tokens at its capped size.
Image tokens cannot be truncated (the model would see an image with part of its tokens missing),
so a sample over max_seq_length is rejected — or, with fit_images, its images are shrunk until
it fits. Rejected rows are skipped (or, with strict, raise) and can be written as JSONL.

Reasons a row is rejected (`RejectedRow.reason`): missing_file, unreadable_image,
decompression_bomb, download_failed, image_too_small, bad_aspect_ratio (image problems);
audio (an audio field or part: only the image path is trained, also for Gemma 3n and Gemma 4);
bad_roles, empty_question, empty_answer, image_count_mismatch (conversation problems);
same_answers (a preference pair whose chosen and rejected answers are the same text);
text_only_row (a family that cannot batch rows without an image with image rows);
template_error (the model's chat template refuses the conversation); too_long (over
max_seq_length).

`check_rows_kept` stops a run whose rows were all rejected, before anything slow loads.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Features, Value
from jinja2 import TemplateError
from rich.console import Console
from rich.table import Table

from vlm_unsloth.data.image_tokens import image_cap, prompt_length, prompt_lengths
from vlm_unsloth.data.images import (
    DEFAULT_MAX_SIDE,
    cap_longest_side,
    check_image_size,
    prepare_image,
)
from vlm_unsloth.data.records import record_problem, to_chat_template_messages
from vlm_unsloth.errors import DataError, ImageError
from vlm_unsloth.families import Family

LENGTH_COLUMN = "num_tokens"
"""Kept records' total tokens (auto batch and length grouping read this column)."""

_SHOWN_REJECTED = 5
_FIT_STEP = 0.9  # fit_images shrinks max_side by 10% a try

_RESULT_FEATURES = Features(
    {
        "reason": Value("string"),
        "message": Value("string"),
        "num_tokens": Value("int64"),
        "max_side": Value("int64"),
        "resized": Value("bool"),
        "multi_frame": Value("bool"),
    }
)


@dataclass(frozen=True)
class TokenCount:
    """Tokens of one sample: text (chat template, one placeholder per image) + image."""

    text: int
    image: int
    """Extra positions the images take beyond their placeholder (0 for Mllama)."""

    @property
    def total(self) -> int:
        return self.text + self.image


@dataclass(frozen=True)
class RejectedRow:
    index: int
    """Position in the validated dataset."""
    source: str
    """File and row (or dataset name and index) the record came from."""
    reason: str
    message: str


@dataclass
class ValidationReport:
    """What the validation pass found; `kept` holds the records to train on."""

    kept: Dataset
    """Kept records with two more columns: num_tokens (for length-grouped batching) and
    max_side (the cap the collator must use for this row's images; below the run's max_side
    where fit_images shrank them)."""
    rows_read: int
    resized: int
    """Kept rows with an image larger than max_side (shrunk at load time)."""
    fitted: int
    """Kept rows whose images were shrunk below max_side to fit max_seq_length."""
    multi_frame: int
    """Kept rows with a multi-frame image (animated GIF, multi-page TIFF): only its first frame
    is used."""
    rejected: list[RejectedRow]
    family: str
    max_side: int
    """The --max-side option."""
    image_cap: int
    """The longest side images are capped at for it (the family's `image_cap`: tile or patch
    multiples for SmolVLM and Pixtral)."""
    max_seq_length: int
    token_counts: list[int] = field(default_factory=list)
    """Total tokens of each kept row, in `kept` order."""

    @property
    def kept_count(self) -> int:
        return len(self.kept)

    @property
    def rejected_count(self) -> int:
        return len(self.rejected)

    def rejected_by_reason(self) -> dict[str, int]:
        return dict(Counter(row.reason for row in self.rejected).most_common())

    def token_stats(self) -> dict[str, int]:
        """min, median, p95 and max of the kept rows' total tokens (empty when none kept)."""
        if not self.token_counts:
            return {}
        counts = np.asarray(self.token_counts)
        return {
            "min": int(counts.min()),
            "median": int(np.median(counts)),
            "p95": int(np.percentile(counts, 95)),
            "max": int(counts.max()),
        }


def count_tokens(
    messages: list[dict],
    image_sizes: list[tuple[int, int]],
    *,
    family: Family,
    processor: Any,
) -> TokenCount:
    """Exact `input_ids` length of a canonical conversation whose images have these sizes.

    `image_sizes` are the sizes the processor will get (after capping at max_side).
    """
    text = processor.apply_chat_template(to_chat_template_messages(messages), tokenize=False)
    # Tokenized without special tokens, as every collator calls the processor: the chat template
    # already writes the BOS token (the real Llama/Mistral/Gemma tokenizers would add a second).
    text_tokens, total = prompt_lengths(family, text, image_sizes, processor)
    return TokenCount(text=text_tokens, image=total - text_tokens)


def validate_record(
    record: dict,
    *,
    family: Family,
    processor: Any,
    max_side: int = DEFAULT_MAX_SIDE,
    max_seq_length: int,
    fit_images: bool = False,
) -> dict:
    """One record checked: {reason, message, num_tokens, max_side, resized, multi_frame}; reason
    None = keep.

    `max_side` is the --max-side option; images are capped at the family's `image_cap` of it,
    and the result's max_side is the cap the collator must use for this row.
    """
    max_side = image_cap(family, max_side, processor)
    keep = {"reason": None, "message": None, "num_tokens": 0, "max_side": max_side}
    keep |= {"resized": False, "multi_frame": False}
    problem = record_problem(record)
    if problem is not None:
        return {**keep, "reason": problem[0], "message": problem[1]}
    if not record["images"] and not family.mixes_text_only_rows:
        message = (
            f"a text-only row: {family.key}'s processor cannot batch rows without an image "
            "with image rows — give it an image, or train text-only rows on another family"
        )
        return {**keep, "reason": "text_only_row", "message": message}
    original_sizes, resized, multi_frame = [], False, False
    for image in record["images"]:
        try:
            # Decoded in full and dropped at once: memory stays flat over any number of rows.
            prepared = prepare_image(image, max_side=max_side, family=family)
        except ImageError as error:
            return {**keep, "reason": error.reason, "message": _message(error)}
        original_sizes.append(prepared.original_size)
        resized = resized or prepared.resized
        multi_frame = multi_frame or prepared.frames > 1
    result = {**keep, "resized": resized, "multi_frame": multi_frame}
    sizes = [cap_longest_side(w, h, max_side) for w, h in original_sizes]
    try:
        counts = [
            count_tokens(conversation, sizes, family=family, processor=processor)
            for conversation in _conversations(record)
        ]
    except TemplateError as error:  # e.g. Llama 3.2 Vision: no system message with images
        return {**result, "reason": "template_error", "message": f"chat template: {error}"}
    count = max(counts, key=lambda c: c.total)
    if count.total <= max_seq_length:
        return {**result, "num_tokens": count.total}
    if fit_images:
        fitted = _fit(record, original_sizes, family, processor, max_side, max_seq_length)
        if fitted is not None:
            side, total = fitted
            return {**result, "num_tokens": total, "max_side": side}
    return {
        **result,
        "reason": "too_long",
        "message": f"{count.total} tokens ({count.text} text + {count.image} image) over "
        f"max_seq_length {max_seq_length} — image tokens are never truncated: raise "
        "--max-seq-length, lower --max-side"
        + ("" if fit_images else ", or pass --fit-images to shrink this row's images"),
    }


def validate_dataset(
    dataset: Dataset,
    *,
    family: Family,
    processor: Any,
    max_side: int = DEFAULT_MAX_SIDE,
    max_seq_length: int,
    strict: bool = False,
    fit_images: bool = False,
    num_proc: int | None = None,
) -> ValidationReport:
    """Check every record (SFT or preference); the report's `kept` dataset holds the good ones.

    strict: any rejected row raises DataError (counts per reason and the first rows).
    num_proc: worker processes for image decoding (datasets.map); None = this process.
    """
    cap = image_cap(family, max_side, processor)
    # Validating records a second time (e.g. a kept dataset): the columns are recomputed.
    dataset = dataset.remove_columns(
        [column for column in ("num_tokens", "max_side") if column in dataset.column_names]
    )
    results = dataset.map(
        validate_record,
        fn_kwargs={
            "family": family,
            "processor": processor,
            "max_side": max_side,
            "max_seq_length": max_seq_length,
            "fit_images": fit_images,
        },
        remove_columns=dataset.column_names,
        features=_RESULT_FEATURES,
        num_proc=num_proc,
        keep_in_memory=True,  # five small columns; nothing worth a cache file
        # Never reuse an earlier result: images on disk may have changed since. (A fixed
        # fingerprint also spares hashing the processor.)
        new_fingerprint=uuid.uuid4().hex,
        desc="Validating",
    )
    reasons, messages = results["reason"], results["message"]
    sources = dataset["source"]
    kept = [i for i, reason in enumerate(reasons) if reason is None]
    rejected = [
        RejectedRow(index=i, source=sources[i], reason=reasons[i], message=messages[i])
        for i, reason in enumerate(reasons)
        if reason is not None
    ]
    num_tokens, sides, resized = results["num_tokens"], results["max_side"], results["resized"]
    multi_frame = results["multi_frame"]
    kept_dataset = dataset if len(kept) == len(dataset) else dataset.select(kept)
    kept_dataset = kept_dataset.add_column("num_tokens", [num_tokens[i] for i in kept])
    kept_dataset = kept_dataset.add_column("max_side", [sides[i] for i in kept])
    report = ValidationReport(
        kept=kept_dataset,
        rows_read=len(dataset),
        resized=sum(resized[i] for i in kept),
        fitted=sum(sides[i] < cap for i in kept),
        multi_frame=sum(multi_frame[i] for i in kept),
        rejected=rejected,
        family=family.key,
        max_side=max_side,
        image_cap=cap,
        max_seq_length=max_seq_length,
        token_counts=[num_tokens[i] for i in kept],
    )
    if strict and rejected:
        raise DataError(
            f"{len(rejected)} of {len(dataset)} rows rejected ({_reason_counts(report)}); "
            + "; ".join(f"{r.source} {r.reason}: {r.message}" for r in rejected[:3]),
            where="--strict",
            fix="fix those rows, or drop --strict to skip them "
            "(scripts/inspect_data.py --rejected-file lists them all)",
        )
    return report


def check_rows_kept(report: ValidationReport, *, where: str) -> None:
    """Raise DataError (one line: the counts per reason and the first rejected row) when
    validation kept no row: SFT and DPO would crash inside the trainer, and GRPO would "finish"
    0 steps with an untrained adapter. `where` names the rows' flag, e.g. "--dataset"."""
    if report.kept_count:
        return
    if not report.rejected:
        raise DataError("0 rows to train on", where=where, fix="check the file and --split")
    first = report.rejected[0]
    fix = "fix the rows (scripts/inspect_data.py --rejected-file lists them)"
    if "too_long" in report.rejected_by_reason():
        fix += " or raise --max-seq-length"
    raise DataError(
        f"0 of {report.rows_read} rows kept ({_reason_counts(report)}; first: {first.source} "
        f"{first.reason}: {first.message})",
        where=where,
        fix=fix,
    )


def write_rejected(report: ValidationReport, path: str | Path) -> Path:
    """The rejected rows as JSONL: one {"source", "reason", "message"} a line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in report.rejected:
            line = {"source": row.source, "reason": row.reason, "message": row.message}
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    return path


def print_report(report: ValidationReport, console: Console) -> None:
    """The validation summary as rich tables: counts, rejections by reason, token statistics."""
    cap = "" if report.image_cap == report.max_side else f": images capped at {report.image_cap}"
    table = Table(title=f"Dataset check ({report.family}, max_side {report.max_side}{cap})")
    table.add_column("rows", style="bold")
    table.add_column("count", justify="right")
    table.add_row("read", str(report.rows_read))
    table.add_row("kept", str(report.kept_count), style="green")
    table.add_row(f"resized (larger than {report.image_cap} px)", str(report.resized))
    if report.fitted:
        table.add_row("images shrunk to fit max_seq_length", str(report.fitted))
    if report.multi_frame:
        table.add_row("multi-frame images (first frame used)", str(report.multi_frame))
    for reason, count in report.rejected_by_reason().items():
        table.add_row(f"rejected: {reason}", str(count), style="red")
    console.print(table)
    stats = report.token_stats()
    if stats:
        tokens = Table(title=f"Tokens per sample (max_seq_length {report.max_seq_length})")
        for name in stats:
            tokens.add_column(name, justify="right")
        tokens.add_row(*(str(value) for value in stats.values()))
        console.print(tokens)
    if report.rejected:
        shown = Table(title=f"First rejected rows (of {len(report.rejected)})")
        for name in ("source", "reason", "message"):
            shown.add_column(name, overflow="fold")
        for row in report.rejected[:_SHOWN_REJECTED]:
            shown.add_row(row.source, row.reason, row.message)
        console.print(shown)


def print_token_histogram(token_counts: list[int], console: Console, *, bins: int = 10) -> None:
    """A text histogram of tokens per sample, in at most `bins` bins of whole tokens."""
    if not token_counts:
        return
    counts = np.asarray(token_counts)
    low, high = int(counts.min()), int(counts.max())
    width = max(1, -(-(high - low + 1) // bins))  # ceil division: bins of whole tokens
    rows_per_bin = np.bincount((counts - low) // width)
    table = Table(title="Token histogram")
    table.add_column("tokens", justify="right")
    table.add_column("rows", justify="right")
    table.add_column("")
    widest = int(rows_per_bin.max())
    for index, rows in enumerate(rows_per_bin):
        start = low + index * width
        label = str(start) if width == 1 else f"{start}–{start + width - 1}"
        table.add_row(label, str(rows), "█" * round(40 * rows / widest))
    console.print(table)


def _conversations(record: dict) -> list[list[dict]]:
    """The full conversations a record trains on: one (SFT) or prompt+chosen, prompt+rejected."""
    if "prompt" in record:
        return [record["prompt"] + record["chosen"], record["prompt"] + record["rejected"]]
    return [record["messages"]]


def _fit(
    record: dict,
    original_sizes: list[tuple[int, int]],
    family: Family,
    processor: Any,
    max_side: int,
    max_seq_length: int,
) -> tuple[int, int] | None:
    """(max_side, total tokens) of the largest smaller cap that fits, or None if none does."""
    texts = [
        processor.apply_chat_template(to_chat_template_messages(messages), tokenize=False)
        for messages in _conversations(record)
    ]
    side = max_side
    while True:
        smaller = image_cap(family, int(side * _FIT_STEP), processor)
        if not 1 <= smaller < side:
            return None  # the family's cap cannot shrink further (e.g. one Idefics3 tile)
        side = smaller
        sizes = [cap_longest_side(w, h, side) for w, h in original_sizes]
        try:
            for width, height in sizes:
                check_image_size(width, height, family)
        except ImageError:
            return None  # smaller would be too small for the processor
        total = max(prompt_length(family, text, sizes, processor) for text in texts)
        if total <= max_seq_length:
            return side, total


def _message(error: ImageError) -> str:
    return f"{error.what} — {error.fix}" if error.fix else error.what


def _reason_counts(report: ValidationReport) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in report.rejected_by_reason().items())
