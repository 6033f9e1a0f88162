"""Builders shared by tests: a prepared run directory without going through Airflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genbatch.run.layout import RunLayout
from genbatch.run.model_ref import ModelVersion
from genbatch.run.spec import parse_spec
from genbatch.run.state import RunState, write_run_state


def prepared_run(root: str, *, task: str = "text", num_shards: int = 1, model: ModelVersion | None = None,
                 run_id: str = "test-run", **spec_overrides: Any) -> RunState:
    spec = parse_spec({
        "task": task,
        "input": {"uri": "unused.jsonl"},
        "model": {"name": "fake", "version": 1},
        "sharding": {"num_shards": num_shards},
        "output": {"uri": root},
        **spec_overrides,
    })
    state = RunState(run_id=run_id, spec=spec, model=model or ModelVersion("fake", 1, "unused"),
                     layout=RunLayout.for_run(root, run_id), num_shards=num_shards)
    write_run_state(state)
    return state


def write_shard(state: RunState, shard: int, items: list[dict[str, Any]]) -> None:
    path = Path(state.layout.shard_input(shard, state.num_shards))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(it) + "\n" for it in items))


def shard_item(i: int, prompt: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": f"item-{i:04d}", "prompt": prompt or f"prompt {'word ' * (i % 7)}{i}", "seed": i,
            "params": {}, "row_index": i, **extra}
