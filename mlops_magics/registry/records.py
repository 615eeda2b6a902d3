"""What the registry returns: frozen dataclasses that display themselves."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mlops_magics import display


def frozen_mapping(items: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """Return a read-only view of a copy of ``items``."""
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True)
class ArtifactFile:
    """One file of a model artifact, as recorded at registration."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Lineage:
    """Where a model version came from. Every field is optional: it is recorded when known."""

    notebook: str | None = None
    script: str | None = None
    cell_execution_count: int | None = None
    cell_source_sha256: str | None = None
    python_version: str | None = None
    git_commit: str | None = None
    derived_from: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the known fields only."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class ModelVersion:
    """One immutable, registered version of a model."""

    name: str
    version: int
    flavor: str
    framework: str | None
    framework_version: str | None
    sha256: str
    size: int
    files: tuple[ArtifactFile, ...]
    created_at: datetime
    created_by: str
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=frozen_mapping)
    aliases: tuple[str, ...] = ()
    signature: Mapping[str, Any] | None = None
    input_example: Mapping[str, Any] | None = None
    lineage: Lineage = field(default_factory=Lineage)
    flavor_options: Mapping[str, Any] = field(default_factory=frozen_mapping)
    artifact_path: Path | None = None

    @property
    def ref(self) -> str:
        """``NAME:VERSION``, the reference that always names this exact version."""
        return f"{self.name}:{self.version}"

    def __repr__(self) -> str:
        aliases = f" @{', @'.join(self.aliases)}" if self.aliases else ""
        tags = f" tags={dict(self.tags)}" if self.tags else ""
        return (
            f"<ModelVersion {self.ref}{aliases} flavor={self.flavor} "
            f"sha256={self.sha256[:12]} size={self.size}{tags}>"
        )

    def _repr_html_(self) -> str:
        return display.model_version_html(self)


class ModelVersionList(tuple[ModelVersion, ...]):
    """A sequence of model versions that shows itself as a table."""

    def __new__(cls, items: Iterable[ModelVersion] = ()) -> ModelVersionList:
        return super().__new__(cls, items)

    def __repr__(self) -> str:
        return display.model_versions_text(self)

    def _repr_html_(self) -> str:
        return display.model_versions_html(self)

    def to_dataframe(self) -> Any:
        """Return a pandas DataFrame with one row per version (needs pandas)."""
        import pandas as pd

        return pd.DataFrame([display.version_row(v) for v in self])


@dataclass(frozen=True)
class AliasEvent:
    """One move of an alias: it pointed at ``version`` (``None``: removed) from ``at`` on."""

    name: str
    alias: str
    version: int | None
    at: datetime
    by: str


@dataclass(frozen=True)
class Deployment:
    """A deployment of a model version, as the registry records it."""

    name: str
    model_name: str
    model_version: int
    target: str
    state: str
    url: str | None
    created_at: datetime
    updated_at: datetime
    config: Mapping[str, Any] = field(default_factory=frozen_mapping)

    #: States in which a deployment holds its model version.
    LIVE_STATES = ("creating", "running", "updating", "unhealthy")

    @property
    def is_live(self) -> bool:
        """True while the deployment is (or may be) serving its model."""
        return self.state in self.LIVE_STATES
