"""RunSpec: the one description of a batch run.

Every entry point (YAML file, JSON, Airflow params form, REST trigger) is turned into a
``RunSpec`` before any work starts, so a bad field fails fast with one message that lists
every problem and the allowed values.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, WithJsonSchema, model_validator

from genbatch.errors import SpecError
from genbatch.run.preprocess_spec import PreprocessSpec

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
TEMPLATE_MAX_CHARS = 16_000
"""The longest ``input.template`` or ``input.system_prompt``: a bound on what the sandbox compiles."""


class _Section(BaseModel):
    """Strict base: unknown keys are errors, so a typo never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class InputSpec(_Section):
    """Where the input rows are, their format, and the limits that stop a run before generation."""

    uri: str = Field(
        description="JSONL, CSV or Parquet input, local path or gs:// URI: one file, a glob "
        "(gs://b/new/*.jsonl, data/part-*.csv.gz; * and ? stay inside one folder, ** crosses folders) or a "
        "prefix ending in / (every file under it, except names starting with _ or .). A .gz suffix means gzip. "
        "Files are read in sorted URI order."
    )
    format: Literal["auto", "jsonl", "csv", "parquet", "openai_batch"] = Field(
        "auto", description="the format of every input file; auto: from each file's extension (under .gz); "
        "openai_batch: JSONL request lines of the OpenAI Batch API (custom_id, method, url, body with messages or "
        "prompt and sampling fields), as vLLM's run-batch also reads"
    )
    template: str | None = Field(
        None, min_length=1, max_length=TEMPLATE_MAX_CHARS,
        description="Optional. A Jinja template that makes each row's prompt from its columns, e.g. 'Write copy for "
        "{{ title }} by {{ brand }}'. Sandboxed (no Python internals, files or network; bounded in size and time). "
        "A row without a column the template names is rejected (template_field_missing)."
    )
    system_prompt: str | None = Field(
        None, min_length=1, max_length=TEMPLATE_MAX_CHARS,
        description="Optional. A system message put first in every row's chat messages; the rows become chat input, "
        "rendered with the model's own chat template (a model without one is refused)."
    )
    max_prompt_chars: int = Field(4000, ge=1, le=100_000)
    max_reject_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="Stop the run when more rows than this are rejected."
    )
    min_rows: int = Field(1, ge=1, description="fewer input rows than this stops the run")
    max_rows: int | None = Field(None, ge=1, description="more input rows than this stops the run")
    max_file_bytes: int = Field(
        2 * 1024**3, ge=1, description="an input file larger than this (as stored: compressed for .gz) is refused "
        "before any is read"
    )
    max_total_bytes: int = Field(
        1024**4, ge=1, description="inputs larger than this in all (as stored) are refused before any is read"
    )
    max_files: int = Field(10_000, ge=1, le=1_000_000, description="a glob or prefix matching more files is refused")
    row_rules: Literal["auto", "validate", "pipeline"] = Field(
        "auto", description="where the per-row rules run: 'validate' (the validate_input task reads every row, "
        "with Great Expectations Data Docs of all of them: inputs one Airflow worker can hold) or 'pipeline' (the "
        "Beam preprocess job applies the same rules while it reads the files, on its workers; validate_input checks "
        "columns and types on a sample of the first rows); 'auto' (the default): 'pipeline' when preprocess.runner "
        "is dataflow, flink or spark (the input is too big for one machine), else 'validate'"
    )

    @model_validator(mode="after")
    def _template_compiles(self) -> InputSpec:
        """A template with a syntax error stops the spec, not every row; an OpenAI Batch line has no columns."""
        if self.template is not None:
            from genbatch.run.prompt_template import compiled_template

            compiled_template(self.template)  # ValueError naming the template line
            if self.format == "openai_batch":
                raise ValueError("input.template does not apply to input.format openai_batch (its lines carry their "
                                 "prompt or messages): drop one of them")
        return self

    @model_validator(mode="before")
    @classmethod
    def _max_bytes_is_max_file_bytes(cls, data: Any) -> Any:
        """``max_bytes`` (the one-file limit before inputs could be many files) still reads as ``max_file_bytes``:
        spec files written for it, and the spec.json of runs made before, keep working (resume, compare)."""
        if isinstance(data, dict) and "max_bytes" in data:
            data = dict(data)
            legacy = data.pop("max_bytes")
            if "max_file_bytes" in data and data["max_file_bytes"] != legacy:
                raise ValueError("max_bytes is the old name of max_file_bytes: set only max_file_bytes")
            data["max_file_bytes"] = legacy
        return data


class ModelSpec(_Section):
    """The registered model to run, pinned by exactly one of alias or version, and its precision."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    alias: str | None = Field(None, pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    version: int | None = Field(None, ge=1)
    registry: str = Field(".genbatch/registry", description="Registry URI (local or gs://).")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"

    @model_validator(mode="after")
    def _alias_xor_version(self) -> ModelSpec:
        if (self.alias is None) == (self.version is None):
            raise ValueError("set exactly one of model.alias (e.g. 'production') or model.version")
        return self


class GenerationSpec(_Section):
    """Decoding (text) and diffusion (image) parameters, and the run seed that item seeds derive from."""

    max_new_tokens: int = Field(48, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0 means greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    batch_size: int | Literal["auto"] = "auto"
    seed: int = Field(0, ge=0, lt=2**63, description="Run seed; item seeds derive from it.")
    num_inference_steps: int = Field(8, ge=1, le=200)
    guidance_scale: float = Field(1.0, ge=0.0, le=50.0)
    height: int = Field(64, ge=8, le=4096, multiple_of=8)
    width: int = Field(64, ge=8, le=4096, multiple_of=8)
    response_schema: dict[str, Any] | None = Field(
        None, description="Optional, text runs. A JSON Schema (object, string, number, integer, boolean, enum, array) "
        "every output must match: enforced token by token while decoding, so each output parses and validates "
        "(quality metric schema_valid_rate)."
    )


MAX_NUM_SHARDS = 10_000


def _num_shards(value: Any) -> int | str:
    """``auto`` or an integer in 1..MAX_NUM_SHARDS (one error, at ``sharding.num_shards``)."""
    if value == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be 'auto' or an integer greater than or equal to 1")
    if not 1 <= value <= MAX_NUM_SHARDS:
        raise ValueError(f"must be 'auto' or an integer greater than or equal to 1 and at most {MAX_NUM_SHARDS}")
    return value


NumShards = Annotated[
    int | Literal["auto"],
    PlainValidator(_num_shards),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_NUM_SHARDS},
                              {"type": "string", "enum": ["auto"]}]}),
]


class ShardingSpec(_Section):
    """How many shards (one pod each) or auto, the targets auto sizing aims for, and dedupe of identical items."""

    num_shards: NumShards = Field(
        4, description="shards (one mapped task / pod each), or 'auto': derived at prepare time from the input's "
        "estimated cost, the model version's throughput, target_wall_s and gpu_quota (see docs/operations-team.md)",
    )
    target_wall_s: float = Field(3600.0, gt=0, description="auto shards: aim to finish generation in this many seconds")
    gpu_quota: int = Field(
        8, ge=1, le=100_000,
        description="auto shards: devices the run may hold at once (GPUs on kubernetes, device processes locally)",
    )
    dedupe_identical: bool = Field(
        False,
        description="generate identical items once: rows with the same normalised prompt, negative_prompt, params "
        "and seed (explicit; derived seeds differ per id) are generated as the first such row, and every other id "
        "gets a copy of its output record, with its own id, row_index and metadata, at publish time "
        "(shards/_fanout.jsonl; see docs/beam.md)",
    )


# Airflow caps one mapping at [core] max_map_length (1024 by default): shards, never items, are mapped.
MAX_MAP_LENGTH = 1024
K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class ExecutionSpec(_Section):
    """Where shards run: local subprocesses, or one Kubernetes pod per shard."""

    backend: Literal["local", "kubernetes"] = "local"
    devices: list[str] | None = Field(
        None, description="torch devices per shard process (local); default: every visible GPU, else cpu"
    )
    image: str | None = Field(None, description="worker image (required for the kubernetes backend)")
    namespace: str = Field("genbatch", pattern=K8S_NAME)
    service_account: str = Field("genbatch-worker", pattern=K8S_NAME)
    gpus_per_pod: int = Field(0, ge=0, le=16)
    gpu_quota_per_pod: int = Field(8, ge=0, le=16, description="most GPUs one pod may ask (the namespace quota)")
    gpu_type: str | None = Field(
        None, description="GKE accelerator label value, e.g. nvidia-l4 (node selector cloud.google.com/gke-accelerator)"
    )
    cpu: str = Field("4", pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    memory: str = Field("16Gi", pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)?$")
    ephemeral_storage: str = Field("20Gi", pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)?$")
    secret_env: dict[str, str] = Field(
        default_factory=dict, description="ENV_NAME -> 'secret-name/key': env from Secret refs, never literal values"
    )
    priority_class: str = Field("genbatch-batch", pattern=K8S_NAME)
    active_deadline_s: int = Field(6 * 3600, ge=60, le=7 * 24 * 3600)
    inline_max_rows: int = Field(
        50_000, ge=0, description="quality_gate and publish read every output: above this many sharded items they "
        "run as a worker command (a local process, or a pod on kubernetes) instead of inside the Airflow task"
    )

    @model_validator(mode="after")
    def _kubernetes_needs_image_and_quota(self) -> ExecutionSpec:
        if self.backend == "kubernetes":
            if not self.image:
                raise ValueError("execution.image is required for the kubernetes backend (e.g. "
                                 "europe-docker.pkg.dev/PROJECT/genbatch/worker:TAG)")
            if self.gpus_per_pod > self.gpu_quota_per_pod:
                raise ValueError(f"execution.gpus_per_pod={self.gpus_per_pod} exceeds the quota of "
                                 f"{self.gpu_quota_per_pod} GPUs per pod; lower it or raise the namespace ResourceQuota")
        for name, ref in self.secret_env.items():
            if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name) or not re.fullmatch(r"[a-z0-9.-]+/[-._a-zA-Z0-9]+", ref):
                raise ValueError(f"execution.secret_env entry {name!r}: {ref!r} must map an ENV_NAME to 'secret-name/key'")
        return self


class QualityOverride(_Section):
    """An approved exception that publishes a run despite failed gates: why, and who approved it."""

    reason: str = Field(min_length=10, description="why publishing despite failed gates is acceptable")
    approved_by: str = Field(min_length=2, pattern=r"\S", description="who approved it (name or e-mail)")


class QualitySpec(_Section):
    """The quality gates' thresholds, extra gates, and the settings of the text and image metrics."""

    min_success_rate: float = Field(0.99, ge=0.0, le=1.0, description="generated / accepted")
    max_reject_rate: float = Field(0.2, ge=0.0, le=1.0, description="rejected / input")
    min_nonempty_rate: float = Field(0.99, ge=0.0, le=1.0)
    min_attribute_mention_rate: float | None = Field(
        None, ge=0.0, le=1.0, description="text: share of outputs that mention every attribute"
    )
    max_duplicate_output_rate: float = Field(0.5, ge=0.0, le=1.0)
    max_error_rate: float = Field(
        0.05, ge=0.0, le=1.0, description="a shard fails when more of its items than this fail generation"
    )
    gates: list[str] = Field(
        default_factory=list,
        description="more gates as 'METRIC OP NUMBER', e.g. 'empty_rate <= 0.01', 'adherence >= 0.9', "
        "'pii_hits == 0' (metrics: see docs/quality.md)",
    )
    blocklist: list[str] = Field(
        default_factory=list, description="text: words or phrases that must not appear (whole words, any case)"
    )
    pii: list[Literal["email", "phone", "card"]] = Field(
        ["email", "phone", "card"], description="text: PII patterns to count"
    )
    repetition_min_repeats: int = Field(
        3, ge=2, le=100, description="text: back-to-back copies of a 1-8 word span that make a loop"
    )
    near_duplicate_max_distance: int = Field(
        4, ge=0, le=32, description="image: dHash bits (of 64) within which two images are near-duplicates"
    )
    override: QualityOverride | None = Field(
        None, description="publish although gates failed: failures become warnings, recorded in "
        "summary.json and the manifest"
    )

    @model_validator(mode="after")
    def _gates_parse(self) -> QualitySpec:
        from genbatch.run.gates import parse_gate

        for expression in self.gates:
            parse_gate(expression)  # ValueError names the bad gate and the known metrics
        return self

    def gate_expressions(self) -> list[str]:
        """Every gate of the run: the named thresholds above, then ``gates`` (duplicates dropped)."""
        named = [
            f"success_rate >= {self.min_success_rate}",
            f"reject_rate <= {self.max_reject_rate}",
            f"nonempty_rate >= {self.min_nonempty_rate}",
            f"duplicate_output_rate <= {self.max_duplicate_output_rate}",
        ]
        if self.min_attribute_mention_rate is not None:
            named.append(f"attribute_mention_rate >= {self.min_attribute_mention_rate}")
        return list(dict.fromkeys(named + list(self.gates)))


class CanarySpec(_Section):
    """A deterministic share of items (by hash of id) goes to the candidate; both arms in one run."""

    enabled: bool = False
    alias: str = Field("candidate", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    fraction: float = Field(0.1, gt=0.0, lt=1.0)
    metrics: list[str] = Field(
        default_factory=lambda: ["adherent", "nonempty"],
        description="per-item metric columns compared between arms (higher is better)",
    )
    tolerance: float = Field(0.02, ge=0.0, le=1.0, description="candidate may be this much worse per metric")
    auto_promote: bool = Field(False, description="a passing canary promotes the candidate; a failing one removes its alias")


class PriceSpec(_Section):
    """USD per hour, on-demand and spot (spot defaults to on-demand when not given)."""

    on_demand: float = Field(ge=0.0, description="USD per hour on-demand")
    spot: float | None = Field(None, ge=0.0, description="USD per hour on spot/preemptible capacity")


class PriceTableSpec(_Section):
    """Overrides merged over genbatch.plan.cost.DEFAULT_PRICES (same keys replace, new keys add)."""

    accelerators: dict[str, PriceSpec] = Field(
        default_factory=dict, description="per device (GPU, or 'cpu' for one CPU device process), e.g. nvidia-l4"
    )
    nodes: dict[str, PriceSpec] = Field(
        default_factory=dict, description="per node (host CPU/RAM, one pod per shard per node), e.g. g2-standard-8"
    )


class CostSpec(_Section):
    """Cost accounting and the cost ceiling (see docs/operations-team.md)."""

    ceiling_usd: float | None = Field(
        None, gt=0.0, description="stop the run before generation when its estimated cost exceeds this"
    )
    accelerator: str | None = Field(
        None, description="price-table accelerator; default execution.gpu_type on GPUs, else 'cpu'"
    )
    node_type: str | None = Field(None, description="price-table node type of the shard's node (host share)")
    spot: bool = Field(False, description="price at spot rates (the pods run on a spot node pool)")
    price_table: PriceTableSpec = Field(default_factory=PriceTableSpec)
    throughput_per_device_s: float | None = Field(
        None, gt=0.0, description="cost units a device processes per second, used when the model card has no "
        "measured throughput (else genbatch.plan.cost.DEFAULT_THROUGHPUT)",
    )
    shard_startup_s: float = Field(
        60.0, ge=0.0, description="estimate: seconds a shard holds its devices before generating (pull, load)"
    )


class OutputSpec(_Section):
    """Where the run writes: under <uri>/<run_id>/, and in which extra shape."""

    uri: str = Field("runs", description="Base URI; the run writes under <uri>/<run_id>/.")
    format: Literal["genbatch", "openai_batch"] = Field(
        "genbatch", description="genbatch: the run's own records only. openai_batch: also openai/output.jsonl and "
        "openai/errors.jsonl, one line per custom_id in the OpenAI Batch output and error shapes (rejects and "
        "failed items are error lines)."
    )


def _optional(section: type[BaseModel], description: str) -> Any:
    """A section with defaults: left out or null means all its defaults (so the form does not mark it required)."""
    return Field(default_factory=section, description=f"Optional. {description}")


class RunSpec(_Section):
    """The whole run. Field order is the order the Airflow form shows.

    The field descriptions are the form's help texts (and ``genbatch spec-schema``'s). A section
    with defaults may be left out or given as null: both mean "all defaults", so the form does
    not mark it required.
    """

    task: Literal["text", "image"] = Field(
        description="What the model generates from each row's prompt: 'text' (a completion) or 'image' (a PNG)."
    )
    input: InputSpec = Field(
        description="The input rows (JSONL, CSV or Parquet files, local or gs://: one file, a glob or a prefix) and "
        "the limits that stop a run before generation."
    )
    model: ModelSpec = Field(
        description="The registered model to run, pinned by exactly one of alias (e.g. 'production') or version."
    )
    generation: GenerationSpec = _optional(
        GenerationSpec, "Decoding (text) or diffusion (image) settings, and the run seed that item seeds derive from.")
    sharding: ShardingSpec = _optional(
        ShardingSpec, "How many shards (one mapped task or pod each), or 'auto' sizing, and dedupe.")
    preprocess: PreprocessSpec = _optional(
        PreprocessSpec, "Where the Beam preprocess job runs: inline (default, a local subprocess) or on "
        "Dataflow, Flink or Spark.")
    execution: ExecutionSpec = _optional(
        ExecutionSpec, "Where shards run: local processes (default) or one Kubernetes pod per shard.")
    quality: QualitySpec = _optional(
        QualitySpec, "Quality gate thresholds and extra gates; a failed gate stops the run before publish.")
    canary: CanarySpec = _optional(
        CanarySpec, "Send a share of items to a candidate model version and compare both arms.")
    cost: CostSpec = _optional(CostSpec, "Cost accounting and a ceiling that stops the run before generation.")
    output: OutputSpec = _optional(OutputSpec, "Base URI (local or gs://); the run writes under <uri>/<run_id>/.")
    run_id: str | None = Field(
        None, pattern=RUN_ID_PATTERN,
        description="Optional. The run's folder name under output.uri; default: derived from the Airflow run id.",
    )

    @model_validator(mode="before")
    @classmethod
    def _null_section_means_defaults(cls, data: Any) -> Any:
        """A null section is a left-out one: the JSON schema (and so the form) allows null for optional ones."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (v is None and k in _optional_sections())}
        return data

    @model_validator(mode="after")
    def _schema_fits_the_budget(self) -> RunSpec:
        """A response_schema outside the subset, or whose shortest JSON needs more than generation.max_new_tokens,
        stops the spec. (A run-level check, not a bound of the per-row max_new_tokens: a row that asks for fewer
        tokens than its schema needs gets an output that cannot close, which schema_valid_rate counts.)"""
        gen = self.generation
        if gen.response_schema is not None:
            from genbatch.run.response_schema import compile_schema

            shortest = compile_schema(gen.response_schema).min_chars()  # ResponseSchemaError is a ValueError
            if shortest > gen.max_new_tokens:
                raise ValueError(f"the shortest JSON generation.response_schema allows has {shortest} characters, more "
                                 f"than generation.max_new_tokens {gen.max_new_tokens} can be sure to write: raise "
                                 f"max_new_tokens to at least {shortest}")
        return self

    @model_validator(mode="after")
    def _chat_and_openai_are_text(self) -> RunSpec:
        """Chat input and the OpenAI Batch shapes are for text models."""
        if self.task != "text":
            used = [name for name, on in (("input.system_prompt", self.input.system_prompt is not None),
                                          ("generation.response_schema", self.generation.response_schema is not None),
                                          ("input.format openai_batch", self.input.format == "openai_batch"),
                                          ("output.format openai_batch", self.output.format == "openai_batch")) if on]
            if used:
                raise ValueError(f"{', '.join(used)} need task 'text' (chat and the OpenAI Batch format are text); "
                                 f"drop {'them' if len(used) > 1 else 'it'} for an image run")
        return self

    @model_validator(mode="after")
    def _row_rules_follow_the_runner(self) -> RunSpec:
        """``input.row_rules: auto`` resolved (spec.json records the choice): a distributed runner judges every
        row on its workers, never the Airflow worker."""
        if self.input.row_rules == "auto":
            self.input.row_rules = "validate" if self.preprocess.runner == "inline" else "pipeline"
        return self

    @model_validator(mode="after")
    def _shards_fit_one_mapping(self) -> RunSpec:
        if self.sharding.num_shards != "auto" and self.sharding.num_shards > MAX_MAP_LENGTH:
            raise ValueError(f"sharding.num_shards={self.sharding.num_shards} exceeds Airflow's max_map_length "
                             f"({MAX_MAP_LENGTH}); use fewer, larger shards (shards are mapped, never items)")
        if self.preprocess.runner == "dataflow":
            local = [f"{name}={uri!r}" for name, uri in (("output.uri", self.output.uri),
                                                         ("model.registry", self.model.registry))
                     if not uri.startswith("gs://")]
            if local:
                raise ValueError(f"preprocess.runner dataflow needs gs:// for {', '.join(local)}: the Dataflow workers "
                                 "read the run directory and the model's tokenizer from there")
        return self

    def to_json_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data: what spec.json records and the DAG receives as params."""
        return self.model_dump(mode="json")

    def params_hash(self) -> str:
        """Hash of what decides an item's output besides model version and seed."""
        # exclude_none: a run without response_schema hashes as runs did before the field existed
        payload = json.dumps(self.generation.model_dump(mode="json", exclude_none=True), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _describe_error(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(spec)"
    msg = err["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
    if err["type"] == "extra_forbidden":
        msg = "unknown field (check the spelling; see `genbatch spec-schema`)"
    elif err["type"] == "missing":
        msg = "required field is missing"
    expected = (err.get("ctx") or {}).get("expected")
    if expected and str(expected) not in msg:
        msg = f"{msg}; allowed: {expected}"
    got = err.get("input")
    shown = "" if err["type"] == "missing" or isinstance(got, dict) else f" (got {got!r:.80})"
    return f"  - {loc}: {msg}{shown}"


def parse_spec(data: Any, *, source: str = "spec") -> RunSpec:
    """Validate a spec mapping, raising one SpecError that lists every bad field."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a run spec must be a mapping, got {type(data).__name__}")
    try:
        return RunSpec.model_validate(data)
    except ValidationError as exc:
        lines = [_describe_error(e) for e in exc.errors()]
        raise SpecError(
            f"{source}: {len(lines)} invalid field(s):\n" + "\n".join(lines)
        ) from None


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: the DAG factory reads many


def read_spec_file(path: str | Path) -> Any:
    """A spec file's data (YAML or JSON, safe loader only); SpecError naming the file when unreadable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read spec file {path}: {exc.strerror}; check the path") from None
    try:
        return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader (CSafeLoader or SafeLoader)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML/JSON: {exc}") from None


def load_spec(path: str | Path) -> RunSpec:
    """Load a spec from a YAML or JSON file (JSON is valid YAML)."""
    return parse_spec(read_spec_file(path), source=str(path))


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            merged = {**_inline_refs(copy.deepcopy(target), defs)}
            merged.update({k: v for k, v in node.items() if k != "$ref"})
            return merged
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def _optional_sections() -> set[str]:
    """RunSpec's sections that have defaults (every object-valued field that is not required)."""
    return {name for name, f in RunSpec.model_fields.items() if not f.is_required() and name != "run_id"}


def _allow_null(prop: dict[str, Any]) -> dict[str, Any]:
    """``type: X`` becomes ``type: [X, "null"]``: Airflow's trigger form marks a Param required otherwise."""
    kind = prop.get("type")
    if isinstance(kind, str):
        return {**prop, "type": [kind, "null"]}
    return prop


def json_schema() -> dict[str, Any]:
    """The RunSpec JSON schema with every $ref inlined (Airflow Params want flat schemas).

    Optional sections also allow null (meaning their defaults, see RunSpec), so only the
    required fields read as required in the form.
    """
    schema = RunSpec.model_json_schema()
    flat = _inline_refs(schema, schema.get("$defs", {}))
    optional = _optional_sections()
    flat["properties"] = {k: _allow_null(v) if k in optional else v for k, v in flat["properties"].items()}
    return dict(flat)


def sanitize_run_id(raw: str) -> str:
    """Turn an Airflow run id (``manual__2026-01-01T00:00:00+00:00``) into a safe path segment."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.")[:128]
    return cleaned or "run"
