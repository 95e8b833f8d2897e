"""The names users type: every supported hub checkpoint maps to its family and the planner's
architecture offline; unknown names are refused with the list; and `--backend auto` gives a
family Unsloth cannot train to the hf backend (tested by flipping the family's flag)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from vlm_unsloth.errors import BackendError, ConfigError
from vlm_unsloth.families import FAMILIES, TINY_MODEL_NAMES, size_named
from vlm_unsloth.models import device
from vlm_unsloth.models.checkpoints import peek_family
from vlm_unsloth.models.random_weights import REAL_ARCHITECTURES
from vlm_unsloth.perf.memory_plan import (
    PlanArgs,
    architecture_of,
    default_tokens,
    plan_memory,
    planner_architecture,
)

# The checkpoints issue #18 lists, and the families' defaults, with their architectures.
NAMED = {
    "HuggingFaceTB/SmolVLM-Instruct": "smolvlm-instruct",
    "HuggingFaceTB/SmolVLM-256M-Instruct": "smolvlm-256m",
    "HuggingFaceTB/SmolVLM-500M-Instruct": "smolvlm-500m",
    "HuggingFaceTB/SmolVLM2-2.2B-Instruct": "smolvlm2-2.2b",
    "HuggingFaceTB/SmolVLM2-500M-Video-Instruct": "smolvlm2-500m",
    "HuggingFaceTB/SmolVLM2-256M-Video-Instruct": "smolvlm2-256m",
    "mistral-community/pixtral-12b": "pixtral-12b",
    "unsloth/Pixtral-12B-2409": "pixtral-12b",
    "unsloth/Qwen2-VL-7B-Instruct": "qwen2-vl-7b",
    "Qwen/Qwen2-VL-7B-Instruct": "qwen2-vl-7b",
    "unsloth/Qwen2-VL-7B-Instruct-bnb-4bit": "qwen2-vl-7b",
    "Qwen/Qwen2-VL-2B-Instruct": "qwen2-vl-2b",
    "unsloth/Qwen2.5-VL-7B-Instruct": "qwen2.5-vl-7b",
    "Qwen/Qwen2.5-VL-7B-Instruct": "qwen2.5-vl-7b",
    "Qwen/Qwen2.5-VL-3B-Instruct": "qwen2.5-vl-3b",
    "meta-llama/Llama-3.2-11B-Vision-Instruct": "llama-3.2-11b-vision",
    "unsloth/Llama-3.2-11B-Vision-Instruct": "llama-3.2-11b-vision",
    # issue #19
    "Qwen/Qwen3-VL-8B-Instruct": "qwen3-vl-8b",
    "Qwen/Qwen3-VL-4B-Instruct": "qwen3-vl-4b",
    "Qwen/Qwen3-VL-2B-Instruct": "qwen3-vl-2b",
    "unsloth/Qwen3-VL-8B-Instruct": "qwen3-vl-8b",
    "unsloth/Qwen3-VL-8B-Instruct-unsloth-bnb-4bit": "qwen3-vl-8b",
    "google/gemma-3-4b-it": "gemma-3-4b",
    "google/gemma-3-12b-it": "gemma-3-12b",
    "unsloth/gemma-3-4b-it": "gemma-3-4b",
    "unsloth/gemma-3-12b-it-bnb-4bit": "gemma-3-12b",
    # issue #19's optional Qwen3.5
    "Qwen/Qwen3.5-4B": "qwen3.5-4b",
    "unsloth/Qwen3.5-4B": "qwen3.5-4b",
    "Qwen/Qwen3.5-0.8B": "qwen3.5-0.8b",
    "Qwen/Qwen3.5-2B": "qwen3.5-2b",
    "Qwen/Qwen3.5-9B": "qwen3.5-9b",
}


def test_every_named_and_default_checkpoint_is_known_with_its_family():
    for name, arch in NAMED.items():
        assert size_named(name)[1].name == arch, name
        assert size_named(name.lower())[1].name == arch  # hub ids are case-insensitive
    for family in FAMILIES.values():
        known = size_named(family.default_model)
        assert known is not None and known[0] is family, family.default_model
        assert peek_family(family.default_model) is family
    names = [n for f in FAMILIES.values() for s in f.sizes for n in (s.name, *s.checkpoints)]
    assert len(names) == len({n.lower() for n in names})  # one architecture per name


def test_random_weight_architectures_are_known_with_the_same_shape():
    for name, (family, size) in REAL_ARCHITECTURES.items():
        assert size_named(name) == (family, size), name
        text = size.real.text_config
        assert size.text_shape == (text["hidden_size"], text["num_hidden_layers"])


def test_the_planner_answers_for_the_default_model_of_train_sft():
    """Issue #18: `plan.py --model unsloth/Qwen2-VL-7B-Instruct` was refused."""
    by_name = plan_memory(PlanArgs(model="unsloth/Qwen2-VL-7B-Instruct", gpu_memory_gib=12))
    by_arch = plan_memory(PlanArgs(model="qwen2-vl-7b", gpu_memory_gib=12))
    assert (by_name.batch_size, by_name.tokens, by_name.rows) == (
        by_arch.batch_size, by_arch.tokens, by_arch.rows,
    )  # fmt: skip
    assert by_name.batch_size is not None


def test_plan_script_for_a_hub_name_and_the_refusals(capsys):
    from vlm_unsloth.cli import plan_main

    argv = ["--model", "unsloth/Qwen2-VL-7B-Instruct", "--max-side", "768"]
    assert plan_main([*argv, "--gpu-memory-gib", "12"]) == 0
    assert "recommended: --max-side 768" in capsys.readouterr().out
    # Calibrated on the unsloth backend from the H200 bench (2 points); planning activates no
    # backend, so it answers on a machine without a GPU too.
    smolvlm = ["--model", "HuggingFaceTB/SmolVLM-Instruct", "--max-side", "768"]
    assert plan_main([*smolvlm, "--backend", "unsloth", "--gpu-memory-gib", "12"]) == 0
    assert "fit over 2 measured points" in capsys.readouterr().out
    # Known but not measured on hf (Pixtral-12B ran out of memory there): refused, naming what
    # can be planned.
    pixtral = ["--model", "mistral-community/pixtral-12b", "--max-side", "768"]
    assert plan_main([*pixtral, "--backend", "hf"]) == 2
    err = capsys.readouterr().err
    assert "no memory calibration for mistral-community/pixtral-12b (pixtral-12b)" in err
    assert (
        "calibrated: gemma-3-12b on unsloth, gemma-3-4b on hf, gemma-3-4b on unsloth, "
        "lfm2-vl-450m on unsloth, lfm2.5-vl-1.6b on unsloth, pixtral-12b on unsloth, "
        "qwen2-vl-7b on hf, qwen2-vl-7b on unsloth, qwen3-vl-2b on hf, "
        "qwen3-vl-2b on unsloth, qwen3-vl-4b on hf, qwen3-vl-4b on unsloth, qwen3-vl-8b on "
        "unsloth, smolvlm-instruct on hf, smolvlm-instruct on unsloth, smolvlm2-2.2b on hf, "
        "smolvlm2-2.2b on unsloth;" in err
    )
    assert err.count("\n") == 1
    # Unknown: refused, listing every model the planner knows.
    assert plan_main(["--model", "someone/Unknown-VLM-7B"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'someone/Unknown-VLM-7B'" in err and err.count("\n") == 1
    for name in NAMED:
        assert name in err


def test_the_planner_answers_for_qwen3_vl_8b_by_its_hub_names(capsys):
    """Calibrated from two H200 runs (batch 4 and 16): the Hub names plan as the architecture."""
    from vlm_unsloth.cli import plan_main

    plans = [
        plan_memory(PlanArgs(model=name, gpu_memory_gib=12))
        for name in ("Qwen/Qwen3-VL-8B-Instruct", "unsloth/Qwen3-VL-8B-Instruct", "qwen3-vl-8b")
    ]
    assert len({(p.batch_size, p.tokens, tuple(p.rows)) for p in plans}) == 1
    # Measured: batch 16 at 605 tokens peaked at 10.76 GiB; the fit must reproduce it closely.
    assert plans[0].fit.peak_gib(16, 605) == pytest.approx(10.76, abs=0.05)
    assert plans[0].batch_size == 16
    assert plan_main(["--model", "unsloth/Qwen3-VL-8B-Instruct", "--gpu-memory-gib", "12"]) == 0
    assert "fit over 2 measured points" in capsys.readouterr().out


def test_default_sample_tokens_follow_each_familys_max_side():
    assert default_tokens("qwen2-vl-7b", 768) == 567 + 64
    # SmolVLM-Instruct at 768 px: 2 x 2 tiles of 384 + global view; Pixtral: 36 x (48 + 1).
    assert default_tokens("smolvlm-instruct", 768) == 418 + 64
    assert default_tokens("smolvlm-256m", 768) == 64 + 3 + 64  # one 512 px view
    assert default_tokens("pixtral-12b", 768) == 36 * 49 + 64
    with pytest.raises(ConfigError, match="--tokens-per-sample"):
        default_tokens("llama-3.2-11b-vision", 768)
    # Qwen3-VL: 32 px blocks (768 x 576 -> 24 x 18); 1000 px means 992 (31 blocks).
    assert default_tokens("qwen3-vl-8b", 768) == 24 * 18 + 64
    assert default_tokens("qwen3-vl-8b", 1000) == 31 * 23 + 64
    assert default_tokens("qwen3.5-4b", 768) == default_tokens("qwen3-vl-8b", 768)
    # Gemma 3: 256 soft tokens + <start_of_image>/<end_of_image> + "\n\n" twice, whatever size.
    assert default_tokens("gemma-3-4b", 768) == default_tokens("gemma-3-12b", 1024) == 260 + 64


# (Hub name, architecture, backend, a measured point: batch, tokens, peak GiB, and the batch the
# planner recommends at 768 px under 12 GiB. The bench's --batch-size auto chose the same, except
# for Gemma-3-12B: its probes at the real 288 tokens fit 8, the plan at 324 default tokens 4.)
CALIBRATED_ON_THE_H200 = [
    ("google/gemma-3-4b-it", "gemma-3-4b", "unsloth", (16, 288, 7.54), 16),
    ("google/gemma-3-12b-it", "gemma-3-12b", "unsloth", (8, 288, 10.70), 4),
    ("Qwen/Qwen3-VL-4B-Instruct", "qwen3-vl-4b", "unsloth", (16, 605, 6.48), 16),
    ("Qwen/Qwen3-VL-4B-Instruct", "qwen3-vl-4b", "hf", (4, 581, 7.48), 8),
    ("unsloth/Qwen3-VL-2B-Instruct", "qwen3-vl-2b", "unsloth", (16, 605, 5.14), 16),
    ("Qwen/Qwen3-VL-2B-Instruct", "qwen3-vl-2b", "hf", (8, 581, 7.42), 16),
    ("unsloth/gemma-3-4b-it", "gemma-3-4b", "hf", (4, 288, 9.98), 4),
    ("mistral-community/pixtral-12b", "pixtral-12b", "unsloth", (2, 1795, 10.77), 2),
    ("HuggingFaceTB/SmolVLM2-2.2B-Instruct", "smolvlm2-2.2b", "unsloth", (16, 444, 5.55), 16),
    ("HuggingFaceTB/SmolVLM-Instruct", "smolvlm-instruct", "hf", (8, 444, 9.01), 8),
]


@pytest.mark.parametrize(("name", "arch", "backend", "measured", "batch"), CALIBRATED_ON_THE_H200)
def test_the_planner_answers_for_the_issue_18_and_19_models_it_measured(
    name, arch, backend, measured, batch
):
    """Two GPU points per model and backend (peak_memory.json): the Hub name plans as its
    architecture, and the fit reproduces what was measured."""
    plan = plan_memory(PlanArgs(model=name, backend=backend, gpu_memory_gib=12))
    by_arch = plan_memory(PlanArgs(model=arch, backend=backend, gpu_memory_gib=12))
    assert plan.rows == by_arch.rows
    batch_size, tokens, peak = measured
    assert plan.fit.peak_gib(batch_size, tokens) == pytest.approx(peak, rel=0.05)
    assert plan.batch_size == batch


@pytest.mark.parametrize(
    ("name", "arch", "backend"), [("unsloth/Qwen3.5-4B", "qwen3.5-4b", "unsloth"),
                                  ("Qwen/Qwen3.5-9B", "qwen3.5-9b", "unsloth"),
                                  ("google/gemma-3-12b-it", "gemma-3-12b", "hf"),
                                  ("qwen3-vl-8b", "qwen3-vl-8b", "hf")],
)  # fmt: skip
def test_the_planner_refuses_uncalibrated_models_in_one_line(name, arch, backend, capsys):
    """Known offline, but never measured on the GPU with this backend (Qwen3.5 not at all; hf
    2 x 4 ran out of memory for Gemma-3-12B under 12 GiB): one line naming the architecture and
    what is calibrated, never a guess."""
    from vlm_unsloth.cli import plan_main

    argv = ["--model", name, "--backend", backend, "--max-side", "768", "--gpu-memory-gib", "12"]
    assert plan_main(argv) == 2
    err = capsys.readouterr().err
    label = name if name == arch else f"{name} ({arch})"
    assert f"no memory calibration for {label} on the {backend} backend" in err
    assert "calibrated: gemma-3-12b on unsloth, gemma-3-4b on hf" in err and err.count("\n") == 1


def _config_folder(tmp_path, model_type, hidden, layers, **extra):
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": model_type,
        "text_config": {"hidden_size": hidden, "num_hidden_layers": layers},
        **extra,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_folders_and_cached_hub_ids_are_recognised_by_their_config(tmp_path, monkeypatch):
    folder = _config_folder(tmp_path / "q7", "qwen2_vl", 3584, 28)
    assert planner_architecture(str(folder)) == "qwen2-vl-7b"
    pixtral = {"vision_config": {"model_type": "pixtral"}}
    folder = _config_folder(tmp_path / "px", "llava", 5120, 40, **pixtral)
    assert planner_architecture(str(folder)) == "pixtral-12b"
    assert planner_architecture(str(_config_folder(tmp_path / "q3", "qwen3_vl", 4096, 36))) == (
        "qwen3-vl-8b"
    )
    assert planner_architecture(str(_config_folder(tmp_path / "g3", "gemma3", 3840, 48))) == (
        "gemma-3-12b"
    )
    with pytest.raises(ConfigError, match="a qwen2-vl model of a size the planner does not know"):
        planner_architecture(str(_config_folder(tmp_path / "odd", "qwen2_vl", 64, 2)))
    # A LLaVA checkpoint with another vision tower is not Pixtral.
    clip = {"vision_config": {"model_type": "clip_vision_model"}}
    assert peek_family(str(_config_folder(tmp_path / "llava", "llava", 4096, 32, **clip))) is None
    # A hub id that is not in the table but sits in the local Hugging Face cache.
    import huggingface_hub

    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--my-smolvlm" / "snapshots" / "abc123"
    _config_folder(snapshot, "idefics3", 2048, 24)
    (cache / "models--someone--my-smolvlm" / "refs").mkdir()
    (cache / "models--someone--my-smolvlm" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert peek_family("someone/my-smolvlm") is FAMILIES["smolvlm"]
    assert planner_architecture("someone/my-smolvlm") == "smolvlm-instruct"
    assert peek_family("someone/not-cached") is None


def test_loaded_models_map_to_their_architecture(tiny_ref):
    from transformers import AutoConfig

    for name in ("tiny-qwen2-vl", "tiny-pixtral"):  # tiny sizes are no planner architecture
        config = AutoConfig.from_pretrained(tiny_ref(name).path)
        assert architecture_of(tiny_ref(name).family, config) is None
    config = AutoConfig.from_pretrained(tiny_ref("tiny-smolvlm").path)
    config.text_config.hidden_size, config.text_config.num_hidden_layers = 2048, 24
    assert architecture_of(FAMILIES["smolvlm"], config) == "smolvlm-instruct"
    # The same shape: the family decides.
    assert architecture_of(FAMILIES["smolvlm2"], config) == "smolvlm2-2.2b"
    assert architecture_of(FAMILIES["pixtral"], config) is None


@pytest.fixture
def unsloth_cannot_train_smolvlm(monkeypatch):
    """SmolVLM marked as a family Unsloth cannot train, on a machine that (says it) has CUDA."""
    family = dataclasses.replace(
        FAMILIES["smolvlm"], unsloth_trains=False, unsloth_note="test: FastVisionModel failed"
    )
    monkeypatch.setitem(FAMILIES, "smolvlm", family)
    monkeypatch.setitem(TINY_MODEL_NAMES, "tiny-smolvlm", family)
    monkeypatch.setattr(device, "cuda_available", lambda: True)
    return family


def test_backend_auto_picks_hf_for_a_family_unsloth_cannot_train(unsloth_cannot_train_smolvlm):
    import sys

    from vlm_unsloth.models.backend import activate_backend

    family = unsloth_cannot_train_smolvlm
    assert device.resolve_backend("auto", FAMILIES["qwen2-vl"])[0] == "unsloth"
    backend, why = device.resolve_backend("auto", family)
    assert backend == "hf" and why == device.backend_notice(family)
    assert "Unsloth cannot train smolvlm models (test: FastVisionModel failed)" in why
    with pytest.raises(BackendError, match="--backend unsloth: Unsloth cannot train smolvlm"):
        device.resolve_backend("unsloth", family)
    assert device.resolve_backend("hf", family)[0] == "hf"
    assert activate_backend("auto", "tiny-smolvlm")[0] == "hf"
    assert "unsloth" not in sys.modules  # hf chosen before anything imported Unsloth


def test_unsloth_block_compile_is_off_only_while_a_gemma3_model_is_patched(monkeypatch):
    """Gemma 3's first step never finished under Unsloth's per-block compile (families.py); the
    switch is Unsloth's UNSLOTH_BLOCK_COMPILE, set only around the patching calls, and a user's
    own setting wins. (tests/test_gpu.py checks Unsloth's layers really stay uncompiled.)"""
    import os

    from vlm_unsloth.models.unsloth_backend import block_compile_as_the_family_needs

    monkeypatch.delenv("UNSLOTH_BLOCK_COMPILE", raising=False)
    uncompiled = [key for key, family in FAMILIES.items() if not family.unsloth_block_compile]
    assert "gemma3" in uncompiled and "qwen2-vl" not in uncompiled  # (Gemma 4's too: measured)
    with block_compile_as_the_family_needs(FAMILIES["gemma3"]):
        assert os.environ["UNSLOTH_BLOCK_COMPILE"] == "0"
    assert "UNSLOTH_BLOCK_COMPILE" not in os.environ
    with block_compile_as_the_family_needs(FAMILIES["qwen2-vl"]):
        assert "UNSLOTH_BLOCK_COMPILE" not in os.environ
    with pytest.raises(RuntimeError), block_compile_as_the_family_needs(FAMILIES["gemma3"]):
        raise RuntimeError("loading failed")
    assert "UNSLOTH_BLOCK_COMPILE" not in os.environ
    monkeypatch.setenv("UNSLOTH_BLOCK_COMPILE", "1")
    with block_compile_as_the_family_needs(FAMILIES["gemma3"]):
        assert os.environ["UNSLOTH_BLOCK_COMPILE"] == "1"
    assert os.environ["UNSLOTH_BLOCK_COMPILE"] == "1"


@pytest.mark.slow
def test_the_product_keeps_working_for_such_a_family(unsloth_cannot_train_smolvlm, monkeypatch,
                                                     tmp_path, capsys):  # fmt: skip
    """train-sft with --backend auto on "a GPU machine": one notice line, then an hf run."""
    from vlm_unsloth.cli import train_sft_main
    from vlm_unsloth.train import steps

    monkeypatch.setattr(steps, "cuda_available", lambda: True)
    output = tmp_path / "run"
    argv = ["--model", "tiny-smolvlm", "--output-dir", str(output), "--max-steps", "2",
            "--max-samples", "4", "--batch-size", "2", "--grad-accum", "1"]  # fmt: skip
    assert train_sft_main(argv) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert notes == [f"note: {device.backend_notice(unsloth_cannot_train_smolvlm)}"]
    resolved = (output / "run_config.yaml").read_text()
    assert "backend: hf" in resolved
    assert json.loads((output / "summary.json").read_text())["global_step"] == 2


# Total parameters of the hub checkpoints (their model cards / safetensors index), to within 3%:
# the random-weight architectures must be the real sizes, or bench.py measures something else.
REAL_PARAMETERS = {
    "qwen2-vl-7b": 8.29e9,
    "qwen2.5-vl-7b": 8.29e9,
    "llama-3.2-11b-vision": 10.67e9,
    "smolvlm-instruct": 2.25e9,
    "smolvlm2-2.2b": 2.25e9,
    "pixtral-12b": 12.68e9,
    "qwen3-vl-8b": 8.77e9,
    "qwen3-vl-4b": 4.44e9,
    "qwen3-vl-2b": 2.13e9,
    "gemma-3-4b": 4.30e9,
    "gemma-3-12b": 12.19e9,
    # The hub pages' "Model size" (per-layer input embeddings, vision and audio towers
    # included; "E2B"/"E4B" are the effective sizes without the per-layer embeddings).
    "gemma-3n-e2b": 5.44e9,
    "gemma-3n-e4b": 7.85e9,
    # The checkpoint index's 9.65B (bf16 bytes / 2) less its ~0.24B multi-token-prediction layer,
    # which transformers does not load.
    "qwen3.5-9b": 9.41e9,
    # The model cards' rounded sizes (LFM2-VL-1.6B / LFM2.5-VL-1.6B: "1.6B", LFM2-VL-450M:
    # "450M"; no Hub here to read the safetensors index).
    "lfm2.5-vl-1.6b": 1.6e9,
    "lfm2-vl-450m": 0.45e9,
    # Ministral 3's model cards: a 3.4B / 8.4B / 13.5B language model + a 0.4B vision encoder.
    "ministral-3-3b": 3.8e9,
    "ministral-3-8b": 8.8e9,
    "ministral-3-14b": 13.9e9,
    # The model cards' totals "with embeddings" (2.3B / 4.5B effective): the per-layer input
    # embeddings are 2.35B / 2.82B of them; the audio tower (0.3B) counts.
    "gemma-4-e2b": 5.1e9,
    "gemma-4-e4b": 8.0e9,
}


@pytest.mark.parametrize("arch", list(REAL_ARCHITECTURES))
def test_random_weight_architectures_have_the_real_parameter_count(arch):
    import torch

    from vlm_unsloth.models.random_weights import real_config
    from vlm_unsloth.models.tiny import model_class

    config, _ = real_config(arch)
    family, _ = REAL_ARCHITECTURES[arch]
    with torch.device("meta"):  # shapes only: no memory, no time
        model = model_class(family.architecture)._from_config(config)
    total = sum(p.numel() for p in model.parameters())
    print(f"{arch}: {total / 1e9:.2f}B parameters")
    assert abs(total - REAL_PARAMETERS[arch]) <= 0.03 * REAL_PARAMETERS[arch], total
