"""GRPO's options (`GrpoArgs`: rewards, sampling, the loss; `GrpoTrainArgs`: TrainArgs with
GRPO's defaults) and the generation batch they make: whole groups of --num-generations answers,
cut into micro-batches of --batch-size. Parsed with the other dataclasses:

    *_, train_args, grpo_args = parse_args([..., GrpoTrainArgs, GrpoArgs], argv)

The sampling options are TRL GRPOConfig fields of the same names; `grpo.py` passes them on.
"""

from __future__ import annotations

import importlib.util
import math
import re
from dataclasses import dataclass, field

from vlm_unsloth import distributed
from vlm_unsloth.config import DEFAULT_AUTO_EFFECTIVE_BATCH, TrainArgs
from vlm_unsloth.errors import ConfigError
from vlm_unsloth.train.rewards import ANSWER_FORMATS, BUILT_IN, answer_format

LOSS_TYPES = ("dapo", "grpo", "dr_grpo")


@dataclass
class GrpoArgs:
    """Rewards, sampling and the GRPO loss (sampling and loss options are TRL GRPOConfig fields
    of the same names)."""

    rewards: list[str] = field(
        default_factory=lambda: ["exact_match"],
        metadata={
            "help": f"Reward functions, summed: built-ins {', '.join(BUILT_IN)}, or your own as "
            "path/to/file.py:function or package.module:function (TRL's signature: keyword "
            "arguments prompts, completions, answer, ..., **kwargs; one float or None a "
            "completion)."
        },
    )
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per --rewards entry (default: 1 each)."}
    )
    answer_format: str = field(
        default="answer_tag",
        metadata={
            "help": "The shape the `format` reward asks for, and where the other built-ins find "
            "the final answer: answer_tag (reasoning, then <answer>...</answer>), think_answer "
            "(<think>...</think><answer>...</answer>), or a regular expression with a group "
            "(?P<answer>...). Answers without that part are scored whole."
        },
    )
    num_generations: int = field(
        default=4,
        metadata={"help": "Answers sampled per prompt; each is scored against its group's mean."},
    )
    max_completion_length: int = field(
        default=256,
        metadata={
            "help": "Longest sampled answer, in tokens. Sampling time and its KV-cache memory "
            "grow with it; answers cut here get no end-of-turn (format rewards fail them)."
        },
    )
    generation_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Answers sampled together, over all processes (a multiple of "
            "--num-generations and of batch x processes). Default: one optimizer step's answers "
            "(batch x accumulation x processes). Larger: fewer, fuller generate calls (more "
            "tokens/s) for more KV-cache memory; beyond one step's answers, later steps train on "
            "answers of an older policy. Not with --steps-per-generation."
        },
    )
    steps_per_generation: int | None = field(
        default=None,
        metadata={
            "help": "Micro-batches (of --batch-size answers) each generation batch is cut into; "
            "the other way to set --generation-batch-size (= batch x processes x this). Default: "
            "--grad-accum (one sampling per optimizer step)."
        },
    )
    num_iterations: int = field(
        default=1,
        metadata={
            "help": "Optimizer passes over each sampled batch (GRPO's mu): 2 halves the sampling "
            "per optimizer step, at the cost of training on answers of an older policy (the "
            "clipped ratio bounds it) and one more log-probability pass per generation batch."
        },
    )
    cache_implementation: str | None = field(
        default=None,
        metadata={
            "help": "transformers' KV cache while sampling (e.g. static); default: dynamic. "
            "Not measured to pay on the 4-bit LoRA models yet: leave it unset unless a bench "
            "run shows it helps."
        },
    )
    temperature: float = field(
        default=1.0,
        metadata={"help": "Sampling temperature: answers in a group must differ to learn."},
    )
    beta: float = field(
        default=0.0,
        metadata={
            "help": "KL penalty towards the starting policy (0: none, and no reference pass). "
            "The reference is the --adapter policy, or the base model: never a second model."
        },
    )
    loss_type: str = field(
        default="dapo",
        metadata={
            "help": "dapo (token-level mean over the batch, TRL's default), grpo (per-answer "
            "mean) or dr_grpo (constant normaliser, no length bias).",
            "choices": LOSS_TYPES,
        },
    )
    importance_sampling_level: str = field(
        default="token",
        metadata={
            "help": "token, or sequence: GSPO (sequence-level importance ratios; usually with "
            "--loss-type grpo).",
            "choices": ("token", "sequence"),
        },
    )
    scale_rewards: str = field(
        default="group",
        metadata={
            "help": "Divide advantages by the group's reward spread (group), the batch's "
            "(batch), or not at all (none, as Dr. GRPO recommends).",
            "choices": ("group", "batch", "none"),
        },
    )
    reward_rows: int = field(
        default=200,
        metadata={
            "help": "Eval rows answered greedily and scored with the rewards before and after "
            "training (the held-out reward); 0 skips it."
        },
    )
    use_vllm: bool = field(
        default=False,
        metadata={
            "help": "Sample with vLLM. Not available in vlm-unsloth: GRPO samples with the model "
            "itself (docs/grpo.md, section vLLM, says how to use vLLM)."
        },
    )

    def problems(self) -> list[str]:
        found = []
        if not self.rewards:
            found.append("--rewards: give at least one reward function")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.rewards):
            found.append(
                f"--reward-weights has {len(self.reward_weights)} values for "
                f"{len(self.rewards)} --rewards: give one weight per reward"
            )
        try:
            answer_format(self.answer_format)
        except (re.error, ValueError) as error:  # a bad expression, or no answer group
            found.append(
                f"--answer-format {self.answer_format!r}: {error}; use "
                f"{' or '.join(ANSWER_FORMATS)}, or a regular expression with (?P<answer>...)"
            )
        if self.num_generations < 2:
            found.append(
                f"--num-generations {self.num_generations}: must be >= 2 (a reward is only "
                "judged against the other answers to the same prompt)"
            )
        if self.max_completion_length < 1:
            found.append(f"--max-completion-length {self.max_completion_length}: must be >= 1")
        if self.num_iterations < 1:
            found.append(f"--num-iterations {self.num_iterations}: must be >= 1")
        if self.generation_batch_size is not None and self.steps_per_generation is not None:
            found.append(
                "--generation-batch-size and --steps-per-generation set the same thing (the "
                "generation batch = batch x processes x steps per generation): give one"
            )
        for flag, value in (
            ("--generation-batch-size", self.generation_batch_size),
            ("--steps-per-generation", self.steps_per_generation),
        ):
            if value is not None and value < 1:
                found.append(f"{flag} {value}: must be >= 1")
        if (
            self.generation_batch_size
            and self.num_generations >= 2
            and self.generation_batch_size % self.num_generations
        ):
            found.append(
                f"--generation-batch-size {self.generation_batch_size} is not a multiple of "
                f"--num-generations {self.num_generations} (whole groups are sampled): use "
                f"{_round_up(self.generation_batch_size, self.num_generations)}"
            )
        if self.temperature <= 0:
            found.append(f"--temperature {self.temperature}: must be > 0 (GRPO samples)")
        if self.beta < 0:
            found.append(f"--beta {self.beta}: must be >= 0")
        if self.reward_rows < 0:
            found.append(f"--reward-rows {self.reward_rows}: must be >= 0")
        if self.use_vllm:
            installed = importlib.util.find_spec("vllm") is not None
            found.append(
                "--use-vllm: vlm-unsloth samples GRPO answers with the model itself"
                + ("" if installed else ", and vLLM is not installed on this machine")
                + "; drop --use-vllm (docs/grpo.md, section vLLM: how to use it)"
            )
        return found


@dataclass
class GrpoTrainArgs(TrainArgs):
    """TrainArgs with GRPO's defaults. `--batch-size` counts answers (completions), not prompts:
    batch x accumulation x processes answers a step, in groups of --num-generations.

    5e-6: the learning rate of Unsloth's vision GRPO notebooks for LoRA on 7B models (sampled
    rewards are noisy; SFT's 2e-4 drifts). 10% warm-up: Adam's first steps are sign steps of
    the full learning rate on every weight that has a gradient, and sparse 0/1 rewards make
    those noise (measured on the tiny models: collapse to junk answers without warm-up).
    """

    output_dir: str = field(
        default="outputs/grpo", metadata={"help": "Folder for the adapter, checkpoints, metrics."}
    )
    learning_rate: float = field(
        default=5e-6, metadata={"help": "Peak learning rate (LoRA GRPO: 5e-6; SFT's 2e-4)."}
    )
    warmup_ratio: float = field(
        default=0.1, metadata={"help": "Fraction of the steps spent warming the learning rate up."}
    )

    def problems(self) -> list[str]:
        found = super().problems()
        if self.group_by_length:
            found.append(
                "--group-by-length: GRPO batches hold whole groups of one prompt's answers; drop it"
            )
        if self.eval_at_end or self.eval_steps:
            found.append(
                "--eval-at-end/--eval-steps: GRPO reports the held-out reward before and after "
                "training instead (--reward-rows); drop them"
            )
        return found


def generation_batch_size(train_args: TrainArgs, grpo_args: GrpoArgs, world: int) -> int:
    """Answers sampled together over all processes (TRL's generation_batch_size): given, or
    batch x processes x steps per generation (default: the accumulation, one sampling a step)."""
    if grpo_args.generation_batch_size is not None:
        return grpo_args.generation_batch_size
    steps = grpo_args.steps_per_generation or train_args.grad_accum
    return train_args.batch_size * world * steps


def check_batch_holds_groups(train_args: TrainArgs, grpo_args: GrpoArgs) -> None:
    """A generation batch holds whole groups of --num-generations answers, cut into micro-batches
    of --batch-size per process (TRL refuses otherwise, and Unsloth silently changes the
    batch)."""
    world = distributed.world_size()
    per_micro_batch = train_args.batch_size * world
    groups = grpo_args.num_generations
    sampled = generation_batch_size(train_args, grpo_args, world)
    works = math.lcm(per_micro_batch, groups)
    if grpo_args.generation_batch_size is not None and sampled % per_micro_batch:
        raise ConfigError(
            f"--generation-batch-size {sampled} is not a multiple of batch {train_args.batch_size}"
            f" x {world} process(es) = {per_micro_batch} (it is cut into micro-batches)",
            where="--generation-batch-size/--batch-size",
            fix=f"use --generation-batch-size {_round_up(sampled, works)}",
        )
    if sampled % groups == 0:
        return
    if grpo_args.generation_batch_size is None and grpo_args.steps_per_generation is None:
        raise ConfigError(
            f"batch {train_args.batch_size} x accumulation {train_args.grad_accum} = {sampled} "
            f"answers a step, not whole groups of {groups}",
            where="--batch-size/--grad-accum/--num-generations",
            fix=f"make batch x accumulation a multiple of {groups}, e.g. "
            f"--batch-size {groups} --grad-accum 1",
        )
    raise ConfigError(
        f"--steps-per-generation {grpo_args.steps_per_generation} x batch "
        f"{train_args.batch_size} x {world} process(es) = {sampled} answers sampled together, "
        f"not whole groups of --num-generations {groups}",
        where="--steps-per-generation/--batch-size",
        fix=f"use --steps-per-generation {_round_up(sampled, works) // per_micro_batch}",
    )


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def check_auto_batch(train_args: TrainArgs, grpo_args: GrpoArgs) -> None:
    """--batch-size auto for GRPO samples one optimizer step's answers (--effective-batch-size,
    default 16) together and picks the micro-batch: they must be whole groups, and the
    generation batch is not set by hand."""
    answers = train_args.effective_batch_size or DEFAULT_AUTO_EFFECTIVE_BATCH
    per_process = answers // distributed.world_size()
    if grpo_args.generation_batch_size is not None or grpo_args.steps_per_generation is not None:
        raise ConfigError(
            "--batch-size auto samples each step's answers together and picks the micro-batch "
            "itself",
            where="--batch-size auto/--generation-batch-size/--steps-per-generation",
            fix="drop --generation-batch-size and --steps-per-generation, or give --batch-size",
        )
    if per_process % grpo_args.num_generations or answers % distributed.world_size():
        raise ConfigError(
            f"{answers} answers a step ({per_process} a process) are not whole groups of "
            f"--num-generations {grpo_args.num_generations}",
            where="--batch-size auto/--effective-batch-size",
            fix=f"use --effective-batch-size "
            f"{_round_up(answers, grpo_args.num_generations * distributed.world_size())}",
        )
