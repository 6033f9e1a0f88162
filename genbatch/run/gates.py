"""The gate grammar: ``metric op threshold`` expressions from the spec, and the metric catalogue.

The catalogue :data:`METRICS` names every aggregate a gate may use and how it is computed from the
per-item metrics table (a column mean, sum, min or max) or from the run's counts. Each gate becomes one
Great Expectations expectation on that table (:mod:`genbatch.quality.gates`).

This module imports only the standard library at load time: the spec imports it to validate gate
expressions, and DAG files import the spec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TEXT, IMAGE = "text", "image"
BOTH = frozenset({TEXT, IMAGE})


@dataclass(frozen=True)
class Metric:
    """One aggregate: ``agg`` of the per-item ``column`` (or a run-level figure when agg is 'run')."""

    name: str
    agg: str  # "mean" | "sum" | "min" | "max" | "run"
    column: str
    tasks: frozenset[str]
    higher_is_worse: bool
    doc: str


METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("success_rate", "run", "success_rate", BOTH, False, "generated / accepted"),
    Metric("reject_rate", "run", "reject_rate", BOTH, True, "rejected / input"),
    Metric("error_rate", "run", "error_rate", BOTH, True, "errored / accepted"),
    Metric("nonempty_rate", "mean", "nonempty", BOTH, False, "share of outputs that are not empty (text) / not blank (image)"),
    Metric("empty_rate", "mean", "empty", BOTH, True, "share of empty or whitespace-only texts; black, uniform or NaN images"),
    Metric("duplicate_output_rate", "mean", "duplicate", BOTH, True,
           "share of outputs identical to an earlier one (images: near-duplicates by perceptual hash)"),
    Metric("adherence", "mean", "adherent", BOTH, False,
           "share of checkable items that honour the prompt (text: attributes, expect_keywords, "
           "expect_patterns; image: the adherence hook, by default dominant colour = prompt colour)"),
    Metric("mean_new_tokens", "mean", "new_tokens", frozenset({TEXT}), False, "mean generated tokens"),
    Metric("min_new_tokens", "min", "new_tokens", frozenset({TEXT}), False, "fewest generated tokens"),
    Metric("truncation_rate", "mean", "truncated", frozenset({TEXT}), True, "share that hit max_new_tokens"),
    Metric("repetition_rate", "mean", "repetition_loop", frozenset({TEXT}), True,
           "share with a repeated n-gram loop (a span of 1-8 words 3+ times in a row, or a 10+ char run)"),
    Metric("mean_distinct_1", "mean", "distinct_1", frozenset({TEXT}), False, "mean distinct-1 (unique words / words)"),
    Metric("mean_distinct_2", "mean", "distinct_2", frozenset({TEXT}), False, "mean distinct-2 (unique bigrams / bigrams)"),
    Metric("attribute_mention_rate", "mean", "mentions_attributes", frozenset({TEXT}), False,
           "share of items with attributes whose output names every attribute value"),
    Metric("schema_valid_rate", "mean", "schema_valid", frozenset({TEXT}), False,
           "share of outputs that parse as JSON and validate against generation.response_schema (none without one)"),
    Metric("blocklist_hits", "sum", "blocklist_hits", frozenset({TEXT}), True, "blocklist terms found, in all outputs"),
    Metric("blocklist_rate", "mean", "blocklisted", frozenset({TEXT}), True, "share of outputs with a blocklist hit"),
    Metric("pii_hits", "sum", "pii_hits", frozenset({TEXT}), True, "e-mail, phone and card-number matches, in all outputs"),
    Metric("pii_rate", "mean", "has_pii", frozenset({TEXT}), True, "share of outputs with a PII match"),
    Metric("nan_rate", "mean", "nan", frozenset({IMAGE}), True, "share of images with NaN/inf pixels"),
    Metric("black_rate", "mean", "black", frozenset({IMAGE}), True, "share of black images"),
    Metric("uniform_rate", "mean", "uniform", frozenset({IMAGE}), True, "share of images of one flat colour"),
    Metric("size_mismatch_rate", "mean", "size_mismatch", frozenset({IMAGE}), True, "share not of the requested size"),
    Metric("near_duplicate_rate", "mean", "near_duplicate", frozenset({IMAGE}), True,
           "share of images within the dHash distance of an earlier image"),
    Metric("near_duplicates", "sum", "near_duplicate", frozenset({IMAGE}), True, "number of near-duplicate images"),
    Metric("mean_brightness", "mean", "brightness", frozenset({IMAGE}), False, "mean luma, 0..1"),
    Metric("min_brightness", "min", "brightness", frozenset({IMAGE}), False, "darkest image's mean luma"),
    Metric("max_brightness", "max", "brightness", frozenset({IMAGE}), True, "brightest image's mean luma"),
    Metric("mean_contrast", "mean", "contrast", frozenset({IMAGE}), False, "mean luma standard deviation"),
    Metric("min_contrast", "min", "contrast", frozenset({IMAGE}), False, "flattest image's luma standard deviation"),
    Metric("unsafe_rate", "mean", "unsafe", frozenset({IMAGE}), True, "share flagged by the safety hook"),
]}

OPS = ("<=", ">=", "==", "<", ">")
GATE_RE = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*(<=|>=|==|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Gate:
    """One quality gate, ``METRIC OP THRESHOLD``, as parsed by :func:`parse_gate`."""

    metric: str
    op: str
    threshold: float

    @property
    def text(self) -> str:
        """The gate written back as text, e.g. ``empty_rate <= 0.01``."""
        return f"{self.metric} {self.op} {self.threshold:g}"


def parse_gate(expression: str) -> Gate:
    """``"empty_rate <= 0.01"`` -> Gate; ValueError naming the bad part and the allowed values."""
    match = GATE_RE.match(expression)
    if not match:
        raise ValueError(
            f"gate {expression!r} is not 'METRIC OP NUMBER' (OP one of {', '.join(OPS)}), "
            "e.g. 'empty_rate <= 0.01'"
        )
    name, op, number = match.groups()
    if name not in METRICS:
        raise ValueError(f"gate {expression!r}: unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
    return Gate(name, op, float(number))


def compare(value: float, op: str, threshold: float) -> bool:
    """Whether ``value OP threshold`` holds, for an ``op`` in :data:`OPS`."""
    return {
        "<=": value <= threshold, ">=": value >= threshold, "==": value == threshold,
        "<": value < threshold, ">": value > threshold,
    }[op]
