"""A scheduled spec: a RunSpec file with a ``schedule`` section, and the folder of them the DAG factory reads.

The file's stem is the spec's name (the DAG is ``genbatch__<name>``). The ``schedule`` section says
what starts a run: a clock (``cron``), Airflow Assets (``assets``), new objects in a watched prefix
(``arrival``) or a message on a queue (``queue``): exactly one of them. Everything else in the file is
the RunSpec every run of it uses, with allow-listed placeholders in ``input.uri`` and ``output.uri``
(:mod:`genbatch.schedule.templating`).

Parsing stays cheap (the DAG processor reads every file on each parse): YAML, pydantic and croniter,
no network and no I/O beyond the files themselves.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from genbatch.errors import SpecError
from genbatch.run.spec import RunSpec, _describe_error, _Section, read_spec_file
from genbatch.schedule.templating import DATE_FIELDS, EVENT_FIELDS, TEMPLATED_FIELDS, check_placeholders

SPECS_DIR_ENV = "GENBATCH_SPECS_DIR"
DEFAULT_SPECS_DIR = Path(__file__).resolve().parents[2] / "specs"
DAG_PREFIX = "genbatch__"
EVENTS_SUFFIX = "__events"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SPEC_SUFFIXES = (".yaml", ".yml")


class ArrivalSpec(_Section):
    """Start one run per new input in a watched prefix (a deferrable trigger in the triggerer)."""

    prefix: str = Field(description="local folder or gs:// prefix to watch")
    pattern: str = Field("*.jsonl", description="glob (fnmatch) on the path under the prefix that counts as input")
    ready_marker: str | None = Field(
        None, description="e.g. _READY: a batch is the folder holding this marker, and starts when it appears "
        "(the run's {{ event_uri }} is the folder); without it, every new matching object is a batch",
    )
    poll_s: float = Field(30.0, ge=0.5, le=3600.0, description="seconds between two listings of the prefix")

    @field_validator("prefix")
    @classmethod
    def _no_placeholders(cls, value: str) -> str:
        check_placeholders(value, allowed=())
        return value


class QueueSpec(_Section):
    """Start a run per message on a queue (Airflow's common-messaging MessageQueueTrigger in an AssetWatcher).

    The message is JSON: ``{"input_uri": "...", "id": "..."}`` (``id`` optional: the message id the run records).
    """

    scheme: Literal["redis+pubsub", "kafka", "google+pubsub"] = Field(
        "redis+pubsub", description="the common-messaging provider's queue scheme")
    channels: list[str] = Field(min_length=1, description="channels (Redis) or topics (Kafka) to listen on")
    conn_id: str | None = Field(None, description="Airflow connection of the broker (default: the provider's)")
    options: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for the trigger")


class ScheduleSpec(_Section):
    """What starts a run: exactly one of cron, assets, arrival, queue."""

    cron: str | None = Field(None, description="cron expression or preset (@daily, @hourly, ...)")
    timezone: str = Field("UTC", description="IANA timezone the cron expression is read in")
    interval: dt.timedelta = Field(
        dt.timedelta(0), description="data interval length before each tick (e.g. P1D, PT1H; default 0: "
        "data_interval_start == data_interval_end == the tick)",
    )
    start_date: dt.datetime = Field(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), description="first tick at or after")
    end_date: dt.datetime | None = None
    catchup: bool = False
    max_active_runs: int = Field(1, ge=1, le=64)
    assets: list[str] = Field(default_factory=list, description="Airflow Asset URIs; a run when all were updated")
    arrival: ArrivalSpec | None = None
    queue: QueueSpec | None = None

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, value: str | None) -> str | None:
        if value is not None:
            from croniter import croniter

            expression = _PRESETS.get(value, value)
            if not croniter.is_valid(expression):
                raise ValueError(f"{value!r} is not a cron expression or preset ({', '.join(_PRESETS)})")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA timezone (e.g. UTC, Europe/Berlin)") from None
        return value

    @field_validator("start_date", "end_date")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        return value.replace(tzinfo=dt.UTC) if value is not None and value.tzinfo is None else value

    @model_validator(mode="after")
    def _exactly_one_trigger(self) -> ScheduleSpec:
        given = [k for k in ("cron", "assets", "arrival", "queue") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("set exactly one of schedule.cron, schedule.assets, schedule.arrival or schedule.queue"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self

    @property
    def kind(self) -> Literal["cron", "assets", "arrival", "queue"]:
        """What starts a run."""
        if self.cron:
            return "cron"
        if self.assets:
            return "assets"
        return "arrival" if self.arrival else "queue"

    @property
    def cron_expression(self) -> str:
        """The cron expression (presets expanded)."""
        return _PRESETS.get(self.cron or "", self.cron or "")

    def placeholder_fields(self) -> tuple[str, ...]:
        """The URI placeholders runs of this schedule can fill."""
        return {"cron": DATE_FIELDS, "assets": (), "arrival": EVENT_FIELDS, "queue": EVENT_FIELDS}[self.kind]


_PRESETS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
            "@monthly": "0 0 1 * *", "@quarterly": "0 0 1 */3 *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}


@dataclass(frozen=True)
class ScheduledSpec:
    """One spec file: its name, schedule and RunSpec (as the mapping each run starts from)."""

    name: str
    path: Path
    schedule: ScheduleSpec
    spec: RunSpec
    spec_data: dict[str, Any]  # the file's RunSpec part as written (placeholders unrendered)

    @property
    def dag_id(self) -> str:
        """The pipeline DAG of this spec: ``genbatch__<name>``."""
        return DAG_PREFIX + self.name

    @property
    def events_dag_id(self) -> str:
        """The DAG that turns arrivals or messages into runs of :attr:`dag_id` (event-started specs only)."""
        return self.dag_id + EVENTS_SUFFIX


def parse_scheduled_spec(data: Any, path: Path) -> ScheduledSpec:
    """Validate one scheduled spec mapping; SpecError naming the file and every bad field."""
    name = path.stem
    if not NAME_RE.match(name):
        raise SpecError(f"{path}: the file name {path.name!r} is the spec's name and DAG id (genbatch__<name>): "
                        "use lower-case letters, digits, '-' and '_' (at most 64), e.g. nightly-catalog.yaml")
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a scheduled spec must be a mapping, got {type(data).__name__}")
    if "schedule" not in data:
        raise SpecError(f"{path}: no schedule section (schedule.cron, .assets, .arrival or .queue); specs in the "
                        "specs folder are scheduled specs (trigger batch_generation for a one-off run)")
    run_data = {k: v for k, v in data.items() if k != "schedule"}
    problems: list[str] = []
    schedule: ScheduleSpec | None = None
    try:
        schedule = ScheduleSpec.model_validate(data["schedule"] if data["schedule"] is not None else {})
    except ValidationError as exc:
        problems += [_describe_error({**e, "loc": ("schedule", *e["loc"])}) for e in exc.errors()]
    spec: RunSpec | None = None
    if "run_id" in run_data:
        problems.append("  - run_id: a scheduled spec's runs are named <name>__<logical date or event>; remove run_id")
    try:
        spec = RunSpec.model_validate(run_data)
    except ValidationError as exc:
        problems += [_describe_error(e) for e in exc.errors()]
    if spec is not None and schedule is not None:
        for section, key in TEMPLATED_FIELDS:
            try:
                check_placeholders(getattr(getattr(spec, section), key), allowed=schedule.placeholder_fields())
            except ValueError as exc:
                problems.append(f"  - {section}.{key}: {exc} (schedule kind: {schedule.kind})")
    if problems:
        raise SpecError(f"{path}: {len(problems)} invalid field(s):\n" + "\n".join(problems))
    assert spec is not None and schedule is not None
    return ScheduledSpec(name=name, path=path, schedule=schedule, spec=spec, spec_data=run_data)


def load_scheduled_spec(path: str | Path) -> ScheduledSpec:
    """Read and validate one scheduled spec file."""
    return parse_scheduled_spec(read_spec_file(path), Path(path))


def specs_dir() -> Path:
    """The specs folder: $GENBATCH_SPECS_DIR, else the repository's ``specs/``."""
    return Path(os.environ.get(SPECS_DIR_ENV) or DEFAULT_SPECS_DIR)


def load_specs_folder(folder: Path | None = None) -> tuple[list[ScheduledSpec], dict[Path, str]]:
    """Every scheduled spec of the folder (not recursive, sorted by name) and, per file, why it is invalid."""
    folder = specs_dir() if folder is None else folder
    specs: list[ScheduledSpec] = []
    errors: dict[Path, str] = {}
    if not folder.is_dir():
        return specs, errors
    for path in sorted(p for p in folder.iterdir() if p.suffix in SPEC_SUFFIXES and not p.name.startswith(".")):
        try:
            specs.append(load_scheduled_spec(path))
        except SpecError as exc:
            errors[path] = str(exc)
    return specs, errors


class InvalidSpecsError(ValueError):
    """Raised at parse time by dags/scheduled_specs_errors.py: one import error listing every invalid spec."""


def raise_for_invalid_specs(folder: Path | None = None) -> None:
    """Raise InvalidSpecsError naming each invalid spec file and its bad fields; nothing when all are valid.

    Here, not in operators.scheduled, so the errors' DAG file imports no Airflow operator or provider:
    its own DAG processor child then costs the YAML and pydantic work only (bench/dag_parse.py)."""
    _, errors = load_specs_folder(folder)
    if errors:
        raise InvalidSpecsError(f"{len(errors)} invalid scheduled spec(s); their DAGs are not created, the other "
                                "specs' DAGs are:\n" + "\n".join(errors.values()))
