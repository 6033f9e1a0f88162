"""The run stages that are not the worker: prepare and validate.

Operators call these; each takes and returns small JSON-able values (URIs, counts): the
data stays in storage. Model resolution is injected (``resolve_model``) so the core never
imports the model package.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

from genbatch import storage
from genbatch.errors import ShardInputError, SpecError
from genbatch.input_rows import detect_format, iter_input_rows
from genbatch.layout import RunLayout
from genbatch.model_ref import ModelVersion
from genbatch.records import jsonl_bytes
from genbatch.run_state import RunState, load_run_state, write_run_state
from genbatch.spec import RunSpec, parse_spec, sanitize_run_id
from genbatch.validation import InputSchemaError, ValidationOutcome, data_docs_html, validate_rows

log = logging.getLogger(__name__)

ResolveModel = Callable[[RunSpec], ModelVersion]


def confine_spec_paths(spec: RunSpec) -> None:
    """User-supplied URIs must lie under GENBATCH_ALLOWED_PREFIXES (when set)."""
    allowed = storage.allowed_prefixes_from_env()
    if allowed:
        for uri in (spec.input.uri, spec.output.uri, spec.model.registry):
            storage.confine(uri, allowed)


def check_input_size(spec: RunSpec) -> None:
    """Refuse an input over min(input.max_bytes, $GENBATCH_MAX_INPUT_BYTES) before reading it.

    Users set params, so the deployment's ceiling (the environment) is what makes this a control.
    """
    ceiling = os.environ.get("GENBATCH_MAX_INPUT_BYTES")
    limit = min(spec.input.max_bytes, int(ceiling)) if ceiling else spec.input.max_bytes
    if not storage.exists(spec.input.uri):
        raise ShardInputError(f"input {spec.input.uri!r} does not exist; check input.uri in the spec")
    size = storage.size(spec.input.uri)
    if size > limit:
        raise SpecError(f"input {spec.input.uri!r} is {size} bytes, over the limit of {limit} bytes "
                        f"(input.max_bytes={spec.input.max_bytes}, GENBATCH_MAX_INPUT_BYTES={ceiling or 'unset'}); "
                        "split it into several runs")


def check_override_allowed(spec: RunSpec, triggered_by: str | None) -> None:
    """A quality override publishes despite failed gates: only users in GENBATCH_OVERRIDE_USERS may ask."""
    if spec.quality.override is None:
        return
    allowed = {u.strip() for u in os.environ.get("GENBATCH_OVERRIDE_USERS", "").split(",") if u.strip()}
    if triggered_by not in allowed:
        raise SpecError(f"quality.override was set by {triggered_by or 'an unknown user'!r}, who may not override "
                        "quality gates (GENBATCH_OVERRIDE_USERS lists who may); remove it or ask an admin")


def resolve_num_shards(spec: RunSpec, model: ModelVersion) -> tuple[int, dict[str, Any] | None]:
    """``sharding.num_shards`` as an int: as given, or decided for ``auto`` (genbatch.autoscale) with its record."""
    if spec.sharding.num_shards != "auto":
        return spec.sharding.num_shards, None
    from genbatch.autoscale import auto_num_shards
    from genbatch.cost import read_card

    decision = auto_num_shards(spec, read_card(model.uri))
    return int(decision["num_shards"]), decision


def check_cost_ceiling(run_dir: str) -> dict[str, Any]:
    """After preprocess, before generation: raise CostCeilingExceeded when the estimate is over cost.ceiling_usd."""
    from genbatch.cost import check_ceiling

    est = check_ceiling(run_dir)
    log.info("run dir %s: estimated cost %s USD (ceiling %s)", run_dir, est["usd"], est["ceiling_usd"])
    return {k: est[k] for k in ("usd", "ceiling_usd", "device_s", "throughput_source", "within_ceiling")}


def prepare_run(spec_data: dict[str, Any], airflow_run_id: str, *, resolve_model: ResolveModel,
                triggered_by: str | None = None) -> str:
    """Validate the spec, pin the model version and write spec.json; returns the run dir URI."""
    spec = parse_spec(spec_data, source="run params")
    confine_spec_paths(spec)
    check_override_allowed(spec, triggered_by)
    check_input_size(spec)
    run_id = spec.run_id or sanitize_run_id(airflow_run_id)
    layout = RunLayout.for_run(spec.output.uri, run_id)
    model = resolve_model(spec)
    canary = None
    if spec.canary.enabled:
        arm_spec = spec.model_copy(update={"model": spec.model.model_copy(update={"alias": spec.canary.alias,
                                                                                   "version": None})})
        canary = resolve_model(arm_spec)
        if canary.version == model.version:
            raise SpecError(f"canary alias {spec.canary.alias!r} points at {model.ref}, the same version as the "
                            "production arm: nothing to compare; point the alias at the candidate version")
    num_shards, auto = resolve_num_shards(spec, model)
    write_run_state(RunState(run_id=run_id, spec=spec, model=model, layout=layout,
                             num_shards=num_shards, canary_model=canary))
    if auto is not None:  # how `num_shards: auto` was decided (a retry decides the same and overwrites)
        storage.write_json(layout.path("validation", "auto_shards.json"), auto, overwrite=True)
    log.info("run %s: prepared at %s with model %s", run_id, layout.root, model.ref)
    return layout.root


def _write_validation(state: RunState, outcome: ValidationOutcome, *, failure: str | None) -> dict[str, Any]:
    rejects = [r.to_json() for r in outcome.rejects]
    n_input = len(outcome.accepted) + len(rejects)
    report: dict[str, Any] = {
        "run_id": state.run_id,
        "input": state.spec.input.uri,
        "rows": {"input": n_input, "accepted": len(outcome.accepted), "rejected": len(rejects)},
        "rejects_by_rule": dict(sorted(Counter(r["rule"] for r in rejects).items())),
        "failure": failure,
        "great_expectations": outcome.report,
    }
    layout = state.layout
    storage.write_bytes(layout.rejects_part("validate"), jsonl_bytes(rejects))
    if failure is None:
        storage.write_bytes(layout.validation_accepted,
                            jsonl_bytes([{"index": i, "row": row} for i, row in outcome.accepted]))
    storage.write_json(layout.validation_report, report)
    return report


def validate_input(run_dir: str) -> dict[str, Any]:
    """Run the Great Expectations input suite; quarantine bad rows with their rule.

    A table-level failure (no rows, a missing column, too many rejects) stops the run, but
    still writes the report and the rejects so the user can see why.
    """
    state = load_run_state(run_dir)
    spec = state.spec
    if not storage.exists(spec.input.uri):
        raise ShardInputError(f"input {spec.input.uri!r} does not exist; check input.uri in the spec")
    fmt = detect_format(spec.input.uri, None if spec.input.format == "auto" else spec.input.format)
    rows = iter_input_rows(storage.read_bytes(spec.input.uri), fmt, source=spec.input.uri)
    try:
        outcome = validate_rows(rows, max_prompt_chars=spec.input.max_prompt_chars,
                                max_reject_fraction=spec.input.max_reject_fraction, source=spec.input.uri,
                                min_rows=spec.input.min_rows, max_rows=spec.input.max_rows)
    except InputSchemaError as exc:
        if exc.outcome is not None:
            _write_validation(state, exc.outcome, failure=str(exc))
            storage.write_text(state.layout.path("validation", "data_docs.html"),
                               data_docs_html(exc.outcome.gx_results), overwrite=True,
                               content_type="text/html; charset=utf-8")
        raise
    report = _write_validation(state, outcome, failure=None)
    # GX Data Docs beside the JSON results (overwrite: a retried task renders the same results).
    storage.write_text(state.layout.path("validation", "data_docs.html"), data_docs_html(outcome.gx_results),
                       overwrite=True, content_type="text/html; charset=utf-8")
    log.info("run %s: validated %s rows, %s rejected", state.run_id, report["rows"]["input"], report["rows"]["rejected"])
    return dict(report["rows"])
