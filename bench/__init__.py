"""Benchmarks (DESIGN.md §4): each prints one JSON line per task with ratios measured side by side.

Run one with ``python -m bench.<name>`` (``--quick`` for a smoke run); conventions and recorded
figures are in ``docs/benchmarks.md``.
"""
