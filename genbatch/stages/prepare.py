"""The prepare stage: check the spec, pin the model version, decide the shard count, write spec.json.

Model resolution is injected (``resolve_model``) so the core never imports the model package.
"""


from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from genbatch.errors import RunAlreadyPublished, SpecError
from genbatch.io import storage
from genbatch.io.input_files import InputFile
from genbatch.run.chat_template import chat_template_sha256
from genbatch.run.inputs import resolve_input_files, write_input_files
from genbatch.run.layout import RunLayout
from genbatch.run.model_ref import ModelVersion
from genbatch.run.spec import RunSpec, parse_spec, sanitize_run_id
from genbatch.run.state import RunState, write_run_state
from genbatch.schedule.templating import render_spec
from genbatch.stages.failure import clear_failed

log = logging.getLogger(__name__)

ResolveModel = Callable[[RunSpec], ModelVersion]


def confine_spec_paths(spec: RunSpec) -> None:
    """User-supplied URIs must lie under GENBATCH_ALLOWED_PREFIXES (when set)."""
    allowed = storage.allowed_prefixes_from_env()
    if allowed:
        for uri in (spec.input.uri, spec.output.uri, spec.model.registry):
            storage.confine(uri, allowed)


CREDENTIALS_FIX = ("set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file or run "
                   "`gcloud auth application-default login`, or use a local path")


def check_storage_access(spec: RunSpec) -> None:
    """Each ``gs://`` URI of the spec is reachable with the credentials at hand: one line naming the field and
    the fix, before any work, instead of the storage client's traceback at the first write."""
    for field, uri in (("input.uri", spec.input.uri), ("output.uri", spec.output.uri),
                       ("model.registry", spec.model.registry)):
        if not uri.startswith("gs://") or "{{" in uri:
            continue
        try:
            storage.exists(uri)
        except Exception as exc:  # noqa: BLE001 - any failure to reach the bucket is this one finding
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise SpecError(f"{field} {uri!r}: cannot reach Google Cloud Storage ({reason}); {CREDENTIALS_FIX}") from None


def check_input_files(spec: RunSpec) -> list[InputFile]:
    """List the input's files and refuse too many or too large ones (``input.max_files``, ``max_file_bytes``,
    ``max_total_bytes``, each capped by $GENBATCH_MAX_INPUT_BYTES) before any is read.

    Users set params, so the deployment's ceiling (the environment) is what makes this a control.
    """
    return resolve_input_files(spec.input)


def check_override_allowed(spec: RunSpec, triggered_by: str | None) -> None:
    """A quality override publishes despite failed gates: only users in GENBATCH_OVERRIDE_USERS may ask."""
    if spec.quality.override is None:
        return
    allowed = {u.strip() for u in os.environ.get("GENBATCH_OVERRIDE_USERS", "").split(",") if u.strip()}
    if triggered_by not in allowed:
        raise SpecError(f"quality.override was set by {triggered_by or 'an unknown user'!r}, who may not override "
                        "quality gates (GENBATCH_OVERRIDE_USERS lists who may); remove it or ask an admin")


def resolve_num_shards(spec: RunSpec, model: ModelVersion) -> tuple[int, dict[str, Any] | None]:
    """``sharding.num_shards`` as an int: as given, or decided for ``auto`` (genbatch.plan.autoscale) with its record."""
    if spec.sharding.num_shards != "auto":
        return spec.sharding.num_shards, None
    from genbatch.plan.autoscale import auto_num_shards
    from genbatch.run.model_ref import read_card_if_any

    decision = auto_num_shards(spec, read_card_if_any(model.uri))
    return int(decision["num_shards"]), decision


def _normalised(recorded: Any) -> Any:
    """A recorded spec with today's defaults filled in: a field added since it was written is not a difference."""
    try:
        return parse_spec(recorded).to_json_dict()
    except SpecError:
        return recorded


def refuse_published(spec: RunSpec, layout: RunLayout) -> None:
    """A published run is never rewritten: the same spec again is done already, another spec a conflict; an
    unfinished run resumes only with the spec it started with.

    This is what makes a cleared scheduled interval, a backfill over a published one and a redelivered
    event safe: the same run id lands here and nothing is regenerated or doubled.
    """
    if not storage.exists(layout.spec):
        return
    published = storage.exists(layout.success)
    recorded = _normalised(storage.read_json(layout.spec).get("spec"))
    if recorded == spec.to_json_dict():
        if published:
            raise RunAlreadyPublished(f"run {layout.root} is already published with this spec ({layout.success} "
                                      "exists): nothing to do")
        return  # the same run again: it resumes
    differing = sorted(k for k in spec.to_json_dict() if (recorded or {}).get(k) != spec.to_json_dict()[k])
    sections = ", ".join(differing) or "unknown"
    if published:
        raise SpecError(f"run {layout.root} is already published with a different spec (sections that differ: "
                        f"{sections}); a published run is never rewritten: use another run id (or output.uri), or "
                        "erase the run first")
    raise SpecError(f"run {layout.root} was started with a different spec (sections that differ: {sections}); an "
                    "unfinished run resumes only with its own spec: run it again with that spec (spec.json in the run "
                    "dir) to resume, or use another run id")


def with_chat_template(spec: RunSpec, model: ModelVersion) -> ModelVersion:
    """The pinned text model with its chat template's hash; a spec that makes chat input (``system_prompt``)
    for a model without a chat template is refused here, before any row is read."""
    if spec.task != "text":
        return model
    template = chat_template_sha256(model.uri)
    if template is None and spec.input.system_prompt is not None:
        raise SpecError(f"input.system_prompt makes every row chat input, but model {model.ref} has no chat template "
                        "(no chat_template.jinja, no chat_template in tokenizer_config.json); use a model version "
                        "that has one, or drop input.system_prompt and put the instruction in the prompt or template")
    return dataclasses.replace(model, chat_template_sha256=template)


def prepare(spec_data: dict[str, Any], airflow_run_id: str, *, resolve_model: ResolveModel,
            triggered_by: str | None = None, template_values: Mapping[str, Any] | None = None,
            started_by: dict[str, Any] | None = None) -> RunState:
    """Validate the spec, pin the model version and write spec.json; returns the resolved run.

    ``template_values`` fill the allow-listed placeholders of ``input.uri`` and ``output.uri``
    (genbatch.schedule.templating); ``started_by`` (the schedule or event) is recorded in spec.json.
    Raises RunAlreadyPublished when the run dir is published with this spec already.
    """
    spec = parse_spec(render_spec(spec_data, template_values or {}), source="run params")
    confine_spec_paths(spec)
    check_storage_access(spec)
    check_override_allowed(spec, triggered_by)
    run_id = spec.run_id or sanitize_run_id(airflow_run_id)
    layout = RunLayout.for_run(spec.output.uri, run_id)
    refuse_published(spec, layout)
    input_files = check_input_files(spec)
    clear_failed(layout.root)  # a new attempt of the run: it is running again, not failed
    model = with_chat_template(spec, resolve_model(spec))
    canary = None
    if spec.canary.enabled:
        arm_spec = spec.model_copy(update={"model": spec.model.model_copy(update={"alias": spec.canary.alias,
                                                                                   "version": None})})
        canary = resolve_model(arm_spec)
        if canary.version == model.version:
            raise SpecError(f"canary alias {spec.canary.alias!r} points at {model.ref}, the same version as the "
                            "production arm: nothing to compare; point the alias at the candidate version")
    num_shards, auto = resolve_num_shards(spec, model)
    state = RunState(run_id=run_id, spec=spec, model=model, layout=layout, num_shards=num_shards,
                     canary_model=canary, started_by=started_by)
    write_input_files(layout, spec.input.uri, input_files)
    write_run_state(state)
    if auto is not None:  # how `num_shards: auto` was decided (a retry decides the same and overwrites)
        storage.write_json(layout.auto_shards, auto, overwrite=True)
    log.info("run %s: prepared at %s with model %s", run_id, layout.root, model.ref)
    return state


def prepare_run(spec_data: dict[str, Any], airflow_run_id: str, *, resolve_model: ResolveModel,
                triggered_by: str | None = None, template_values: Mapping[str, Any] | None = None,
                started_by: dict[str, Any] | None = None) -> str:
    """:func:`prepare`, returning the run dir URI (what the prepare task hands the other tasks)."""
    return prepare(spec_data, airflow_run_id, resolve_model=resolve_model, triggered_by=triggered_by,
                   template_values=template_values, started_by=started_by).layout.root
