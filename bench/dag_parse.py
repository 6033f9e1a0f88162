"""DAG parse time of the DAGs folder with N scheduled specs, by Airflow's own DagBag timing.

``python -m bench.dag_parse [--specs 200] [--repeat 3] [--profile 0]``

Generates ``--specs`` valid spec files (75% cron over 8 expressions × 4 timezones, 12.5% arrival on a
local prefix, 10% assets, 2.5% queue; see :func:`mix`) into a temp specs folder, then, per repetition
and in alternating order, parses in a fresh child process pinned to one core:

file legs  one DAG file alone, as the DAG processor does (one child per file, the parent's ``airflow.*``
           pre-imports first): ``BundleDagBag(<file>)``, whose ``dagbag_stats`` duration is what
           ``airflow dags report`` prints, then ``_serialize_dags`` (the processor's next step, timed apart):
           ``scheduled_specs.py`` with N specs and with 0, ``scheduled_specs_errors.py`` (the invalid specs'
           import error) with N, and ``batch_generation.py``; the task leg parses ``scheduled_specs.py`` as a
           task process of one spec's DAG does (parsing context set, no pre-imports: no processor parent);
report     ``airflow dags report -o json`` over the repository's dags/ with N specs (every file in one
           process: the first file to import genbatch's operators pays for them).

Prints one JSON line (medians over repetitions, with min/max): per file the DagBag duration, serialize
time, DAG and task counts; the cost per spec (ms) and whether ``scheduled_specs.py`` with N specs parses
within the target (2 s). ``--profile K``: one more N-spec parse under cProfile, its time per phase in the
JSON (``profile_s``: import, spec loading, DAG building, bagging, serialization) and its top K functions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
FACTORY, ONE_OFF = "scheduled_specs.py", "batch_generation.py"
ERRORS = "scheduled_specs_errors.py"  # reads the same folder for invalid specs; a DAG file of its own
TARGET_S = 2.0
MARK = "DAG_PARSE_RESULT "
CRONS = ("0 2 * * *", "30 */6 * * *", "0 * * * *", "15 4 * * 1-5", "@daily", "0 0 1 * *", "45 23 * * 0", "*/30 8-18 * * *")
TIMEZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")
INTERVALS = ("P1D", "PT6H", "PT1H", "P1D", "P1D", "P31D", "P7D", "PT0S")
SHARES = (("arrival", 0.125), ("assets", 0.10), ("queue", 0.025))  # the rest are cron


def mix(n: int) -> dict[str, int]:
    """How many specs of each kind: every kind at least once from 4 specs on, the rest cron."""
    if n < 4:
        return {"cron": n, "arrival": 0, "assets": 0, "queue": 0}
    counts = {kind: max(1, round(n * share)) for kind, share in SHARES}
    return {"cron": n - sum(counts.values()), **counts}


def spec_text(kind: str, i: int, root: Path) -> str:
    """One valid scheduled spec of ``kind`` (the i-th of its kind), writing under ``root``."""
    name = f"{kind}-{i:03d}"
    body = "task: text\nmodel: {name: catalog-copy, alias: production}\nsharding: {num_shards: 2}\n"
    if kind == "cron":
        k = i % len(CRONS)
        return (f'schedule:\n  cron: "{CRONS[k]}"\n  timezone: {TIMEZONES[i // len(CRONS) % len(TIMEZONES)]}\n'
                f"  interval: {INTERVALS[k]}\n  start_date: 2026-12-01\n{body}"
                f'input: {{uri: "{root}/in/{name}/{{{{ ds }}}}.jsonl"}}\n'
                f'output: {{uri: "{root}/out/{name}/{{{{ data_interval_start | ds }}}}"}}\n')
    if kind == "arrival":
        watch = "pattern: '*.jsonl'" if i % 2 else "ready_marker: _READY"
        return (f'schedule:\n  arrival: {{prefix: "{root}/inbox/{name}", {watch}, poll_s: 60}}\n{body}'
                f'input: {{uri: "{{{{ event_uri }}}}"}}\noutput: {{uri: "{root}/out/{name}"}}\n')
    if kind == "assets":
        return (f'schedule:\n  assets: ["genbatch://genbatch__cron-{i:03d}/published"]\n{body}'
                f'input: {{uri: "{root}/in/{name}.jsonl"}}\noutput: {{uri: "{root}/out/{name}"}}\n')
    return (f"schedule:\n  queue: {{scheme: redis+pubsub, channels: [genbatch-{name}]}}\n{body}"
            f'input: {{uri: "{{{{ event_uri }}}}"}}\noutput: {{uri: "{root}/out/{name}"}}\n')


def write_specs(folder: Path, n: int, root: Path) -> dict[str, int]:
    """``n`` spec files in ``folder`` (created), checked valid with the factory's own loader; the mix."""
    from genbatch.schedule.spec import load_specs_folder

    folder.mkdir(parents=True, exist_ok=True)
    counts = mix(n)
    for kind, count in counts.items():
        for i in range(count):
            (folder / f"{kind}-{i:03d}.yaml").write_text(spec_text(kind, i, root))
    specs, errors = load_specs_folder(folder)
    if errors or len(specs) != n:
        raise RuntimeError(f"generated specs are not all valid: {errors}")
    return counts


def pin() -> dict[str, Any]:
    """One core for this process and every child (affinity is inherited), as ``taskset -c 0``."""
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[0]})
    return {"pinned": sorted(os.sched_getaffinity(0)), "available": cpus}


def child_env(home: Path, specs: Path) -> dict[str, str]:
    """The environment of a parse child: a throw-away Airflow home, the repository's dags/, the specs folder."""
    return {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "GENBATCH_SPECS_DIR": str(specs), "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                                         os.environ.get("PYTHONPATH")]))}


def _run(cmd: Sequence[str], env: dict[str, str], *, show_stderr: bool = False) -> str:
    proc = subprocess.run(list(cmd), cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=None if show_stderr else subprocess.PIPE, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {(proc.stderr or '')[-3000:]}")
    return proc.stdout


NO_PRE_IMPORT = "GENBATCH_BENCH_NO_PRE_IMPORT"
TASK_DAG = "genbatch__cron-000"  # the task leg parses as a task of this DAG would


def file_leg(path: Path, home: Path, specs: Path, *, task_of: str | None = None) -> dict[str, Any]:
    """One DAG file parsed alone in a fresh child (:func:`_parse_one`); with ``task_of``, as a task process of
    that DAG parses it (Airflow's parsing context set: the factory builds that spec's DAGs only)."""
    env = child_env(home, specs)
    if task_of:  # a task process has no DAG-processor parent: it imports the providers itself
        env["_AIRFLOW_PARSING_CONTEXT_DAG_ID"] = task_of
        env[NO_PRE_IMPORT] = "1"
    out = _run([sys.executable, "-m", "bench.dag_parse", "_file", "--file", str(path)], env)
    line = next(ln for ln in reversed(out.splitlines()) if ln.startswith(MARK))
    return dict(json.loads(line[len(MARK):]))


def report_leg(home: Path, specs: Path) -> dict[str, Any]:
    """``airflow dags report -o json`` over dags/: per file duration, DAG and task counts."""
    out = _run([sys.executable, "-m", "airflow", "dags", "report", "-o", "json"], child_env(home, specs))
    rows = json.loads(out[out.index("[{"):].strip())  # Airflow may print warnings before the JSON
    return {r["file"]: {"dagbag_s": _seconds(r["duration"]), "dags": int(r["dag_num"]), "tasks": int(r["task_num"])}
            for r in rows}


def _seconds(duration: str) -> float:
    """``0:00:01.343504`` (a timedelta as dags report prints it) in seconds."""
    hours, minutes, seconds = duration.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _parse_one(path: Path, profile: int = 0) -> dict[str, Any]:
    """In the child: what the DAG processor's child does with one file, each step timed apart."""
    import structlog
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.dag_processing.processor import _pre_import_airflow_modules, _serialize_dags

    log = structlog.get_logger("bench.dag_parse")
    if os.environ.get(NO_PRE_IMPORT) != "1":
        _pre_import_airflow_modules(str(path), log)  # done in the processor's parent before the fork
    profiler = _start_profile() if profile else None
    cpu_start = time.process_time()
    bag = BundleDagBag(dag_folder=str(path), bundle_path=DAGS, bundle_name="dags-folder", load_op_links=False)
    dagbag_cpu_s = time.process_time() - cpu_start
    start, cpu_start = time.perf_counter(), time.process_time()
    serialized, serialize_errors = _serialize_dags(bag, log)
    serialize_s, serialize_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    stat = bag.dagbag_stats[0]
    events = sum(1 for d in bag.dag_ids if d.endswith("__events"))
    result = {"file": path.name, "dagbag_s": stat.duration.total_seconds(), "serialize_s": serialize_s,
              "dagbag_cpu_s": dagbag_cpu_s, "serialize_cpu_s": serialize_cpu_s,
              "dags": stat.dag_num, "event_dags": events, "tasks": stat.task_num, "serialized": len(serialized),
              "import_errors": {**{k: str(v)[:500] for k, v in bag.import_errors.items()}, **serialize_errors}}
    if profiler is not None:
        profiler.disable()
        result["profile"] = _phases(profiler, profile)
    return result


# Where a parse of the factory spends its time: (path suffix, function) → phase, cumulative under cProfile.
PHASES = {
    "parse (BundleDagBag)": ("airflow/dag_processing/dagbag.py", "collect_dags"),
    "  import operators.scheduled (+ operators, providers)": ("operators/scheduled.py", "<module>"),
    "  load_specs_folder (YAML + pydantic)": ("genbatch/schedule/spec.py", "load_specs_folder"),
    "  build_spec_dags": ("operators/scheduled.py", "build_spec_dags"),
    "    add_batch_stages (9 operators)": ("operators/batch_stages.py", "add_batch_stages"),
    "    timetable": ("operators/scheduled.py", "_main_schedule"),
    "    DAG()": ("<attrs generated methods airflow.sdk.definitions.dag.DAG>", "__init__"),
    "  bag_dag (policies, cycle check)": ("airflow/dag_processing/dagbag.py", "bag_dag"),
    "serialize (_serialize_dags)": ("airflow/dag_processing/processor.py", "_serialize_dags"),
    "  serialize_dag": ("airflow/serialization/serialized_objects.py", "serialize_dag"),
    "  validate_schema (JSON Schema)": ("airflow/serialization/serialized_objects.py", "validate_schema"),
}


def _start_profile() -> Any:
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def _phases(profiler: Any, top: int) -> dict[str, float]:
    """Cumulative seconds (under the profiler: inflated, compare shares) per phase; the top functions to stderr."""
    import pstats

    stats = pstats.Stats(profiler, stream=sys.stderr)
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    phases = {}
    for phase, (suffix, function) in PHASES.items():
        phases[phase.strip()] = round(sum(row[3] for (file, _, name), row in table.items()
                                          if name == function and file.endswith(suffix)), 3)
    stats.sort_stats("cumulative").print_stats(top)
    return phases


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median with min and max, in seconds to the ms."""
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def summarise(n: int, counts: dict[str, int], legs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The JSON line: per leg medians, cost per spec and the target's verdict."""
    files: dict[str, Any] = {}
    for key, runs in legs.items():
        if key == "report":
            continue
        first = runs[0]
        files[key] = {"dagbag_s": spread([r["dagbag_s"] for r in runs]),
                      "serialize_s": spread([r["serialize_s"] for r in runs]),
                      "dagbag_cpu_s": spread([r["dagbag_cpu_s"] for r in runs]),
                      "serialize_cpu_s": spread([r["serialize_cpu_s"] for r in runs]),
                      "parse_and_serialize_s": spread([r["dagbag_s"] + r["serialize_s"] for r in runs]),
                      "dags": first["dags"], "event_dags": first["event_dags"], "tasks": first["tasks"],
                      "import_errors": first["import_errors"]}
    full, empty = files[f"{FACTORY}@{n}"], files[f"{FACTORY}@0"]
    report_files = sorted({f for r in legs["report"] for f in r})
    report = {f: {"dagbag_s": spread([r[f]["dagbag_s"] for r in legs["report"]]), "dags": legs["report"][0][f]["dags"],
                  "tasks": legs["report"][0][f]["tasks"]} for f in report_files}
    per_spec = (full["dagbag_s"]["median"] - empty["dagbag_s"]["median"]) / n * 1000 if n else 0.0
    per_spec_ser = full["serialize_s"]["median"] / n * 1000 if n else 0.0
    return {"bench": "dag_parse", "specs": n, "mix": counts, "repeat": len(legs["report"]), "files": files,
            "dags_report": {"total_s": round(sum(v["dagbag_s"]["median"] for v in report.values()), 3),
                            "files": report},
            "per_spec_ms": round(per_spec, 2), "per_spec_serialize_ms": round(per_spec_ser, 2),
            "target_s": TARGET_S, "pass": full["dagbag_s"]["median"] <= TARGET_S,
            "pass_with_serialize": full["parse_and_serialize_s"]["median"] <= TARGET_S}


def _range(d: dict[str, float]) -> str:
    return f"[{d['min']:.3f}, {d['max']:.3f}]"


def table(summary: dict[str, Any]) -> str:
    """The figures for a person (stderr)."""
    lines = [f"{'leg':<28} {'DagBag s':>9} {'[min, max]':>15} {'CPU s':>6} {'serialize s':>11} {'CPU s':>6} "
             f"{'DAGs':>5} {'tasks':>6}"]
    for key, f in summary["files"].items():
        d = f["dagbag_s"]
        lines.append(f"{key:<28} {d['median']:>9.3f} {_range(d):>15}"
                     f" {f['dagbag_cpu_s']['median']:>6.3f} {f['serialize_s']['median']:>11.3f}"
                     f" {f['serialize_cpu_s']['median']:>6.3f} {f['dags']:>5} {f['tasks']:>6}")
    for name, f in summary["dags_report"]["files"].items():
        d = f["dagbag_s"]
        lines.append(f"{'report: ' + name:<28} {d['median']:>9.3f} {_range(d):>15}"
                     f" {'':>6} {'':>11} {'':>6} {f['dags']:>5} {f['tasks']:>6}")
    for phase, seconds in summary.get("profile_s", {}).items():
        lines.append(f"profiled: {phase:<60} {seconds:>7.3f}")
    lines.append(f"per spec: {summary['per_spec_ms']} ms parse + {summary['per_spec_serialize_ms']} ms serialize; "
                 f"target {summary['target_s']} s: {'PASS' if summary['pass'] else 'FAIL'}")
    return "\n".join(lines)


def load() -> float:
    """The 1-minute load average (printed beside the figures: the machine is shared)."""
    return round(os.getloadavg()[0], 2)


def bench(n: int, repeat: int, profile: int) -> dict[str, Any]:
    """Generate the specs, parse every leg ``repeat`` times in alternating order, summarise."""
    cpu = pin()
    with tempfile.TemporaryDirectory(prefix="genbatch-dag-parse-") as tmp:
        work = Path(tmp)
        full, empty, home = work / f"specs-{n}", work / "specs-0", work / "airflow"
        counts = write_specs(full, n, work)
        empty.mkdir()
        _run([sys.executable, "-m", "airflow", "db", "migrate"], child_env(home, empty))  # dags report needs a DB
        legs: list[tuple[str, Any]] = [
            (f"{FACTORY}@{n}", lambda: file_leg(DAGS / FACTORY, home, full)),
            (f"{FACTORY}@0", lambda: file_leg(DAGS / FACTORY, home, empty)),
            (f"{FACTORY}@{n} task", lambda: file_leg(DAGS / FACTORY, home, full, task_of=TASK_DAG)),
            (f"{ERRORS}@{n}", lambda: file_leg(DAGS / ERRORS, home, full)),
            (ONE_OFF, lambda: file_leg(DAGS / ONE_OFF, home, empty)),
            ("report", lambda: report_leg(home, full)),
        ]
        results: dict[str, list[dict[str, Any]]] = {key: [] for key, _ in legs}
        load_before = load()
        for rep in range(repeat):
            for key, leg in legs if rep % 2 == 0 else list(reversed(legs)):
                print(f"dag_parse: repetition {rep + 1}/{repeat}: {key}", file=sys.stderr, flush=True)
                results[key].append(leg())
        summary = summarise(n, counts, results)
        if profile:  # one more parse under cProfile: where the time goes
            out = _run([sys.executable, "-m", "bench.dag_parse", "_file", "--file", str(DAGS / FACTORY),
                        "--profile", str(profile)], child_env(home, full), show_stderr=True)
            line = next(ln for ln in reversed(out.splitlines()) if ln.startswith(MARK))
            summary["profile_s"] = json.loads(line[len(MARK):])["profile"]
    from importlib.metadata import version

    return {**summary, "cpu": cpu, "load": [load_before, load()], "airflow": version("apache-airflow")}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``_file``, one parse child); one JSON line to stdout, a table to stderr."""
    parser = argparse.ArgumentParser(prog="bench.dag_parse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("leg", nargs="?", default="bench", choices=["bench", "_file"], help=argparse.SUPPRESS)
    parser.add_argument("--specs", type=int, default=200, help="scheduled specs to generate (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of every leg; medians (default 3)")
    parser.add_argument("--profile", type=int, default=0, help="print the top K functions of one N-spec parse")
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.leg == "_file":
        print(MARK + json.dumps(_parse_one(args.file, args.profile)), flush=True)
        return 0
    summary = bench(args.specs, args.repeat, args.profile)
    print(table(summary), file=sys.stderr)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
