"""Benchmarks of nkd, outside the package: `python -m benchmarks.bench` (see BENCHMARKS.md).

`torch_reference` is an eager PyTorch version of the same step and attack; PyTorch is only
needed for `--torch_reference`, never by nkd itself.
"""
