"""Test oracles for docker/monitoring: statsd_exporter's mapping semantics, Airflow's metric names,
and the metric names a Grafana dashboard's PromQL uses.

``StatsdMapper`` re-implements what statsd_exporter (pkg/mapper) does with a mapping file: it
validates the file as the exporter does at start-up, a glob ``*`` matches exactly one
dot-separated component, the first matching glob rule in file order wins (``glob_disable_ordering``
false), regex rules are tried only when no glob rule matches, ``match_metric_type`` restricts a rule
to counters, gauges or observers (timers), ``$N``/``${N}`` in the name and labels are the captures,
and an observer is exposed as a histogram (``_bucket``/``_sum``/``_count``) or a summary.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
MAPPING = REPO / "docker" / "monitoring" / "statsd-mapping.yml"
DASHBOARD = REPO / "docker" / "monitoring" / "grafana-dashboard.json"

# statsd_exporter's own validation (pkg/mapper/mapper.go)
_STATSD_METRIC = r"[a-zA-Z_](-?[a-zA-Z0-9_])*"
_TEMPLATE = r"(\$\{?\d+\}?)"
GLOB_LINE_RE = re.compile(rf"^(\*\.|{_STATSD_METRIC}\.)+(\*|{_STATSD_METRIC})$")
NAME_RE = re.compile(rf"^([a-zA-Z_]|{_TEMPLATE})([a-zA-Z0-9_]|{_TEMPLATE})*$")
LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]+$")
STATSD_TYPES = {"c": "counter", "g": "gauge", "ms": "observer", "h": "observer", "d": "observer"}
REGISTRY_TYPES = {"counter": "counter", "gauge": "gauge", "timer": "observer"}
PREFIX = "airflow"


@dataclass
class Rule:
    index: int
    match: str
    match_type: str
    metric_type: str | None
    action: str
    name: str
    labels: dict[str, str]
    observer_type: str
    regex: re.Pattern[str] | None = None


@dataclass(frozen=True)
class Mapped:
    rule: Rule
    name: str
    labels: tuple[tuple[str, str], ...]
    metric_type: str

    def series(self) -> dict[str, set[str]]:
        """Exposition sample names -> their label names."""
        labels = {k for k, _ in self.labels}
        if self.metric_type != "observer":
            return {self.name: labels}
        if self.rule.observer_type == "histogram":
            return {f"{self.name}_bucket": labels | {"le"}, f"{self.name}_sum": labels, f"{self.name}_count": labels}
        return {self.name: labels | {"quantile"}, f"{self.name}_sum": labels, f"{self.name}_count": labels}


def _expand(template: str, captures: list[str]) -> str:
    def sub(m: re.Match[str]) -> str:
        i = int(m.group(1) or m.group(2)) - 1
        return captures[i] if 0 <= i < len(captures) else ""

    return re.sub(r"\$\{(\d+)\}|\$(\d+)", sub, template)


@dataclass
class StatsdMapper:
    rules: list[Rule] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path = MAPPING) -> StatsdMapper:
        doc = yaml.safe_load(path.read_text())
        defaults = doc.get("defaults") or {}
        if defaults.get("glob_disable_ordering"):
            raise AssertionError("this oracle implements ordered glob matching only")
        rules = []
        for i, m in enumerate(doc["mappings"]):
            for label in m.get("labels") or {}:
                assert LABEL_RE.match(label), f"invalid label key: {label}"
            assert m.get("name"), f"line {i}: metric mapping didn't set a metric name"
            assert NAME_RE.match(m["name"]), f"metric name {m['name']!r} is invalid"
            match_type = m.get("match_type") or defaults.get("match_type") or "glob"
            rule = Rule(index=i, match=m["match"], match_type=match_type, metric_type=m.get("match_metric_type"),
                        action=m.get("action", "map"), name=m["name"],
                        labels={k: str(v) for k, v in (m.get("labels") or {}).items()},
                        observer_type=m.get("observer_type") or defaults.get("observer_type") or "summary")
            assert rule.metric_type in (None, "counter", "gauge", "observer"), rule.metric_type
            assert rule.action in ("map", "drop"), rule.action
            if match_type == "glob":
                assert GLOB_LINE_RE.match(rule.match), f"invalid match: {rule.match}"
            else:
                rule.regex = re.compile(rule.match)
            rules.append(rule)
        return cls(rules)

    def lookup(self, metric: str, metric_type: str) -> tuple[Rule, list[str]] | None:
        fields = metric.split(".")
        for rule in self.rules:  # ordered glob: the first matching rule in the file wins
            if rule.match_type != "glob" or rule.metric_type not in (None, metric_type):
                continue
            pattern = rule.match.split(".")
            if len(pattern) != len(fields):
                continue
            if all(p == "*" or p == f for p, f in zip(pattern, fields, strict=True)):
                return rule, [f for p, f in zip(pattern, fields, strict=True) if p == "*"]
        for rule in self.rules:
            if rule.regex is None or rule.metric_type not in (None, metric_type):
                continue
            found = rule.regex.search(metric)
            if found:
                return rule, [g or "" for g in found.groups()]
        return None

    def map(self, metric: str, metric_type: str) -> Mapped | None:
        """The Prometheus metric for one StatsD metric; None when unmatched or dropped."""
        hit = self.lookup(metric, metric_type)
        if hit is None or hit[0].action == "drop":
            return None
        rule, captures = hit
        labels = tuple(sorted((k, _expand(v, captures)) for k, v in rule.labels.items()))
        return Mapped(rule, _expand(rule.name, captures), labels, metric_type)


# --------------------------------------------------------------------------- Airflow's metric names

# Sample values for the variables in Airflow's metric names (legacy names put them in the dotted name,
# with "." replaced by "__", as airflow/_shared/observability/metrics/stats.py does).
SAMPLE_VALUES: dict[str, list[str]] = {
    "dag_id": ["batch_generation"], "task_id": ["generate_local"], "state": ["success", "failed"],
    "pool_name": ["genbatch_devices"], "queue": ["default"], "executor_class_name": ["LocalExecutor"],
    "operator_name": ["LocalShardOperator"], "job_name": ["SchedulerJob"], "hostname": ["host-1"],
    "bundle_name": ["dags-folder"], "file_name": ["batch_generation.py"], "job_id": ["42"], "return_code": ["1"],
    "task_type": ["LocalShardOperator"], "dag_file": ["batch_generation.py"],
}


def airflow_registry() -> list[dict[str, Any]]:
    from airflow._shared.observability.metrics.metrics_registry import YAML_REGISTRY_PATH, read_metrics_yaml

    return list(read_metrics_yaml(str(YAML_REGISTRY_PATH)))


def _fill(template: str) -> list[str]:
    names = re.findall(r"\{(\w+)\}", template)
    choices = [[v.replace(".", "__") for v in SAMPLE_VALUES.get(n, ["x"])] for n in names]
    out = []
    for combo in product(*choices):
        text = template
        for n, v in zip(names, combo, strict=True):
            text = text.replace("{" + n + "}", v, 1)
        out.append(text)
    return out


def airflow_statsd_names() -> list[tuple[str, str, str]]:
    """(StatsD name with prefix, exporter metric type, registry name) of every metric Airflow's
    registry declares, under its new name and, where it has one, its legacy name (legacy_names_on)."""
    out = []
    for metric in airflow_registry():
        mtype = REGISTRY_TYPES[metric["type"]]
        templates = [metric["name"]]
        if metric.get("legacy_name", "-") != "-":
            templates.append(metric["legacy_name"])
        for template in templates:
            for name in _fill(template):
                out.append((f"{PREFIX}.{name}", mtype, metric["name"]))
    return out


def airflow_source_text() -> str:
    """Airflow's own Python source (core and task SDK), to check a name is really emitted there."""
    import airflow

    root = Path(airflow.__file__).parent
    return "\n".join(p.read_text(errors="replace") for p in sorted(root.rglob("*.py"))
                     if "providers" not in p.relative_to(root).parts and "tests" not in p.relative_to(root).parts)


def literal_in_source(registry_name: str, source: str) -> bool:
    """Airflow's source emits ``registry_name``: it appears quoted; or it is built by an f-string from
    a quoted head and a quoted tail (``f"dagrun.duration.{state}"`` with ``"success"``,
    ``f"task.{metric_name}"`` with ``"queued_duration"``); or, for a name with a variable in a
    component (``{job_name}_heartbeat_failure``), its fixed part appears."""
    parts = [p for p in re.split(r"\{\w+\}", registry_name) if p.strip("._")]
    fixed = max(parts, key=len) if parts else registry_name
    if "{" in registry_name:
        return len(fixed) >= 10 and fixed in source
    quoted = [q + fixed + q for q in ('"', "'")]
    if any(q in source for q in quoted):
        return True
    components = fixed.split(".")
    for k in range(1, len(components)):
        head, tail = ".".join(components[:k]) + ".", ".".join(components[k:])
        if any(q + head in source for q in ('"', "'")) and any(q + tail + q in source for q in ('"', "'")):
            return True
    return False


# --------------------------------------------------------------------------- PromQL

PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
                "group_right", "inf", "nan", "atan2"}
IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"


@dataclass
class Usage:
    metrics: set[str] = field(default_factory=set)
    selector_labels: list[tuple[str, str]] = field(default_factory=list)  # (metric, label) in {...}
    grouping_labels: set[str] = field(default_factory=set)  # by (...) / without (...) / on (...)


def promql_usage(expr: str) -> Usage:
    usage = Usage()
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    text = re.sub(r"\$\{[^}]*\}|\$\w+", "1", text)  # Grafana variables
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery selectors
    for clause in re.finditer(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        usage.grouping_labels.update(x.strip() for x in clause.group(2).split(",") if x.strip())
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    for sel in re.finditer(rf"({IDENT})?\s*\{{([^}}]*)\}}", text):
        metric = sel.group(1)
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", sel.group(2)):
            if metric and label != "__name__":
                usage.selector_labels.append((metric, label))
    text = re.sub(r"\{[^}]*\}", " ", text)
    for m in re.finditer(rf"(?<![\w.:]){IDENT}(?![\w:])(\s*\()?", text):
        word = m.group(0).rstrip("( \t")
        if m.group(1) or word.lower() in PROMQL_WORDS or re.fullmatch(r"\d\w*", word):
            continue
        usage.metrics.add(word)
    return usage


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard: panel targets (rows included) and query variables."""
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if var.get("type") == "query" and query:
            found = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)\s*", query)
            assert found, f"unsupported variable query {query!r}"
            exprs.append(f"count by ({found.group(2)}) ({found.group(1)})")
    return exprs


IMPLICIT_LABELS = {"job", "instance"}  # added by Prometheus (and the Pushgateway's grouping key)


def dashboard_problems(dashboard: dict[str, Any], known: dict[str, set[str]]) -> list[str]:
    """What in the dashboard is not a metric (or label) that ``known`` says is emitted."""
    problems = []
    exprs = dashboard_exprs(dashboard)
    if not exprs:
        problems.append("the dashboard has no PromQL expression")
    for expr in exprs:
        usage = promql_usage(expr)
        if not usage.metrics:
            problems.append(f"no metric name found in {expr!r}")
        for metric in sorted(usage.metrics - set(known)):
            problems.append(f"{metric!r} is not emitted (in {expr!r})")
        for metric, label in usage.selector_labels:
            if metric in known and label not in known[metric] | IMPLICIT_LABELS:
                problems.append(f"{metric!r} has no label {label!r} (in {expr!r})")
        labels_here = set().union(*(known.get(m, set()) for m in usage.metrics)) | IMPLICIT_LABELS
        for label in sorted(usage.grouping_labels - labels_here):
            problems.append(f"grouping label {label!r} is on none of {sorted(usage.metrics)} (in {expr!r})")
    return problems


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def prom_file_series(text: str) -> dict[str, set[str]]:
    """Sample names -> label names, from Prometheus exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series
