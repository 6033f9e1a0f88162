"""DAG integrity, policy and structure (Astronomer / Airflow testing guide style).

Parsed in a fresh interpreter so we can prove the DAG file pulls in no heavy library.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ["torch", "transformers", "diffusers", "apache_beam", "great_expectations"]

PROBE = r"""
import json, sys, time
HEAVY = json.loads(sys.argv[2])
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags["batch_generation"]
out = {
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "heavy": [m for m in HEAVY if m in sys.modules],
    "tasks": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
    "retries": {t.task_id: t.retries for t in dag.tasks},
    "owners": sorted({t.owner for t in dag.tasks}),
    "tags": sorted(dag.tags),
    "params": sorted(dag.params.keys()),
    "param_specs": {k: dag.params.get_param(k).serialize() for k in dag.params},
    "docs": {t.task_id: t.doc_md for t in dag.tasks},
    "trigger_rules": {t.task_id: str(t.trigger_rule) for t in dag.tasks},
    "mapped": [t.task_id for t in dag.tasks if type(t).__name__ == "MappedOperator"],
    "pools": {t.task_id: t.pool for t in dag.tasks},
    "all_dags": {d.dag_id: {"owners": sorted({t.owner for t in d.tasks}), "tags": sorted(d.tags),
                            "retries_set": all(t.retries is not None for t in d.tasks)} for d in bag.dags.values()},
}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path_factory.mktemp("airflow")),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(REPO / "dags"), json.dumps(HEAVY)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_dag_files_import_without_errors_or_heavy_libraries(parsed: dict) -> None:
    assert parsed["errors"] == {}
    assert parsed["heavy"] == []


def test_policy_retries_owner_tags(parsed: dict) -> None:
    assert parsed["owners"] == ["genbatch"]
    assert "genbatch" in parsed["tags"]
    assert parsed["retries"]["generate_local"] >= 1
    assert parsed["retries"]["generate_kubernetes"] >= 1 and parsed["retries"]["publish"] >= 1


def test_structure_and_mapping(parsed: dict) -> None:
    # prepare_run hands the run dir to every task (XCom), so it is upstream of all of them.
    assert parsed["tasks"] == {
        "prepare_run": ["canary_verdict", "choose_backend", "cost_check", "generate_kubernetes", "generate_local",
                        "preprocess", "publish", "quality_gate", "validate_input"],
        "validate_input": ["preprocess"],
        "preprocess": ["cost_check", "generate_kubernetes", "generate_local"],
        "cost_check": ["choose_backend"],
        "choose_backend": ["generate_kubernetes", "generate_local"],
        "generate_local": ["quality_gate"],
        "generate_kubernetes": ["quality_gate"],
        "quality_gate": ["publish"],
        "publish": ["canary_verdict"],
        "canary_verdict": [],
    }
    assert sorted(parsed["mapped"]) == ["generate_kubernetes", "generate_local"]
    # A mapped operator never sees an __init__ default: the pool must be set in .partial(), or the
    # real scheduler runs every shard at once (found by bench/overhead.py).
    assert parsed["pools"]["generate_local"] == "genbatch_devices"
    assert parsed["trigger_rules"]["quality_gate"].lower().endswith("none_failed_min_one_success")


def test_params_are_the_runspec_sections(parsed: dict) -> None:
    from genbatch.run.spec import json_schema

    assert parsed["params"] == sorted(json_schema()["properties"])


def _form_marks_required(spec: dict) -> bool:
    """Airflow 3.3's trigger form rule (ui FlexibleForm/isParamRequired.tsx): a typed schema without "null"."""
    kind = spec["schema"].get("type")
    return bool(kind) and not (isinstance(kind, list) and "null" in kind)


def test_the_form_marks_only_the_runspec_required_fields_required(parsed: dict) -> None:
    from genbatch.run.spec import RunSpec

    required = {name for name, field in RunSpec.model_fields.items() if field.is_required()}
    assert required == {"task", "input", "model"}
    assert {k for k, spec in parsed["param_specs"].items() if _form_marks_required(spec)} == required


def test_every_param_has_a_human_description(parsed: dict) -> None:
    """The form shows a Param's description under its field; 'RunSpec.input' was a placeholder."""
    descriptions = {k: spec["description"] or "" for k, spec in parsed["param_specs"].items()}
    assert [k for k, d in descriptions.items() if len(d) < 20 or d.startswith("RunSpec.")] == []


def test_the_generate_tasks_explain_why_one_shows_as_skipped(parsed: dict) -> None:
    for task, other in (("generate_local", "generate_kubernetes"), ("generate_kubernetes", "generate_local")):
        doc = parsed["docs"][task] or ""
        assert "skipped" in doc and "choose_backend" in doc and f"The shards ran in `{other}`" in doc, task


def test_every_dag_file_parses_and_follows_the_policy(parsed: dict) -> None:
    """One DAG per DAG file, except the factory, which makes one per spec in specs/ (here: the example), and
    the file that only reports invalid specs (none here)."""
    from genbatch.schedule.spec import load_specs_folder

    specs, errors = load_specs_folder(REPO / "specs")
    assert errors == {} and specs, "the shipped example specs are valid"
    dag_files = [p.stem for p in (REPO / "dags").glob("*.py") if not p.name.startswith("_")]
    factory = {"scheduled_specs", "scheduled_specs_errors"}
    expected = sorted([f for f in dag_files if f not in factory] + [s.dag_id for s in specs])
    assert sorted(parsed["all_dags"]) == expected
    for dag_id, info in parsed["all_dags"].items():
        assert info["owners"] == ["genbatch"], dag_id
        assert "genbatch" in info["tags"], dag_id
        assert info["retries_set"], dag_id


def test_the_dag_follows_the_core_stage_sequence(parsed: dict) -> None:
    """The DAG's order comes from genbatch.stages.sequence: each stage's task reaches the next one's."""
    from genbatch.stages.sequence import STAGE_IDS

    tasks = parsed["tasks"]

    def downstream(task: str) -> set[str]:
        seen, todo = set(), [task]
        while todo:
            for t in tasks[todo.pop()]:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        return seen

    ids = {"generate": ["choose_backend", "generate_local", "generate_kubernetes"]}
    for before, after in zip(STAGE_IDS, STAGE_IDS[1:], strict=False):
        for first in ids.get(before, [before]):
            assert set(ids.get(after, [after])) <= downstream(first), (before, after)
    assert set(tasks) == {t for s in STAGE_IDS for t in ids.get(s, [s])} | {"canary_verdict"}


@pytest.mark.parametrize("section", [
    {"input": {"uri": "catalog.jsonl", "template": "colour: {{ attributes.colour }}\ndescription:"}},
    {"input": {"uri": "chat.jsonl", "system_prompt": "You write catalog copy."}},
    {"input": {"uri": "requests.jsonl", "format": "openai_batch"}, "output": {"uri": "runs", "format": "openai_batch"}},
    {"input": {"uri": "catalog.jsonl"}, "generation": {"max_new_tokens": 64, "response_schema": {
        "type": "object", "properties": {"colour": {"enum": ["red", "navy"]}, "title": {"type": "string"}}}}},
])
def test_the_trigger_form_takes_each_input_shape(parsed: dict, section: dict) -> None:
    """The form validates each Param with the schema the DAG serialised (issue 18's shapes); a misspelt
    format is refused by that same schema, before the run starts."""
    import jsonschema

    from genbatch.run.spec import parse_spec

    values = {"task": "text", "model": {"name": "catalog-chat", "alias": "production"}, **section}
    for name, value in values.items():
        jsonschema.validate(value, parsed["param_specs"][name]["schema"])
    parse_spec(values)
    for name in [n for n in ("input", "output") if "format" in values.get(n, {})]:
        with pytest.raises(jsonschema.ValidationError, match="openai'"):
            jsonschema.validate({**values[name], "format": "openai"}, parsed["param_specs"][name]["schema"])
