"""Which linear layers get LoRA adapters: the vision/language x attention/MLP selection.

The unsloth backend hands the four switches to `FastVisionModel.get_peft_model`, which turns them
into a regex with `unsloth_zoo.peft_utils.get_peft_regex`. The hf backend cannot import that
(unsloth_zoo refuses to import without unsloth, and unsloth must stay out of the hf process), so
`lora_target_regex` re-states the same rule for the families we support; a test compares the two
on every tiny family and flag mix.

The rule: among the model's nn.Linear leaves, drop names that occur once outside a numbered
layer stack (lm_head, the vision merger / multi-modal projector); keep a leaf when its path has a
selected part tag (vision: vision/image/visual/patch; language: language/text) followed by a
selected component tag (attention: self_attn/attention/attn/mixer; MLP: mlp/feed_forward/ffn/
dense/mixer). With the vision and MLP switches on, a family's flat vision Linears too, as Unsloth
adds them (`Family.flat_vision_linears`: Gemma 3n's vision embedder projection, its MobileNet
tower having no linear layer; Gemma 4's patch embedder and connector projection). Switches that
select nothing are a ConfigError (Unsloth would fall back to every attention/MLP layer).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from vlm_unsloth.errors import ConfigError
from vlm_unsloth.families import FAMILIES

VISION_TAGS = ("vision", "image", "visual", "patch")
LANGUAGE_TAGS = ("language", "text")
ATTENTION_TAGS = ("self_attn", "attention", "attn", "mixer")
MLP_TAGS = ("mlp", "feed_forward", "ffn", "dense", "mixer")


@dataclass
class LoraArgs:
    """LoRA adapter shape and which parts of the model it adapts."""

    lora_r: int = field(default=16, metadata={"help": "LoRA rank (adapter width)."})
    lora_alpha: int = field(
        default=16, metadata={"help": "LoRA scale numerator: updates are scaled by alpha/r."}
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    use_rslora: bool = field(
        default=False, metadata={"help": "Rank-stabilised LoRA: scale by alpha/sqrt(r)."}
    )
    finetune_vision_layers: bool = field(
        default=True, metadata={"help": "Adapt the vision encoder's layers."}
    )
    finetune_language_layers: bool = field(
        default=True, metadata={"help": "Adapt the language model's layers."}
    )
    finetune_attention_modules: bool = field(
        default=True, metadata={"help": "Adapt attention projections (q/k/v/o, qkv, proj)."}
    )
    finetune_mlp_modules: bool = field(
        default=True, metadata={"help": "Adapt MLP projections (gate/up/down, fc1/fc2)."}
    )
    target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Leaf names to adapt instead of every linear leaf (e.g. q_proj v_proj); "
            "still filtered by the vision/language and attention/MLP switches."
        },
    )
    modules_to_save: list[str] | None = field(
        default=None,
        metadata={
            "help": "Modules trained fully and saved with the adapter (e.g. lm_head). Needed "
            "only when the head must change, e.g. a randomly initialised tiny model."
        },
    )

    def problems(self) -> list[str]:
        found = []
        if self.lora_r < 1:
            found.append(f"--lora-r {self.lora_r}: must be >= 1")
        if self.lora_alpha < 1:
            found.append(f"--lora-alpha {self.lora_alpha}: must be >= 1")
        if not 0.0 <= self.lora_dropout < 1.0:
            found.append(f"--lora-dropout {self.lora_dropout}: must be in [0, 1)")
        if not (self.finetune_vision_layers or self.finetune_language_layers):
            found.append(
                "--no-finetune-vision-layers with --no-finetune-language-layers leaves nothing "
                "to train: keep at least one"
            )
        if not (self.finetune_attention_modules or self.finetune_mlp_modules):
            found.append(
                "--no-finetune-attention-modules with --no-finetune-mlp-modules leaves nothing "
                "to train: keep at least one"
            )
        return found


def linear_leaf_names(model) -> list[str]:
    """Names of every torch.nn.Linear in `model` (LoRA's candidates)."""
    import torch

    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]


def lora_target_regex(model, args: LoraArgs) -> str:
    """A regex for PEFT's `target_modules` (full-match on module paths), as Unsloth builds it."""
    problems = args.problems()
    if problems:
        raise ConfigError("; ".join(problems), where="LoRA options")
    linear_names = linear_leaf_names(model)
    leaf_counts = Counter(name.rsplit(".", 1)[-1] for name in linear_names)
    in_layer_stack = {
        name.rsplit(".", 1)[-1] for name in linear_names if re.search(r"\.\d+\.", name)
    }
    if args.target_modules is None:
        leaves = [
            leaf for leaf, count in leaf_counts.items() if count != 1 or leaf in in_layer_stack
        ]
    else:
        leaves = list(args.target_modules)

    parts = (VISION_TAGS if args.finetune_vision_layers else ()) + (
        LANGUAGE_TAGS if args.finetune_language_layers else ()
    )
    components = (ATTENTION_TAGS if args.finetune_attention_modules else ()) + (
        MLP_TAGS if args.finetune_mlp_modules else ()
    )
    leaf_group = "(?:" + "|".join(re.escape(leaf) for leaf in leaves) + ")"
    part_group = "|".join(parts)
    component_group = "|".join(components)
    regex = rf".*?(?:{part_group}).*?(?:{component_group}).*?\.{leaf_group}"
    if args.finetune_language_layers:
        # Text-only stacks named model.layers.N (no "language" in the path).
        regex = (
            rf"(?:{regex})|(?:\bmodel\.layers\.[\d]{{1,}}(?!.*\.experts\.\d)\..*?"
            rf"(?:{component_group}).*?\.(?:{leaf_group}))"
        )
    flat = _flat_vision_branches(model, args, linear_names)
    if flat:
        regex = "|".join([f"(?:{regex})", *flat])
    pattern = re.compile(regex)
    if not any(pattern.fullmatch(name) for name in linear_names):
        # Gemma 3n's vision tower is all convolutions: its vision switch alone selects nothing
        # (PEFT would fail later with "Target modules ... not found").
        raise ConfigError(
            "these LoRA switches select no linear layer of the model (a vision tower of "
            "convolutions only, e.g. Gemma 3n's, has none)",
            where="--no-finetune-language-layers / --target-modules",
            fix="keep the language layers (drop --no-finetune-language-layers), or train the "
            "vision tower fully with --modules-to-save",
        )
    return regex


def _flat_vision_branches(model, args: LoraArgs, linear_names: list[str]) -> list[str]:
    """Unsloth's extra branches for the family's flat vision Linears (`Family.flat_vision_linears`),
    under the vision and MLP switches, each only where it names a Linear here."""
    if not (args.finetune_vision_layers and args.finetune_mlp_modules):
        return []
    family = next((f for f in FAMILIES.values() if f.model_type == model.config.model_type), None)
    paths = family.flat_vision_linears if family else ()
    if args.target_modules is not None:
        paths = tuple(p for p in paths if p.rsplit(".", 1)[-1] in args.target_modules)
    branches = [rf"(?:.*?\b{re.escape(path)})" for path in paths]
    return [b for b in branches if any(re.fullmatch(b, name) for name in linear_names)]


def select_lora_targets(model, args: LoraArgs) -> list[str]:
    """The module paths that `lora_target_regex` selects (what PEFT will wrap)."""
    pattern = re.compile(lora_target_regex(model, args))
    return [name for name in linear_leaf_names(model) if pattern.fullmatch(name)]
