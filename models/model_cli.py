"""``genbatch model ...``: register, list, show, alias, promote, rollback.

    genbatch model register DIR --name NAME [--alias candidate]
    genbatch model list NAME
    genbatch model show NAME VERSION
    genbatch model alias NAME ALIAS VERSION [--expect V]
    genbatch model promote NAME VERSION [--reason TEXT]
    genbatch model rollback NAME [--reason TEXT]
    genbatch model evaluate NAME CANDIDATE      run the model_promotion DAG: promote or reject
    genbatch model optimize NAME VERSION [--methods int8,prune50,distill] [--candidate]
    genbatch model evaluate-arm NAME VERSION --run-id ID --result URI   worker side of evaluate (models.model_jobs)
    genbatch model build-variant NAME VERSION METHOD --result URI [--candidate]   worker side of optimize

Every command takes ``--registry URI`` (default ``.genbatch/registry``; local path or gs://).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from models import registry as reg


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _embedded(dag_id: str, conf: dict[str, Any], result_task: str) -> int:
    """Run a DAG with dag.test() on the embedded SQLite Airflow and print its result."""
    from genbatch.cli import embedded

    embedded.configure(embedded.STATE_DIR / "airflow")
    embedded.ensure_db(embedded.STATE_DIR / "airflow")
    state, tasks = embedded.run_dag(conf, dag_id)
    _print({"dag_run": state, "tasks": tasks, "result": embedded.dag_run_xcom(dag_id, result_task)})
    return 0 if state.endswith("success") else 1


def _evaluate(registry: str, name: str, candidate: str) -> int:
    return _embedded("model_promotion", {"model": name, "candidate": candidate, "registry": registry}, "decide")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="genbatch model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", default=".genbatch/registry")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("register", help="copy a save_pretrained folder in as the next version")
    p.add_argument("src", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--alias", help="also point this alias at the new version (e.g. candidate)")
    p.add_argument("--parent", type=int, help="lineage: the version this one derives from")
    p = sub.add_parser("list", help="versions and aliases of a model")
    p.add_argument("name")
    p = sub.add_parser("show", help="a version's card")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p = sub.add_parser("alias", help="point an alias at a version (compare-and-swap)")
    p.add_argument("name")
    p.add_argument("alias")
    p.add_argument("version", type=int)
    p.add_argument("--expect", type=int, help="only if the alias currently points here")
    p = sub.add_parser("promote", help="blue-green: production -> VERSION, old production -> previous")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--reason", default="manual promotion")
    p = sub.add_parser("evaluate", help="run the model_promotion DAG (embedded): candidate vs production")
    p.add_argument("name")
    p.add_argument("candidate", help="alias or version of the candidate")
    p = sub.add_parser("optimize", help="run the model_optimization DAG (embedded): build and register variants")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--methods", default="int8", help="comma-separated: int8, prune50, distill")
    p.add_argument("--candidate", action="store_true", help="point the candidate alias at the new variant")
    p = sub.add_parser("evaluate-arm", help="worker command: one version on the golden set (what model_promotion runs)")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--run-id", required=True, help="the evaluation run's id")
    p.add_argument("--result", required=True, help="URI the JSON result is written to (create-only)")
    p = sub.add_parser("build-variant", help="worker command: build and register one variant (what model_optimization runs)")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("method", help="int8, prune50 or distill")
    p.add_argument("--result", required=True, help="URI the JSON result is written to (create-only)")
    p.add_argument("--candidate", action="store_true", help="point the candidate alias at the new variant")
    p = sub.add_parser("rollback", help="production -> previous")
    p.add_argument("name")
    p.add_argument("--reason", default="manual rollback")
    args = parser.parse_args(argv)
    r = args.registry
    if args.cmd == "register":
        lineage = {"source": str(args.src)} | ({"parent_version": args.parent} if args.parent else {})
        mv = reg.register_version(r, args.name, args.src, lineage=lineage)
        if args.alias:
            reg.set_alias(r, args.name, args.alias, mv.version, reason="registered with --alias")
        _print({"name": mv.name, "version": mv.version, "uri": mv.uri})
    elif args.cmd == "list":
        _print({"versions": reg.list_versions(r, args.name), "aliases": reg.read_aliases(r, args.name)})
    elif args.cmd == "show":
        _print(reg.read_card(reg.resolve(r, args.name, version=args.version)))
    elif args.cmd == "alias":
        expect: Any = args.expect if args.expect is not None else reg.UNCHECKED
        _print(reg.set_alias(r, args.name, args.alias, args.version, reason="genbatch model alias", expect=expect))
    elif args.cmd == "promote":
        _print(reg.promote(r, args.name, args.version, reason=args.reason))
    elif args.cmd == "evaluate":
        return _evaluate(r, args.name, args.candidate)
    elif args.cmd == "optimize":
        conf = {"model": args.name, "version": args.version, "methods": args.methods.split(","), "registry": r,
                "set_candidate_alias": args.candidate}
        return _embedded("model_optimization", conf, "optimize")
    elif args.cmd == "evaluate-arm":
        from models.model_jobs import evaluate_arm_main

        return evaluate_arm_main(r, args.name, args.version, args.run_id, args.result)
    elif args.cmd == "build-variant":
        from models.model_jobs import build_variant_main

        return build_variant_main(r, args.name, args.version, args.method, args.result, args.candidate)
    elif args.cmd == "rollback":
        _print(reg.rollback(r, args.name, reason=args.reason))
    return 0
