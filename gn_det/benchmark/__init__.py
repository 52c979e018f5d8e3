"""Benchmark tables across runs, published reference numbers, and analyses of trained norms.

Submodules import torch/matplotlib only where they need them, so the table tools stay light:
``runs`` (read OUTPUT_DIRs), ``formatting`` (text/Markdown/CSV), ``tables`` (the AP table),
``reference`` (published numbers), ``speed`` (bench_step.py output), ``sn_importance`` and
``estimation_shift`` (analyses of trained norms), ``plots`` (matplotlib figures).
"""
