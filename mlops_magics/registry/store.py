"""The embedded registry: one SQLite database plus the artifact store under ``$MLOPS_HOME``.

:class:`Registry` is the one entry object. Its connection and transactions come from
:class:`~mlops_magics.registry.db.Database`; each of its other methods calls one function of
:mod:`.versions`, :mod:`.aliases`, :mod:`.operations`, :mod:`.endpoints` or :mod:`.metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from mlops_magics.registry import aliases, endpoints, metrics, operations, records, versions
from mlops_magics.registry.artifacts import StagedArtifact
from mlops_magics.registry.db import Database
from mlops_magics.registry.operations import KEEP, Keep
from mlops_magics.registry.refs import ModelRef
from mlops_magics.registry.secrets import KeyStore

__all__ = ["KEEP", "Keep", "Registry"]


class Registry(Database):
    """A model registry stored under one folder.

    Safe to share between threads (each thread gets its own SQLite connection) and between
    processes (writes take SQLite's write lock; versions are allocated inside it). Several calls make
    one transaction inside ``with registry.write():`` (nestable: see :meth:`write`).

    Args:
        home: the registry folder; default ``$MLOPS_HOME`` or ``~/.mlops``.
        lock_timeout: seconds to wait for another writer; default ``$MLOPS_LOCK_TIMEOUT`` or 30.
    """

    def __init__(self, home: Path | str | None = None, *, lock_timeout: float | None = None) -> None:
        super().__init__(home, lock_timeout=lock_timeout)
        self.keys = KeyStore(self.home)
        #: The keys clients of an endpoint send (its router's own; a member's are in ``keys``).
        self.endpoint_keys = KeyStore(self.home, "endpoint-secrets")
        self.db  # noqa: B018 - open now so that schema and lock errors surface at construction

    def __repr__(self) -> str:
        return f"<Registry {self.home}>"

    # -- versions --------------------------------------------------------------------------------

    def get(self, ref: str | ModelRef, *, as_of: datetime | None = None) -> records.ModelVersion:
        """Return the version a reference names.

        Args:
            ref: ``NAME`` (latest), ``NAME:VERSION``, ``NAME:latest`` or ``NAME@ALIAS``.
            as_of: resolve aliases and "latest" as they were at this moment.

        Raises:
            InvalidInputError: the reference is malformed.
            NotFoundError: no such model, version or alias; the message lists what exists.
        """
        return versions.get(self, ref, as_of=as_of)

    def find(
        self,
        name: str | None = None,
        tags: Mapping[str, str | None] | None = None,
        *,
        latest: bool = False,
    ) -> records.ModelVersionList:
        """Return versions, sorted by name then version.

        Args:
            name: a glob on the model name (``iris*``, ``*-v?``); case-sensitive.
            tags: every ``key: value`` must match; a ``None`` value only requires the key.
            latest: only the newest version of each model.
        """
        return versions.find(self, name, tags, latest=latest)

    def add_version(
        self,
        name: str,
        staged: StagedArtifact,
        *,
        flavor: str,
        flavor_options: Mapping[str, Any] | None = None,
        framework: str | None = None,
        framework_version: str | None = None,
        tags: Mapping[str, str] | None = None,
        description: str = "",
        signature: Mapping[str, Any] | None = None,
        input_example: Mapping[str, Any] | None = None,
        lineage: records.Lineage | None = None,
        alias: str | None = None,
        origin: str = "unknown",
        origin_path: str | None = None,
        trusted: bool = False,
        metrics: Mapping[str, float] | None = None,
    ) -> records.ModelVersion:
        """Record a staged artifact as the next version of ``name``, atomically.

        The version number is allocated inside the write transaction: concurrent writers never
        share or skip a number. Numbers are never reused, even after a delete.

        Args:
            origin: 'object' (saved from memory), 'path' (a file or folder registered as it was) or 'unknown'.
            origin_path: the registered file or folder (origin 'path').
            trusted: record that the registrant trusts it to be loaded (now, by the current user).
            metrics: metric name -> value, part of the version from now on (see :mod:`.metrics`).

        Raises:
            InvalidInputError: invalid name, tag, alias or metric.
            RegistryLockedError: the write lock could not be had in time.
        """
        return versions.add_version(
            self, name, staged, flavor=flavor, flavor_options=flavor_options, framework=framework,
            framework_version=framework_version, tags=tags, description=description, signature=signature,
            input_example=input_example, lineage=lineage, alias=alias, origin=origin, origin_path=origin_path,
            trusted=trusted, metrics=metrics)

    def set_tags(
        self, ref: str | ModelRef, set_tags: Mapping[str, str] | None = None, remove: list[str] | None = None
    ) -> records.ModelVersion:
        """Set and remove tags of one version, in one transaction.

        Raises:
            NotFoundError: a key to remove is not set; the message lists the tags.
        """
        return versions.set_tags(self, ref, set_tags, remove)

    def set_trust(self, ref: str | ModelRef, trusted: bool = True) -> records.ModelVersion:
        """Record that the current user trusts one version to be loaded (now), or withdraw that trust.

        Only the version's row changes; its artifact stays as it was registered. Idempotent: trusting a trusted
        version keeps who trusted it first, and when.

        Raises:
            InvalidInputError: the reference does not name an exact version (``NAME:VERSION``).
            NotFoundError: no such version.
        """
        return versions.set_trust(self, ref, trusted)

    def delete_version(self, ref: str | ModelRef) -> records.ModelVersion:
        """Delete one version: its row, tags and aliases (recorded), and its artifact if unshared.

        Returns:
            The version as it was before the delete.

        Raises:
            InvalidInputError: the reference does not name an exact version (``NAME:VERSION``).
            ConflictError: a live deployment uses the version; the message names it.
        """
        return versions.delete_version(self, ref)

    # -- aliases ---------------------------------------------------------------------------------

    def set_alias(self, ref: str | ModelRef, alias: str, *, require_validation: bool = False) -> records.ModelVersion:
        """Point ``alias`` at the version ``ref`` names (moving it if set); the move is recorded.

        Args:
            require_validation: gate the alias from now on: it only points at versions whose last
                validation passed (this version included).

        Raises:
            InvalidInputError / NotFoundError: bad alias or reference.
            ConflictError: the alias is gated and the version has not passed its validation.
        """
        return versions.set_alias(self, ref, alias, require_validation=require_validation)

    def remove_alias(self, name: str, alias: str) -> None:
        """Remove an alias (recorded in its history).

        Raises:
            NotFoundError: the model has no such alias.
        """
        versions.remove_alias(self, name, alias)

    def alias_history(self, name: str, alias: str | None = None) -> list[records.AliasEvent]:
        """Every move of the model's aliases (or of one alias), oldest first."""
        return aliases.alias_history(self, name, alias)

    def gated_aliases(self, name: str) -> list[str]:
        """The aliases of ``name`` that only point at validated versions."""
        return operations.gated_aliases(self, name)

    # -- inference configurations ----------------------------------------------------------------

    def set_inference(
        self,
        name: str,
        version: int = 0,
        *,
        script: str | Keep | None = KEEP,
        script_line_offset: int | None = None,
        environment: Mapping[str, Any] | Keep | None = KEEP,
        assets: StagedArtifact | Keep | None = KEEP,
        dockerfile_steps: str | Keep | None = KEEP,
        script_from: Mapping[str, Any] | None = None,
    ) -> None:
        """Store part of a model's inference configuration (``version=0``: for every version).

        Fields left as ``KEEP`` are unchanged; ``None`` clears one. A script is stored with the time it was saved and
        ``script_from`` (``{"notebook": ..., "cell": n, "file": ...}``: where it was saved from, when known).

        Raises:
            NotFoundError: the model (or that version) does not exist.
        """
        operations.set_inference(self, name, version, script=script, script_line_offset=script_line_offset,
                                  environment=environment, assets=assets, dockerfile_steps=dockerfile_steps,
                                  script_from=script_from)

    def inference(self, version: records.ModelVersion) -> records.InferenceConfig:
        """The inference configuration that applies to ``version``: its own fields over the model's."""
        return operations.inference(self, version)

    # -- deployments -----------------------------------------------------------------------------

    def record_deployment(
        self,
        name: str,
        model: str | ModelRef,
        *,
        target: str,
        state: str,
        url: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> records.Deployment:
        """Create or replace the record of a deployment of a model version.

        Raises:
            NotFoundError: the model version does not exist.
        """
        return operations.record_deployment(self, name, model, target=target, state=state, url=url, config=config)

    def claim_deployment(self, name: str, model: str | ModelRef, *, target: str, claimant: str,
                         checked: records.Deployment | None) -> records.Deployment:
        """Record that ``claimant`` is deploying ``name`` (state ``creating``): of several racing, exactly one wins.

        Args:
            claimant: who deploys (a process stamp), recorded so that a claim its dead owner left can be taken over.
            checked: the record the caller found and checked is no longer serving (None: there was none); the claim
                fails if the record changed since.

        Raises:
            ConflictError: the name is live (deployed, or being deployed by another process).
            NotFoundError: the model version does not exist.
        """
        return operations.claim_deployment(self, name, model, target=target, claimant=claimant, checked=checked)

    def release_claim(self, name: str, claimant: str, previous: records.Deployment | None) -> None:
        """Undo ``claimant``'s claim on ``name`` if no deployment was recorded over it (the deploy raised before
        its target started anything): the record goes back to ``previous`` (None: no record)."""
        operations.release_claim(self, name, claimant, previous)

    def set_deployment_state(self, name: str, state: str) -> records.Deployment:
        """Change the recorded state of a deployment.

        Raises:
            NotFoundError: no deployment has that name.
        """
        return operations.set_deployment_state(self, name, state)

    def deployments(self) -> list[records.Deployment]:
        """Every recorded deployment, by name."""
        return operations.deployments(self)

    def get_deployment(self, name: str) -> records.Deployment:
        """The deployment with this name.

        Raises:
            NotFoundError: there is none; the message lists those that exist.
        """
        return operations.get_deployment(self, name)

    # -- endpoints -------------------------------------------------------------------------------

    def record_endpoint(
        self,
        name: str,
        *,
        target: str,
        state: str,
        url: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> records.Endpoint:
        """Create or update the record of an endpoint (its router), keeping its routing.

        A new endpoint routes nowhere yet: ``{"generation": 0, "members": [], "shadow": None, "sticky_header": None}``;
        only :meth:`set_endpoint_routing` changes that.

        Args:
            target: where the router runs ('local', ...).
            state: one of :attr:`records.Endpoint.STATES <mlops_magics.registry.records.Endpoint.STATES>`.
            url: the router's address (None: not known yet).
            config: the router process's facts (port, pid...), stored as given (replacing what was there).

        Raises:
            InvalidInputError: an invalid name or state.
        """
        return endpoints.record_endpoint(self, name, target=target, state=state, url=url, config=config)

    def set_endpoint_routing(self, name: str, routing: Mapping[str, Any], *, reason: str,
                             expected_generation: int | None = None) -> records.Endpoint:
        """Give an endpoint a new routing, atomically: numbered with the next generation and recorded in its history.

        Args:
            routing: ``{"members": [{"name", "service", "weight", "owned"}, ...], "shadow": {"name", "percent"} | None,
                "sticky_header": str | None}`` (see :func:`mlops_magics.registry.endpoints.check_routing`); a
                ``generation`` in it is ignored: the registry gives the next one.
            reason: why it changes (recorded with the change: "add green", "rollback to 3"...).
            expected_generation: the generation the caller based the routing on; the change is refused if another
                process changed the routing since (None: change it whatever it is now).

        Returns:
            The endpoint, routing as given, numbered.

        Raises:
            InvalidInputError: the routing is malformed, or the reason empty; the message says what is wrong.
            NotFoundError: no endpoint has that name.
            ConflictError: the routing is no longer at ``expected_generation``.
        """
        return endpoints.set_endpoint_routing(self, name, routing, reason=reason,
                                              expected_generation=expected_generation)

    def endpoint_history(self, name: str) -> list[records.EndpointChange]:
        """Every change of the endpoint's routing, oldest first (what a rollback goes back to).

        Raises:
            NotFoundError: no endpoint has that name.
        """
        return endpoints.endpoint_history(self, name)

    def set_endpoint_state(self, name: str, state: str) -> records.Endpoint:
        """Change the recorded state of an endpoint.

        Raises:
            InvalidInputError: an invalid state.
            NotFoundError: no endpoint has that name.
        """
        return endpoints.set_endpoint_state(self, name, state)

    def endpoints(self) -> list[records.Endpoint]:
        """Every recorded endpoint, by name."""
        return endpoints.endpoints(self)

    def get_endpoint(self, name: str) -> records.Endpoint:
        """The endpoint with this name.

        Raises:
            NotFoundError: there is none; the message lists those that exist.
        """
        return endpoints.get_endpoint(self, name)

    def endpoints_routing_to(self, service: str) -> list[records.Endpoint]:
        """The live endpoints with a member whose service is ``service``, by name (a service they route to should
        not be undeployed under them)."""
        return endpoints.endpoints_routing_to(self, service)

    # -- reports ---------------------------------------------------------------------------------

    def set_report(self, version: records.ModelVersion, kind: str, body: Mapping[str, Any]) -> None:
        """Store (or replace) the report of ``kind`` (``onnx``, ``validation``, ``profile``...) for a version.

        Raises:
            NotFoundError: the version does not exist (any more).
        """
        operations.set_report(self, version, kind, body)

    def record_measured_metrics(self, version: records.ModelVersion, measured: Mapping[str, Any], *, source: str,
                                detail: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Record the metrics ``source`` measured on ``version``, replacing what it measured before, atomically.

        The metrics given at registration are never changed; these are kept beside them with their source, when
        and ``detail`` (on what: rows, data digest). Non-finite values are left out.

        Returns:
            The metrics recorded.

        Raises:
            InvalidInputError: an invalid source or metric name.
            NotFoundError: the version does not exist (any more).
        """
        return metrics.record_measured(self, version, measured, source=source, detail=detail)

    def reports(self, version: records.ModelVersion) -> dict[str, Any]:
        """The reports stored for a version, by kind."""
        return operations.reports(self, version)

    def validation_problem(self, version: records.ModelVersion) -> str | None:
        """Why ``version`` may not pass a validation gate (None: its stored validation report passed).

        The rule: :func:`mlops_magics.registry.operations.validation_problem`, applied to the version's stored
        ``validation`` report.

        Returns:
            A phrase that follows the version's name ("has never been validated", "failed its validation (...)"),
            or None.
        """
        return operations.version_validation_problem(self, version)

    # -- images ----------------------------------------------------------------------------------

    def record_image(
        self,
        tag: str,
        version: records.ModelVersion,
        *,
        context_digest: str,
        image_id: str,
        size: int,
        base_image: str,
        gpu: bool = False,
        build_seconds: float | None = None,
    ) -> records.Image:
        """Record (or refresh) the image built under ``tag`` for ``version``.

        Raises:
            NotFoundError: the model version does not exist (any more).
        """
        return operations.record_image(self, tag, version, context_digest=context_digest, image_id=image_id, size=size,
                                       base_image=base_image, gpu=gpu, build_seconds=build_seconds)

    def forget_image(self, tag: str) -> None:
        """Drop the record of an image (after it was removed from the engine). Unknown tags are ignored."""
        operations.forget_image(self, tag)

    def images(self, version: records.ModelVersion | None = None) -> list[records.Image]:
        """The images recorded for ``version`` (or for every version), newest first."""
        return operations.images(self, version)

    # -- artifacts -------------------------------------------------------------------------------

    def verified_artifact(self, version: records.ModelVersion) -> Path:
        """Return the artifact folder of ``version`` after checking every file's sha256.

        Raises:
            IntegrityError: a file is missing or changed; the message names it.
        """
        return self.artifacts.verify(version.sha256, version.files)
