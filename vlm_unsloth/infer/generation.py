"""Answers from a (fine-tuned) vision-language model: load it for inference, then generate
greedily in left-padded batches or stream one answer piece by piece.

    loaded = load_for_inference(ModelArgs(model="tiny-qwen2-vl", backend="hf"), adapter_dir=None)
    print(generate_answers(loaded, [image_record("chart.png", "Which bar is highest?")],
                           GenerationArgs(), max_side=768))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vlm_unsloth.config import ModelArgs
from vlm_unsloth.data.collate import decode_images, images_argument
from vlm_unsloth.data.image_tokens import image_cap, prepare_processor
from vlm_unsloth.data.records import image_references, to_chat_template_messages
from vlm_unsloth.errors import ConfigError
from vlm_unsloth.infer.args import GenerationArgs
from vlm_unsloth.models.backend import backend_module
from vlm_unsloth.models.loading import LoadedModel, load_model, resolve_run_model


def load_for_inference(model_args: ModelArgs, adapter_dir: str | None) -> LoadedModel:
    """Base model (+ LoRA adapter) on the chosen backend, switched to inference mode
    (`FastVisionModel.for_inference` on unsloth, `eval()` on hf).

    With an adapter, the processor is the one training saved next to it: same chat template
    and image settings as training, even if the base model's files have changed since.
    """
    resolved = resolve_run_model(model_args, precision="auto")
    loaded = load_model(model_args, None, resolved.setup, seed=0, ref=resolved.ref)
    if adapter_dir:
        from peft import PeftModel
        from transformers import AutoProcessor

        loaded.model = PeftModel.from_pretrained(loaded.model, adapter_dir)
        if (Path(adapter_dir) / "processor_config.json").is_file():
            processor = AutoProcessor.from_pretrained(adapter_dir)
            loaded.processor = prepare_processor(loaded.family, processor)
    loaded.model = backend_module(resolved.setup.backend).for_inference(loaded.model)
    return loaded


def prompt_messages(record: dict[str, Any], system_prompt: str | None = None) -> list[dict]:
    """The record's conversation up to (not including) its final assistant answer."""
    messages = list(record.get("messages") or record.get("prompt") or [])
    while messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    messages = to_chat_template_messages(messages)
    if system_prompt and messages and messages[0]["role"] != "system":
        system = {"role": "system", "content": [{"type": "text", "text": system_prompt}]}
        messages = [system, *messages]
    return messages


def image_record(image: str, prompt: str) -> dict[str, Any]:
    """A canonical record asking `prompt` about one image (a path, relative to the current
    folder, or an http(s) URL)."""
    is_url = image.startswith(("http://", "https://"))
    if not is_url and not Path(image).expanduser().is_file():
        raise ConfigError(
            f"no image file {image} (relative paths start from {Path.cwd()})",
            where="--image",
            fix="pass an existing image file or an http(s) URL",
        )
    content = [{"type": "image", "text": None}, {"type": "text", "text": prompt}]
    return {
        "messages": [{"role": "user", "content": content}],
        "images": image_references(image, Path.cwd()),
        "source": "--image",
    }


def _inputs(loaded: LoadedModel, records: list[dict], max_side: int, system_prompt: str | None):
    processor = loaded.processor
    texts = [
        processor.apply_chat_template(
            prompt_messages(r, system_prompt),
            tokenize=False,
            add_generation_prompt=True,
            **loaded.family.generation_template_kwargs,
        )
        for r in records
    ]
    cap = image_cap(loaded.family, max_side, processor)
    images = [decode_images(r, max_side=cap, family=loaded.family) for r in records]
    batch = processor(
        text=texts,
        images=images_argument(images, loaded.family),
        padding=True,
        padding_side="left",  # generation appends on the right: prompts must end aligned
        add_special_tokens=False,  # the chat template writes BOS (as in training)
        return_tensors="pt",
    )
    return batch.to(loaded.setup.device)


def _stop_tokens(loaded: LoadedModel) -> dict[str, Any]:
    tokenizer = loaded.processor.tokenizer
    return {
        "pad_token_id": tokenizer.pad_token_id,
        # The family's end-of-turn token: what a fine-tuned model learned to stop with (the
        # tokenizer's own eos may be another token, e.g. <|endoftext|> for Qwen).
        "eos_token_id": tokenizer.convert_tokens_to_ids(loaded.family.end_of_turn),
    }


def generate_answers(
    loaded: LoadedModel,
    records: list[dict[str, Any]],
    generation: GenerationArgs,
    *,
    max_side: int,
    system_prompt: str | None = None,
    progress: Callable[[int], object] | None = None,
) -> list[str]:
    """Answers for canonical records (their final assistant turn, if any, is ignored).

    Rows go through the model `generation.batch_size` at a time, left padded; greedy answers
    equal those generated one row at a time. `progress(n)` is called after each batch.
    """
    import torch

    answers: list[str] = []
    tokenizer = loaded.processor.tokenizer
    for start in range(0, len(records), generation.batch_size):
        chunk = [records[i] for i in range(start, min(start + generation.batch_size, len(records)))]
        batch = _inputs(loaded, chunk, max_side, system_prompt)
        with torch.inference_mode():
            output = loaded.model.generate(
                **batch, **generation.generate_kwargs(), **_stop_tokens(loaded)
            )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        answers += [text.strip() for text in decoded]
        if progress is not None:
            progress(len(chunk))
    return answers


def stream_answer(
    loaded: LoadedModel,
    record: dict[str, Any],
    generation: GenerationArgs,
    *,
    max_side: int,
    system_prompt: str | None = None,
) -> Iterator[str]:
    """Yield the answer's text piece by piece as it is generated (joined: the whole answer,
    before `generate_answers`' strip)."""
    from threading import Thread

    import torch
    from transformers import TextIteratorStreamer

    batch = _inputs(loaded, [record], max_side, system_prompt)
    streamer = TextIteratorStreamer(
        loaded.processor.tokenizer, skip_prompt=True, skip_special_tokens=True
    )
    failures: list[BaseException] = []

    def generate() -> None:
        # Footgun: if generate raises in its thread, the streamer never receives its end mark
        # and the loop below would wait forever. End it, and re-raise here.
        try:
            with torch.inference_mode():
                loaded.model.generate(
                    **batch,
                    **generation.generate_kwargs(),
                    **_stop_tokens(loaded),
                    streamer=streamer,
                )
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            failures.append(error)
            streamer.end()

    worker = Thread(target=generate, daemon=True)
    worker.start()
    yield from streamer
    worker.join()
    if failures:
        raise failures[0]
