"""Promotion: pin the arms, compare a candidate with production on the golden set, then act on the registry.

The evaluation runs go through the same batch pipeline as any run (``models.pipeline_inline``, run by
the worker command ``genbatch model evaluate-arm``, never in the Airflow process);
this module holds the policy, the comparison, and the registry actions (promote, record a rejection,
a canary's verdict). A metric passes only when the 95% bootstrap bound on the candidate's side is
within the tolerance: a candidate must be no worse than production *with confidence*, so a mean
that looks fine on too few or too noisy items is not enough.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from genbatch.errors import SpecError
from genbatch.io import storage
from genbatch.quality.stats import bootstrap_diff, bootstrap_paired_diff, mean
from models import registry as reg

log = logging.getLogger(__name__)

POLICY = "policy.json"


@dataclass(frozen=True)
class MetricRule:
    """``column`` of quality/metrics.parquet; worse than production by more than ``tolerance`` fails."""

    column: str
    higher_is_better: bool = True
    tolerance: float = 0.0


@dataclass(frozen=True)
class Policy:
    golden_set: str
    spec: dict[str, Any]
    metrics: list[MetricRule] = field(default_factory=list)
    throughput_floor: float = 0.5  # candidate items/s ≥ floor × production items/s

    @classmethod
    def load(cls, registry: str, name: str) -> Policy:
        uri = storage.join(reg.model_root(registry, name), POLICY)
        if not storage.exists(uri):
            raise SpecError(f"model {name!r} has no promotion policy at {uri}: write one (golden_set, spec, metrics)")
        raw = storage.read_json(uri)
        return cls(golden_set=raw["golden_set"], spec=raw.get("spec", {}),
                   metrics=[MetricRule(**m) for m in raw.get("metrics", [])],
                   throughput_floor=float(raw.get("throughput_floor", 0.5)))


def _difference_ci(production: dict[str, Any], candidate: dict[str, Any], column: str,
                   a: list[float], b: list[float]) -> tuple[float, float, str]:
    """95% CI of mean(candidate) - mean(production): paired by item id where both arms scored the same
    items (the golden set), else the arms' values ``a`` and ``b`` resampled independently."""
    def scored(arm: dict[str, Any]) -> dict[Any, float]:
        ids = arm["items"].get("id")
        if ids is None:
            return {}
        return {i: float(x) for i, x in zip(ids, arm["items"][column], strict=True) if x is not None}

    by_id_a, by_id_b = scored(production), scored(candidate)
    common = [i for i in by_id_a if i in by_id_b]
    if common:
        low, high = bootstrap_paired_diff([(by_id_a[i], by_id_b[i]) for i in common])
        return low, high, f"paired bootstrap over {len(common)} items"
    low, high = bootstrap_diff(a, b)
    return low, high, "independent bootstrap"


def _values(arm: dict[str, Any], column: str) -> list[float]:
    return [float(x) for x in arm["items"][column] if x is not None]


def compare(production: dict[str, Any], candidate: dict[str, Any], policy: Policy) -> dict[str, Any]:
    """Evidence table: each gated metric side by side with the difference, its 95% CI and the verdict.

    The verdict uses the CI, not the mean: ``worst_case`` is how much worse the candidate may be at
    95% confidence (the CI's lower bound of the difference for higher-is-better metrics, the upper
    bound for lower-is-better), and the metric passes when ``worst_case <= tolerance``. An empty arm
    gives NaN, which fails.
    """
    rows = []
    for rule in policy.metrics:
        a, b = _values(production, rule.column), _values(candidate, rule.column)
        mean_a, mean_b = mean(a), mean(b)
        low, high, method = _difference_ci(production, candidate, rule.column, a, b)
        worst_case = -low if rule.higher_is_better else high
        rows.append({"metric": rule.column, "production": mean_a, "candidate": mean_b, "difference": mean_b - mean_a,
                     "ci95": [low, high], "ci_method": method, "worst_case": worst_case,
                     "tolerance": rule.tolerance, "higher_is_better": rule.higher_is_better,
                     "passed": bool(worst_case <= rule.tolerance)})
    ratio = candidate["throughput"] / production["throughput"] if production["throughput"] else float("inf")
    rows.append({"metric": "throughput_items_per_s", "production": production["throughput"],
                 "candidate": candidate["throughput"], "ratio": ratio, "floor": policy.throughput_floor,
                 "passed": bool(ratio >= policy.throughput_floor)})
    return {"rows": rows, "passed": all(r["passed"] for r in rows),
            "production_version": production["version"], "candidate_version": candidate["version"]}


def decide_and_act(registry: str, name: str, evidence: dict[str, Any]) -> dict[str, Any]:
    """Blue-green promotion when the evidence passes, else an audited rejection; production untouched."""
    prod, cand = evidence["production_version"], evidence["candidate_version"]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    storage.write_json(storage.join(reg.model_root(registry, name), "evaluations", f"{stamp}-v{cand}-vs-v{prod}.json"),
                       evidence)
    if evidence["passed"]:
        aliases = reg.promote(registry, name, cand, reason="promotion policy passed", evidence=evidence,
                              expect_production=prod)
        return {"verdict": "promoted", "aliases": aliases}
    failed = [r["metric"] for r in evidence["rows"] if not r["passed"]]
    reg.audit(registry, name, "reject", {"version": cand, "production": prod, "failed": failed, "evidence": evidence})
    return {"verdict": "rejected", "failed": failed, "aliases": reg.read_aliases(registry, name)}


def evidence_table(evidence: dict[str, Any]) -> str:
    """A plain-text table for task logs: means, the CI's worst case that decides, and the verdict."""
    lines = [f"{'metric':<28}{'production':>12}{'candidate':>12}{'worst case':>12}{'tolerance':>11}  verdict"]
    for r in evidence["rows"]:
        worst = f"{r['worst_case']:>12.4f}{r['tolerance']:>11.4f}" if "worst_case" in r else f"{'':>12}{'':>11}"
        lines.append(f"{r['metric']:<28}{r['production']:>12.4f}{r['candidate']:>12.4f}{worst}  "
                     f"{'PASS' if r['passed'] else 'FAIL'}")
    return "\n".join(lines)


def write_policy(registry: str, name: str, policy: dict[str, Any]) -> None:
    storage.write_json(storage.join(reg.model_root(registry, name), POLICY), policy, overwrite=True)


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def resolve_arms(params: dict[str, Any], asset_extras: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Pin production and the candidate (alias or version) to versions, before any evaluation.

    ``asset_extras``: the ``extra`` of the registration Asset events that scheduled the run; one that
    names a version makes that exact version the candidate.
    """
    registry, name, candidate = params["registry"], params["model"], str(params["candidate"])
    for extra in asset_extras:
        if extra.get("version"):
            registry, name, candidate = extra.get("registry", registry), extra.get("model", name), str(extra["version"])
    aliases = reg.read_aliases(registry, name)
    if "production" not in aliases:
        raise SpecError(f"model {name!r} has no production alias; set one with `genbatch model alias`")
    if candidate.isdigit():
        cand = reg.resolve(registry, name, version=int(candidate))
    else:
        cand = reg.resolve(registry, name, alias=candidate)
    if cand.version == aliases["production"]:
        raise SpecError(f"candidate {name}@{cand.version} is already production; nothing to evaluate")
    return {"production": int(aliases["production"]), "candidate": cand.version, "registry": registry, "model": name}


def evaluation_spec(registry: str, name: str, version: int) -> dict[str, Any]:
    """The run spec that evaluates ``name@version`` (one arm of a promotion) on the model's golden set.

    The policy's ``spec`` supplies everything else, its ``execution`` section included: where the
    evaluation runs (a local process or a pod) is chosen there, as for any batch run.
    """
    policy = Policy.load(registry, name)
    return {
        **policy.spec,
        "input": {"uri": policy.golden_set},
        "model": {"name": name, "version": int(version), "registry": registry},
        "output": {"uri": storage.join(reg.model_root(registry, name), "evaluations", "runs")},
    }


def decide(production: dict[str, Any], candidate: dict[str, Any], versions: dict[str, Any]) -> dict[str, Any]:
    """Compare both evaluations under the model's policy, then promote or record an audited rejection."""
    registry, name = versions["registry"], versions["model"]
    evidence = compare(production, candidate, Policy.load(registry, name))
    log.info("promotion evidence for %s:\n%s", name, evidence_table(evidence))
    return decide_and_act(registry, name, evidence)


def apply_canary_verdict(run_dir: str) -> dict[str, Any]:
    """After a canary run publishes: with canary.auto_promote a pass promotes the candidate (blue-green)
    and a fail removes the candidate alias; either way the verdict goes to the model's audit log."""
    from genbatch.quality.canary import canary_path
    from genbatch.run.state import load_run_state

    state = load_run_state(run_dir)
    if state.canary_model is None:
        return {"canary": False}
    verdict = storage.read_json(canary_path(state))
    spec = state.spec
    registry, name = spec.model.registry, state.model.name
    evidence = {"run_id": state.run_id, "canary": verdict}
    action = "recorded"
    if spec.canary.auto_promote and verdict["passed"]:
        reg.promote(registry, name, state.canary_model.version, reason=f"canary passed in run {state.run_id}",
                    evidence=evidence, expect_production=state.model.version)
        action = "promoted"
    elif spec.canary.auto_promote:
        reg.update_aliases(registry, name, {spec.canary.alias: None}, expect={spec.canary.alias: state.canary_model.version},
                           event="canary_rollback", reason=f"canary failed in run {state.run_id}", evidence=evidence)
        action = "rolled_back"
    else:
        reg.audit(registry, name, "canary_verdict", {"version": state.canary_model.version, "passed": verdict["passed"],
                                                     "evidence": evidence})
    return {"canary": True, "passed": verdict["passed"], "action": action}
