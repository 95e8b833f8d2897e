"""Inference (hf backend, CPU): a failure while streaming is raised; infer.py writes every input
row back with its prediction; its flags and a damaged or mismatched run folder are one-line
errors. (Batched = one by one, streamed = greedy and the CLI's streaming run for every family in
tests/test_every_family.py.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, SIDE, must_not_be_called

from vlm_unsloth.cli import evaluate_main, infer_main, train_sft_main
from vlm_unsloth.data.splits import DEMO_DIR
from vlm_unsloth.infer.args import GenerationArgs
from vlm_unsloth.infer.generation import generate_answers, stream_answer


def test_a_failure_inside_streaming_generation_is_raised_not_hung(loaded, demo_records):
    # max_new_tokens=0 passes the dataclass (validating it is the parser's job) and makes
    # transformers raise inside the generation thread: the caller must get that error instead
    # of waiting forever for a streamer that never ends.
    broken = GenerationArgs(max_new_tokens=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        list(stream_answer(loaded("tiny-qwen2-vl"), demo_records[0], broken, max_side=SIDE))


def test_infer_cli_writes_each_input_row_with_its_prediction(tmp_path, loaded):
    from vlm_unsloth.data.loaders import DataSpec
    from vlm_unsloth.infer.predict import load_prompt_records

    image = str(DEMO_DIR / "images" / "bar_0301.png")
    rows = [
        {"image": image, "question": "What is the value of Lime?", "answer": "76", "id": 1},
        {"image": image, "question": "How many bars?", "answer": "5", "extra": {"k": [1, 2.5]}},
        {"question": "Which bar is the highest?", "image": image},  # unlabelled, keys reordered
        {"image": image, "question": "Colour of Fig?", "answer": "red", "score": 0.25},
        {"image": image, "question": "Lowest?", "answer": None, "tags": ["a", "é"]},
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n", encoding="utf-8")
    output = tmp_path / "out" / "pred.jsonl"
    args = ["--model", "tiny-qwen2-vl", "--backend", "hf", "--input", str(source),
            "--output", str(output), "--batch-size", "2", "--max-new-tokens", "6",
            "--max-side", str(SIDE)]  # fmt: skip
    assert infer_main(args) == 0
    written = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [{k: v for k, v in w.items() if k != "prediction"} for w in written] == rows
    assert [list(w)[:-1] for w in written] == [list(r) for r in rows]  # key order kept
    records = load_prompt_records(DataSpec(dataset=str(source)))
    expected = generate_answers(
        loaded("tiny-qwen2-vl"), records, GenerationArgs(max_new_tokens=6), max_side=SIDE
    )
    assert [w["prediction"] for w in written] == expected

    assert infer_main(args) == 2  # the predictions exist: not replaced without --overwrite
    assert infer_main([*args, "--overwrite", "--max-samples", "2"]) == 0
    assert len(output.read_text(encoding="utf-8").splitlines()) == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "nothing to do"),
        (["--image", "x.png"], "--image and --prompt go together"),
        (["--input", "x.jsonl"], "--input and --output go together"),
        (["--image", "x.png", "--prompt", "q", "--output", "o.jsonl"], "choose one"),
        (["--input", "x.jsonl", "--output", "o.jsonl", "--eval-split", "test"], "evaluate.py"),
    ],
)
def test_infer_cli_reports_inconsistent_flags_in_one_line(flags, message, capsys):
    assert infer_main(["--model", "tiny-qwen2-vl", "--backend", "hf", *flags]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and message in error and "\n" not in error


def test_infer_cli_names_a_missing_image(tmp_path, capsys):
    missing = str(tmp_path / "nope.png")
    assert infer_main(["--model", "tiny-qwen2-vl", "--image", missing, "--prompt", "q"]) == 2
    assert f"--image: no image file {missing}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("script", "flags"),
    [
        ("infer.py", ["--adapter", "--image", "--prompt", "--input", "--output", "--temperature",
                      "--top-p", "--min-p", "--max-new-tokens", "--question-column"]),
        ("evaluate.py", ["--adapter", "--model", "--dataset", "--output-dir", "--overwrite",
                         "--num-samples", "--max-samples", "--answer-column"]),
    ],
)  # fmt: skip
def test_script_help(script, flags):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    for flag in flags:
        assert flag in result.stdout, flag


# ---------------------------------------------------------------------------------------------
# A damaged or mismatched training run: one line naming the file and the fix, before any
# weights load (issue #33, items 8 and 11)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A one-step run of the tiny Qwen2-VL (hf backend, CPU; no eval rows): adapter/ and
    checkpoint-1/ as training writes them."""
    run = tmp_path_factory.mktemp("trained") / "run"
    flags = ["--model", "tiny-qwen2-vl", "--backend", "hf", "--dataset",
             str(DEMO_DIR / "train.jsonl"), "--max-samples", "2", "--batch-size", "1",
             "--grad-accum", "1", "--max-steps", "1", "--lora-r", "4",
             "--output-dir", str(run)]  # fmt: skip
    assert train_sft_main(flags) == 0
    return run


def _answer(script: str, run, tmp_path, *more: str) -> int:
    """infer.py (one image) or evaluate.py on the run `run`, with the hf backend."""
    if script == "infer.py":
        image = str(DEMO_DIR / "images" / "bar_0301.png")
        flags = ["--image", image, "--prompt", "Which bar is highest?", "--max-new-tokens", "2"]
        return infer_main(["--adapter", str(run), "--backend", "hf", *flags, *more])
    flags = ["--output-dir", str(tmp_path / "eval"), "--max-samples", "1"]
    return evaluate_main(["--adapter", str(run), "--backend", "hf", *flags, *more])


def _damaged_copy(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    return run


def _no_weights_load(monkeypatch):
    """Loading a model from here on fails the test: the checks must come first."""
    from vlm_unsloth.infer import evaluate, predict

    monkeypatch.setattr(predict, "load_for_inference", must_not_be_called)
    monkeypatch.setattr(evaluate, "load_for_inference", must_not_be_called)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["infer.py", "evaluate.py"])
def test_a_cut_short_adapter_file_is_one_line_naming_it(
    script, finished_run, tmp_path, capsys, monkeypatch
):
    run = _damaged_copy(finished_run, tmp_path)
    weights = run / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy cut short
    _no_weights_load(monkeypatch)
    assert _answer(script, run, tmp_path) == 2
    assert capsys.readouterr().err == (
        f"error: --adapter: {weights} is damaged or cut short (incomplete metadata, file not "
        "fully covered) — copy the adapter folder again from where it was trained, or use "
        f"checkpoint-1 as it is: --adapter {run / 'checkpoint-1'}\n"
    )


@pytest.mark.slow
@pytest.mark.parametrize("script", ["infer.py", "evaluate.py"])
def test_a_missing_adapter_config_is_named_not_taken_for_an_unfinished_run(
    script, finished_run, tmp_path, capsys, monkeypatch
):
    run = _damaged_copy(finished_run, tmp_path)
    (run / "adapter" / "adapter_config.json").unlink()
    _no_weights_load(monkeypatch)
    assert _answer(script, run, tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --adapter: {run / 'adapter' / 'adapter_config.json'} is missing")
    assert f"copy it back from {run / 'checkpoint-1' / 'adapter_config.json'}" in err
    assert "--resume" not in err and "stopped" not in err and err.count("\n") == 1
    if script == "infer.py":  # the file the advice names is the one lost: copied back, it works
        shutil.copy(run / "checkpoint-1" / "adapter_config.json", run / "adapter")
        monkeypatch.undo()
        assert _answer(script, run, tmp_path) == 0


@pytest.mark.slow
@pytest.mark.parametrize("adapter", [".", "adapter"])
def test_an_adapter_of_another_family_is_refused_before_loading(
    adapter, finished_run, tmp_path, capsys, monkeypatch
):
    """The run's folder (its --model) or a lone copy of its adapter/ (adapter_config.json's
    base model): either way the family is known without loading the model."""
    folder = finished_run  # read, never written
    if adapter == "adapter":
        folder = shutil.copytree(finished_run / "adapter", tmp_path / "lone")
    _no_weights_load(monkeypatch)
    for script in ("infer.py", "evaluate.py"):
        assert _answer(script, folder, tmp_path, "--model", "tiny-smolvlm") == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --model: tiny-smolvlm is a smolvlm model, but the adapter ")
        assert "(qwen2-vl)" in err and "drop --model" in err and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.parametrize("script", ["infer.py", "evaluate.py"])
def test_a_wrong_typed_value_in_the_runs_options_is_one_line_naming_the_file(
    script, finished_run, tmp_path, capsys
):
    run = _damaged_copy(finished_run, tmp_path)
    saved = run / "run_config.yaml"
    saved.write_text(saved.read_text().replace("  max_side: 768\n", "  max_side: banana\n"))
    assert _answer(script, run, tmp_path) == 2
    assert capsys.readouterr().err == (
        f"error: {saved}: DataArgs.max_side: expected an integer, got 'banana' — write each "
        "value as its option takes it (train_sft.py --help lists them)\n"
    )


def test_a_dpo_runs_options_are_read_back_for_evaluation(tmp_path):
    """A DPO run saves its training options as DpoTrainArgs: evaluation still finds its seed
    (which --eval-fraction rows were held out) and its data options."""
    from vlm_unsloth import run_dir
    from vlm_unsloth.config import DataArgs, ModelArgs, parse_args, to_dict
    from vlm_unsloth.infer.trained_run import run_options
    from vlm_unsloth.models.lora import LoraArgs
    from vlm_unsloth.train.dpo import DpoArgs, DpoTrainArgs

    flags = ["--model", "tiny-qwen2-vl", "--seed", "7", "--max-side", "512",
             "--eval-fraction", "0.25", "--output-dir", str(tmp_path)]  # fmt: skip
    started = parse_args([ModelArgs, LoraArgs, DataArgs, DpoTrainArgs, DpoArgs], flags)
    run_dir.save_run_config(tmp_path, to_dict(*started))
    model_args, data_args, train_args = run_options(tmp_path)
    assert (model_args.model, data_args, train_args.seed) == ("tiny-qwen2-vl", started[2], 7)
