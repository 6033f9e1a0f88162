"""The malformed-row corpus through the real stages: each bad row ends as exactly one reject.

The corpus is the unit suite's (``tests/unit/test_validation.CORPUS``, every rule) extended here
with more kinds (homoglyph and zero-width ids, NaN/Infinity/1e400 seeds and params, rows nested 100k deep,
trailing garbage, single quotes, overlong UTF-8, UTF-16 bytes, duplicate keys, DEL/VT/FF/LRE in
prompts, Jinja comments ...). Unlike the unit suite, rows go through files and the stages the DAG
runs: ``prepare_run`` → ``validate_input`` (rejects/ written by the stage) and, for the 10k-row mixed
file, the Beam preprocess job (duplicate ids) and generation of every accepted row, then
``reconcile``. Every malformed row must end as exactly one reject whose rule is the expected one and
whose reason names the field; every good row exactly once in the outputs; no shard crashes.
With ``GENBATCH_FAULTS_INJECT=0`` good rows stand where the malformed ones would, so the tests fail.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from genbatch.io import storage
from genbatch.run.layout import RunLayout
from genbatch.run.reconcile import reconcile
from genbatch.stages.prepare import prepare_run
from genbatch.stages.validate import validate_input
from models.registry import resolve_for_spec
from models.worker import run_shard
from tests.faults._support import EchoRunner, Figures, catalog_rows, record, text_spec
from tests.injection import injection_enabled
from tests.unit.test_validation import CORPUS, RULE_FIELD

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _line(**row: Any) -> bytes:
    return json.dumps(row).encode()


EXTRA: list[tuple[str, bytes, str | None]] = [
    ("id zero-width space", _line(id="a\u200bb", prompt="x"), "id_unsafe"),
    ("id cyrillic homoglyph", _line(id="\u0430pple", prompt="x"), "id_unsafe"),
    ("id hidden file", _line(id=".hidden", prompt="x"), "id_unsafe"),
    ("id url-encoded traversal", _line(id="%2e%2e", prompt="x"), "id_unsafe"),
    ("id glob star", _line(id="a*b", prompt="x"), "id_unsafe"),
    ("id backslash", _line(id="a\\b", prompt="x"), "id_unsafe"),
    ("id duplicate key, last unsafe", b'{"id": "dk", "id": "b/c", "prompt": "x"}', "id_unsafe"),
    ("id float", b'{"id": 1e5, "prompt": "x"}', "id_not_string"),
    ("row is a string", b'"just a string"', "parse_error"),
    ("row is null", b"null", "parse_error"),
    ("row is a number", b"42", "parse_error"),
    ("row is an empty array", b"[]", "parse_error"),
    ("trailing garbage", b'{"id": "t1", "prompt": "y"} trailing', "parse_error"),
    ("single quotes", b"{'id': 'sq', 'prompt': 'x'}", "parse_error"),
    ("overlong UTF-8", b'{"id": "ov", "prompt": "\xc0\xaf"}', "parse_error"),
    ("UTF-16 bytes", b'\xff\xfe{\x00"\x00i\x00d\x00"\x00', "parse_error"),
    ("nested 100k deep", b'{"id": "d1", "prompt": "x", "params": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "parse_error"),
    ("lone low surrogate", b'{"id": "lo", "prompt": "\\udc00 low"}', "parse_error"),
    ("empty object", b"{}", "id_missing"),
    ("prompt object", _line(id="po", prompt={"text": "x"}), "prompt_not_string"),
    ("prompt DEL", _line(id="pd", prompt="a\x7fb"), "prompt_control_chars"),
    ("prompt form feed", _line(id="pf", prompt="a\x0cb"), "prompt_control_chars"),
    ("prompt vertical tab", _line(id="pv", prompt="a\x0bb"), "prompt_control_chars"),
    ("prompt LRE embedding", _line(id="pl", prompt="a\u202ab"), "prompt_control_chars"),
    ("prompt jinja comment", _line(id="pc", prompt="{# c #}"), "prompt_template_markers"),
    ("prompt stray stmt close", _line(id="ps", prompt="a %} b"), "prompt_template_markers"),
    ("seed NaN", b'{"id": "sn", "prompt": "x", "seed": NaN}', "seed_invalid"),
    ("seed Infinity", b'{"id": "si", "prompt": "x", "seed": Infinity}', "seed_invalid"),
    ("seed 1e400", b'{"id": "se", "prompt": "x", "seed": 1e400}', "seed_invalid"),
    ("seed numeric string", _line(id="ss", prompt="x", seed="99999999999999999999"), "seed_invalid"),
    ("params empty key", _line(id="nk", prompt="x", params={"": 1}), "params_key_not_allowed"),
    ("params NaN", b'{"id": "pn", "prompt": "x", "params": {"temperature": NaN}}', "params_value_invalid"),
    ("params -Infinity", b'{"id": "pi", "prompt": "x", "params": {"guidance_scale": -Infinity}}', "params_value_invalid"),
    ("params numeric string", _line(id="pq", prompt="x", params={"max_new_tokens": "64"}), "params_value_invalid"),
    ("negative prompt list", _line(id="np", prompt="x", negative_prompt=["a"]), "negative_prompt_not_string"),
    ("negative prompt bool", _line(id="nb", prompt="x", negative_prompt=True), "negative_prompt_not_string"),
]
KINDS = [(label, line, rule) for label, line, rule in CORPUS + EXTRA if rule is not None]
SMALL_KINDS = [k for k in KINDS if len(k[1]) < 10_000]  # the 10 MB and 100k-deep rows once, not 30 times
GOOD_KINDS = [(label, line) for label, line, rule in CORPUS + EXTRA if rule is None]


def _rejects(run_dir: str) -> list[dict[str, Any]]:
    """Every reject record, read strictly: a bare NaN/Infinity (a NaN seed or param echoed back) fails."""
    layout = RunLayout(run_dir)
    return [_strict_json(line) for uri in storage.list_uris(layout.rejects_dir)
            for line in storage.iter_lines(uri) if line.strip()]


def _strict_json(line: str) -> dict[str, Any]:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"reject record holds a bare {constant}: not strict JSON: {line[:200]}")

    record: dict[str, Any] = json.loads(line, parse_constant=refuse)
    return record


def _check_reason(rule: str, reject: dict[str, Any], label: str) -> None:
    reason = reject["reason"]
    assert RULE_FIELD.get(rule, rule.split("_")[0]) in reason, f"{label}: reason does not name the field: {reason}"
    assert "Traceback" not in reason and len(reason) < 1000, f"{label}: {reason[:300]}"


def test_corpus_through_the_validate_stage(tmp_path: Path, zoo_registry: str) -> None:
    assert len({label for label, _l, _r in KINDS}) >= 30, "the corpus must hold at least 30 malformed kinds"
    damage = injection_enabled()  # off: a good row stands where each malformed one would
    written = [line if damage else _line(id=f"fine-{n}", prompt="a good row") for n, (_l, line, _r) in enumerate(KINDS)]
    injected = sum(row == line for row, (_label, line, _rule) in zip(written, KINDS, strict=True))
    lines = written + [line for _label, line in GOOD_KINDS]
    data = b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n"  # a BOM and CRLF line ends, as Windows exports write
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(data)
    spec = text_spec(str(path), str(tmp_path / "runs"), zoo_registry, run_id="corpus",
                     input={"max_reject_fraction": 1.0})
    t0 = time.monotonic()
    run_dir = prepare_run(spec, "corpus", resolve_model=resolve_for_spec)
    counts = validate_input(run_dir)
    by_index = Counter(r["row_index"] for r in _rejects(run_dir))
    rejects = {r["row_index"]: r for r in _rejects(run_dir)}
    record(Figures("malformed-corpus", injected=injected, observed=len(rejects), seconds=round(time.monotonic() - t0, 2),
                   detail={"kinds": len(KINDS), "good": len(GOOD_KINDS)}))
    assert injected == len(KINDS) and len(rejects) == injected, f"{injected} malformed rows written, {len(rejects)} rejects"
    assert counts == {"input": len(lines), "accepted": len(GOOD_KINDS), "rejected": len(KINDS)}
    assert all(c == 1 for c in by_index.values()), "a row ended as more than one reject"
    for index, (label, _row, rule) in enumerate(KINDS):
        assert index in rejects, f"{label}: not rejected"
        assert rejects[index]["rule"] == rule, f"{label}: rule {rejects[index]['rule']}, expected {rule}"
        _check_reason(rule, rejects[index], label)


def test_ten_thousand_row_mixed_file_every_bad_row_one_reject_nothing_lost(
        tmp_path: Path, zoo_registry: str, faults_seed: int) -> None:
    rng = random.Random(faults_seed + 10_000)
    n_rows, n_dupes = 10_000, 40
    good = [json.dumps({**r, "seed": i}).encode() for i, r in enumerate(catalog_rows(n_rows))]
    rows: list[bytes] = list(good)
    expected: dict[int, tuple[str, str]] = {}
    bad_positions = rng.sample(range(n_rows), 1_000 + n_dupes)
    damage = injection_enabled()  # off: the good rows stay where the bad ones would go
    for n, pos in enumerate(bad_positions[:1_000]):  # every kind, then random kinds
        label, line, rule = KINDS[n] if n < len(KINDS) else rng.choice(SMALL_KINDS)
        if damage:
            rows[pos] = line
        expected[pos] = (label, rule)
    dupes = bad_positions[1_000:]
    good_ids = [json.loads(good[p])["id"] for p in range(n_rows) if p not in expected and p not in dupes]
    for pos in dupes:  # a row whose id another good row already has: the preprocess stage rejects one
        original = json.loads(good[pos])
        dupe = json.dumps({**original, "id": rng.choice(good_ids)}).encode()
        if damage:
            rows[pos] = dupe
    injected = sum(rows[p] != good[p] for p in bad_positions)  # malformed and duplicate rows really written
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(rows) + b"\n")

    from beam_jobs.preprocess import run as preprocess

    t0 = time.monotonic()
    spec = text_spec(str(path), str(tmp_path / "runs"), zoo_registry, run_id="mixed", num_shards=2, batch_size=64,
                     input={"max_reject_fraction": 1.0})
    run_dir = prepare_run(spec, "mixed", resolve_model=resolve_for_spec)
    validate_input(run_dir)
    preprocess(["--run-dir", run_dir])
    runner = EchoRunner()
    for shard in range(2):
        run_shard(run_dir, shard, runner=runner)
    rec = reconcile(run_dir)
    elapsed = time.monotonic() - t0

    rejects = _rejects(run_dir)
    by_index: Counter[int] = Counter(r["row_index"] for r in rejects)
    by_rule = Counter(r["rule"] for r in rejects)
    record(Figures("malformed-10k", injected=injected, observed=len(rejects), lost=rec.items_lost,
                   doubled=rec.items_duplicated, seconds=round(elapsed, 2), detail={"rejects_by_rule": dict(by_rule)}))
    assert injected == len(expected) + n_dupes and len(rejects) == injected, f"{injected} bad rows, {len(rejects)} rejects"
    assert rec.ok, rec.problems
    assert rec.input == n_rows and rec.rejected == len(expected) + n_dupes
    assert rec.generated == n_rows - len(expected) - n_dupes and rec.errored == 0
    assert all(c == 1 for c in by_index.values()), "a row ended as more than one reject"
    for pos, (label, rule) in expected.items():
        (reject,) = [r for r in rejects if r["row_index"] == pos]
        assert reject["rule"] == rule, f"row {pos} ({label}): rule {reject['rule']}, expected {rule}"
        _check_reason(rule, reject, label)
    dupe_rejects = [r for r in rejects if r["rule"] == "duplicate_id"]
    assert len(dupe_rejects) == n_dupes, by_rule
    assert all("id" in r["reason"] for r in dupe_rejects)
