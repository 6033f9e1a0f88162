"""The batch pipeline's stage sequence, written once: the DAG, the inline runner and the overhead bench follow it.

A stage runs in the calling process (``core``), or hands the run to the Beam pipeline (``beam``) or
each shard to the worker command (``worker``). The core never imports Beam or the worker: whoever
runs the sequence in one process passes those two hand-offs in (:class:`Handoffs`), and the stages
hand each other the resolved run instead of re-reading ``spec.json``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from genbatch.run.model_ref import ModelVersion
    from genbatch.run.spec import RunSpec
    from genbatch.run.state import RunState


@dataclass(frozen=True)
class Stage:
    """One step of a batch run; ``task_id`` is its task in the batch_generation DAG."""

    task_id: str
    runs_in: Literal["core", "beam", "worker"]
    evaluation: bool  # also part of an evaluation run (model promotion), which neither prices nor publishes
    doc: str


STAGES: tuple[Stage, ...] = (
    Stage("prepare_run", "core", True, "validate the spec, pin the model version, write spec.json"),
    Stage("validate_input", "core", True, "Great Expectations input suite; bad rows to rejects/"),
    Stage("preprocess", "beam", True, "normalise, dedupe, estimate cost, cut balanced shards"),
    Stage("cost_check", "core", False, "stop a run whose estimated cost is over its ceiling"),
    Stage("generate", "worker", True, "one worker per shard"),
    Stage("quality_gate", "core", True, "metrics and gates (an evaluation run keeps the metrics only)"),
    Stage("publish", "core", False, "manifest.json then _SUCCESS"),
)
STAGE_IDS: tuple[str, ...] = tuple(s.task_id for s in STAGES)


@dataclass(frozen=True)
class Handoffs:
    """The two stages whose work runs outside the core, as the caller runs them."""

    preprocess: Callable[[RunState], list[int]]  # the Beam pipeline on the run; returns its shard numbers
    generate: Callable[[RunState, int], dict[str, Any]]  # the worker on one shard; returns its shard manifest


@dataclass
class SequenceRun:
    """What running the sequence left: the resolved run, its shards and each stage's return value."""

    state: RunState | None = None
    shards: list[int] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def resolved(self) -> RunState:
        """The resolved run; RuntimeError before prepare_run ran."""
        if self.state is None:
            raise RuntimeError("the run is not prepared: prepare_run must come first")
        return self.state


Timer = Callable[[str], contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def _untimed(_: str) -> Iterator[None]:
    yield


def run_sequence(spec_data: dict[str, Any], run_id: str, *, resolve_model: Callable[[RunSpec], ModelVersion],
                 handoffs: Handoffs, evaluation: bool = False, timer: Timer = _untimed) -> SequenceRun:
    """Run every stage in order in this process (``evaluation``: only the evaluation stages, and quality
    without failing on its gates); ``timer(task_id)`` wraps each stage, ``generate[K]`` each shard.
    Each stage's module is imported inside its timer, as a task process would pay for it."""
    done = SequenceRun()
    for stage in STAGES:
        if evaluation and not stage.evaluation:
            continue
        if stage.runs_in == "worker":  # one hand-off per shard, each timed on its own
            state = done.resolved
            manifests = []
            for shard in done.shards:
                with timer(f"{stage.task_id}[{shard}]"):
                    manifests.append(handoffs.generate(state, shard))
            done.results[stage.task_id] = manifests
            continue
        with timer(stage.task_id):
            if stage.task_id == "prepare_run":
                from genbatch.stages.prepare import prepare

                done.state = prepare(spec_data, run_id, resolve_model=resolve_model)
                result: Any = done.state.layout.root
            elif stage.task_id == "validate_input":
                from genbatch.stages.validate import validate_input

                result = validate_input(done.resolved)
            elif stage.runs_in == "beam":
                result = done.shards = handoffs.preprocess(done.resolved)
            elif stage.task_id == "cost_check":
                from genbatch.stages.cost_check import check_cost_ceiling

                result = check_cost_ceiling(done.resolved)
            elif stage.task_id == "quality_gate":
                from genbatch.stages.quality import evaluate, quality_gate

                result = evaluate(done.resolved) if evaluation else quality_gate(done.resolved)
            elif stage.task_id == "publish":
                from genbatch.stages.publish import publish

                result = publish(done.resolved)
            else:  # a stage added to STAGES without a step here
                raise NotImplementedError(f"stage {stage.task_id!r} has no in-process step")
        done.results[stage.task_id] = result
    return done

