"""The few named exceptions genbatch raises; every message names the bad value and the fix."""

from __future__ import annotations


class GenbatchError(Exception):
    """Base class for every error genbatch raises on purpose."""


class SpecError(GenbatchError):
    """The run spec is invalid; the message lists every bad field."""


class ShardInputError(GenbatchError):
    """An input file or shard cannot be read as the data contract requires."""


class QualityGateFailed(GenbatchError):
    """The outputs of a run missed a quality gate threshold."""


class ModelIntegrityError(GenbatchError):
    """Model files are missing, altered, or in a refused (pickle) format."""


class StorageError(GenbatchError):
    """A storage operation failed for a reason a retry will not fix."""


class ObjectConflictError(StorageError):
    """A create-only write found a different object already at the name."""


class PathNotAllowedError(GenbatchError):
    """A user-supplied path lies outside the allowed prefixes."""


class RunAlreadyPublished(GenbatchError):
    """The run dir is published with this very spec: nothing to do (a cleared or redelivered run).

    A published run is never rewritten; callers treat this as "done", not as a failure.
    """
