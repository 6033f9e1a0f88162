"""Building a real run directory for subprocess worker tests, and reading back what it holds.

Shared by tests/integration/test_worker_resume.py and test_worker_memory.py. Nothing here
starts Airflow or the preprocess stage: the run dir is what the prepare stage would leave
(spec.json + shard files), plus a minimal ``validation/input.json`` so that
``genbatch.run.reconcile.reconcile`` can be run on it.

Run as a module (``python -m tests.worker_harness worker --run-dir ... --shard K``) it is the
real CLI (``genbatch.cli.commands.main``) with one passive probe: when ``GENBATCH_TEST_BATCH_LOG`` is
set, every ``run_batch`` call on the real runner appends the ids it was handed and its start time
to that file (one ``os.write`` on an O_APPEND fd per call, so a line is either whole or absent after
SIGKILL). It changes no behaviour; it lets a kill test count the generation work that a killed
attempt did and never committed. ``GENBATCH_TEST_GATE`` adds one gate: before its first model call
the worker creates ``<gate>.ready`` and waits for ``<gate>.go`` (racing workers start generating together).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genbatch.io import storage
from genbatch.run.layout import RunLayout
from genbatch.run.model_ref import ModelVersion
from genbatch.run.spec import parse_spec
from genbatch.run.state import RunState, write_run_state

REPO = Path(__file__).resolve().parents[1]
CATALOG = REPO / "examples" / "catalog" / "items.jsonl"


def catalog_prompts() -> list[str]:
    """The ``prompt`` field of every row of the example catalog (real prompt sizes)."""
    return [json.loads(line)["prompt"] for line in CATALOG.read_text().splitlines() if line.strip()]


def real_run(output_root: str, model: ModelVersion, registry: str, *, run_id: str = "test-run",
             generation: dict[str, Any] | None = None, task: str = "text") -> RunState:
    """A one-shard run whose spec names the real registry model (unlike tests.helpers.prepared_run,
    whose spec section always says ``fake@1``)."""
    spec = parse_spec({
        "task": task,
        "input": {"uri": "unused.jsonl"},
        "model": {"name": model.name, "version": model.version, "registry": registry},
        "generation": generation or {},
        "sharding": {"num_shards": 1},
        "output": {"uri": output_root},
    })
    state = RunState(run_id=run_id, spec=spec, model=model, layout=RunLayout.for_run(output_root, run_id),
                     num_shards=1)
    write_run_state(state)
    return state


def write_items(state: RunState, items: Iterable[dict[str, Any]], shard: int = 0) -> int:
    """The shard file (streamed: items may be a generator) plus the validation report that
    reconcile() needs (every row accepted). Returns the item count."""
    path = Path(state.layout.shard_input(shard, state.num_shards))
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as f:
        for it in items:
            f.write(json.dumps(it) + "\n")
            n += 1
    storage.write_json(state.layout.validation_report, {"rows": {"input": n, "accepted": n, "rejected": 0}})
    return n


def worker_cmd(run_dir: str, shard: int = 0) -> list[str]:
    """The real CLI, exactly what a pod runs."""
    return [sys.executable, "-m", "genbatch", "worker", "--run-dir", run_dir, "--shard", str(shard),
            "--device", "cpu"]


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")  # 2 shared cores: keep each worker to one
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


PART_RE = re.compile(r"^(part|errors)-r(\d+)-(\d+)\.jsonl$")  # genbatch.run.layout output_part/error_part
METRICS_RE = re.compile(r"^metrics-r\d+\.prom$")


def part_key(uri: str) -> tuple[str, int, int] | None:
    """``.../part-r00-00012.jsonl`` -> ("part", 0, 12); None for any other name."""
    match = PART_RE.match(uri.rsplit("/", 1)[-1])
    return (match.group(1), int(match.group(2)), int(match.group(3))) if match else None


@dataclass
class OutputsScan:
    """Everything the outputs dir of one shard shows through ``storage.list_uris``."""

    ids: dict[tuple[str, int, int], list[str]] = field(default_factory=dict)  # part_key -> ids in it
    unexpected: list[str] = field(default_factory=list)  # a name that is no part, manifest or metrics file
    unparsable: list[str] = field(default_factory=list)  # a visible file that is not complete JSONL/JSON

    @property
    def output_ids(self) -> list[str]:
        return [i for k, ids in sorted(self.ids.items()) if k[0] == "part" for i in ids]

    @property
    def id_counts(self) -> Counter[str]:
        c: Counter[str] = Counter()
        for ids in self.ids.values():
            c.update(ids)
        return c


def _complete_jsonl_ids(path: Path) -> list[str] | None:
    data = path.read_bytes()
    if not data or not data.endswith(b"\n"):
        return None
    ids = []
    try:
        for line in data.decode("utf-8").splitlines():
            ids.append(str(json.loads(line)["id"]))
    except (ValueError, KeyError, TypeError):
        return None
    return ids


def scan_outputs(layout: RunLayout, shard: int = 0) -> OutputsScan:
    scan = OutputsScan()
    for uri in storage.list_uris(layout.outputs_dir(shard)):
        name = uri.rsplit("/", 1)[-1]
        key = part_key(uri)
        if key is not None:
            ids = _complete_jsonl_ids(Path(uri))
            if ids is None:
                scan.unparsable.append(uri)
            else:
                scan.ids[key] = ids
        elif name == "_manifest.json":
            try:
                json.loads(Path(uri).read_text())
            except ValueError:
                scan.unparsable.append(uri)
        elif not METRICS_RE.match(name):
            scan.unexpected.append(uri)
    return scan


def hidden_temp_files(layout: RunLayout, shard: int = 0) -> list[Path]:
    """Temp files a killed write left on disk (list_uris hides them; counted for the report)."""
    root = Path(layout.outputs_dir(shard))
    return sorted(p for p in root.rglob(".*") if ".tmp-" in p.name) if root.is_dir() else []


BATCH_LOG_ENV = "GENBATCH_TEST_BATCH_LOG"


GATE_ENV = "GENBATCH_TEST_GATE"
GATE_TIMEOUT_S = 120.0


def pass_gate(gate: str) -> None:
    """Say ``<gate>.ready``, then wait for ``<gate>.go`` (a missing go after the timeout fails loudly)."""
    Path(f"{gate}.ready").touch()
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while not Path(f"{gate}.go").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{gate}.go never appeared")
        time.sleep(0.002)


class _LoggingRunner:
    """Delegates everything to the real runner; records the ids and start time of each ``run_batch`` call."""

    def __init__(self, inner: Any, fd: int, gate: str | None = None) -> None:
        self._inner = inner
        self._fd = fd
        self._gate = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def run_batch(self, items: list[Any]) -> Any:
        if self._gate is not None:
            pass_gate(self._gate)
            self._gate = None
        line = json.dumps({"pid": os.getpid(), "ids": [it.id for it in items], "t": time.time()}) + "\n"
        os.write(self._fd, line.encode())
        return self._inner.run_batch(items)


def read_batch_log(path: Path) -> list[dict[str, Any]]:
    """The probe's records; a torn last line (impossible with one small write) would fail loudly."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def probed_worker_cmd(run_dir: str, shard: int = 0) -> list[str]:
    """Like :func:`worker_cmd`, through the probe (needs ``GENBATCH_TEST_BATCH_LOG`` in env)."""
    return [sys.executable, "-m", "tests.worker_harness", "worker", "--run-dir", run_dir, "--shard", str(shard),
            "--device", "cpu"]


def _probe_main(argv: list[str]) -> int:
    import models.worker
    from genbatch.cli.commands import main

    log_path = os.environ.get(BATCH_LOG_ENV)
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        real_load = models.worker.load_runner

        def load_runner(*args: Any, **kwargs: Any) -> Any:
            return _LoggingRunner(real_load(*args, **kwargs), fd, os.environ.get(GATE_ENV))

        models.worker.load_runner = load_runner
    return main(argv)


def attempt_records(layout: RunLayout, shard: int = 0) -> list[Any]:
    """The worker's own per-attempt records of a shard (``genbatch.run.attempts.summarise``), oldest first."""
    from genbatch.run.attempts import summarise

    listing = [uri[len(layout.root):].lstrip("/") for uri in storage.list_uris(layout.root)]
    return [a for a in summarise(layout.root, listing, shard + 1) if a.shard == shard]


def cross_check_redone(layout: RunLayout, probe_redone: dict[int, int], shard: int = 0) -> dict[str, Any]:
    """The records' work redone per attempt against the probe's (``{pid: items}``).

    They must agree, attempt by attempt, with one tolerated difference: a SIGKILL that lands between
    the worker recording a batch as begun and the probe logging the model call (a few microseconds
    of Python) makes the record say one batch redone where the probe says none. Returns
    ``{"agree", "tolerated", "mismatched": [...], "records": n}``.
    """
    by_pid = {a.pid: a for a in attempt_records(layout, shard)}
    out: dict[str, Any] = {"agree": 0, "tolerated": 0, "mismatched": [], "records": len(by_pid)}
    for pid, probe in probe_redone.items():
        rec = by_pid.get(pid)
        if rec is None:
            if probe:  # no record at all: only possible when killed before the start record was written
                out["mismatched"].append({"pid": pid, "probe": probe, "record": None})
            else:
                out["agree"] += 1
            continue
        if rec.redone == probe:
            out["agree"] += 1
        elif probe == 0 and rec.state == "unknown" and rec.uncommitted_part is not None:
            out["tolerated"] += 1
        else:
            out["mismatched"].append({"pid": pid, "probe": probe, "record": rec.redone, "state": rec.state})
    return out


def run_to_completion(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def launcher_cmd(run_dir: str, shard: int = 0) -> list[str]:
    """The local backend's launcher (``genbatch.stages.generate.run_worker_process``, what the Airflow task
    calls) as its own process, starting the worker through the probe."""
    return [sys.executable, "-m", "tests.worker_harness", "launch", "--run-dir", run_dir, "--shard", str(shard)]


def _launch_main(argv: list[str]) -> int:
    import argparse
    import logging

    import genbatch.stages.generate
    from genbatch.stages.generate import WorkerFailed, run_worker_process

    parser = argparse.ArgumentParser(prog="worker_harness launch")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--shard", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    genbatch.stages.generate.WORKER_MODULE = "tests.worker_harness"  # the real CLI plus the passive probe
    try:
        print(json.dumps(run_worker_process(args.run_dir, args.shard)), flush=True)
    except WorkerFailed as exc:
        print(f"launch: {exc}", file=sys.stderr)
        return 2 if exc.permanent else 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["launch"]:
        raise SystemExit(_launch_main(sys.argv[2:]))
    raise SystemExit(_probe_main(sys.argv[1:]))
