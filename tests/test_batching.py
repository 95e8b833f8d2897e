"""Length-grouped batching: the padding arithmetic, and that grouping really cuts padding."""

from __future__ import annotations

import random

from vlm_unsloth.perf.batching import batch_orders, padding_fraction, padding_report


def test_padding_fraction_by_hand():
    lengths = [10, 30, 20, 20]
    # batches (10, 30) and (20, 20): padded 60 + 40 = 100 positions, real 80
    assert abs(padding_fraction(lengths, 2, [0, 1, 2, 3]) - 0.2) < 1e-12
    # (10, 20) and (20, 30): padded 40 + 60, real 80
    assert abs(padding_fraction(lengths, 2, [0, 2, 3, 1]) - 0.2) < 1e-12
    # (20, 20) and (10, 30): the same batches, other order
    assert abs(padding_fraction(lengths, 2, [2, 3, 0, 1]) - 0.2) < 1e-12
    assert abs(padding_fraction(lengths, 4, [0, 1, 2, 3]) - (1 - 80 / 120)) < 1e-12
    assert padding_fraction([5, 5], 2, [0, 1]) == 0.0
    assert padding_fraction([], 4, []) == 0.0


def test_grouping_cuts_padding_of_mixed_image_sizes_and_keeps_every_sample():
    rng = random.Random(0)
    # photos (~600 tokens), thumbnails (~70) and text-heavy rows mixed, as real data is
    lengths = [rng.choice([600, 590, 70, 64, 300]) + rng.randint(0, 20) for _ in range(400)]
    orders = batch_orders(lengths, batch_size=4, grad_accum=2, seed=1)
    assert sorted(orders["grouped"]) == sorted(orders["random"]) == list(range(400))
    report = padding_report(lengths, batch_size=4, grad_accum=2, seed=1)
    assert report["random"] > 0.3 and report["grouped"] < 0.1
    assert padding_report(lengths, 4, 2, seed=1) == report  # seeded: reproducible
