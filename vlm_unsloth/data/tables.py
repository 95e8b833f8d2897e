"""Reading a dataset as it is stored: every input kind becomes a `RawTable` of undecoded rows.

A local JSONL / JSON / CSV / Parquet file (image paths relative to the file), an image folder with
metadata.jsonl (`file_name` column), a folder written by `Dataset.save_to_disk`, a folder of data
files, or a Hugging Face dataset name. Image features stay undecoded ({"bytes", "path"}). A CSV
may start with a byte order mark (Excel's "CSV UTF-8") and be separated by ",", ";" or tabs.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, Features, List, Value

from vlm_unsloth.errors import DataError

_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_METADATA_FILES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
_SEPARATOR_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}
"""CSV separators recognised from the header line, comma first (it wins a tie)."""


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


def read_table(dataset: str, split: str, *, split_option: str = "--split") -> RawTable:
    """The rows of `dataset` / `split` as read, image features left undecoded. `split_option`:
    the option that chose `split`, named when the dataset has no such split (--eval-split for
    the eval rows)."""
    path = Path(dataset).expanduser()
    if path.is_file():
        _check_single_split(path, split, split_option)
        return _read_file(path, base_dir=path.parent, name=path.name)
    if path.is_dir():
        return _read_folder(path, split, split_option)
    if path.exists():  # a device (a link to /dev/zero), a FIFO, a socket: it may never end
        raise DataError(
            f"{path} is not a regular file (a device, pipe or socket), so it is not read",
            where="--dataset",
            fix="pass a JSONL/JSON/CSV/Parquet file, an image folder or a saved dataset",
        )
    if _looks_like_path(dataset):
        raise DataError(
            f"no such file or folder {dataset}",
            where="--dataset",
            fix="check the path (a JSONL/JSON/CSV/Parquet file, an image folder or a saved "
            "dataset), or pass a Hugging Face dataset name",
        )
    return _load_with_datasets(dataset, split, where="--dataset")


def _read_file(path: Path, *, base_dir: Path, name: str) -> RawTable:
    builder = _FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DataError(
            f"cannot read {path.name}: unknown file type {path.suffix!r}",
            where="--dataset",
            fix=f"use one of {', '.join(_FILE_BUILDERS)}",
        )
    _check_text_file(path, builder)
    options: dict[str, Any] = _csv_options(path) if builder == "csv" else {}
    try:
        rows = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except (datasets.exceptions.DatasetGenerationError, ValueError, TypeError) as error:
        cause = str(error.__cause__ or error).strip() or type(error).__name__
        # datasets names neither the line of a JSON syntax error nor (pyarrow) counts it right.
        cause = (_invalid_json_line(path) if builder == "json" else None) or cause
        read_as = f" (read as {_SEPARATOR_NAMES[options['sep']]}-separated)" if options else ""
        raise DataError(
            f"cannot read {path.name}{read_as}: {cause.splitlines()[0]}",
            where=str(path),
            fix="check it is valid "
            + ("JSON Lines (one object a line)" if path.suffix == ".jsonl" else builder.upper())
            + " and that each column holds one type in every row",
        ) from error
    _check_not_empty(rows, str(path))
    return RawTable(rows=_undecoded(rows), name=name, base_dir=base_dir, first_row=1)


def _read_folder(folder: Path, split: str, split_option: str) -> RawTable:
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        return _read_saved(folder, split, split_option)
    for candidate in (folder, folder / split):
        for metadata_name in _METADATA_FILES:
            metadata = candidate / metadata_name
            if metadata.is_file():
                if candidate == folder:
                    _check_single_split(metadata, split, split_option)
                return _read_file(
                    metadata, base_dir=candidate, name=f"{candidate.name}/{metadata_name}"
                )
    # A folder of data files (e.g. a hub dataset downloaded with `hf download --local-dir`).
    return _load_with_datasets(str(folder), split, where=str(folder))


def _read_saved(folder: Path, split: str, split_option: str) -> RawTable:
    saved = datasets.load_from_disk(str(folder))
    if isinstance(saved, DatasetDict):
        if split not in saved:
            raise DataError(
                f"no split {split!r}; {folder.name} has: {', '.join(saved)}",
                where=split_option,
                fix="pass one of the splits listed",
            )
        saved = saved[split]
    _check_not_empty(saved, str(folder))
    return RawTable(rows=_undecoded(saved), name=folder.name, base_dir=folder, first_row=0)


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


def _csv_options(path: Path) -> dict[str, Any]:
    """The csv builder's options for `path`: its separator, a byte order mark skipped, and every
    cell as text ("3.10" must not become 3.1, nor an answer "NA" a null)."""
    # utf-8-sig: Excel's "CSV UTF-8" starts with a byte order mark, which would otherwise stick
    # to the first column's name ("\ufeffimage"); files without one read the same.
    with path.open(newline="", encoding="utf-8-sig") as handle:  # UTF-8: _check_text_file
        header_line = handle.readline()
    # The separator that splits the header into the most columns: Excel writes ";" where the
    # decimal separator is a comma, and tab-separated exports are common. A tie keeps ",".
    separator = max(_SEPARATOR_NAMES, key=lambda sep: len(_split_line(header_line, sep)))
    header = _split_line(header_line, separator)
    if not header:
        raise DataError(f"{path.name} is empty", where=str(path), fix="add a header and rows")
    return {
        "features": Features({name: Value("string") for name in header}),
        "keep_default_na": False,
        "sep": separator,
        "encoding": "utf-8-sig",
    }


def _check_text_file(path: Path, builder: str) -> None:
    """A JSON, JSON Lines or CSV file must be UTF-8 and hold something: one line naming the first
    line that is not UTF-8 (pyarrow reads such bytes into its strings unchecked, and the error
    comes rows later, naming no row), or saying the file is empty (datasets then fails with a
    bare StopIteration). Read as bytes, one line at a time: any size of file, little memory."""
    if builder not in ("json", "csv"):
        return  # Parquet holds typed columns, not lines of text
    content = False
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                column = len(line[: error.start].decode("utf-8")) + 1
                raise DataError(
                    f"line {number} is not UTF-8 text (byte 0x{line[error.start]:02x} at column "
                    f"{column})",
                    where=str(path),
                    fix="save the file as UTF-8"
                    + (' (Excel: "CSV UTF-8 (Comma delimited)")' if builder == "csv" else ""),
                ) from error
            content = content or bool(text.strip())
    if not content:
        if builder == "csv":
            fix = "add a header line and one row a line"
        elif path.name in _METADATA_FILES:
            fix = 'add one row a line for the folder\'s images, e.g. {"file_name": "001.png", '
            fix += '"question": "...", "answer": "..."}'
        else:
            fix = "add one row a line, or pass the file that holds the rows"
        raise DataError("the file is empty: it has no rows", where=str(path), fix=fix)


def _split_line(line: str, separator: str) -> list[str]:
    return next(csv.reader([line], delimiter=separator), [])


def _invalid_json_line(path: Path) -> str | None:
    """`line N: <what is wrong>` for the first line of `path` that is not valid JSON, numbered as
    in an editor; None when none is found (the problem is elsewhere, e.g. a column's type). The
    file is UTF-8 (`_check_text_file`)."""
    if path.suffix.lower() == ".json":
        try:  # a whole document: a list of rows (the problem is then elsewhere) or an error
            json.loads(path.read_text(encoding="utf-8"))
            return None
        except json.JSONDecodeError as error:
            if error.msg != "Extra data":  # "Extra data": one object a line, as in JSONL
                return f"line {error.lineno}: {error.msg} (column {error.colno})"
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                return f"line {number}: {error.msg} (column {error.colno})"
            if not isinstance(row, dict):
                return f"line {number}: not a JSON object ({{...}}), one row a line"
    return None


def _check_single_split(path: Path, split: str, split_option: str) -> None:
    if split != "train":
        keep = (
            "leave --split at train;"
            if split_option == "--split"
            else "drop the eval split (--eval-split none clears a --config file's),"
        )
        raise DataError(
            f"{path.name} is a single file, so it has no split {split!r}",
            where=split_option,
            fix=f"{keep} hold out rows with --eval-fraction, or pass an eval file with "
            "--eval-dataset",
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
