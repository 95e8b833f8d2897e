"""Data: datasets in, validated canonical records and model batches out.

loaders.py (formats, column layouts), tables.py (reading files and hub datasets), records.py (a row
in, a record out; why a record is rejected), splits.py (train/eval rows, the shipped demo sets),
images.py (decode and cap), image_tokens.py (tokens an image costs), validation.py (every row
checked and counted before training), collate.py (records into model batches), demo_charts.py
(draws the chart demo set, demo/), demo_colours.py (draws the coloured squares of the offline CPU
demo, demo_colours/). Imports only the base modules.
"""
