"""What the registry returns: frozen dataclasses that display themselves."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from mlops_magics.registry import cards, trust
from mlops_magics.registry.secrets import read_key_file


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
    #: The notebook's id of the registering cell (JupyterLab and VS Code send it; stable across restarts).
    cell_id: str | None = None
    cell_source_sha256: str | None = None
    python_version: str | None = None
    git_commit: str | None = None
    derived_from: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the known fields only."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@lru_cache(maxsize=16384)
def _decode_files(text: str) -> tuple[ArtifactFile, ...]:
    return tuple(ArtifactFile(p, s, h) for p, s, h in json.loads(text))


@lru_cache(maxsize=16384)
def _decode_mapping(text: str | None) -> Mapping[str, Any] | None:
    return None if text is None else frozen_mapping(json.loads(text))


@dataclass(frozen=True)
class MeasuredMetric:
    """A metric measured on a version after its registration: by what, when, on what."""

    key: str
    value: float
    #: What measured it ('validation').
    source: str
    measured_at: datetime
    #: On what it was measured (rows, data digest...).
    detail: Mapping[str, Any] = field(default_factory=frozen_mapping)


@lru_cache(maxsize=16384)
def _decode_measured(text: str) -> tuple[MeasuredMetric, ...]:
    return tuple(MeasuredMetric(key, float(value), source, datetime.fromisoformat(at), frozen_mapping(detail or {}))
                 for source, key, value, at, detail in json.loads(text))


@lru_cache(maxsize=16384)
def _decode_metrics(text: str) -> Mapping[str, float]:
    return frozen_mapping({k: float(v) for k, v in json.loads(text).items()})


@lru_cache(maxsize=16384)
def _decode_lineage(text: str) -> Lineage:
    return Lineage(**json.loads(text))


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One immutable, registered version of a model.

    The registry builds these straight from its rows: the structured fields (files, tags,
    signature, input example, lineage, flavor options) are kept as the JSON stored and decoded on
    first access, so listing 10,000 versions costs little more than the query.
    """

    name: str
    version: int
    flavor: str
    framework: str | None
    framework_version: str | None
    sha256: str
    size: int
    description: str
    created_by: str
    created_text: str = field(repr=False)
    files_json: str = field(repr=False)
    tags_json: str = field(default="{}", repr=False)
    signature_json: str | None = field(default=None, repr=False)
    example_json: str | None = field(default=None, repr=False)
    lineage_json: str = field(default="{}", repr=False)
    options_json: str = field(default="{}", repr=False)
    aliases: tuple[str, ...] = ()
    store: Path | None = field(default=None, repr=False, compare=False)
    #: Where it came from: 'object' (saved from memory), 'path' (a file or folder registered as it was), or
    #: 'unknown'.
    origin: str = "unknown"
    #: The registered file or folder, as it was on the registering machine (origin 'path').
    origin_path: str | None = None
    trusted_text: str | None = field(default=None, repr=False)
    #: Who trusted it to be loaded (None: nobody; see :mod:`mlops_magics.registry.trust`).
    trusted_by: str | None = None
    metrics_json: str = field(default="{}", repr=False)
    measured_json: str = field(default="[]", repr=False)

    @property
    def created_at(self) -> datetime:
        """When the version was registered (UTC)."""
        return datetime.fromisoformat(self.created_text)

    @property
    def trusted_at(self) -> datetime | None:
        """When it was trusted to be loaded (at registration for an object; None: not trusted)."""
        return None if self.trusted_text is None else datetime.fromisoformat(self.trusted_text)

    @property
    def trusted(self) -> bool:
        """True if someone trusted it to be loaded (whether it needs that: :func:`.trust.load_risk`)."""
        return self.trusted_text is not None

    @property
    def files(self) -> tuple[ArtifactFile, ...]:
        """Every file of the artifact with its size and sha256."""
        return _decode_files(self.files_json)

    @property
    def tags(self) -> Mapping[str, str]:
        """Tags, read-only."""
        return _decode_mapping(self.tags_json) or frozen_mapping()

    @property
    def signature(self) -> Mapping[str, Any] | None:
        """Input (and output) schema inferred from the sample, if one was given."""
        return _decode_mapping(self.signature_json)

    @property
    def input_example(self) -> Mapping[str, Any] | None:
        """The first rows of the sample, if one was given (see ``signature.rebuild``)."""
        return _decode_mapping(self.example_json)

    @property
    def metrics(self) -> Mapping[str, float]:
        """The metrics given at registration: part of the version, never changed (read-only)."""
        return _decode_metrics(self.metrics_json)

    @property
    def measured_metrics(self) -> tuple[MeasuredMetric, ...]:
        """The metrics measured on it since (by ``%validate``), each with its source; by source, then name."""
        return _decode_measured(self.measured_json)

    def metric_columns(self) -> dict[str, float]:
        """Every metric as a listing shows it: registered ones by name (``accuracy``), measured ones by name and
        source (``accuracy (validation)``)."""
        return {**self.metrics, **{f"{m.key} ({m.source})": m.value for m in self.measured_metrics}}

    @property
    def lineage(self) -> Lineage:
        """Where the version came from."""
        return _decode_lineage(self.lineage_json)

    @property
    def flavor_options(self) -> Mapping[str, Any]:
        """What the flavor needs to load the artifact (file name, serializer...)."""
        return _decode_mapping(self.options_json) or frozen_mapping()

    @property
    def artifact_path(self) -> Path | None:
        """The artifact folder in the registry's store (not verified: use ``Registry.verified_artifact``)."""
        return None if self.store is None else self.store / self.sha256[:2] / self.sha256

    @property
    def ref(self) -> str:
        """``NAME:VERSION``, the reference that always names this exact version."""
        return f"{self.name}:{self.version}"

    def __repr__(self) -> str:
        aliases = f" @{', @'.join(self.aliases)}" if self.aliases else ""
        tags = f" tags={dict(self.tags)}" if self.tags else ""
        untrusted = " UNTRUSTED" if not self.trusted and trust.serve_risk(self) else ""
        return (
            f"<ModelVersion {self.ref}{aliases} flavor={self.flavor} "
            f"sha256={self.sha256[:12]} size={self.size}{tags}{untrusted}>"
        )

    def _repr_html_(self) -> str:
        return cards.model_version_html(self)


class ModelVersionList(tuple[ModelVersion, ...]):
    """A sequence of model versions that shows itself as a table."""

    def __new__(cls, items: Iterable[ModelVersion] = ()) -> ModelVersionList:
        return super().__new__(cls, items)

    def __repr__(self) -> str:
        return cards.model_versions_text(self)

    def _repr_html_(self) -> str:
        return cards.model_versions_html(self)

    def to_dataframe(self) -> Any:
        """Return a pandas DataFrame with one row per version and a numeric column per metric (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(cards.version_rows(self, every_metric=True))


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

    @property
    def swagger_url(self) -> str | None:
        """Where the service's OpenAPI document is."""
        return f"{self.url}/swagger.json" if self.url else None

    @property
    def scoring_url(self) -> str | None:
        """Where to POST data to score."""
        return f"{self.url}/score" if self.url else None

    @property
    def scoring_uri(self) -> str | None:
        """Azure's name for :attr:`scoring_url` (``Webservice.scoring_uri``)."""
        return self.scoring_url

    @property
    def swagger_uri(self) -> str | None:
        """Azure's name for :attr:`swagger_url` (``Webservice.swagger_uri``)."""
        return self.swagger_url

    @property
    def port(self) -> int | None:
        """The port the service answers on: the one it was deployed with, else its URL's (None: no address)."""
        recorded = self.config.get("port")
        if recorded is not None:
            return int(recorded)
        return urlsplit(self.url).port if self.url else None

    @property
    def auth_key(self) -> str | None:
        """The primary key to send as 'Authorization: Bearer KEY', when the service requires one (read from the
        service's 0600 key file: the database holds no key)."""
        keys = self.auth_keys
        return keys[0] if keys else None

    @property
    def auth_keys(self) -> tuple[str, ...]:
        """Every key the service accepts, primary first (empty: it requires none)."""
        path = self.config.get("key_file")
        return read_key_file(path) if path else ()

    def _repr_html_(self) -> str:
        return cards.deployment_html(self)

    def __repr__(self) -> str:
        url = f" {self.url}" if self.url else ""
        return f"<Deployment {self.name}: {self.model_name}:{self.model_version} on {self.target}, {self.state}{url}>"


@dataclass(frozen=True)
class Endpoint:
    """An endpoint, as the registry records it: one router (one address) in front of member deployments.

    ``routing`` is the JSON the registry validated and numbered (see
    :func:`mlops_magics.registry.endpoints.check_routing`): ``{"generation": int, "members": [{"name": "blue",
    "service": "iris-blue", "weight": 90, "owned": true}, ...], "shadow": {"name": "green", "percent": 100} | None,
    "sticky_header": "x-user" | None}``. ``config`` holds the router process's facts (port, pid...), opaque to the
    registry.
    """

    name: str
    #: Where the router runs: 'local' (later 'docker', 'kubernetes').
    target: str
    #: One of :attr:`STATES`.
    state: str
    url: str | None
    routing: Mapping[str, Any]
    config: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime

    #: The states an endpoint can be recorded in.
    STATES = ("creating", "running", "unhealthy", "stopped", "failed", "deleted")
    #: States in which an endpoint routes (or may route) to its members.
    LIVE_STATES = ("creating", "running", "unhealthy")

    @property
    def is_live(self) -> bool:
        """True while the endpoint's router is (or may be) routing to its members."""
        return self.state in self.LIVE_STATES

    @property
    def generation(self) -> int:
        """The number of its routing's last change (0: never routed)."""
        return int(self.routing.get("generation", 0))

    @property
    def members(self) -> tuple[str, ...]:
        """The names of its members, in routing order."""
        return tuple(str(m["name"]) for m in self.routing.get("members") or ())

    def _repr_html_(self) -> str:
        return cards.endpoint_html(self)

    def __repr__(self) -> str:
        url = f" {self.url}" if self.url else ""
        return f"<Endpoint {self.name} on {self.target}, {self.state}{url}: {cards.routing_text(self.routing)}>"


@dataclass(frozen=True)
class EndpointChange:
    """One change of an endpoint's routing: from ``at`` on, it routed as ``routing`` (numbered ``generation``)."""

    endpoint: str
    generation: int
    routing: Mapping[str, Any]
    reason: str
    at: datetime
    by: str


@dataclass(frozen=True)
class Image:
    """A Docker image built for a model version, as the registry records it."""

    tag: str
    model_name: str
    model_version: int
    context_digest: str
    image_id: str
    size: int
    base_image: str
    gpu: bool
    build_seconds: float | None
    built_at: datetime

    @property
    def model_ref(self) -> str:
        return f"{self.model_name}:{self.model_version}"

    def __repr__(self) -> str:
        took = f", built in {self.build_seconds:.1f} s" if self.build_seconds is not None else ""
        return (f"<Image {self.tag} ({self.image_id[7:19] if self.image_id.startswith('sha256:') else self.image_id}"
                f", {self.size / 1e6:.0f} MB, base {self.base_image}{' GPU' if self.gpu else ''}{took})>")

    def _repr_html_(self) -> str:
        return cards.image_html(self)


@dataclass(frozen=True)
class InferenceConfig:
    """How a model version is served: entry script, environment, extra files. Any may be unset."""

    script: str | None = None
    #: Lines above the script in the notebook cell it was saved from (None: not from a cell).
    script_line_offset: int | None = None
    environment: Mapping[str, Any] | None = None
    assets_sha256: str | None = None
    asset_files: tuple[ArtifactFile, ...] = ()
    #: Dockerfile instructions added after the base image (system packages...).
    dockerfile_steps: str | None = None
    #: When the script was saved (None: no script, or saved before the registry recorded it).
    script_saved_at: datetime | None = None
    #: The notebook and the ``In[n]`` number of the cell it was saved from, where known.
    script_notebook: str | None = None
    script_cell: int | None = None
    #: The file it was read from (``%score_script NAME --file score.py``), as given; None: from a cell or code.
    script_file: str | None = None

    def __repr__(self) -> str:
        script = f"{len(self.script.splitlines())} lines" if self.script is not None else "default"
        environment = "set" if self.environment else "none"
        assets = ", ".join(f.path for f in self.asset_files) or "none"
        return f"<InferenceConfig script: {script}; environment: {environment}; assets: {assets}>"
