"""The ``genbatch`` command line.

    genbatch run SPEC [--output URI] [--run-id ID]   run the batch_generation DAG end to end (embedded)
    genbatch worker --run-dir URI --shard K          generate one shard (what a pod runs)
    genbatch check-spec SPEC | spec-schema           validate a spec, print its resolved form | the RunSpec schema
    genbatch registry-init [--registry URI]          register the shipped tiny models
    genbatch reconcile URI                           lost/doubled/orphans/manifest checks of a run, as JSON
    genbatch wait URI [--timeout S]                  wait for a run to publish: 0 published, 1 failed, 2 timed out
    genbatch cost URI... [--table]                   cost per run, per model version and per 1k items
    genbatch erase --id ID | --match F=V ROOT...     erase a data subject from every run (GDPR), with a record
    genbatch model register|list|show|alias|promote|rollback   the model registry (see genbatch model -h)
    genbatch schedule list [--specs-dir DIR] [--json]   scheduled specs: what starts each, next run, last outcome
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, NoReturn, cast

from genbatch.errors import GenbatchError

COMMAND_GROUP = "genbatch.commands"  # subcommands other packages provide (models: worker, model)
SEED_GROUP = "genbatch.registry_seed"  # who fills a registry with bundled models (models: the zoo)
RESOLVER_GROUP = "genbatch.model_resolver"  # who resolves a spec's model in its registry (models.registry)
PLUGIN_COMMANDS = ("worker", "model")


def _summary(run_dir: str, state: str, tasks: dict[str, str], wall_s: float) -> dict[str, Any]:
    from genbatch.io import storage
    from genbatch.run.layout import RunLayout

    layout = RunLayout(run_dir)
    out: dict[str, Any] = {"dag_run": state, "run_dir": run_dir, "wall_s": round(wall_s, 1)}
    if tasks.get("prepare_run", "").lower().endswith("skipped"):  # refuse_published: this spec is published there already
        out["already_published"] = "nothing was run: the run dir is published with this spec (a published run " \
                                   "is never rewritten; use another --run-id for a new run)"
    failed = {k: v for k, v in tasks.items()
              if v not in {"success", "TaskInstanceState.SUCCESS"} and "already_published" not in out}
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


def _ensure_failed_marker(run_dir: str, run_id: str, tasks: dict[str, str]) -> dict[str, Any] | None:
    """The run's ``_FAILED`` (the failed task's callback writes it; written here when none did), or None
    when the run is published after all or nothing could be written."""
    from genbatch.io import storage
    from genbatch.run.layout import RunLayout
    from genbatch.stages.failure import mark_failed

    layout = RunLayout(run_dir)
    failed = [k for k, v in tasks.items() if v.endswith("failed") and not v.endswith("upstream_failed")]
    if failed:
        mark_failed(run_dir, failed[0], "the task failed; its log has the reason", airflow_run_id=run_id)
    return dict(storage.read_json(layout.failed)) if storage.exists(layout.failed) else None


def default_run_id(spec_path: str) -> str:
    """A run id for a spec without one: its folder's name and the UTC time (``catalog-20260101T000000Z``)."""
    return f"{Path(spec_path).parent.name}-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}"


def cmd_run(args: argparse.Namespace) -> int:
    """``genbatch run``: validate the spec, run the batch_generation DAG in embedded Airflow, print a summary; 0 if published."""
    from genbatch.cli import embedded
    from genbatch.cli.preflight import check_run_id, preflight
    from genbatch.run.spec import load_spec, parse_spec

    spec = load_spec(args.spec)  # fail before any work, listing every bad field
    data = spec.to_json_dict()
    if args.output:
        data["output"]["uri"] = args.output
    data["run_id"] = args.run_id or spec.run_id or default_run_id(args.spec)
    check_run_id(data["run_id"])  # before the spec reads it: genbatch's own one-line message
    spec = parse_spec(data, source=args.spec)
    if is_default_registry(spec.model.registry):
        seed_registry(spec.model.registry)  # the toy models, and only into the example registry
    # one line naming field, value and fix; before any Airflow
    preflight(spec, data["run_id"], resolve_model, allowed_paths=args.allow_path)
    embedded.configure(embedded.STATE_DIR / "airflow")
    embedded.ensure_db(embedded.STATE_DIR / "airflow")
    from genbatch.run.layout import RunLayout

    run_dir = RunLayout.for_run(data["output"]["uri"], data["run_id"]).root
    print(f"genbatch: running batch_generation for run {data['run_id']} -> {run_dir}", flush=True)
    t0 = time.perf_counter()
    state, tasks = embedded.run_dag(data)
    summary = _summary(run_dir, state, tasks, time.perf_counter() - t0)
    if not state.endswith("success"):
        summary["failed_marker"] = _ensure_failed_marker(run_dir, data["run_id"], tasks)
    print(json.dumps(summary, indent=2))
    return 0 if state.endswith("success") and summary.get("success_marker") else 1


def cmd_check_spec(args: argparse.Namespace) -> int:
    """``genbatch check-spec``: validate a spec file and print its resolved form (defaults filled in) as JSON.

    A file with a ``schedule`` section is checked as a scheduled spec (the specs folder's files)."""
    from genbatch.run.spec import parse_spec, read_spec_file

    data = read_spec_file(args.spec)
    if isinstance(data, dict) and "schedule" in data:
        from genbatch.schedule.spec import parse_scheduled_spec

        scheduled = parse_scheduled_spec(data, Path(args.spec))
        print(json.dumps({"schedule": scheduled.schedule.model_dump(mode="json"), **scheduled.spec.to_json_dict()},
                         indent=2))
        return 0
    spec = parse_spec(data, source=str(args.spec))
    from genbatch.cli.preflight import preflight

    # The example registry may not be seeded yet (genbatch run seeds it): it is not checked.
    preflight(spec, spec.run_id, None if is_default_registry(spec.model.registry) else resolve_model,
              allowed_paths=args.allow_path)
    print(json.dumps(spec.to_json_dict(), indent=2))
    return 0


def cmd_spec_schema(_: argparse.Namespace) -> int:
    """``genbatch spec-schema``: print the RunSpec JSON schema (refs inlined, as the Airflow form uses it)."""
    from genbatch.run.spec import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    """``genbatch reconcile``: print the run's reconciliation as JSON; exit 1 when any check fails."""
    from genbatch.run.reconcile import reconcile

    result = reconcile(args.run_dir, secrets=args.secret or ())
    print(json.dumps(result.to_json(), indent=2))
    return 0 if result.ok else 1


WAIT_PUBLISHED, WAIT_FAILED, WAIT_TIMED_OUT = 0, 1, 2


def cmd_wait(args: argparse.Namespace) -> int:
    """``genbatch wait``: wait for ``_SUCCESS`` or ``_FAILED``; print what was found as JSON.

    Exit 0: published, and ``_SUCCESS`` vouches for the manifest; 1: the run failed (``_FAILED``) or its
    published files do not match; 2: neither marker within ``--timeout`` seconds.
    """
    from genbatch.run.layout import RunLayout
    from genbatch.run.outputs import OutputIntegrityError, RunFailedError, RunNotPublishedError, run_dir_of, wait_published

    run_uri = run_dir_of(args.run_uri)
    try:
        manifest = wait_published(run_uri, wait_s=args.timeout, poll_s=args.poll)
    except RunFailedError as exc:
        print(json.dumps({"status": "failed", "run_uri": run_uri, **exc.marker}, indent=2))
        print(f"genbatch wait: {exc}", file=sys.stderr)
        return WAIT_FAILED
    except OutputIntegrityError as exc:
        print(json.dumps({"status": "damaged", "run_uri": run_uri, "problem": str(exc)}, indent=2))
        print(f"genbatch wait: {exc}; do not use this run", file=sys.stderr)
        return WAIT_FAILED
    except RunNotPublishedError as exc:
        print(json.dumps({"status": "timed_out", "run_uri": run_uri, "timeout_s": args.timeout}, indent=2))
        print(f"genbatch wait: {exc}", file=sys.stderr)
        return WAIT_TIMED_OUT
    print(json.dumps({"status": "published", "run_uri": run_uri, "manifest": RunLayout(run_uri).manifest,
                      "contract_version": manifest.get("contract_version", 1), "generation": manifest.get("generation", 1),
                      "counts": manifest.get("counts")}, indent=2))
    return WAIT_PUBLISHED


def cmd_registry_init(args: argparse.Namespace) -> int:
    """``genbatch registry-init``: register the bundled models into ``--registry`` and print the result."""
    print(json.dumps(seed_registry(args.registry)))
    return 0


def cmd_cost(args: argparse.Namespace) -> int:
    """``genbatch cost``: cost of the published runs under the URIs (JSON, or ``--table``); exit 1 when there are none."""
    from genbatch.plan.cost import format_table, summarise

    summary = summarise(args.uris)
    if not summary["runs"]:
        print(f"genbatch cost: no published runs (manifest.json) under {' '.join(args.uris)}", file=sys.stderr)
        return 1
    print(format_table(summary) if args.table else json.dumps(summary, indent=2))
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    """``genbatch erase``: erase the subject from all runs under the roots, print the record; exit 1: residue, 3: runs skipped."""
    from genbatch.ops.erasure import Subject, erase

    subject = Subject.parse(ident=args.id, match=args.match)
    record = erase(args.roots, subject, include_incomplete=args.include_incomplete, dry_run=args.dry_run)
    print(json.dumps(record, indent=2))  # the record holds no personal data: safe to print and keep
    if record["residual_runs"]:
        print(f"genbatch erase: the subject is still found in runs {record['residual_runs']}; see the log",
              file=sys.stderr)
        return 1
    if record["skipped_incomplete"]:
        print(f"genbatch erase: skipped runs still generating {record['skipped_incomplete']}; rerun when they "
              "finish, or pass --include-incomplete", file=sys.stderr)
        return 3
    if record["source_inputs_not_modified"] and not args.dry_run:
        print("genbatch erase: the source input files were not modified: "
              f"{record['source_inputs_not_modified']}", file=sys.stderr)
    return 0


def cmd_schedule_list(args: argparse.Namespace) -> int:
    """``genbatch schedule list``: a row per spec file (table or ``--json``); exit 1 when a file is invalid."""
    from genbatch.schedule.listing import list_specs, table

    now = dt.datetime.fromisoformat(args.now) if args.now else None  # naive: UTC
    rows = list_specs(Path(args.specs_dir) if args.specs_dir else None, now=now)
    print(json.dumps([r.to_json() for r in rows], indent=2) if args.json else table(rows))
    return 1 if any(r.error is not None for r in rows) else 0


def _plugin(group: str, name: str) -> Callable[..., Any]:
    """The callable another package registered under entry-point ``group`` as ``name`` (setup.cfg)."""
    found = entry_points(group=group, name=name)
    if not found:
        raise GenbatchError(f"no {group!r} entry point named {name!r}: is genbatch installed (make setup)?")
    return cast(Callable[..., Any], next(iter(found)).load())


def is_default_registry(registry: str) -> bool:
    """The example registry under the working directory (``.genbatch/registry``): the only one genbatch seeds."""
    from genbatch.cli import embedded

    return not registry.startswith("gs://") and Path(registry).resolve() == (embedded.STATE_DIR / "registry").resolve()


def resolve_model(spec: Any) -> Any:
    """The spec's model version from its registry (the ``genbatch.model_resolver`` hook of ``models``)."""
    return _plugin(RESOLVER_GROUP, "registry")(spec)


def seed_registry(registry: str) -> Any:
    """Register the bundled models into ``registry`` (the ``genbatch.registry_seed`` hook of ``models``)."""
    return _plugin(SEED_GROUP, "zoo")(registry)


def main(argv: list[str] | None = None) -> int:
    """``genbatch``: parse the command line, dispatch; plugin subcommands get their own arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["stage"]:  # quality_gate / publish as a worker command (its own arguments and exit codes)
        from genbatch.cli.stage_command import main as stage_main

        return stage_main(argv[1:])
    if argv[:1] and argv[0] in PLUGIN_COMMANDS:
        try:
            return int(_plugin(COMMAND_GROUP, argv[0])(argv[1:]))
        except GenbatchError as exc:
            print(f"genbatch {argv[0]}: error: {exc}", file=sys.stderr)
            return 2
    parser = argparse.ArgumentParser(prog="genbatch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run a batch end to end in embedded mode")
    p.add_argument("spec")
    p.add_argument("--output", help="override output.uri (local path or gs://bucket/prefix)")
    p.add_argument("--run-id")
    p.add_argument("--allow-path", action="append", default=[], metavar="PREFIX",
                   help="also allow output.uri / model.registry under PREFIX (default: only under the working "
                        "directory, or $GENBATCH_ALLOWED_PREFIXES when set); repeatable")
    p.set_defaults(func=cmd_run)
    sub.add_parser("worker", help="generate one shard (see genbatch worker --help)")
    sub.add_parser("model", help="model registry: register, list, show, alias, promote, rollback")
    sub.add_parser("stage", help="run quality_gate or publish of a run dir as a worker command "
                   "(see genbatch stage --help)")
    p = sub.add_parser("check-spec", help="validate a spec file and resolve what it names (model, input, paths)")
    p.add_argument("spec")
    p.add_argument("--allow-path", action="append", default=[], metavar="PREFIX",
                   help="also allow output.uri / model.registry under PREFIX (as genbatch run); repeatable")
    p.set_defaults(func=cmd_check_spec)
    sub.add_parser("spec-schema", help="print the RunSpec JSON schema").set_defaults(func=cmd_spec_schema)
    p = sub.add_parser("reconcile", help="check a run dir: nothing lost or doubled, no orphans, manifests match "
                                         "(exit 0 when it all holds, 1 otherwise)")
    p.add_argument("run_dir", metavar="URI", help="the run dir, <output.uri>/<run_id> (local path or gs://)")
    p.add_argument("--secret", action="append", help="a value that must appear in no object (repeatable)")
    p.set_defaults(func=cmd_reconcile)
    p = sub.add_parser("wait", help="wait until a run publishes or fails (exit 0 published, 1 failed, 2 timed out)")
    p.add_argument("run_uri", metavar="RUN_URI", help="the run dir, <output.uri>/<run_id> (local path or gs://)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (0: look once); default 600")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between looks; default 5")
    p.set_defaults(func=cmd_wait)
    p = sub.add_parser("registry-init", help="register the shipped tiny models")
    p.add_argument("--registry", default=".genbatch/registry")
    p.set_defaults(func=cmd_registry_init)
    p = sub.add_parser("cost", help="cost per run, per model version and per 1k items across published runs")
    p.add_argument("uris", nargs="+", metavar="URI", help="a run dir, or a prefix holding runs (local or gs://)")
    p.add_argument("--table", action="store_true", help="a text table instead of JSON")
    p.set_defaults(func=cmd_cost)
    p = sub.add_parser("erase", help="erase a data subject's rows, outputs and images from every run under ROOT_URI")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--id", help="the subject's row id")
    who.add_argument("--match", metavar="FIELD=VALUE", help="rows whose FIELD (dotted path) equals VALUE")
    p.add_argument("roots", nargs="+", metavar="ROOT_URI", help="run dirs or prefixes holding runs (local or gs://)")
    p.add_argument("--include-incomplete", action="store_true",
                   help="also rewrite runs with shards still generating (only when no worker is running)")
    p.add_argument("--dry-run", action="store_true", help="report what would be erased; change nothing")
    p.set_defaults(func=cmd_erase)
    p = sub.add_parser("schedule", help="scheduled specs (the specs folder): list them")
    actions = p.add_subparsers(dest="action", required=True)
    p = actions.add_parser("list", help="each spec: what starts it, its next run and how its last run ended "
                                        "(exit 1 when a spec file is invalid)")
    p.add_argument("--specs-dir", metavar="DIR", help="the specs folder (default: $GENBATCH_SPECS_DIR, else specs/)")
    p.add_argument("--json", action="store_true", help="a JSON list instead of the table")
    p.add_argument("--now", metavar="ISO", help="list as of this time (default: now; naive means UTC)")
    p.set_defaults(func=cmd_schedule_list)
    args = parser.parse_args(argv)
    from genbatch.ops import logs

    logs.configure(default_level=logging.WARNING, text_format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except GenbatchError as exc:
        print(f"genbatch: error: {exc}", file=sys.stderr)
        return 2


def console_main() -> NoReturn:
    """The ``genbatch`` executable and ``python -m genbatch``: :func:`main` as a whole process, with the
    collector set for a short-lived one (:mod:`genbatch.cli.process`)."""
    from genbatch.cli.process import run_as_process

    run_as_process(main)
