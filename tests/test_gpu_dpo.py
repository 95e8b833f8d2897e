"""GPU tests (marker `gpu`): DPO on the unsloth backend. Skipped without CUDA.

Run on the GPU machine:  python -m pytest -m gpu tests/test_gpu_dpo.py -s

Vision DPO has silently dropped images before; these record what reaches the model's forward in
the real training loop (a forward pre-hook inside the trainer's policy and reference passes).
"""

from __future__ import annotations

import pytest
from conftest import TINY_MODELS, forward_input_recorder

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

# What each family's forward must receive for the image to count: what its processor makes for
# an image (Qwen's patch grid and positions, Mllama's per-token cross-attention mask, SmolVLM's
# views, Pixtral's sizes, Gemma 3's token types), derived from the processor.


@pytest.mark.parametrize("name", TINY_MODELS)
def test_train_dpo_on_the_unsloth_backend_feeds_the_images(name, tmp_path):
    from vlm_unsloth.config import DataArgs, ModelArgs
    from vlm_unsloth.families import TINY_MODEL_NAMES

    if not TINY_MODEL_NAMES[name].unsloth_trains:
        pytest.skip(f"{name}: Unsloth cannot train it ({TINY_MODEL_NAMES[name].unsloth_note})")
    from test_every_family import _image_inputs

    from vlm_unsloth.models.loading import load_processor, resolve_model
    from vlm_unsloth.models.lora import LoraArgs
    from vlm_unsloth.train.dpo import DpoArgs, DpoTrainArgs, train_dpo

    ref = resolve_model(name)
    image_inputs = _image_inputs(load_processor(ref), ref.family)
    recorder = forward_input_recorder()
    result = train_dpo(
        ModelArgs(model=name, backend="unsloth"),
        LoraArgs(),
        DataArgs(
            max_samples=8
        ),  # the shipped demo preference set (vlm_unsloth/data/demo/dpo_*.jsonl)
        DpoTrainArgs(output_dir=str(tmp_path / "run"), max_steps=3, batch_size=2, grad_accum=1),
        DpoArgs(accuracy_rows=8),
        extra_callbacks=[recorder],
    )
    assert result.summary["global_step"] == 3
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert not (result.adapter_dir / "ref").exists()
    assert result.summary["preference_rows_after"] == 8
    # One policy and one reference forward a step, each over chosen + rejected rows.
    assert len(recorder.calls) >= 6, recorder.calls
    for index, call in enumerate(recorder.calls[:6]):
        print(name, "forward", index, call)
        for key in image_inputs:
            assert key in call, (key, call)
        assert call["input_ids"][0] == 4  # 2 prompts x (chosen, rejected)
        if "image_grid_thw" in call:
            assert call["image_grid_thw"] == (4, 3)  # one image per row, both answers
        if "token_type_ids" in call:
            assert call["token_type_ids"] == call["input_ids"]
            assert call["pixel_values"][0] == 4
        if "cross_attention_mask" in call:
            assert call["cross_attention_mask"][:2] == call["input_ids"]
    metrics = (result.output_dir / "metrics.jsonl").read_text()
    assert "rewards/accuracies" in metrics and "rewards/margins" in metrics
