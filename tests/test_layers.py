"""The package's layers, read from the source: imports point down (or within a layer), never up,
and no modules import each other in a cycle, counting imports inside functions.

Low to high: base modules (errors, config, config_types, resume_options, console, distributed,
run_dir, yaml_files, output_access, and the families/ package) < data/ < models/ < infer/ <
perf/ < train/ < cli and __init__. Training is the top library layer: a run evaluates with
infer/ (--eval-at-end) and sizes and guards itself with perf/ (auto batch, OOM recovery, the
optimizer); neither of those needs a training method.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "vlm_unsloth"
LAYERS = ["base", "data", "models", "infer", "perf", "train", "top"]
TOP_MODULES = {"vlm_unsloth.cli", "vlm_unsloth"}
BASE_MODULES = {
    "errors", "config", "config_types", "console", "distributed", "run_dir", "resume_options",
    "yaml_files", "output_access",
}  # fmt: skip
BASE_PACKAGES = {"families"}
"""Packages in the base layer: a family module is as low as the Family facts it declares."""
LONGEST_MODULE = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    if module in TOP_MODULES:
        return "top"
    parts = module.split(".")
    if parts[1] in BASE_PACKAGES:
        return "base"
    if len(parts) == 2:
        assert parts[1] in BASE_MODULES, f"{module}: a top-level module outside the base layer"
        return "base"
    return parts[1]


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every vlm_unsloth module `path` imports, anywhere in the file (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("vlm_unsloth")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vlm_unsloth"):
            for alias in node.names:  # `from vlm_unsloth.train import steps` names a module
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(paths)) - {name} for name, path in paths.items()}


def test_the_tree_has_the_layers():
    for layer in ("data", "models", "infer", "perf", "train", *BASE_PACKAGES):
        assert (PACKAGE / layer / "__init__.py").is_file(), layer
    top_level = {path.stem for path in PACKAGE.glob("*.py")}
    assert top_level == BASE_MODULES | {"cli", "__init__"}


def test_imports_point_down_or_sideways():
    upward = []
    for module, imports in import_graph().items():
        for target in imports:
            if LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(module)):
                upward.append(
                    f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
                )
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycles():
    graph = import_graph()
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        for target in sorted(graph.get(module, ())):
            if target in stack:
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in done:
                visit(target, [*stack, target])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize(
    "module", sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py"))
)
def test_modules_stay_short_and_say_what_they_are_for(module):
    source = (PACKAGE / module).read_text(encoding="utf-8")
    assert len(source.splitlines()) <= LONGEST_MODULE, f"{module}: split it by concern"
    assert ast.get_docstring(ast.parse(source)), f"{module} has no module docstring"


def test_public_functions_have_docstrings():
    missing = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            public = isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
            if public and not ast.get_docstring(node):
                missing.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert not missing, "\n".join(missing)


def test_the_checker_sees_an_upward_and_a_lazy_import(tmp_path):
    # The rule would hold trivially if the reader missed imports inside functions.
    source = "def f():\n    from vlm_unsloth.train import sft\n    import vlm_unsloth.perf.oom\n"
    path = tmp_path / "probe.py"
    path.write_text(source)
    known = {"vlm_unsloth.train.sft", "vlm_unsloth.perf.oom"}
    assert imported_modules(path, known) == known
