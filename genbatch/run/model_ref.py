"""A pinned model version: the stable contract between the registry, the run and the worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genbatch.errors import GenbatchError
from genbatch.io import storage

CARD = "card.json"  # a version's card: sha256 of every file, lineage, eval metrics, measured throughput


def card_uri(model_uri: str) -> str:
    """Where a model version's card lives."""
    return storage.join(model_uri, CARD)


def read_card_if_any(model_uri: str) -> dict[str, Any] | None:
    """The card of a model version, or None when it cannot be read (cost estimates then fall back).

    The registry's strict reader (``models.registry.read_card``) refuses a version without one.
    """
    try:
        card = storage.read_json(card_uri(model_uri))
    except (GenbatchError, ValueError):
        return None
    return dict(card) if isinstance(card, dict) else None


@dataclass(frozen=True)
class ModelVersion:
    """A resolved, immutable model version."""

    name: str
    version: int
    uri: str
    chat_template_sha256: str | None = None  # a text model's chat template (genbatch.run.chat_template), when known

    @property
    def ref(self) -> str:
        """``name@version``: how verdicts, summaries and logs name the version."""
        return f"{self.name}@{self.version}"
