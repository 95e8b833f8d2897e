"""GPU tests (marker `gpu`): the unsloth backend on the tiny checkpoints. Skipped without CUDA.

Run on the GPU machine:  python -m pytest -m gpu tests/test_gpu.py -s

Every family is tried with FastVisionModel (load, LoRA, collator). A family whose Unsloth
training fails is marked `unsloth_trains=False` in families.py with the error in `unsloth_note`;
its unsloth training tests are then skipped and `--backend auto` must train it on hf instead
(test_backend_auto_trains_every_family).
"""

from __future__ import annotations

import itertools

import pytest

from vlm_unsloth.data.splits import DEMO_DIR

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

from conftest import TINY_MODELS  # noqa: E402

TINY = TINY_MODELS
NEW = TINY_MODELS  # --backend auto trains every family (Unsloth, or hf with a notice)
TRAINED = TINY_MODELS  # trained and streamed on the unsloth backend; skipped with the note
# for a family Unsloth cannot train (_unsloth_trains)


def _unsloth_trains(name: str) -> None:
    from vlm_unsloth.families import TINY_MODEL_NAMES

    family = TINY_MODEL_NAMES[name]
    if not family.unsloth_trains:
        pytest.skip(f"{name}: Unsloth cannot train {family.key} ({family.unsloth_note})")


FLAG_MIXES = [
    mix
    for mix in itertools.product([True, False], repeat=4)
    if (mix[0] or mix[1]) and (mix[2] or mix[3])
]


def _lora_module_names(model) -> set[str]:
    names = set()
    for name, _ in model.named_modules():
        if name.endswith(".lora_A"):
            names.add(name.removesuffix(".lora_A").split("base_model.model.", 1)[-1])
    return names


@pytest.mark.parametrize("name", TINY)
def test_tiny_checkpoint_loads_through_fast_vision_model(name):
    from vlm_unsloth.models.unsloth_backend import import_unsloth

    import_unsloth()
    from unsloth import FastVisionModel

    from vlm_unsloth.models.loading import resolve_model

    ref = resolve_model(name)
    model, processor = FastVisionModel.from_pretrained(ref.path, load_in_4bit=True)
    assert type(model).__name__.endswith("ForConditionalGeneration")
    assert processor.tokenizer.convert_tokens_to_ids(ref.family.image_token) is not None
    print(f"{name}: {type(model).__name__} loaded by FastVisionModel in 4-bit")


@pytest.mark.parametrize("name", TINY)
def test_the_processor_alone_counts_tokens_as_the_unsloth_backend_s_does(name):
    """Training validates its rows with the checkpoint's processor loaded alone, before the
    model (train/steps.load_training_data); on the unsloth backend it then trains with the
    processor FastVisionModel returns: both must count every demo row alike."""
    from vlm_unsloth.data.image_tokens import prepare_processor
    from vlm_unsloth.data.loaders import DataSpec, load_sft_dataset
    from vlm_unsloth.data.validation import validate_dataset
    from vlm_unsloth.models import unsloth_backend
    from vlm_unsloth.models.device import DeviceSetup
    from vlm_unsloth.models.loading import load_processor, resolve_model

    ref = resolve_model(name)
    setup = DeviceSetup(backend="unsloth", device="cuda", dtype="bfloat16", why="test")
    _, unsloths = unsloth_backend.load(
        ref.path, family=ref.family, quantization="4bit", setup=setup, max_seq_length=512
    )
    rows = load_sft_dataset(DataSpec(dataset=str(DEMO_DIR / "train.jsonl"))).select(range(40))
    counted = [
        validate_dataset(rows, family=ref.family, processor=processor, max_seq_length=4096)
        for processor in (load_processor(ref), prepare_processor(ref.family, unsloths))
    ]
    alone, backend = counted
    assert alone.kept_count == 40
    assert alone.token_counts == backend.token_counts and alone.rejected == backend.rejected


_BLOCK_COMPILED = """
import sys
from vlm_unsloth.models import unsloth_backend
from vlm_unsloth.models.device import DeviceSetup
from vlm_unsloth.models.loading import resolve_model
from vlm_unsloth.models.lora import LoraArgs

ref = resolve_model(sys.argv[1])
setup = DeviceSetup(backend="unsloth", device="cuda", dtype="bfloat16", why="test")
model, _ = unsloth_backend.load(
    ref.path, family=ref.family, quantization="4bit", setup=setup, max_seq_length=512
)
model = unsloth_backend.add_lora(
    model, LoraArgs(), family=ref.family, seed=0, adapter=None, gradient_checkpointing=True
)
layers = {type(m) for m in model.modules() if type(m).__name__.endswith("DecoderLayer")}
print("COMPILED", sorted(getattr(c.forward, "_unsloth_block_compiled", False) for c in layers))
"""


@pytest.mark.parametrize("name", ["tiny-qwen2-vl", "tiny-gemma3"])
def test_unsloth_compiles_decoder_blocks_except_for_gemma3(name):
    """The block-compile switch (families.py `unsloth_block_compile`) reaches Unsloth: Gemma 3's
    decoder layers stay stock, Qwen2-VL's are wrapped. A fresh process each: Unsloth wraps the
    layer classes for the whole process."""
    import os
    import subprocess
    import sys

    from vlm_unsloth.families import TINY_MODEL_NAMES

    env = {k: v for k, v in os.environ.items() if k != "UNSLOTH_BLOCK_COMPILE"}
    finished = subprocess.run(
        [sys.executable, "-c", _BLOCK_COMPILED, name],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-3000:]
    compiled = TINY_MODEL_NAMES[name].unsloth_block_compile
    assert f"COMPILED [{compiled}]" in finished.stdout, finished.stdout[-2000:]


@pytest.mark.parametrize("name", TINY)
def test_both_backends_adapt_the_same_modules(name):
    from vlm_unsloth.models.unsloth_backend import import_unsloth

    import_unsloth()
    from unsloth import FastVisionModel

    from vlm_unsloth.models import hf_backend
    from vlm_unsloth.models.device import DeviceSetup
    from vlm_unsloth.models.loading import count_parameters, resolve_model
    from vlm_unsloth.models.lora import LoraArgs

    ref = resolve_model(name)
    setup = DeviceSetup(backend="hf", device="cpu", dtype="float32", why="test")
    for vision, language, attention, mlp in FLAG_MIXES:
        args = LoraArgs(
            finetune_vision_layers=vision,
            finetune_language_layers=language,
            finetune_attention_modules=attention,
            finetune_mlp_modules=mlp,
        )
        base, _ = FastVisionModel.from_pretrained(ref.path, load_in_4bit=False, dtype=torch.float32)
        unsloth_model = FastVisionModel.get_peft_model(
            base,
            finetune_vision_layers=vision,
            finetune_language_layers=language,
            finetune_attention_modules=attention,
            finetune_mlp_modules=mlp,
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
        )
        hf_base, _ = hf_backend.load(
            ref.path, family=ref.family, quantization="16bit", setup=setup, max_seq_length=512
        )
        hf_model = hf_backend.add_lora(
            hf_base, args, family=ref.family, seed=0, adapter=None, gradient_checkpointing=False
        )
        unsloth_names, hf_names = _lora_module_names(unsloth_model), _lora_module_names(hf_model)
        assert unsloth_names == hf_names, (vision, language, attention, mlp)
        assert count_parameters(unsloth_model)[0] == count_parameters(hf_model)[0]
        print(
            name,
            (vision, language, attention, mlp),
            len(hf_names),
            "modules",
            count_parameters(hf_model)[0],
            "trainable",
        )


def _records(count: int = 4) -> list[dict]:
    import io

    from PIL import Image

    records = []
    for index, colour in zip(range(count), itertools.cycle(["red", "blue", "green"]), strict=False):
        buffer = io.BytesIO()
        Image.new("RGB", (200 + 20 * index, 160), colour).save(buffer, "PNG")
        records.append(
            {
                "messages": [
                    {"role": "user", "content": [
                        {"type": "image", "text": None},
                        {"type": "text", "text": "What colour is the square?"},
                    ]},
                    {"role": "assistant", "content": [{"type": "text", "text": colour}]},
                ],
                "images": [{"bytes": buffer.getvalue(), "path": None}],
                "source": f"test:{index + 1}",
            }
        )  # fmt: skip
    return records


@pytest.mark.parametrize("name", TINY)
def test_unsloth_collator_supervises_the_same_tokens_as_ours(name):
    from vlm_unsloth.models.unsloth_backend import import_unsloth, make_sft_collator

    import_unsloth()
    from unsloth import FastVisionModel

    from vlm_unsloth.data.collate import IGNORE_INDEX, SftCollator, UnslothRecordCollator
    from vlm_unsloth.data.image_tokens import prepare_processor
    from vlm_unsloth.models.loading import resolve_model

    ref = resolve_model(name)
    model, processor = FastVisionModel.from_pretrained(ref.path, load_in_4bit=False)
    prepare_processor(ref.family, processor)  # as load_model does on both backends
    ours = SftCollator(processor, ref.family, max_side=768, train_on_prompt=False)
    theirs = make_sft_collator(
        model, processor, ref.family, max_side=768, train_on_prompt=False, max_seq_length=2048
    )
    assert isinstance(theirs, UnslothRecordCollator)
    records = _records()
    our_batch, their_batch = ours(records), theirs(records)
    tokenizer = processor.tokenizer

    def supervised(batch, row):
        ids, labels = batch["input_ids"][row].tolist(), batch["labels"][row].tolist()
        kept = [i for i, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]
        return tokenizer.decode(kept)

    # Unsloth ends an answer at the tokenizer's EOS, else at the next turn. Where the family's
    # end-of-turn is not the EOS (Gemma 3: <end_of_turn> vs <eos>, as on the hub) it therefore
    # also supervises the newline the template writes after <end_of_turn>: one harmless token
    # (generation stops at <end_of_turn>) that the hf backend leaves out.
    after_end = "" if tokenizer.eos_token == ref.family.end_of_turn else "\n"
    for row in range(len(records)):
        ours_row, theirs_row = supervised(our_batch, row), supervised(their_batch, row)
        print(name, row, repr(ours_row), repr(theirs_row))
        assert ours_row.endswith(ref.family.end_of_turn)
        assert theirs_row in (ours_row, ours_row + after_end), row


@pytest.mark.parametrize("name", TRAINED)
def test_train_sft_on_the_unsloth_backend(name, tmp_path):
    _unsloth_trains(name)
    from vlm_unsloth.config import DataArgs, ModelArgs, TrainArgs
    from vlm_unsloth.models.lora import LoraArgs
    from vlm_unsloth.train.sft import train_sft

    result = train_sft(
        ModelArgs(model=name, backend="unsloth"),
        LoraArgs(),
        DataArgs(max_samples=16),
        TrainArgs(
            output_dir=str(tmp_path / "run"), max_steps=4, batch_size=2, grad_accum=2,
            save_merged=True,
        ),
    )  # fmt: skip
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert result.summary["global_step"] == 4
    assert result.summary["peak_gpu_memory_gib"] > 0
    assert (result.output_dir / "merged" / "config.json").is_file()

    # The adapter folder loads straight into FastVisionModel (base model found from its config).
    from unsloth import FastVisionModel

    model, processor = FastVisionModel.from_pretrained(str(result.adapter_dir), load_in_4bit=True)
    assert any("lora_A" in name for name, _ in model.named_parameters())
    print(name, "adapter reloaded by FastVisionModel:", type(model).__name__)


@pytest.mark.parametrize("name", TRAINED)
def test_streamed_answer_equals_the_greedy_answer_on_the_unsloth_backend(name):
    """Streaming runs generation in a thread with Unsloth's inference mode; the pieces must join
    to what `generate_answers` returns for the same record."""
    _unsloth_trains(name)  # (the backend is refused for a family it cannot train)

    from vlm_unsloth.config import ModelArgs
    from vlm_unsloth.infer.args import GenerationArgs
    from vlm_unsloth.infer.generation import (
        generate_answers,
        image_record,
        load_for_inference,
        stream_answer,
    )

    loaded = load_for_inference(ModelArgs(model=name, backend="unsloth"), None)
    assert loaded.setup.backend == "unsloth"
    image = DEMO_DIR / "images"
    record = image_record(str(sorted(image.iterdir())[0]), "What is the title of this chart?")
    greedy = GenerationArgs(max_new_tokens=12)
    pieces = list(stream_answer(loaded, record, greedy, max_side=768))
    assert len(pieces) >= 1
    assert "".join(pieces).strip() == generate_answers(loaded, [record], greedy, max_side=768)[0]


@pytest.mark.parametrize("name", NEW)
def test_backend_auto_trains_every_family(name, tmp_path, capsys):
    """`--backend auto` on a GPU: Unsloth where it trains the family, else hf with one notice."""
    from vlm_unsloth.cli import train_sft_main
    from vlm_unsloth.families import TINY_MODEL_NAMES

    output = tmp_path / "run"
    argv = ["--model", name, "--output-dir", str(output), "--max-steps", "2", "--max-samples",
            "4", "--batch-size", "2", "--grad-accum", "1"]  # fmt: skip
    assert train_sft_main(argv) == 0
    expected = "unsloth" if TINY_MODEL_NAMES[name].unsloth_trains else "hf"
    assert f"backend: {expected}" in (output / "run_config.yaml").read_text()
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert len(notes) == (expected == "hf"), notes
