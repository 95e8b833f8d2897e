"""Label masking, token by token: prompt, padding and image tokens are -100; answers are kept."""

from __future__ import annotations

import pytest
from conftest import TINY_MODELS
from test_tiny import _record

from vlm_unsloth.data.collate import IGNORE_INDEX, SftCollator
from vlm_unsloth.data.image_tokens import count_image_tokens
from vlm_unsloth.data.records import to_chat_template_messages
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


def _answers_as_rendered(processor, family, record) -> list[str]:
    """Each answer as the chat template writes it after the assistant marker (SmolVLM's keeps
    the space of "Assistant: red")."""
    text = processor.apply_chat_template(
        to_chat_template_messages(record["messages"]), tokenize=False
    )
    return [part.split(family.end_of_turn)[0] for part in text.split(family.response_part)[1:]]


def _unsupervised_ids(tokenizer, family) -> set[int]:
    return {tokenizer.convert_tokens_to_ids(token) for token in family.unsupervised_tokens}


@pytest.mark.parametrize("name", TINY_MODELS)
def test_only_answers_and_their_end_of_turn_are_supervised(name, tiny_ref, tiny_processor):
    collator = _collator(name, tiny_ref, tiny_processor)
    tokenizer = tiny_processor(name).tokenizer
    family = tiny_ref(name).family
    records = _mixed_batch(family)
    batch = collator(records)
    eot = tokenizer.convert_tokens_to_ids(family.end_of_turn)
    image_ids = _unsupervised_ids(tokenizer, family)
    expected_answers = [["red"], ["red", "a square"], ["a plum"]]
    for row, record in enumerate(records):
        answers = _answers_as_rendered(tiny_processor(name), family, record)
        # Qwen3.5's last answer follows an empty think block: supervised with it (what the
        # generation prompt, rendered without thinking, ends with is what the model must write).
        think = "<think>\n\n</think>\n\n" if family.template_thinks else ""
        assert [a.strip() for a in answers[:-1]] + [answers[-1].removeprefix(think).strip()] == (
            expected_answers[row]
        )
        assert answers[-1].startswith(think)
        has_image_tokens = any(t in image_ids for t in batch["input_ids"][row].tolist())
        assert has_image_tokens == bool(record["images"])  # the text-only row has none
        ids = batch["input_ids"][row].tolist()
        labels = batch["labels"][row].tolist()
        mask = batch["attention_mask"][row].tolist()
        expected = [IGNORE_INDEX] * len(ids)
        # Locate each answer's tokens right after the assistant header, token by token.
        search_from = 0
        for answer in answers:
            answer_ids = tokenizer.encode(answer, add_special_tokens=False)
            assert tokenizer.decode(answer_ids[:1]).strip()  # no whitespace-only first token
            start = next(
                i for i in range(search_from, len(ids))
                if ids[i : i + len(answer_ids)] == answer_ids
                and tokenizer.decode(ids[:i]).endswith(family.response_part)
            )  # fmt: skip
            end = start + len(answer_ids)
            assert ids[end] == eot
            expected[start : end + 1] = ids[start : end + 1]
            search_from = end + 1
        assert labels == expected
        for label, token, attended in zip(labels, ids, mask, strict=True):
            if not attended or token in image_ids:
                assert label == IGNORE_INDEX
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()  # padded row


@pytest.mark.parametrize("name", TINY_MODELS)
def test_train_on_prompt_keeps_text_but_never_images_or_padding(name, tiny_ref, tiny_processor):
    collator = _collator(name, tiny_ref, tiny_processor, train_on_prompt=True)
    tokenizer = tiny_processor(name).tokenizer
    # The image token and the layout tokens the processor writes around it (Qwen's vision
    # start/end, SmolVLM's tile separators, Pixtral's row breaks), as Unsloth masks them.
    image_ids = _unsupervised_ids(tokenizer, tiny_ref(name).family)
    batch = collator([_record("red"), _multi_turn()])
    assert any(token in image_ids for token in batch["input_ids"][0].tolist())
    for row in range(2):
        ids, labels = batch["input_ids"][row].tolist(), batch["labels"][row].tolist()
        mask = batch["attention_mask"][row].tolist()
        for token, label, attended in zip(ids, labels, mask, strict=True):
            if not attended or token in image_ids:
                assert label == IGNORE_INDEX
            else:
                assert label == token
    prompt_only = tokenizer.encode("What colour is it?", add_special_tokens=False)
    kept = batch["labels"][0].tolist()
    assert any(kept[i : i + len(prompt_only)] == prompt_only for i in range(len(kept)))


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
