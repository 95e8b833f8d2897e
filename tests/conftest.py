"""Test setup: offline, CPU, deterministic. Tiny checkpoints are built once per session."""

from __future__ import annotations

import os

# No test may reach the Hugging Face Hub: the tool must work with local folders alone.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
