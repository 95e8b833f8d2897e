"""Flags and YAML: one parser, flags win, unknown keys and bad values are one-line errors."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from vlm_unsloth.config import (
    DataArgs,
    ModelArgs,
    TrainArgs,
    chosen_backend,
    chosen_model,
    option_origin,
    parse_args,
)
from vlm_unsloth.errors import ConfigError, OutputDirError
from vlm_unsloth.models.lora import LoraArgs

ALL = [ModelArgs, LoraArgs, DataArgs, TrainArgs]


def test_defaults_are_the_product_defaults():
    model, lora, data, train = parse_args(ALL, [])
    assert model.model == "unsloth/Qwen2-VL-7B-Instruct" and model.backend == "auto"
    assert data.max_side == 768 and data.dataset == "demo"
    assert (lora.lora_r, lora.finetune_vision_layers, lora.finetune_language_layers) == (
        16,
        True,
        True,
    )
    assert train.samples_per_step() == 8


def test_fixed_flag_names_and_both_spellings():
    model, lora, data, train = parse_args(
        ALL,
        ["--model", "tiny-qwen2-vl", "--backend", "hf", "--dataset", "x.jsonl",
         "--image-column", "img", "--question-column", "q", "--answer-column", "a",
         "--max-side", "1024", "--max-seq-length", "4096", "--output-dir", "out",
         "--overwrite", "--max-steps", "7", "--epochs", "2", "--batch-size", "3",
         "--grad-accum", "5", "--learning-rate", "1e-4", "--lora-r", "8", "--lora-alpha", "32",
         "--strict", "--seed", "11", "--no-finetune-vision-layers", "--target_modules", "q_proj"],
    )  # fmt: skip
    assert (model.model, model.backend) == ("tiny-qwen2-vl", "hf")
    assert (data.dataset, data.image_column, data.question_column, data.answer_column) == (
        "x.jsonl", "img", "q", "a")  # fmt: skip
    assert (data.max_side, data.max_seq_length, data.strict) == (1024, 4096, True)
    assert (train.output_dir, train.overwrite, train.max_steps, train.epochs) == (
        "out",
        True,
        7,
        2.0,
    )
    assert (train.batch_size, train.grad_accum, train.learning_rate, train.seed) == (3, 5, 1e-4, 11)
    assert (lora.lora_r, lora.lora_alpha, lora.finetune_vision_layers) == (8, 32, False)
    assert lora.target_modules == ["q_proj"]
    assert train.samples_per_step() == 15


def test_yaml_sets_values_and_flags_override_it(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("max_side: 1024\nlora_r: 32\nbatch_size: 4\nfinetune_vision_layers: false\n")
    _, lora, data, train = parse_args(ALL, ["--config", str(config), "--batch-size", "6"])
    assert data.max_side == 1024 and lora.lora_r == 32 and not lora.finetune_vision_layers
    assert train.batch_size == 6  # the flag wins over the YAML


def test_unknown_yaml_key_is_an_error_naming_it(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("max_side: 768\nlora_rank: 8\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown option\(s\) lora_rank"):
        parse_args(ALL, ["--config", str(config)])


def test_missing_config_file_is_an_error():
    with pytest.raises(ConfigError, match="no such file"):
        parse_args(ALL, ["--config", "nowhere.yaml"])


def test_a_key_repeated_in_a_yaml_config_is_refused_with_both_lines(tmp_path, capsys):
    """PyYAML would keep the last value (lora_r 64) without a word."""
    from vlm_unsloth.cli import train_sft_main

    config = tmp_path / "run.yaml"
    config.write_text("model: tiny-qwen2-vl\nbackend: hf\nlora_r: 8\nmax_side: 768\nlora_r: 64\n")
    with pytest.raises(ConfigError) as error:
        parse_args(ALL, ["--config", str(config)])
    assert str(error.value) == f"{config}: key lora_r appears twice (lines 3 and 5) — keep one"
    # Through the CLI: read before anything loads (the backend is peeked from the same file).
    assert train_sft_main(["--config", str(config), "--output-dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: {error.value}\n"
    assert not (tmp_path / "out").exists()


def test_a_key_repeated_in_a_runs_saved_options_is_refused_too(tmp_path):
    """run_config.yaml is read by the same reader: --resume must not pick one value silently."""
    run, _ = _started_run(tmp_path, *RUN_FLAGS)
    saved = run / "run_config.yaml"
    text = saved.read_text().replace("DataArgs:\n", "DataArgs:\n  max_side: 512\n")
    saved.write_text(text)  # DataArgs already has max_side: 1024 further down
    lines = [n for n, line in enumerate(text.splitlines(), 1) if line.startswith("  max_side:")]
    assert len(lines) == 2
    with pytest.raises(OutputDirError) as error:
        parse_args(ALL, ["--output-dir", str(run), "--resume"])
    assert str(error.value) == (
        f"{saved}: key max_side appears twice (lines {lines[0]} and {lines[1]}) — keep one"
    )


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as error:
        parse_args(ALL, ["--batch-size", "0", "--max-side", "10", "--overwrite", "--resume"])
    message = str(error.value)
    for part in ("--batch-size 0", "--max-side 10", "--overwrite and --resume"):
        assert part in message
    assert "\n" not in message


def test_unknown_flag_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="--no-such-flag"):
        parse_args(ALL, ["--no-such-flag"])


def test_every_shipped_preset_parses_and_validates():
    from conftest import REPO

    from vlm_unsloth.families import size_named
    from vlm_unsloth.models.checkpoints import peek_family

    presets = sorted((REPO / "configs").glob("*.yaml"))
    assert {p.name for p in presets} >= {
        "qwen2-vl-7b-12gb.yaml", "llama-3.2-11b-vision-12gb.yaml",
        "kaggle-t4-16gb.yaml", "tiny-cpu-demo.yaml", "qwen3-vl-8b-12gb.yaml",
        "gemma-3-4b-12gb.yaml", "lfm2.5-vl-1.6b-12gb.yaml", "ministral-3-8b-12gb.yaml",
        "gemma-3n-e4b-12gb.yaml",
        "gemma-4-e4b-12gb.yaml",
    }  # fmt: skip
    for preset in presets:
        model, lora, data, train = parse_args(ALL, ["--config", str(preset)])
        assert peek_family(model.model) is not None, preset  # a registered family, offline
        assert data.max_side in (768, 1024), preset
        assert train.output_dir.startswith(("outputs/", "/kaggle/")), preset
    for preset, arch in (("qwen3-vl-8b-12gb.yaml", "qwen3-vl-8b"),
                         ("gemma-3-4b-12gb.yaml", "gemma-3-4b"),
                         ("lfm2.5-vl-1.6b-12gb.yaml", "lfm2.5-vl-1.6b"),
                         ("ministral-3-8b-12gb.yaml", "ministral-3-8b"),
                         ("gemma-3n-e4b-12gb.yaml", "gemma-3n-e4b"),
                         ("gemma-4-e4b-12gb.yaml", "gemma-4-e4b")):  # fmt: skip
        model, _, data, train = parse_args(ALL, ["--config", str(REPO / "configs" / preset)])
        assert size_named(model.model)[1].name == arch  # offline: the planner's table
        assert (train.batch_size, train.effective_batch_size) == ("auto", 16)
    demo = str(REPO / "configs" / "tiny-cpu-demo.yaml")  # not the current folder
    model, lora, data, train = parse_args(ALL, ["--config", demo])
    assert (model.model, model.backend, lora.modules_to_save) == (
        "tiny-qwen2-vl",
        "hf",
        ["lm_head"],
    )
    assert (data.dataset, model.cpu_threads) == ("demo-colours", 1)  # the offline quickstart


def test_cpu_threads_is_checked_and_unset_by_default():
    assert parse_args(ALL, [])[0].cpu_threads is None  # PyTorch's own default
    with pytest.raises(ConfigError, match="--cpu-threads 0: must be >= 1"):
        parse_args(ALL, ["--cpu-threads", "0"])


def test_unsloth_backend_without_cuda_is_refused_before_anything_loads():
    from vlm_unsloth.cli import parse
    from vlm_unsloth.errors import BackendError

    with pytest.raises(BackendError, match="needs an NVIDIA GPU"):
        parse(ALL, ["--backend", "unsloth"])


# --- values of the wrong type: one line naming the file (or flag), the key and the type --------

WRONG_TYPES = [  # the three values of issue #17 item 7, then one of every other kind of field
    ("lora_r: [8, 16]\n", "lora_r: expected an integer, got [8, 16]"),
    ("max_steps: 10.7\n", "max_steps: expected an integer, got 10.7"),
    ("max_steps: ten\n", "max_steps: expected an integer, got 'ten'"),
    ("learning_rate: fast\n", "learning_rate: expected a number, got 'fast'"),
    ("overwrite: maybe\n", "overwrite: expected true or false, got 'maybe'"),
    ("max_side:\n", "max_side: expected an integer, got null"),
    ("target_modules: q_proj\n", "target_modules: expected a list of text or null, got 'q_proj'"),
    ("modules_to_save: [1, 2]\n", "modules_to_save: expected a list of text or null, got [1, 2]"),
    ("gpu_memory_gib: [12]\n", "gpu_memory_gib: expected a number or null, got [12]"),
    ("backend: tpu\n", "backend: expected one of auto, unsloth, hf, got 'tpu'"),
    ("output_dir: {a: 1}\n", "output_dir: expected text, got {a: 1}"),
]


@pytest.mark.parametrize(("yaml_text", "message"), WRONG_TYPES)
def test_a_yaml_value_of_the_wrong_type_is_one_line_naming_file_key_and_type(
    tmp_path, yaml_text, message
):
    config = tmp_path / "run.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError) as error:
        parse_args(ALL, ["--config", str(config)])
    assert str(error.value) == f"{config}: {message}"


def test_every_yaml_type_problem_is_reported_at_once(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("lora_r: [8, 16]\nmax_steps: 10.7\nmax_side: 768\n")
    with pytest.raises(ConfigError) as error:
        parse_args(ALL, ["--config", str(config)])
    message = str(error.value)
    assert "lora_r: expected an integer" in message and "max_steps: expected an integer" in message
    assert "max_side" not in message and "\n" not in message


def test_yaml_values_argparse_would_convert_are_accepted(tmp_path):
    # PyYAML reads 2e-4 (no dot) and quoted numbers as text; argparse converts them like a flag.
    config = tmp_path / "run.yaml"
    config.write_text(
        "learning_rate: 2e-4\nmax_steps: '12'\nepochs: 2\nbatch_size: 4\nadapter: null\n"
        "target_modules: [q_proj, v_proj]\nbackend: hf\nsplit: 2023\n"
    )
    model, lora, data, train = parse_args(ALL, ["--config", str(config)])
    assert (train.learning_rate, train.max_steps, train.epochs, train.batch_size) == (
        2e-4,
        12,
        2.0,
        4,
    )
    assert (model.adapter, model.backend, lora.target_modules) == (None, "hf", ["q_proj", "v_proj"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-steps", "ten"], "--max-steps: expected an integer, got 'ten'"),
        (["--max_steps", "10.7"], "--max-steps: expected an integer, got '10.7'"),
        (["--learning-rate", "fast"], "--learning-rate: expected a number, got 'fast'"),
        (["--backend", "tpu"], "--backend: invalid choice: 'tpu'"),
        (["--lora-r"], "--lora-r: expected one argument"),
    ],
)
def test_a_flag_of_the_wrong_type_is_one_line_not_a_usage_block(flags, message, capsys):
    with pytest.raises(ConfigError) as error:
        parse_args(ALL, flags)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)
    assert "usage:" not in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--model", "--adapter", "--backend"])
def test_a_flag_read_before_the_parser_without_its_value_is_one_line(flag, capsys):
    """--model, --adapter and --backend are read before Unsloth and the TRL parser load."""
    from vlm_unsloth.cli import train_sft_main

    assert train_sft_main([flag]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {flag}: expected one argument" and "usage:" not in err


ISSUE_VALUES = ["lora_r: [8, 16]\n", "max_steps: 10.7\n", "max_steps: ten\n"]


@pytest.mark.parametrize("yaml_text", ISSUE_VALUES)
def test_the_cli_names_a_bad_yaml_value_before_anything_loads(tmp_path, yaml_text):
    config = tmp_path / "run.yaml"
    config.write_text(yaml_text)
    code = (
        "import sys\n"
        "from vlm_unsloth.cli import main\n"
        f"status = main(['train-sft', '--config', {str(config)!r}, '--backend', 'hf', "
        f"'--model', 'no-such-model', '--output-dir', {str(tmp_path / 'out')!r}])\n"
        "print('STATUS', status, [m for m in ('torch', 'trl', 'transformers', 'datasets') "
        "if m in sys.modules])\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.stdout.strip() == "STATUS 2 []", result.stderr
    key = yaml_text.split(":")[0]
    assert result.stderr.startswith(f"error: {config}: {key}: expected an integer, got ")
    assert result.stderr.count("\n") == 1 and "no-such-model" not in result.stderr


# ---------------------------------------------------------------------------------------------
# --resume: the run's own options (resume_options.py)


def _started_run(tmp_path, *flags):
    """A run folder whose run_config.yaml holds the options `flags` parse to, as training saves
    it (grouped by dataclass, plus the resolved and versions sections)."""
    from vlm_unsloth import run_dir
    from vlm_unsloth.config import to_dict

    run = tmp_path / "run"
    run.mkdir()
    options = parse_args(ALL, ["--output-dir", str(run), *flags])
    resolved = {"backend": "hf", "batch_size": 3, "grad_accum": 2}
    run_dir.save_run_config(run, {**to_dict(*options), "resolved": resolved})
    return run, options


RUN_FLAGS = (
    "--model", "tiny-qwen2.5-vl", "--backend", "hf", "--dataset", "my.jsonl", "--max-side",
    "1024", "--lora-r", "8", "--no-finetune-vision-layers", "--batch-size", "3",
    "--grad-accum", "2", "--learning-rate", "1e-3", "--seed", "7", "--max-steps", "20",
)  # fmt: skip


def test_resume_takes_the_runs_options_without_retyping_them(tmp_path):
    run, started = _started_run(tmp_path, *RUN_FLAGS)
    resumed = parse_args(ALL, ["--output-dir", str(run), "--resume"])
    assert resumed[:3] == started[:3]
    assert dataclasses.replace(resumed[3], resume=False) == started[3] and resumed[3].resume
    # The backend and the model, read before the parser (Unsloth must be imported first), too.
    argv = ["--output-dir", str(run), "--resume"]
    assert chosen_backend(ALL, argv) == "hf" and chosen_model(ALL, argv) == "tiny-qwen2.5-vl"
    # Also with the folder from a YAML file and `resume: true` there.
    config = tmp_path / "resume.yaml"
    config.write_text(f"output_dir: {run}\nresume: true\n")
    assert parse_args(ALL, ["--config", str(config)])[2].max_side == 1024


def test_resume_may_train_longer_and_log_differently(tmp_path):
    run, _ = _started_run(tmp_path, *RUN_FLAGS)
    flags = ["--max-steps", "40", "--save-steps", "5", "--logging-steps", "2"]
    *_, train = parse_args(ALL, ["--output-dir", str(run), "--resume", *flags])
    assert (train.max_steps, train.save_steps, train.logging_steps) == (40, 5, 2)
    assert (train.learning_rate, train.batch_size, train.seed) == (1e-3, 3, 7)
    # Flags equal to the run's (the old way: every flag typed again) are fine.
    parse_args(ALL, ["--output-dir", str(run), "--resume", *RUN_FLAGS])


def test_resume_refuses_options_that_would_make_another_run_in_one_line(tmp_path, capsys):
    from vlm_unsloth.cli import train_sft_main

    run, _ = _started_run(tmp_path, *RUN_FLAGS)
    argv = ["--output-dir", str(run), "--resume", "--lora-r", "16", "--max-side", "768"]
    with pytest.raises(ConfigError) as error:
        parse_args(ALL, argv)
    message = str(error.value)
    assert "--lora-r 16 (the run's: 8)" in message and "--max-side 768 (the run's: 1024)" in message
    assert str(run / "run_config.yaml") in message
    assert train_sft_main(argv) == 2  # through the CLI: one line, nothing loaded
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--lora-r 16" in err


def test_resume_takes_a_grpo_runs_options_too(tmp_path):
    from vlm_unsloth import run_dir
    from vlm_unsloth.config import to_dict
    from vlm_unsloth.train.grpo_options import GrpoArgs, GrpoTrainArgs

    grpo = [ModelArgs, LoraArgs, DataArgs, GrpoTrainArgs, GrpoArgs]
    run = tmp_path / "grpo"
    run.mkdir()
    flags = ["--adapter", "outputs/sft", "--rewards", "exact_match", "format",
             "--num-generations", "8", "--beta", "0.04", "--batch-size", "8"]  # fmt: skip
    started = parse_args(grpo, ["--output-dir", str(run), *flags])
    run_dir.save_run_config(run, to_dict(*started))
    resumed = parse_args(grpo, ["--output-dir", str(run), "--resume"])
    assert resumed[4] == started[4] and resumed[0].adapter == "outputs/sft"
    with pytest.raises(ConfigError, match=r"--num-generations 4 \(the run's: 8\)"):
        parse_args(grpo, ["--output-dir", str(run), "--resume", "--num-generations", "4"])


def test_a_run_moved_to_another_folder_resumes_there(tmp_path):
    run, _ = _started_run(tmp_path, *RUN_FLAGS)
    moved = run.rename(tmp_path / "moved")
    *_, train = parse_args(ALL, ["--output-dir", str(moved), "--resume"])
    assert train.output_dir == str(moved) and train.learning_rate == 1e-3


def test_resume_without_a_run_config_parses_as_before(tmp_path):
    """No run_config.yaml (no run there): the flags as given; training then says nothing can be
    resumed (test_sft's output-folder test)."""
    *_, train = parse_args(ALL, ["--output-dir", str(tmp_path / "none"), "--resume"])
    assert train.resume and train.max_steps == -1


def test_an_unreadable_run_config_is_one_line_naming_it(tmp_path):
    run, _ = _started_run(tmp_path, *RUN_FLAGS)
    (run / "run_config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(OutputDirError, match="run_config.yaml: cannot read the run's options"):
        parse_args(ALL, ["--output-dir", str(run), "--resume"])
    (run / "run_config.yaml").write_text("just text\n")
    with pytest.raises(OutputDirError, match=r"cannot read the run's options \(not a mapping\)"):
        parse_args(ALL, ["--output-dir", str(run), "--resume"])


def test_a_wrong_typed_value_in_the_runs_options_names_the_file_not_a_flag(tmp_path, capsys):
    """A hand-edited run_config.yaml is checked like a --config file: the line names the file
    and the key (no --max-side was typed), and text a flag would take still works."""
    from vlm_unsloth.cli import train_sft_main

    run, _ = _started_run(tmp_path, *RUN_FLAGS)
    saved = run / "run_config.yaml"
    text = saved.read_text()
    saved.write_text(text.replace("  max_side: 1024\n", "  max_side: banana\n"))
    argv = ["--output-dir", str(run), "--resume"]
    with pytest.raises(OutputDirError) as error:
        parse_args(ALL, argv)
    assert str(error.value) == (
        f"{saved}: DataArgs.max_side: expected an integer, got 'banana' — write each value as "
        "its option takes it (train_sft.py --help lists them)"
    )
    assert train_sft_main(argv) == 2 and capsys.readouterr().err == f"error: {error.value}\n"
    saved.write_text(text.replace("  max_side: 1024\n", "  max_side: '1024'\n"))
    assert parse_args(ALL, argv)[2].max_side == 1024


# ---------------------------------------------------------------------------------------------
# A preset's value is blamed on the preset, and `none` clears it (issue #33, item 12)

SMOL_PRESET = "smolvlm-instruct-12gb.yaml"  # eval_split: val (ChartQA's)


def test_a_presets_eval_split_is_cleared_with_none():
    from conftest import REPO

    preset = str(REPO / "configs" / SMOL_PRESET)
    assert parse_args(ALL, ["--config", preset])[2].eval_split == "val"
    for cleared in ("none", "None", ""):
        data = parse_args(ALL, ["--config", preset, "--eval-split", cleared])[2]
        assert data.eval_split is None
    data = parse_args(ALL, ["--config", preset, "--eval-dataset", "none"])[2]
    assert data.eval_dataset is None and data.eval_split == "val"


def test_a_presets_eval_split_missing_from_the_data_names_the_preset_and_key(tmp_path, capsys):
    """The preset's split, not one the user typed: the line names the file and its key (it said
    --split), and how to clear it."""
    from conftest import REPO

    from vlm_unsloth.cli import train_sft_main

    rows = tmp_path / "my.jsonl"
    image = REPO / "vlm_unsloth" / "data" / "demo" / "images" / "bar_0001.png"
    rows.write_text(json.dumps({"image": str(image), "question": "q", "answer": "a"}) + "\n")
    preset = str(REPO / "configs" / SMOL_PRESET)
    argv = ["--config", preset, "--dataset", str(rows), "--model", "tiny-smolvlm",
            "--backend", "hf", "--output-dir", str(tmp_path / "out")]  # fmt: skip
    assert train_sft_main(argv) == 2
    what = "my.jsonl is a single file, so it has no split 'val' — drop the eval split "
    what += "(--eval-split none clears a --config file's), hold out rows with --eval-fraction, "
    what += "or pass an eval file with --eval-dataset"
    err = capsys.readouterr().err  # after the model's loading notices
    assert err.splitlines()[-1] == f"error: {preset}: eval_split: {what}" and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    # Typed on the command line, the flag is what the line names; the file's other keys too.
    assert option_origin("--eval-split", [*argv, "--eval-split=val"]) is None
    assert option_origin("--max-samples", argv) == f"{preset}: max_samples"
    assert option_origin("--seed", argv) is None  # the preset does not set it


def test_the_course_preset_is_smolvlm_instruct_on_chartqa_at_768():
    from conftest import REPO

    preset = REPO / "configs" / "smolvlm-instruct-12gb.yaml"
    model, lora, data, train = parse_args(
        [ModelArgs, LoraArgs, DataArgs, TrainArgs], ["--config", str(preset)]
    )
    assert (model.model, data.dataset, data.max_side) == (
        "HuggingFaceTB/SmolVLM-Instruct", "HuggingFaceM4/ChartQA", 768,
    )  # fmt: skip
    assert (train.batch_size, train.grad_accum, train.learning_rate) == (4, 4, 1e-4)
    assert data.system_prompt.startswith("You are a Vision Language Model specialized")
