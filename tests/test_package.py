"""Importing the package is cheap, offline, silent, and never pulls in Unsloth."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


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


def test_entry_modules_leave_transformers_for_after_unsloth():
    # Unsloth patches transformers, TRL and PEFT when it is imported and must come first: the
    # modules a notebook or the CLI imports before the backend is chosen must not import them.
    modules = (
        "vlm_unsloth.train.sft", "vlm_unsloth.train.dpo", "vlm_unsloth.train.grpo",
        "vlm_unsloth.train.rewards", "vlm_unsloth.train.inspect",
        "vlm_unsloth.infer.evaluate", "vlm_unsloth.infer.predict", "vlm_unsloth.cli",
    )  # fmt: skip
    result = _run_python(
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print('HEAVY', [m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules])"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "HEAVY []"


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
    import sysconfig

    from vlm_unsloth.cli import COMMANDS

    # Next to this interpreter (where pip installed it), not wherever PATH points: the test
    # must hold when the environment is not activated.
    executable = Path(sysconfig.get_path("scripts")) / "vlm-unsloth"
    assert executable.is_file(), "pip install -e . installs the vlm-unsloth command"
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


def test_the_wheel_carries_the_demo_sets_and_the_data_files_the_code_reads(tmp_path):
    """A non-editable `pip install .` must keep `--dataset demo` and `--dataset demo-colours`,
    the planner's calibration and the tiny Llama chat template: build the wheel and look
    inside."""
    import zipfile

    from conftest import REPO

    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("vlm_unsloth-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, least in (("demo", 360), ("demo_colours", 280)):
        demo = REPO / "vlm_unsloth" / "data" / folder
        shipped = {p.relative_to(REPO).as_posix() for p in demo.rglob("*") if p.is_file()}
        assert len(shipped) > least and shipped <= names, sorted(shipped - names)[:5]
    assert "vlm_unsloth/perf/calibration/qwen2-vl.json" in names
    assert "vlm_unsloth/families/chat_templates/llama3_2_vision.jinja" in names
    assert not any(name.startswith(("tests/", "scripts/")) for name in names)


def test_an_install_without_the_demo_set_says_how_to_get_it(monkeypatch, tmp_path):
    import pytest

    from vlm_unsloth.config import DataArgs
    from vlm_unsloth.data import splits
    from vlm_unsloth.errors import DataError

    monkeypatch.setattr(splits, "DEMO_DIR", tmp_path / "missing")
    with pytest.raises(DataError, match="demo set is missing .*make_demo_data.py"):
        splits.dataset_paths(DataArgs(dataset="demo"), preference=False)
    assert splits.dataset_paths(DataArgs(dataset="mine.jsonl"), preference=False)[0] == (
        "mine.jsonl"
    )


# What a CPU run used to print that its user cannot act on: bitsandbytes looking for an optional
# hub kernel package on an AVX512-BF16 CPU, and torch deprecating torchao's pytree registrations.
LIBRARY_NOTICES = (
    "Failed to load CPU gemm_4bit_forward from kernels-community",
    "register_constant() on Enum subclasses is deprecated",
)


def test_a_cpu_run_prints_no_library_notices_but_genuine_warnings_still_show():
    # The same work without the CLI: which notices this machine's libraries print at all.
    bare = _run_python(
        "import bitsandbytes\n"
        "from vlm_unsloth.models.loading import load_processor, resolve_model\n"
        "load_processor(resolve_model('tiny-qwen2-vl'))\n"
    )
    assert bare.returncode == 0, bare.stderr[-2000:]
    printed = [notice for notice in LIBRARY_NOTICES if notice in bare.stdout + bare.stderr]
    if not printed:
        pytest.skip("this machine's torch/torchao/bitsandbytes print none of the notices")
    run = _run_python(
        "import logging, sys, warnings\n"
        "from vlm_unsloth.cli import main\n"
        "status = main(['inspect-data', '--model', 'tiny-qwen2-vl', '--max-samples', '4'])\n"
        "import bitsandbytes  # what train-sft loads on the hf backend, after the CLI started\n"
        "logging.getLogger('torch.utils._pytree').warning('genuine pytree warning')\n"
        "logging.getLogger('bitsandbytes.backends.cpu.ops').warning('genuine bnb warning')\n"
        "warnings.warn('genuine user warning')\n"
        "sys.exit(status)\n"
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-2000:]
    assert "Dataset check" in output  # the command really ran
    for notice in printed:
        assert notice not in output
    for genuine in ("genuine pytree warning", "genuine bnb warning", "genuine user warning"):
        assert genuine in output
