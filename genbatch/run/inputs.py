"""The input files of a run, listed once by prepare and pinned in ``validation/input_files.json``.

Every stage that reads the input (validate, the Beam preprocess, auto shard sizing) reads this list
instead of matching ``input.uri`` again, so a file that lands under a glob mid-run is not half-read by
some stages and missed by others, and a row's ``row_index`` means the same thing everywhere: the
rows of the files in this order, numbered from 0.
"""

from __future__ import annotations

import os
from typing import Any

from genbatch.io import storage
from genbatch.io.input_files import InputFile, InputLimits, list_input_files
from genbatch.run.layout import RunLayout
from genbatch.run.spec import InputSpec

ENV_MAX_INPUT_BYTES = "GENBATCH_MAX_INPUT_BYTES"  # the deployment's ceiling, which a param cannot raise
SCHEMA_VERSION = 1


def input_limits(spec_input: InputSpec) -> InputLimits:
    """The spec's ``input`` limits, capped by ``GENBATCH_MAX_INPUT_BYTES`` when the deployment sets it."""
    ceiling = os.environ.get(ENV_MAX_INPUT_BYTES)
    return InputLimits(max_files=spec_input.max_files, max_file_bytes=spec_input.max_file_bytes,
                       max_total_bytes=spec_input.max_total_bytes, ceiling_bytes=int(ceiling) if ceiling else None)


def resolve_input_files(spec_input: InputSpec) -> list[InputFile]:
    """List ``input.uri``'s files (sorted, within the limits, confined to the allowed prefixes)."""
    # OpenAI Batch request files are JSONL; their lines are shaped later (genbatch.run.row_shape).
    fmt = {"auto": None, "openai_batch": "jsonl"}.get(spec_input.format, spec_input.format)
    return list_input_files(spec_input.uri, fmt, input_limits(spec_input),
                            allowed=storage.allowed_prefixes_from_env())


def write_input_files(layout: RunLayout, uri: str, files: list[InputFile]) -> None:
    """Pin the list in the run (overwrite: a retried prepare lists again and starts the run over)."""
    doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "input": uri, "files": [f.to_json() for f in files],
                           "total_bytes": sum(f.bytes for f in files)}
    storage.write_json(layout.input_files, doc, overwrite=True)


def read_input_files(layout: RunLayout, spec_input: InputSpec) -> list[InputFile]:
    """The pinned list; for a run dir prepared without one (an older genbatch, a hand-made test run), the files
    ``input.uri`` names now."""
    if not storage.exists(layout.input_files):
        return resolve_input_files(spec_input)
    return [InputFile.from_json(f) for f in storage.read_json(layout.input_files)["files"]]
