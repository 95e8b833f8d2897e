"""The chat templates of the tiny checkpoints: the ones TRL ships (copies of the hub's) and the
few it lacks, shipped in vlm_unsloth/families/chat_templates/.

    template = trl_template("qwen2_5_vl.jinja")
"""

from __future__ import annotations

from importlib import resources


def shipped_template(name: str) -> str:
    """A template shipped in vlm_unsloth/families/chat_templates/ (where TRL has none)."""
    folder = resources.files("vlm_unsloth.families").joinpath("chat_templates")
    return folder.joinpath(name).read_text(encoding="utf-8")


def trl_template(name: str) -> str:
    """A chat template TRL ships (copies of the hub's, in trl/chat_templates/)."""
    return resources.files("trl").joinpath(f"chat_templates/{name}").read_text("utf-8")
