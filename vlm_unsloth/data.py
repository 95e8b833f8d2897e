"""Datasets in, canonical records out: one record format both training backends' collators take.

    python3 scripts/inspect_data.py --dataset data/demo/train.jsonl --model tiny-qwen2-vl

Inputs (data/README.md has examples): a local JSONL / JSON / CSV / Parquet file whose image paths
are relative to the file; an image folder with metadata.jsonl (`file_name` column); a folder
written by `Dataset.save_to_disk`; a Hugging Face dataset name. Rows are plain tables (image,
question, answer; renamable), `messages` with typed content parts plus `images`, or ShareGPT /
LLaVA `conversations` with `<image>` placeholders. HuggingFaceM4/ChartQA, unsloth/LaTeX_OCR and
openbmb/RLAIF-V-Dataset are recognised by name.

Canonical SFT record (a row of a `datasets.Dataset`, memory-mapped Arrow):

    {"messages": [{"role": "system"|"user"|"assistant",
                   "content": [{"type": "image", "text": None}, {"type": "text", "text": "..."}]}],
     "images": [{"bytes": b"..." | None, "path": "/abs/path.png" | "https://..." | None}],
     "source": "train.jsonl:12"}

Preference (DPO) records hold "prompt" (system? + user messages), "chosen" and "rejected"
(assistant messages), "images" and "source": TRL's vision DPO format.

Images are references only; `images.load_image` decodes them when a batch is built, so a
30,000-image dataset never sits in RAM. Row conversion is pure (a row in, a record out); the
checks that reject a row live in `record_problem`, which `validation.validate_dataset` calls.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, Features, List, Value

from vlm_unsloth.errors import ConfigError, DataError

IMAGE_PLACEHOLDER = "<image>"
"""ShareGPT/LLaVA marker for an image inside a message's text."""

_PART = {"type": Value("string"), "text": Value("string")}
_MESSAGES = List({"role": Value("string"), "content": List(_PART)})
_IMAGES = List({"bytes": Value("binary"), "path": Value("string")})
SFT_FEATURES = Features({"messages": _MESSAGES, "images": _IMAGES, "source": Value("string")})
PREFERENCE_FEATURES = Features(
    {
        "prompt": _MESSAGES,
        "chosen": _MESSAGES,
        "rejected": _MESSAGES,
        "images": _IMAGES,
        "source": Value("string"),
    }
)

_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_METADATA_FILES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
_ROLES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
}


@dataclass(frozen=True)
class Adapter:
    """Column names (and a fixed instruction) of a known dataset layout."""

    image_column: str = "image"
    question_column: str | None = "question"
    answer_column: str = "answer"
    chosen_column: str = "chosen"
    rejected_column: str = "rejected"
    instruction: str | None = None


ADAPTERS: dict[str, Adapter] = {
    "none": Adapter(),
    # ChartQA's `label` is a list of accepted answers; the first is the reference.
    "chartqa": Adapter(question_column="query", answer_column="label"),
    "latex_ocr": Adapter(
        question_column=None,
        answer_column="text",
        instruction="Write the LaTeX representation for this image.",
    ),
    "rlaif_v": Adapter(),  # image, question, chosen, rejected: our own default names
}
# Hub ids, and the folder names a local copy of them usually has.
_ADAPTER_FOR_NAME = {
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

    Column names left None come from the adapter (ChartQA, LaTeX_OCR, ...) or the defaults:
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
    adapter: str = "auto"
    """A known layout (chartqa, latex_ocr, rlaif_v), none, or auto: chosen by dataset name."""


def data_spec(args: Any, dataset: str | None = None, *, split: str | None = None) -> DataSpec:
    """The DataSpec of the CLI's `config.DataArgs` (or any object with the same fields)."""
    return DataSpec(
        dataset=dataset or args.dataset,
        split=split or args.split,
        image_column=args.image_column,
        question_column=args.question_column,
        answer_column=args.answer_column,
        chosen_column=args.chosen_column,
        rejected_column=args.rejected_column,
        system_prompt=args.system_prompt,
        instruction=args.instruction,
        adapter=args.dataset_adapter,
    )


@dataclass(frozen=True)
class Columns:
    """Resolved column names for one dataset (spec flags over the adapter's defaults)."""

    image: str
    question: str | None
    answer: str
    chosen: str
    rejected: str
    instruction: str | None
    system_prompt: str | None


@dataclass(frozen=True)
class RawTable:
    """Rows as read, before conversion, and how to name and resolve them."""

    rows: Dataset
    name: str
    """File name or dataset name, the left part of each record's `source`."""
    base_dir: Path | None
    """Folder relative image paths are resolved from (None: the current folder)."""
    first_row: int
    """1 for files (row numbers as in an editor), 0 for datasets (as in `dataset[i]`)."""


# ---------------------------------------------------------------------------------------------
# Public loaders


def load_sft_dataset(spec: DataSpec, *, require_answers: bool = True) -> Dataset:
    """Canonical SFT records (messages, images, source) of `spec.split`.

    `require_answers=False` (inference): a plain table without an answer column (image +
    question only) gets empty answers, which inference drops anyway.
    """
    table = read_table(spec)
    names = table.rows.column_names
    answer = resolve_columns(spec, adapter_for(spec)).answer
    if not require_answers and detect_format(names) == "table" and answer not in names:
        table = replace(table, rows=table.rows.add_column(answer, [""] * len(table.rows)))
    return _convert(table, spec, preference=False)


def load_preference_dataset(spec: DataSpec) -> Dataset:
    """Canonical preference records (prompt, chosen, rejected, images, source) for DPO."""
    return _convert(read_table(spec), spec, preference=True)


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
    return dataset, loader(replace(spec, split=eval_split))


# ---------------------------------------------------------------------------------------------
# Reading: every input kind becomes a RawTable


def read_table(spec: DataSpec) -> RawTable:
    """The rows of `spec.dataset` / `spec.split` as read, image features left undecoded."""
    path = Path(spec.dataset).expanduser()
    if path.is_file():
        _check_single_split(path, spec.split)
        return _read_file(path, base_dir=path.parent, name=path.name)
    if path.is_dir():
        return _read_folder(path, spec.split)
    if _looks_like_path(spec.dataset):
        raise DataError(
            f"no such file or folder {spec.dataset}",
            where="--dataset",
            fix="check the path (a JSONL/JSON/CSV/Parquet file, an image folder or a saved "
            "dataset), or pass a Hugging Face dataset name",
        )
    return _read_hub(spec.dataset, spec.split)


def _read_file(path: Path, *, base_dir: Path, name: str) -> RawTable:
    builder = _FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DataError(
            f"cannot read {path.name}: unknown file type {path.suffix!r}",
            where="--dataset",
            fix=f"use one of {', '.join(_FILE_BUILDERS)}",
        )
    options: dict[str, Any] = {}
    if builder == "csv":
        # Every CSV cell as text: "3.10" must not become 3.1, nor an answer "NA" a null.
        options = {"features": _all_text_features(path), "keep_default_na": False}
    try:
        rows = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except (datasets.exceptions.DatasetGenerationError, ValueError, TypeError) as error:
        cause = str(error.__cause__ or error).strip() or type(error).__name__
        raise DataError(
            f"cannot read {path.name}: {cause.splitlines()[0]}",
            where=str(path),
            fix="check it is valid "
            + ("JSON Lines (one object a line)" if path.suffix == ".jsonl" else builder.upper())
            + " and that each column holds one type in every row",
        ) from error
    _check_not_empty(rows, str(path))
    return RawTable(rows=_undecoded(rows), name=name, base_dir=base_dir, first_row=1)


def _read_folder(folder: Path, split: str) -> RawTable:
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        return _read_saved(folder, split)
    for candidate in (folder, folder / split):
        for metadata_name in _METADATA_FILES:
            metadata = candidate / metadata_name
            if metadata.is_file():
                if candidate == folder:
                    _check_single_split(metadata, split)
                return _read_file(
                    metadata, base_dir=candidate, name=f"{candidate.name}/{metadata_name}"
                )
    # A folder of data files (e.g. a hub dataset downloaded with `hf download --local-dir`).
    return _load_with_datasets(str(folder), split, where=str(folder))


def _read_saved(folder: Path, split: str) -> RawTable:
    saved = datasets.load_from_disk(str(folder))
    if isinstance(saved, DatasetDict):
        if split not in saved:
            raise DataError(
                f"no split {split!r}; {folder.name} has: {', '.join(saved)}",
                where="--split",
                fix="pass one of the splits listed",
            )
        saved = saved[split]
    _check_not_empty(saved, str(folder))
    return RawTable(rows=_undecoded(saved), name=folder.name, base_dir=folder, first_row=0)


def _read_hub(name: str, split: str) -> RawTable:
    return _load_with_datasets(name, split, where="--dataset")


def _load_with_datasets(name: str, split: str, *, where: str) -> RawTable:
    local = Path(name).is_dir()
    try:
        rows = datasets.load_dataset(name, split=split)
    except ConnectionError as error:
        raise DataError(
            f"cannot load dataset {name!r}: the Hugging Face Hub is unreachable (offline?) "
            "and it is not in the local cache",
            where=where,
            fix="pass a local file (JSONL/JSON/CSV/Parquet), an image folder with "
            "metadata.jsonl, or a folder written by Dataset.save_to_disk",
        ) from error
    except datasets.exceptions.DatasetNotFoundError as error:
        raise DataError(
            f"dataset {name!r} is neither a local path nor a dataset on the Hugging Face Hub",
            where=where,
            fix="check the name or the path",
        ) from error
    except FileNotFoundError as error:
        raise DataError(
            f"no data files in {name!r}", where=where, fix="pass a data file or a saved dataset"
        ) from error
    except ValueError as error:  # unknown split: "Unknown split "x". Should be one of [...]"
        raise DataError(f"cannot load {name!r}: {error}", where=where) from error
    _check_not_empty(rows, name)
    return RawTable(
        rows=_undecoded(rows),
        name=Path(name).name if local else name,
        base_dir=Path(name) if local else None,
        first_row=0,
    )


def _undecoded(rows: Dataset) -> Dataset:
    """Image features cast to decode=False: {"bytes", "path"} references, no PIL decoding."""
    for column, feature in rows.features.items():
        if isinstance(feature, datasets.Image) and feature.decode:
            rows = rows.cast_column(column, datasets.Image(decode=False))
        elif (
            isinstance(feature, List)
            and isinstance(feature.feature, datasets.Image)
            and feature.feature.decode
        ):
            rows = rows.cast_column(column, List(datasets.Image(decode=False)))
    return rows


def _all_text_features(path: Path) -> Features:
    with path.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise DataError(f"{path.name} is empty", where=str(path), fix="add a header and rows")
    return Features({name: Value("string") for name in header})


def _check_single_split(path: Path, split: str) -> None:
    if split != "train":
        raise DataError(
            f"{path.name} is a single file, so it has no split {split!r}",
            where="--split",
            fix="leave --split at train; hold out rows with --eval-fraction, or pass an eval "
            "file with --eval-dataset",
        )


def _check_not_empty(rows: Dataset, where: str) -> None:
    if len(rows) == 0:
        raise DataError("dataset has no rows", where=where, fix="check the file or the split")


def _looks_like_path(name: str) -> bool:
    """A name no hub id has: a data-file suffix, ./ ../ / ~ or more than one slash."""
    return (
        Path(name).suffix.lower() in _FILE_BUILDERS
        or name.startswith((".", "/", "~", "\\"))
        or name.count("/") > 1
    )


# ---------------------------------------------------------------------------------------------
# Converting: a row in, a canonical record out


def adapter_for(spec: DataSpec) -> Adapter:
    """The explicit adapter, or the one whose dataset name matches (auto), or none."""
    if spec.adapter != "auto":
        if spec.adapter not in ADAPTERS:
            raise ConfigError(
                f"unknown adapter {spec.adapter!r}",
                where="--adapter",
                fix=f"use auto, {', '.join(ADAPTERS)}",
            )
        return ADAPTERS[spec.adapter]
    name = spec.dataset.rstrip("/").lower()
    key = _ADAPTER_FOR_NAME.get(name) or _ADAPTER_FOR_NAME.get(name.rsplit("/", 1)[-1])
    return ADAPTERS[key or "none"]


def resolve_columns(spec: DataSpec, adapter: Adapter) -> Columns:
    """Column names: an explicit flag, else the adapter's, else the defaults."""
    if spec.instruction is not None and spec.question_column is not None:
        raise ConfigError(
            "--instruction replaces the question column, so --question-column is unused",
            where="--instruction",
            fix="pass one of --instruction and --question-column",
        )
    instruction = spec.instruction
    question = spec.question_column
    if instruction is None and question is None:
        question = adapter.question_column
        instruction = adapter.instruction if question is None else None
    return Columns(
        image=spec.image_column or adapter.image_column,
        question=question,
        answer=spec.answer_column or adapter.answer_column,
        chosen=spec.chosen_column or adapter.chosen_column,
        rejected=spec.rejected_column or adapter.rejected_column,
        instruction=instruction,
        system_prompt=spec.system_prompt,
    )


def detect_format(column_names: list[str]) -> str:
    """The row layout: messages (typed parts), conversations (ShareGPT/LLaVA) or table."""
    if "messages" in column_names:
        return "messages"
    if "conversations" in column_names:
        return "conversations"
    return "table"


def _convert(table: RawTable, spec: DataSpec, *, preference: bool) -> Dataset:
    columns = resolve_columns(spec, adapter_for(spec))
    names = table.rows.column_names
    if spec.image_column is None and columns.image not in names and "file_name" in names:
        columns = replace(columns, image="file_name")  # the imagefolder metadata convention
    layout = "table" if preference else detect_format(names)
    _check_columns(columns, names, layout=layout, preference=preference, where=table.name)
    row_to_record = _row_converter(columns, layout=layout, preference=preference)
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


def _row_converter(columns: Columns, *, layout: str, preference: bool) -> Callable[..., dict]:
    if preference:
        return lambda row, **kw: preference_row_to_record(row, columns=columns, **kw)
    if layout == "messages":
        return lambda row, **kw: messages_row_to_record(row, columns=columns, **kw)
    if layout == "conversations":
        return lambda row, **kw: conversations_row_to_record(row, columns=columns, **kw)
    return lambda row, **kw: table_row_to_record(row, columns=columns, **kw)


def _check_columns(
    columns: Columns, names: list[str], *, layout: str, preference: bool, where: str
) -> None:
    """Every column the conversion reads exists, else one error naming the flag to set."""
    if layout != "table":
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


def table_row_to_record(row: dict, *, columns: Columns, base_dir: Path | None, source: str) -> dict:
    """A plain table row (image, question, answer) as a canonical SFT record."""
    images = image_references(_cell_or_missing(row[columns.image]), base_dir)
    prompt = _table_prompt(row, columns, n_images=len(images))
    answer = _assistant(_answer_text(row[columns.answer]))
    return {"messages": [*prompt, answer], "images": images, "source": source}


def preference_row_to_record(
    row: dict, *, columns: Columns, base_dir: Path | None, source: str
) -> dict:
    """A preference row (image, question, chosen, rejected) as a canonical DPO record.

    TRL's layout is read too: `prompt` (text, or a list of messages with `<image>` or typed
    image parts) instead of a question column; `chosen` / `rejected` as assistant messages.
    """
    images = image_references(_cell_or_missing(row[columns.image]), base_dir)
    reads_question = columns.instruction is not None or columns.question in row
    if not reads_question and isinstance(row.get("prompt"), list):
        prompt = _with_system(_messages(row["prompt"]), columns.system_prompt)
    else:
        prompt_columns = columns if reads_question else replace(columns, question="prompt")
        prompt = _table_prompt(row, prompt_columns, n_images=len(images))
    return {
        "prompt": prompt,
        "chosen": _answer_messages(row[columns.chosen]),
        "rejected": _answer_messages(row[columns.rejected]),
        "images": images,
        "source": source,
    }


def messages_row_to_record(
    row: dict, *, columns: Columns, base_dir: Path | None, source: str
) -> dict:
    """A row already in conversation form: `messages` plus `images` (or inline image parts)."""
    messages = _messages(row["messages"])
    images = _row_images(row, columns)
    if images is None:
        images = [
            part.get("image") or part.get("path")
            for message in row["messages"]
            if isinstance(message.get("content"), list)
            for part in message["content"]
            if part.get("type") == "image" and (part.get("image") or part.get("path"))
        ]
    return {
        "messages": _with_system(messages, columns.system_prompt),
        "images": image_references(images, base_dir),
        "source": source,
    }


def conversations_row_to_record(
    row: dict, *, columns: Columns, base_dir: Path | None, source: str
) -> dict:
    """A ShareGPT/LLaVA row: `conversations` of {"from", "value"} with `<image>` placeholders."""
    images = _row_images(row, columns)
    return {
        "messages": _with_system(_messages(row["conversations"]), columns.system_prompt),
        "images": image_references(images, base_dir),
        "source": source,
    }


def image_references(value: Any, base_dir: Path | None) -> list[dict]:
    """Image reference(s) of a cell as {"bytes", "path"} dicts; nothing is decoded.

    A relative path is made absolute from `base_dir`; a URL is kept as it is; an empty cell
    becomes a reference with neither bytes nor path (rejected as missing_file at validation).
    """
    if value is None:
        return []
    values = value if isinstance(value, list | tuple) else [value]
    return [_reference(item, base_dir) for item in values]


def _cell_or_missing(value: Any) -> Any:
    """A table's image cell: an empty cell is one missing image, not a text-only row."""
    return [None] if value is None else value


def _reference(item: Any, base_dir: Path | None) -> dict:
    if isinstance(item, dict):
        data, path = item.get("bytes"), item.get("path")
        if data is None and path:
            path = _resolve(path, base_dir)
        return {"bytes": data, "path": path}
    if isinstance(item, bytes):
        return {"bytes": item, "path": None}
    if isinstance(item, str) and item.strip():
        return {"bytes": None, "path": _resolve(item.strip(), base_dir)}
    if hasattr(item, "save"):  # a PIL image in a hand-made dataset: keep it as PNG bytes
        buffer = io.BytesIO()
        item.save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}
    return {"bytes": None, "path": None}


def _resolve(path: str, base_dir: Path | None) -> str:
    if path.startswith(("http://", "https://")):
        return path
    resolved = Path(path).expanduser()
    if not resolved.is_absolute() and base_dir is not None:
        resolved = base_dir / resolved
    return str(resolved.resolve())


_IMAGE_PART = {"type": "image", "text": None}


def _text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": [_text_part(text)]}


def _with_system(messages: list[dict], system_prompt: str | None) -> list[dict]:
    if system_prompt is None or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": [_text_part(system_prompt)]}, *messages]


def _table_prompt(row: dict, columns: Columns, n_images: int) -> list[dict]:
    """[system?, user(images..., question)] for a table row."""
    question = columns.instruction
    if question is None:
        question = _answer_text(row[columns.question])
    content = [dict(_IMAGE_PART) for _ in range(n_images)]
    if question.strip():
        content.append(_text_part(question))
    return _with_system([{"role": "user", "content": content}], columns.system_prompt)


def _answer_text(value: Any) -> str:
    """A cell as answer text: a list (ChartQA's `label`) gives its first item; None gives ""."""
    if isinstance(value, list | tuple):
        return _answer_text(value[0]) if value else ""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _answer_messages(value: Any) -> list[dict]:
    """`chosen` / `rejected`: text, or TRL's list of assistant messages."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return _messages(value)
    return [_assistant(_answer_text(value))]


def _row_images(row: dict, columns: Columns) -> Any:
    """The image cell of a conversation row: `images`, else the image column, else None."""
    if "images" in row:
        return row["images"]
    if columns.image in row:
        return row[columns.image]
    return None


def _messages(raw: list[dict] | None) -> list[dict]:
    """Messages in canonical form, from {role, content} (typed parts or a string, where
    `<image>` marks images) or ShareGPT {from, value}. Unknown roles are kept for the check
    to name."""
    messages = []
    for message in raw or []:
        role = message.get("role") or message.get("from") or ""
        content = message.get("content")
        if content is None:
            content = message.get("value")
        messages.append({"role": _ROLES.get(role.lower(), role), "content": _content(content)})
    return messages


def _content(content: Any) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return split_image_placeholders(content)
    parts = []
    for part in content:
        if part.get("type") in ("image", "image_url"):
            parts.append(dict(_IMAGE_PART))
        elif part.get("text") is not None:
            parts.append(_text_part(part["text"]))
    return parts


def split_image_placeholders(text: str) -> list[dict]:
    """Text with `<image>` markers as parts: "<image>\\nWhat?" -> [image, text "What?"]."""
    parts: list[dict] = []
    for index, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if index > 0:
            parts.append(dict(_IMAGE_PART))
        if piece.strip():
            parts.append(_text_part(piece.strip()))
    return parts


# ---------------------------------------------------------------------------------------------
# Checks: why a record cannot be trained on


def record_problem(record: dict) -> tuple[str, str] | None:
    """(reason, message) of the first problem of an SFT or preference record, else None.

    Reasons: bad_roles, empty_question, empty_answer, image_count_mismatch. Messages name
    the message index, e.g. "message 3 (assistant) is empty".
    """
    if "prompt" in record:
        return _preference_problem(record)
    problem = _turns_problem(record["messages"], final_role="assistant")
    return problem or _image_count_problem(record["messages"], record["images"])


def check_record(record: dict) -> None:
    """Raise DataError naming the row and message index if `record` cannot be trained on."""
    problem = record_problem(record)
    if problem is not None:
        raise DataError(
            problem[1],
            where=record["source"],
            fix="fix the row or leave it to be skipped (rejected rows are listed by "
            "scripts/inspect_data.py)",
        )


def _preference_problem(record: dict) -> tuple[str, str] | None:
    problem = _turns_problem(record["prompt"], final_role="user")
    if problem:
        return problem
    for key in ("chosen", "rejected"):
        answer = record[key]
        if [m["role"] for m in answer] != ["assistant"]:
            roles = ", ".join(m["role"] for m in answer) or "nothing"
            return "bad_roles", f"{key} must be one assistant message, got {roles}"
        if not _text_of(answer[0]).strip():
            return "empty_answer", f"{key} answer is empty"
    return _image_count_problem(record["prompt"], record["images"])


def _turns_problem(messages: list[dict], *, final_role: str) -> tuple[str, str] | None:
    """Roles go [system] user assistant user ... ending with `final_role`; no empty turns."""
    if not messages:
        return "bad_roles", "conversation has no messages"
    start = 1 if messages[0]["role"] == "system" else 0
    if start == len(messages):
        return "bad_roles", "conversation has only a system message"
    for index, message in enumerate(messages[start:], start=start):
        expected = "user" if (index - start) % 2 == 0 else "assistant"
        role = message["role"]
        if role != expected:
            return "bad_roles", f"message {index} has role {role!r}, expected {expected!r}"
        has_image = any(part["type"] == "image" for part in message["content"])
        if role == "assistant" and has_image:
            return "bad_roles", f"message {index} (assistant) holds an image; put it in a user turn"
        if role == "assistant" and not _text_of(message).strip():
            return "empty_answer", f"message {index} (assistant) is empty"
        if role == "user" and not has_image and not _text_of(message).strip():
            return "empty_question", f"message {index} (user) has neither text nor an image"
    if messages[-1]["role"] != final_role:
        return (
            "bad_roles",
            f"conversation ends with a {messages[-1]['role']} message, not {final_role}",
        )
    return None


def _image_count_problem(messages: list[dict], images: list[dict]) -> tuple[str, str] | None:
    n_parts = sum(part["type"] == "image" for m in messages for part in m["content"])
    if n_parts == len(images):
        return None
    return (
        "image_count_mismatch",
        f"{n_parts} image placeholder(s) in the messages but {len(images)} image(s) in the row",
    )


def _text_of(message: dict) -> str:
    return "".join(part["text"] or "" for part in message["content"] if part["type"] == "text")


def to_chat_template_messages(messages: list[dict]) -> list[dict]:
    """Canonical messages as processors' chat templates take them (image parts without text)."""
    return [
        {
            "role": message["role"],
            "content": [
                {"type": "image"} if part["type"] == "image" else _text_part(part["text"])
                for part in message["content"]
            ],
        }
        for message in messages
    ]
