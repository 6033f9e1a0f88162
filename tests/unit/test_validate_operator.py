"""validate_input's task fails without retries on input a retry would read the same way (the real operator on a
run dir; no scheduler runs here, so the task runner's retry decision is shown by the exception type)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from genbatch.errors import StorageError
from tests.helpers import prepared_run


def test_a_corrupt_gzip_input_fails_the_task_without_retries(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from operators.genbatch_operators import ValidateInputOperator

    bad = tmp_path / "items.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"id": "a", "prompt": "x"}\n' * 50)[:-30])  # cut short: no end-of-stream
    state = prepared_run(str(tmp_path / "runs"), input={"uri": str(bad)})
    with pytest.raises(AirflowFailException, match=r"items.jsonl.gz is not valid gzip .*re-compress it"):
        ValidateInputOperator(task_id="validate_input", run_dir=state.layout.root).execute({})


def test_a_storage_error_stays_retryable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from genbatch.stages import validate
    from operators.genbatch_operators import ValidateInputOperator

    state = prepared_run(str(tmp_path / "runs"))

    def flaky(run: object) -> dict[str, object]:  # stands in for a bucket that times out (no cloud here)
        raise StorageError("read gs://b/items.jsonl: 503 Service Unavailable")

    monkeypatch.setattr(validate, "validate_input", flaky)
    with pytest.raises(StorageError) as info:
        ValidateInputOperator(task_id="validate_input", run_dir=state.layout.root).execute({})
    assert not isinstance(info.value, AirflowFailException)
