"""Label masking: a row with nothing to supervise is an error naming it, images are capped before
the processor, and Unsloth's collator supervises the same tokens as ours for every family. (Each
family's labels token by token, with and without --train-on-prompt: tests/test_every_family.py.)"""

from __future__ import annotations

import pytest
from conftest import TINY_MODELS
from test_tiny import _record

from vlm_unsloth.data.collate import SftCollator
from vlm_unsloth.data.image_tokens import count_image_tokens
from vlm_unsloth.errors import DataError


def _collator(name, tiny_ref, tiny_processor, *, train_on_prompt=False):
    ref = tiny_ref(name)
    return SftCollator(
        tiny_processor(name), ref.family, max_side=768, train_on_prompt=train_on_prompt
    )


def _multi_turn() -> dict:
    record = _record("red")
    record["messages"] += [
        {"role": "user", "content": [{"type": "text", "text": "And the shape?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a square"}]},
    ]
    return record


def _text_only() -> dict:
    """A text-only example, as mixed into image data to keep the model's text skills."""
    return {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Name a fruit."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "a plum"}]},
        ],
        "images": [],
        "source": "test:2",
    }


def _mixed_batch(family) -> list[dict]:
    """Image rows, plus a text-only row where the family's processor batches one with them."""
    return [_record("red"), _multi_turn(), *([_text_only()] if family.mixes_text_only_rows else [])]


def _unsupervised_ids(tokenizer, family) -> set[int]:
    return {tokenizer.convert_tokens_to_ids(token) for token in family.unsupervised_tokens}


def test_a_row_with_nothing_to_supervise_is_an_error_naming_it(tiny_ref, tiny_processor):
    collator = _collator("tiny-qwen2-vl", tiny_ref, tiny_processor)
    no_answer = _record("red")
    no_answer["messages"] = no_answer["messages"][:1]  # user turn only
    no_answer["source"] = "train.jsonl:7"
    with pytest.raises(DataError, match=r"train\.jsonl:7"):
        collator([_record("blue"), no_answer])


def test_images_are_capped_before_the_processor_sees_them(tiny_ref, tiny_processor):
    ref = tiny_ref("tiny-qwen2-vl")
    big = _record("red", size=(1600, 1200))
    batch = SftCollator(
        tiny_processor("tiny-qwen2-vl"), ref.family, max_side=768, train_on_prompt=False
    )([big])
    expected = count_image_tokens(
        ref.family, 768, 576, tiny_processor("tiny-qwen2-vl").image_processor
    )
    assert int(batch["image_grid_thw"][0].prod()) // 4 == expected.text_tokens == 567
    big["max_side"] = 384  # per-row override written by --fit-images
    batch = SftCollator(
        tiny_processor("tiny-qwen2-vl"), ref.family, max_side=768, train_on_prompt=False
    )([big])
    assert int(batch["image_grid_thw"][0].prod()) // 4 < 567


# Unsloth's vision collator, run on CPU in its own process (importing unsloth patches
# transformers). unsloth.trainer's class is a stub on CPU; the unsloth_zoo class it wraps on a GPU
# runs anywhere. Fed through our UnslothRecordCollator, as the unsloth backend does.
_UNSLOTH_LABELS = r"""
import json, sys
import unsloth
from transformers import AutoModelForImageTextToText
from unsloth_zoo.vision_utils import UnslothVisionDataCollator
sys.path.insert(0, sys.argv[1])
from test_collate import _mixed_batch
from test_tiny import _record
from vlm_unsloth.data.collate import IGNORE_INDEX, UnslothRecordCollator
from vlm_unsloth.data.image_tokens import image_cap
from vlm_unsloth.models.loading import load_processor, resolve_model
result = {}
for name in sys.argv[2:]:
    ref = resolve_model(name)
    processor = load_processor(ref)
    model = AutoModelForImageTextToText.from_pretrained(ref.path)
    family = ref.family
    theirs = UnslothVisionDataCollator(
        model, processor, resize="max", max_seq_length=2048, train_on_responses_only=True,
        instruction_part=family.instruction_part, response_part=family.response_part,
    )
    collator = UnslothRecordCollator(theirs, family, max_side=image_cap(family, 768, processor))
    batch = collator(_mixed_batch(family))
    result[name] = [
        processor.tokenizer.decode([i for i, l in zip(ids, labels) if l != IGNORE_INDEX])
        for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist())
    ]
print("RESULT" + json.dumps(result))
"""


def test_unsloths_collator_supervises_the_same_tokens_as_ours(tiny_ref, tiny_processor):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = str(Path(__file__).resolve().parent)
    proc = subprocess.run(
        [sys.executable, "-c", _UNSLOTH_LABELS, tests, *TINY_MODELS],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout.split("RESULT", 1)[1])
    for name in TINY_MODELS:
        records = _mixed_batch(tiny_ref(name).family)  # with a text-only row where it mixes
        batch = _collator(name, tiny_ref, tiny_processor)(records)
        tokenizer = tiny_processor(name).tokenizer
        ours = [
            tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label != -100])
            for ids, labels in zip(
                batch["input_ids"].tolist(), batch["labels"].tolist(), strict=True
            )
        ]
        print(name, ours)
        # Unsloth ends an answer at the tokenizer's EOS, else at the next turn: where the
        # family's end-of-turn is not the EOS (Gemma 3: <end_of_turn> vs <eos>, as on the hub),
        # it also supervises the newline the template writes after each <end_of_turn>. One
        # harmless token a turn (generation stops at <end_of_turn>) that our collator leaves out.
        end = tiny_ref(name).family.end_of_turn
        after_end = "" if tokenizer.eos_token == end else "\n"
        expected = [row.replace(end, end + after_end) for row in ours]
        assert expected == theirs[name], (name, ours, theirs[name])
