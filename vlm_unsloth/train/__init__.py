"""Training methods, one module each, reading top to bottom: sft.py, dpo.py.

The steps they share: steps.py (device, output folder, model, data, trainer), batch_size.py
(settle the batch), summary.py (banner, save, summary), callbacks.py, hub.py; inspect.py checks a
dataset as training would. The top library layer: imports every other one.
"""
