"""The shipped coloured-squares set (vlm_unsloth/data/demo_colours, `--dataset demo-colours`) and
its generator: what the generator makes now, answers visible in the pixels, found by name.

python3 -m pytest tests/test_demo_colours.py -q
"""

from __future__ import annotations

import json
import re
import runpy
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO
from PIL import Image

from vlm_unsloth.config import DataArgs
from vlm_unsloth.data import splits
from vlm_unsloth.data.demo_colours import (
    COLOURS,
    IMAGE_SIDE,
    QUESTION,
    SQUARE_SIZES,
    ColourDemoConfig,
    write_colour_demo,
)
from vlm_unsloth.data.splits import COLOUR_DEMO_DIR, dataset_paths, load_train_and_eval
from vlm_unsloth.errors import ConfigError, DataError, OutputDirError

DEMO = COLOUR_DEMO_DIR
SCRIPT = REPO / "scripts" / "make_colour_demo.py"
JSONL = ("train.jsonl", "eval.jsonl", "blank_eval.jsonl")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def without_sizes(readme: Path) -> str:
    return re.sub(r"\d+ kB", "N kB", readme.read_text(encoding="utf-8"))  # PNG sizes vary


def pixels(path: Path) -> bytes:
    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


def test_shipped_set_is_what_the_generator_makes_now(tmp_path, monkeypatch):
    # Same rows, same pixels and the same README: the shipped command regenerates it (PNG bytes,
    # and the sizes the README quotes, may differ with another zlib). The same relative
    # --output-dir as the shipped command, from another folder: the README quotes it.
    monkeypatch.chdir(tmp_path)
    summary = write_colour_demo(ColourDemoConfig(output_dir="vlm_unsloth/data/demo_colours"))
    made = tmp_path / "vlm_unsloth" / "data" / "demo_colours"
    for name in JSONL:
        assert (made / name).read_bytes() == (DEMO / name).read_bytes(), name
    assert without_sizes(made / "README.md") == without_sizes(DEMO / "README.md")
    shipped_images = sorted(p.name for p in (DEMO / "images").iterdir())
    assert shipped_images == sorted(p.name for p in (made / "images").iterdir())  # no orphans
    assert len(shipped_images) == summary.image_count == 240 + 40 + 1
    for name in shipped_images:
        assert pixels(made / "images" / name) == pixels(DEMO / "images" / name), name
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert total < 200_000  # tiny in the wheel


def test_every_answer_is_the_one_colour_of_the_square_in_its_image():
    rows = read_jsonl(DEMO / "train.jsonl") + read_jsonl(DEMO / "eval.jsonl")
    assert len(rows) == 280
    names = {rgb: name for name, rgb in COLOURS.items()}
    for row in rows:
        assert row["question"] == QUESTION and not Path(row["image"]).is_absolute()
        with Image.open(DEMO / row["image"]) as image:
            assert image.size == (IMAGE_SIDE, IMAGE_SIDE)
            colours = image.convert("RGB").getcolors()
        painted = {rgb: n for n, rgb in colours if rgb != (255, 255, 255)}
        (rgb, area) = painted.popitem()
        assert not painted and names[rgb] == row["answer"], row  # one colour, the answer's
        side = round(area**0.5)
        assert side**2 == area and SQUARE_SIZES[0] <= side <= SQUARE_SIZES[1], row
    for name in ("train.jsonl", "eval.jsonl"):  # every colour, none dominating
        answers = Counter(row["answer"] for row in read_jsonl(DEMO / name))
        assert set(answers) == set(COLOURS) and max(answers.values()) <= 0.35 * answers.total()


def test_blank_eval_is_the_eval_rows_on_a_white_image():
    eval_rows, blank_rows = read_jsonl(DEMO / "eval.jsonl"), read_jsonl(DEMO / "blank_eval.jsonl")
    assert [r["answer"] for r in blank_rows] == [r["answer"] for r in eval_rows]
    assert {r["image"] for r in blank_rows} == {"images/blank.png"}
    with Image.open(DEMO / "images" / "blank.png") as image:
        assert image.convert("RGB").getcolors() == [(IMAGE_SIDE**2, (255, 255, 255))]


def test_dataset_demo_colours_names_the_shipped_train_and_eval_rows():
    train_path, eval_path = dataset_paths(DataArgs(dataset="demo-colours"), preference=False)
    assert (Path(train_path), Path(eval_path)) == (DEMO / "train.jsonl", DEMO / "eval.jsonl")
    train, held_out = load_train_and_eval(
        DataArgs(dataset="demo-colours"), preference=False, seed=0
    )
    assert (len(train), len(held_out)) == (240, 40)
    with pytest.raises(DataError, match="no preference .*--dataset demo"):
        dataset_paths(DataArgs(dataset="demo-colours"), preference=True)
    # --eval-fraction on a demo set holds out from its train rows instead.
    _, fraction_eval = dataset_paths(
        DataArgs(dataset="demo-colours", eval_fraction=0.1), preference=False
    )
    assert fraction_eval is None


def test_an_install_without_the_colour_set_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(splits, "COLOUR_DEMO_DIR", tmp_path / "missing")
    with pytest.raises(DataError, match="demo-colours set is missing .*make_colour_demo.py"):
        dataset_paths(DataArgs(dataset="demo-colours"), preference=False)
    assert dataset_paths(DataArgs(dataset="demo"), preference=False)[0].endswith("train.jsonl")


def test_refuses_an_existing_set_and_overwrite_removes_only_its_own_files(tmp_path):
    write_colour_demo(ColourDemoConfig(output_dir=str(tmp_path), train_count=5, eval_count=2))
    with pytest.raises(OutputDirError, match="--overwrite"):
        write_colour_demo(ColourDemoConfig(output_dir=str(tmp_path), train_count=2, eval_count=1))
    (tmp_path / "images" / "notes.txt").write_text("not ours")
    write_colour_demo(
        ColourDemoConfig(output_dir=str(tmp_path), train_count=2, eval_count=1, overwrite=True)
    )
    pngs = sorted(p.name for p in (tmp_path / "images").glob("*.png"))
    assert pngs == ["blank.png", "eval_0000.png", "train_0000.png", "train_0001.png"]
    assert (tmp_path / "images" / "notes.txt").exists()


def test_config_reports_every_bad_count_at_once():
    with pytest.raises(ConfigError) as caught:
        ColourDemoConfig(output_dir="x", train_count=0, eval_count=-3)
    assert "--train-count=0" in str(caught.value) and "--eval-count=-3" in str(caught.value)


def test_cli_writes_a_set_and_prints_one_line_errors(tmp_path, capsys):
    main = runpy.run_path(str(SCRIPT))["main"]
    out = tmp_path / "colours"
    argv = ["--output-dir", str(out), "--train-count", "3", "--eval-count", "2", "--seed", "1"]
    assert main(argv) == 0
    assert len(read_jsonl(out / "train.jsonl")) == 3
    assert len(read_jsonl(out / "blank_eval.jsonl")) == 2
    assert "--seed 1" in (out / "README.md").read_text(encoding="utf-8")
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "--overwrite" in error and "\n" not in error
