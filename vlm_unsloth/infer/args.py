"""The options of infer.py and evaluate.py: which model answers, what it is asked, how answers
are generated, and where an evaluation report goes.

    python scripts/infer.py --help       # InferArgs + PromptDataArgs + GenerationArgs
    python scripts/evaluate.py --help    # EvalArgs + PromptDataArgs + GenerationArgs
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vlm_unsloth.config import BACKENDS, QUANTIZATIONS, DataArgs
from vlm_unsloth.data.images import DEFAULT_MAX_SIDE
from vlm_unsloth.families import default_family


@dataclass
class GenerationArgs:
    """How answers are generated."""

    max_new_tokens: int = field(default=128, metadata={"help": "Longest answer in tokens."})
    temperature: float = field(
        default=0.0, metadata={"help": "0 = greedy (deterministic, the default); > 0 samples."}
    )
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (with sampling)."})
    min_p: float = field(default=0.0, metadata={"help": "Min-p sampling floor (with sampling)."})
    batch_size: int = field(default=8, metadata={"help": "Rows generated together (left padded)."})

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens}
        if self.temperature > 0:
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p)
            if self.min_p > 0:
                kwargs["min_p"] = self.min_p
        else:
            kwargs["do_sample"] = False
        return kwargs

    def problems(self) -> list[str]:
        found = []
        if self.max_new_tokens < 1:
            found.append(f"--max-new-tokens {self.max_new_tokens}: must be >= 1")
        if self.temperature < 0:
            found.append(f"--temperature {self.temperature}: must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            found.append(f"--top-p {self.top_p}: must be in (0, 1]")
        if not 0 <= self.min_p < 1:
            found.append(f"--min-p {self.min_p}: must be in [0, 1)")
        if self.batch_size < 1:
            found.append(f"--batch-size {self.batch_size}: must be >= 1")
        return found


@dataclass
class PromptDataArgs(DataArgs):
    """The training data flags, for inference and evaluation: the image cap and the system
    prompt default to the training run's (None = the run's, else 768 px / no system prompt)."""

    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Rows to answer (infer.py: --input; evaluate.py: default = the run's eval "
            "data, else the demo eval split): a JSONL/JSON/CSV/Parquet file, image folder, "
            "dataset saved with save_to_disk, or hub name.",
            "aliases": ["--input"],
        },
    )
    split: str = field(default="train", metadata={"help": "Split of --dataset to read."})
    max_samples: int | None = field(default=None, metadata={"help": "Use only the first N rows."})
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "System message before every prompt (default: the training run's)."},
    )
    max_side: int | None = field(
        default=None,
        metadata={
            "help": "Cap every image's longest side (default: the training run's, else 768)."
        },
    )

    def problems(self) -> list[str]:
        stand_in = dataclasses.replace(self, max_side=self.max_side or DEFAULT_MAX_SIDE)
        return DataArgs.problems(stand_in)


@dataclass
class ModelChoiceArgs:
    """Which model answers: a base model and/or a fine-tuned adapter, and how it is loaded."""

    model: str | None = field(
        default=None,
        metadata={
            "help": f"Base model (hub id, folder, {default_family().tiny_name}, ...) or a merged "
            "folder (OUTPUT/merged). Default: the base model the adapter was trained from."
        },
    )
    adapter: str | None = field(
        default=None,
        metadata={"help": "A training output folder (--output-dir of train_sft.py) or a LoRA "
                  "adapter folder."},
    )  # fmt: skip
    backend: str = field(
        default="auto",
        metadata={
            "help": "unsloth, hf, or auto (unsloth when CUDA is available).",
            "choices": BACKENDS,
        },
    )
    quantization: str = field(
        default="auto",
        metadata={"help": "Weights: 4bit, 8bit, 16bit; auto = 4bit on CUDA, 16bit on CPU.",
                  "choices": QUANTIZATIONS},
    )  # fmt: skip


@dataclass
class InferArgs(ModelChoiceArgs):
    """What to load and what to ask."""

    image: str | None = field(
        default=None, metadata={"help": "Image path or http(s) URL to ask about (with --prompt)."}
    )
    prompt: str | None = field(
        default=None,
        metadata={"help": "Question about --image; the answer streams to the terminal."},
    )
    output: str | None = field(
        default=None,
        metadata={"help": "Predictions JSONL for --input: each row plus `prediction`."},
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing --output file."})


@dataclass
class EvalArgs(ModelChoiceArgs):
    """What to compare and where the report goes (--adapter: the fine-tuned model)."""

    output_dir: str | None = field(
        default=None,
        metadata={"help": "Folder for report.html, report.md, predictions.jsonl, metrics.json "
                  "(default: ADAPTER_RUN/eval for a training run folder, else outputs/eval)."},
    )  # fmt: skip
    overwrite: bool = field(
        default=False, metadata={"help": "Replace an earlier evaluation in --output-dir."}
    )
    num_samples: int = field(
        default=12, metadata={"help": "Rows shown in the report's gallery (the first N)."}
    )

    def problems(self) -> list[str]:
        found = []
        if self.adapter is None:
            found.append("--adapter: required (the fine-tuned run folder or adapter to evaluate)")
        if self.num_samples < 0:
            found.append(f"--num-samples {self.num_samples}: must be >= 0")
        return found
