"""Records → model batches with labels, for training.

Images are decoded and capped here, at collate time (in dataloader workers when
--dataloader-num-workers > 0): a dataset holds only image references, so 30,000 images never sit
in memory. Labels follow one rule on both backends: only the assistant's answers (with the
end-of-turn token that teaches the model to stop) are supervised; prompt, padding and image
tokens (the family's image token and the layout tokens around it) are -100. `--train-on-prompt`
supervises the prompt text too, never padding or images.

Every processor call passes add_special_tokens=False (as Unsloth's collator and TRL do): the chat
template already writes the BOS token, and tokenizers that add one (Llama 3, Mistral) would
double it.
"""

from __future__ import annotations

from typing import Any

from vlm_unsloth.data.image_tokens import image_cap
from vlm_unsloth.data.images import load_image
from vlm_unsloth.data.records import to_chat_template_messages
from vlm_unsloth.errors import DataError
from vlm_unsloth.families import Family

IGNORE_INDEX = -100


def decode_images(record: dict[str, Any], *, max_side: int, family: Family) -> list:
    """The record's images, upright RGB and capped (a per-row `max_side` from --fit-images wins).

    `max_side` is the family's `image_cap` of --max-side (what collators compute once).
    """
    side = record.get("max_side") or max_side
    return [
        load_image(ref, max_side=side, family=family, where=record.get("source"))
        for ref in record.get("images") or []
    ]


class SupervisionMask:
    """Finds the supervised token positions of a rendered conversation, per family."""

    def __init__(self, tokenizer, family: Family):
        # Markers are matched without their trailing whitespace: a byte-level BPE may merge
        # "\n\n" with the answer's first characters differently in context than alone.
        self.response_ids = tokenizer.encode(
            family.response_part.rstrip(), add_special_tokens=False
        )
        self.end_id = tokenizer.convert_tokens_to_ids(family.end_of_turn)
        ids = {
            token: tokenizer.convert_tokens_to_ids(token) for token in family.unsupervised_tokens
        }
        # A token the vocabulary lacks maps to <unk> (or None): never mask those by mistake.
        self.image_ids = {
            token_id
            for token, token_id in ids.items()
            if token_id is not None and tokenizer.convert_ids_to_tokens(token_id) == token
        }
        self.tokenizer = tokenizer
        self._is_whitespace: dict[int, bool] = {}

    def labels(
        self, input_ids: list[int], attention_mask: list[int], *, train_on_prompt: bool
    ) -> list[int]:
        if train_on_prompt:
            labels = list(input_ids)
        else:
            labels = [IGNORE_INDEX] * len(input_ids)
            for start, end in self.answer_spans(input_ids):
                labels[start:end] = input_ids[start:end]
        for position, (token_id, attended) in enumerate(
            zip(input_ids, attention_mask, strict=True)
        ):
            if not attended or token_id in self.image_ids:
                labels[position] = IGNORE_INDEX
        return labels

    def is_whitespace(self, token_id: int) -> bool:
        if token_id not in self._is_whitespace:
            text = self.tokenizer.decode([token_id], skip_special_tokens=True)
            self._is_whitespace[token_id] = (
                token_id != self.end_id and text != "" and text.strip() == ""
            )
        return self._is_whitespace[token_id]

    def answer_spans(self, input_ids: list[int]) -> list[tuple[int, int]]:
        """[start, end) of each assistant answer, end-of-turn token included."""
        spans = []
        width = len(self.response_ids)
        position = 0
        while position + width <= len(input_ids):
            if input_ids[position : position + width] != self.response_ids:
                position += 1
                continue
            start = position + width
            while start < len(input_ids) and self.is_whitespace(input_ids[start]):
                start += 1  # the newline(s) after the header belong to the prompt format
            end = start
            while end < len(input_ids) and input_ids[end] != self.end_id:
                end += 1
            end = min(end + 1, len(input_ids))  # include end-of-turn
            spans.append((start, end))
            position = end
        return spans


class SftCollator:
    """The hf backend's collator: chat template → processor → labels (same rule as Unsloth's)."""

    def __init__(self, processor, family: Family, *, max_side: int, train_on_prompt: bool):
        self.processor = processor
        self.family = family
        self.max_side = image_cap(family, max_side, processor)
        self.train_on_prompt = train_on_prompt
        self.mask = SupervisionMask(processor.tokenizer, family)

    def __call__(self, records: list[dict[str, Any]]) -> dict:
        import torch

        texts = [
            self.processor.apply_chat_template(
                to_chat_template_messages(r["messages"]), tokenize=False
            )
            for r in records
        ]
        images = [decode_images(r, max_side=self.max_side, family=self.family) for r in records]
        batch = self.processor(
            text=texts,
            images=images_argument(images, self.family),
            padding=True,
            padding_side="right",
            add_special_tokens=False,
            return_tensors="pt",
        )
        labels = [
            self.mask.labels(ids, mask, train_on_prompt=self.train_on_prompt)
            for ids, mask in zip(
                batch["input_ids"].tolist(), batch["attention_mask"].tolist(), strict=True
            )
        ]
        check_supervised(labels, records)
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
        return batch


def images_argument(images: list[list], family: Family):
    """What the family's processor takes for a batch: one list per row (Mllama, SmolVLM) or one
    flat list (Qwen, Pixtral); None for a batch without images."""
    if family.nested_images:
        return images if any(images) else None
    flat = [image for row in images for image in row]
    return flat or None


def check_supervised(labels: list[list[int]], records: list[dict[str, Any]]) -> None:
    """A row with no supervised token would train on nothing (a silent zero-loss step)."""
    empty = [
        r.get("source", f"batch row {i}")
        for i, (row, r) in enumerate(zip(labels, records, strict=True))
        if all(t == IGNORE_INDEX for t in row)
    ]
    if empty:
        raise DataError(
            f"no answer token left to train on in {', '.join(map(str, empty))}",
            where="labels",
            fix="check that each row ends with a non-empty assistant answer and fits "
            "--max-seq-length",
        )


class UnslothRecordCollator:
    """Feeds our records to Unsloth's vision collator: images decoded and capped first
    (`max_side`: the family's `image_cap`, computed where the processor is known)."""

    def __init__(self, unsloth_collator, family: Family, *, max_side: int):
        self.unsloth_collator = unsloth_collator
        self.family = family
        self.max_side = max_side

    def __call__(self, records: list[dict[str, Any]]) -> dict:
        examples = [
            {
                "messages": to_chat_template_messages(r["messages"]),
                "images": decode_images(r, max_side=self.max_side, family=self.family),
            }
            for r in records
        ]
        batch = self.unsloth_collator(examples)
        check_supervised(batch["labels"].tolist(), records)
        return batch


class PreferenceCollator:
    """Preference records → one DPO batch of 2N rows, the layout TRL's DPOTrainer scores: every
    prompt+chosen conversation, then every prompt+rejected one, each with its record's images,
    plus `completion_mask` = the final answer's tokens (answer + end of turn, as SFT supervises).

    Both backends use it. Not TRL's DataCollatorForVisionPreference: that one processes the prompt
    alone and appends the answers' tokens, so Mllama's cross_attention_mask covers only the prompt
    (IndexError in the forward) and Llama's template puts a second <|begin_of_text|> before each
    answer. Rendering whole conversations keeps each family's image inputs (pixel_values +
    image_grid_thw for Qwen; pixel_values, aspect ratios and cross_attention_mask for Mllama)
    aligned with input_ids. Images are decoded once per record and shared by both rows.
    """

    def __init__(self, processor, family: Family, *, max_side: int):
        self.processor = processor
        self.family = family
        self.max_side = image_cap(family, max_side, processor)
        self.mask = SupervisionMask(processor.tokenizer, family)

    def __call__(self, records: list[dict[str, Any]]) -> dict:
        import torch

        images = [decode_images(r, max_side=self.max_side, family=self.family) for r in records]
        texts = [
            self.processor.apply_chat_template(
                to_chat_template_messages(r["prompt"] + r[side]), tokenize=False
            )
            for side in ("chosen", "rejected")
            for r in records
        ]
        batch = self.processor(
            text=texts,
            images=images_argument(images + images, self.family),
            padding=True,
            padding_side="right",
            add_special_tokens=False,
            return_tensors="pt",
        )
        masks = [
            self.completion_mask(ids, attended)
            for ids, attended in zip(
                batch["input_ids"].tolist(), batch["attention_mask"].tolist(), strict=True
            )
        ]
        labels = [[IGNORE_INDEX if m == 0 else 1 for m in mask] for mask in masks]
        check_supervised(labels, records + records)
        batch["completion_mask"] = torch.tensor(masks, dtype=torch.long)
        return batch

    def completion_mask(self, input_ids: list[int], attention_mask: list[int]) -> list[int]:
        """1 on the tokens of the conversation's last assistant answer (end-of-turn included)."""
        mask = [0] * len(input_ids)
        spans = self.mask.answer_spans(input_ids)
        if spans:
            start, end = spans[-1]  # earlier answers (a multi-turn prompt) are context
            mask[start:end] = attention_mask[start:end]
        return mask


class PromptRows:
    """Canonical SFT records → GRPO rows, as `datasets.Dataset.with_transform(PromptRows(...))`:
    {"prompt": the conversation without its final answer (image parts as placeholders),
    "images": the decoded, capped images, "answer": the final answer's text, "source"}.

    TRL's GRPOTrainer generates from `prompt` + `images` and hands every other column (here
    `answer`, `source`, `images`) to each reward function as a keyword list. Images are decoded
    only when a batch of rows is read, as in the collators above.
    """

    def __init__(self, family: Family, *, max_side: int):
        self.family = family
        self.max_side = max_side

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        columns = list(batch)
        records = [
            dict(zip(columns, values, strict=True)) for values in zip(*batch.values(), strict=True)
        ]
        side, family = self.max_side, self.family
        return {
            "prompt": [to_chat_template_messages(r["messages"][:-1]) for r in records],
            "images": [decode_images(r, max_side=side, family=family) for r in records],
            "answer": [reference_answer(r) for r in records],
            "source": [r["source"] for r in records],
        }


def reference_answer(record: dict[str, Any]) -> str:
    """The text of a record's final assistant answer (what GRPO's rewards compare with)."""
    final = record["messages"][-1]["content"]
    return "".join(part["text"] or "" for part in final if part["type"] == "text").strip()
