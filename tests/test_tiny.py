"""The tiny offline checkpoints: each family's real prompt format, the build cache, unknown names.
(What every family's checkpoint must be and do: tests/test_every_family.py.)"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from vlm_unsloth.data.collate import SftCollator
from vlm_unsloth.errors import ModelError
from vlm_unsloth.families import TINY_MODEL_NAMES, tiny_names
from vlm_unsloth.models.tiny import build_tiny_checkpoint


def _png(size, colour) -> dict:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _record(colour: str, *, images: int = 1, size=(200, 140)) -> dict:
    parts = [{"type": "image", "text": None}] * images
    return {
        "messages": [
            {"role": "user", "content": [*parts, {"type": "text", "text": "What colour is it?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": colour}]},
        ],
        "images": [_png(size, colour) for _ in range(images)],
        "source": "test:1",
    }


def test_real_prompt_formats(tiny_processor):
    messages = _record("red")["messages"]
    qwen = tiny_processor("tiny-qwen2-vl").apply_chat_template(messages, tokenize=False)
    assert qwen == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What colour is it?"
        "<|im_end|>\n<|im_start|>assistant\nred<|im_end|>\n"
    )
    llama = tiny_processor("tiny-llama-3.2-vision").apply_chat_template(messages, tokenize=False)
    assert llama == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>What colour is it?"
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nred<|eot_id|>"
    )
    prompt = tiny_processor("tiny-llama-3.2-vision").apply_chat_template(
        messages[:1], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


SYSTEM = {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}


@pytest.mark.parametrize("name", ["tiny-smolvlm", "tiny-smolvlm2"])
def test_smolvlm_prompt_format(name, tiny_processor):
    """SmolVLM-Instruct's template (TRL's idefics3.jinja with <|im_start|>) and SmolVLM2's: the
    role is followed by ":" before an image and ": " before text."""
    messages = [SYSTEM, *_record("red")["messages"]]
    text = tiny_processor(name).apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|im_start|>System: Be brief.<end_of_utterance>\nUser:<image>What colour is it?"
        "<end_of_utterance>\nAssistant: red<end_of_utterance>\n"
    )
    prompt = tiny_processor(name).apply_chat_template(
        messages[:2], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("What colour is it?<end_of_utterance>\nAssistant:")


def test_pixtral_prompt_format(tiny_processor):
    """mistral-community/pixtral-12b's template: the system text opens the first user turn."""
    processor = tiny_processor("tiny-pixtral")
    messages = [SYSTEM, *_record("red")["messages"]]
    text = processor.apply_chat_template(messages, tokenize=False)
    assert text == "<s>[INST]Be brief.\n\n[IMG]What colour is it?[/INST]red</s>"
    ids = processor.tokenizer.convert_tokens_to_ids(["[IMG]", "[IMG_BREAK]", "[IMG_END]"])
    assert ids == [10, 12, 13]  # the hub's ids
    prompt = processor.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("[IMG]What colour is it?[/INST]")


def test_qwen3_vl_prompt_format(tiny_processor):
    """Qwen3-VL-*-Instruct's template: Qwen's turns, no default system prompt, no <think>."""
    processor = tiny_processor("tiny-qwen3-vl")
    text = processor.apply_chat_template(_record("red")["messages"], tokenize=False)
    assert text == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What colour is it?"
        "<|im_end|>\n<|im_start|>assistant\nred<|im_end|>\n"
    )
    messages = [SYSTEM, *_record("red")["messages"][:1]]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert prompt.endswith("What colour is it?<|im_end|>\n<|im_start|>assistant\n")
    assert "<think>" not in prompt
    # <think> is a whole token that is not special (as on the hub): decoding keeps it.
    think = processor.tokenizer.convert_tokens_to_ids("<think>")
    assert processor.tokenizer.decode([think], skip_special_tokens=True) == "<think>"


def test_qwen3_5_prompt_format_and_generation_without_thinking(tiny_processor):
    """Qwen3.5-4B's template (qwen3_5_think.jinja): the last answer follows an empty think
    block, earlier ones none; the generation prompt opens a think block unless
    enable_thinking=False, which the family's generation kwargs pass: a prompt then ends where
    every trained answer begins."""
    processor = tiny_processor("tiny-qwen3.5")
    family = TINY_MODEL_NAMES["tiny-qwen3.5"]
    first = _record("red")["messages"]
    text = processor.apply_chat_template(first, tokenize=False)
    assert text == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What colour is it?"
        "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nred<|im_end|>\n"
    )
    two_turns = [*first, {"role": "user", "content": [{"type": "text", "text": "Sure?"}]},
                 {"role": "assistant", "content": [{"type": "text", "text": "yes"}]}]  # fmt: skip
    rendered = processor.apply_chat_template(two_turns, tokenize=False)
    assert rendered.count("<think>") == 1 and "assistant\nred<|im_end|>" in rendered
    hub_default = processor.apply_chat_template(
        first[:1], tokenize=False, add_generation_prompt=True
    )
    assert hub_default.endswith("<|im_start|>assistant\n<think>\n")
    assert family.generation_template_kwargs == {"enable_thinking": False}
    prompt = processor.apply_chat_template(
        first[:1], tokenize=False, add_generation_prompt=True,
        **family.generation_template_kwargs,
    )  # fmt: skip
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert text.startswith(prompt) and text[len(prompt) :] == "red<|im_end|>\n"
    assert TINY_MODEL_NAMES["tiny-qwen3-vl"].generation_template_kwargs == {}


def test_gemma3_prompt_format_and_a_single_bos(tiny_processor):
    """gemma-3-*-it's template: the system text opens the first user turn, the assistant is
    "model", <bos> comes from the template (the tokenizer would add a second one: collators
    call the processor with add_special_tokens=False, as TRL and Unsloth do)."""
    processor = tiny_processor("tiny-gemma3")
    messages = [SYSTEM, *_record("red")["messages"]]
    text = processor.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\n<start_of_image>What colour is it?"
        "<end_of_turn>\n<start_of_turn>model\nred<end_of_turn>\n"
    )
    prompt = processor.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("What colour is it?<end_of_turn>\n<start_of_turn>model\n")
    tokenizer = processor.tokenizer
    assert tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"][:2]) == ["<bos>"] * 2
    batch = SftCollator(processor, TINY_MODEL_NAMES["tiny-gemma3"], max_side=768,
                        train_on_prompt=False)([_record("red")])  # fmt: skip
    ids = batch["input_ids"][0].tolist()
    assert tokenizer.convert_ids_to_tokens(ids[:2]) == ["<bos>", "<start_of_turn>"]


def test_lfm2_vl_prompt_format_and_both_kinds_of_layer(tiny_processor, tiny_ref):
    """LFM2.5-VL's template (TRL's lfm2_2_5_vl.jinja): ChatML after <|startoftext|>, a system
    turn only when given; the tiny LFM2 has a short-conv layer and an attention layer, as the
    real ones interleave them."""
    import json
    from pathlib import Path

    family = next(f for f in TINY_MODEL_NAMES.values() if f.image_scheme.name == "lfm2-tiles")
    processor = tiny_processor(family.tiny_name)
    text = processor.apply_chat_template(_record("red")["messages"], tokenize=False)
    assert text == (
        "<|startoftext|><|im_start|>user\n<image>What colour is it?<|im_end|>\n"
        "<|im_start|>assistant\nred<|im_end|>\n"
    )
    messages = [SYSTEM, *_record("red")["messages"][:1]]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<|startoftext|><|im_start|>system\nBe brief.<|im_end|>\n")
    assert prompt.endswith("What colour is it?<|im_end|>\n<|im_start|>assistant\n")
    config = json.loads(Path(tiny_ref(family.tiny_name).path, "config.json").read_text())
    assert config["text_config"]["layer_types"] == ["conv", "full_attention"]


def test_cache_is_reused_and_keyed_by_the_builder(tmp_path, monkeypatch):
    first = build_tiny_checkpoint("tiny-qwen2-vl", cache_dir=tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_checkpoint("tiny-qwen2-vl", cache_dir=tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    monkeypatch.setattr("vlm_unsloth.models.tiny.builder_fingerprint", lambda: "changedbuilder")
    second = build_tiny_checkpoint("tiny-qwen2-vl", cache_dir=tmp_path)
    assert second != first and second.name.endswith("changedbuilder")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_unknown_tiny_name_is_a_one_line_error():
    with pytest.raises(ModelError) as error:
        build_tiny_checkpoint("tiny-gpt")
    assert tiny_names() in str(error.value)  # every tiny name the registry has
