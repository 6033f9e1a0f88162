"""The validate stage: the Great Expectations input suite; bad rows are quarantined with their rule."""


from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from genbatch.io import storage
from genbatch.io.input_files import InputFile, iter_rows_of_files, sample_rows
from genbatch.quality.expectations import InputSchemaError, ValidationOutcome, data_docs_html, validate_rows
from genbatch.run.inputs import read_input_files
from genbatch.run.records import jsonl_bytes
from genbatch.run.row_shape import RowShape
from genbatch.run.state import RunRef, RunState, as_run_state
from genbatch.stages.published import ensure_unpublished

log = logging.getLogger(__name__)


def _files_report(files: list[InputFile], counts: list[int]) -> list[dict[str, Any]]:
    """Each input file with its rows and the ``row_index`` of its first: where a reject's row came from."""
    out, first = [], 0
    for file, rows in zip(files, counts, strict=False):  # counts stop short when a file could not be read
        out.append({"uri": file.uri, "format": file.format, "bytes": file.bytes, "rows": rows, "first_row_index": first})
        first += rows
    return out


def _write_validation(state: RunState, outcome: ValidationOutcome, *, failure: str | None,
                      files: list[dict[str, Any]]) -> dict[str, Any]:
    rejects = [r.to_json() for r in outcome.rejects]
    n_input = len(outcome.accepted) + len(rejects)
    report: dict[str, Any] = {
        "run_id": state.run_id,
        "input": state.spec.input.uri,
        "rows": {"input": n_input, "accepted": len(outcome.accepted), "rejected": len(rejects)},
        "rejects_by_rule": dict(sorted(Counter(r["rule"] for r in rejects).items())),
        "failure": failure,
        "files": files,
        "great_expectations": outcome.report,
    }
    layout = state.layout
    storage.write_bytes(layout.rejects_part("validate"), jsonl_bytes(rejects))
    if failure is None:
        storage.write_bytes(layout.validation_accepted,
                            jsonl_bytes([{"index": i, "row": row,
                                          **({"source": outcome.sources[i]} if i in outcome.sources else {})}
                                         for i, row in outcome.accepted]))
    storage.write_json(layout.validation_report, report)
    return report


def row_shape(state: RunState) -> RowShape:
    """How the run's rows become contract rows (template, OpenAI Batch, chat), and whether chat rows can run."""
    return RowShape.of(state.spec.input, chat_template=state.model.chat_template_sha256 is not None)


def validate_input(run: RunRef) -> dict[str, Any]:
    """Run the Great Expectations input suite over every input file; quarantine bad rows with their rule.

    Rows are numbered across the run's pinned files in order (``row_index``).

    A table-level failure (no rows, a missing column, too many rejects) stops the run, but
    still writes the report and the rejects so the user can see why. With ``input.row_rules: pipeline``
    only a sample is checked here (:func:`validate_sample`); the Beam job judges every row.
    """
    state = as_run_state(run)
    ensure_unpublished(state.layout, "validate_input")
    spec = state.spec
    files = read_input_files(state.layout, spec.input)
    if spec.input.row_rules == "pipeline":
        return validate_sample(state, files)
    counts: list[int] = []
    rows = iter_rows_of_files(files, counts)
    try:
        outcome = validate_rows(rows, max_prompt_chars=spec.input.max_prompt_chars,
                                max_reject_fraction=spec.input.max_reject_fraction, source=spec.input.uri,
                                min_rows=spec.input.min_rows, max_rows=spec.input.max_rows, shape=row_shape(state))
    except InputSchemaError as exc:
        if exc.outcome is not None:
            _write_validation(state, exc.outcome, failure=str(exc), files=_files_report(files, counts))
            storage.write_text(state.layout.validation_docs,
                               data_docs_html(exc.outcome.gx_results), overwrite=True,
                               content_type="text/html; charset=utf-8")
        raise
    report = _write_validation(state, outcome, failure=None, files=_files_report(files, counts))
    # GX Data Docs beside the JSON results (overwrite: a retried task renders the same results).
    storage.write_text(state.layout.validation_docs, data_docs_html(outcome.gx_results),
                       overwrite=True, content_type="text/html; charset=utf-8")
    log.info("run %s: validated %s rows, %s rejected", state.run_id, report["rows"]["input"], report["rows"]["rejected"])
    return dict(report["rows"])


SAMPLE_ROWS = 1000
"""Rows ``validate_sample`` checks, from the first files on."""
SAMPLE_BYTES = 8 * 1024 * 1024
"""Bytes it reads at most from each file it samples (decompressed), so a 2 GiB file costs 8 MiB here."""


def validate_sample(state: RunState, files: list[InputFile]) -> dict[str, Any]:
    """``input.row_rules: pipeline``: the table-level checks on the first rows only (rows present, the ``id``
    and ``prompt`` columns, something parses), with the same GX suite; row verdicts are the Beam job's.

    Writes ``validation/sample.json`` (its GX report) and the sample's Data Docs; a failure also writes
    ``validation/input.json`` with the reason, as a full validation does, and stops the run.
    """
    spec = state.spec
    rows = sample_rows(files, SAMPLE_ROWS, SAMPLE_BYTES)
    layout = state.layout
    source = f"{spec.input.uri} (a sample of its first {len(rows)} rows)"
    try:
        outcome = validate_rows(rows, max_prompt_chars=spec.input.max_prompt_chars, max_reject_fraction=1.0,
                                source=source, shape=row_shape(state))
    except InputSchemaError as exc:
        if exc.outcome is not None:
            storage.write_json(layout.validation_report, {
                "run_id": state.run_id, "input": spec.input.uri, "failure": str(exc), "validated_by": "sample",
                "rows": {"sampled": len(rows)}, "great_expectations": exc.outcome.report})
            storage.write_text(layout.validation_docs, data_docs_html(exc.outcome.gx_results), overwrite=True,
                               content_type="text/html; charset=utf-8")
        raise
    storage.write_json(layout.validation_sample, {"run_id": state.run_id, "input": spec.input.uri,
                                                  "files": len(files), "great_expectations": outcome.report},
                       overwrite=True)
    storage.write_text(layout.validation_docs, data_docs_html(outcome.gx_results), overwrite=True,
                       content_type="text/html; charset=utf-8")
    log.info("run %s: sampled %s rows of %s files; the Beam job applies the row rules", state.run_id, len(rows),
             len(files))
    return {"sampled": len(rows), "files": len(files), "sample_rejected": len(outcome.rejects)}
