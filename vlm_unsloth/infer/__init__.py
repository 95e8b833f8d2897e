"""Inference and evaluation: answers from a (fine-tuned) model, scored and reported.

args.py (infer/evaluate options), trained_run.py (what a run folder says about its model),
generation.py (load for inference, batch and streamed answers), predict.py (a dataset in,
predictions.jsonl out), metrics.py (scores), evaluate.py (base vs fine-tuned), report.py (HTML and
Markdown). Imports base, data/ and models/.
"""
