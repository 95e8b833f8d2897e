"""The shipped demo set (vlm_unsloth/data/demo) and its generator: reproducible, readable,
answers true.

python3 -m pytest tests/test_demo_data.py -q
"""

from __future__ import annotations

import hashlib
import json
import runpy
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from vlm_unsloth.data.demo_charts import (
    COLOURS,
    QUESTION_TYPES,
    ChartSpec,
    DemoDataConfig,
    chart_layout,
    write_demo_dataset,
)
from vlm_unsloth.data.splits import DEMO_DIR
from vlm_unsloth.errors import ConfigError, OutputDirError
from vlm_unsloth.infer.metrics import normalize_answer

ROOT = Path(__file__).resolve().parents[1]
DEMO = DEMO_DIR
SCRIPT = ROOT / "scripts" / "make_demo_data.py"
SPLITS = ("train", "eval")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def spec_of(chart: dict) -> ChartSpec:
    return ChartSpec(
        chart["kind"],
        chart["width"],
        chart["height"],
        chart["title"],
        tuple(chart["labels"]),
        tuple(chart["values"]),
        tuple(chart["colours"]),
    )


def expected_answer(chart: dict, question_type: str, target: str | None) -> str:
    # Re-derived here from the spec, independently of demo_data.answer_for.
    pairs = dict(zip(chart["labels"], chart["values"], strict=True))
    if question_type == "value":
        return str(pairs[target])
    if question_type == "highest":
        return max(pairs, key=pairs.get)
    if question_type == "lowest":
        return min(pairs, key=pairs.get)
    if question_type == "colour":
        return dict(zip(chart["labels"], chart["colours"], strict=True))[target]
    assert question_type == "count"
    return str(len(pairs))


@pytest.fixture(scope="module")
def charts() -> list[dict]:
    return read_jsonl(DEMO / "charts.jsonl")


@pytest.fixture(scope="module")
def rgb_images(charts) -> dict[str, Image.Image]:
    return {c["image"]: Image.open(DEMO / c["image"]).convert("RGB") for c in charts}


# --- the generator -----------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(tmp_path, monkeypatch):
    hashes = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        # The same relative --output-dir from two folders: README.md quotes the command.
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        write_demo_dataset(
            DemoDataConfig(output_dir="demo", train_count=6, eval_count=3, seed=seed)
        )
        hashes.append(file_hashes(tmp_path / name / "demo"))
    assert len(hashes[0]) == 9 + 6  # 9 images, 5 JSONL files, README.md
    assert hashes[0] == hashes[1]
    # A different seed changes the charts (the seed is really used).
    changed = [n for n in hashes[0] if n.startswith("images/") and hashes[0][n] != hashes[2].get(n)]
    assert changed


def test_shipped_set_is_what_the_generator_makes_now(tmp_path):
    # Charts depend on (seed, split, index) only, so a small run reproduces the shipped prefix.
    write_demo_dataset(DemoDataConfig(output_dir=str(tmp_path), train_count=8, eval_count=2))
    for name in ("charts.jsonl", "train.jsonl", "dpo_train.jsonl"):
        made = read_jsonl(tmp_path / name)[:8]
        assert made == read_jsonl(DEMO / name)[:8], name


def test_refuses_an_existing_set_and_overwrite_removes_stale_images(tmp_path):
    write_demo_dataset(DemoDataConfig(output_dir=str(tmp_path), train_count=5, eval_count=2))
    with pytest.raises(OutputDirError, match="--overwrite"):
        write_demo_dataset(DemoDataConfig(output_dir=str(tmp_path), train_count=2, eval_count=1))
    (tmp_path / "images" / "notes.txt").write_text("not ours")
    write_demo_dataset(
        DemoDataConfig(output_dir=str(tmp_path), train_count=2, eval_count=1, overwrite=True)
    )
    pngs = sorted(p.name for p in (tmp_path / "images").glob("*.png"))
    assert len(pngs) == 3
    assert {r["image"] for r in read_jsonl(tmp_path / "charts.jsonl")} == {
        f"images/{n}" for n in pngs
    }
    assert (tmp_path / "images" / "notes.txt").exists()  # only the generator's files go


def test_config_reports_every_bad_count_at_once():
    with pytest.raises(ConfigError) as caught:
        DemoDataConfig(output_dir="x", train_count=0, eval_count=-3)
    assert "--train-count=0" in str(caught.value)
    assert "--eval-count=-3" in str(caught.value)


def test_cli_writes_a_set_and_prints_one_line_errors(tmp_path, capsys):
    main = runpy.run_path(str(SCRIPT))["main"]
    out = tmp_path / "demo"
    argv = ["--output-dir", str(out), "--train-count", "3", "--eval-count", "2"]
    assert main(argv) == 0
    assert len(read_jsonl(out / "train.jsonl")) == 3
    assert len(read_jsonl(out / "dpo_eval.jsonl")) == 2
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "--overwrite" in error and "\n" not in error


# --- the shipped files -------------------------------------------------------------------------


def test_shipped_counts_and_size():
    assert {s: len(read_jsonl(DEMO / f"{s}.jsonl")) for s in SPLITS} == {"train": 300, "eval": 60}
    for split in SPLITS:
        sft, dpo = read_jsonl(DEMO / f"{split}.jsonl"), read_jsonl(DEMO / f"dpo_{split}.jsonl")
        assert [r["image"] for r in sft] == [r["image"] for r in dpo]  # same images
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert total < 5_000_000
    assert len(list((DEMO / "images").glob("*.png"))) == 360  # no orphans


@pytest.mark.parametrize("name", ["train", "eval", "dpo_train", "dpo_eval"])
def test_every_row_has_its_fields_and_a_readable_rgb_image(name, rgb_images):
    keys = ["image", "question", "chosen", "rejected"] if name.startswith("dpo") else None
    for i, row in enumerate(read_jsonl(DEMO / f"{name}.jsonl")):
        assert list(row) == (keys or ["image", "question", "answer"]), (name, i)
        assert not Path(row["image"]).is_absolute() and (DEMO / row["image"]).is_file()
        image = rgb_images[row["image"]]
        assert image.mode == "RGB"
        assert all(320 <= side <= 480 for side in image.size), (name, i, image.size)


def test_images_are_small_palette_pngs_of_varied_shapes(charts):
    shapes = {(c["width"], c["height"]) for c in charts}
    ratios = [w / h for w, h in shapes]
    assert len(shapes) > 300 and min(ratios) < 0.8 and max(ratios) > 1.25
    with Image.open(DEMO / charts[0]["image"]) as image:
        assert image.format == "PNG" and image.mode == "P"
        assert image.size == (charts[0]["width"], charts[0]["height"])


@pytest.mark.parametrize("name", ["train", "eval", "dpo_train", "dpo_eval"])
def test_every_question_type_is_present(name):
    charts_by_image = {c["image"]: c for c in read_jsonl(DEMO / "charts.jsonl")}
    part = "dpo" if name.startswith("dpo") else "sft"
    rows = read_jsonl(DEMO / f"{name}.jsonl")
    types = Counter(charts_by_image[r["image"]][part]["type"] for r in rows)
    assert set(types) == set(QUESTION_TYPES)
    assert min(types.values()) >= 0.1 * len(rows) or name.endswith("eval")


def test_answers_match_the_chart_spec(charts):
    rows = {s: read_jsonl(DEMO / f"{s}.jsonl") for s in SPLITS}
    dpo_rows = {s: read_jsonl(DEMO / f"dpo_{s}.jsonl") for s in SPLITS}
    position = Counter()
    for chart in charts:
        split = chart["split"]
        sft_row, dpo_row = rows[split][position[split]], dpo_rows[split][position[split]]
        position[split] += 1
        where = chart["image"]
        assert sft_row["image"] == dpo_row["image"] == where
        sft, dpo = chart["sft"], chart["dpo"]
        assert sft["type"] != dpo["type"], where
        assert sft_row["question"] == sft["question"]
        assert sft_row["answer"] == expected_answer(chart, sft["type"], sft["target"]), where
        assert dpo_row["question"] == dpo["question"]
        assert dpo_row["chosen"] == expected_answer(chart, dpo["type"], dpo["target"]), where
        assert dpo_row["rejected"] == dpo["rejected"]
        for question in (sft, dpo):
            if question["type"] in ("value", "colour"):
                assert question["target"] in chart["labels"]
                assert question["target"] in question["question"]
            assert question["type"] != "colour" or chart["kind"] == "bar"
    assert dict(position) == {"train": 300, "eval": 60}


def test_rejected_answers_are_wrong_but_plausible(charts):
    for chart in charts:
        dpo = chart["dpo"]
        chosen, rejected = dpo["answer"], dpo["rejected"]
        # Different even after normalisation, so exact match can tell them apart.
        assert normalize_answer(chosen) != normalize_answer(rejected), chart["image"]
        if dpo["type"] == "value":
            assert int(rejected) in chart["values"]
        elif dpo["type"] in ("highest", "lowest"):
            assert rejected in chart["labels"]
        elif dpo["type"] == "colour":
            assert rejected in chart["colours"]
        else:
            assert abs(int(rejected) - len(chart["labels"])) == 1


def test_no_answer_vanishes_under_normalisation(charts):
    answers = {q[k] for c in charts for q in (c["sft"], c["dpo"]) for k in ("answer", "rejected")}
    assert all(normalize_answer(answer) for answer in answers)
    assert all(len(answer) <= 6 for answer in answers)  # short and exact


@pytest.fixture(scope="module")
def fresh_set(tmp_path_factory) -> Path:
    # The pixel checks run on the shipped images AND on images drawn now, so a drawing change
    # made after the demo set was generated cannot slip past them.
    folder = tmp_path_factory.mktemp("fresh") / "demo"
    write_demo_dataset(DemoDataConfig(output_dir=str(folder), train_count=40, eval_count=10))
    return folder


def check_bar_pixels(chart: dict, image: Image.Image) -> None:
    # From the image alone: the coloured runs just above the x axis give the bars' colours left to
    # right (count and colour answers), and their heights rank like the values (highest/lowest).
    rgb_to_name = {rgb: name for name, rgb in COLOURS.items()}
    bottom = chart_layout(spec_of(chart)).plot[3]
    runs: list[tuple[str, list[int]]] = []
    for x in range(image.width):
        name = rgb_to_name.get(image.getpixel((x, bottom - 2)))
        if name and runs and runs[-1][0] == name and runs[-1][1][-1] == x - 1:
            runs[-1][1].append(x)
        elif name:
            runs.append((name, [x]))
    assert [name for name, _ in runs] == chart["colours"], chart["image"]
    heights = []
    for name, xs in runs:
        x = xs[len(xs) // 2]
        column = [image.getpixel((x, y)) for y in range(image.height)]
        heights.append(column.count(COLOURS[name]))
    by_height = sorted(range(len(heights)), key=heights.__getitem__)
    by_value = sorted(range(len(heights)), key=chart["values"].__getitem__)
    assert by_height == by_value, chart["image"]


def check_line_pixels(chart: dict, image: Image.Image) -> None:
    layout = chart_layout(spec_of(chart))
    assert len(layout.centres) == len(chart["values"])
    for x, y in layout.centres:
        assert image.getpixel((x, y)) == COLOURS[chart["colours"][0]], (chart["image"], x, y)
    ys = [y for _, y in layout.centres]  # a higher value is drawn higher: a smaller y
    by_height = sorted(range(len(ys)), key=lambda i: -ys[i])
    assert by_height == sorted(range(len(ys)), key=chart["values"].__getitem__), chart["image"]


def test_shipped_charts_show_their_answers(charts, rgb_images):
    assert Counter(c["kind"] for c in charts).most_common()[-1][1] > 100  # both kinds, > 100
    for chart in charts:
        check = check_bar_pixels if chart["kind"] == "bar" else check_line_pixels
        check(chart, rgb_images[chart["image"]])


def test_charts_drawn_now_show_their_answers(fresh_set):
    fresh = read_jsonl(fresh_set / "charts.jsonl")
    assert {c["kind"] for c in fresh} == {"bar", "line"}
    for chart in fresh:
        check = check_bar_pixels if chart["kind"] == "bar" else check_line_pixels
        check(chart, Image.open(fresh_set / chart["image"]).convert("RGB"))
