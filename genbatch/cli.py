"""The ``genbatch`` command line.

    genbatch run SPEC [--output URI] [--run-id ID]   run the batch_generation DAG end to end (embedded)
    genbatch worker --run-dir URI --shard K          generate one shard (what a pod runs)
    genbatch check-spec SPEC                         validate a spec and print the resolved form
    genbatch spec-schema                             print the RunSpec JSON schema
    genbatch registry-init [--registry URI]          register the shipped tiny models
    genbatch model register|list|show|alias|promote|rollback   the model registry (see genbatch model -h)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from genbatch.errors import GenbatchError


def _summary(run_dir: str, state: str, tasks: dict[str, str], wall_s: float) -> dict[str, Any]:
    from genbatch import storage
    from genbatch.layout import RunLayout

    layout = RunLayout(run_dir)
    out: dict[str, Any] = {"dag_run": state, "run_dir": run_dir, "wall_s": round(wall_s, 1)}
    failed = {k: v for k, v in tasks.items() if v not in {"success", "TaskInstanceState.SUCCESS"}}
    if failed:
        out["tasks_not_successful"] = failed
    if storage.exists(layout.manifest):
        m = storage.read_json(layout.manifest)
        out.update(counts=m["counts"], model=f"{m['model']['name']}@{m['model']['version']}",
                   throughput_items_per_s=m["timings"]["throughput_items_per_compute_s"],
                   manifest=layout.manifest, success_marker=storage.exists(layout.success))
    if storage.exists(layout.quality_summary):
        q = storage.read_json(layout.quality_summary)
        out["gates"] = {g["metric"]: ("PASS" if g["passed"] else "FAIL") + f" ({g['value']})" for g in q["gates"]}
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from genbatch.spec import load_spec

    spec = load_spec(args.spec)  # fail before any work, listing every bad field
    data = spec.to_json_dict()
    if args.output:
        data["output"]["uri"] = args.output
    data["run_id"] = args.run_id or spec.run_id or (
        f"{Path(args.spec).parent.name}-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}"
    )
    from genbatch import embedded

    embedded.configure(embedded.STATE_DIR / "airflow")
    embedded.ensure_db(embedded.STATE_DIR / "airflow")
    from models.zoo.seed import ensure_zoo_registered

    ensure_zoo_registered(spec.model.registry)
    from genbatch.layout import RunLayout

    run_dir = RunLayout.for_run(data["output"]["uri"], data["run_id"]).root
    print(f"genbatch: running batch_generation for run {data['run_id']} -> {run_dir}", flush=True)
    t0 = time.perf_counter()
    state, tasks = embedded.run_dag(data)
    summary = _summary(run_dir, state, tasks, time.perf_counter() - t0)
    print(json.dumps(summary, indent=2))
    return 0 if state.endswith("success") and summary.get("success_marker") else 1


def cmd_check_spec(args: argparse.Namespace) -> int:
    from genbatch.spec import load_spec

    print(json.dumps(load_spec(args.spec).to_json_dict(), indent=2))
    return 0


def cmd_spec_schema(_: argparse.Namespace) -> int:
    from genbatch.spec import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_registry_init(args: argparse.Namespace) -> int:
    from models.zoo.seed import ensure_zoo_registered

    print(json.dumps(ensure_zoo_registered(args.registry)))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        from models.worker import main as worker_main

        return worker_main(argv[1:])
    if argv[:1] == ["model"]:
        from models.model_cli import main as model_main

        try:
            return model_main(argv[1:])
        except GenbatchError as exc:
            print(f"genbatch model: error: {exc}", file=sys.stderr)
            return 2
    parser = argparse.ArgumentParser(prog="genbatch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run a batch end to end in embedded mode")
    p.add_argument("spec")
    p.add_argument("--output", help="override output.uri (local path or gs://bucket/prefix)")
    p.add_argument("--run-id")
    p.set_defaults(func=cmd_run)
    sub.add_parser("worker", help="generate one shard (see genbatch worker --help)")
    sub.add_parser("model", help="model registry: register, list, show, alias, promote, rollback")
    p = sub.add_parser("check-spec", help="validate a spec file")
    p.add_argument("spec")
    p.set_defaults(func=cmd_check_spec)
    sub.add_parser("spec-schema", help="print the RunSpec JSON schema").set_defaults(func=cmd_spec_schema)
    p = sub.add_parser("registry-init", help="register the shipped tiny models")
    p.add_argument("--registry", default=".genbatch/registry")
    p.set_defaults(func=cmd_registry_init)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except GenbatchError as exc:
        print(f"genbatch: error: {exc}", file=sys.stderr)
        return 2
