"""Model versions: reading them, registering the next one atomically, tags, trust, aliases, deletion.

Every function takes the registry's :class:`~mlops_magics.registry.db.Database` first; the public API is
:class:`~mlops_magics.registry.store.Registry`, whose methods call these (and document them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlops_magics.errors import ConflictError, InvalidInputError, NotFoundError
from mlops_magics.registry import metrics as metrics_module
from mlops_magics.registry.aliases import check_gate, point_alias
from mlops_magics.registry.artifacts import StagedArtifact
from mlops_magics.registry.db import Database, current_user, manifest_body, referenced, stamp, utcnow
from mlops_magics.registry.operations import deployments_where
from mlops_magics.registry.records import Lineage, ModelVersion, ModelVersionList
from mlops_magics.registry.refs import ModelRef, check_alias, check_name, check_tag, parse_ref, resolve, resolve_alias

if TYPE_CHECKING:
    import sqlite_utils

# Tags are kept twice on purpose: the ``tags`` table (indexed, for searching) and a JSON copy on
# the version row (for listing 10,000 versions without a join). Both change in one transaction.
# In the order of ModelVersion's fields.
_VERSION_COLUMNS = (
    "name, version, flavor, framework, framework_version, sha256, size, description, created_by, created_at, "
    "files, tags, signature, input_example, lineage, flavor_options, origin, origin_path, trusted_at, trusted_by, "
    f"metrics, {metrics_module.MEASURED_JSON}"
)
_VERSION_SELECT = f"SELECT {_VERSION_COLUMNS} FROM versions v"
_TAGS_JSON = (
    "(SELECT json_group_object(key, value) FROM "
    "(SELECT key, value FROM tags WHERE name = ? AND version = ? ORDER BY key))"
)


# -- reading ---------------------------------------------------------------------------------


def to_version(database: Database, row: tuple[Any, ...], aliases: tuple[str, ...]) -> ModelVersion:
    """The :class:`ModelVersion` of a row selected with the ``versions`` columns in its fields' order."""
    (name, version, flavor, framework, framework_version, sha256, size, description, created_by,
     created_text, files, tags, signature, example, lineage, options, origin, origin_path, trusted_text,
     trusted_by, registered, measured) = row
    return ModelVersion(name, version, flavor, framework, framework_version, sha256, size, description,
                        created_by, created_text, files, tags, signature, example, lineage, options,
                        aliases, database.artifacts.blobs, origin, origin_path, trusted_text, trusted_by,
                        registered, measured)


def aliases_by_version(db: sqlite_utils.Database, name: str | None = None) -> dict[tuple[str, int], tuple[str, ...]]:
    """The aliases of every version (of model ``name``), by (name, version)."""
    found: dict[tuple[str, int], tuple[str, ...]] = {}
    sql = "SELECT name, version, alias FROM aliases" + (" WHERE name = ?" if name else "") + " ORDER BY alias"
    for model, version, alias in db.execute(sql, [name] if name else []):
        found[model, version] = (*found.get((model, version), ()), alias)
    return found


def version_of(database: Database, db: sqlite_utils.Database, name: str, version: int) -> ModelVersion:
    """Version ``version`` of ``name``, read in the transaction ``db`` is in.

    Raises:
        NotFoundError: there is no such version.
    """
    row = db.execute(_VERSION_SELECT + " WHERE v.name = ? AND v.version = ?", [name, version]).fetchone()
    if row is None:
        raise NotFoundError(f"Model {name!r} has no version {version}.")
    return to_version(database, row, aliases_by_version(db, name).get((name, version), ()))


def get(database: Database, ref: str | ModelRef, *, as_of: datetime | None = None) -> ModelVersion:
    """Return the version a reference names (see :meth:`Registry.get`)."""
    parsed = parse_ref(ref) if isinstance(ref, str) else ref
    with database.read() as db:
        return version_of(database, db, parsed.name, resolve(db, parsed, as_of))


def find(database: Database, name: str | None = None, tags: Mapping[str, str | None] | None = None, *,
         latest: bool = False) -> ModelVersionList:
    """Return versions, sorted by name then version (see :meth:`Registry.find`)."""
    where: list[str] = []
    params: list[Any] = []
    if name:
        where.append("v.name GLOB ?")
        params.append(name)
    for key, value in (tags or {}).items():
        if value is None:
            where.append(
                "EXISTS (SELECT 1 FROM tags t WHERE t.name = v.name AND t.version = v.version AND t.key = ?)"
            )
            params.append(key)
        else:
            where.append(
                "EXISTS (SELECT 1 FROM tags t WHERE t.name = v.name AND t.version = v.version "
                "AND t.key = ? AND t.value = ?)"
            )
            params += [key, value]
    if latest:
        where.append("v.version = (SELECT max(version) FROM versions w WHERE w.name = v.name)")
    sql = _VERSION_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY v.name, v.version"
    with database.read() as db:
        aliases = aliases_by_version(db)
        return ModelVersionList(
            to_version(database, row, aliases.get((row[0], row[1]), ())) for row in db.execute(sql, params)
        )


# -- writing ---------------------------------------------------------------------------------


def add_version(
    database: Database,
    name: str,
    staged: StagedArtifact,
    *,
    flavor: str,
    flavor_options: Mapping[str, Any] | None,
    framework: str | None,
    framework_version: str | None,
    tags: Mapping[str, str] | None,
    description: str,
    signature: Mapping[str, Any] | None,
    input_example: Mapping[str, Any] | None,
    lineage: Lineage | None,
    alias: str | None,
    origin: str,
    origin_path: str | None,
    trusted: bool,
    metrics: Mapping[str, float] | None = None,
) -> ModelVersion:
    """Record a staged artifact as the next version of ``name``, atomically (see :meth:`Registry.add_version`)."""
    check_name(name)
    for key, value in (tags or {}).items():
        check_tag(key, value)
    registered = metrics_module.metrics_argument(metrics)
    if alias is not None:
        check_alias(alias)
    user = current_user()
    with database.write() as db:
        now = stamp(utcnow())
        db.execute(
            "INSERT INTO models (name, last_version, created_at) VALUES (?, 0, ?) ON CONFLICT(name) DO NOTHING",
            [name, now],
        )
        # The store's high-water mark counts versions a database restored from an older copy forgot.
        (last,) = db.execute("SELECT last_version FROM models WHERE name = ?", [name]).fetchone()
        version = max(int(last), database.artifacts.high_water(name)) + 1
        db.execute("UPDATE models SET last_version = ? WHERE name = ?", [version, name])
        transaction = database.transaction()
        journal = transaction.journal()
        journal.record(("manifest", name, str(version)))
        transaction.on_rollback(lambda: database.artifacts.remove_manifest(name, version))
        published = not database.artifacts.path(staged.digest).exists()  # (no other writer: we hold the lock)
        if published:
            transaction.on_rollback(lambda: database.artifacts.unpublish(staged.digest))
        database.artifacts.publish(staged, journal, sync=False)  # synced with the manifest, below
        db.table("versions").insert(
            {
                "name": name,
                "version": version,
                "flavor": flavor,
                "flavor_options": json.dumps(dict(flavor_options or {}), sort_keys=True),
                "framework": framework,
                "framework_version": framework_version,
                "sha256": staged.digest,
                "size": staged.size,
                "files": json.dumps([[f.path, f.size, f.sha256] for f in staged.files]),
                "signature": None if signature is None else json.dumps(signature, sort_keys=True),
                "input_example": None if input_example is None else json.dumps(input_example),
                "description": description or "",
                "lineage": json.dumps((lineage or Lineage()).as_dict(), sort_keys=True),
                "created_at": now,
                "created_by": user,
                "tags": json.dumps(dict(sorted((tags or {}).items()))),
                "origin": origin,
                "origin_path": origin_path,
                "trusted_at": now if trusted else None,
                "trusted_by": user if trusted else None,
                "metrics": metrics_module.encode(registered),
            }
        )
        if tags:
            db.table("tags").insert_all(
                {"name": name, "version": version, "key": k, "value": v} for k, v in tags.items()
            )
        if alias is not None:
            point_alias(db, name, alias, version, now, user)
        database.artifacts.write_manifest(manifest_body(db, name, version) or {}, new=True)
        if published:
            database.artifacts.sync_blob(staged.digest)
        return version_of(database, db, name, version)


def set_alias(database: Database, ref: str | ModelRef, alias: str, *, require_validation: bool) -> ModelVersion:
    """Point ``alias`` at the version ``ref`` names (see :meth:`Registry.set_alias`)."""
    parsed = parse_ref(ref) if isinstance(ref, str) else ref
    check_alias(alias)
    with database.write() as db:
        version = resolve(db, parsed)
        if require_validation:
            db.execute("INSERT OR IGNORE INTO alias_gates (name, alias, created_at) VALUES (?, ?, ?)",
                       [parsed.name, alias, stamp(utcnow())])
            check_gate(db, parsed.name, alias, version)
        current = db.execute(
            "SELECT version FROM aliases WHERE name = ? AND alias = ?", [parsed.name, alias]
        ).fetchone()
        if current is None or current[0] != version:
            point_alias(db, parsed.name, alias, version, stamp(utcnow()), current_user())
        return version_of(database, db, parsed.name, version)


def remove_alias(database: Database, name: str, alias: str) -> None:
    """Remove an alias, recorded in its history (see :meth:`Registry.remove_alias`)."""
    with database.write() as db:
        resolve_alias(db, check_name(name), alias)
        point_alias(db, name, alias, None, stamp(utcnow()), current_user())


def set_tags(database: Database, ref: str | ModelRef, set_tags: Mapping[str, str] | None,
             remove: list[str] | None) -> ModelVersion:
    """Set and remove tags of one version, in one transaction (see :meth:`Registry.set_tags`)."""
    parsed = parse_ref(ref) if isinstance(ref, str) else ref
    for key, value in (set_tags or {}).items():
        check_tag(key, value)
    with database.write() as db:
        version = resolve(db, parsed)
        for key in remove or []:
            gone = db.execute(
                "DELETE FROM tags WHERE name = ? AND version = ? AND key = ?", [parsed.name, version, key]
            ).rowcount
            if not gone:
                have = [r[0] for r in db.execute(
                    "SELECT key FROM tags WHERE name = ? AND version = ? ORDER BY key", [parsed.name, version]
                )]
                raise NotFoundError(
                    f"{parsed.name}:{version} has no tag {key!r}. Tags: {', '.join(have) or 'none'}."
                )
        for key, value in (set_tags or {}).items():
            db.table("tags").upsert({"name": parsed.name, "version": version, "key": key, "value": value},
                                    pk=("name", "version", "key"))
        db.execute(
            f"UPDATE versions SET tags = {_TAGS_JSON} WHERE name = ? AND version = ?",
            [parsed.name, version, parsed.name, version],
        )
        database.sync_manifest(parsed.name, version)
        return version_of(database, db, parsed.name, version)


def set_trust(database: Database, ref: str | ModelRef, trusted: bool) -> ModelVersion:
    """Record (or withdraw) the current user's trust in one version (see :meth:`Registry.set_trust`)."""
    parsed = _exact(ref, "trust", "Trust goes to the exact version whose files you checked, never to an alias "
                                  "or 'latest' that may move.")
    with database.write() as db:
        version = resolve(db, parsed)
        if trusted:  # trusting a trusted version keeps the first record of who trusted it, and when
            db.execute("UPDATE versions SET trusted_at = ?, trusted_by = ? WHERE name = ? AND version = ? "
                       "AND trusted_at IS NULL", [stamp(utcnow()), current_user(), parsed.name, version])
        else:
            db.execute("UPDATE versions SET trusted_at = NULL, trusted_by = NULL WHERE name = ? AND version = ?",
                       [parsed.name, version])
        database.sync_manifest(parsed.name, version)  # a rebuilt registry keeps who trusted what
        return version_of(database, db, parsed.name, version)


def delete_version(database: Database, ref: str | ModelRef) -> ModelVersion:
    """Delete one version; return it as it was (see :meth:`Registry.delete_version`)."""
    parsed = _exact(ref, "delete", "Deleting by alias or 'latest' is refused so that nothing is deleted by "
                                   "surprise.")
    with database.write() as db:
        version = resolve(db, parsed)
        gone = version_of(database, db, parsed.name, version)
        live = [
            d for d in deployments_where(db, "model_name = ? AND model_version = ?", [parsed.name, version])
            if d.is_live
        ]
        if live:
            names = ", ".join(f"'{d.name}' ({d.target}, {d.state})" for d in live)
            raise ConflictError(
                f"Cannot delete {gone.ref}: deployment {names} uses it. "
                f"Undeploy first (%undeploy {live[0].name}), then delete."
            )
        now, user = stamp(utcnow()), current_user()
        for alias in gone.aliases:
            point_alias(db, parsed.name, alias, None, now, user)
        db.execute("DELETE FROM versions WHERE name = ? AND version = ?", [parsed.name, version])
        db.execute("DELETE FROM inference_configs WHERE name = ? AND version = ?", [parsed.name, version])
        db.execute("DELETE FROM reports WHERE name = ? AND version = ?", [parsed.name, version])
        db.execute("DELETE FROM measured_metrics WHERE name = ? AND version = ?", [parsed.name, version])
        shared = gone.sha256 in referenced(db)
        transaction = database.transaction()
        transaction.journal().record(("tombstone", parsed.name, str(version)))
        transaction.after_commit(lambda: database.artifacts.bury(parsed.name, version))
        if not shared:
            transaction.on_rollback(lambda: database.artifacts.unretire(gone.sha256))
            database.artifacts.retire(gone.sha256)
            transaction.after_commit(lambda: database.artifacts.discard(gone.sha256))
    return gone


def _exact(ref: str | ModelRef, action: str, why: str) -> ModelRef:
    """``ref`` parsed, when it names one exact version (``NAME:VERSION``).

    Raises:
        InvalidInputError: it names an alias or 'latest'; the message says ``why`` that is refused for ``action``.
    """
    parsed = parse_ref(ref) if isinstance(ref, str) else ref
    if parsed.version is None:
        raise InvalidInputError(f"Say which version to {action}: {parsed.name}:VERSION (got {str(parsed)!r}). {why}")
    return parsed
