"""The validate stage: the Great Expectations input suite; bad rows are quarantined with their rule."""


from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from genbatch.errors import ShardInputError
from genbatch.io import storage
from genbatch.io.input_rows import detect_format, iter_input_rows
from genbatch.quality.expectations import InputSchemaError, ValidationOutcome, data_docs_html, validate_rows
from genbatch.run.records import jsonl_bytes
from genbatch.run.state import RunRef, RunState, as_run_state

log = logging.getLogger(__name__)


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


def validate_input(run: RunRef) -> dict[str, Any]:
    """Run the Great Expectations input suite; quarantine bad rows with their rule.

    A table-level failure (no rows, a missing column, too many rejects) stops the run, but
    still writes the report and the rejects so the user can see why.
    """
    state = as_run_state(run)
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
            storage.write_text(state.layout.validation_docs,
                               data_docs_html(exc.outcome.gx_results), overwrite=True,
                               content_type="text/html; charset=utf-8")
        raise
    report = _write_validation(state, outcome, failure=None)
    # GX Data Docs beside the JSON results (overwrite: a retried task renders the same results).
    storage.write_text(state.layout.validation_docs, data_docs_html(outcome.gx_results),
                       overwrite=True, content_type="text/html; charset=utf-8")
    log.info("run %s: validated %s rows, %s rejected", state.run_id, report["rows"]["input"], report["rows"]["rejected"])
    return dict(report["rows"])
