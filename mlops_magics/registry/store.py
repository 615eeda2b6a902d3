"""The embedded registry: one SQLite database plus the artifact store under ``$MLOPS_HOME``."""

from __future__ import annotations

import difflib
import getpass
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_magics import config
from mlops_magics.artifacts import ArtifactStore, StagedArtifact
from mlops_magics.errors import (
    ConflictError,
    InvalidInputError,
    MlopsError,
    NotFoundError,
    RegistryLockedError,
    SchemaVersionError,
)
from mlops_magics.registry.migrations import MIGRATIONS, SCHEMA_VERSION
from mlops_magics.registry.records import (
    AliasEvent,
    ArtifactFile,
    Deployment,
    Image,
    InferenceConfig,
    Lineage,
    ModelVersion,
    ModelVersionList,
    frozen_mapping,
)
from mlops_magics.registry.refs import ModelRef, check_alias, check_name, check_tag, parse_ref
from mlops_magics.registry.secrets import KeyStore

if TYPE_CHECKING:
    import sqlite_utils

log = logging.getLogger(__name__)

DB_FILE = "registry.db"

# Tags are kept twice on purpose: the ``tags`` table (indexed, for searching) and a JSON copy on
# the version row (for listing 10,000 versions without a join). Both change in one transaction.
# In the order of ModelVersion's fields.
_VERSION_COLUMNS = (
    "name, version, flavor, framework, framework_version, sha256, size, description, created_by, created_at, "
    "files, tags, signature, input_example, lineage, flavor_options, origin, origin_path, trusted_at, trusted_by"
)
_VERSION_SELECT = f"SELECT {_VERSION_COLUMNS} FROM versions v"
_TAGS_JSON = (
    "(SELECT json_group_object(key, value) FROM "
    "(SELECT key, value FROM tags WHERE name = ? AND version = ? ORDER BY key))"
)


class _Keep:
    """The type of :data:`KEEP`."""


#: Leave a field as it is (``Registry.set_inference``).
KEEP = _Keep()


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def _stamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def current_user() -> str:
    """The login name of whoever runs this process ('unknown' when there is none)."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "unknown"


def _is_locked(error: sqlite3.OperationalError) -> bool:
    text = str(error).lower()
    return "locked" in text or "busy" in text


class Registry:
    """A model registry stored under one folder.

    Safe to share between threads (each thread gets its own SQLite connection) and between
    processes (writes take SQLite's write lock; versions are allocated inside it).

    Args:
        home: the registry folder; default ``$MLOPS_HOME`` or ``~/.mlops``.
        lock_timeout: seconds to wait for another writer; default ``$MLOPS_LOCK_TIMEOUT`` or 30.
    """

    def __init__(self, home: Path | str | None = None, *, lock_timeout: float | None = None) -> None:
        self.home = Path(home).expanduser().resolve() if home is not None else config.mlops_home()
        self.lock_timeout = config.lock_timeout() if lock_timeout is None else lock_timeout
        self.db_path = self.home / DB_FILE
        self._local = threading.local()
        self._setup_lock = threading.Lock()
        self._ready = False
        self.home.mkdir(parents=True, exist_ok=True)
        self.artifacts = ArtifactStore(self.home / "artifacts")
        self.keys = KeyStore(self.home)
        self.db  # noqa: B018 - open now so that schema and lock errors surface at construction

    def __repr__(self) -> str:
        return f"<Registry {self.home}>"

    # -- connection and transactions -------------------------------------------------------

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection, opened (and the schema brought up to date) on first use."""
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            self._local.db = db
            with self._setup_lock:
                if not self._ready:
                    self._migrate(db)
                    self._recover(db)
                    self._ready = True
        return db

    def _connect(self) -> sqlite_utils.Database:
        import sqlite_utils

        try:
            conn = sqlite3.connect(self.db_path, timeout=self.lock_timeout, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.OperationalError as exc:
            if _is_locked(exc):
                raise self._locked_error() from exc
            raise MlopsError(f"Cannot open the registry database {self.db_path}: {exc}.") from exc
        except sqlite3.DatabaseError as exc:
            raise MlopsError(
                f"{self.db_path} is not a usable registry database ({exc}). Move it aside or point "
                "MLOPS_HOME at another folder."
            ) from exc
        return sqlite_utils.Database(conn, execute_plugins=False)

    def _locked_error(self) -> RegistryLockedError:
        return RegistryLockedError(
            f"The registry {self.db_path} is locked by another process: waited {self.lock_timeout:g} s "
            "for its write lock. Retry when the other writer is done, or raise MLOPS_LOCK_TIMEOUT "
            "(seconds)."
        )

    @contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """A write transaction (``BEGIN IMMEDIATE``): all or nothing, one writer at a time.

        Raises:
            RegistryLockedError: another process held the write lock past the lock timeout.
        """
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_locked(exc):
                raise self._locked_error() from exc
            raise
        try:
            yield db
        except BaseException:
            db.conn.rollback()
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            db.conn.rollback()
            if _is_locked(exc):
                raise self._locked_error() from exc
            raise

    @contextmanager
    def read(self) -> Iterator[sqlite_utils.Database]:
        """A read transaction: every query inside sees the same snapshot."""
        db = self.db
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.conn.rollback()

    def change_stamp(self) -> tuple[int, int]:
        """A value that changes whenever the database changes, written by this thread's connection or any
        other, in any process (SQLite's ``data_version`` and this connection's ``total_changes``). Cheap: two
        reads of connection state, no query of the tables. Compare stamps taken on the same thread."""
        db = self.db
        (data_version,) = db.execute("PRAGMA data_version").fetchone()
        return int(data_version), int(db.conn.total_changes)

    def _schema_version(self, db: sqlite_utils.Database) -> int:
        if not db["_migrations"].exists():
            return 0
        return int(db.execute("SELECT coalesce(max(id), 0) FROM _migrations").fetchone()[0])

    def _migrate(self, db: sqlite_utils.Database) -> None:
        found = self._schema_version(db)
        if found > SCHEMA_VERSION:
            from mlops_magics import __version__

            raise SchemaVersionError(
                f"The registry {self.db_path} has schema version {found}, written by a newer "
                f"mlops-magics; this one ({__version__}) knows schema versions up to {SCHEMA_VERSION}. "
                "Upgrade mlops-magics (pip install -U mlops-magics), or set MLOPS_HOME to another folder."
            )
        if found == SCHEMA_VERSION:
            return
        with self.write():
            db.execute(
                "CREATE TABLE IF NOT EXISTS _migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                "applied_at TEXT NOT NULL)"
            )
            done = self._schema_version(db)  # another process may have migrated meanwhile
            for number, name, apply in MIGRATIONS:
                if number > done:
                    apply(db)
                    db.table("_migrations").insert({"id": number, "name": name, "applied_at": _stamp(utcnow())})
                    log.info("registry %s: applied migration %d (%s)", self.db_path, number, name)

    def _recover(self, db: sqlite_utils.Database) -> None:
        if not self.artifacts.needs_recovery():
            return
        with self.write():
            actions = self.artifacts.recover(lambda: self._referenced(db))
        for action in actions:
            log.warning("registry %s: %s", self.home, action)

    def _referenced(self, db: sqlite_utils.Database) -> set[str]:
        """Every artifact digest something uses: model versions and inference assets."""
        return {row[0] for row in db.execute(
            "SELECT sha256 FROM versions UNION SELECT json_extract(assets, '$.sha256') FROM inference_configs "
            "WHERE assets IS NOT NULL"
        )}

    # -- reading ---------------------------------------------------------------------------

    def _to_version(self, row: tuple[Any, ...], aliases: tuple[str, ...]) -> ModelVersion:
        (name, version, flavor, framework, framework_version, sha256, size, description, created_by,
         created_text, files, tags, signature, example, lineage, options, origin, origin_path, trusted_text,
         trusted_by) = row
        return ModelVersion(name, version, flavor, framework, framework_version, sha256, size, description,
                            created_by, created_text, files, tags, signature, example, lineage, options,
                            aliases, self.artifacts.blobs, origin, origin_path, trusted_text, trusted_by)

    def _aliases_by_version(
        self, db: sqlite_utils.Database, name: str | None = None
    ) -> dict[tuple[str, int], tuple[str, ...]]:
        found: dict[tuple[str, int], tuple[str, ...]] = {}
        sql = "SELECT name, version, alias FROM aliases" + (" WHERE name = ?" if name else "") + " ORDER BY alias"
        for model, version, alias in db.execute(sql, [name] if name else []):
            found[model, version] = (*found.get((model, version), ()), alias)
        return found

    def _names(self, db: sqlite_utils.Database) -> list[str]:
        return [r[0] for r in db.execute("SELECT DISTINCT name FROM versions ORDER BY name")]

    def _no_model(self, db: sqlite_utils.Database, name: str) -> NotFoundError:
        names = self._names(db)
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listed = ", ".join(repr(n) for n in names[:20]) + (" ..." if len(names) > 20 else "")
        where = f"Registered: {listed}." if names else "The registry is empty."
        return NotFoundError(
            f"No model named {name!r}.{hint} {where} Register it with %register VAR --name {name}."
        )

    def _resolve(self, db: sqlite_utils.Database, ref: ModelRef, as_of: datetime | None) -> int:
        """The version number ``ref`` names (at ``as_of`` for aliases and latest)."""
        latest = db.execute("SELECT max(version) FROM versions WHERE name = ?", [ref.name]).fetchone()[0]
        if latest is None:
            raise self._no_model(db, ref.name)
        if ref.version is not None:
            if db.execute(
                "SELECT 1 FROM versions WHERE name = ? AND version = ?", [ref.name, ref.version]
            ).fetchone() is None:
                versions = [r[0] for r in db.execute(
                    "SELECT version FROM versions WHERE name = ? ORDER BY version", [ref.name]
                )]
                raise NotFoundError(
                    f"Model {ref.name!r} has no version {ref.version}. "
                    f"Versions: {_ranges(versions)} (latest {latest})."
                )
            return ref.version
        if ref.alias is not None:
            return self._resolve_alias(db, ref.name, ref.alias, as_of)
        if as_of is None:
            return int(latest)
        then = db.execute(
            "SELECT max(version) FROM versions WHERE name = ? AND created_at <= ?", [ref.name, _stamp(as_of)]
        ).fetchone()[0]
        if then is None:
            raise NotFoundError(f"Model {ref.name!r} had no version yet on {_stamp(as_of)}.")
        return int(then)

    def _resolve_alias(self, db: sqlite_utils.Database, name: str, alias: str, as_of: datetime | None) -> int:
        if as_of is None:
            row = db.execute("SELECT version FROM aliases WHERE name = ? AND alias = ?", [name, alias]).fetchone()
        else:
            row = db.execute(
                "SELECT version FROM alias_history WHERE name = ? AND alias = ? AND at <= ? "
                "ORDER BY at DESC, id DESC LIMIT 1",
                [name, alias, _stamp(as_of)],
            ).fetchone()
        if row is not None and row[0] is not None:
            return int(row[0])
        current = db.execute(
            "SELECT alias, version FROM aliases WHERE name = ? ORDER BY alias", [name]
        ).fetchall()
        known = ", ".join(f"{a} -> {v}" for a, v in current) or "none"
        when = f" on {_stamp(as_of)}" if as_of else ""
        raise NotFoundError(
            f"Model {name!r} has no alias {alias!r}{when}. Aliases: {known}. "
            f"Set it with %alias {name}:VERSION {alias}."
        )

    def _version(self, db: sqlite_utils.Database, name: str, version: int) -> ModelVersion:
        row = db.execute(_VERSION_SELECT + " WHERE v.name = ? AND v.version = ?", [name, version]).fetchone()
        if row is None:
            raise NotFoundError(f"Model {name!r} has no version {version}.")
        return self._to_version(row, self._aliases_by_version(db, name).get((name, version), ()))

    def get(self, ref: str | ModelRef, *, as_of: datetime | None = None) -> ModelVersion:
        """Return the version a reference names.

        Args:
            ref: ``NAME`` (latest), ``NAME:VERSION``, ``NAME:latest`` or ``NAME@ALIAS``.
            as_of: resolve aliases and "latest" as they were at this moment.

        Raises:
            InvalidInputError: the reference is malformed.
            NotFoundError: no such model, version or alias; the message lists what exists.
        """
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        with self.read() as db:
            return self._version(db, parsed.name, self._resolve(db, parsed, as_of))

    def find(
        self,
        name: str | None = None,
        tags: Mapping[str, str | None] | None = None,
        *,
        latest: bool = False,
    ) -> ModelVersionList:
        """Return versions, sorted by name then version.

        Args:
            name: a glob on the model name (``iris*``, ``*-v?``); case-sensitive.
            tags: every ``key: value`` must match; a ``None`` value only requires the key.
            latest: only the newest version of each model.
        """
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
        with self.read() as db:
            aliases = self._aliases_by_version(db)
            return ModelVersionList(
                self._to_version(row, aliases.get((row[0], row[1]), ())) for row in db.execute(sql, params)
            )

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        """Every move of the model's aliases (or of one alias), oldest first."""
        sql = "SELECT name, alias, version, at, by FROM alias_history WHERE name = ?"
        params: list[Any] = [check_name(name)]
        if alias is not None:
            sql += " AND alias = ?"
            params.append(alias)
        with self.read() as db:
            if db.execute("SELECT 1 FROM models WHERE name = ?", [name]).fetchone() is None:
                raise self._no_model(db, name)
            return [
                AliasEvent(r["name"], r["alias"], r["version"], datetime.fromisoformat(r["at"]), r["by"])
                for r in db.query(sql + " ORDER BY at, id", params)
            ]

    # -- writing ---------------------------------------------------------------------------

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
        lineage: Lineage | None = None,
        alias: str | None = None,
        origin: str = "unknown",
        origin_path: str | None = None,
        trusted: bool = False,
    ) -> ModelVersion:
        """Record a staged artifact as the next version of ``name``, atomically.

        The version number is allocated inside the write transaction: concurrent writers never
        share or skip a number. Numbers are never reused, even after a delete.

        Args:
            origin: 'object' (saved from memory), 'path' (a file or folder registered as it was) or 'unknown'.
            origin_path: the registered file or folder (origin 'path').
            trusted: record that the registrant trusts it to be loaded (now, by the current user).

        Raises:
            InvalidInputError: invalid name, tag or alias.
            RegistryLockedError: the write lock could not be had in time.
        """
        check_name(name)
        for key, value in (tags or {}).items():
            check_tag(key, value)
        if alias is not None:
            check_alias(alias)
        user = current_user()
        with self.write() as db:
            now = _stamp(utcnow())
            db.execute(
                "INSERT INTO models (name, last_version, created_at) VALUES (?, 0, ?) ON CONFLICT(name) DO NOTHING",
                [name, now],
            )
            version = db.execute(
                "UPDATE models SET last_version = last_version + 1 WHERE name = ? RETURNING last_version", [name]
            ).fetchone()[0]
            self.artifacts.publish(staged)
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
                }
            )
            if tags:
                db.table("tags").insert_all(
                    {"name": name, "version": version, "key": k, "value": v} for k, v in tags.items()
                )
            if alias is not None:
                self._point_alias(db, name, alias, version, now, user)
            return self._version(db, name, version)

    def _point_alias(
        self, db: sqlite_utils.Database, name: str, alias: str, version: int | None, now: str, user: str
    ) -> None:
        if version is None:
            db.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", [name, alias])
        else:
            self._check_gate(db, name, alias, version)
            db.execute(
                "INSERT INTO aliases (name, alias, version, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name, alias) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
                [name, alias, version, now],
            )
        db.execute(
            "INSERT INTO alias_history (name, alias, version, at, by) VALUES (?, ?, ?, ?, ?)",
            [name, alias, version, now, user],
        )

    def _check_gate(self, db: sqlite_utils.Database, name: str, alias: str, version: int) -> None:
        """Refuse to point a gated alias at a version without a passed validation."""
        if db.execute("SELECT 1 FROM alias_gates WHERE name = ? AND alias = ?", [name, alias]).fetchone() is None:
            return
        row = db.execute("SELECT body FROM reports WHERE name = ? AND version = ? AND kind = 'validation'",
                         [name, version]).fetchone()
        problem = validation_problem(json.loads(row[0]) if row else None)
        if problem:
            raise ConflictError(f"{name}@{alias} requires a passed validation, and {name}:{version} {problem}. "
                                f"Run %validate {name}:{version} --data X --labels y --metric ..., then move the "
                                "alias.")

    def set_alias(self, ref: str | ModelRef, alias: str, *, require_validation: bool = False) -> ModelVersion:
        """Point ``alias`` at the version ``ref`` names (moving it if set); the move is recorded.

        Args:
            require_validation: gate the alias from now on: it only points at versions whose last
                validation passed (this version included).

        Raises:
            InvalidInputError / NotFoundError: bad alias or reference.
            ConflictError: the alias is gated and the version has not passed its validation.
        """
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        check_alias(alias)
        with self.write() as db:
            version = self._resolve(db, parsed, None)
            if require_validation:
                db.execute("INSERT OR IGNORE INTO alias_gates (name, alias, created_at) VALUES (?, ?, ?)",
                           [parsed.name, alias, _stamp(utcnow())])
                self._check_gate(db, parsed.name, alias, version)
            current = db.execute(
                "SELECT version FROM aliases WHERE name = ? AND alias = ?", [parsed.name, alias]
            ).fetchone()
            if current is None or current[0] != version:
                self._point_alias(db, parsed.name, alias, version, _stamp(utcnow()), current_user())
            return self._version(db, parsed.name, version)

    def remove_alias(self, name: str, alias: str) -> None:
        """Remove an alias (recorded in its history).

        Raises:
            NotFoundError: the model has no such alias.
        """
        with self.write() as db:
            self._resolve_alias(db, check_name(name), alias, None)
            self._point_alias(db, name, alias, None, _stamp(utcnow()), current_user())

    def set_tags(
        self, ref: str | ModelRef, set_tags: Mapping[str, str] | None = None, remove: list[str] | None = None
    ) -> ModelVersion:
        """Set and remove tags of one version, in one transaction.

        Raises:
            NotFoundError: a key to remove is not set; the message lists the tags.
        """
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        for key, value in (set_tags or {}).items():
            check_tag(key, value)
        with self.write() as db:
            version = self._resolve(db, parsed, None)
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
            return self._version(db, parsed.name, version)

    def set_trust(self, ref: str | ModelRef, trusted: bool = True) -> ModelVersion:
        """Record that the current user trusts one version to be loaded (now), or withdraw that trust.

        Only the version's row changes; its artifact stays as it was registered. Idempotent: trusting a trusted
        version keeps who trusted it first, and when.

        Raises:
            InvalidInputError: the reference does not name an exact version (``NAME:VERSION``).
            NotFoundError: no such version.
        """
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        if parsed.version is None:
            raise InvalidInputError(
                f"Say which version to trust: {parsed.name}:VERSION (got {str(parsed)!r}). Trust goes to the exact "
                "version whose files you checked, never to an alias or 'latest' that may move."
            )
        with self.write() as db:
            version = self._resolve(db, parsed, None)
            if trusted:  # trusting a trusted version keeps the first record of who trusted it, and when
                db.execute("UPDATE versions SET trusted_at = ?, trusted_by = ? WHERE name = ? AND version = ? "
                           "AND trusted_at IS NULL", [_stamp(utcnow()), current_user(), parsed.name, version])
            else:
                db.execute("UPDATE versions SET trusted_at = NULL, trusted_by = NULL WHERE name = ? AND version = ?",
                           [parsed.name, version])
            return self._version(db, parsed.name, version)

    def delete_version(self, ref: str | ModelRef) -> ModelVersion:
        """Delete one version: its row, tags and aliases (recorded), and its artifact if unshared.

        Returns:
            The version as it was before the delete.

        Raises:
            InvalidInputError: the reference does not name an exact version (``NAME:VERSION``).
            ConflictError: a live deployment uses the version; the message names it.
        """
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        if parsed.version is None:
            raise InvalidInputError(
                f"Say which version to delete: {parsed.name}:VERSION (got {str(parsed)!r}). "
                "Deleting by alias or 'latest' is refused so that nothing is deleted by surprise."
            )
        with self.write() as db:
            version = self._resolve(db, parsed, None)
            gone = self._version(db, parsed.name, version)
            live = [
                d for d in self._deployments(db, "model_name = ? AND model_version = ?", [parsed.name, version])
                if d.is_live
            ]
            if live:
                names = ", ".join(f"'{d.name}' ({d.target}, {d.state})" for d in live)
                raise ConflictError(
                    f"Cannot delete {gone.ref}: deployment {names} uses it. "
                    f"Undeploy first (%undeploy {live[0].name}), then delete."
                )
            now, user = _stamp(utcnow()), current_user()
            for alias in gone.aliases:
                self._point_alias(db, parsed.name, alias, None, now, user)
            db.execute("DELETE FROM versions WHERE name = ? AND version = ?", [parsed.name, version])
            db.execute("DELETE FROM inference_configs WHERE name = ? AND version = ?", [parsed.name, version])
            db.execute("DELETE FROM reports WHERE name = ? AND version = ?", [parsed.name, version])
            shared = gone.sha256 in self._referenced(db)
            if not shared:
                self.artifacts.retire(gone.sha256)
        if not shared:
            self.artifacts.discard(gone.sha256)
        return gone

    # -- inference configurations ------------------------------------------------------------

    def set_inference(
        self,
        name: str,
        version: int = 0,
        *,
        script: str | _Keep | None = KEEP,
        script_line_offset: int | None = None,
        environment: Mapping[str, Any] | _Keep | None = KEEP,
        assets: StagedArtifact | _Keep | None = KEEP,
        dockerfile_steps: str | _Keep | None = KEEP,
    ) -> None:
        """Store part of a model's inference configuration (``version=0``: for every version).

        Fields left as ``KEEP`` are unchanged; ``None`` clears one.

        Raises:
            NotFoundError: the model (or that version) does not exist.
        """
        with self.write() as db:
            self._resolve(db, ModelRef(check_name(name), version=version or None), None)
            row = db.execute("SELECT script, script_line_offset, environment, assets, dockerfile_steps "
                             "FROM inference_configs WHERE name = ? AND version = ?",
                             [name, version]).fetchone() or (None,) * 5
            values = list(row)
            if not isinstance(script, _Keep):
                values[0:2] = [script, script_line_offset]
            if not isinstance(environment, _Keep):
                values[2] = None if environment is None else json.dumps(dict(environment), sort_keys=True)
            if not isinstance(assets, _Keep):
                if assets is not None:
                    self.artifacts.publish(assets)
                values[3] = None if assets is None else json.dumps(
                    {"sha256": assets.digest, "files": [[f.path, f.size, f.sha256] for f in assets.files]})
            if not isinstance(dockerfile_steps, _Keep):
                values[4] = dockerfile_steps or None
            db.execute(
                "INSERT INTO inference_configs (name, version, script, script_line_offset, environment, assets, "
                "dockerfile_steps, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name, version) DO UPDATE "
                "SET script = excluded.script, script_line_offset = excluded.script_line_offset, "
                "environment = excluded.environment, assets = excluded.assets, "
                "dockerfile_steps = excluded.dockerfile_steps, updated_at = excluded.updated_at",
                [name, version, *values, _stamp(utcnow())],
            )

    def inference(self, version: ModelVersion) -> InferenceConfig:
        """The inference configuration that applies to ``version``: its own fields over the model's."""
        with self.read() as db:
            rows = {r[0]: r[1:] for r in db.execute(
                "SELECT version, script, script_line_offset, environment, assets, dockerfile_steps "
                "FROM inference_configs WHERE name = ? AND version IN (0, ?)", [version.name, version.version])}
        merged: list[Any] = [None, None, None, None, None]
        for source in (rows.get(0), rows.get(version.version)):
            if source is not None:
                if source[0] is not None:  # a script and its line offset go together
                    merged[0:2] = source[0:2]
                merged[2:] = [new if new is not None else old for old, new in zip(merged[2:], source[2:], strict=True)]
        script, offset, environment, assets, steps = merged
        return InferenceConfig(
            script=script,
            script_line_offset=offset,
            environment=None if environment is None else frozen_mapping(json.loads(environment)),
            assets_sha256=None if assets is None else json.loads(assets)["sha256"],
            asset_files=() if assets is None else tuple(ArtifactFile(*f) for f in json.loads(assets)["files"]),
            dockerfile_steps=steps,
        )

    # -- deployments -----------------------------------------------------------------------

    def _deployments(
        self, db: sqlite_utils.Database, where: str = "1", params: list[Any] | None = None
    ) -> list[Deployment]:
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

    def record_deployment(
        self,
        name: str,
        model: str | ModelRef,
        *,
        target: str,
        state: str,
        url: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> Deployment:
        """Create or replace the record of a deployment of a model version.

        Raises:
            NotFoundError: the model version does not exist.
        """
        check_name(name)
        parsed = parse_ref(model) if isinstance(model, str) else model
        with self.write() as db:
            version = self._resolve(db, parsed, None)
            now = _stamp(utcnow())
            db.execute(
                "INSERT INTO deployments (name, model_name, model_version, target, state, url, config, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "model_name = excluded.model_name, model_version = excluded.model_version, "
                "target = excluded.target, state = excluded.state, url = excluded.url, "
                "config = excluded.config, updated_at = excluded.updated_at",
                [name, parsed.name, version, target, state, url, json.dumps(dict(config or {})), now, now],
            )
            return self._deployments(db, "name = ?", [name])[0]

    def claim_deployment(self, name: str, model: str | ModelRef, *, target: str, claimant: str,
                         checked: Deployment | None) -> Deployment:
        """Record that ``claimant`` is deploying ``name`` (state ``creating``): of several racing, exactly one wins.

        Args:
            claimant: who deploys (a process stamp), recorded so that a claim its dead owner left can be taken over.
            checked: the record the caller found and checked is no longer serving (None: there was none); the claim
                fails if the record changed since.

        Raises:
            ConflictError: the name is live (deployed, or being deployed by another process).
            NotFoundError: the model version does not exist.
        """
        check_name(name)
        parsed = parse_ref(model) if isinstance(model, str) else model
        with self.write() as db:
            found = self._deployments(db, "name = ?", [name])
            current = found[0] if found else None
            unchanged = checked is not None and current is not None and (current.state, current.updated_at) == (
                checked.state, checked.updated_at)
            if current is not None and current.is_live and not unchanged:
                doing = "is being deployed" if current.state == "creating" else "is already deployed"
                raise ConflictError(
                    f"Service {name!r} {doing} ({current.model_name}:{current.model_version} on {current.target}, "
                    f"{current.state}) by another process. Use %update {name} --model REF once it is up, or pick "
                    "another --name.")
            version = self._resolve(db, parsed, None)
            now = _stamp(utcnow())
            db.execute(
                "INSERT INTO deployments (name, model_name, model_version, target, state, url, config, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, 'creating', NULL, ?, ?, ?) ON CONFLICT(name) DO UPDATE "
                "SET model_name = excluded.model_name, model_version = excluded.model_version, "
                "target = excluded.target, state = excluded.state, url = NULL, config = excluded.config, "
                "updated_at = excluded.updated_at",
                [name, parsed.name, version, target, json.dumps({"claimant": claimant}), now, now],
            )
            return self._deployments(db, "name = ?", [name])[0]

    def release_claim(self, name: str, claimant: str, previous: Deployment | None) -> None:
        """Undo ``claimant``'s claim on ``name`` if no deployment was recorded over it (the deploy raised before
        its target started anything): the record goes back to ``previous`` (None: no record)."""
        with self.write() as db:
            mine = "name = ? AND state = 'creating' AND json_extract(config, '$.claimant') = ?"
            if previous is None:
                db.execute(f"DELETE FROM deployments WHERE {mine}", [name, claimant])
                return
            p = previous
            db.execute(
                "UPDATE deployments SET model_name = ?, model_version = ?, target = ?, state = ?, url = ?, config = ?, "
                f"created_at = ?, updated_at = ? WHERE {mine}",
                [p.model_name, p.model_version, p.target, p.state, p.url, json.dumps(dict(p.config)),
                 _stamp(p.created_at), _stamp(p.updated_at), name, claimant])

    def set_deployment_state(self, name: str, state: str) -> Deployment:
        """Change the recorded state of a deployment.

        Raises:
            NotFoundError: no deployment has that name.
        """
        with self.write() as db:
            changed = db.execute(
                "UPDATE deployments SET state = ?, updated_at = ? WHERE name = ?", [state, _stamp(utcnow()), name]
            ).rowcount
            if not changed:
                raise self._no_deployment(db, name)
            return self._deployments(db, "name = ?", [name])[0]

    def _no_deployment(self, db: sqlite_utils.Database, name: str) -> NotFoundError:
        names = [d.name for d in self._deployments(db)]
        return NotFoundError(f"No deployment named {name!r}. Deployments: {', '.join(names) or 'none'}.")

    def deployments(self) -> list[Deployment]:
        """Every recorded deployment, by name."""
        with self.read() as db:
            return self._deployments(db)

    def get_deployment(self, name: str) -> Deployment:
        """The deployment with this name.

        Raises:
            NotFoundError: there is none; the message lists those that exist.
        """
        with self.read() as db:
            found = self._deployments(db, "name = ?", [name])
            if not found:
                raise self._no_deployment(db, name)
            return found[0]

    # -- reports ---------------------------------------------------------------------------

    def set_report(self, version: ModelVersion, kind: str, body: Mapping[str, Any]) -> None:
        """Store (or replace) the report of ``kind`` (``onnx``, ``validation``, ``profile``...) for a version.

        Raises:
            NotFoundError: the version does not exist (any more).
        """
        with self.write() as db:
            self._resolve(db, ModelRef(version.name, version=version.version), None)
            db.execute("INSERT INTO reports (name, version, kind, body, created_at) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT(name, version, kind) DO UPDATE SET body = excluded.body, "
                       "created_at = excluded.created_at",
                       [version.name, version.version, kind, json.dumps(dict(body), sort_keys=True),
                        _stamp(utcnow())])

    def gated_aliases(self, name: str) -> list[str]:
        """The aliases of ``name`` that only point at validated versions."""
        with self.read() as db:
            return [r[0] for r in db.execute("SELECT alias FROM alias_gates WHERE name = ? ORDER BY alias", [name])]

    def reports(self, version: ModelVersion) -> dict[str, Any]:
        """The reports stored for a version, by kind."""
        with self.read() as db:
            return {kind: json.loads(body) for kind, body in db.execute(
                "SELECT kind, body FROM reports WHERE name = ? AND version = ? ORDER BY kind",
                [version.name, version.version])}

    # -- images ----------------------------------------------------------------------------

    def record_image(
        self,
        tag: str,
        version: ModelVersion,
        *,
        context_digest: str,
        image_id: str,
        size: int,
        base_image: str,
        gpu: bool = False,
        build_seconds: float | None = None,
    ) -> Image:
        """Record (or refresh) the image built under ``tag`` for ``version``.

        Raises:
            NotFoundError: the model version does not exist (any more).
        """
        with self.write() as db:
            self._resolve(db, ModelRef(version.name, version=version.version), None)
            db.execute(
                "INSERT INTO images (tag, name, version, context_digest, image_id, size, base_image, gpu, "
                "build_seconds, built_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(tag) DO UPDATE SET "
                "context_digest = excluded.context_digest, image_id = excluded.image_id, size = excluded.size, "
                "base_image = excluded.base_image, gpu = excluded.gpu, build_seconds = excluded.build_seconds, "
                "built_at = excluded.built_at",
                [tag, version.name, version.version, context_digest, image_id, size, base_image, int(gpu),
                 build_seconds, _stamp(utcnow())],
            )
            return self._images(db, "tag = ?", [tag])[0]

    def _images(self, db: sqlite_utils.Database, where: str, params: list[Any]) -> list[Image]:
        return [
            Image(tag=r["tag"], model_name=r["name"], model_version=r["version"],
                  context_digest=r["context_digest"], image_id=r["image_id"], size=r["size"],
                  base_image=r["base_image"], gpu=bool(r["gpu"]), build_seconds=r["build_seconds"],
                  built_at=datetime.fromisoformat(r["built_at"]))
            for r in db.query(f"SELECT * FROM images WHERE {where} ORDER BY built_at DESC, tag", params)
        ]

    def forget_image(self, tag: str) -> None:
        """Drop the record of an image (after it was removed from the engine). Unknown tags are ignored."""
        with self.write() as db:
            db.execute("DELETE FROM images WHERE tag = ?", [tag])

    def images(self, version: ModelVersion | None = None) -> list[Image]:
        """The images recorded for ``version`` (or for every version), newest first."""
        with self.read() as db:
            if version is None:
                return self._images(db, "1", [])
            return self._images(db, "name = ? AND version = ?", [version.name, version.version])

    # -- artifacts -------------------------------------------------------------------------

    def verified_artifact(self, version: ModelVersion) -> Path:
        """Return the artifact folder of ``version`` after checking every file's sha256.

        Raises:
            IntegrityError: a file is missing or changed; the message names it.
        """
        return self.artifacts.verify(version.sha256, version.files)


def validation_problem(report: Mapping[str, Any] | None) -> str | None:
    """Why a stored validation report does not let a version through a gate (None: it passed)."""
    if report is None:
        return "has never been validated"
    if not report.get("passed"):
        failed = [c["check"] for c in report.get("checks", []) if not c.get("passed")]
        return f"failed its validation ({'; '.join(failed) or 'see %validate'})"
    return None


def _ranges(numbers: list[int]) -> str:
    """'1-3, 5, 7-9' for [1, 2, 3, 5, 7, 8, 9]."""
    parts: list[str] = []
    start = prev = None
    for n in numbers:
        if start is None:
            start = prev = n
        elif n == prev + 1:  # type: ignore[operator]
            prev = n
        else:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = n
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ", ".join(parts)
