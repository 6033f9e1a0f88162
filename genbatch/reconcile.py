"""reconcile(run_dir): the figures that prove nothing was lost and nothing doubled.

Counts must satisfy ``input = accepted + rejected`` and ``accepted = generated + errored``;
every input row index appears exactly once across accepted items and rejects, and every
accepted id exactly once across outputs and errors.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from genbatch import storage
from genbatch.layout import RunLayout
from genbatch.records import error_files, iter_jsonl, iter_many, output_files, reject_files
from genbatch.run_state import load_run_state


@dataclass
class Reconciliation:
    input: int
    accepted: int
    rejected: int
    generated: int
    errored: int
    items_lost: int
    items_duplicated: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def reconcile(run_dir: str) -> Reconciliation:
    state = load_run_state(run_dir)
    layout: RunLayout = state.layout
    report = storage.read_json(layout.validation_report)
    n_input = int(report["rows"]["input"])

    reject_rows = Counter(int(r["index"]) for r in iter_many(reject_files(layout)))
    accepted_rows: Counter[int] = Counter()
    accepted_ids: Counter[str] = Counter()
    for shard in range(state.num_shards):
        for item in iter_jsonl(layout.shard_input(shard, state.num_shards)):
            accepted_rows[int(item["row_index"])] += 1
            accepted_ids[item["id"]] += 1
    done_ids = Counter(r["id"] for r in iter_many(output_files(layout, state.num_shards)))
    err_ids = Counter(r["id"] for r in iter_many(error_files(layout, state.num_shards)))
    finished = done_ids + err_ids

    problems: list[str] = []
    all_rows = reject_rows + accepted_rows
    missing_rows = [i for i in range(n_input) if all_rows[i] == 0]
    doubled_rows = [i for i, c in all_rows.items() if c > 1 or not 0 <= i < n_input]
    lost_ids = [i for i in accepted_ids if finished[i] == 0]
    doubled_ids = [i for i, c in finished.items() if c > 1 or i not in accepted_ids]
    if missing_rows:
        problems.append(f"{len(missing_rows)} input rows in no place (first: {missing_rows[:5]})")
    if doubled_rows:
        problems.append(f"{len(doubled_rows)} input rows in more than one place (first: {doubled_rows[:5]})")
    if lost_ids:
        problems.append(f"{len(lost_ids)} accepted ids with no output or error (first: {lost_ids[:5]})")
    if doubled_ids:
        problems.append(f"{len(doubled_ids)} ids output more than once or never accepted (first: {doubled_ids[:5]})")
    return Reconciliation(
        input=n_input,
        accepted=sum(accepted_rows.values()),
        rejected=sum(reject_rows.values()),
        generated=sum(done_ids.values()),
        errored=sum(err_ids.values()),
        items_lost=len(missing_rows) + len(lost_ids),
        items_duplicated=len(doubled_rows) + sum(c - 1 for c in finished.values() if c > 1),
        problems=problems,
    )
