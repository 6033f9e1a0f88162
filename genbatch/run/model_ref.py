"""A pinned model version: the stable contract between the registry, the run and the worker."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelVersion:
    """A resolved, immutable model version."""

    name: str
    version: int
    uri: str

    @property
    def ref(self) -> str:
        """``name@version``: how verdicts, summaries and logs name the version."""
        return f"{self.name}@{self.version}"
