"""bench.py on CPU with the tiny model: real runs in their own processes, a JSON table."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import REPO

from vlm_unsloth.errors import BenchmarkError, ConfigError, ModelError
from vlm_unsloth.perf.bench import (
    BenchArgs,
    answer_tokens_per_second,
    peak_flops,
    results_table,
    run_benchmark,
    runs,
)


@pytest.mark.slow
def test_benchmark_runs_each_setting_and_writes_the_table(tmp_path):
    args = BenchArgs(
        model="tiny-qwen2-vl", backends=["hf"], settings=["1x1", "2x1"], baseline="hf:1x1",
        steps=2, warmup_steps=1, work_dir=str(tmp_path / "work"), output=str(tmp_path / "b.json"),
        train_flags="--group-by-length --lora-r 4",
    )  # fmt: skip
    rows = run_benchmark(args)
    assert [(r.backend, r.setting, r.error) for r in rows] == [
        ("hf", "1x1", None),
        ("hf", "2x1", None),
    ]
    assert all(r.samples_per_second > 0 and r.tokens_per_second > 0 for r in rows)
    assert rows[0].ratio_to_baseline == 1.0 and rows[1].ratio_to_baseline > 0
    assert rows[0].peak_reserved_gib is None and rows[0].mfu is None  # CPU: no GPU numbers
    saved = json.loads((tmp_path / "b.json").read_text())
    assert len(saved["rows"]) == 2 and saved["args"]["settings"] == ["1x1", "2x1"]
    metrics = (tmp_path / "work" / "hf-2x1" / "metrics.jsonl").read_text().splitlines()
    assert len([line for line in metrics if '"loss"' in line]) == 3  # warm-up + measured steps
    config = (tmp_path / "work" / "hf-2x1" / "run_config.yaml").read_text()
    assert "group_by_length: true" in config and "lora_r: 4" in config  # --train-flags reached it


@pytest.mark.slow
def test_benchmark_runs_train_grpo_and_reports_its_phases(tmp_path):
    """A GRPO run's row has the step's phases and both speeds; TRL's generation flags reach the
    run through --train-flags (--num-iterations 2: the second measured step samples nothing)."""
    args = BenchArgs(
        command="train-grpo", model="tiny-qwen2-vl", backends=["hf"], settings=["2x2"],
        baseline="hf:2x2", steps=2, warmup_steps=1, work_dir=str(tmp_path / "work"),
        output=str(tmp_path / "b.json"),
        train_flags="--num-generations 4 --max-completion-length 4 --lora-r 4 "
        "--num-iterations 2",
    )  # fmt: skip
    (row,) = run_benchmark(args)
    assert row.error is None and row.batch == "2x2"
    assert row.seconds_per_step > 0 and row.generated_tokens_per_second > 0
    assert row.sample_seconds > 0 and row.train_seconds > 0 and row.reward_seconds >= 0
    # Sampling speed counts sampling seconds only; answer tokens/s all of the steps' time.
    assert 0 < row.answer_tokens_per_second < row.generated_tokens_per_second
    assert row.mfu is None  # 6 x N x tokens is SFT's count; GRPO also samples
    summary = (tmp_path / "work" / "hf-2x2" / "summary.json").read_text()
    assert '"job": "GRPO"' in summary
    config = (tmp_path / "work" / "hf-2x2" / "run_config.yaml").read_text()
    assert "num_iterations: 2" in config
    logs = [json.loads(line) for line in (tmp_path / "work" / "hf-2x2" / "metrics.jsonl")
            .read_text().splitlines() if '"loss"' in line]  # fmt: skip
    assert [log["sample_seconds"] > 0 for log in logs] == [True, False, True]
    table = results_table([row], title="t", grpo=True)
    headers = [column.header for column in table.columns]
    for header in ("sample s", "reward s", "train s", "generated tok/s (sampling)",
                   "answer tok/s (step)"):  # fmt: skip
        assert header in headers


def test_answer_tokens_per_second_reads_both_metric_shapes():
    """Today's logs (generated_tokens a step) and main's (TRL's mean completion length only, one
    generation batch a step) give the same figure for the same run."""
    ours = [{"seconds_per_step": 2.0, "generated_tokens": 64.0}, {"seconds_per_step": 2.0}]
    assert answer_tokens_per_second(ours, answers_per_step=8) == 16.0
    main = [{"seconds_per_step": 2.0, "completions/mean_length": 8.0}] * 2
    assert answer_tokens_per_second(main, answers_per_step=8) == 32.0
    assert answer_tokens_per_second([{"seconds_per_step": 1.0}], answers_per_step=8) is None


@pytest.mark.slow
def test_the_seed_recipe_runs_once_as_the_baseline(tmp_path):
    """seed:1x1 runs the course's recipe (TRL SFTTrainer + bitsandbytes 4-bit + PEFT) once,
    whatever --backends, first; other rows are compared with it."""
    args = BenchArgs(
        model="tiny-qwen2-vl", backends=["hf"], settings=["seed:1x1", "1x1"],
        baseline="seed:1x1", steps=1, warmup_steps=1, work_dir=str(tmp_path / "work"),
        output=str(tmp_path / "b.json"), train_flags="--lora-r 4",
    )  # fmt: skip
    rows = run_benchmark(args)
    assert [(r.backend, r.setting, r.error) for r in rows] == [
        ("seed", "1x1", None),
        ("hf", "1x1", None),
    ]
    seed = rows[0]
    assert seed.batch == "1x1" and seed.samples_per_second > 0 and seed.tokens_per_second > 0
    assert seed.ratio_to_baseline == 1.0 and rows[1].ratio_to_baseline > 0
    assert "vlm_unsloth.train.seed_recipe" in seed.command and "--lora-r" not in seed.command
    summary = json.loads((tmp_path / "work" / "seed-1x1" / "summary.json").read_text())
    assert summary["job"] == "seed recipe"


def test_seed_settings_are_checked_before_any_run():
    assert runs(BenchArgs(backends=["unsloth", "hf"], settings=["seed:2x4", "auto"])) == [
        ("seed", "2x4"), ("unsloth", "auto"), ("hf", "auto"),
    ]  # fmt: skip
    with pytest.raises(ConfigError) as error:
        run_benchmark(BenchArgs(settings=["seed:auto"]))
    assert "--settings seed:auto" in str(error.value)
    with pytest.raises(ConfigError) as error:
        run_benchmark(BenchArgs(command="train-grpo", settings=["seed:2x4"]))
    assert "the seed recipe is SFT" in str(error.value)


def _bench_script():
    """scripts/bench.py's main (the CLI: its exit status)."""
    spec = importlib.util.spec_from_file_location("bench_script", REPO / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_a_failing_run_becomes_a_row_and_a_bench_that_measured_nothing_exits_non_zero(
    tmp_path, capsys
):
    """The run fails (training refuses --lora-r 0): its row says why, the table and the JSON are
    written, and the command exits 2 with a line saying nothing was measured (it exited 0)."""
    work, output = tmp_path / "work", tmp_path / "b.json"
    argv = ["--model", "tiny-qwen2-vl", "--backends", "hf", "--settings", "1x1", "--steps", "1",
            "--warmup-steps", "0", "--train-flags=--lora-r 0", "--work-dir", str(work),
            "--output", str(output)]  # fmt: skip
    assert _bench_script()(argv) == 2
    (row,) = json.loads(output.read_text())["rows"]
    assert row["samples_per_second"] is None and "--lora-r 0: must be >= 1" in row["error"]
    err = capsys.readouterr().err  # after the tiny checkpoint's build notices, if it was built
    assert err.splitlines()[-1] == (
        f"error: {output}: every run failed, nothing was measured (hf 1x1: {row['error']}) — "
        f"read the runs' logs in {work} (BACKEND-SETTING.log)"
    )
    assert "Traceback" not in err
    assert (work / "hf-1x1.log").is_file()


def test_a_model_that_cannot_load_is_refused_before_any_run(tmp_path):
    args = BenchArgs(
        model=str(tmp_path / "no-model"), backends=["hf"], settings=["1x1", "2x1"], steps=1,
        warmup_steps=0, work_dir=str(tmp_path / "work"), output=str(tmp_path / "b.json"),
    )  # fmt: skip
    with pytest.raises(ModelError, match="no-model"):
        run_benchmark(args)
    assert not (tmp_path / "work").exists() and not (tmp_path / "b.json").exists()


def test_settings_that_match_no_backend_are_refused_before_any_run(tmp_path, capsys):
    argv = ["--model", "tiny-qwen2-vl", "--backends", "hf", "--settings", "unsloth:2x4",
            "--work-dir", str(tmp_path / "work"), "--output", str(tmp_path / "b.json")]  # fmt: skip
    assert _bench_script()(argv) == 2  # it ran nothing, wrote an empty table and exited 0
    assert capsys.readouterr().err == (
        "error: options: --settings unsloth:2x4: its backend is not in --backends hf, so it "
        "would never run (add it there, or drop the prefix)\n"
    )
    assert not (tmp_path / "b.json").exists()
    with pytest.raises(ConfigError, match="no run to make"):
        run_benchmark(BenchArgs(backends=[]))


def test_bad_settings_are_reported_together():
    with pytest.raises(ConfigError) as error:
        run_benchmark(BenchArgs(settings=["2x4", "8", "0x2"], backends=["vllm"]))
    assert "--settings 8" in str(error.value) and "--settings 0x2" in str(error.value)
    assert "--backends vllm" in str(error.value)


def test_peak_flops_by_device_name():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("Tesla T4") == 65e12
    assert peak_flops("cpu") is None


def test_a_run_past_its_timeout_becomes_a_row_and_leaves_its_log(tmp_path):
    """--run-timeout: a run that hangs (say, compiling) is stopped, and the bench goes on.
    (No machine loads the model and trains 1,000 steps in 2 s.)"""
    args = BenchArgs(
        model="tiny-qwen2-vl", backends=["hf"], settings=["1x1", "2x1"], steps=1000,
        warmup_steps=0, work_dir=str(tmp_path / "work"), output=str(tmp_path / "b.json"),
        run_timeout=2,
    )  # fmt: skip
    with pytest.raises(BenchmarkError, match="every run failed"):  # every run timed out
        run_benchmark(args)
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    for row in rows:
        assert row["error"].startswith("timed out after 2 s at step ") and "of 1000" in row["error"]
    assert len(rows) == 2 and all(r["samples_per_second"] is None for r in rows)
    assert (tmp_path / "work" / "hf-1x1.log").is_file()  # written as the run went
    with pytest.raises(ConfigError, match="--run-timeout 0"):
        run_benchmark(BenchArgs(run_timeout=0))
