"""The tiny offline checkpoints: real architectures, real processors, real prompt formats."""

from __future__ import annotations

import io
import re

import pytest
import torch
from conftest import TINY_MODELS
from PIL import Image

from vlm_unsloth.data.collate import IGNORE_INDEX, SftCollator, images_argument
from vlm_unsloth.data.image_tokens import count_image_tokens, prompt_length
from vlm_unsloth.errors import ModelError
from vlm_unsloth.families import TINY_MODEL_NAMES, tiny_names
from vlm_unsloth.models.tiny import build_tiny_checkpoint

EXPECTED = {
    "tiny-qwen2-vl": ("qwen2_vl", "Qwen2VLProcessor", "Qwen2VLForConditionalGeneration"),
    "tiny-qwen2.5-vl": ("qwen2_5_vl", "Qwen2_5_VLProcessor", "Qwen2_5_VLForConditionalGeneration"),
    "tiny-llama-3.2-vision": ("mllama", "MllamaProcessor", "MllamaForConditionalGeneration"),
    "tiny-smolvlm": ("idefics3", "Idefics3Processor", "Idefics3ForConditionalGeneration"),
    "tiny-smolvlm2": ("smolvlm", "SmolVLMProcessor", "SmolVLMForConditionalGeneration"),
    "tiny-pixtral": ("llava", "PixtralProcessor", "LlavaForConditionalGeneration"),
    "tiny-qwen3-vl": ("qwen3_vl", "Qwen3VLProcessor", "Qwen3VLForConditionalGeneration"),
    "tiny-qwen3.5": ("qwen3_5", "Qwen3VLProcessor", "Qwen3_5ForConditionalGeneration"),
    "tiny-gemma3": ("gemma3", "Gemma3Processor", "Gemma3ForConditionalGeneration"),
}


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


@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_checkpoint_is_an_ordinary_model_folder(name, tiny_ref):
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    folder = tiny_ref(name).path
    model_type, processor_class, model_class = EXPECTED[name]
    assert AutoConfig.from_pretrained(folder).model_type == model_type
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    assert type(processor).__name__ == processor_class
    assert type(model).__name__ == model_class
    family = tiny_ref(name).family
    for marker in (family.image_token, family.end_of_turn):
        token_id = processor.tokenizer.convert_tokens_to_ids(marker)
        assert token_id != processor.tokenizer.unk_token_id and token_id is not None
    text = processor.apply_chat_template(_record("red")["messages"], tokenize=False)
    assert family.instruction_part in text and family.response_part in text
    # SmolVLM writes "Assistant: red": the answer keeps its space (one BPE token " red");
    # Qwen3.5 an empty think block before it.
    think = re.escape("<think>\n\n</think>\n\n") if family.template_thinks else ""
    answer = rf"{re.escape(family.response_part)}{think} ?red{re.escape(family.end_of_turn)}"
    assert re.search(answer, text), text
    for token in family.unsupervised_tokens:  # every layout token is ONE token of the vocabulary
        assert (
            processor.tokenizer.convert_ids_to_tokens(
                processor.tokenizer.convert_tokens_to_ids(token)
            )
            == token
        )


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


@pytest.mark.parametrize("name", TINY_MODELS)
@pytest.mark.parametrize("count", [1, 2])
def test_image_placeholders_expand_to_the_family_formula(name, count, tiny_ref, tiny_processor):
    processor, family = tiny_processor(name), tiny_ref(name).family
    sizes = [(224, 168), (100, 330)][:count]
    images = [Image.new("RGB", size, "blue") for size in sizes]
    record = _record("blue", images=count)
    text = processor.apply_chat_template(record["messages"], tokenize=False)
    batch = processor(
        text=[text], images=images_argument([images], family), add_special_tokens=False,
        return_tensors="pt",
    )  # fmt: skip
    image_id = processor.tokenizer.convert_tokens_to_ids(family.image_token)
    placeholders = int((batch["input_ids"][0] == image_id).sum())
    counts = [count_image_tokens(family, w, h, processor) for w, h in sizes]
    assert batch["input_ids"].shape[1] == prompt_length(family, text, sizes, processor)
    if family.image_scheme.name != "gemma3":  # (Gemma's newlines merge with the text around them)
        template_ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        # Each image's placeholder in the template becomes text_tokens positions.
        expected = len(template_ids) + sum(c.text_tokens - 1 for c in counts)
        assert batch["input_ids"].shape[1] == expected
    if family.model_type == "mllama":
        assert placeholders == count == sum(c.text_tokens for c in counts)
        tiles_used = batch["aspect_ratio_mask"][0].sum(dim=-1).tolist()
        assert tiles_used == [c.tiles for c in counts]
        return
    assert placeholders == sum(c.vision_tokens for c in counts)
    if family.image_scheme.name in ("qwen", "qwen3"):
        grid = batch["image_grid_thw"]
        assert [int(g.prod()) // 4 for g in grid] == [c.text_tokens for c in counts]
        assert batch["mm_token_type_ids"].sum() == placeholders  # 1 on each image position
    elif family.image_scheme.name == "idefics3":  # views (tiles + global) of a row's images
        assert batch["pixel_values"].shape[1] == sum(c.tiles for c in counts)
    elif family.image_scheme.name == "gemma3":  # one square per image, whatever its size
        side = counts[0].resized[0]
        assert tuple(batch["pixel_values"].shape) == (count, 3, side, side)
        # 1 on the soft tokens only (bidirectional attention inside each image)
        assert batch["token_type_ids"].sum() == placeholders
    else:  # pixtral: the resized (width, height) of each image
        sizes_seen = [(int(w), int(h)) for h, w in batch["image_sizes"].tolist()]
        assert sizes_seen == [c.resized for c in counts]


@pytest.mark.parametrize("name", TINY_MODELS)
def test_forward_backward_reaches_the_vision_tower(name, tiny_ref, tiny_processor):
    from transformers import AutoModelForImageTextToText

    ref = tiny_ref(name)
    model = AutoModelForImageTextToText.from_pretrained(ref.path)
    collator = SftCollator(tiny_processor(name), ref.family, max_side=768, train_on_prompt=False)
    batch = collator([_record("red"), _record("green", size=(160, 220))])
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    vision = [
        p
        for n, p in model.named_parameters()
        if any(tower in n for tower in ("visual", "vision_model", "vision_tower"))
    ]
    assert vision and any(p.grad is not None and p.grad.abs().sum() > 0 for p in vision)


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


@pytest.mark.parametrize("name", TINY_MODELS)
def test_hf_backend_lora_training_lowers_the_loss(name, tiny_ref):
    from vlm_unsloth.config import ModelArgs
    from vlm_unsloth.models.device import DeviceSetup
    from vlm_unsloth.models.loading import count_parameters, load_model
    from vlm_unsloth.models.lora import LoraArgs

    setup = DeviceSetup(backend="hf", device="cpu", dtype="float32", why="test")
    loaded = load_model(
        ModelArgs(model=name, backend="hf"), LoraArgs(lora_r=8, lora_alpha=16), setup, seed=0
    )
    trainable, total = count_parameters(loaded.model)
    assert 0 < trainable < total
    assert all("lora_" in n for n, p in loaded.model.named_parameters() if p.requires_grad)
    collator = SftCollator(loaded.processor, loaded.family, max_side=768, train_on_prompt=False)
    batch = collator([_record("red"), _record("blue")])
    assert (batch["labels"] != IGNORE_INDEX).sum() > 0
    optimizer = torch.optim.AdamW(
        [p for p in loaded.model.parameters() if p.requires_grad], lr=1e-2
    )
    losses = []
    loaded.model.train()
    for _ in range(12):
        loss = loaded.model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses
