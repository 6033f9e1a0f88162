"""reconcile() and ``genbatch reconcile``: each check catches the damage it is for, on a real run.

One small run is made for real (validate, Beam preprocess, generate, quality, publish); each test
copies it and damages the copy the way an incident would, then asserts reconcile reports each piece
of damage that was really done (``_damage`` counts it). With ``GENBATCH_FAULTS_INJECT=0`` the copy
is left intact and those tests fail; the clean, unpublished and not-a-run cases inject nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from genbatch.io import storage
from genbatch.run.layout import RunLayout
from genbatch.run.outputs import RunNotPublishedError, read
from genbatch.run.reconcile import CORE_COUNTS, reconcile
from genbatch.run.records import iter_jsonl, jsonl_bytes, reject_files
from genbatch.run.state import load_run_state
from genbatch.stages.publish import rewrite_manifest
from tests.faults._support import (
    EchoRunner,
    apply_damage,
    catalog_rows,
    clone_run,
    finish,
    prepare,
    text_spec,
    write_input,
)
from tests.worker_harness import worker_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "s3cr3t-canary-value-7f1c"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, zoo_registry: str) -> tuple[str, str]:
    """(run dir published for real, the same run prepared but not generated)."""
    tmp = tmp_path_factory.mktemp("reconcile")
    inp = write_input(tmp / "in.jsonl", catalog_rows(20) + [{"id": "bad/id", "prompt": "x"}])
    prepared = prepare(text_spec(inp, str(tmp / "prepared"), zoo_registry, run_id="rec", num_shards=2, batch_size=4))
    done = clone_run(prepared, str(tmp / "published"))
    finish(done, EchoRunner())
    return done, prepared


@pytest.fixture
def run(published: tuple[str, str], tmp_path: Path) -> RunLayout:
    dst = tmp_path / "rec"
    shutil.copytree(published[0], dst)
    return RunLayout(str(dst))




def _cli(uri: str) -> tuple[int, dict[str, Any] | None, str]:
    proc = subprocess.run([sys.executable, "-m", "genbatch", "reconcile", uri], capture_output=True, text=True,
                          env=worker_env(), timeout=120, check=False)
    try:
        return proc.returncode, json.loads(proc.stdout), proc.stderr
    except ValueError:
        return proc.returncode, None, proc.stderr


@pytest.mark.no_injection  # injects nothing: bench.faults --injection off leaves it out
def test_a_clean_published_run_reconciles(run: RunLayout) -> None:
    rec = reconcile(run.root, secrets=[SECRET])
    assert rec.ok, rec.problems
    assert rec.published and rec.orphans == [] and rec.consumer_partial_reads == 0 and rec.secret_leak_count == 0
    assert (rec.input, rec.accepted, rec.rejected, rec.generated) == (21, 20, 1, 20)
    assert rec.checks["shard_manifests"] == 2 and rec.checks["manifest_files"] > 10
    manifest_counts = storage.read_json(run.manifest)["counts"]
    assert rec.counts() == {k: manifest_counts[k] for k in CORE_COUNTS}
    code, out, _err = _cli(run.root)
    assert code == 0 and out is not None and out["ok"] is True and out["items_lost"] == 0


@pytest.mark.no_injection  # injects nothing: bench.faults --injection off leaves it out
def test_a_legacy_run_whose_rejects_say_index_reconciles(run: RunLayout) -> None:
    for uri in reject_files(run):
        legacy = [{("index" if k == "row_index" else k): v for k, v in r.items()} for r in iter_jsonl(uri)]
        storage.write_bytes(uri, jsonl_bytes(legacy), overwrite=True)
    assert any('"index"' in storage.read_text(u) for u in reject_files(run)), "no legacy reject record written"
    rewrite_manifest(load_run_state(run.root))  # a contract version 1 run's manifest matches its own files
    rec = reconcile(run.root)
    assert rec.ok, rec.problems
    assert (rec.input, rec.accepted, rec.rejected) == (21, 20, 1)


@pytest.mark.no_injection  # injects nothing: bench.faults --injection off leaves it out
def test_an_unpublished_run_shows_a_consumer_nothing(published: tuple[str, str]) -> None:
    prepared = published[1]
    with pytest.raises(RunNotPublishedError):
        next(iter(read(prepared, wait_s=0)))
    rec = reconcile(prepared)
    assert rec.consumer_partial_reads == 0 and not rec.published
    assert rec.items_lost == 20 and not rec.ok  # nothing generated yet: every accepted id unaccounted for


def test_orphans_are_found_and_hidden_temp_files_ignored(run: RunLayout) -> None:
    out0 = Path(run.outputs_dir(0))
    assert apply_damage(out0 / (".part-r00-00099.jsonl.tmp-" + "0" * 32), b"in flight") == 1, "no temp file was written"
    assert reconcile(run.root).ok  # a writer's hidden temp file is not an object
    strays = {
        "outputs/shard-00000/notes.txt": b"x",
        "outputs/shard-00007/part-r00-00000.jsonl": b"{}\n",  # a shard this run does not have
        "outputs/shard-00001/images/ghost.png": b"\x89PNG",  # no output record names it
        "_tmp/preprocess/left-behind.npy": b"x",
        "shards/shard-00000-of-00003.jsonl": b"",  # a shard file of another sharding
        "stray.json": b"{}",
    }
    injected = sum(apply_damage(run.path(rel), data) for rel, data in strays.items())
    rec = reconcile(run.root)
    observed = len(set(strays) & set(rec.orphans))
    assert injected == len(strays) and observed == injected, f"{injected} strays written, {observed} found: {rec.orphans}"
    assert not rec.ok and set(strays) <= set(rec.orphans), rec.orphans
    assert any("objects no manifest or layout accounts for" in p for p in rec.problems)
    code, out, _err = _cli(run.root)
    assert code == 1 and out is not None and set(strays) <= set(out["orphans"])


def test_shard_manifest_counts_and_checksums_are_checked(run: RunLayout) -> None:
    manifest_path = Path(run.shard_manifest(0))
    m = json.loads(manifest_path.read_text())
    m["generated"] += 1
    injected = apply_damage(manifest_path, json.dumps(m).encode())
    rec = reconcile(run.root)
    observed = sum("shard 0 manifest says generated=" in p for p in rec.problems)
    assert injected == 1 and observed == injected, f"damage done {injected}, reported {observed}: {rec.problems}"


def test_an_altered_part_is_caught_by_shard_manifest_and_manifest_json(run: RunLayout) -> None:
    part = sorted(Path(run.outputs_dir(1)).glob("part-*.jsonl"))[0]
    lines = part.read_text().splitlines(keepends=True)
    injected = apply_damage(part, "".join(lines[:-1]).encode())  # one record gone
    rec = reconcile(run.root)
    text = " ".join(rec.problems)
    assert injected == 1 and rec.items_lost == injected, f"parts cut {injected}, items lost {rec.items_lost}"
    assert "shard 1 manifest" in text and "does not match manifest.json" in text
    # The reader refuses the run, but only when it reaches the altered part: outputs.read verifies
    # part by part as it streams, so the records of the parts before it were already handed out.
    # reconcile counts that as a partial read (a finding, see docs/reliability.md).
    assert "integrity check" in text and rec.consumer_partial_reads == 1


def test_a_part_written_after_the_shard_committed_is_reported(run: RunLayout) -> None:
    late = Path(run.output_part(0, 99))
    injected = apply_damage(late, (json.dumps({"_pos": 0, "id": "sku-00000"}) + "\n").encode())
    rec = reconcile(run.root)
    text = " ".join(rec.problems)
    assert injected == 1 and rec.items_duplicated == injected, \
        f"late parts {injected}, items duplicated {rec.items_duplicated}"
    assert "not in the shard 0 manifest" in text and "not in manifest.json" in text


def test_success_without_manifest_and_counts_that_disagree(run: RunLayout, published: tuple[str, str]) -> None:
    m = storage.read_json(run.manifest)
    m["counts"]["generated"] = 999
    injected = apply_damage(run.manifest, json.dumps(m).encode())
    observed = sum("manifest.json counts.generated=999" in p for p in reconcile(run.root).problems)
    assert injected == 1 and observed == injected, f"counts altered {injected}, reported {observed}"
    injected = apply_damage(run.manifest, None)
    rec = reconcile(run.root)
    observed = sum("_SUCCESS exists but manifest.json does not" in p for p in rec.problems)
    assert injected == 1 and observed == injected, f"manifests deleted {injected}, reported {observed}: {rec.problems}"


def test_secret_leaks_are_counted(run: RunLayout) -> None:
    injected = apply_damage(run.path("quality", "leak.txt"), f"token={SECRET}".encode())
    rec = reconcile(run.root, secrets=[SECRET])
    assert injected == 1 and rec.secret_leak_count == injected and not rec.ok, \
        f"leaks written {injected}, counted {rec.secret_leak_count}"


def test_on_gcs_too(published: tuple[str, str], gcs_bucket: str) -> None:
    src = published[0]
    dst_parent = f"gs://{gcs_bucket}/copy"
    dst = clone_run(src, dst_parent)
    rec = reconcile(dst)
    # The manifest's file list was made on local disk; every entry must still match on gs://.
    assert rec.ok, rec.problems
    injected = apply_damage(storage.join(dst, "outputs", "shard-00000", "junk.bin"), b"x")
    observed = reconcile(dst).orphans.count("outputs/shard-00000/junk.bin")
    assert injected == 1 and observed == injected, f"junk objects written {injected}, orphans found {observed}"


@pytest.mark.no_injection  # injects nothing: bench.faults --injection off leaves it out
def test_cli_on_something_that_is_not_a_run(tmp_path: Path) -> None:
    code, out, err = _cli(str(tmp_path / "nothing"))
    assert code == 2 and out is None and "is not a prepared run directory" in err
