"""What every family must do: the one place that says it, each test parametrised over the
registry (conftest's `each_family`, ids = family keys). A new family module gets every test here
by existing; removing one removes only its tests (tests/test_families.py runs this file against
a copy of the package without families/pixtral.py).

On each family's tiny checkpoint (hf backend, CPU):
- the checkpoint is an ordinary model folder; image placeholders expand to the family's formula;
  inspect_data counts what the processor makes at several --max-side;
- only answers (and their end of turn) are supervised; --train-on-prompt never images;
- LoRA's switches split the towers and leave the connector out; --modules-to-save trains it;
- forward/backward reaches the vision tower, in 4-bit too (the family's unquantized modules
  stay float); hf LoRA training lowers the loss; the images reach
  the DPO loss and GRPO's policy log-probabilities;
- batched answers equal one-by-one answers, streamed ones the greedy answer, the CLI streams;
- slow: SFT trains, saves, reloads and generates, an interrupted run resumes to the same adapter
  and the merged model is the adapted one; --batch-size auto and out-of-memory recovery; GRPO
  trains, logs, saves and resumes; the colour task is learnt (and not from blank images), the
  merged model answering as its adapter.
The comparisons with Unsloth (LoRA selection, collator labels) run every family in one
subprocess each: tests/test_lora.py, tests/test_collate.py.
"""

from __future__ import annotations

import json
import random
import re

import pytest
import torch
import transformers
from conftest import GREEDY, SIDE, assert_same_adapters, each_family, must_not_be_called
from PIL import Image
from tasks import colour_training_args, write_colour_task
from test_batch_memory import GradientRecorder, assert_same_gradients
from test_collate import _collator, _mixed_batch, _multi_turn, _unsupervised_ids
from test_tiny import _record

from vlm_unsloth.config import DataArgs, ModelArgs, TrainArgs
from vlm_unsloth.data.collate import IGNORE_INDEX, SftCollator, images_argument
from vlm_unsloth.data.demo_colours import IMAGE_SIDE
from vlm_unsloth.data.image_tokens import count_image_tokens, image_cap, prompt_length
from vlm_unsloth.data.loaders import DataSpec, load_sft_dataset
from vlm_unsloth.data.records import to_chat_template_messages
from vlm_unsloth.data.splits import DEMO_DIR
from vlm_unsloth.errors import ConfigError
from vlm_unsloth.infer.generation import _inputs, generate_answers, load_for_inference
from vlm_unsloth.models.lora import (
    ATTENTION_TAGS,
    MLP_TAGS,
    LoraArgs,
    linear_leaf_names,
    select_lora_targets,
)
from vlm_unsloth.train.sft import train_sft

CPU_HF = dict(backend="hf", device="cpu", dtype="float32", why="test")


def _under(family, part: str, name: str) -> bool:
    """Whether parameter or module `name` (PEFT-wrapped or not) lies under the family's `part`
    (a module path such as family.vision_tower)."""
    return f"{part}." in name


def _vision_parameters(model, family) -> list:
    return [p for n, p in model.named_parameters() if _under(family, family.vision_tower, n)]


def _assert_gradient_reaches_the_images(model, family, pixel_values) -> None:
    """The loss's gradient reaches the images: the vision tower's LoRA weights, or, where LoRA
    cannot adapt the tower (no linear layer: Gemma 3n's MobileNet), the pixels through it."""
    vision = [p for p in _vision_parameters(model, family) if p.requires_grad]
    if family.vision_tower_has_linear_layers:
        assert vision and any(p.grad is not None and p.grad.abs().sum() > 0 for p in vision)
    else:
        assert not vision and pixel_values.grad is not None and pixel_values.grad.abs().sum() > 0


def _image_inputs(processor, family) -> set[str]:
    """What the family's processor makes for a prompt with an image besides the text's ids and
    mask: what a forward needs for the image to count."""
    text = processor.apply_chat_template(
        _record("red")["messages"][:1], tokenize=False, add_generation_prompt=True
    )
    image = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), "white")
    batch = processor(
        text=[text], images=images_argument([[image]], family), add_special_tokens=False,
        return_tensors="pt",
    )  # fmt: skip
    return set(batch) - {"input_ids", "attention_mask"}


# =============================================================================================
# The tiny checkpoint and its image tokens


@each_family()
def test_tiny_checkpoint_is_an_ordinary_model_folder(name, tiny_ref):
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from vlm_unsloth.models.tiny import tiny_processor

    folder, family = tiny_ref(name).path, tiny_ref(name).family
    assert AutoConfig.from_pretrained(folder).model_type == family.model_type
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    # The classes the family's builder made (the hub's): the Auto classes find them again.
    built = tiny_processor(family.architecture, real_size=False)
    assert type(processor) is type(built)
    assert type(model).__name__ == family.architecture.model_class
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


@each_family()
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
    if family.image_scheme.expand_prompt is None:  # (Gemma's newlines merge with the text)
        template_ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        # Each image's placeholder in the template becomes text_tokens positions.
        expected = len(template_ids) + sum(c.text_tokens - 1 for c in counts)
        assert batch["input_ids"].shape[1] == expected
    if family.images_by_cross_attention:  # Mllama: one <|image|> a picture, tiles aside
        assert placeholders == count == sum(c.text_tokens for c in counts)
        tiles_used = batch["aspect_ratio_mask"][0].sum(dim=-1).tolist()
        assert tiles_used == [c.tiles for c in counts]
        return
    assert placeholders == sum(c.vision_tokens for c in counts)
    # What each image-token scheme's processor also says about the images.
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
    elif family.image_scheme.name == "pixtral":  # the resized (width, height) of each image
        sizes_seen = [(int(w), int(h)) for h, w in batch["image_sizes"].tolist()]
        assert sizes_seen == [c.resized for c in counts]
    elif family.image_scheme.name == "patch-budget":  # patches padded to the budget
        settings = family.image_scheme.settings(processor)
        pool = settings["pooling_kernel_size"] ** 2
        assert batch["pixel_values"].shape[:2] == (count, settings["max_soft_tokens"] * pool)
        patches = (batch["image_position_ids"] != -1).all(dim=-1).sum(dim=-1)
        assert [int(p) // pool for p in patches] == [c.vision_tokens for c in counts]
        assert batch["mm_token_type_ids"].sum() == placeholders  # 1 on each soft token


def _sizes_dataset(folder, sizes) -> str:
    (folder / "images").mkdir(parents=True)
    rows = []
    for index, (width, height) in enumerate(sizes):
        name = f"images/{index:03d}.png"
        Image.new("RGB", (width, height), (200, 40 + index % 200, 40)).save(folder / name)
        rows.append({"image": name, "question": "What colour is it?", "answer": "red"})
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


# Tiny, extreme and odd sizes, and sizes either side of every --max-side below.
SIZES = [
    (1, 1), (3, 700), (700, 3), (60, 40), (84, 84), (127, 129), (300, 200), (500, 333),
    (640, 480), (767, 769), (1000, 1000), (1025, 1023), (2000, 11), (1600, 1200), (300, 4500),
]  # fmt: skip


# How far past --max-side a family's processor may take an image: Qwen2-VL's and Qwen2.5-VL's
# round each side to the nearest multiple of 28 px (so up by 14 px at most).
ROUNDED_PAST_MAX_SIDE = {"qwen2-vl": 14, "qwen2.5-vl": 14}


@each_family()
@pytest.mark.parametrize("max_side", [768, 1024, 300])
def test_inspect_data_counts_what_the_processor_makes_and_never_cuts_an_image(
    name, max_side, tmp_path, tiny_ref, tiny_processor, capsys
):
    """inspect_data's count of every row equals the processor's input_ids; rows over
    --max-seq-length are rejected whole (never truncated inside their image tokens), and so are
    the images the family's processor cannot take (its aspect-ratio limit, its smallest side);
    the image the model sees is never longer than --max-side (one tile at least, for SmolVLM)."""
    from vlm_unsloth.data.images import cap_longest_side
    from vlm_unsloth.train.inspect import inspect_dataset

    sizes = SIZES + [(random.Random(i).randint(1, 2500), random.Random(-i).randint(1, 2500))
                     for i in range(1, 6)]  # fmt: skip
    dataset = _sizes_dataset(tmp_path, sizes)
    family, processor = tiny_ref(name).family, tiny_processor(name)

    def taken(size) -> bool:
        """Whether the family's processor takes the image as --max-side caps it."""
        width, height = cap_longest_side(*size, image_cap(family, max_side, processor))
        limit = family.max_aspect_ratio
        shape_ok = limit is None or max(width, height) / min(width, height) <= limit
        return shape_ok and min(width, height) >= family.min_image_side

    image_reasons = {"bad_aspect_ratio", "image_too_small"}
    everything = inspect_dataset(
        DataArgs(dataset=dataset, max_side=max_side, max_seq_length=100_000), model=name
    )
    assert everything.kept_count == sum(taken(size) for size in sizes)
    assert {r.reason for r in everything.rejected} <= image_reasons
    assert not any(taken(sizes[r.index]) for r in everything.rejected)
    totals = sorted(set(everything.token_counts))
    # The rows above the median are too long (all of them, where every image costs the same:
    # Gemma 3's, Mllama's).
    limit = totals[len(totals) // 2] if len(totals) > 1 else totals[0] - 1
    capsys.readouterr()
    report = inspect_dataset(
        DataArgs(dataset=dataset, max_side=max_side, max_seq_length=limit), model=name
    )
    printed = capsys.readouterr().out
    too_long = [r for r in report.rejected if r.reason == "too_long"]
    assert len(too_long) == sum(t > limit for t in everything.token_counts) > 0
    assert {r.reason for r in report.rejected} - image_reasons == {"too_long"}
    if report.token_counts:  # (the table of the kept rows' lengths)
        assert f"max_seq_length {limit}" in printed and str(max(report.token_counts)) in printed
    collator = SftCollator(processor, family, max_side=max_side, train_on_prompt=False)
    image_id = processor.tokenizer.convert_tokens_to_ids(family.image_token)
    longest = max_side + ROUNDED_PAST_MAX_SIDE.get(family.key, 0)
    if family.image_scheme.name == "idefics3":  # an image under one tile is one tile-sized view
        longest = max(longest, processor.image_processor.max_image_size["longest_edge"])
    elif family.image_scheme.name == "mllama":  # `resized` is the canvas of whole tiles
        tile = processor.image_processor.size["height"]
        longest = -(-max_side // tile) * tile
    elif family.image_scheme.name == "patch-budget":  # rescaled, up too, to the token budget
        # (--max-side bounds the detail decoded; the budget the size: a thin image is one row
        # of pooled patches as long as the budget's tokens)
        settings = family.image_scheme.settings(processor)
        pooled = settings["patch_size"] * settings["pooling_kernel_size"]
        longest = max(longest, settings["max_soft_tokens"] * pooled)
    for record in everything.kept:
        batch = collator([record])
        size = Image.open(record["images"][0]["path"]).size
        capped = cap_longest_side(*size, image_cap(family, max_side, processor))
        expected = count_image_tokens(family, *capped, processor)
        # inspect_data's count is the processor's length, image tokens whole.
        assert batch["input_ids"].shape[1] == record["num_tokens"], (record["source"], size)
        in_sequence = expected.text_tokens if family.images_by_cross_attention else (
            expected.vision_tokens
        )  # fmt: skip
        assert int((batch["input_ids"][0] == image_id).sum()) == in_sequence
        assert max(expected.resized) <= longest


# =============================================================================================
# Labels: what is supervised


def _answers_as_rendered(processor, family, record) -> list[str]:
    """Each answer as the chat template writes it after the assistant marker (SmolVLM's keeps
    the space of "Assistant: red")."""
    text = processor.apply_chat_template(
        to_chat_template_messages(record["messages"]), tokenize=False
    )
    return [part.split(family.end_of_turn)[0] for part in text.split(family.response_part)[1:]]


@each_family()
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


@each_family()
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


# =============================================================================================
# LoRA: which modules are adapted


@each_family()
def test_switches_split_the_towers_and_leave_the_connector_out(name, tiny_ref):
    """The vision/language and attention/MLP switches pick whole groups of the two towers'
    layer stacks; the connector (the family's `connector`: Qwen's merger, SmolVLM's modality
    projection, the multi-modal projectors) and lm_head are never adapted, as by Unsloth: train
    them fully with --modules-to-save."""
    from transformers import AutoModelForImageTextToText

    family = tiny_ref(name).family
    assert family.vision_tower and family.language_model and family.connector, family.key
    model = AutoModelForImageTextToText.from_pretrained(tiny_ref(name).path)
    vision, language = f"{family.vision_tower}.", f"{family.language_model}."
    modules = dict(model.named_modules())
    assert vision[:-1] in modules and language[:-1] in modules
    assert any(n.rsplit(".", 1)[-1] == family.connector for n in modules)  # the connector exists
    linear = linear_leaf_names(model)
    # Every attention and MLP Linear of the towers' layer stacks (their numbered layers or
    # blocks): a stack's other linears (Gemma 3n's AltUp, LAuReL and per-layer input gates)
    # stay unadapted, as by Unsloth.
    towers_at = f"({re.escape(vision)}|{re.escape(language)})"
    parts = "|".join(ATTENTION_TAGS + MLP_TAGS)
    stack = re.compile(rf"{towers_at}(\w+\.)*(layers|blocks)\.\d+\.")
    tagged = re.compile(rf"{towers_at}(\w+\.)*(layers|blocks)\.\d+\..*({parts})")
    # Blocks no backend adapts (LFM2's short convolutions: no attention/MLP tag in their path).
    unadapted = [
        n for n in linear if stack.match(n) and any(f".{b}." in n for b in family.unadapted_blocks)
    ]
    assert bool(unadapted) == bool(family.unadapted_blocks), family.unadapted_blocks
    # Gemma 4's per-layer-input gate and projection: in the stacks, neither attention nor MLP.
    for leaf in family.unadapted_layer_linears:
        assert any(stack.match(n) and n.endswith(f".{leaf}") for n in linear), leaf
    # Unsloth's vision + MLP switches also take the family's flat vision Linears (Gemma 3n's
    # vision embedder projection, the one linear layer of its image path; Gemma 4's patch
    # embedder and connector projections).
    flat = [n for n in linear if any(n.endswith(f".{p}") for p in family.flat_vision_linears)]
    assert len(flat) == len(family.flat_vision_linears)
    left_out = set(unadapted) | {
        n for n in linear if n.rsplit(".", 1)[-1] in family.unadapted_layer_linears
    }
    towers = [n for n in linear if n in flat or (tagged.match(n) and n not in left_out)]
    everything = select_lora_targets(model, LoraArgs())
    in_vision = any(n.startswith(vision) for n in everything)
    assert everything == towers and in_vision == family.vision_tower_has_linear_layers
    connector = [n for n in linear if f".{family.connector}." in f".{n}." and n not in flat]
    assert not set(connector) & set(everything) and "lm_head" not in everything
    only_language = select_lora_targets(model, LoraArgs(finetune_vision_layers=False))
    assert only_language and all(n.startswith(language) for n in only_language)
    only_vision = select_lora_targets(model, LoraArgs(finetune_language_layers=False))
    assert only_vision and all(n.startswith(vision) or n in flat for n in only_vision)
    if not family.vision_tower_has_linear_layers:  # no attention on the image path to adapt
        with pytest.raises(ConfigError, match="no linear layer"):
            select_lora_targets(
                model, LoraArgs(finetune_language_layers=False, finetune_mlp_modules=False)
            )
    assert set(only_vision) | set(only_language) == set(everything)
    attention = select_lora_targets(model, LoraArgs(finetune_mlp_modules=False))
    mlp = select_lora_targets(model, LoraArgs(finetune_attention_modules=False))
    assert attention and mlp and not set(attention) & set(mlp)
    assert set(attention) | set(mlp) == set(everything)
    assert set(flat) <= set(mlp)  # (Unsloth adds them under the MLP switch)


@each_family()
def test_modules_to_save_trains_the_connector_fully(name, tiny_ref, tiny_processor):
    """--modules-to-save <connector>: a full trainable copy that the loss reaches (Gemma's bare
    projector matrix included), saved with the adapter; everything else trainable is LoRA."""
    from vlm_unsloth.models.device import DeviceSetup
    from vlm_unsloth.models.hf_backend import add_lora, load

    ref = tiny_ref(name)
    model, _ = load(
        ref.path, family=ref.family, quantization="16bit", setup=DeviceSetup(**CPU_HF),
        max_seq_length=512,
    )  # fmt: skip
    connector = ref.family.connector
    peft_model = add_lora(
        model, LoraArgs(modules_to_save=[connector]), family=ref.family, seed=0, adapter=None,
        gradient_checkpointing=False,
    )  # fmt: skip
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "modules_to_save" in n for n in trainable)
    saved = {n: p for n, p in trainable.items() if "modules_to_save" in n}
    assert saved and all(connector in n for n in saved)
    collator = SftCollator(tiny_processor(name), ref.family, max_side=768, train_on_prompt=False)
    peft_model(**collator([_record("red"), _record("blue")])).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in saved.values())


@each_family()
def test_4bit_keeps_the_familys_float_modules_and_trains(name, tiny_ref, tiny_processor):
    """--quantization 4bit (bitsandbytes runs 4-bit on CPU): the family's unquantized modules
    stay float Linears (SigLIP2 casts its pixels to its patch embedding's weight dtype: packed
    into uint8, the step failed with "only Tensors of floating point dtype can require
    gradients"), the rest is 4-bit, and a LoRA step with gradient checkpointing reaches the
    vision tower."""
    from vlm_unsloth.models.device import DeviceSetup
    from vlm_unsloth.models.hf_backend import add_lora, load

    ref = tiny_ref(name)
    model, processor = load(
        ref.path, family=ref.family, quantization="4bit", setup=DeviceSetup(**CPU_HF),
        max_seq_length=512,
    )  # fmt: skip
    kept = {n: m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in
            ref.family.unquantized_modules}  # fmt: skip
    assert bool(kept) == bool(ref.family.unquantized_modules)
    assert all(type(m) is torch.nn.Linear for m in kept.values()), kept
    assert all(m.weight.dtype == torch.float32 for m in kept.values())
    assert any(m.weight.dtype == torch.uint8 for m in model.modules() if hasattr(m, "weight")
               and isinstance(m, torch.nn.Linear))  # fmt: skip
    assert type(model.get_output_embeddings()) is torch.nn.Linear  # transformers' own skip kept
    peft_model = add_lora(
        model, LoraArgs(), family=ref.family, seed=0, adapter=None, gradient_checkpointing=True
    )
    peft_model.train()
    collator = SftCollator(processor, ref.family, max_side=768, train_on_prompt=False)
    loss = peft_model(**collator([_record("red"), _record("green", size=(160, 220))])).loss
    assert torch.isfinite(loss)
    loss.backward()
    # The image path's LoRA: the tower's, or (an all-convolution tower: Gemma 3n) the vision
    # linears Unsloth adapts outside it.
    vision = [p for n, p in peft_model.named_parameters() if "lora_" in n and (
              _under(ref.family, ref.family.vision_tower, n)
              or any(f".{path}." in n for path in ref.family.flat_vision_linears))]  # fmt: skip
    assert vision and any(p.grad is not None and p.grad.abs().sum() > 0 for p in vision)


# =============================================================================================
# Training steps: the images reach the loss


@each_family()
def test_forward_backward_reaches_the_vision_tower(name, tiny_ref, tiny_processor):
    from transformers import AutoModelForImageTextToText

    ref = tiny_ref(name)
    model = AutoModelForImageTextToText.from_pretrained(ref.path)
    collator = SftCollator(tiny_processor(name), ref.family, max_side=768, train_on_prompt=False)
    batch = collator([_record("red"), _record("green", size=(160, 220))])
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    vision = _vision_parameters(model, ref.family)
    assert vision and any(p.grad is not None and p.grad.abs().sum() > 0 for p in vision)


@each_family()
def test_hf_backend_lora_training_lowers_the_loss(name, tiny_ref):
    from vlm_unsloth.models.device import DeviceSetup
    from vlm_unsloth.models.loading import count_parameters, load_model

    loaded = load_model(
        ModelArgs(model=name, backend="hf"), LoraArgs(lora_r=8, lora_alpha=16),
        DeviceSetup(**CPU_HF), seed=0,
    )  # fmt: skip
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


@each_family()
def test_images_reach_the_dpo_loss(name, tmp_path):
    import math

    from test_dpo import _coloured_images, _perturb_adapter, _records, _trainer

    from vlm_unsloth.train.dpo import logits_cover_input_ids

    loaded, trainer, _ = _trainer(name, tmp_path)
    collator = trainer.data_collator
    coloured = collator(_records(_coloured_images()))
    blank = collator(_records([Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), "white")] * 4))
    assert torch.equal(coloured["input_ids"], blank["input_ids"])  # only the pixels differ
    assert coloured["input_ids"].shape[0] == 8  # 4 chosen rows, then 4 rejected rows
    # Everything the processor makes for an image reaches the loss's batch, one entry a row
    # (pixel_values aside: Qwen's are the rows' patches, flattened).
    for key in _image_inputs(loaded.processor, loaded.family) - {"pixel_values"}:
        assert coloured[key].shape[0] == 8, key
    if loaded.family.images_by_cross_attention:
        # Cross-attention inputs, aligned with the whole conversation (TRL's own collator
        # builds them for the prompt alone).
        assert coloured["cross_attention_mask"].shape[:2] == coloured["input_ids"].shape
    elif loaded.family.image_scheme.name in ("qwen", "qwen3"):
        assert coloured["image_grid_thw"].shape == (8, 3)
        assert coloured["pixel_values"].shape[0] == int(coloured["image_grid_thw"].prod(-1).sum())
        assert coloured["mm_token_type_ids"].shape == coloured["input_ids"].shape
    elif loaded.family.image_scheme.name in ("gemma3", "gemma3n"):  # one square per image
        assert coloured["pixel_values"].shape[0] == 8  # image attention needs token_type_ids
        assert coloured["token_type_ids"].shape == coloured["input_ids"].shape
    elif loaded.family.image_scheme.name == "idefics3":  # one row of views per conversation
        assert coloured["pixel_values"].shape[0] == 8
        assert coloured["pixel_attention_mask"].shape[0] == 8
    elif loaded.family.image_scheme.name == "pixtral":  # every image, with its size
        assert coloured["image_sizes"].shape == (8, 2)

    trainer.model.train()
    _perturb_adapter(trainer.model)  # policy != reference, so the loss depends on both passes
    coloured["pixel_values"].requires_grad_(True)  # where no LoRA weight is in the tower
    with logits_cover_input_ids(loaded):
        reference_coloured = torch.cat(trainer.compute_ref_log_probs(trainer.model, coloured))
        reference_blank = torch.cat(trainer.compute_ref_log_probs(trainer.model, blank))
        loss_coloured = trainer.compute_loss(trainer.model, coloured)
        loss_blank = trainer.compute_loss(trainer.model, blank)
    print(name, "reference log p (coloured):", reference_coloured.tolist())
    print(name, "reference log p (blank):   ", reference_blank.tolist())
    print(name, "DPO loss coloured", loss_coloured.item(), "blank", loss_blank.item())
    assert (reference_coloured - reference_blank).abs().max() > 1e-3
    assert abs(loss_coloured.item() - loss_blank.item()) > 1e-4
    assert abs(loss_coloured.item() - math.log(2)) > 1e-3  # the perturbed policy was scored
    loss_coloured.backward()
    _assert_gradient_reaches_the_images(trainer.model, loaded.family, coloured["pixel_values"])


@each_family()
def test_images_reach_the_grpo_policy_log_probabilities_in_the_loss(name, tmp_path, one_thread):
    from test_grpo import _loss_batch, _loss_path_logps, _trainer

    from vlm_unsloth.train.grpo_trainer import media_token_ids

    loaded, trainer = _trainer(name, tmp_path)
    # The sampling settings reach TRL: image and layout tokens suppressed, and answers end at
    # the family's end of turn (what SFT taught), not only at the tokenizer's EOS.
    tokenizer = loaded.processor.tokenizer
    suppressed = trainer.args.generation_kwargs["suppress_tokens"]
    assert suppressed == media_token_ids(tokenizer, loaded.family)
    eos = loaded.model.generation_config.eos_token_id
    assert tokenizer.convert_tokens_to_ids(loaded.family.end_of_turn) in (
        [eos] if isinstance(eos, int) else eos
    )
    inputs = _loss_batch(trainer)
    assert inputs["advantages"].abs().sum() > 0  # answers differ, so the loss has a gradient
    # Prompts end as at inference: Qwen3.5's with an empty think block (answers follow it).
    prompt = tokenizer.decode(inputs["prompt_ids"][0])
    think = "<think>\n\n</think>\n\n" if loaded.family.template_thinks else ""
    assert prompt.endswith(loaded.family.response_part + think), prompt[-60:]
    rows = inputs["prompt_ids"].size(0)
    assert rows == 4 and "pixel_values" in inputs
    # Everything the processor makes for an image reaches the loss, one entry a row (Mllama's
    # aspect ratios included, which TRL drops), but a cross-attention mask: the prompt's would
    # not cover the answer, so the loss forward builds one over the whole sequence.
    needed = _image_inputs(loaded.processor, loaded.family) - {"pixel_values"}
    if loaded.family.images_by_cross_attention:
        needed.discard("cross_attention_mask")
        assert {"aspect_ratio_ids", "aspect_ratio_mask"} <= needed
    for key in needed:
        assert inputs[key].size(0) == rows, key

    white = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), "white")
    images = [[white]] * rows if loaded.family.nested_images else [white] * rows
    blank = loaded.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    assert blank.shape == inputs["pixel_values"].shape  # only the pixels change
    mask = inputs["completion_mask"].bool()
    real = _loss_path_logps(trainer, inputs)
    again = _loss_path_logps(trainer, inputs)
    blanked = _loss_path_logps(trainer, {**inputs, "pixel_values": blank})
    print(name, "mean |Δ log p| with blank images:", (real - blanked)[mask].abs().mean().item())
    assert (real - again)[mask].abs().max() < 1e-5
    assert (real - blanked)[mask].abs().max() > 1e-3

    trainer.model.zero_grad()
    inputs["pixel_values"].requires_grad_(True)  # where no LoRA weight is in the tower
    trainer._compute_loss(trainer.model, inputs).backward()
    _assert_gradient_reaches_the_images(trainer.model, loaded.family, inputs["pixel_values"])


# =============================================================================================
# Inference


@each_family()
def test_batched_greedy_answers_equal_one_by_one(name, loaded, demo_records):
    model = loaded(name)
    batch = _inputs(model, demo_records, SIDE, None)
    assert (batch["attention_mask"] == 0).any(), "rows of equal length would not test padding"
    assert (batch["attention_mask"][:, -1] == 1).all(), "left padding: every prompt ends aligned"
    # What makes equal answers expected: each row's next-token scores, left-padded in the batch
    # and alone, agree to float rounding (the near-tie rule below alone would pass a broken
    # batch whose first step happened to be a near-tie).
    first_scores = _next_token_scores(model, batch)
    for row, record in enumerate(demo_records):
        alone = _next_token_scores(model, _inputs(model, [record], SIDE, None))[0]
        torch.testing.assert_close(first_scores[row], alone, atol=1e-3, rtol=1e-3)
    together = generate_answers(model, demo_records, GREEDY, max_side=SIDE)
    one_by_one = [generate_answers(model, [r], GREEDY, max_side=SIDE)[0] for r in demo_records]
    assert all(answer for answer in together)
    for record, batched, alone in zip(demo_records, together, one_by_one, strict=True):
        if batched != alone:
            # Padding changes float rounding by ~1e-6: that may only ever break a near-tie
            # between two tokens (random tiny weights have some). Up to the first such step
            # the answers must agree.
            agreed = _greedy_text_before_a_near_tie(model, record)
            assert batched.startswith(agreed) and alone.startswith(agreed), (batched, alone)


def _next_token_scores(model, batch) -> torch.Tensor:
    """The float32 logits of each row's next token (the last position: prompts are left-padded)."""
    with torch.inference_mode():
        return model.model(**batch).logits[:, -1].float()


def _greedy_text_before_a_near_tie(model, record, margin: float = 1e-3) -> str:
    """The one-row greedy answer up to the first step whose two best logits are within
    `margin`."""
    from vlm_unsloth.infer.generation import _stop_tokens

    batch = _inputs(model, [record], SIDE, None)
    with torch.inference_mode():
        output = model.model.generate(
            **batch,
            **GREEDY.generate_kwargs(),
            **_stop_tokens(model),
            output_scores=True,
            return_dict_in_generate=True,
        )
    tokens = output.sequences[0, batch["input_ids"].shape[1] :]
    for step, scores in enumerate(output.scores):
        top = scores[0].float().topk(2).values
        if top[0] - top[1] < margin:
            tokens = tokens[:step]
            break
    return model.processor.tokenizer.decode(tokens, skip_special_tokens=True).strip()


@each_family()
def test_streamed_pieces_join_to_the_greedy_answer(name, loaded, demo_records):
    from vlm_unsloth.infer.generation import stream_answer

    model = loaded(name)
    pieces = list(stream_answer(model, demo_records[1], GREEDY, max_side=SIDE))
    assert len(pieces) >= 3, pieces
    expected = generate_answers(model, demo_records[1:2], GREEDY, max_side=SIDE)[0]
    assert expected and "".join(pieces).strip() == expected


@each_family()
def test_infer_cli_streams_one_answer_to_stdout(name, loaded, capsys):
    from vlm_unsloth.cli import infer_main
    from vlm_unsloth.infer.generation import image_record

    image = DEMO_DIR / "images" / "bar_0301.png"
    code = infer_main(
        ["--model", name, "--backend", "hf", "--image", str(image), "--prompt",
         "What is the value of Lime?", "--max-new-tokens", "12", "--max-side", str(SIDE)]
    )  # fmt: skip
    assert code == 0
    record = image_record(str(image), "What is the value of Lime?")
    expected = generate_answers(loaded(name), [record], GREEDY, max_side=SIDE)[0]
    assert expected and capsys.readouterr().out.strip() == expected


# =============================================================================================
# End to end (slow): SFT's run folder, resume and merge; batch sizes; GRPO; learning


def _records_of(path, rows: int | None = None) -> list[dict]:
    dataset = load_sft_dataset(DataSpec(dataset=str(path)))
    return list(dataset if rows is None else dataset.select(range(rows)))


def _sft(name, output, callbacks=(), **train):
    """A short run on the demo charts, capped at 256 px: these tests check the mechanics."""
    return train_sft(
        ModelArgs(model=name, backend="hf"),
        LoraArgs(lora_r=8, lora_alpha=16, lora_dropout=0.0),
        DataArgs(max_samples=16, max_side=256),
        TrainArgs(output_dir=str(output), **{"max_steps": 2, "learning_rate": 1e-3, **train}),
        extra_callbacks=list(callbacks),
    )


@pytest.mark.slow
@each_family()
def test_sft_trains_saves_reloads_resumes_and_merges(name, tmp_path):
    """One straight run feeds every check of the run folder: its files and metrics, the adapter
    reloaded for generation, the merged model; a second run, interrupted (a real SIGINT) and
    resumed, ends with the straight run's adapter."""
    from safetensors.torch import load_file
    from test_sft import _InterruptAt

    from vlm_unsloth.infer.args import GenerationArgs
    from vlm_unsloth.infer.trained_run import resolve_adapter

    # A constant learning rate: the interrupted run's schedule is the straight run's.
    train = dict(batch_size=2, grad_accum=1, learning_rate=1e-2, save_steps=2,
                 lr_scheduler_type="constant", warmup_ratio=0.0, max_steps=4)  # fmt: skip
    output = tmp_path / "straight"
    result = _sft(name, output, save_merged=True, **train)
    produced_files = (
        "run_config.yaml", "metrics.jsonl", "loss_curve.png", "summary.json",
        "rejected_rows.jsonl", "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors", "adapter/processor_config.json",
    )  # fmt: skip
    for produced in produced_files:
        assert (output / produced).is_file(), produced
    metrics = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    logged = [m for m in metrics if "loss" in m]
    assert [m["step"] for m in logged] == [1, 2, 3, 4]
    assert all({"learning_rate", "grad_norm"} <= set(m) for m in logged)
    assert all(m["samples_per_second"] > 0 and m["tokens_per_second"] > 0 for m in logged[1:])
    assert result.summary["global_step"] == 4
    weights = load_file(output / "adapter" / "adapter_model.safetensors")
    assert any("lora_B" in key and tensor.abs().sum() > 0 for key, tensor in weights.items())

    # Reloaded for generation: the adapter really changes the model.
    run = resolve_adapter(str(output), None)
    assert run.base_model == name and run.max_side == 256
    tuned = load_for_inference(ModelArgs(model=name, backend="hf"), run.adapter_dir)
    records = _records_of(DEMO_DIR / "eval.jsonl", 2)
    answers = generate_answers(tuned, records, GenerationArgs(max_new_tokens=4), max_side=256)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    batch = _inputs(tuned, records[:1], 256, None)
    merged = transformers.AutoModelForImageTextToText.from_pretrained(output / "merged")
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        merged_logits, tuned_logits = merged(**batch).logits, tuned.model(**batch).logits
        with tuned.model.disable_adapter():
            base_logits = tuned.model(**batch).logits
    # The merged model is the adapted one: measured against what the adapter changes, so the
    # check holds on any CPU's rounding and fails if the merge lost (or doubled) the adapter.
    effect = (tuned_logits - base_logits).abs().max()
    assert effect > 1e-2, "four steps at lr 1e-2 must move the logits"
    assert (merged_logits - tuned_logits).abs().max() < 1e-2 * effect

    # Ctrl-C during step 3 (sent at the end of step 2) stops after it with a checkpoint; the
    # resumed run ends where the straight one did.
    stopped = _sft(name, tmp_path / "resumed", [_InterruptAt(2)], **train)
    assert stopped.summary["interrupted"] and stopped.summary["global_step"] == 3
    resumed = _sft(name, tmp_path / "resumed", resume=True, **train)
    assert resumed.summary["global_step"] == 4
    assert_same_adapters(output, tmp_path / "resumed")


def _inner_model_class(ref):
    """The class of the VLM's inner model (below the LM head), built on the meta device."""
    config = transformers.AutoConfig.from_pretrained(ref.path)
    with torch.device("meta"):
        return type(transformers.AutoModelForImageTextToText.from_config(config).model)


@pytest.mark.slow
@each_family()
def test_auto_batch_size_and_out_of_memory_recovery(name, tmp_path, tiny_ref, memory_limit):
    sgd = dict(batch_size=4, grad_accum=2, optim="sgd", weight_decay=0.0)
    plain_grads, split_grads = GradientRecorder(), GradientRecorder()
    _sft(name, tmp_path / "plain", [plain_grads], **sgd)
    calls = memory_limit(rows=2, model_class=_inner_model_class(tiny_ref(name)))
    split = _sft(name, tmp_path / "split", [split_grads], **sgd)
    assert calls["oom"] == 1 and split.summary["global_step"] == 2
    assert_same_gradients(plain_grads, split_grads)

    auto = _sft(name, tmp_path / "auto", batch_size="auto", effective_batch_size=8, max_steps=1)
    assert (auto.summary["batch_size"], auto.summary["grad_accum"]) == (2, 4)


@pytest.mark.slow
@each_family()
def test_train_grpo_logs_saves_and_resumes(name, tmp_path, one_thread):
    from test_grpo import _write_task

    from vlm_unsloth.cli import grpo_main

    train, evaluation = _write_task(tmp_path / "task")
    rewards_file = tmp_path / "my_rewards.py"
    rewards_file.write_text(
        "def seen_columns(completions, answer, source, images, **kwargs):\n"
        "    assert len(images[0]) == 1 and images[0][0].size == (84, 84), images[0]\n"
        "    return [float(len(a) > 2 and '.jsonl:' in s) for a, s in "
        "zip(answer, source)]\n"
    )
    output = tmp_path / "run"
    common = [
        "--model", name, "--backend", "hf", "--dataset", str(train),
        "--eval-dataset", str(evaluation), "--output-dir", str(output),
        "--rewards", "exact_match", f"{rewards_file}:seen_columns", "format",
        "--reward-weights", "1", "0.5", "0.2", "--beta", "0.04",
        "--num-generations", "2", "--batch-size", "2", "--grad-accum", "2",
        "--max-completion-length", "3", "--lora-r", "4", "--save-steps", "2",
        "--no-gradient-checkpointing", "--learning-rate", "1e-3",
    ]  # fmt: skip
    assert grpo_main([*common, "--max-steps", "2"]) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["job"] == "GRPO" and summary["global_step"] == 2
    for key in ("heldout_reward_before", "heldout_reward_after", "heldout_exact_match_before",
                "heldout_seen_columns_after", "heldout_format_after"):  # fmt: skip
        assert key in summary, key
    assert summary["heldout_seen_columns_before"] == 1.0  # answer and source reached it
    assert summary["heldout_rows_after"] == 4
    assert summary["seconds_per_step"] > 0 and summary["generated_tokens_per_second"] > 0
    assert "adapter disabled" in summary["reference"]  # a fresh adapter: no "ref" copy
    assert "pixel_values" in summary["model_inputs_first_step"]
    logged = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in logged if "loss" in row]
    for key in ("reward", "reward_std", "rewards/exact_match/mean", "rewards/exact_match/std",
                "rewards/seen_columns/mean", "rewards/format/std", "completions/mean_length",
                "kl", "seconds_per_step", "generated_tokens_per_second"):  # fmt: skip
        assert all(key in row for row in steps), key
    assert all(row["rewards/seen_columns/mean"] == 1.0 for row in steps)
    assert (output / "checkpoint-2").is_dir()
    assert (output / "adapter" / "adapter_config.json").is_file()
    assert not (output / "adapter" / "ref").exists()

    assert grpo_main([*common, "--max-steps", "3", "--resume"]) == 0
    resumed = json.loads((output / "summary.json").read_text())
    assert resumed["global_step"] == 3
    steps = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in steps if "loss" in row][-1] == 3

    # Again: finished as asked, so nothing is loaded or scored and nothing changes.
    from vlm_unsloth.train import steps as train_steps

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(train_steps, "load_model_for_training", must_not_be_called)
        assert grpo_main([*common, "--max-steps", "3", "--resume"]) == 0
    assert json.loads((output / "summary.json").read_text()) == resumed


# The colour task's recipe (tests/tasks.py) learns in 60 steps, except:
LEARNING_STEPS = {
    # At random init Qwen3.5's Gated DeltaNet layer passes almost nothing of the image tokens on
    # (the answer position's hidden state differs by 3e-5 between a red and a blue image after
    # it, by 0.5 after the full-attention layer): only its one full-attention layer reads the
    # image, and the loss leaves the answer-prior plateau (~0.2) after ~70 steps. 60 steps: 25%;
    # 150 steps: 100% (seeds 0 and 7).
    "qwen3.5": 200,
    # Gemma 4's tiny checkpoint (64 soft tokens an 84 px square image, upscaled to 384 px): an
    # earlier build of it measured 47.5% -> 100% with 150 steps; this one reaches 52.5% (see
    # NOT_LEARNING_YET).
    "gemma4": 150,
}

# Families whose tiny model does not learn the colour task yet, with the measured numbers. Their
# learning test is an xfail that CI does not run (83 s on a quiet 2-core machine for a known
# failure); `pytest --runxfail -m slow -k learns` runs it as an ordinary test: the day one
# learns, it passes and the family leaves this list.
NOT_LEARNING_YET = {
    # LoRA cannot adapt Gemma 3n's all-convolution MobileNet tower (only the vision embedder's
    # projection, as Unsloth): the language layers must read the colour through a frozen random
    # tower. 60 steps (CPU, 128 px): 0% -> 25.0% (blank images 25.0%), loss 6.5 -> 0.45, the
    # answer prior's plateau; without the activation-sparse layer 22.5%. An earlier attempt's
    # tiny config (no LoRA on the embedder): 47.5% at 60 steps, 67.5% at 150.
    "gemma3n": "frozen random MobileNet v5 tower: 25.0% after 60 steps (>= 95% needed)",
    # With a 32-token sliding window only the last ~20 of an image's 64 soft tokens reach the
    # answer: 25.0% (chance); the window is 128 now. The cause of the rest is not found.
    "gemma4": "150 steps (611 s on the busy 2-core machine, load ~5): base 0.0% -> fine-tuned "
    "52.5% held out, 25.0% on blank images; eval loss 0.27",
}


@pytest.mark.slow
@each_family()
def test_learns_what_only_the_image_shows_and_its_merged_model_answers_alike(
    name, tmp_path, tiny_ref, request
):
    """The colour task (tests/tasks.py): the base model at chance or below, fine-tuned >= 95%
    held-out exact match (evaluate's report, written by --eval-at-end), back to chance when
    every eval image is blank; and the merged model (--save-merged) answers as the adapter did.

    Measured on a busy 2-core machine (load ~6-8): 0% -> 100% for every family measured, 22.5%
    to 30% on blank images (chance 25%); 60 steps took 100-265 s (7-8 s on a quiet machine for
    SmolVLM2 and Pixtral)."""
    from vlm_unsloth.cli import train_sft_main
    from vlm_unsloth.infer.args import GenerationArgs, PromptDataArgs
    from vlm_unsloth.infer.evaluate import evaluate_adapter

    key = tiny_ref(name).family.key
    if key in NOT_LEARNING_YET and not request.config.option.runxfail:
        pytest.xfail(NOT_LEARNING_YET[key])  # not run (see NOT_LEARNING_YET)
    task = write_colour_task(tmp_path / "task")
    run = tmp_path / "run"
    steps = LEARNING_STEPS.get(key, 60)
    argv = [*colour_training_args(task, run, model=name, max_steps=steps), "--eval-at-end",
            "--save-merged"]  # fmt: skip
    assert train_sft_main(argv) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert (run / "eval" / "report.html").is_file()
    blank = evaluate_adapter(
        str(run), data_args=PromptDataArgs(dataset=str(task.blank_eval)),
        output_dir=tmp_path / "blank", num_samples=2,
    )  # fmt: skip
    base, tuned = metrics["base"]["exact_match"], metrics["fine_tuned"]["exact_match"]
    on_blank = blank.metrics["fine_tuned"]["exact_match"]
    seconds = json.loads((run / "summary.json").read_text())["wall_time_s"]
    print(f"{name}: base {base:.1%} -> fine-tuned {tuned:.1%}; blank images {on_blank:.1%}; "
          f"{steps} steps in {seconds} s")  # fmt: skip
    assert base <= 0.3 and tuned >= 0.95, metrics  # chance is 0.25
    assert on_blank <= 0.4  # 40 rows, chance 25%: without the image, back to chance

    # The merged model (base reloaded unquantized, adapter merged in) answers as the adapter did.
    predictions = [
        json.loads(line)
        for line in (run / "eval" / "predictions.jsonl").read_text().splitlines()[:8]
    ]
    merged = load_for_inference(ModelArgs(model=str(run / "merged"), backend="hf"), None)
    answers = generate_answers(merged, _records_of(task.eval, 8), GenerationArgs(), max_side=768)
    assert answers == [p["fine_tuned"] for p in predictions]
