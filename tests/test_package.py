"""Importing the package is cheap, offline, silent, and never pulls in Unsloth."""

from __future__ import annotations

import os
import subprocess
import sys


def _run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


def test_import_is_silent_and_imports_no_heavy_module():
    result = _run_python(
        "import sys, vlm_unsloth\n"
        "heavy = [m for m in ('unsloth', 'unsloth_zoo', 'torch', 'transformers', 'trl', 'peft')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "HEAVY []"
    assert result.stderr == ""


def test_public_api_names_resolve():
    import vlm_unsloth

    for name in vlm_unsloth.__all__:
        assert getattr(vlm_unsloth, name) is not None


def test_hf_backend_model_load_never_imports_unsloth():
    result = _run_python(
        "import sys\n"
        "from vlm_unsloth.config import ModelArgs\n"
        "from vlm_unsloth.models.device import DeviceSetup\n"
        "from vlm_unsloth.models.loading import load_model\n"
        "from vlm_unsloth.models.lora import LoraArgs\n"
        "setup = DeviceSetup(backend='hf', device='cpu', dtype='float32', why='test')\n"
        "load_model(ModelArgs(model='tiny-qwen2-vl', backend='hf'), LoraArgs(), setup, seed=0)\n"
        "print('UNSLOTH', [m for m in sys.modules if m.startswith('unsloth')])"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "UNSLOTH []" in result.stdout
    assert "Unsloth" not in result.stdout + result.stderr  # no banner


def test_console_entry_point_lists_and_helps_every_subcommand():
    import shutil

    from vlm_unsloth.cli import COMMANDS

    executable = shutil.which("vlm-unsloth")
    assert executable, "pip install -e . installs the vlm-unsloth command"
    listing = subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0
    for name in COMMANDS:
        assert name in listing.stdout
        helped = subprocess.run(
            [executable, name, "--help"], capture_output=True, text=True, timeout=300
        )
        assert helped.returncode == 0 and "usage:" in helped.stdout, name
    unknown = subprocess.run([executable, "trian-sft"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "unknown command 'trian-sft'" in unknown.stderr
