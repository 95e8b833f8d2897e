"""Test setup: offline, CPU, deterministic. Tiny checkpoints are built once per session."""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from pathlib import Path

# No test may reach the Hugging Face Hub: the tool must work with local folders alone.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny checkpoints go to a fresh cache per test session (inherited by CLI subprocesses), so a
# test never passes on a checkpoint a previous builder left behind.
os.environ.setdefault("VLM_UNSLOTH_CACHE", tempfile.mkdtemp(prefix="vlm-unsloth-test-cache-"))

import pytest  # noqa: E402

from vlm_unsloth.families import TINY_MODEL_NAMES  # noqa: E402

TINY_MODELS = list(TINY_MODEL_NAMES)
"""Every family's tiny checkpoint, from the registry: a family module's presence is what puts
its family under every per-family test (tests/test_every_family.py)."""


def family_id(name: str) -> str:
    """A per-family parametrisation's id: the family's key (`-k pixtral` selects its tests)."""
    return TINY_MODEL_NAMES[name].key


def each_family(names=None, argname: str = "name"):
    """`@each_family()`: parametrise `name` over every family's tiny checkpoint (or `names`, a
    list derived from the registry), with the families' keys as ids."""
    names = TINY_MODELS if names is None else list(names)
    return pytest.mark.parametrize(argname, names, ids=[family_id(n) for n in names])


REPO = Path(__file__).resolve().parent.parent
"""The checkout: scripts/ and configs/ are found from here, never from the current folder."""


@pytest.fixture(scope="session")
def tiny_ref():
    """tiny_ref(name) -> ModelRef of a built tiny checkpoint (cached for the session)."""
    from vlm_unsloth.models.loading import resolve_model

    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = resolve_model(name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def tiny_processor(tiny_ref):
    """tiny_processor(name) -> the processor as the product loads it (family settings applied)."""
    from vlm_unsloth.models.loading import load_processor

    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_processor(tiny_ref(name))
        return cache[name]

    return get


@pytest.fixture
def one_thread():
    """Torch on 1 thread: on a busy 2-core machine 2 threads made GRPO's steps 10-50x slower
    (OpenMP spin-waits under contention)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SIDE = 224
"""--max-side of the inference tests: small images, fast, and still different sizes a row."""


def _greedy():
    from vlm_unsloth.infer.args import GenerationArgs

    return GenerationArgs(max_new_tokens=12, batch_size=4)


GREEDY = _greedy()
"""Greedy decoding of the inference tests: 12 new tokens, 4 rows a batch."""


@pytest.fixture(scope="module")
def loaded():
    """loaded(name) -> the tiny model `name` loaded for inference, no adapter (hf backend;
    cached for the test module)."""
    from vlm_unsloth.config import ModelArgs
    from vlm_unsloth.infer.generation import load_for_inference

    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_for_inference(ModelArgs(model=name, backend="hf"), None)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def demo_records():
    """Four demo eval rows: charts of different sizes, questions of different lengths."""
    from vlm_unsloth.data.loaders import DataSpec, load_sft_dataset
    from vlm_unsloth.data.splits import DEMO_DIR

    dataset = load_sft_dataset(DataSpec(dataset=str(DEMO_DIR / "eval.jsonl")))
    return [dataset[i] for i in range(4)]


@pytest.fixture
def memory_limit(monkeypatch):
    """limit(rows, model_class=Qwen2VLModel): from now on a training forward of the VLM's inner
    model (below the LM head, which TRL's chunked loss bypasses) over more than `rows` sequences
    runs out of memory. Returns {"oom": how many times it did}."""
    import torch
    from transformers import Qwen2VLModel

    calls = {"oom": 0}

    def limit(rows: int, model_class=Qwen2VLModel):
        forward = model_class.forward

        def limited(self, *args, **kwargs):
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            if self.training and input_ids is not None and input_ids.shape[0] > rows:
                calls["oom"] += 1
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return forward(self, *args, **kwargs)

        monkeypatch.setattr(model_class, "forward", limited)
        return calls

    return limit


def assert_same_adapters(expected_run: Path, run: Path) -> None:
    """The two runs saved the same LoRA weights (a resumed run against a straight one): same
    tensors, equal to float32 round-off."""
    import torch
    from safetensors.torch import load_file

    a = load_file(expected_run / "adapter" / "adapter_model.safetensors")
    b = load_file(run / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def must_not_be_called(*args, **kwargs):
    """Stands in for a function a test proves is never reached."""
    raise AssertionError("called")


def forward_input_recorder(*, graph_only: bool = False):
    """A TrainerCallback recording, in `.calls`, the tensor inputs (name -> shape) of every
    forward of the VLM inside PEFT; with `graph_only`, only forwards that build a graph (a
    policy's loss forward: not sampling, not a reference pass)."""
    import torch
    from transformers import TrainerCallback

    class RecordForwardInputs(TrainerCallback):
        def __init__(self):
            self.calls: list[dict[str, tuple]] = []
            self.handle = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            # PeftModel -> LoraModel -> *ForConditionalGeneration calls its inner *Model with
            # the batch's keyword arguments: hook that (PEFT calls the outer forward directly).
            vlm = model.get_base_model().model

            def record(module, args, kwargs):
                if torch.is_grad_enabled() or not graph_only:
                    shapes = {k: tuple(v.shape) for k, v in kwargs.items() if torch.is_tensor(v)}
                    self.calls.append(shapes)

            self.handle = vlm.register_forward_pre_hook(record, with_kwargs=True)

        def on_train_end(self, args, state, control, **kwargs):
            self.handle.remove()

    return RecordForwardInputs()


@functools.cache
def _mount_namespace() -> tuple[tuple[str, ...] | None, str]:
    """The `unshare` prefix that lets a command mount a tmpfs of its own here (a private mount
    namespace; for a user without root, inside a user namespace that maps them to root), or
    None and why not."""
    why = "unshare is not installed"
    for prefix in (("unshare", "-rm"), ("unshare", "-m")):
        probe = tempfile.mkdtemp(prefix="vlm-unsloth-mount-probe-")
        try:
            mount = subprocess.run(
                [*prefix, "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$1"', "sh", probe],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
        except FileNotFoundError:
            return None, why
        finally:
            os.rmdir(probe)
        if mount.returncode == 0:
            return prefix, ""
        why = mount.stderr.strip() or f"{' '.join(prefix)} exited {mount.returncode}"
    return None, why


def in_a_mount_namespace(script: str, *args: str):
    """Run the shell `script` (its arguments `args`: "$1"...) in a mount namespace of its own,
    with the checkout on PYTHONPATH and its output captured: the file systems it mounts are
    real, and go with it (nothing changes on the machine). Skips the test where mounting is not
    allowed."""
    prefix, why = _mount_namespace()
    if prefix is None:
        pytest.skip(f"cannot mount a tmpfs here (unshare with a mount namespace): {why}")
    return subprocess.run(
        [*prefix, "sh", "-c", script, "sh", *args],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def on_a_tmpfs(mount: Path, command: list[str], *, size: str = "16m", read_only: bool = False):
    """Run `command` with a tmpfs of `size` mounted at `mount` (an empty folder), read-only
    with `read_only`: a real small (or unwritable) disk (see `in_a_mount_namespace`)."""
    options = f"size={size}" + (",ro" if read_only else "")
    script = 'mount -t tmpfs -o "$1" tmpfs "$2" && shift 2 && exec "$@"'
    return in_a_mount_namespace(script, options, str(mount), *command)
