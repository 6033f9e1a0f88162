"""spec.json: the resolved spec of a run, written once by the prepare stage and read by every other.

It pins the model alias to a version so every shard, retry and late task uses the same model.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from genbatch import __version__
from genbatch.errors import ShardInputError
from genbatch.io import storage
from genbatch.run.layout import RunLayout
from genbatch.run.model_ref import ModelVersion
from genbatch.run.spec import RunSpec, parse_spec


@dataclass(frozen=True)
class RunState:
    """A resolved run, as spec.json holds it: spec, pinned model version(s), layout and shard count."""

    run_id: str
    spec: RunSpec
    model: ModelVersion
    layout: RunLayout
    num_shards: int
    canary_model: ModelVersion | None = None  # the candidate arm when spec.canary is enabled
    # What started the run, when a schedule or an event did: kind, logical date and interval, or the
    # arrived object / queue message (uri, version, message id). spec.json records it for audit.
    started_by: dict[str, Any] | None = None

    @property
    def params_hash(self) -> str:
        """The spec's generation-parameter hash (:meth:`RunSpec.params_hash`), with the model's chat template
        when it has one (chat rows are rendered with it, so it decides their outputs)."""
        spec_hash = self.spec.params_hash()
        template = self.model.chat_template_sha256
        if template is None:
            return spec_hash
        return hashlib.sha256(f"{spec_hash}:{template}".encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        """The spec.json document: spec, pinned model(s), shard count, params hash and code version."""
        return {
            "run_id": self.run_id,
            "spec": self.spec.to_json_dict(),
            "model": {"name": self.model.name, "version": self.model.version, "uri": self.model.uri,
                      "requested_alias": self.spec.model.alias,
                      **({"chat_template_sha256": self.model.chat_template_sha256}
                         if self.model.chat_template_sha256 else {})},
            "num_shards": self.num_shards,
            "canary_model": None if self.canary_model is None else {
                "name": self.canary_model.name, "version": self.canary_model.version, "uri": self.canary_model.uri,
                "requested_alias": self.spec.canary.alias},
            "params_hash": self.params_hash,
            "code_version": __version__,
            **({"started_by": self.started_by} if self.started_by else {}),
        }


def write_run_state(state: RunState) -> None:
    """Create-only: a retried prepare with the same resolution succeeds, a different one conflicts."""
    payload = state.to_json()
    if storage.exists(state.layout.spec):
        existing = storage.read_json(state.layout.spec)
        if {k: v for k, v in existing.items() if k != "created_at"} == payload:
            return
    storage.write_json(state.layout.spec, {**payload, "created_at": dt.datetime.now(dt.UTC).isoformat()})


RunRef = RunState | str  # a resolved run, or the URI of its run dir


def as_run_state(run: RunRef) -> RunState:
    """The resolved run: as given, or loaded from ``<run_dir>/spec.json`` (once per call site, not per step)."""
    return run if isinstance(run, RunState) else load_run_state(run)


def load_run_state(run_dir: str) -> RunState:
    """Read and parse ``spec.json`` of ``run_dir``; ShardInputError when the run was never prepared."""
    layout = RunLayout(run_dir)
    if not storage.exists(layout.spec):
        raise ShardInputError(f"{layout.spec} does not exist: {run_dir} is not a prepared run directory")
    raw = storage.read_json(layout.spec)
    spec = parse_spec(raw["spec"], source=layout.spec)
    m = raw["model"]
    c = raw.get("canary_model")
    canary = None if c is None else ModelVersion(c["name"], int(c["version"]), c["uri"])
    return RunState(run_id=raw["run_id"], spec=spec, model=ModelVersion(m["name"], int(m["version"]), m["uri"],
                                                                m.get("chat_template_sha256")),
                    layout=layout, num_shards=int(raw["num_shards"]), canary_model=canary,
                    started_by=raw.get("started_by"))
