"""prepare_run (the DAG's first task) refuses a gs:// URI it cannot reach with the credentials at hand, in one line
naming the field and the fix, before writing anything (no cloud here: no credentials at all is the real case)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from genbatch.errors import SpecError
from genbatch.io import storage
from genbatch.stages.prepare import prepare_run


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GENBATCH_ALLOWED_PREFIXES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # google-auth: no metadata-server probe (this is no GCE VM)
    storage.reset_client()
    yield
    storage.reset_client()


def test_prepare_names_the_unreachable_gcs_uri_before_any_work(tmp_path: Path, no_credentials: None) -> None:
    (tmp_path / "in.jsonl").write_text('{"id": "a", "prompt": "p"}\n')
    spec = {"task": "text", "input": {"uri": str(tmp_path / "in.jsonl")},
            "model": {"name": "catalog-copy", "alias": "production", "registry": str(tmp_path / "registry")},
            "output": {"uri": "gs://genbatch-no-creds-bucket/runs"}}

    def never(_: object) -> object:
        raise AssertionError("the model was resolved before the storage check")

    with pytest.raises(SpecError, match=r"^output.uri 'gs://genbatch-no-creds-bucket/runs': cannot reach Google Cloud "
                                        r"Storage \(.*\); set GOOGLE_APPLICATION_CREDENTIALS"):
        prepare_run(spec, "r", resolve_model=never)
    assert list(tmp_path.iterdir()) == [tmp_path / "in.jsonl"]
