"""Models: resolve a checkpoint name, load it on a backend, add LoRA.

loading.py (names, families, load + LoRA), device.py (backend, device and dtype, with why),
backend.py (the Backend protocol), hf_backend.py and unsloth_backend.py (its two implementations;
the second is the only module importing unsloth), lora.py (which modules get LoRA), tiny.py and
random_weights.py (offline checkpoints of the real architectures). Imports base and data/.
"""
