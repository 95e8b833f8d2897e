"""The seed recipe: the course's vision SFT, the speed baseline `scripts/bench.py` compares with
(its `seed:2x4` setting). Deliberately NOT this project's pipeline:

    python -m vlm_unsloth.train.seed_recipe --model MODEL --dataset train.jsonl \\
        --output-dir outputs/seed --max-steps 13 [--max-side 768] [--gpu-memory-gib 12]

- the model loaded by transformers in 4-bit (bitsandbytes NF4, double quantization, bf16
  compute), LoRA by PEFT (r 16, alpha 16, dropout 0.05, every linear layer of both towers),
  handed to TRL's SFTTrainer as its `peft_config`;
- TRL's own vision collator (SFTTrainer builds it from the processor: every token labelled
  but padding), TRL's defaults (gradient checkpointing on, AdamW), batch 2 x accumulation 4,
  no dataloader workers;
- rows `{"image", "question", "answer"}` (the demo layout), images shrunk to --max-side on
  their longest side first (so a bench row at 768 px compares like with like).

Only measurement is added: our MetricsCallback writes metrics.jsonl (samples/s, tokens/s,
seconds per step, peak GPU memory) and summary.json has the fields bench.py reads.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from vlm_unsloth import run_dir


@dataclass
class SeedRecipeArgs:
    """The few things a benchmark varies; the recipe itself is fixed."""

    model: str = field(metadata={"help": "Model folder (or hub id) of a vision-language model."})
    dataset: str = field(metadata={"help": "JSONL rows {image, question, answer}."})
    output_dir: str = field(metadata={"help": "Folder for metrics.jsonl and summary.json."})
    max_steps: int = field(default=13, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=2, metadata={"help": "The course's per-device batch."})
    grad_accum: int = field(default=4, metadata={"help": "The course's accumulation."})
    max_side: int = field(default=768, metadata={"help": "Longest image side, in pixels."})
    gpu_memory_gib: float | None = field(
        default=None, metadata={"help": "Cap this process's GPU memory (OOM as on a small card)."}
    )


def recipe_rows(dataset: Path, max_side: int) -> list[dict]:
    """The course's conversation format, one image per row, shrunk to `max_side`."""
    from PIL import Image

    rows = []
    for line in dataset.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        with Image.open(dataset.parent / row["image"]) as image:
            image = image.convert("RGB")
            image.thumbnail((max_side, max_side))
        user = [{"type": "image"}, {"type": "text", "text": row["question"]}]
        answer = [{"type": "text", "text": row["answer"]}]
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        rows.append({"messages": messages, "images": [image]})
    return rows


def train_seed_recipe(args: SeedRecipeArgs) -> dict:
    """Train the seed recipe for `args.max_steps` steps; returns (and writes) the summary."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from vlm_unsloth.models.device import device_name
    from vlm_unsloth.models.loading import count_parameters
    from vlm_unsloth.train.callbacks import MetricsCallback, peak_gpu_memory_gib

    cuda = torch.cuda.is_available()
    if args.gpu_memory_gib is not None and cuda:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(args.gpu_memory_gib * 2**30 / total)
    compute = torch.bfloat16 if cuda else torch.float32
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )  # fmt: skip
    model = AutoModelForImageTextToText.from_pretrained(
        args.model, quantization_config=quantization, dtype=compute
    )
    processor = AutoProcessor.from_pretrained(args.model)
    lora = LoraConfig(
        r=16, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / run_dir.METRICS_FILE).unlink(missing_ok=True)
    config = SFTConfig(
        output_dir=str(output), max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum, learning_rate=2e-4, logging_steps=1,
        save_strategy="no", report_to="none", bf16=cuda, use_cpu=not cuda,
        dataloader_num_workers=0, max_length=None, include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,
    )  # fmt: skip
    train = Dataset.from_list(recipe_rows(Path(args.dataset), args.max_side))
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=train, processing_class=processor,
        peft_config=lora, callbacks=[MetricsCallback(output)],
    )  # fmt: skip
    trainer.train()
    trainable, total = count_parameters(trainer.model)
    summary = {
        "job": "seed recipe",
        "batch_size": args.batch_size,
        "grad_accum": args.grad_accum,
        "peak_gpu_memory_gib": peak_gpu_memory_gib(),
        "device_name": device_name(),
        "parameters": {"trainable": trainable, "total": total},
    }
    (output / run_dir.SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    """One `error:` line and exit status 2 on bad options (bench.py shows the last line)."""
    from vlm_unsloth.config import parse_args
    from vlm_unsloth.errors import VlmUnslothError

    try:
        (args,) = parse_args([SeedRecipeArgs], argv)
        train_seed_recipe(args)
    except VlmUnslothError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
