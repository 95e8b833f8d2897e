"""Datasets in, canonical records out: one record format both training backends' collators take.

    python3 scripts/inspect_data.py --dataset my_data.jsonl --model tiny-qwen2-vl

Inputs (docs/data-formats.md has examples): a local JSONL / JSON / CSV / Parquet file whose image
paths are relative to the file; an image folder with metadata.jsonl (`file_name` column); a folder
written by `Dataset.save_to_disk`; a Hugging Face dataset name. Rows are plain tables (image,
question, answer; renamable), `messages` with typed content parts plus `images`, or ShareGPT /
LLaVA `conversations` with `<image>` placeholders. HuggingFaceM4/ChartQA, unsloth/LaTeX_OCR and
openbmb/RLAIF-V-Dataset are recognised by name.

Records have one canonical format (`records.py`) that both backends' collators take.

Images are references only; `images.load_image` decodes them when a batch is built, so a
30,000-image dataset never sits in RAM. Row conversion is pure (a row in, a record out); the
checks that reject a row live in `records.record_problem`, which `validation.validate_dataset`
calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from datasets import Dataset, DatasetDict

from vlm_unsloth.data.records import (
    PREFERENCE_FEATURES,
    SFT_FEATURES,
    Columns,
    conversations_row_to_record,
    messages_row_to_record,
    preference_row_to_record,
    table_row_to_record,
)
from vlm_unsloth.data.tables import RawTable, read_table
from vlm_unsloth.errors import ConfigError, DataError


@dataclass(frozen=True)
class ColumnLayout:
    """Column names (and a fixed instruction) of a known dataset layout."""

    image_column: str = "image"
    question_column: str | None = "question"
    answer_column: str = "answer"
    chosen_column: str = "chosen"
    rejected_column: str = "rejected"
    instruction: str | None = None


COLUMN_LAYOUTS: dict[str, ColumnLayout] = {
    "none": ColumnLayout(),
    # ChartQA's `label` is a list of accepted answers; the first is the reference.
    "chartqa": ColumnLayout(question_column="query", answer_column="label"),
    "latex_ocr": ColumnLayout(
        question_column=None,
        answer_column="text",
        instruction="Write the LaTeX representation for this image.",
    ),
    "rlaif_v": ColumnLayout(),  # image, question, chosen, rejected: our own default names
}
# Hub ids, and the folder names a local copy of them usually has.
_LAYOUT_FOR_NAME = {
    "huggingfacem4/chartqa": "chartqa",
    "chartqa": "chartqa",
    "unsloth/latex_ocr": "latex_ocr",
    "latex_ocr": "latex_ocr",
    "openbmb/rlaif-v-dataset": "rlaif_v",
    "rlaif-v-dataset": "rlaif_v",
}


@dataclass(frozen=True)
class DataSpec:
    """What to load: a dataset, a split, and how its columns map onto a conversation.

    Column names left None come from the column layout (ChartQA, LaTeX_OCR, ...) or the defaults:
    image, question, answer, chosen, rejected. `data_spec` builds one from the CLI's DataArgs.
    """

    dataset: str
    """A JSONL/JSON/CSV/Parquet file, an image folder with metadata.jsonl, a folder written by
    Dataset.save_to_disk, a folder of data files, or a Hugging Face dataset name."""
    split: str = "train"
    image_column: str | None = None
    question_column: str | None = None
    answer_column: str | None = None
    chosen_column: str | None = None
    rejected_column: str | None = None
    system_prompt: str | None = None
    """System message for rows that have none."""
    instruction: str | None = None
    """Fixed question asked about every image, for data without a question column."""
    layout: str = "auto"
    """A known column layout (chartqa, latex_ocr, rlaif_v), none, or auto: chosen by dataset
    name (the --dataset-adapter flag)."""
    text_only_rows: bool = False
    """Table layout: a row with an empty image cell is a text-only example (--text-only-rows)."""
    split_option: str = "--split"
    """The option that chose `split`, named when the dataset has no such split."""


def data_spec(
    args: Any, dataset: str | None = None, *, split: str | None = None, eval_rows: bool = False
) -> DataSpec:
    """The DataSpec of the CLI's `config.DataArgs` (or any object with the same fields);
    `eval_rows`: the split is --eval-split's."""
    return DataSpec(
        dataset=dataset or args.dataset,
        split=split or args.split,
        split_option="--eval-split" if eval_rows else "--split",
        image_column=args.image_column,
        question_column=args.question_column,
        answer_column=args.answer_column,
        chosen_column=args.chosen_column,
        rejected_column=args.rejected_column,
        system_prompt=args.system_prompt,
        instruction=args.instruction,
        layout=args.dataset_adapter,
        text_only_rows=args.text_only_rows,
    )


# ---------------------------------------------------------------------------------------------
# Public loaders


def load_sft_dataset(spec: DataSpec, *, require_answers: bool = True) -> Dataset:
    """Canonical SFT records (messages, images, source) of `spec.split`.

    `require_answers=False` (inference): a plain table without an answer column (image +
    question only) gets empty answers, which inference drops anyway.
    """
    table = read_table(spec.dataset, spec.split, split_option=spec.split_option)
    names = table.rows.column_names
    answer = resolve_columns(spec, column_layout_for(spec)).answer
    if not require_answers and detect_format(names) == "table" and answer not in names:
        table = replace(table, rows=table.rows.add_column(answer, [""] * len(table.rows)))
    return _convert(table, spec, preference=False)


def load_preference_dataset(spec: DataSpec) -> Dataset:
    """Canonical preference records (prompt, chosen, rejected, images, source) for DPO."""
    table = read_table(spec.dataset, spec.split, split_option=spec.split_option)
    return _convert(table, spec, preference=True)


def split_dataset(
    dataset: Dataset | DatasetDict,
    *,
    eval_split: str | None = None,
    eval_fraction: float | None = None,
    seed: int,
    spec: DataSpec | None = None,
    loader: Callable[[DataSpec], Dataset] | None = None,
    train_split: str = "train",
) -> tuple[Dataset, Dataset | None]:
    """(train, eval) records: a named split, a seeded random fraction, or no eval at all.

    A named split is taken from `dataset` when it is a DatasetDict, else loaded with
    `loader(spec with split=eval_split)` (e.g. `load_sft_dataset`).
    """
    if eval_split is not None and eval_fraction is not None:
        raise ConfigError(
            "--eval-split and --eval-fraction contradict each other", fix="choose one"
        )
    if eval_split is not None:
        return _named_split(dataset, eval_split, train_split, spec=spec, loader=loader)
    if isinstance(dataset, DatasetDict):
        dataset = dataset[train_split]
    if eval_fraction is None:
        return dataset, None
    n_eval = round(len(dataset) * eval_fraction)
    if not 0 < eval_fraction < 1 or n_eval < 1 or n_eval >= len(dataset):
        raise ConfigError(
            f"{eval_fraction} of {len(dataset)} rows leaves {n_eval} eval and "
            f"{len(dataset) - n_eval} training rows",
            where="--eval-fraction",
            fix="use a fraction between 0 and 1 that keeps at least one row on each side",
        )
    parts = dataset.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def _named_split(
    dataset: Dataset | DatasetDict,
    eval_split: str,
    train_split: str,
    *,
    spec: DataSpec | None,
    loader: Callable[[DataSpec], Dataset] | None,
) -> tuple[Dataset, Dataset]:
    if isinstance(dataset, DatasetDict):
        for name in (train_split, eval_split):
            if name not in dataset:
                raise DataError(
                    f"no split {name!r}; the dataset has: {', '.join(dataset)}",
                    where="--eval-split" if name == eval_split else "--split",
                    fix="pass one of the splits listed",
                )
        return dataset[train_split], dataset[eval_split]
    if spec is None or loader is None:
        raise DataError(
            f"cannot take split {eval_split!r} from an already loaded split",
            where="--eval-split",
            fix="pass the dataset's spec and loader, or use --eval-fraction",
        )
    return dataset, loader(replace(spec, split=eval_split, split_option="--eval-split"))


# ---------------------------------------------------------------------------------------------
# Converting: a row in, a canonical record out


def column_layout_for(spec: DataSpec) -> ColumnLayout:
    """The explicit layout (--dataset-adapter), the one whose dataset name matches (auto), or
    none."""
    if spec.layout != "auto":
        if spec.layout not in COLUMN_LAYOUTS:
            raise ConfigError(
                f"unknown column layout {spec.layout!r}",
                where="--dataset-adapter",
                fix=f"use auto, {', '.join(COLUMN_LAYOUTS)}",
            )
        return COLUMN_LAYOUTS[spec.layout]
    name = spec.dataset.rstrip("/").lower()
    key = _LAYOUT_FOR_NAME.get(name) or _LAYOUT_FOR_NAME.get(name.rsplit("/", 1)[-1])
    return COLUMN_LAYOUTS[key or "none"]


def resolve_columns(spec: DataSpec, layout: ColumnLayout) -> Columns:
    """Column names: an explicit flag, else the layout's, else the defaults."""
    if spec.instruction is not None and spec.question_column is not None:
        raise ConfigError(
            "--instruction replaces the question column, so --question-column is unused",
            where="--instruction",
            fix="pass one of --instruction and --question-column",
        )
    instruction = spec.instruction
    question = spec.question_column
    if instruction is None and question is None:
        question = layout.question_column
        instruction = layout.instruction if question is None else None
    return Columns(
        image=spec.image_column or layout.image_column,
        question=question,
        answer=spec.answer_column or layout.answer_column,
        chosen=spec.chosen_column or layout.chosen_column,
        rejected=spec.rejected_column or layout.rejected_column,
        instruction=instruction,
        system_prompt=spec.system_prompt,
        text_only_rows=spec.text_only_rows,
    )


def detect_format(column_names: list[str]) -> str:
    """The row format: messages (typed parts), conversations (ShareGPT/LLaVA) or table."""
    if "messages" in column_names:
        return "messages"
    if "conversations" in column_names:
        return "conversations"
    return "table"


def _convert(table: RawTable, spec: DataSpec, *, preference: bool) -> Dataset:
    columns = resolve_columns(spec, column_layout_for(spec))
    names = table.rows.column_names
    if spec.image_column is None and columns.image not in names and "file_name" in names:
        columns = replace(columns, image="file_name")  # the imagefolder metadata convention
    row_format = "table" if preference else detect_format(names)
    _check_columns(columns, names, row_format=row_format, preference=preference, where=table.name)
    row_to_record = _row_converter(columns, row_format=row_format, preference=preference)
    base_dir, name, first_row = table.base_dir, table.name, table.first_row

    def convert(row: dict, index: int) -> dict:
        return row_to_record(row, base_dir=base_dir, source=f"{name}:{index + first_row}")

    return table.rows.map(
        convert,
        with_indices=True,
        remove_columns=names,
        features=PREFERENCE_FEATURES if preference else SFT_FEATURES,
        desc="Preparing records",
    )


def _row_converter(columns: Columns, *, row_format: str, preference: bool) -> Callable[..., dict]:
    if preference:
        return lambda row, **kw: preference_row_to_record(row, columns=columns, **kw)
    if row_format == "messages":
        return lambda row, **kw: messages_row_to_record(row, columns=columns, **kw)
    if row_format == "conversations":
        return lambda row, **kw: conversations_row_to_record(row, columns=columns, **kw)
    return lambda row, **kw: table_row_to_record(row, columns=columns, **kw)


def _check_columns(
    columns: Columns, names: list[str], *, row_format: str, preference: bool, where: str
) -> None:
    """Every column the conversion reads exists, else one error naming the flag to set."""
    if row_format != "table":
        return
    flags = [("--image-column", columns.image)]
    # A preference table may hold TRL's `prompt` column instead of a question column.
    if columns.instruction is None and (
        columns.question in names or not (preference and "prompt" in names)
    ):
        flags.append(("--question-column", columns.question))
    if preference:
        flags += [("--chosen-column", columns.chosen), ("--rejected-column", columns.rejected)]
    else:
        flags.append(("--answer-column", columns.answer))
    missing = [(flag, column) for flag, column in flags if column not in names]
    if not missing:
        return
    what = "; ".join(f"no column {column!r} ({flag})" for flag, column in missing)
    fix = "name the right columns with " + ", ".join(flag for flag, _ in missing)
    if any(flag == "--question-column" for flag, _ in missing):
        fix += " (or give every row the same question with --instruction)"
    raise DataError(f"{what}; the columns are: {', '.join(names)}", where=where, fix=fix)
