"""The README's offline CPU quickstart, run as written: every command of its code block, in a
fresh folder that sees the repository's `scripts/`, `configs/` and `vlm_unsloth/`. The tiny
Qwen2-VL must learn the coloured squares (loss below 0.5, base at or below chance, fine-tuned
near 100%), answer the README's image as the README says, and fall back to chance when every
image is blank (it reads the image, not the question).

python3 -m pytest tests/test_quickstart.py -q    # ~2-3 minutes on 2 CPU cores
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

from vlm_unsloth.cli import evaluate_main
from vlm_unsloth.data.splits import COLOUR_DEMO_DIR
from vlm_unsloth.infer.trained_run import resolve_adapter

pytestmark = pytest.mark.slow


def readme_quickstart() -> tuple[list[str], str]:
    """(the commands of the README's quickstart block, the expected-output block after it)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Quickstart.*?(?=^## )", readme, re.M | re.S)
    assert section, "README.md has no '## Quickstart' section"
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", section.group(0), re.M | re.S)
    commands = [line for line in blocks[0][1].splitlines() if line.strip()]
    expected = next(text for kind, text in blocks if kind == "text")
    return commands, expected


def test_the_readme_quickstart_runs_as_written_and_learns(tmp_path):
    commands, expected = readme_quickstart()
    work = tmp_path / "work"
    work.mkdir()
    for name in ("scripts", "configs", "vlm_unsloth"):
        (work / name).symlink_to(REPO / name)
    bin_dir = tmp_path / "bin"  # `python` in the README is this interpreter
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
    }
    finished = []
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
        finished.append(done)

    run = work / "outputs" / "tiny-demo"
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["final_loss"] < 0.5, summary["final_loss"]
    assert resolve_adapter(str(run), None).cpu_threads == 1  # the config's, reused by evaluate
    answer = finished[1].stdout.strip().splitlines()[-1]  # infer.py: the answer alone
    assert answer in {"red", "green", "blue", "yellow"} and f"\n{answer}\n" in expected, answer
    metrics = json.loads((run / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["info"]["rows"] == 40
    assert metrics["base"]["exact_match"] <= 0.3, metrics  # 4 colours: chance is 0.25
    assert metrics["fine_tuned"]["exact_match"] >= 0.95, metrics
    assert "exact_match" in finished[2].stdout + finished[2].stderr  # evaluate.py's table

    blank = tmp_path / "blank"  # the README's control: every image blank
    control = ["--adapter", str(run), "--dataset", str(COLOUR_DEMO_DIR / "blank_eval.jsonl")]
    assert evaluate_main([*control, "--output-dir", str(blank)]) == 0
    blank_metrics = json.loads((blank / "metrics.json").read_text(encoding="utf-8"))
    assert blank_metrics["fine_tuned"]["exact_match"] <= 0.4, blank_metrics
