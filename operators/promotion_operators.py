"""Operators of the model_promotion DAG: resolve → evaluate both arms → decide (promote or reject)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator


class ResolveVersionsOperator(BaseOperator):
    """Pin production and the candidate (alias or version) to versions, before any evaluation."""

    def execute(self, context: Any) -> dict[str, Any]:
        from genbatch.errors import SpecError
        from models.registry import read_aliases, resolve

        p = context["params"]
        registry, name, candidate = p["registry"], p["model"], str(p["candidate"])
        for events in (context.get("triggering_asset_events") or {}).values():
            for event in events:  # scheduled by a registration: evaluate exactly that version
                extra = dict(event.extra or {})
                if extra.get("version"):
                    registry, name, candidate = extra.get("registry", registry), extra.get("model", name), str(extra["version"])
        aliases = read_aliases(registry, name)
        if "production" not in aliases:
            raise SpecError(f"model {name!r} has no production alias; set one with `genbatch model alias`")
        if candidate.isdigit():
            cand = resolve(registry, name, version=int(candidate))
        else:
            cand = resolve(registry, name, alias=candidate)
        if cand.version == aliases["production"]:
            raise SpecError(f"candidate {name}@{cand.version} is already production; nothing to evaluate")
        return {"production": int(aliases["production"]), "candidate": cand.version, "registry": registry, "model": name}


class EvaluateVersionOperator(BaseOperator):
    """Run one version on the model's golden set through the batch pipeline; returns the evaluation."""

    template_fields: Sequence[str] = ("versions",)

    def __init__(self, *, arm: str, versions: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arm = arm
        self.versions = versions

    def execute(self, context: Any) -> dict[str, Any]:
        from genbatch.io import storage
        from genbatch.run.spec import sanitize_run_id
        from models.promotion import Policy
        from models.registry import model_root
        from operators.pipeline_inline import run_pipeline_inline

        registry, name = self.versions["registry"], self.versions["model"]
        policy = Policy.load(registry, name)
        version = int(self.versions[self.arm])
        spec = {
            **policy.spec,
            "input": {"uri": policy.golden_set},
            "model": {"name": name, "version": version, "registry": registry},
            "output": {"uri": storage.join(model_root(registry, name), "evaluations", "runs")},
        }
        run_id = sanitize_run_id(f"{context['run_id']}-{self.arm}-v{version}")
        result = run_pipeline_inline(spec, run_id)
        return result


class DecidePromotionOperator(BaseOperator):
    """Compare with bootstrap CIs, then blue-green promote or record an audited rejection."""

    template_fields: Sequence[str] = ("production", "candidate", "versions")

    def __init__(self, *, production: Any, candidate: Any, versions: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.production = production
        self.candidate = candidate
        self.versions = versions

    def execute(self, context: Any) -> dict[str, Any]:
        from models.promotion import Policy, compare, decide_and_act, evidence_table

        registry, name = self.versions["registry"], self.versions["model"]
        evidence = compare(self.production, self.candidate, Policy.load(registry, name))
        self.log.info("promotion evidence for %s:\n%s", name, evidence_table(evidence))
        return decide_and_act(registry, name, evidence)
