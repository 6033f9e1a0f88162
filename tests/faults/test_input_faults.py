"""Empty input, a missing column and schema drift stop a run at validation, with nothing generated.

Each case is a real input file (JSONL, CSV or Parquet; on local disk or gs://) through the real
stages ``prepare_run`` and ``validate_input``. The run must stop with InputSchemaError whose
message names the problem, the validation report must record the failure, and no shard or output
object may exist. With ``GENBATCH_FAULTS_INJECT=0`` each case writes good rows in the same format
instead, validation accepts them, and the test fails.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genbatch.io import storage
from genbatch.quality.expectations import InputSchemaError
from genbatch.run.layout import RunLayout
from genbatch.stages.prepare import prepare_run
from genbatch.stages.validate import validate_input
from models.registry import resolve_for_spec
from tests.faults._support import Figures, record, text_spec
from tests.injection import injection_enabled

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    return ("\r\n".join(",".join(r) for r in [header, *rows]) + "\r\n").encode()


def _parquet(columns: dict[str, list[Any]]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


GOOD = [{"id": f"r{i}", "prompt": f"colour: red | item: scarf {i}\ndescription:"} for i in range(6)]
# What a case writes with injection off: good rows, in its format.
GOOD_FILES: dict[str, Callable[[], bytes]] = {
    "jsonl": lambda: _jsonl(GOOD),
    "csv": lambda: _csv(["id", "prompt"], [[r["id"], f"scarf {i}"] for i, r in enumerate(GOOD)]),
    "parquet": lambda: _parquet({"id": [r["id"] for r in GOOD], "prompt": [r["prompt"] for r in GOOD]}),
}

# (class, label, file suffix, bytes, a phrase the message must contain)
CASES: list[tuple[str, str, str, Callable[[], bytes], str]] = [
    ("empty_input", "zero bytes", "jsonl", lambda: b"", "has no rows"),
    ("empty_input", "blank lines and CRLF", "jsonl", lambda: b"\n\n   \r\n\r\n", "has no rows"),
    ("empty_input", "a UTF-8 BOM only", "jsonl", lambda: b"\xef\xbb\xbf", "has no rows"),
    ("empty_input", "CSV header only", "csv", lambda: _csv(["id", "prompt"], []), "has no rows"),
    ("empty_input", "Parquet with no rows", "parquet", lambda: _parquet({"id": pa.array([], pa.string()),
                                                                          "prompt": pa.array([], pa.string())}),
     "has no rows"),
    ("missing_column", "no prompt anywhere", "jsonl", lambda: _jsonl([{"id": r["id"]} for r in GOOD]),
     "no 'prompt' column"),
    ("missing_column", "no id anywhere", "jsonl", lambda: _jsonl([{"prompt": r["prompt"]} for r in GOOD]),
     "no 'id' column"),
    ("missing_column", "CSV without a prompt column", "csv", lambda: _csv(["id", "seed"], [["a", "1"], ["b", "2"]]),
     "no 'prompt' column"),
    ("missing_column", "Parquet without an id column", "parquet", lambda: _parquet({"prompt": ["x", "y"]}),
     "no 'id' column"),
    ("missing_column", "neither id nor prompt", "jsonl", lambda: _jsonl([{"sku": "a", "desc": "b"}] * 3),
     "no 'id' column"),
    ("schema_drift", "prompt renamed to text", "jsonl",
     lambda: _jsonl([{"id": r["id"], "text": r["prompt"]} for r in GOOD]), "did you mean 'text'"),
    ("schema_drift", "id renamed to item_id", "jsonl",
     lambda: _jsonl([{"item_id": r["id"], "prompt": r["prompt"]} for r in GOOD]), "did you mean 'item_id'"),
    ("schema_drift", "CSV header capitalised", "csv", lambda: _csv(["id", "Prompt"], [["a", "x"], ["b", "y"]]),
     "did you mean 'Prompt'"),
    ("schema_drift", "Parquet prompt renamed to caption", "parquet",
     lambda: _parquet({"id": ["a", "b"], "caption": ["x", "y"]}), "did you mean 'caption'"),
    ("schema_drift", "prompt became a number in every row", "jsonl",
     lambda: _jsonl([{"id": r["id"], "prompt": i} for i, r in enumerate(GOOD)]), "prompt_not_string="),
    ("schema_drift", "nothing parses (wrong format)", "jsonl", lambda: b"id\tprompt\nr1\tx\nr2\ty\n",
     "could be read"),
]


@pytest.mark.parametrize("backend", ["local", "gcs"])
def test_bad_inputs_stop_at_validation_with_nothing_generated(backend: str, tmp_path: Path,
                                                              request: pytest.FixtureRequest, zoo_registry: str) -> None:
    base = str(tmp_path) if backend == "local" else f"gs://{request.getfixturevalue('gcs_bucket')}"
    for n, (cls, label, suffix, make, phrase) in enumerate(CASES):
        input_uri = storage.join(base, "inputs", f"case-{n}.{suffix}")
        bad = make()
        storage.write_bytes(input_uri, bad if injection_enabled() else GOOD_FILES[suffix]())
        injected = int(storage.read_bytes(input_uri) == bad)  # the bad input is what was stored
        spec = text_spec(input_uri, storage.join(base, "runs"), zoo_registry, run_id=f"bad-{n}")
        t0 = time.monotonic()
        run_dir = prepare_run(spec, spec["run_id"], resolve_model=resolve_for_spec)
        message = ""
        try:
            validate_input(run_dir)
        except InputSchemaError as exc:
            message = str(exc)
        layout = RunLayout(run_dir)
        generated = storage.list_uris(layout.shards_dir) + storage.list_uris(layout.path("outputs"))
        report = storage.read_json(layout.validation_report) if storage.exists(layout.validation_report) else None
        observed = int(bool(message))  # validation refused the input
        record(Figures(f"input-{cls}", injected=injected, observed=observed, seconds=round(time.monotonic() - t0, 3),
                       detail={"case": label, "backend": backend, "message": message[:200]}))
        assert injected == 1 and observed == injected, f"{label}: bad input stored {injected}, refused {observed}"
        assert phrase in message, f"{label}: {message}"
        assert generated == [], f"{label}: objects were generated after validation failed: {generated}"
        assert report is not None and report["failure"] == message, f"{label}: the report does not record the failure"
        assert not storage.exists(layout.validation_accepted), f"{label}: accepted rows were handed on"
