"""Which rows train and which evaluate: one answer for training, evaluation and inspection.

    train, held_out = load_train_and_eval(DataArgs(dataset="data.jsonl", eval_fraction=0.1),
                                          preference=False, seed=3407)

`--dataset demo` names the chart set shipped inside the package (`vlm_unsloth/data/demo/`, in
the wheel too) and its own eval split; `--dataset demo-colours` the coloured-squares set of the
offline CPU quickstart (`vlm_unsloth/data/demo_colours/`, SFT rows only). Otherwise the eval
rows come from `--eval-dataset`, `--eval-split` or a seeded `--eval-fraction` of `--dataset`:
the same seed holds out the same rows, so `evaluate.py` scores exactly the rows training never
saw.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from vlm_unsloth.config import COLOUR_DEMO_DATASET, DEMO_DATASET, DataArgs
from vlm_unsloth.data.loaders import (
    data_spec,
    load_preference_dataset,
    load_sft_dataset,
    split_dataset,
)
from vlm_unsloth.errors import DataError

DEMO_DIR = Path(str(resources.files("vlm_unsloth.data") / "demo"))
"""The shipped demo set: charts, SFT and DPO rows (package data, so `pip install .` has it)."""
COLOUR_DEMO_DIR = Path(str(resources.files("vlm_unsloth.data") / "demo_colours"))
"""The shipped coloured-squares set of the offline CPU quickstart: SFT rows (package data)."""
_GENERATORS = {DEMO_DATASET: "make_demo_data.py", COLOUR_DEMO_DATASET: "make_colour_demo.py"}


def demo_dir(name: str = DEMO_DATASET) -> Path:
    """The shipped folder of demo set `name` ("demo" or "demo-colours"), or a one-line error
    when this install lacks it."""
    folder = DEMO_DIR if name == DEMO_DATASET else COLOUR_DEMO_DIR
    if not (folder / "train.jsonl").is_file():
        raise DataError(
            f"the {name} set is missing from this install ({folder})",
            where=f"--dataset {name}",
            fix="reinstall vlm-unsloth (pip install .), or write it with "
            f"python scripts/{_GENERATORS[name]} --output-dir {folder}",
        )
    return folder


def dataset_paths(data_args: DataArgs, *, preference: bool) -> tuple[str, str | None]:
    """(train, eval) dataset locations; `demo` and `demo-colours` name a shipped set and its
    eval split."""
    if data_args.dataset not in _GENERATORS:
        return data_args.dataset, data_args.eval_dataset
    if preference and data_args.dataset == COLOUR_DEMO_DATASET:
        raise DataError(
            "the demo-colours set has no preference (chosen/rejected) rows",
            where="--dataset demo-colours",
            fix="use --dataset demo (the chart set has DPO rows) or your own preference data",
        )
    folder = demo_dir(data_args.dataset)
    prefix = "dpo_" if preference else ""
    train = folder / f"{prefix}train.jsonl"
    evaluation = folder / f"{prefix}eval.jsonl"
    default_eval = None if (data_args.eval_fraction or data_args.eval_split) else str(evaluation)
    return str(train), data_args.eval_dataset or default_eval


def has_eval_rows(data_args: DataArgs) -> bool:
    """Whether `load_train_and_eval` will return eval rows (checked before any slow work)."""
    _, eval_path = dataset_paths(data_args, preference=False)
    return bool(eval_path or data_args.eval_split or data_args.eval_fraction)


def load_train_and_eval(data_args: DataArgs, *, preference: bool, seed: int) -> tuple[Any, Any]:
    """(train, eval) canonical records (`datasets.Dataset`s; eval None when there is none).

    --max-samples is not applied here: training cuts its rows after the split, evaluation after
    validation.
    """
    loader = load_preference_dataset if preference else load_sft_dataset
    train_path, eval_path = dataset_paths(data_args, preference=preference)
    dataset = loader(data_spec(data_args, train_path, split=data_args.split))
    if eval_path:
        split = data_args.eval_split or "train"
        return dataset, loader(data_spec(data_args, eval_path, split=split, eval_rows=True))
    if not (data_args.eval_split or data_args.eval_fraction):
        return dataset, None
    return split_dataset(
        dataset,
        eval_split=data_args.eval_split,
        eval_fraction=data_args.eval_fraction or None,
        seed=seed,
        spec=data_spec(data_args, train_path, split=data_args.eval_split, eval_rows=True),
        loader=loader,
    )


def load_eval_rows(data_args: DataArgs, *, seed: int) -> Any:
    """The SFT eval rows as training held them out (same seed, same rows); a dataset without
    --eval-dataset, --eval-split or --eval-fraction (and not a demo set) is evaluated whole."""
    _, eval_path = dataset_paths(data_args, preference=False)
    if eval_path:  # only the eval file: the training data need not be there any more
        split = data_args.eval_split or "train"
        return load_sft_dataset(data_spec(data_args, eval_path, split=split, eval_rows=True))
    train, held_out = load_train_and_eval(data_args, preference=False, seed=seed)
    return train if held_out is None else held_out


def first_rows(dataset: Any, count: int | None) -> Any:
    """The first `count` rows of a `datasets.Dataset` (all of them for None)."""
    if count is None:
        return dataset
    return dataset.select(range(min(count, len(dataset))))


def eval_rows_flag(data_args: DataArgs) -> str:
    """The flag the eval rows come from, for error messages ("--eval-dataset", ...)."""
    if data_args.eval_dataset:
        return "--eval-dataset"
    if data_args.eval_split:
        return f"--eval-split {data_args.eval_split}"
    if data_args.eval_fraction:
        return f"--eval-fraction {data_args.eval_fraction:g}"
    return f"--dataset {data_args.dataset} (its eval rows)"


def describe_eval_data(data_args: DataArgs) -> str:
    """Where the eval rows come from, for a report header."""
    train_path, eval_path = dataset_paths(data_args, preference=False)
    if eval_path:
        return str(eval_path)
    if data_args.eval_split:
        return f"{train_path} (split {data_args.eval_split})"
    if data_args.eval_fraction:
        return f"{train_path} (held-out {data_args.eval_fraction:g})"
    return str(train_path)
