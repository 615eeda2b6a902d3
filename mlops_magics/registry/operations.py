"""What the registry records about operating model versions: inference configurations, deployments, reports
(and the validation gate they feed), and images.

Every function takes the registry's :class:`~mlops_magics.registry.db.Database` first; the public API is
:class:`~mlops_magics.registry.store.Registry`, whose methods call these.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlops_magics.errors import ConflictError, NotFoundError
from mlops_magics.registry.artifacts import StagedArtifact
from mlops_magics.registry.db import Database, stamp, utcnow
from mlops_magics.registry.records import ArtifactFile, Deployment, Image, InferenceConfig, ModelVersion, frozen_mapping
from mlops_magics.registry.refs import ModelRef, check_name, close_names, listing, parse_ref, resolve

if TYPE_CHECKING:
    import sqlite_utils


class Keep:
    """The type of :data:`KEEP`."""


#: Leave a field as it is (``Registry.set_inference``).
KEEP = Keep()


# -- inference configurations ----------------------------------------------------------------


def set_inference(database: Database, name: str, version: int, *, script: str | Keep | None,
                  script_line_offset: int | None, environment: Mapping[str, Any] | Keep | None,
                  assets: StagedArtifact | Keep | None, dockerfile_steps: str | Keep | None,
                  script_from: Mapping[str, Any] | None = None) -> None:
    """Store part of a model's inference configuration (see :meth:`Registry.set_inference`)."""
    with database.write() as db:
        resolve(db, ModelRef(check_name(name), version=version or None))
        row = db.execute("SELECT script, script_line_offset, script_origin, environment, assets, dockerfile_steps "
                         "FROM inference_configs WHERE name = ? AND version = ?",
                         [name, version]).fetchone() or (None,) * 6
        values = list(row)
        now = stamp(utcnow())
        if not isinstance(script, Keep):
            origin = None if script is None else json.dumps({"saved_at": now, **(script_from or {})}, sort_keys=True)
            values[0:3] = [script, script_line_offset, origin]
        if not isinstance(environment, Keep):
            values[3] = None if environment is None else json.dumps(dict(environment), sort_keys=True)
        if not isinstance(assets, Keep):
            if assets is not None and not database.artifacts.path(assets.digest).exists():
                transaction = database.transaction()
                transaction.on_rollback(lambda: database.artifacts.unpublish(assets.digest))
                database.artifacts.publish(assets, transaction.journal())
            values[4] = None if assets is None else json.dumps(
                {"sha256": assets.digest, "files": [[f.path, f.size, f.sha256] for f in assets.files]})
        if not isinstance(dockerfile_steps, Keep):
            values[5] = dockerfile_steps or None
        db.execute(
            "INSERT INTO inference_configs (name, version, script, script_line_offset, script_origin, environment, "
            "assets, dockerfile_steps, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name, version) "
            "DO UPDATE SET script = excluded.script, script_line_offset = excluded.script_line_offset, "
            "script_origin = excluded.script_origin, environment = excluded.environment, assets = excluded.assets, "
            "dockerfile_steps = excluded.dockerfile_steps, updated_at = excluded.updated_at",
            [name, version, *values, now],
        )


def inference(database: Database, version: ModelVersion) -> InferenceConfig:
    """The inference configuration that applies to ``version``: its own fields over the model's."""
    with database.read() as db:
        rows = {r[0]: r[1:] for r in db.execute(
            "SELECT version, script, script_line_offset, script_origin, environment, assets, dockerfile_steps "
            "FROM inference_configs WHERE name = ? AND version IN (0, ?)", [version.name, version.version])}
    merged: list[Any] = [None] * 6
    for source in (rows.get(0), rows.get(version.version)):
        if source is not None:
            if source[0] is not None:  # a script, its line offset and its origin go together
                merged[0:3] = source[0:3]
            merged[3:] = [new if new is not None else old for old, new in zip(merged[3:], source[3:], strict=True)]
    script, offset, origin, environment, assets, steps = merged
    saved = json.loads(origin) if origin is not None else {}
    return InferenceConfig(
        script=script,
        script_line_offset=offset,
        environment=None if environment is None else frozen_mapping(json.loads(environment)),
        assets_sha256=None if assets is None else json.loads(assets)["sha256"],
        asset_files=() if assets is None else tuple(ArtifactFile(*f) for f in json.loads(assets)["files"]),
        dockerfile_steps=steps,
        script_saved_at=datetime.fromisoformat(saved["saved_at"]) if "saved_at" in saved else None,
        script_notebook=saved.get("notebook"),
        script_cell=saved.get("cell"),
        script_file=saved.get("file"),
    )


# -- deployments -----------------------------------------------------------------------------


def deployments_where(db: sqlite_utils.Database, where: str = "1", params: list[Any] | None = None) -> list[Deployment]:
    """The recorded deployments that match an SQL condition on the ``deployments`` table, by name."""
    return [
        Deployment(
            name=r["name"],
            model_name=r["model_name"],
            model_version=r["model_version"],
            target=r["target"],
            state=r["state"],
            url=r["url"],
            created_at=datetime.fromisoformat(r["created_at"]),
            updated_at=datetime.fromisoformat(r["updated_at"]),
            config=frozen_mapping(json.loads(r["config"])),
        )
        for r in db.query(f"SELECT * FROM deployments WHERE {where} ORDER BY name", params or [])
    ]


def _upsert_deployment(db: sqlite_utils.Database, name: str, model: ModelRef, target: str, state: str,
                       url: str | None, config: Mapping[str, Any]) -> Deployment:
    version = resolve(db, model)
    now = stamp(utcnow())
    db.execute(
        "INSERT INTO deployments (name, model_name, model_version, target, state, url, config, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
        "model_name = excluded.model_name, model_version = excluded.model_version, "
        "target = excluded.target, state = excluded.state, url = excluded.url, "
        "config = excluded.config, updated_at = excluded.updated_at",
        [name, model.name, version, target, state, url, json.dumps(dict(config)), now, now],
    )
    return deployments_where(db, "name = ?", [name])[0]


def record_deployment(database: Database, name: str, model: str | ModelRef, *, target: str, state: str,
                      url: str | None, config: Mapping[str, Any] | None) -> Deployment:
    """Create or replace the record of a deployment (see :meth:`Registry.record_deployment`)."""
    check_name(name)
    parsed = parse_ref(model) if isinstance(model, str) else model
    with database.write() as db:
        return _upsert_deployment(db, name, parsed, target, state, url, config or {})


def claim_deployment(database: Database, name: str, model: str | ModelRef, *, target: str, claimant: str,
                     checked: Deployment | None) -> Deployment:
    """Record that ``claimant`` is deploying ``name`` (see :meth:`Registry.claim_deployment`)."""
    check_name(name)
    parsed = parse_ref(model) if isinstance(model, str) else model
    with database.write() as db:
        found = deployments_where(db, "name = ?", [name])
        current = found[0] if found else None
        unchanged = checked is not None and current is not None and (current.state, current.updated_at) == (
            checked.state, checked.updated_at)
        if current is not None and current.is_live and not unchanged:
            doing = "is being deployed" if current.state == "creating" else "is already deployed"
            raise ConflictError(
                f"Service {name!r} {doing} ({current.model_name}:{current.model_version} on {current.target}, "
                f"{current.state}) by another process. Use %update {name} --model REF once it is up, or pick "
                "another --name.")
        return _upsert_deployment(db, name, parsed, target, "creating", None, {"claimant": claimant})


def release_claim(database: Database, name: str, claimant: str, previous: Deployment | None) -> None:
    """Undo ``claimant``'s claim on ``name`` (see :meth:`Registry.release_claim`)."""
    with database.write() as db:
        mine = "name = ? AND state = 'creating' AND json_extract(config, '$.claimant') = ?"
        if previous is None:
            db.execute(f"DELETE FROM deployments WHERE {mine}", [name, claimant])
            return
        p = previous
        db.execute(
            "UPDATE deployments SET model_name = ?, model_version = ?, target = ?, state = ?, url = ?, config = ?, "
            f"created_at = ?, updated_at = ? WHERE {mine}",
            [p.model_name, p.model_version, p.target, p.state, p.url, json.dumps(dict(p.config)),
             stamp(p.created_at), stamp(p.updated_at), name, claimant])


def set_deployment_state(database: Database, name: str, state: str) -> Deployment:
    """Change the recorded state of a deployment (see :meth:`Registry.set_deployment_state`)."""
    with database.write() as db:
        changed = db.execute(
            "UPDATE deployments SET state = ?, updated_at = ? WHERE name = ?", [state, stamp(utcnow()), name]
        ).rowcount
        if not changed:
            raise no_deployment(db, name)
        return deployments_where(db, "name = ?", [name])[0]


def no_deployment(db: sqlite_utils.Database, name: str) -> NotFoundError:
    """The error for a service name no deployment has: close names (live ones first), the live deployments with
    their recorded states, then the undeployed ones, and how to deploy one."""
    found = deployments_where(db)
    live = [d.name for d in found if d.state != "deleted"]
    gone = [d.name for d in found if d.state == "deleted"]
    close = close_names(name, live)
    hint = (f" Did you mean {' or '.join(map(repr, close))}?" if close else
            "".join(f" Did you mean {c!r} (undeployed)?" for c in close_names(name, gone, n=1)))
    states = listing([f"{d.name!r} ({d.state})" for d in found if d.state != "deleted"], quote=False)
    listed = f" Deployments: {states or ('none running' if gone else 'none')}."
    if gone:
        listed += f" Undeployed: {listing(gone)}."
    return NotFoundError(f"No deployment named {name!r}.{hint}{listed} Deploy one with %deploy MODEL --name {name}.")


def deployments(database: Database) -> list[Deployment]:
    """Every recorded deployment, by name."""
    with database.read() as db:
        return deployments_where(db)


def get_deployment(database: Database, name: str) -> Deployment:
    """The deployment with this name (see :meth:`Registry.get_deployment`)."""
    with database.read() as db:
        found = deployments_where(db, "name = ?", [name])
        if not found:
            raise no_deployment(db, name)
        return found[0]


# -- reports, and the validation gate --------------------------------------------------------


def set_report(database: Database, version: ModelVersion, kind: str, body: Mapping[str, Any]) -> None:
    """Store (or replace) the report of ``kind`` for a version (see :meth:`Registry.set_report`)."""
    with database.write() as db:
        resolve(db, ModelRef(version.name, version=version.version))
        db.execute("INSERT INTO reports (name, version, kind, body, created_at) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT(name, version, kind) DO UPDATE SET body = excluded.body, "
                   "created_at = excluded.created_at",
                   [version.name, version.version, kind, json.dumps(dict(body), sort_keys=True), stamp(utcnow())])


def reports(database: Database, version: ModelVersion) -> dict[str, Any]:
    """The reports stored for a version, by kind."""
    with database.read() as db:
        return {kind: json.loads(body) for kind, body in db.execute(
            "SELECT kind, body FROM reports WHERE name = ? AND version = ? ORDER BY kind",
            [version.name, version.version])}


def validation_problem(report: Mapping[str, Any] | None) -> str | None:
    """Why a stored validation report does not let a version through a gate (None: it passed).

    Args:
        report: the version's stored ``validation`` report (None: it has none).

    Returns:
        What is wrong, as a phrase that follows the version's name ("has never been validated"), or None.
    """
    if report is None:
        return "has never been validated"
    if not report.get("passed"):
        failed = [c["check"] for c in report.get("checks", []) if not c.get("passed")]
        return f"failed its validation ({'; '.join(failed) or 'see %validate'})"
    return None


def stored_validation_problem(db: sqlite_utils.Database, name: str, version: int) -> str | None:
    """:func:`validation_problem` of the validation report stored for ``name:version``."""
    row = db.execute("SELECT body FROM reports WHERE name = ? AND version = ? AND kind = 'validation'",
                     [name, version]).fetchone()
    return validation_problem(json.loads(row[0]) if row else None)


def version_validation_problem(database: Database, version: ModelVersion) -> str | None:
    """Why ``version`` may not pass a validation gate (see :meth:`Registry.validation_problem`)."""
    with database.read() as db:
        return stored_validation_problem(db, version.name, version.version)


def gated_aliases(database: Database, name: str) -> list[str]:
    """The aliases of ``name`` that only point at validated versions."""
    with database.read() as db:
        return [r[0] for r in db.execute("SELECT alias FROM alias_gates WHERE name = ? ORDER BY alias", [name])]


# -- images ----------------------------------------------------------------------------------


def record_image(database: Database, tag: str, version: ModelVersion, *, context_digest: str, image_id: str,
                 size: int, base_image: str, gpu: bool, build_seconds: float | None) -> Image:
    """Record (or refresh) the image built under ``tag`` for ``version`` (see :meth:`Registry.record_image`)."""
    with database.write() as db:
        resolve(db, ModelRef(version.name, version=version.version))
        db.execute(
            "INSERT INTO images (tag, name, version, context_digest, image_id, size, base_image, gpu, "
            "build_seconds, built_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(tag) DO UPDATE SET "
            "context_digest = excluded.context_digest, image_id = excluded.image_id, size = excluded.size, "
            "base_image = excluded.base_image, gpu = excluded.gpu, build_seconds = excluded.build_seconds, "
            "built_at = excluded.built_at",
            [tag, version.name, version.version, context_digest, image_id, size, base_image, int(gpu),
             build_seconds, stamp(utcnow())],
        )
        return _images(db, "tag = ?", [tag])[0]


def _images(db: sqlite_utils.Database, where: str, params: list[Any]) -> list[Image]:
    return [
        Image(tag=r["tag"], model_name=r["name"], model_version=r["version"],
              context_digest=r["context_digest"], image_id=r["image_id"], size=r["size"],
              base_image=r["base_image"], gpu=bool(r["gpu"]), build_seconds=r["build_seconds"],
              built_at=datetime.fromisoformat(r["built_at"]))
        for r in db.query(f"SELECT * FROM images WHERE {where} ORDER BY built_at DESC, tag", params)
    ]


def forget_image(database: Database, tag: str) -> None:
    """Drop the record of an image (after it was removed from the engine). Unknown tags are ignored."""
    with database.write() as db:
        db.execute("DELETE FROM images WHERE tag = ?", [tag])


def images(database: Database, version: ModelVersion | None = None) -> list[Image]:
    """The images recorded for ``version`` (or for every version), newest first."""
    with database.read() as db:
        if version is None:
            return _images(db, "1", [])
        return _images(db, "name = ? AND version = ?", [version.name, version.version])
