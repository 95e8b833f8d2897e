"""Validation pass on real broken files, with the tiny checkpoints' real processors.

python3 -m pytest tests/test_validation.py -q
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_MODELS, must_not_be_called
from PIL import Image
from rich.console import Console

from vlm_unsloth.data.images import cap_longest_side, load_image
from vlm_unsloth.data.loaders import DataSpec, load_preference_dataset, load_sft_dataset
from vlm_unsloth.data.records import to_chat_template_messages
from vlm_unsloth.data.validation import (
    count_tokens,
    print_report,
    print_token_histogram,
    validate_dataset,
    write_rejected,
)
from vlm_unsloth.errors import DataError
from vlm_unsloth.families import TINY_MODEL_NAMES

TINY_NAMES = tuple(TINY_MODELS)
QWEN = TINY_MODEL_NAMES["tiny-qwen2-vl"]
MLLAMA = TINY_MODEL_NAMES["tiny-llama-3.2-vision"]


def _text(text):
    return {"type": "text", "text": text}


IMAGE = {"type": "image", "text": None}


def _image(path: Path, size=(64, 48), colour=(200, 40, 40), mode="RGB", **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, **save)
    return path


def _processor_length(processor, messages, images, family=QWEN) -> int:
    """input_ids of the conversation, from the processor called as every collator calls it."""
    from vlm_unsloth.data.collate import images_argument

    text = processor.apply_chat_template(to_chat_template_messages(messages), tokenize=False)
    batch = processor(
        text=[text], images=images_argument([images], family), add_special_tokens=False
    )
    return len(batch["input_ids"][0])


CONVERSATIONS = [
    # (messages, image sizes)
    ([{"role": "user", "content": [IMAGE, _text("What colour is the bar?")]},
      {"role": "assistant", "content": [_text("red")]}], [(300, 200)]),
    ([{"role": "system", "content": [_text("You are a helpful assistant.")]},
      {"role": "user", "content": [IMAGE, IMAGE, _text("Compare the charts.")]},
      {"role": "assistant", "content": [_text("The left one is taller.")]},
      {"role": "user", "content": [_text("By how much?")]},
      {"role": "assistant", "content": [_text("10")]}], [(1000, 1000), (40, 900)]),
    ([{"role": "user", "content": [_text("No image here.")]},
      {"role": "assistant", "content": [_text("yes")]}], []),
    ([{"role": "user", "content": [IMAGE, _text("Describe.")]},
      {"role": "assistant", "content": [_text("A wide strip.")]}], [(4000, 300)]),
]  # fmt: skip


@pytest.mark.parametrize("name", TINY_NAMES)
@pytest.mark.parametrize("max_side", [768, 256])
def test_count_tokens_equals_the_processors_input_ids(tiny_processor, name, max_side):
    processor = tiny_processor(name)
    family = TINY_MODEL_NAMES[name]
    for messages, sizes in CONVERSATIONS:
        images = [load_image(Image.new("RGB", size, "white"), max_side=max_side) for size in sizes]
        capped = [cap_longest_side(*size, max_side) for size in sizes]
        assert [image.size for image in images] == capped
        count = count_tokens(messages, capped, family=family, processor=processor)
        assert count.total == _processor_length(processor, messages, images, family), (name, sizes)
        # The text part: the rendered template alone, one placeholder per image.
        text = processor.apply_chat_template(to_chat_template_messages(messages), tokenize=False)
        assert count.text == len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
        if family is MLLAMA:
            assert count.image == 0  # one <|image|> token per image, already in the text
        elif sizes:
            assert count.image > 0


# --- a dataset with every kind of bad row, made for real --------------------------------------


def _row(images, question="What colour is it?", answer="red", **extra):
    content = [{"type": "image"}] * len(images) + [{"type": "text", "text": question}]
    return {
        "messages": [
            {"role": "user", "content": content},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
        "images": images,
        **extra,
    }


@pytest.fixture
def messy_dataset(tmp_path) -> Path:
    folder = tmp_path / "messy"
    images = folder / "images"
    _image(images / "small.png")
    _image(images / "large.png", size=(1000, 800))
    _image(images / "huge.png", size=(1000, 1000))
    _image(images / "cmyk.jpg", mode="CMYK", colour=(0, 255, 255, 0))
    _image(images / "strip.png", size=(10, 3000))
    _image(images / "speck.png", size=(20, 20))
    whole = _image(images / "whole.jpg", size=(300, 300), format="JPEG").read_bytes()
    (images / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (images / "empty.png").write_bytes(b"")
    (images / "page.jpg").write_text("<html><body>Not found</body></html>")
    rows = [
        _row(["images/small.png"]),  # 1 kept
        _row(["images/large.png"]),  # 2 kept, resized 1000x800 -> 768x614
        _row(["images/missing.png"]),  # 3 missing_file
        _row(["images/truncated.jpg"]),  # 4 unreadable_image
        _row(["images/empty.png"]),  # 5 unreadable_image
        _row(["images/page.jpg"]),  # 6 unreadable_image
        _row(["images/strip.png"]),  # 7 bad_aspect_ratio
        _row(["images/speck.png"]),  # 8 image_too_small
        _row(["images/small.png"], answer=" "),  # 9 empty_answer
        {**_row(["images/small.png"]), "images": ["images/small.png", "images/small.png"]},  # 10
        {"messages": [{"role": "assistant", "content": [_text("hi")]}], "images": []},  # 11
        _row(["images/huge.png"]),  # 12 too_long: 729 image tokens
        _row(["images/cmyk.jpg"]),  # 13 kept
    ]  # fmt: skip
    path = folder / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


EXPECTED_REASONS = {
    "unreadable_image": 3,
    "missing_file": 1,
    "bad_aspect_ratio": 1,
    "image_too_small": 1,
    "empty_answer": 1,
    "image_count_mismatch": 1,
    "bad_roles": 1,
    "too_long": 1,
}


def test_validation_rejects_each_bad_row_with_its_reason(tiny_processor, messy_dataset, tmp_path):
    processor = tiny_processor("tiny-qwen2-vl")
    dataset = load_sft_dataset(DataSpec(dataset=str(messy_dataset)))
    report = validate_dataset(
        dataset, family=QWEN, processor=processor, max_side=768, max_seq_length=700
    )
    assert report.rows_read == 13
    assert report.kept_count == 3 and report.rejected_count == 10
    assert report.rejected_by_reason() == EXPECTED_REASONS
    assert {row.source: row.reason for row in report.rejected} == {
        "rows.jsonl:3": "missing_file",
        "rows.jsonl:4": "unreadable_image",
        "rows.jsonl:5": "unreadable_image",
        "rows.jsonl:6": "unreadable_image",
        "rows.jsonl:7": "bad_aspect_ratio",
        "rows.jsonl:8": "image_too_small",
        "rows.jsonl:9": "empty_answer",
        "rows.jsonl:10": "image_count_mismatch",
        "rows.jsonl:11": "bad_roles",
        "rows.jsonl:12": "too_long",
    }
    assert report.resized == 1  # large.png; huge.png was larger too, but it was rejected
    kept = report.kept
    assert kept["source"] == ["rows.jsonl:1", "rows.jsonl:2", "rows.jsonl:13"]
    assert kept["max_side"] == [768, 768, 768]
    # Per-row token counts are exactly what the processor produces for the capped images.
    for record, tokens in zip(kept, report.token_counts, strict=True):
        images = [load_image(ref, max_side=record["max_side"]) for ref in record["images"]]
        assert (
            tokens
            == record["num_tokens"]
            == _processor_length(processor, record["messages"], images)
        )
    assert report.token_stats() == {
        "min": min(report.token_counts),
        "median": int(np.median(report.token_counts)),
        "p95": int(np.percentile(report.token_counts, 95)),
        "max": max(report.token_counts),
    }
    again = validate_dataset(kept, family=QWEN, processor=processor, max_seq_length=700)
    assert again.token_counts == report.token_counts and again.rejected == []
    assert again.kept.column_names == kept.column_names
    too_long = next(row for row in report.rejected if row.reason == "too_long")
    assert "over max_seq_length 700" in too_long.message and "--fit-images" in too_long.message
    mismatch = next(row for row in report.rejected if row.reason == "image_count_mismatch")
    assert mismatch.message == "1 image placeholder(s) in the messages but 2 image(s) in the row"


def test_rejected_rows_jsonl_and_the_report_table(tiny_processor, messy_dataset, tmp_path):
    dataset = load_sft_dataset(DataSpec(dataset=str(messy_dataset)))
    report = validate_dataset(
        dataset, family=QWEN, processor=tiny_processor("tiny-qwen2-vl"), max_seq_length=700
    )
    path = write_rejected(report, tmp_path / "out" / "rejected.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 10
    assert lines[0]["source"] == "rows.jsonl:3" and lines[0]["reason"] == "missing_file"
    assert "missing.png does not exist" in lines[0]["message"]
    assert set(lines[0]) == {"source", "reason", "message"}
    console = Console(record=True, width=200)
    print_report(report, console)
    print_token_histogram(report.token_counts, console)
    text = console.export_text()
    assert "│ read" in text and "13 │" in text
    assert "rejected: unreadable_image" in text and "│     3 │" in text
    for reason in EXPECTED_REASONS:
        assert f"rejected: {reason}" in text
    assert "p95" in text and "rows.jsonl:3" in text


def test_a_multi_frame_gif_is_kept_and_the_report_says_only_its_first_frame_is_used(
    tiny_processor, tmp_path
):
    frames = [Image.new("RGB", (64, 48), colour) for colour in ("red", "blue")]
    frames[0].save(tmp_path / "blink.gif", save_all=True, append_images=frames[1:], duration=50)
    _image(tmp_path / "still.png")
    rows = [_row(["blink.gif"]), _row(["still.png"])]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset = load_sft_dataset(DataSpec(dataset=str(tmp_path / "rows.jsonl")))
    report = validate_dataset(
        dataset, family=QWEN, processor=tiny_processor("tiny-qwen2-vl"), max_seq_length=700
    )
    assert report.kept_count == 2 and report.multi_frame == 1
    console = Console(record=True, width=200)
    print_report(report, console)
    assert "multi-frame images (first frame used)" in console.export_text()


def test_strict_raises_with_counts_and_first_rows(tiny_processor, messy_dataset):
    dataset = load_sft_dataset(DataSpec(dataset=str(messy_dataset)))
    with pytest.raises(DataError) as error:
        validate_dataset(
            dataset,
            family=QWEN,
            processor=tiny_processor("tiny-qwen2-vl"),
            max_seq_length=700,
            strict=True,
        )
    message = str(error.value)
    assert "\n" not in message
    assert "10 of 13 rows rejected (unreadable_image: 3, missing_file: 1," in message
    assert "rows.jsonl:3 missing_file" in message and "rows.jsonl:4 unreadable_image" in message


def test_fit_images_shrinks_a_too_long_row_until_it_fits(tiny_processor, tmp_path):
    processor = tiny_processor("tiny-qwen2-vl")
    _image(tmp_path / "huge.png", size=(1000, 1000))
    path = tmp_path / "rows.jsonl"
    path.write_text(
        json.dumps({"image": "huge.png", "question": "Colour?", "answer": "red"}) + "\n"
    )
    dataset = load_sft_dataset(DataSpec(dataset=str(path)))
    strict_limit = validate_dataset(dataset, family=QWEN, processor=processor, max_seq_length=400)
    assert strict_limit.rejected_by_reason() == {"too_long": 1}
    report = validate_dataset(
        dataset, family=QWEN, processor=processor, max_seq_length=400, fit_images=True
    )
    assert report.kept_count == 1 and report.fitted == 1
    record = report.kept[0]
    assert record["max_side"] < 768
    assert record["num_tokens"] <= 400
    # The collator loads the image at the row's own cap; the processor agrees with the count.
    image = load_image(record["images"][0], max_side=record["max_side"])
    assert image.size == cap_longest_side(1000, 1000, record["max_side"])
    assert _processor_length(processor, record["messages"], [image]) == record["num_tokens"]
    # The largest cap that fits was taken: 10% larger would not have fitted.
    larger = cap_longest_side(1000, 1000, int(record["max_side"] / 0.9) + 1)
    assert count_tokens(record["messages"], [larger], family=QWEN, processor=processor).total > 400


def test_mllama_text_is_the_only_length_so_fit_images_cannot_help(tiny_processor, tmp_path):
    _image(tmp_path / "a.png", size=(900, 600))
    path = tmp_path / "rows.jsonl"
    rows = [
        {"image": "a.png", "question": "Colour?", "answer": "red"},
        {"image": "a.png", "question": "Colour? " * 40, "answer": "red"},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset = load_sft_dataset(DataSpec(dataset=str(path)))
    processor = tiny_processor("tiny-llama-3.2-vision")
    report = validate_dataset(
        dataset, family=MLLAMA, processor=processor, max_seq_length=60, fit_images=True
    )
    assert report.kept["source"] == ["rows.jsonl:1"]
    assert report.rejected_by_reason() == {"too_long": 1}
    assert report.kept[0]["max_side"] == 768 and report.fitted == 0


@pytest.mark.parametrize("name", TINY_NAMES)
def test_text_only_rows_are_kept_where_the_family_batches_them_with_images(
    name, tiny_processor, tmp_path
):
    _image(tmp_path / "a.png", size=(90, 60))
    path = tmp_path / "rows.jsonl"
    rows = [
        {"image": "a.png", "question": "Colour?", "answer": "red"},
        {"image": None, "question": "Name a fruit.", "answer": "a plum"},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset = load_sft_dataset(DataSpec(dataset=str(path), text_only_rows=True))
    family = TINY_MODEL_NAMES[name]
    report = validate_dataset(
        dataset, family=family, processor=tiny_processor(name), max_seq_length=4096
    )
    if family.mixes_text_only_rows:
        assert report.kept["source"] == ["rows.jsonl:1", "rows.jsonl:2"]
        text_only = report.kept[1]
        expected = _processor_length(tiny_processor(name), text_only["messages"], [], family)
        assert text_only["num_tokens"] == expected  # counted as the collator will see it
    else:  # Mllama's processor refuses a batch mixing image rows and text-only rows
        assert report.rejected_by_reason() == {"text_only_row": 1}
        assert report.rejected[0].source == "rows.jsonl:2"
        assert "cannot batch rows without an image" in report.rejected[0].message


@pytest.mark.parametrize("name", TINY_NAMES)
def test_rows_with_audio_are_refused_for_every_family(name, tiny_processor, tmp_path):
    """Gemma 3n's and Gemma 4's processors take audio, but only the image path is trained: a row
    with an audio field or an audio part is rejected, naming the row and the message."""
    _image(tmp_path / "a.png")
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}
    answer = {"role": "assistant", "content": "red"}
    heard = {"type": "audio", "audio": "clip.wav"}
    rows = [
        {"image": "a.png", "question": "Colour?", "answer": "red"},
        {"image": "a.png", "question": "What is said?", "answer": "hi", "audio": "clip.wav"},
        {"messages": [user, answer], "images": ["a.png"]},
        {"messages": [{**user, "content": [heard, *user["content"]]}, answer], "images": ["a.png"]},
    ]
    family, processor = TINY_MODEL_NAMES[name], tiny_processor(name)
    reports = []
    for index, pair in enumerate((rows[:2], rows[2:])):
        path = tmp_path / f"rows{index}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in pair))
        dataset = load_sft_dataset(DataSpec(dataset=str(path)))
        reports.append(
            validate_dataset(dataset, family=family, processor=processor, max_seq_length=4096)
        )
    for index, report in enumerate(reports):
        assert report.kept["source"] == [f"rows{index}.jsonl:1"]
        assert [(row.source, row.reason) for row in report.rejected] == [
            (f"rows{index}.jsonl:2", "audio")
        ]
        assert report.rejected[0].message.startswith("message 0 (user) holds audio")

    path = tmp_path / "dpo.jsonl"
    row = {"image": "a.png", "question": "Said?", "chosen": "hi", "rejected": "no", "audios": ["x"]}
    path.write_text(json.dumps(row) + "\n")
    report = validate_dataset(
        load_preference_dataset(DataSpec(dataset=str(path))),
        family=family, processor=processor, max_seq_length=4096,
    )  # fmt: skip
    assert [(row.source, row.reason) for row in report.rejected] == [("dpo.jsonl:1", "audio")]


def test_preference_rows_count_the_longer_answer(tiny_processor, tmp_path):
    processor = tiny_processor("tiny-qwen2.5-vl")
    family = TINY_MODEL_NAMES["tiny-qwen2.5-vl"]
    _image(tmp_path / "a.png", size=(300, 200))
    rows = [
        {"image": "a.png", "question": "Colour?", "chosen": "red", "rejected": "blue " * 30},
        {"image": "a.png", "question": "Colour?", "chosen": "", "rejected": "blue"},
    ]
    path = tmp_path / "dpo.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset = load_preference_dataset(DataSpec(dataset=str(path)))
    report = validate_dataset(dataset, family=family, processor=processor, max_seq_length=1000)
    assert report.rejected_by_reason() == {"empty_answer": 1}
    record = report.kept[0]
    image = load_image(record["images"][0])
    longer = _processor_length(processor, record["prompt"] + record["rejected"], [image])
    shorter = _processor_length(processor, record["prompt"] + record["chosen"], [image])
    assert record["num_tokens"] == longer > shorter


def test_a_preference_pair_with_the_same_answers_is_rejected(tiny_processor, tmp_path):
    """DPO learns nothing from a pair whose answers are the same text (a zero gradient): such a
    pair is rejected like an empty answer, whitespace around the answers aside."""
    _image(tmp_path / "a.png")
    rows = [
        {"image": "a.png", "question": "Colour?", "chosen": "red", "rejected": "red"},
        {"image": "a.png", "question": "Colour?", "chosen": " red\n", "rejected": "red"},
        {"image": "a.png", "question": "Colour?", "chosen": "Red", "rejected": "red."},  # form
    ]
    path = tmp_path / "dpo.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset = load_preference_dataset(DataSpec(dataset=str(path)))
    report = validate_dataset(
        dataset,
        family=TINY_MODEL_NAMES["tiny-qwen2.5-vl"],
        processor=tiny_processor("tiny-qwen2.5-vl"),
        max_seq_length=1000,
    )
    assert [(row.source, row.reason) for row in report.rejected] == [
        ("dpo.jsonl:1", "same_answers"),
        ("dpo.jsonl:2", "same_answers"),
    ]
    assert report.rejected[0].message == (
        "chosen and rejected answers are the same text ('red'): the pair teaches nothing"
    )
    assert report.kept["source"] == ["dpo.jsonl:3"]
    lines = write_rejected(report, tmp_path / "rejected.jsonl").read_text().splitlines()
    assert [json.loads(line)["reason"] for line in lines] == ["same_answers", "same_answers"]
    console = Console(record=True, width=200)
    print_report(report, console)
    assert "rejected: same_answers" in console.export_text()


def test_a_chat_template_that_refuses_a_row_rejects_only_that_row(tiny_processor, tmp_path):
    # The real Llama 3.2 Vision template raises for a system message next to an image.
    processor = copy.deepcopy(tiny_processor("tiny-llama-3.2-vision"))
    processor.chat_template = (
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('Prompting with images is incompatible with system messages.') }}"
        "{% endif %}" + processor.chat_template
    )
    _image(tmp_path / "a.png")
    rows = [
        _row(["a.png"]),
        {**_row(["a.png"]), "messages": [{"role": "system", "content": [_text("Be brief.")]}]
         + _row(["a.png"])["messages"]},
    ]  # fmt: skip
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset = load_sft_dataset(DataSpec(dataset=str(path)))
    report = validate_dataset(dataset, family=MLLAMA, processor=processor, max_seq_length=500)
    assert report.kept["source"] == ["rows.jsonl:1"]
    assert [(row.source, row.reason) for row in report.rejected] == [
        ("rows.jsonl:2", "template_error")
    ]
    assert "incompatible with system messages" in report.rejected[0].message


def test_worker_processes_give_the_same_report(tiny_processor, messy_dataset):
    dataset = load_sft_dataset(DataSpec(dataset=str(messy_dataset)))
    processor = tiny_processor("tiny-qwen2-vl")
    one = validate_dataset(dataset, family=QWEN, processor=processor, max_seq_length=700)
    two = validate_dataset(
        dataset, family=QWEN, processor=processor, max_seq_length=700, num_proc=2
    )
    assert two.rejected == one.rejected
    assert two.token_counts == one.token_counts


# --- the CLI --------------------------------------------------------------------------------------


@pytest.fixture
def inspect_main(monkeypatch):
    """scripts/inspect_data.py's main(), imported in this process (no subprocess start-up)."""
    import importlib.util
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "inspect_data.py"
    spec = importlib.util.spec_from_file_location("inspect_data", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "inspect_data", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.main


def test_inspect_data_prints_the_tables_and_exits_0_despite_rejections(
    inspect_main, messy_dataset, tmp_path, capsys
):
    rejected = tmp_path / "rejected.jsonl"
    argv = ["--dataset", str(messy_dataset), "--model", "tiny-qwen2-vl", "--max-seq-length", "700",
            "--rejected-file", str(rejected)]  # fmt: skip
    assert inspect_main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "13 rows; tiny-qwen2-vl (qwen2-vl)" in out
    assert "rejected: unreadable_image" in out and "Tokens per sample" in out
    assert len(rejected.read_text().splitlines()) == 10


def test_inspect_data_bad_input_is_one_error_line(inspect_main, messy_dataset, capsys):
    main = inspect_main
    assert main(["--dataset", "./missing.jsonl", "--model", "tiny-qwen2-vl"]) == 2
    err = capsys.readouterr().err.splitlines()  # may hold library warnings before it
    assert [line for line in err if line.startswith("error:")] == [err[-1]]
    assert err[-1].startswith("error: --dataset: no such file or folder ./missing.jsonl")
    argv = ["--dataset", str(messy_dataset), "--model", "tiny-qwen2-vl", "--max-seq-length", "700",
            "--strict"]  # fmt: skip
    assert main(argv) == 2
    last_line = capsys.readouterr().err.splitlines()[-1]  # after datasets' progress bars
    assert last_line.startswith("error: --strict: 10 of 13 rows rejected")


# --- training stops before the model loads when validation keeps no row --------------------


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


_LONG_QUESTION = "Which colour is the bar in this picture? " * 10  # over --max-seq-length 64


@pytest.mark.parametrize("command", ["train-sft", "train-dpo", "train-grpo"])
def test_training_with_no_row_kept_stops_before_the_model_loads(
    command, tmp_path, capsys, monkeypatch
):
    from vlm_unsloth.cli import dpo_main, grpo_main, train_sft_main
    from vlm_unsloth.train import steps

    _image(tmp_path / "a.png")
    if command == "train-dpo":
        pair = {"image": "a.png", "question": "Colour?", "chosen": "red", "rejected": " red"}
        long = {"image": "a.png", "question": _LONG_QUESTION, "chosen": "red", "rejected": "blue"}
        reasons = "same_answers: 2, too_long: 1"
        first = "same_answers: chosen and rejected answers are the same text ('red')"
        first += ": the pair teaches nothing"
    else:
        pair = {"image": "a.png", "question": "Colour?", "answer": " "}
        long = {"image": "a.png", "question": _LONG_QUESTION, "answer": "red"}
        reasons = "empty_answer: 2, too_long: 1"
        first = "empty_answer: message 1 (assistant) is empty"
    data = _write_jsonl(tmp_path / "rows.jsonl", [pair, pair, long])
    monkeypatch.setattr(steps, "load_model_for_training", must_not_be_called)
    main = {"train-sft": train_sft_main, "train-dpo": dpo_main, "train-grpo": grpo_main}[command]
    grpo = ["--num-generations", "2", "--batch-size", "2"] if command == "train-grpo" else []
    code = main([
        "--model", "tiny-qwen2-vl", "--backend", "hf", "--dataset", str(data),
        "--max-seq-length", "64", "--output-dir", str(tmp_path / "run"), *grpo,
    ])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"error: --dataset: 0 of 3 rows kept ({reasons}; first: rows.jsonl:1 {first}) — fix the "
        "rows (scripts/inspect_data.py --rejected-file lists them) or raise --max-seq-length"
    )
    assert not (tmp_path / "run").exists()  # nothing written


def test_eval_rows_that_are_all_rejected_stop_the_run_too(tmp_path, capsys, monkeypatch):
    """Training on without them would drop the evaluation that was asked for."""
    from vlm_unsloth.cli import train_sft_main
    from vlm_unsloth.train import steps

    _image(tmp_path / "a.png")
    good = {"image": "a.png", "question": "Colour?", "answer": "red"}
    train = _write_jsonl(tmp_path / "train.jsonl", [good, good])
    evaluation = _write_jsonl(tmp_path / "eval.jsonl", [{**good, "image": "gone.png"}] * 2)
    monkeypatch.setattr(steps, "load_model_for_training", must_not_be_called)
    code = train_sft_main([
        "--model", "tiny-qwen2-vl", "--backend", "hf", "--dataset", str(train),
        "--eval-dataset", str(evaluation), "--output-dir", str(tmp_path / "run"),
    ])  # fmt: skip
    assert code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(
        "error: --eval-dataset: 0 of 2 rows kept (missing_file: 2; first: eval.jsonl:1 "
        "missing_file: "
    ), last
    assert not (tmp_path / "run").exists()
