"""GPU tests (marker `gpu`): DPO on the unsloth backend. Skipped without CUDA.

Run on the GPU machine:  python -m pytest -m gpu tests/test_gpu_dpo.py -s

Vision DPO has silently dropped images before; these record what reaches the model's forward in
the real training loop (a forward pre-hook inside the trainer's policy and reference passes).
"""

from __future__ import annotations

import pytest
from conftest import forward_input_recorder

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

# What each family's forward must receive for the image to count: Qwen's patch grid; Mllama's
# per-token cross-attention mask (pixel_values alone would be attended to by nothing).
IMAGE_INPUTS = {
    "tiny-qwen2-vl": ("pixel_values", "image_grid_thw"),
    "tiny-llama-3.2-vision": ("pixel_values", "aspect_ratio_ids", "cross_attention_mask"),
    # SmolVLM: a row of tile views (and which pixels are real); Pixtral: each image's size.
    "tiny-smolvlm": ("pixel_values", "pixel_attention_mask"),
    "tiny-smolvlm2": ("pixel_values", "pixel_attention_mask"),
    "tiny-pixtral": ("pixel_values", "image_sizes"),
    # Qwen3-VL also needs the image positions; Gemma 3's token_type_ids make attention inside
    # each image bidirectional (without them its forward runs, silently causal).
    "tiny-qwen3-vl": ("pixel_values", "image_grid_thw", "mm_token_type_ids"),
    "tiny-gemma3": ("pixel_values", "token_type_ids"),
    "tiny-qwen3.5": ("pixel_values", "image_grid_thw", "mm_token_type_ids"),
}


@pytest.mark.parametrize("name", list(IMAGE_INPUTS))
def test_train_dpo_on_the_unsloth_backend_feeds_the_images(name, tmp_path):
    from vlm_unsloth.config import DataArgs, ModelArgs
    from vlm_unsloth.families import TINY_MODEL_NAMES

    if not TINY_MODEL_NAMES[name].unsloth_trains:
        pytest.skip(f"{name}: Unsloth cannot train it ({TINY_MODEL_NAMES[name].unsloth_note})")
    from vlm_unsloth.models.lora import LoraArgs
    from vlm_unsloth.train.dpo import DpoArgs, DpoTrainArgs, train_dpo

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
        for key in IMAGE_INPUTS[name]:
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
