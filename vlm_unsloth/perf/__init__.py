"""Speed and memory: what makes a run fit and go fast, and the numbers that show it.

memory_plan.py (+ calibration/: predicted peak memory), auto_batch.py (--batch-size auto),
oom.py (out-of-memory recovery by splitting a batch), optimizer.py (8-bit AdamW without per-tensor
syncs), batching.py (padding and length grouping), bench.py (scripts/bench.py). Imports base,
data/ and models/ (never the training methods: the trainer is passed in).
"""
