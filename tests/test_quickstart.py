"""The README's offline CPU quickstart, end to end through the CLI: configs/tiny-cpu-demo.yaml
trains the tiny Qwen2-VL on the shipped coloured squares (`--dataset demo-colours`), then
evaluate.py must show the base model at or below chance, the fine-tuned one near 100%, and back
to chance when every image is blank (it reads the image, not the question).

python3 -m pytest tests/test_quickstart.py -q    # ~1 minute on 2 CPU cores
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO

from vlm_unsloth.cli import evaluate_main, train_sft_main
from vlm_unsloth.data.splits import COLOUR_DEMO_DIR
from vlm_unsloth.infer.trained_run import resolve_adapter

pytestmark = pytest.mark.slow

CONFIG = REPO / "configs" / "tiny-cpu-demo.yaml"


@pytest.fixture
def torch_threads():
    # The config's cpu_threads sets PyTorch's threads for the whole process: give them back.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_quickstart_config_learns_the_colours_and_evaluate_shows_it(tmp_path, torch_threads):
    run = tmp_path / "tiny-demo"
    assert train_sft_main(["--config", str(CONFIG), "--output-dir", str(run)]) == 0
    assert torch.get_num_threads() == 1  # cpu_threads: 1 reached PyTorch
    assert resolve_adapter(str(run), None).cpu_threads == 1  # and evaluate.py reuses it
    assert evaluate_main(["--adapter", str(run)]) == 0  # the README's command: the run's eval set
    metrics = json.loads((run / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["info"]["rows"] == 40
    assert metrics["base"]["exact_match"] <= 0.3, metrics  # 4 colours: chance is 0.25
    assert metrics["fine_tuned"]["exact_match"] >= 0.95, metrics

    blank = tmp_path / "blank"
    control = ["--adapter", str(run), "--dataset", str(COLOUR_DEMO_DIR / "blank_eval.jsonl")]
    assert evaluate_main([*control, "--output-dir", str(blank)]) == 0
    blank_metrics = json.loads((blank / "metrics.json").read_text(encoding="utf-8"))
    assert blank_metrics["fine_tuned"]["exact_match"] <= 0.4, blank_metrics
