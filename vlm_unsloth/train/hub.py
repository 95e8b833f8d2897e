"""--push-to-hub: upload the adapter (and merged model) when training ends.

Checked before training starts, so a missing login or an offline machine is a one-line error
at second 1, not after hours of training.
"""

from __future__ import annotations

import os
from pathlib import Path

from vlm_unsloth.errors import ConfigError


def check_can_push(repo_id: str | None) -> None:
    """Refuse --push-to-hub before training when the upload could not happen (bad repo id, offline,
    no login)."""
    if repo_id is None:
        return
    if "/" not in repo_id:
        raise ConfigError(
            f"{repo_id!r} is not a repo id", where="--push-to-hub", fix="use OWNER/NAME"
        )
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ConfigError(
            "HF_HUB_OFFLINE is set, so nothing can be uploaded",
            where="--push-to-hub",
            fix="unset HF_HUB_OFFLINE, or drop --push-to-hub and upload the adapter/ folder later",
        )
    from huggingface_hub import get_token

    if get_token() is None:
        raise ConfigError(
            "not logged in to the Hugging Face Hub",
            where="--push-to-hub",
            fix="run `hf auth login` or set HF_TOKEN, then train again",
        )


def push_folders(repo_id: str, adapter_dir: Path, merged_dir: Path | None) -> list[str]:
    """Upload the adapter to `repo_id` and a merged model to `repo_id`-merged; return URLs."""
    from huggingface_hub import HfApi

    api = HfApi()
    urls = []
    for repo, folder in ((repo_id, adapter_dir), (f"{repo_id}-merged", merged_dir)):
        if folder is None:
            continue
        api.create_repo(repo, exist_ok=True, private=True)
        api.upload_folder(repo_id=repo, folder_path=str(folder))
        urls.append(f"https://huggingface.co/{repo}")
    return urls
