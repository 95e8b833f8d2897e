"""How samples are grouped into batches, and how much of each batch is padding.

Image tokens dominate a VLM sample's length, so a batch that mixes a 4:3 photo (hundreds of
tokens) with a thin strip (a few dozen) is mostly padding. `--group-by-length` lets the trainer's
LengthGroupedSampler (transformers) batch samples of similar token counts, using the per-row
`num_tokens` the validation pass already computed; `padding_fraction` reports what it saves.
"""

from __future__ import annotations


def padding_fraction(lengths: list[int], batch_size: int, order: list[int]) -> float:
    """Share of the padded batch positions that are padding, batching `order` in `batch_size`s."""
    padded = real = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start : start + batch_size]]
        padded += max(batch) * len(batch)
        real += sum(batch)
    return 1.0 - real / padded if padded else 0.0


def batch_orders(
    lengths: list[int], batch_size: int, grad_accum: int, seed: int
) -> dict[str, list[int]]:
    """One epoch's sample order as the trainer draws it: shuffled, and grouped by length."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
    grouped = get_length_grouped_indices(
        lengths, batch_size * grad_accum, generator=torch.Generator().manual_seed(seed)
    )
    return {"random": shuffled, "grouped": list(grouped)}


def padding_report(
    lengths: list[int], batch_size: int, grad_accum: int, seed: int
) -> dict[str, float]:
    """{"random": fraction, "grouped": fraction} of padding for one epoch at this batch size."""
    orders = batch_orders(lengths, batch_size, grad_accum, seed)
    return {name: padding_fraction(lengths, batch_size, order) for name, order in orders.items()}
