"""Ask a (fine-tuned) model about images: one streamed answer, or a whole dataset in batches.

    python scripts/infer.py --adapter outputs/sft --image chart.png --prompt "Which bar is highest?"
    python scripts/infer.py --adapter outputs/sft --input data/demo/eval.jsonl --output pred.jsonl

`--adapter` may be a training output folder: its saved configuration supplies the base model,
the image cap and the system prompt, so inference sees images exactly as training did.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm_unsloth import run_dir
from vlm_unsloth.backend import plan_device, resolve_backend
from vlm_unsloth.config import ModelArgs
from vlm_unsloth.errors import ConfigError
from vlm_unsloth.models import LoadedModel, load_model


@dataclass
class GenerationArgs:
    """How answers are sampled."""

    max_new_tokens: int = field(default=128, metadata={"help": "Longest answer in tokens."})
    temperature: float = field(
        default=0.0, metadata={"help": "0 = greedy (deterministic); > 0 samples."}
    )
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (with sampling)."})
    min_p: float = field(default=0.0, metadata={"help": "Min-p sampling floor (with sampling)."})
    batch_size: int = field(default=8, metadata={"help": "Rows generated together (left padded)."})

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens}
        if self.temperature > 0:
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p)
            if self.min_p > 0:
                kwargs["min_p"] = self.min_p
        else:
            kwargs["do_sample"] = False
        return kwargs


@dataclass
class TrainedRun:
    """What inference needs from a training run (read from its run_config.yaml)."""

    base_model: str
    adapter_dir: str | None
    max_side: int
    system_prompt: str | None


def resolve_adapter(adapter: str | None, model: str | None) -> TrainedRun:
    """`--adapter` (an adapter folder or a training output folder) and/or `--model`."""
    if adapter is None:
        if model is None:
            raise ConfigError("nothing to load", where="--model/--adapter", fix="pass --model, --adapter or both")
        return TrainedRun(base_model=model, adapter_dir=None, max_side=768, system_prompt=None)
    folder = Path(adapter).expanduser().resolve()
    if (folder / run_dir.RUN_MARKER).is_file():
        config = run_dir.load_run_config(folder)
        return TrainedRun(
            base_model=model or config["ModelArgs"]["model"],
            adapter_dir=str(folder / run_dir.ADAPTER_DIR),
            max_side=config["DataArgs"]["max_side"],
            system_prompt=config["DataArgs"]["system_prompt"],
        )
    if not (folder / "adapter_config.json").is_file():
        raise ConfigError(
            f"{folder} is neither a training output folder nor a LoRA adapter",
            where="--adapter",
            fix="pass the --output-dir of a training run or its adapter/ folder",
        )
    base = model or json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    parent_config = folder.parent / run_dir.RUN_MARKER
    if parent_config.is_file():  # OUTPUT/adapter: the run's settings still apply
        saved = run_dir.load_run_config(folder.parent)["DataArgs"]
        return TrainedRun(base, str(folder), saved["max_side"], saved["system_prompt"])
    return TrainedRun(base_model=base, adapter_dir=str(folder), max_side=768, system_prompt=None)


def load_for_inference(model_args: ModelArgs, adapter_dir: str | None) -> LoadedModel:
    """Base model (+ LoRA adapter) on the chosen backend, switched to inference mode."""
    backend, why = resolve_backend(model_args.backend)
    if backend == "unsloth":
        from vlm_unsloth.unsloth_backend import import_unsloth

        import_unsloth()
    plan = plan_device(backend, why, "auto")
    loaded = load_model(model_args, None, plan, seed=0)
    if adapter_dir:
        from peft import PeftModel

        loaded.model = PeftModel.from_pretrained(loaded.model, adapter_dir)
    if backend == "unsloth":
        from vlm_unsloth.unsloth_backend import for_inference
    else:
        from vlm_unsloth.hf_backend import for_inference
    loaded.model = for_inference(loaded.model)
    return loaded


def prompt_messages(record: dict[str, Any], system_prompt: str | None = None) -> list[dict]:
    """The record's conversation up to (not including) its final assistant answer."""
    from vlm_unsloth.data import to_chat_template_messages

    messages = list(record.get("messages") or record.get("prompt") or [])
    while messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    messages = to_chat_template_messages(messages)
    if system_prompt and messages and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": [{"type": "text", "text": system_prompt}]}, *messages]
    return messages


def _inputs(loaded: LoadedModel, records: list[dict], max_side: int, system_prompt: str | None):
    from vlm_unsloth.collate import decode_images, images_argument

    processor = loaded.processor
    texts = [
        processor.apply_chat_template(prompt_messages(r, system_prompt), tokenize=False, add_generation_prompt=True)
        for r in records
    ]
    images = [decode_images(r, max_side=max_side, family=loaded.family) for r in records]
    batch = processor(
        text=texts,
        images=images_argument(images, loaded.family),
        padding=True,
        padding_side="left",  # generation appends on the right: prompts must end aligned
        return_tensors="pt",
    )
    return batch.to(loaded.plan.device)


def generate_answers(
    loaded: LoadedModel,
    records: list[dict[str, Any]],
    generation: GenerationArgs,
    *,
    max_side: int,
    system_prompt: str | None = None,
    progress=None,
) -> list[str]:
    """Answers for canonical records (their final assistant turn, if any, is ignored)."""
    import torch

    answers: list[str] = []
    tokenizer = loaded.processor.tokenizer
    for start in range(0, len(records), generation.batch_size):
        chunk = records[start : start + generation.batch_size]
        batch = _inputs(loaded, chunk, max_side, system_prompt)
        with torch.inference_mode():
            output = loaded.model.generate(
                **batch,
                **generation.generate_kwargs(),
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.convert_tokens_to_ids(loaded.family.end_of_turn),
            )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        answers += [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
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
    """Yield the answer's text piece by piece as it is generated."""
    from threading import Thread

    from transformers import TextIteratorStreamer

    tokenizer = loaded.processor.tokenizer
    batch = _inputs(loaded, [record], max_side, system_prompt)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(
        **batch,
        **generation.generate_kwargs(),
        streamer=streamer,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(loaded.family.end_of_turn),
    )
    worker = Thread(target=loaded.model.generate, kwargs=kwargs, daemon=True)
    worker.start()
    yield from streamer
    worker.join()
