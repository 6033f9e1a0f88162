"""What ``genbatch run`` and ``genbatch check-spec`` resolve before any work, each failure one line naming the
field, the value and the fix (a :class:`SpecError`; the command prints it and exits 2).

The run would find each of these ten seconds in, as an Airflow traceback: a run id that is not a safe path
segment, a registry path that does not exist or is a file, a model or alias the registry does not hold, an
input that is not there or over its limits, a ``gs://`` URI without working credentials, chat input for a
model without a chat template. Inputs whose URI
holds a schedule placeholder (``{{ ds }}``) are checked when their run is prepared, not here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from genbatch.errors import GenbatchError, PathNotAllowedError, RunAlreadyPublished, SpecError
from genbatch.io import storage
from genbatch.run.layout import RunLayout
from genbatch.run.spec import RunSpec, sanitize_run_id
from genbatch.stages.prepare import check_input_files, check_storage_access, refuse_published, with_chat_template


def check_run_id(run_id: str) -> None:
    """A run id becomes a folder name: refuse one that would not stay one."""
    if sanitize_run_id(run_id) != run_id:
        raise SpecError(f"--run-id {run_id!r}: a run id is letters, digits, '.', '_' and '-' (at most 128, not "
                        f"starting or ending with '.' or '-'); pass e.g. --run-id {sanitize_run_id(run_id)}")


def check_confined(spec: RunSpec, allowed_paths: Sequence[str] = ()) -> None:
    """``output.uri`` and ``model.registry`` lie under the working directory, an ``--allow-path``, or (when set)
    ``$GENBATCH_ALLOWED_PREFIXES``: a spec cannot make genbatch write in ``/etc`` or ``runs/../../etc``. A
    ``gs://`` URI names its bucket on purpose and is limited only by the environment's prefixes."""
    env = storage.allowed_prefixes_from_env()
    allowed = [*env, *allowed_paths] if env else [str(Path.cwd()), *allowed_paths]
    for field, uri in (("output.uri", spec.output.uri), ("model.registry", spec.model.registry)):
        if "{{" in uri:
            continue  # filled per run; prepare confines the rendered URI
        try:
            normal = storage.confine(uri, [])  # absolute, resolved; a NUL or a gs:// '..' is refused outright
        except PathNotAllowedError as exc:
            raise SpecError(f"{field} {uri!r}: {exc}") from None
        if uri.startswith("gs://") and not env:
            continue
        try:
            storage.confine(normal, allowed)
        except PathNotAllowedError:
            raise SpecError(f"{field} {uri!r} resolves to {normal}, outside {' or '.join(allowed)}; use a path under "
                            f"it, or pass --allow-path {normal} to allow it") from None


def check_registry(spec: RunSpec, resolve_model: Callable[[RunSpec], Any]) -> None:
    """The registry is a folder that holds the model and its alias or version."""
    registry = spec.model.registry
    if not registry.startswith("gs://"):
        path = Path(registry)
        if not path.exists():
            raise SpecError(f"model.registry {registry!r} does not exist; check the path, or create a registry there "
                            f"with `genbatch registry-init --registry {registry}`")
        if not path.is_dir():
            raise SpecError(f"model.registry {registry!r} is a file; point it at the registry folder (one folder "
                            "per model)")
    try:
        model = resolve_model(spec)
    except GenbatchError as exc:  # the registry's message names model and registry; add the field to fix
        text = str(exc)
        field = "model.alias" if " alias " in text else "model.version" if "no version " in text else "model.name"
        raise SpecError(f"{field}: {text}") from None
    with_chat_template(spec, model)  # chat input (input.system_prompt) needs a model with a chat template


def check_input(spec: RunSpec) -> None:
    """The input's files exist, are readable and within the spec's limits (listed, not read)."""
    if "{{" not in spec.input.uri:
        check_input_files(spec)


def check_run_dir(spec: RunSpec, run_id: str) -> None:
    """A run dir that holds another spec (published, or started and unfinished) is refused now, in one line;
    the same spec again is left to the DAG (it resumes, or skips a published run)."""
    try:
        refuse_published(spec, RunLayout.for_run(spec.output.uri, run_id))
    except RunAlreadyPublished:
        return


def preflight(spec: RunSpec, run_id: str | None, resolve_model: Callable[[RunSpec], Any] | None,
              allowed_paths: Sequence[str] = ()) -> None:
    """Every check above, cheapest first; raises the first failure as one line (``resolve_model`` None: the
    registry is not checked)."""
    if run_id is not None:
        check_run_id(run_id)
    check_confined(spec, allowed_paths)
    check_storage_access(spec)
    if resolve_model is not None:
        check_registry(spec, resolve_model)
    check_input(spec)
    if run_id is not None and "{{" not in spec.output.uri:
        check_run_dir(spec, run_id)
