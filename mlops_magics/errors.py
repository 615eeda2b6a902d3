"""The one error hierarchy of mlops-magics.

Every error a user can cause or meet is an :class:`MlopsError`. Each adapter translates it once:
the magics into a plain ``UsageError``, the command line into a message and exit status 2.
Messages say what failed, why, and what to do, quoting the offending value.
"""

from __future__ import annotations


class MlopsError(Exception):
    """Base class of every error mlops-magics raises on purpose."""


class InvalidInputError(MlopsError, ValueError):
    """An argument is malformed: a name, a tag, a reference, an option value."""


class NotFoundError(MlopsError, LookupError):
    """A model, version, alias, variable or deployment does not exist."""


class ConflictError(MlopsError):
    """The request contradicts the registry's state (e.g. deleting a deployed version)."""


class SerializationError(MlopsError):
    """An object cannot be saved as a model artifact."""


class IntegrityError(MlopsError):
    """A stored artifact does not match the sha256 recorded when it was registered."""


class RegistryLockedError(MlopsError):
    """Another process held the registry's write lock for longer than the lock timeout."""


class SchemaVersionError(MlopsError):
    """The registry was written by a newer mlops-magics than the one running."""


class RegistryDamagedError(MlopsError):
    """The registry database is missing, empty or corrupted; the message says how to restore it."""


class StorageError(MlopsError):
    """The disk refused a write (full, read-only, immutable, I/O error); nothing was half-written."""


class DeployError(MlopsError):
    """A deployment did not become healthy; the message has the reason and the log tail."""


class EngineError(MlopsError):
    """The Docker engine is unreachable, or refused what was asked; the message says what to do."""


class BuildError(MlopsError):
    """An image build failed; the message names the failing step and quotes its output."""

    def __init__(self, message: str, *, step: str = "", output: str = "", log: str | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.output = output
        self.log = log


class ConversionError(MlopsError):
    """A model cannot be converted (to ONNX); the message names the step or type and the converters there are."""


class UntrustedModelError(ConflictError):
    """A version whose loading can run code (a pickle) is not trusted; the message says how to trust it."""
