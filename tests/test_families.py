"""The family registry: one module a family in vlm_unsloth/families/, and everything a user sees
derived from it (`vlm-unsloth models`, the README's table, help texts, unknown names); removing a
module removes its family cleanly.

    python3 -m pytest tests/test_families.py -q
"""

from __future__ import annotations

import ast
import json
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

import vlm_unsloth.families as families_package
from vlm_unsloth.families import FAMILIES, TINY_MODEL_NAMES
from vlm_unsloth.train.catalog import family_rows, markdown_table

PACKAGE = REPO / "vlm_unsloth"
REQUIRED_KEYS = {"family", "model_type", "tiny", "checkpoints", "backends", "methods"}


def _cli(*args: str, package_root: Path = REPO):
    """`python -m vlm_unsloth.cli ARGS` with the package found in `package_root` (run from there:
    `-m` puts the current folder first on the path)."""
    env = {"PYTHONPATH": str(package_root), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "vlm_unsloth.cli", *args],
        capture_output=True, text=True, env=env, cwd=package_root, timeout=300,
    )  # fmt: skip


def test_each_family_module_is_named_after_its_key_and_registered():
    modules = [
        m.name
        for m in pkgutil.iter_modules(families_package.__path__)
        if not m.name.startswith("_") and m.name != "base"
    ]
    assert len(modules) == len(FAMILIES) >= 9
    for name in modules:
        family = __import__(f"vlm_unsloth.families.{name}", fromlist=["FAMILY"]).FAMILY
        assert name == re.sub(r"[-.]", "_", family.key), name
        assert FAMILIES[family.key] is family


def test_each_family_has_its_own_names():
    families = list(FAMILIES.values())
    assert all(f.tiny_name.startswith("tiny-") for f in families)
    assert len(TINY_MODEL_NAMES) == len(families)
    assert len({(f.model_type, f.vision_model_type) for f in families}) == len(families)
    sizes = [size.name for f in families for size in f.sizes]
    assert len(sizes) == len(set(sizes))
    for family in families:
        assert family.checkpoints[0] == family.default_model
        assert family.sizes, f"{family.key}: no Hub sizes for the planner to name"


def test_models_command_lists_every_family_as_json():
    result = _cli("models", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["family"] for row in rows] == list(FAMILIES)
    for row in rows:
        family = FAMILIES[row["family"]]
        assert set(row) >= REQUIRED_KEYS, row["family"]
        assert (row["model_type"], row["tiny"]) == (family.model_type, family.tiny_name)
        assert row["checkpoints"] == list(family.checkpoints)
        assert "hf" in row["backends"] and set(row["methods"]) <= {"sft", "dpo", "grpo"}
        assert {"sft", "dpo"} <= set(row["methods"])
    # Llama 3.2 Vision's images enter by cross-attention: Unsloth's GRPO cannot carry them.
    by_key = {row["family"]: row for row in rows}
    for key, family in FAMILIES.items():
        unsloth_grpo = "unsloth" in by_key[key]["method_backends"]["grpo"]
        assert unsloth_grpo == (family.unsloth_trains and not family.images_by_cross_attention)


def test_readme_family_table_is_the_generated_one():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- families table: vlm-unsloth models --markdown -->\n")
    end = readme.index("<!-- end of families table -->")
    shown = readme[readme.index("\n", start) + 1 : end]
    assert shown == markdown_table(family_rows()), "run: vlm-unsloth models --markdown"


def _string_literals(tree: ast.AST) -> list[ast.Constant]:
    """Every string constant of a module except docstrings (a module's, a class's, a
    function's, and the attribute docstrings under assignments)."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            for statement in node.body:
                if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                    docstrings.add(id(statement.value))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_no_module_outside_families_names_a_family():
    """What code knows of a family is in its module: no model_type or tiny name as a string
    literal anywhere else in the package (docstrings, which show command lines, excepted)."""
    names = sorted({n for f in FAMILIES.values() for n in (f.model_type, f.tiny_name)}, key=len)
    named = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, names[::-1])) + r")(?!\w)")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] == "families":
            continue
        for node in _string_literals(ast.parse(path.read_text(encoding="utf-8"))):
            match = named.search(node.value)
            if match:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {match.group(0)!r}")
    assert not found, "\n".join(found)


def test_the_literal_check_sees_a_family_name(tmp_path):
    source = '"""Docstring: --model tiny-qwen2-vl is fine here."""\nX = {"qwen2_vl": 1}\n'
    literals = [node.value for node in _string_literals(ast.parse(source))]
    assert literals == ["qwen2_vl"]


@pytest.fixture(scope="module")
def without_pixtral(tmp_path_factory) -> Path:
    """A copy of the package with families/pixtral.py removed."""
    root = tmp_path_factory.mktemp("without-pixtral")
    shutil.copytree(PACKAGE, root / "vlm_unsloth", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "vlm_unsloth" / "families" / "pixtral.py").unlink()
    return root


def test_removing_a_family_module_removes_the_family(without_pixtral):
    listed = _cli("models", "--json", package_root=without_pixtral)
    assert listed.returncode == 0, listed.stderr
    keys = [row["family"] for row in json.loads(listed.stdout)]
    assert keys == [key for key in FAMILIES if key != "pixtral"]
    for command in ("train-sft", "infer"):
        refused = _cli(
            command, "--model", "tiny-pixtral", "--backend", "hf", package_root=without_pixtral
        )
        assert refused.returncode == 2
        assert refused.stdout == "" and refused.stderr.count("\n") == 1, refused.stderr
        assert (
            "unknown model 'tiny-pixtral'" in refused.stderr and "tiny-qwen2-vl" in refused.stderr
        )


@pytest.mark.slow
def test_every_other_familys_tests_pass_without_a_family_module(without_pixtral):
    """tests/test_every_family.py (fast tier) against the package without families/pixtral.py:
    every remaining family passes, and no pixtral parametrisation is collected."""
    env = {**__import__("os").environ, "PYTHONPATH": str(without_pixtral)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "tests" / "test_every_family.py"),
         "-m", "not slow", "-q", "-p", "no:cacheprovider", "--collect-only"],
        capture_output=True, text=True, env=env, cwd=without_pixtral, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    assert "pixtral" not in result.stdout and "[qwen2-vl]" in result.stdout
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "tests" / "test_every_family.py"),
         "-m", "not slow", "-q", "-p", "no:cacheprovider", "-x"],
        capture_output=True, text=True, env=env, cwd=without_pixtral, timeout=1800,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:]
    assert " passed" in run.stdout and "failed" not in run.stdout
