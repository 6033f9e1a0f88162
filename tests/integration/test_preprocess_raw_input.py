"""``python -m beam_jobs.preprocess --input GLOB``: the job reads raw JSONL/CSV/Parquet itself, through Beam's IO.

Real pipelines on the in-process FnApiRunner over a glob of a gzip JSONL, a CSV and a Parquet
file: malformed rows (broken JSON, bad UTF-8, ragged CSV) become rejects with the rule and the raw
row; the shards are byte-identical to the validate_input + accepted.jsonl path given the same rows.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import beam_jobs.raw_input as raw_input
from beam_jobs.preprocess import preprocess_tmp, run
from genbatch.errors import ShardInputError
from genbatch.io import storage
from genbatch.io.input_rows import iter_input_rows
from genbatch.quality.expectations import InputSchemaError, validate_rows
from genbatch.run.layout import RunLayout
from tests.helpers import prepared_run

pytestmark = pytest.mark.integration

NUM_SHARDS = 2

# a.jsonl.gz (rank 0): global rows 0-6 (the blank line is not a row)
JSONL = b"\n".join([
    json.dumps({"id": "a1", "prompt": "red wool scarf", "seed": 1, "category": "acc"}).encode(),
    b'{"id": "a-broken", "prompt": "unterminated',                      # 1 parse_error (broken JSON)
    b"",                                                                 # blank: skipped
    b'{"id": "a-utf8", "prompt": "caf\xe9"}',                          # 2 parse_error (invalid UTF-8)
    json.dumps({"id": "bad/slash", "prompt": "x"}).encode(),             # 3 id_unsafe
    json.dumps({"id": "a2", "prompt": "  navy   tote  ", "params": {"max_new_tokens": 8}}).encode(),  # 4
    json.dumps({"id": "a3", "prompt": "{{ jinja }} lamp"}).encode(),     # 5 prompt_template_markers
    json.dumps({"id": "a4", "prompt": "green mug " * 6, "params": {"secret": 1}}).encode(),  # 6 params_key_not_allowed
]) + b"\n"
# b.csv (rank 1): global rows 7-11
CSV = (b"id,prompt,seed,category\r\n"
       b"b-ragged,too,many,fields,here\r\n"                              # 7 parse_error (ragged CSV)
       b"b1,olive oak shelf,7,home\r\n"                                  # 8
       b"b2,\"multi\r\nline prompt\",,home\r\n"                          # 9 (a quoted newline; no seed)
       b"a1,duplicate of the jsonl row,3,x\r\n"                          # 10 duplicate_id (a1 is row 0)
       b"b3,teal lamp,-4,home\r\n")                                      # 11 seed_invalid
# c.parquet (rank 2): global rows 12-14
PARQUET_ROWS = [
    {"id": "c1", "prompt": "grey felt hat " * 3, "seed": 12},           # 12
    {"id": "c2", "prompt": None, "seed": 13},                            # 13 prompt_missing
    {"id": "c3", "prompt": "white linen towel", "seed": None},           # 14
]
EXPECTED_REJECTS = [
    (1, None, "parse_error"), (2, None, "parse_error"), (3, "bad/slash", "id_unsafe"),  # unparsed rows have no id
    (5, "a3", "prompt_template_markers"), (6, "a4", "params_key_not_allowed"), (7, None, "parse_error"),
    (10, "a1", "duplicate_id"), (11, "b3", "seed_invalid"), (13, "c2", "prompt_missing"),
]
EXPECTED_SHARDED = {"a1": 0, "a2": 4, "b1": 8, "b2": 9, "c1": 12, "c3": 14}


def _write_inputs(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "a.jsonl.gz").write_bytes(gzip.compress(JSONL))
    (folder / "b.csv").write_bytes(CSV)
    pq.write_table(pa.Table.from_pylist(PARQUET_ROWS), folder / "c.parquet")


def _jsonl(uri: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in storage.iter_lines(uri) if line.strip()]


def _shard_bytes(layout: RunLayout) -> list[bytes]:
    return [storage.read_bytes(layout.shard_input(s, NUM_SHARDS)) for s in range(NUM_SHARDS)]


def test_raw_glob_of_gzip_jsonl_csv_parquet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_inputs(tmp_path / "in")
    monkeypatch.setattr(raw_input, "VALIDATE_ROWS", 3)  # several GX batches per file: verdicts do not depend on them
    state = prepared_run(str(tmp_path / "runs"), num_shards=NUM_SHARDS, run_id="raw",
                         input={"uri": "unused.jsonl", "max_reject_fraction": 0.9})
    layout = state.layout
    plan = run(["--run-dir", layout.root, "--input", str(tmp_path / "in" / "*"),
                "--direct_num_workers=2", "--direct_running_mode=multi_threading"])

    rejects = _jsonl(layout.rejects_part("preprocess"))
    assert [(r["row_index"], r["id"], r["rule"]) for r in rejects] == EXPECTED_REJECTS
    by_index = {r["row_index"]: r for r in rejects}
    # A malformed line keeps its raw text as its row (bad bytes escaped), and its reason names file and line;
    # a parsed row keeps the row as read.
    assert "a.jsonl.gz line 2: broken JSON" in by_index[1]["reason"]
    assert by_index[1]["row"] == '{"id": "a-broken", "prompt": "unterminated'
    assert "invalid UTF-8" in by_index[2]["reason"] and by_index[2]["row"] == '{"id": "a-utf8", "prompt": "caf\\xe9"}'
    assert "fields but the header has" in by_index[7]["reason"] and by_index[7]["row"] == "b-ragged,too,many,fields,here\r\n"
    assert by_index[6]["row"] == {"id": "a4", "prompt": "green mug " * 6, "params": {"secret": 1}}  # the raw row
    assert by_index[11]["row"] == {"id": "b3", "prompt": "teal lamp", "seed": -4, "category": "home"}

    items = {it["id"]: it for s in range(NUM_SHARDS) for it in _jsonl(layout.shard_input(s, NUM_SHARDS))}
    assert {i: it["row_index"] for i, it in items.items()} == EXPECTED_SHARDED
    assert items["a2"]["prompt"] == "navy tote" and items["b2"]["prompt"] == "multi\nline prompt"
    assert items["b1"]["seed"] == 7 and items["b1"]["category"] == "home"
    assert plan["rows"] == {"input": 15, "invalid": 8, "accepted": 7, "sharded": 6, "rejected": 1, "fanned_out": 0}
    assert plan["rejects_by_rule"] == {"duplicate_id": 1, "id_unsafe": 1, "params_key_not_allowed": 1,
                                       "parse_error": 3, "prompt_missing": 1, "prompt_over_token_budget": 0,
                                       "prompt_template_markers": 1, "seed_invalid": 1}
    report = storage.read_json(layout.validation_report)
    assert report["rows"] == {"input": 15, "accepted": 7, "rejected": 8}
    assert [f["rows"] for f in report["files"]] == [7, 5, 3]
    assert storage.list_uris(preprocess_tmp(layout)) == []

    # The same rows through validate_input's rules and the accepted.jsonl path: the same shard bytes.
    rows = []
    for name, fmt in (("a.jsonl.gz", "jsonl"), ("b.csv", "csv"), ("c.parquet", "parquet")):
        data = (tmp_path / "in" / name).read_bytes()
        rows += list(iter_input_rows(gzip.decompress(data) if name.endswith(".gz") else data, fmt, source=name))
    rows = [dataclasses.replace(raw, index=i) for i, raw in enumerate(rows)]
    outcome = validate_rows(rows, max_reject_fraction=0.9)
    ref = prepared_run(str(tmp_path / "ref"), num_shards=NUM_SHARDS, run_id="raw")
    storage.write_text(ref.layout.validation_accepted,
                       "".join(json.dumps({"index": i, "row": r}) + "\n" for i, r in outcome.accepted))
    ref_plan = run(["--run-dir", ref.layout.root])
    assert _shard_bytes(ref.layout) == _shard_bytes(layout)
    assert [s["sha256"] for s in ref_plan["shards"]] == [s["sha256"] for s in plan["shards"]]
    assert sorted((r.index, r.rule) for r in outcome.rejects) == sorted((i, rule) for i, _, rule in EXPECTED_REJECTS
                                                                         if rule != "duplicate_id")

    # A rerun (a retried task) rewrites identical objects: create-only writes accept them.
    assert run(["--run-dir", layout.root, "--input", str(tmp_path / "in" / "*")])["shards"] == plan["shards"]


def test_raw_input_refusals(tmp_path: Path) -> None:
    state = prepared_run(str(tmp_path / "runs"), num_shards=1, run_id="r")
    with pytest.raises(ShardInputError, match="matches no file"):
        run(["--run-dir", state.layout.root, "--input", str(tmp_path / "nothing-*.jsonl")])
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"id": "x", "prompt": "ok"}\n{broken\n{"prompt": "no id"}\n')
    with pytest.raises(Exception, match="2 of 3 rows .* were rejected") as info:  # default max_reject_fraction 0.5
        run(["--run-dir", state.layout.root, "--input", str(bad)])
    assert isinstance(info.value, InputSchemaError) or "InputSchemaError" in str(info.value)
    report = storage.read_json(state.layout.validation_report)
    assert report["rows"] == {"input": 3, "accepted": 1, "rejected": 2} and report["failure"]
    assert not storage.exists(state.layout.shard_plan)


def test_raw_input_params_values_meet_the_spec_bounds(tmp_path: Path) -> None:
    """NaN and out-of-bounds params values end as params_value_invalid rejects, written as strict JSON."""
    path = tmp_path / "params.jsonl"
    path.write_bytes(b"\n".join([
        json.dumps({"id": "v1", "prompt": "red wool scarf", "params": {"temperature": 0.5}}).encode(),
        b'{"id": "v2", "prompt": "navy tote", "params": {"temperature": NaN}}',
        json.dumps({"id": "v3", "prompt": "olive shelf", "params": {"max_new_tokens": "lots"}}).encode(),
    ]) + b"\n")
    state = prepared_run(str(tmp_path / "runs"), num_shards=1, run_id="pv",
                         input={"uri": "unused.jsonl", "max_reject_fraction": 1.0})
    plan = run(["--run-dir", state.layout.root, "--input", str(path)])

    def refuse(constant: str) -> Any:
        raise AssertionError(f"a reject holds a bare {constant}")

    rejects = [json.loads(line, parse_constant=refuse)
               for line in storage.iter_lines(state.layout.rejects_part("preprocess")) if line.strip()]
    assert [(r["row_index"], r["id"], r["rule"]) for r in rejects] == [(1, "v2", "params_value_invalid"),
                                                                   (2, "v3", "params_value_invalid")]
    assert rejects[0]["row"]["params"] == {"temperature": "NaN"}
    assert rejects[0]["reason"].startswith("params.temperature is NaN, must be a number within [0, 5]")
    assert "params.max_new_tokens is a string 'lots'" in rejects[1]["reason"]
    assert plan["rows"]["sharded"] == 1 and plan["rejects_by_rule"]["params_value_invalid"] == 2


def test_raw_input_on_gcs_gives_the_same_shards_as_local(tmp_path: Path, gcs_bucket: str) -> None:
    _write_inputs(tmp_path / "in")
    for path in sorted((tmp_path / "in").iterdir()):
        storage.write_bytes(f"gs://{gcs_bucket}/raw-in/{path.name}", path.read_bytes())
    plans, shards = [], []
    for base, pattern in ((str(tmp_path / "runs"), str(tmp_path / "in" / "*")),
                          (f"gs://{gcs_bucket}/runs", f"gs://{gcs_bucket}/raw-in/*")):
        state = prepared_run(base, num_shards=NUM_SHARDS, run_id="raw-gcs",
                             input={"uri": "unused.jsonl", "max_reject_fraction": 0.9})
        plan = run(["--run-dir", state.layout.root, "--input", pattern])
        plans.append({k: plan[k] for k in ("rows", "rejects_by_rule", "shards")})
        # Parse errors name their file, whose URI is the one thing allowed to differ.
        rejects = storage.read_bytes(state.layout.rejects_part("preprocess")).replace(pattern[:-1].encode(), b"IN/")
        shards.append([*_shard_bytes(state.layout), rejects])
    assert plans[0] == plans[1] and shards[0] == shards[1]
    assert b"IN/a.jsonl.gz line 2: broken JSON" in shards[1][-1]
    assert plans[1]["rows"]["input"] == 15
