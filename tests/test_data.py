"""Loaders: every input kind and layout becomes the one canonical record format.

python3 -m pytest tests/test_data.py -q
"""

from __future__ import annotations

import csv
import gc
import io
import json
from pathlib import Path

import datasets
import pandas as pd
import psutil
import pytest
from PIL import Image

from vlm_unsloth.config import DataArgs
from vlm_unsloth.data.images import ImageError, load_image
from vlm_unsloth.data.loaders import (
    COLUMN_LAYOUTS,
    DataSpec,
    column_layout_for,
    data_spec,
    load_preference_dataset,
    load_sft_dataset,
    split_dataset,
)
from vlm_unsloth.data.records import (
    PREFERENCE_FEATURES,
    SFT_FEATURES,
    check_record,
    record_problem,
    split_image_placeholders,
)
from vlm_unsloth.data.splits import DEMO_DIR
from vlm_unsloth.errors import ConfigError, DataError

DEMO_TRAIN = DEMO_DIR / "train.jsonl"


def _image(path: Path, colour=(255, 0, 0), size=(32, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _png_bytes(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _user(*parts: dict) -> dict:
    return {"role": "user", "content": list(parts)}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": [_text(text)]}


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


IMAGE = {"type": "image", "text": None}


def _ref(path: Path) -> dict:
    return {"bytes": None, "path": str(path)}


@pytest.fixture
def chart_dir(tmp_path) -> Path:
    """data/ with images/red.png and images/blue.png."""
    _image(tmp_path / "data" / "images" / "red.png", (255, 0, 0))
    _image(tmp_path / "data" / "images" / "blue.png", (0, 0, 255))
    return tmp_path / "data"


ROWS = [
    {"image": "images/red.png", "question": "What colour?", "answer": "red"},
    {"image": "images/blue.png", "question": "And this one?", "answer": "blue"},
]


# --- local files ------------------------------------------------------------------------------


def test_jsonl_rows_become_canonical_records_with_paths_from_the_file(
    chart_dir, tmp_path, monkeypatch
):
    path = _jsonl(chart_dir / "train.jsonl", ROWS)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative image paths follow the data file, not the cwd
    dataset = load_sft_dataset(DataSpec(dataset=str(path)))
    assert isinstance(dataset, datasets.Dataset)
    assert dataset.features == SFT_FEATURES
    assert dataset[0] == {
        "messages": [_user(IMAGE, _text("What colour?")), _assistant("red")],
        "images": [_ref(chart_dir / "images" / "red.png")],
        "source": "train.jsonl:1",
    }
    assert dataset[1]["source"] == "train.jsonl:2"
    assert load_image(dataset[1]["images"][0]).getpixel((0, 0)) == (0, 0, 255)


def test_absolute_paths_and_urls_are_kept(chart_dir):
    absolute = chart_dir / "images" / "red.png"
    rows = [
        {"image": str(absolute), "question": "q", "answer": "a"},
        {"image": "https://example.com/x.png", "question": "q", "answer": "a"},
    ]
    dataset = load_sft_dataset(DataSpec(dataset=str(_jsonl(chart_dir / "mixed.jsonl", rows))))
    assert dataset["images"] == [
        [_ref(absolute)],
        [{"bytes": None, "path": "https://example.com/x.png"}],
    ]


def test_json_list_file(chart_dir):
    path = chart_dir / "train.json"
    path.write_text(json.dumps(ROWS))
    dataset = load_sft_dataset(DataSpec(dataset=str(path)))
    assert len(dataset) == 2
    assert dataset[1]["images"] == [_ref(chart_dir / "images" / "blue.png")]
    assert dataset[1]["source"] == "train.json:2"


def test_csv_cells_are_kept_as_written(chart_dir):
    path = chart_dir / "train.csv"
    path.write_text(
        "image,question,answer\n"
        'images/red.png,"Value, in %?",3.10\n'
        "images/blue.png,Missing?,NA\n"
        "images/red.png,Code?,007\n"
    )
    dataset = load_sft_dataset(DataSpec(dataset=str(path)))
    answers = [record["messages"][1]["content"][0]["text"] for record in dataset]
    assert answers == ["3.10", "NA", "007"]  # not 3.1, None and 7
    assert dataset[0]["messages"][0]["content"][1]["text"] == "Value, in %?"
    assert dataset[2]["source"] == "train.csv:3"
    assert dataset[1]["images"] == [_ref(chart_dir / "images" / "blue.png")]


@pytest.mark.parametrize(
    ("separator", "encoding"),
    [(",", "utf-8-sig"), (";", "utf-8-sig"), (";", "utf-8"), ("\t", "utf-8-sig")],
    ids=["excel-csv-utf8-comma", "excel-csv-utf8-semicolon", "semicolon", "tab-with-bom"],
)
def test_excel_csv_with_a_bom_and_semicolon_or_tab_separators(chart_dir, separator, encoding):
    # Excel's "CSV UTF-8" starts with a byte order mark and ends lines with \r\n; European
    # locales separate with ";" (the decimal comma stays in the cell).
    path = chart_dir / "excel.csv"
    with path.open("w", encoding=encoding, newline="") as handle:
        csv.writer(handle, delimiter=separator).writerows(
            [
                ["image", "question", "answer"],
                ["images/red.png", "Value, in %; roughly?", "3,10"],
                ["images/blue.png", "Missing?", "NA"],
            ]
        )
    assert path.read_bytes().startswith(b"\xef\xbb\xbf") == (encoding == "utf-8-sig")
    dataset = load_sft_dataset(DataSpec(dataset=str(path)))
    answers = [record["messages"][1]["content"][0]["text"] for record in dataset]
    assert answers == ["3,10", "NA"]
    assert dataset[0]["messages"][0]["content"][1]["text"] == "Value, in %; roughly?"
    assert dataset[1]["images"] == [_ref(chart_dir / "images" / "blue.png")]
    assert dataset[1]["source"] == "excel.csv:2"


def test_a_csv_that_cannot_be_read_names_the_separator_found(chart_dir):
    path = chart_dir / "bad.csv"
    path.write_text("image;question;answer\nimages/red.png;q;a\nimages/red.png;q;a;b;c\n")
    with pytest.raises(DataError, match=r"cannot read bad\.csv \(read as semicolon-separated\)"):
        load_sft_dataset(DataSpec(dataset=str(path)))


def test_a_csv_that_is_not_utf8_is_one_line_saying_so(chart_dir):
    path = chart_dir / "latin.csv"  # Excel's plain "CSV (Comma delimited)" on Windows: cp1252
    path.write_bytes("image,question,réponse\nimages/red.png,q,café\n".encode("cp1252"))
    with pytest.raises(DataError) as error:
        load_sft_dataset(DataSpec(dataset=str(path)))
    assert str(error.value) == (
        f"{path}: line 1 is not UTF-8 text (byte 0xe9 at column 17) — save the file as UTF-8 "
        '(Excel: "CSV UTF-8 (Comma delimited)")'
    )


def test_a_jsonl_that_is_not_utf8_names_the_line_and_column(chart_dir):
    """pyarrow reads the bytes into its strings unchecked: the error came rows later, as a
    UnicodeDecodeError traceback naming no row."""
    path = chart_dir / "train.jsonl"
    lines = [json.dumps(row, ensure_ascii=False) for row in ROWS * 3]
    lines.insert(6, '{"image": "images/red.png", "question": "Qué color?", "answer": "rojo"}')
    text = "".join(line + "\n" for line in lines)
    path.write_bytes(text.encode("cp1252"))  # é -> 0xe9, not UTF-8
    with pytest.raises(DataError) as error:
        load_sft_dataset(DataSpec(dataset=str(path)))
    assert str(error.value) == (
        f"{path}: line 7 is not UTF-8 text (byte 0xe9 at column 44) — save the file as UTF-8"
    )
    path.write_text(text, encoding="utf-8")  # the same rows as UTF-8 load
    assert load_sft_dataset(DataSpec(dataset=str(path)))[6]["source"] == "train.jsonl:7"


@pytest.mark.parametrize("content", ["", "\n \n"], ids=["empty", "blank-lines"])
def test_an_empty_metadata_file_or_jsonl_is_one_line(tmp_path, content):
    """datasets failed with a bare StopIteration traceback."""
    folder = tmp_path / "charts"
    _image(folder / "a.png")
    (folder / "metadata.jsonl").write_text(content)
    with pytest.raises(DataError) as error:
        load_sft_dataset(DataSpec(dataset=str(folder)))
    assert str(error.value).startswith(
        f"{folder / 'metadata.jsonl'}: the file is empty: it has no rows — add one row a line "
        'for the folder\'s images, e.g. {"file_name": "001.png"'
    )
    single = tmp_path / "train.jsonl"
    single.write_text(content)
    with pytest.raises(DataError, match=r"train\.jsonl: the file is empty: it has no rows"):
        load_sft_dataset(DataSpec(dataset=str(single)))


def test_parquet_with_relative_paths(chart_dir):
    path = chart_dir / "train.parquet"
    pd.DataFrame(ROWS).to_parquet(path)
    dataset = load_sft_dataset(DataSpec(dataset=str(path)))
    assert dataset[0]["images"] == [_ref(chart_dir / "images" / "red.png")]
    assert dataset[0]["messages"][1] == _assistant("red")


def test_parquet_with_embedded_image_bytes_is_not_decoded(tmp_path):
    rows = datasets.Dataset.from_dict(
        {
            "image": [Image.new("RGB", (8, 8), (0, 255, 0))],
            "question": ["What colour?"],
            "answer": ["green"],
        }
    )
    assert isinstance(rows.features["image"], datasets.Image)
    path = tmp_path / "embedded.parquet"
    rows.to_parquet(path)
    dataset = load_sft_dataset(DataSpec(dataset=str(path)))
    image = dataset[0]["images"][0]
    assert isinstance(image["bytes"], bytes) and image["bytes"].startswith(b"\x89PNG")
    assert load_image(image).getpixel((4, 4)) == (0, 255, 0)


def test_image_folder_with_metadata_jsonl(tmp_path):
    folder = tmp_path / "charts"
    _image(folder / "a.png", (255, 0, 0))
    _image(folder / "sub" / "b.png", (0, 0, 255))
    _jsonl(
        folder / "metadata.jsonl",
        [
            {"file_name": "a.png", "question": "Colour?", "answer": "red"},
            {"file_name": "sub/b.png", "question": "Colour?", "answer": "blue"},
        ],
    )
    dataset = load_sft_dataset(DataSpec(dataset=str(folder)))
    assert dataset["images"] == [[_ref(folder / "a.png")], [_ref(folder / "sub" / "b.png")]]
    assert dataset["source"] == ["charts/metadata.jsonl:1", "charts/metadata.jsonl:2"]


def test_image_folder_with_split_subfolders(tmp_path):
    folder = tmp_path / "charts"
    for split, colour in (("train", "red"), ("test", "blue")):
        _image(folder / split / "x.png")
        _jsonl(
            folder / split / "metadata.jsonl",
            [{"file_name": "x.png", "question": "?", "answer": colour}],
        )
    test = load_sft_dataset(DataSpec(dataset=str(folder), split="test"))
    assert test[0]["images"] == [_ref(folder / "test" / "x.png")]
    assert test[0]["messages"][1] == _assistant("blue")
    assert test[0]["source"] == "test/metadata.jsonl:1"


def test_saved_dataset_with_image_feature_and_splits(tmp_path):
    def split(colour, answer):
        return datasets.Dataset.from_dict(
            {"image": [Image.new("RGB", (8, 8), colour)], "question": ["?"], "answer": [answer]}
        )

    folder = tmp_path / "saved"
    datasets.DatasetDict(
        {"train": split((255, 0, 0), "red"), "test": split((0, 0, 255), "blue")}
    ).save_to_disk(folder)
    test = load_sft_dataset(DataSpec(dataset=str(folder), split="test"))
    assert test[0]["source"] == "saved:0"  # dataset name and 0-based index
    assert test[0]["messages"][1] == _assistant("blue")
    assert load_image(test[0]["images"][0]).getpixel((1, 1)) == (0, 0, 255)
    with pytest.raises(DataError, match="no split 'validation'; saved has: train, test"):
        load_sft_dataset(DataSpec(dataset=str(folder), split="validation"))


def test_hub_name_offline_is_one_clear_line():
    with pytest.raises(DataError) as error:
        load_sft_dataset(DataSpec(dataset="someone/some-vqa-set"))
    message = str(error.value)
    assert "\n" not in message
    assert "'someone/some-vqa-set'" in message
    assert "Hugging Face Hub is unreachable" in message and "pass a local file" in message


def test_missing_or_unknown_files(tmp_path):
    with pytest.raises(DataError, match="no such file or folder ./nope.jsonl"):
        load_sft_dataset(DataSpec(dataset="./nope.jsonl"))
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(DataError, match=r"unknown file type '\.txt'"):
        load_sft_dataset(DataSpec(dataset=str(notes)))


def test_malformed_jsonl_names_the_file(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(
        '{"image": "a.png", "question": "q", "answer": "a"}\n{"image": "b.png", "question\n'
    )
    with pytest.raises(DataError) as error:
        load_sft_dataset(DataSpec(dataset=str(path)))
    assert "cannot read broken.jsonl" in str(error.value)
    assert "JSON Lines" in str(error.value)


def test_a_dataset_path_that_is_not_a_regular_file_is_refused_unread(tmp_path):
    link = tmp_path / "train.jsonl"
    link.symlink_to("/dev/zero")  # reading it would never end
    with pytest.raises(DataError) as error:
        load_sft_dataset(DataSpec(dataset=str(link)))
    assert f"{link} is not a regular file" in str(error.value)
    assert "no such file" not in str(error.value)


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("rows.jsonl", '{"image": "a.png", "question": "q", "answer": "a"}\n' * 2
         + '{"image": "c.png", "question": "q", "answer": "a",}\n'
         + '{"image": "d.png", "question": "q", "answer": "a"}\n', 3),
        ("rows.jsonl", '{"image": "a.png", "question": "q", "answer": "a"}\n\n'
         + "{'image': 'b.png'}\n", 3),  # a blank line still counts, as in an editor
        ("rows.json", '[\n  {"image": "a.png", "question": "q", "answer": "a"},\n'
         + '  {"image": "b.png", "question": "q" "answer": "a"}\n]\n', 3),
    ],
)  # fmt: skip
def test_invalid_json_names_the_file_and_the_line(tmp_path, name, text, line):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError) as error:
        load_sft_dataset(DataSpec(dataset=str(path)))
    message = str(error.value)
    assert f"cannot read {name}: line {line}: " in message and "\n" not in message


def test_a_single_file_has_only_the_train_split(chart_dir):
    path = _jsonl(chart_dir / "train.jsonl", ROWS)
    with pytest.raises(DataError, match="single file, so it has no split 'test'"):
        load_sft_dataset(DataSpec(dataset=str(path), split="test"))


# --- column mapping and adapters ----------------------------------------------------------


def test_column_mapping_and_system_prompt(chart_dir):
    rows = [{"img": "images/red.png", "prompt_text": "Colour?", "reply": "red", "extra": 1}]
    spec = DataSpec(
        dataset=str(_jsonl(chart_dir / "custom.jsonl", rows)),
        image_column="img",
        question_column="prompt_text",
        answer_column="reply",
        system_prompt="Answer in one word.",
    )
    assert load_sft_dataset(spec)[0]["messages"] == [
        {"role": "system", "content": [_text("Answer in one word.")]},
        _user(IMAGE, _text("Colour?")),
        _assistant("red"),
    ]


def test_instruction_is_the_question_when_there_is_no_question_column(chart_dir):
    rows = [{"image": "images/red.png", "caption": "A red square."}]
    spec = DataSpec(
        dataset=str(_jsonl(chart_dir / "captions.jsonl", rows)),
        answer_column="caption",
        instruction="Describe the image.",
    )
    assert load_sft_dataset(spec)[0]["messages"] == [
        _user(IMAGE, _text("Describe the image.")),
        _assistant("A red square."),
    ]


def test_missing_columns_are_named_with_the_flag_to_set(chart_dir):
    rows = [{"picture": "images/red.png", "caption": "A red square."}]
    with pytest.raises(DataError) as error:
        load_sft_dataset(DataSpec(dataset=str(_jsonl(chart_dir / "c.jsonl", rows))))
    message = str(error.value)
    assert "no column 'image' (--image-column)" in message
    assert "no column 'question' (--question-column)" in message
    assert "no column 'answer' (--answer-column)" in message
    assert "the columns are: picture, caption" in message
    assert "--instruction" in message


def test_instruction_and_question_column_contradict(chart_dir):
    spec = DataSpec(
        dataset=str(_jsonl(chart_dir / "t.jsonl", ROWS)),
        question_column="question",
        instruction="x",
    )
    with pytest.raises(ConfigError, match="--instruction"):
        load_sft_dataset(spec)


def test_adapters_are_chosen_by_dataset_name():
    assert column_layout_for(DataSpec(dataset="HuggingFaceM4/ChartQA")) is COLUMN_LAYOUTS["chartqa"]
    assert column_layout_for(DataSpec(dataset="unsloth/LaTeX_OCR")) is COLUMN_LAYOUTS["latex_ocr"]
    assert (
        column_layout_for(DataSpec(dataset="openbmb/RLAIF-V-Dataset")) is COLUMN_LAYOUTS["rlaif_v"]
    )
    assert column_layout_for(DataSpec(dataset="/data/copies/ChartQA/")) is COLUMN_LAYOUTS["chartqa"]
    assert column_layout_for(DataSpec(dataset="someone/vqa")) is COLUMN_LAYOUTS["none"]
    assert column_layout_for(DataSpec(dataset="ChartQA", layout="none")) is COLUMN_LAYOUTS["none"]


def test_chartqa_layout_takes_the_first_label(tmp_path):
    folder = tmp_path / "ChartQA"  # a saved copy, recognised by its name
    datasets.Dataset.from_dict(
        {
            "image": [Image.new("RGB", (8, 8), (9, 9, 9))],
            "query": ["What is the peak value?"],
            "label": [["42", "42.0"]],
            "human_or_machine": [0],
        }
    ).save_to_disk(folder)
    record = load_sft_dataset(DataSpec(dataset=str(folder)))[0]
    assert record["messages"] == [_user(IMAGE, _text("What is the peak value?")), _assistant("42")]
    assert record["images"][0]["bytes"].startswith(b"\x89PNG")


def test_chartqa_adapter_named_explicitly_on_a_file(chart_dir):
    rows = [{"image": "images/red.png", "query": "Peak?", "label": ["7", "seven"]}]
    spec = DataSpec(dataset=str(_jsonl(chart_dir / "charts.jsonl", rows)), layout="chartqa")
    assert load_sft_dataset(spec)[0]["messages"] == [_user(IMAGE, _text("Peak?")), _assistant("7")]


def test_local_copy_of_a_hub_dataset_folder(tmp_path):
    # What `hf download HuggingFaceM4/ChartQA --local-dir ChartQA` leaves: parquet shards.
    folder = tmp_path / "ChartQA"
    (folder / "data").mkdir(parents=True)
    rows = datasets.Dataset.from_dict(
        {
            "image": [Image.new("RGB", (8, 8), (0, 0, 200))] * 2,
            "query": ["Peak?", "Lowest?"],
            "label": [["12"], ["3"]],
        }
    )
    rows.to_parquet(folder / "data" / "train-00000-of-00001.parquet")
    rows.select([1]).to_parquet(folder / "data" / "test-00000-of-00001.parquet")
    test = load_sft_dataset(DataSpec(dataset=str(folder), split="test"))
    assert len(test) == 1
    assert test[0]["messages"] == [_user(IMAGE, _text("Lowest?")), _assistant("3")]
    assert test[0]["source"] == "ChartQA:0"
    assert load_image(test[0]["images"][0]).getpixel((0, 0)) == (0, 0, 200)


def test_latex_ocr_layout_uses_the_fixed_instruction(tmp_path):
    folder = tmp_path / "LaTeX_OCR"
    datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (8, 8))], "text": [r"\frac{a}{b}"]}
    ).save_to_disk(folder)
    record = load_sft_dataset(DataSpec(dataset=str(folder)))[0]
    assert record["messages"] == [
        _user(IMAGE, _text("Write the LaTeX representation for this image.")),
        _assistant(r"\frac{a}{b}"),
    ]


# --- conversation layouts ----------------------------------------------------------------------


def test_messages_with_typed_parts_multi_turn_and_multi_image(chart_dir):
    row = {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {
                "role": "user",
                "content": [
                    {"type": "image"},
                    {"type": "image"},
                    {"type": "text", "text": "Same colour?"},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "No."}]},
            {"role": "user", "content": "Which is red?"},
            {"role": "assistant", "content": "The first."},
        ],
        "images": ["images/red.png", "images/blue.png"],
    }
    record = load_sft_dataset(DataSpec(dataset=str(_jsonl(chart_dir / "chat.jsonl", [row]))))[0]
    assert record["messages"] == [
        {"role": "system", "content": [_text("Be brief.")]},
        _user(IMAGE, IMAGE, _text("Same colour?")),
        _assistant("No."),
        _user(_text("Which is red?")),
        _assistant("The first."),
    ]
    assert record["images"] == [
        _ref(chart_dir / "images" / "red.png"),
        _ref(chart_dir / "images" / "blue.png"),
    ]
    assert record_problem(record) is None


def test_messages_with_inline_image_paths(chart_dir):
    row = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": "images/blue.png"},
                    {"type": "text", "text": "Colour?"},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "blue"}]},
        ]
    }
    record = load_sft_dataset(DataSpec(dataset=str(_jsonl(chart_dir / "inline.jsonl", [row]))))[0]
    assert record["images"] == [_ref(chart_dir / "images" / "blue.png")]
    assert record["messages"][0] == _user(IMAGE, _text("Colour?"))


def test_llava_conversations_with_image_placeholders(chart_dir):
    row = {
        "id": "0001",
        "image": "images/red.png",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is this?"},
            {"from": "gpt", "value": "Red."},
            {"from": "human", "value": "Are you sure?"},
            {"from": "gpt", "value": "Yes."},
        ],
    }
    record = load_sft_dataset(DataSpec(dataset=str(_jsonl(chart_dir / "llava.jsonl", [row]))))[0]
    assert record["messages"] == [
        _user(IMAGE, _text("What colour is this?")),
        _assistant("Red."),
        _user(_text("Are you sure?")),
        _assistant("Yes."),
    ]
    assert record["images"] == [_ref(chart_dir / "images" / "red.png")]


def test_sharegpt_multi_image_with_system(chart_dir):
    row = {
        "conversations": [
            {"from": "system", "value": "You compare images."},
            {"from": "human", "value": "Left: <image> right: <image> Same?"},
            {"from": "gpt", "value": "No."},
        ],
        "images": ["images/red.png", "images/blue.png"],
    }
    record = load_sft_dataset(DataSpec(dataset=str(_jsonl(chart_dir / "sharegpt.jsonl", [row]))))[0]
    assert record["messages"] == [
        {"role": "system", "content": [_text("You compare images.")]},
        _user(_text("Left:"), IMAGE, _text("right:"), IMAGE, _text("Same?")),
        _assistant("No."),
    ]
    assert len(record["images"]) == 2


def test_split_image_placeholders():
    assert split_image_placeholders("<image>\nWhat?") == [IMAGE, _text("What?")]
    assert split_image_placeholders("no image") == [_text("no image")]
    assert split_image_placeholders("<image><image>") == [IMAGE, IMAGE]


def test_table_with_a_list_of_images_and_an_empty_image_cell(chart_dir):
    rows = [
        {
            "image": ["images/red.png", "images/blue.png"],
            "question": "Compare.",
            "answer": "Different.",
        },
        {"image": None, "question": "Colour?", "answer": "red"},
    ]
    dataset = load_sft_dataset(DataSpec(dataset=str(_jsonl(chart_dir / "multi.jsonl", rows))))
    assert dataset[0]["messages"][0] == _user(IMAGE, IMAGE, _text("Compare."))
    assert len(dataset[0]["images"]) == 2
    # An empty cell is a missing image (rejected at validation), not a text-only row.
    assert dataset[1]["images"] == [{"bytes": None, "path": None}]
    assert dataset[1]["messages"][0] == _user(IMAGE, _text("Colour?"))


def test_text_only_rows_in_a_table_and_in_messages(chart_dir):
    """Text-only examples mixed into image data (to keep the model's text skills): a table's
    empty image cell (JSONL null, CSV empty) with --text-only-rows; a messages row with no image
    part, always."""
    rows = [
        {"image": "images/red.png", "question": "Colour?", "answer": "red"},
        {"image": None, "question": "Name a fruit.", "answer": "a plum"},
    ]
    table = _jsonl(chart_dir / "mixed.jsonl", rows)
    spreadsheet = chart_dir / "mixed.csv"
    spreadsheet.write_text(
        "image,question,answer\nimages/red.png,Colour?,red\n,Name a fruit.,a plum\n"
    )
    for path in (table, spreadsheet):
        dataset = load_sft_dataset(DataSpec(dataset=str(path), text_only_rows=True))
        assert len(dataset[0]["images"]) == 1
        assert dataset[1]["images"] == []
        assert dataset[1]["messages"] == [_user(_text("Name a fruit.")), _assistant("a plum")]
        assert record_problem(dataset[1]) is None
        # Without the flag the empty cell is still a missing image, which names the flag.
        missing = load_sft_dataset(DataSpec(dataset=str(path)))[1]["images"][0]
        with pytest.raises(ImageError, match="--text-only-rows"):
            load_image(missing, where=f"{path.name}:2")
    with_image = [_user(IMAGE, _text("Colour?")), _assistant("red")]
    messages = [
        {"messages": with_image, "images": ["images/red.png"]},
        {"messages": [_user(_text("Name a fruit.")), _assistant("a plum")]},
    ]
    dataset = load_sft_dataset(
        DataSpec(dataset=str(_jsonl(chart_dir / "messages.jsonl", messages)))
    )
    assert len(dataset[0]["images"]) == 1 and dataset[1]["images"] == []
    assert record_problem(dataset[1]) is None


# --- preference data ----------------------------------------------------------------------------


PREFERENCE_ROWS = [
    {"image": "images/red.png", "question": "Colour?", "chosen": "red", "rejected": "blue"}
]


def test_preference_table_becomes_trl_vision_dpo_records(chart_dir):
    spec = DataSpec(
        dataset=str(_jsonl(chart_dir / "dpo.jsonl", PREFERENCE_ROWS)), system_prompt="Be brief."
    )
    dataset = load_preference_dataset(spec)
    assert dataset.features == PREFERENCE_FEATURES
    assert dataset[0] == {
        "prompt": [
            {"role": "system", "content": [_text("Be brief.")]},
            _user(IMAGE, _text("Colour?")),
        ],
        "chosen": [_assistant("red")],
        "rejected": [_assistant("blue")],
        "images": [_ref(chart_dir / "images" / "red.png")],
        "source": "dpo.jsonl:1",
    }
    assert record_problem(dataset[0]) is None


def test_preference_columns_are_mappable(chart_dir):
    rows = [{"picture": "images/red.png", "ask": "Colour?", "good": "red", "bad": "green"}]
    spec = DataSpec(
        dataset=str(_jsonl(chart_dir / "dpo.jsonl", rows)),
        image_column="picture",
        question_column="ask",
        chosen_column="good",
        rejected_column="bad",
    )
    record = load_preference_dataset(spec)[0]
    assert (record["chosen"], record["rejected"]) == ([_assistant("red")], [_assistant("green")])
    with pytest.raises(DataError, match=r"no column 'chosen' \(--chosen-column\)"):
        load_preference_dataset(
            DataSpec(dataset=spec.dataset, image_column="picture", question_column="ask")
        )


def test_rlaif_v_layout(tmp_path):
    folder = tmp_path / "RLAIF-V-Dataset"
    datasets.Dataset.from_dict(
        {
            "ds_name": ["x"],
            "image": [Image.new("RGB", (8, 8))],
            "question": ["What is shown?"],
            "chosen": ["A black square."],
            "rejected": ["A cat."],
            "origin_dataset": ["y"],
        }
    ).save_to_disk(folder)
    record = load_preference_dataset(DataSpec(dataset=str(folder)))[0]
    assert record["prompt"] == [_user(IMAGE, _text("What is shown?"))]
    assert record["chosen"] == [_assistant("A black square.")]
    assert record["rejected"] == [_assistant("A cat.")]
    assert record["images"][0]["bytes"] is not None


def test_trl_conversational_preference_rows(chart_dir):
    row = {
        "images": ["images/red.png"],
        "prompt": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}
        ],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "red"}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "blue"}]}],
    }
    record = load_preference_dataset(
        DataSpec(dataset=str(_jsonl(chart_dir / "trl.jsonl", [row])), image_column="images")
    )[0]
    assert record["prompt"] == [_user(IMAGE, _text("Colour?"))]
    assert record["chosen"] == [_assistant("red")]
    assert record["images"] == [_ref(chart_dir / "images" / "red.png")]


# --- conversation checks -------------------------------------------------------------------------


def _record(messages, n_images=1):
    return {
        "messages": messages,
        "images": [{"bytes": None, "path": "x.png"}] * n_images,
        "source": "t.jsonl:4",
    }


ASK = _user(IMAGE, _text("q"))
SYSTEM = {"role": "system", "content": [_text("s")]}
PROBLEMS = [
    ([], 0, "bad_roles", "conversation has no messages"),
    ([ASK, _user(_text("q"))], 1, "bad_roles", "message 1 has role 'user', expected 'assistant'"),
    ([_assistant("a")], 0, "bad_roles", "message 0 has role 'assistant', expected 'user'"),
    ([ASK], 1, "bad_roles", "conversation ends with a user message, not assistant"),
    ([SYSTEM], 0, "bad_roles", "only a system message"),
    ([ASK, _assistant("  ")], 1, "empty_answer", "message 1 (assistant) is empty"),
    ([_user(_text(" ")), _assistant("a")], 0, "empty_question", "message 0 (user) has neither"),
    (
        [_user(IMAGE, IMAGE, _text("q")), _assistant("a")],
        1,
        "image_count_mismatch",
        "2 image placeholder(s) in the messages but 1 image(s)",
    ),
    ([_user(_text("q")), _assistant("a")], 1, "image_count_mismatch", "0 image placeholder(s)"),
    (
        [_user(_text("q")), {"role": "assistant", "content": [IMAGE, _text("a")]}],
        1,
        "bad_roles",
        "message 1 (assistant) holds an image",
    ),
    ([ASK, {"role": "robot", "content": [_text("a")]}], 1, "bad_roles", "role 'robot'"),
]


@pytest.mark.parametrize(("messages", "n_images", "reason", "message"), PROBLEMS)
def test_record_problems_name_the_reason_and_message_index(messages, n_images, reason, message):
    problem = record_problem(_record(messages, n_images))
    assert problem is not None
    assert problem[0] == reason
    assert message in problem[1]


def test_good_records_have_no_problem():
    assert record_problem(_record([_user(IMAGE, _text("q")), _assistant("a")])) is None
    text_only = _record(
        [_user(_text("q")), _assistant("a"), _user(_text("q2")), _assistant("b")], 0
    )
    assert record_problem(text_only) is None


def test_check_record_raises_with_the_row():
    with pytest.raises(DataError, match=r"^t\.jsonl:4: message 1 \(assistant\) is empty"):
        check_record(_record([_user(IMAGE, _text("q")), _assistant("")]))


def test_preference_problems():
    record = {
        "prompt": [_user(IMAGE, _text("q"))],
        "chosen": [_assistant("a")],
        "rejected": [_assistant("")],
        "images": [{"bytes": None, "path": "x.png"}],
        "source": "d.jsonl:1",
    }
    assert record_problem(record) == ("empty_answer", "rejected answer is empty")
    assert (
        record_problem({**record, "rejected": [_assistant("b")], "images": []})[0]
        == "image_count_mismatch"
    )
    assert (
        record_problem({**record, "prompt": [_user(_text("q")), _assistant("x")]})[0] == "bad_roles"
    )


# --- splits, specs ----------------------------------------------------------------------------


def test_eval_fraction_is_deterministic_with_the_seed():
    dataset = datasets.Dataset.from_dict({"source": [f"t.jsonl:{i}" for i in range(1, 101)]})
    train, evaluation = split_dataset(dataset, eval_fraction=0.1, seed=7)
    assert (len(train), len(evaluation)) == (90, 10)
    assert set(train["source"]).isdisjoint(evaluation["source"])
    again = split_dataset(dataset, eval_fraction=0.1, seed=7)[1]
    other = split_dataset(dataset, eval_fraction=0.1, seed=8)[1]
    assert again["source"] == evaluation["source"]
    assert other["source"] != evaluation["source"]
    assert split_dataset(dataset, seed=7) == (dataset, None)


def test_eval_fraction_that_empties_a_side_is_refused():
    dataset = datasets.Dataset.from_dict({"source": ["a", "b", "c"]})
    with pytest.raises(ConfigError, match="leaves 0 eval"):
        split_dataset(dataset, eval_fraction=0.1, seed=0)
    with pytest.raises(ConfigError, match="contradict"):
        split_dataset(dataset, eval_fraction=0.5, eval_split="test", seed=0)


def test_named_eval_split(tmp_path):
    splits = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"source": ["a", "b"]}),
            "test": datasets.Dataset.from_dict({"source": ["c"]}),
        }
    )
    train, evaluation = split_dataset(splits, eval_split="test", seed=0)
    assert (train["source"], evaluation["source"]) == (["a", "b"], ["c"])
    with pytest.raises(DataError, match="no split 'dev'; the dataset has: train, test"):
        split_dataset(splits, eval_split="dev", seed=0)
    # A single loaded split: the eval split is loaded with the same spec and loader.
    folder = tmp_path / "saved"
    splits.save_to_disk(folder)
    loaded = []
    _, evaluation = split_dataset(
        splits["train"],
        eval_split="test",
        seed=0,
        spec=DataSpec(dataset=str(folder)),
        loader=lambda spec: (
            loaded.append(spec) or datasets.load_from_disk(spec.dataset)[spec.split]
        ),
    )
    assert loaded[0].split == "test" and evaluation["source"] == ["c"]


def test_data_spec_from_cli_args():
    args = DataArgs(
        dataset="x.jsonl", image_column="img", instruction="Describe.", system_prompt="S"
    )
    spec = data_spec(args, "other.jsonl", split="test")
    assert spec == DataSpec(
        dataset="other.jsonl",
        split="test",
        image_column="img",
        instruction="Describe.",
        system_prompt="S",
    )
    assert data_spec(args).dataset == "x.jsonl"


# --- scale --------------------------------------------------------------------------------------


def test_loading_5000_rows_keeps_memory_flat(tmp_path):
    # Each row points at a 256x256 image: decoding them all would hold 5,000 x 196 KB = 983 MB.
    folder = tmp_path / "big"
    Image.effect_noise((256, 256), 64).convert("RGB").save(_image(folder / "images" / "p.png"))
    rows = [
        {"image": "images/p.png", "question": f"Question {i}?", "answer": str(i)}
        for i in range(5000)
    ]
    path = _jsonl(folder / "train.jsonl", rows)
    load_sft_dataset(DataSpec(dataset=str(_jsonl(folder / "warmup.jsonl", rows[:3]))))  # imports
    gc.collect()
    process = psutil.Process()
    before = process.memory_info().rss
    dataset = load_sft_dataset(DataSpec(dataset=str(path)))
    seen = 0
    for record in dataset:
        assert record["images"] == [{"bytes": None, "path": str(folder / "images" / "p.png")}]
        seen += 1
    growth = process.memory_info().rss - before
    assert seen == 5000
    assert growth < 150 * 2**20, f"RSS grew by {growth / 2**20:.0f} MB"


def test_the_shipped_demo_set_loads_into_valid_records():
    dataset = load_sft_dataset(DataSpec(dataset=str(DEMO_TRAIN)))
    assert len(dataset) > 0
    assert all(record_problem(record) is None for record in dataset)
    assert all(Path(record["images"][0]["path"]).is_file() for record in dataset)
