"""Every file path, `--flag` and `vlm-unsloth` subcommand that README.md and docs/*.md name exists.

    python3 -m pytest tests/test_docs.py -q

Flags are checked against the real parsers: a flag in a `python scripts/X.py ...`,
`vlm-unsloth X ...` or `-m vlm_unsloth.cli X ...` command against that command's parser (what
its `--help` prints), a flag named alone in prose against all of them together. Paths under the
repository's own folders (`scripts/`, `configs/`, `vlm_unsloth/`, ...) must exist, as must
relative Markdown links and dotted `vlm_unsloth.x.y` names. Example files of the user's
(`my_data.jsonl`, `outputs/mine`) are not checked: they are not under those folders.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.util
import io
import re
import shlex
from pathlib import Path
from unittest import mock

import pytest
from conftest import REPO

from vlm_unsloth.cli import COMMANDS

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
REPO_FOLDERS = (".ci", "configs", "docs", "notebooks", "scripts", "tests", "tools", "vlm_unsloth")
ROOT_FILES = ("README.md", "mkdocs.yml", "pyproject.toml")
# Programs whose own flags the docs may name in their commands (`pip install -e`, `pytest -m`):
# such a command is not checked, nor are the launcher's flags before our command
# (`torchrun --nproc_per_node 2 scripts/train_dpo.py ...`).
OTHER_PROGRAMS = {"pip", "pytest", "ruff", "mkdocs", "apt-get", "git", "hf", "trl", "time"}

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
SPAN = re.compile(r"`([^`]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
FLAG = re.compile(r"(?<![\w-])--[a-z][\w-]*")
_FOLDERS = "|".join(map(re.escape, REPO_FOLDERS))
_FILES = "|".join(map(re.escape, ROOT_FILES))
PATH = re.compile(rf"(?<![\w./-])((?:{_FOLDERS})/[\w./*-]*|(?:{_FILES})(?![\w.]))")
DOTTED = re.compile(r"(?<![\w./-])vlm_unsloth(?:\.\w+)+")
SCRIPT = re.compile(r"^(?:scripts/)?(\w+)\.py$")


def _script_main(name: str):
    path = REPO / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"docs_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@functools.cache
def parser_flags(command: str) -> frozenset[str]:
    """The option strings of the parser behind `command` ("vlm-unsloth train-sft" or
    "scripts/plan.py"), read from the parser its `--help` prints."""
    if command.startswith("vlm-unsloth "):
        main = COMMANDS[command.split()[1]][1]
    else:
        main = _script_main(SCRIPT.match(command).group(1))
    seen: list[argparse.ArgumentParser] = []

    def record(parser, file=None):
        seen.append(parser)

    quiet = io.StringIO()
    with (
        mock.patch.object(argparse.ArgumentParser, "print_help", record),
        contextlib.redirect_stdout(quiet),
        contextlib.redirect_stderr(quiet),
        pytest.raises(SystemExit),
    ):
        main(["--help"])
    assert seen, f"{command} --help printed no parser's help"
    flags = set(seen[-1]._option_string_actions)
    if type(seen[-1]).__name__ == "TrlParser":  # it takes --config itself, before argparse
        flags.add("--config")
    return frozenset(flags)


def all_commands() -> list[str]:
    scripts = sorted(p.name for p in (REPO / "scripts").glob("*.py"))
    return [f"vlm-unsloth {name}" for name in COMMANDS] + [f"scripts/{s}" for s in scripts]


@functools.cache
def every_flag() -> frozenset[str]:
    return frozenset().union(*(parser_flags(command) for command in all_commands()))


def split_page(text: str) -> tuple[list[str], list[str], str]:
    """(command lines of fenced blocks, inline code spans, the prose left)."""
    lines = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append(line)
    rest = FENCE.sub("", text)
    spans = [span.replace("\n", " ") for span in SPAN.findall(rest)]
    return lines, spans, SPAN.sub("", rest)


def tokens_of(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # an apostrophe in a comment or a placeholder
        return line.split()


def command_of(tokens: list[str]) -> tuple[str | None, list[str]]:
    """Our command in these tokens ("vlm-unsloth X" or "scripts/X.py") and the tokens after it;
    (None, tokens) for anything else, ("", []) for another program's command."""
    for i, token in enumerate(tokens):
        script = SCRIPT.match(token)
        if script and (REPO / "scripts" / f"{script.group(1)}.py").exists():
            return f"scripts/{script.group(1)}.py", tokens[i + 1 :]
        if token in ("vlm-unsloth", "vlm_unsloth.cli") and i + 1 < len(tokens):
            return f"vlm-unsloth {tokens[i + 1]}", tokens[i + 2 :]
    if tokens and (tokens[0] in OTHER_PROGRAMS or tokens[:3] == ["python", "-m", "pytest"]):
        return "", []
    if tokens and tokens[0] in ("torchrun", "accelerate", "python", "python3"):
        return "", []  # a launcher without our command: its own flags
    return None, tokens


def flag_problems(where: str, command: str | None, args: list[str]) -> list[str]:
    problems = []
    if command and command.startswith("vlm-unsloth "):
        name = command.split()[1]
        if name not in COMMANDS and name not in ("...", "COMMAND"):
            return [f"{where}: `{command}`: no such subcommand (cli.COMMANDS)"]
        if name not in COMMANDS:
            command = None
    known = parser_flags(command) if command else every_flag()
    for arg in args:
        flag, _, value = arg.partition("=")
        if FLAG.fullmatch(flag) and flag not in known:
            problems.append(f"{where}: {flag} is not an option of {command or 'any command'}")
        for inner in FLAG.findall(value):  # --train-flags='--num-generations 4 ...'
            if inner not in every_flag():
                problems.append(f"{where}: {inner} (inside {flag}) is not an option of any command")
    return problems


def page_flag_problems(page: Path) -> list[str]:
    lines, spans, prose = split_page(page.read_text(encoding="utf-8"))
    problems = []
    for text in lines + spans:
        command, args = command_of(tokens_of(text))
        if command is None:  # a flag named in code, but not in a command
            args = FLAG.findall(text)
        problems += flag_problems(f"{page.name}: {text.strip()[:60]!r}", command, args)
    problems += flag_problems(f"{page.name} (prose)", None, FLAG.findall(prose))
    return problems


def page_path_problems(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    lines, spans, _ = split_page(text)
    problems = []
    for code in lines + spans:
        for found in PATH.findall(code):
            path = found.rstrip(".,:;")
            if not (any(REPO.glob(path)) if "*" in path else (REPO / path).exists()):
                problems.append(f"{page.name}: {path} does not exist")
        for dotted in DOTTED.findall(code):
            if not _resolves(dotted):
                problems.append(f"{page.name}: {dotted} does not exist")
    for target in LINK.findall(text):
        if "://" in target or target.startswith(("#", "mailto:")):
            continue
        if not (page.parent / target.split("#")[0]).exists():
            problems.append(f"{page.name}: link {target} does not exist")
    return problems


def _resolves(dotted: str) -> bool:
    """`vlm_unsloth.a.b.name`: the longest importable module, then attributes."""
    parts = dotted.split(".")
    thing = importlib.import_module(parts[0])
    for i, name in enumerate(parts[1:], start=2):
        if hasattr(thing, "__path__") and importlib.util.find_spec(".".join(parts[:i])):
            thing = importlib.import_module(".".join(parts[:i]))
        elif hasattr(thing, name):
            thing = getattr(thing, name)
        else:
            return False
    return True


def test_the_readme_is_short_and_its_quickstart_comes_early():
    readme = PAGES[0].read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(readme, 1) if line.startswith("## Quickstart"))
    assert start <= 80 and len(readme) <= 220, (start, len(readme))


def test_the_docs_exist_and_name_their_pages():
    assert (REPO / "mkdocs.yml").exists() and len(PAGES) > 5
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    for page in PAGES[1:]:
        assert page.name in nav, f"docs/{page.name} is not in mkdocs.yml's nav"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_path_the_docs_name_exists(page):
    assert page_path_problems(page) == []


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_flag_and_subcommand_the_docs_name_exists(page):
    assert page_flag_problems(page) == []


def test_the_checker_catches_a_wrong_flag_path_and_subcommand(tmp_path):
    page = tmp_path / "wrong.md"
    page.write_text(
        "Run\n\n```bash\npython scripts/train_sft.py --max-side 768 --no-such-flag 1\n"
        "vlm-unsloth plan --max-side 768 --dataset x\nvlm-unsloth no-such-command\n```\n\n"
        "then `configs/no-such.yaml`, `vlm_unsloth.data.no_such`, [a](no-such.md) and "
        "--no-such-prose-flag.\n",
        encoding="utf-8",
    )
    flags = "\n".join(page_flag_problems(page))
    assert "--no-such-flag is not an option of scripts/train_sft.py" in flags
    assert "--dataset is not an option of vlm-unsloth plan" in flags  # train's, not plan's
    assert "--max-side is not" not in flags
    assert "`vlm-unsloth no-such-command`: no such subcommand" in flags
    assert "--no-such-prose-flag is not an option of any command" in flags
    paths = page_path_problems(page)
    assert paths == [
        "wrong.md: configs/no-such.yaml does not exist",
        "wrong.md: vlm_unsloth.data.no_such does not exist",
        "wrong.md: link no-such.md does not exist",
    ]
