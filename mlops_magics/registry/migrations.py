"""Schema migrations of the registry database.

Deployments keep no foreign key to versions on purpose: the record of a finished deployment
outlives the version it served (only live deployments block a delete). Endpoints name their members' services
in their routing (JSON), not by a foreign key, for the same reason.

Append a new migration to :data:`MIGRATIONS` for every schema change; never edit one that has
shipped. Each runs inside the write transaction that records it in ``_migrations``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_magics.registry.secrets import KeyStore, ServiceKeys, new_key

if TYPE_CHECKING:
    import sqlite_utils

# The columns that name a version, and the key that deletes a row with its version, in the tables that hang off
# ``versions``. The text of every statement below is what shipped: these only spell it once.
_VERSION_KEY = """name TEXT NOT NULL,
            version INTEGER NOT NULL,"""
_GONE_WITH_ITS_VERSION = "FOREIGN KEY (name, version) REFERENCES versions(name, version) ON DELETE CASCADE"


def _initial(db: sqlite_utils.Database) -> None:
    statements = [
        """CREATE TABLE models (
            name TEXT PRIMARY KEY,
            last_version INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE versions (
            name TEXT NOT NULL REFERENCES models(name),
            version INTEGER NOT NULL,
            flavor TEXT NOT NULL,
            flavor_options TEXT NOT NULL DEFAULT '{}',
            framework TEXT,
            framework_version TEXT,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            files TEXT NOT NULL,
            signature TEXT,
            input_example TEXT,
            description TEXT NOT NULL DEFAULT '',
            lineage TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            tags TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (name, version)
        )""",
        "CREATE INDEX versions_sha256 ON versions(sha256)",
        f"""CREATE TABLE tags (
            {_VERSION_KEY}
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (name, version, key),
            {_GONE_WITH_ITS_VERSION}
        )""",
        "CREATE INDEX tags_key_value ON tags(key, value)",
        """CREATE TABLE aliases (
            name TEXT NOT NULL,
            alias TEXT NOT NULL,
            version INTEGER NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (name, alias),
            FOREIGN KEY (name, version) REFERENCES versions(name, version)
        )""",
        """CREATE TABLE alias_history (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            alias TEXT NOT NULL,
            version INTEGER,
            at TEXT NOT NULL,
            by TEXT NOT NULL
        )""",
        "CREATE INDEX alias_history_lookup ON alias_history(name, alias, at)",
        """CREATE TABLE deployments (
            name TEXT PRIMARY KEY,
            model_name TEXT NOT NULL,
            model_version INTEGER NOT NULL,
            target TEXT NOT NULL,
            state TEXT NOT NULL,
            url TEXT,
            config TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX deployments_model ON deployments(model_name, model_version)",
    ]
    for sql in statements:
        db.execute(sql)


def _inference_configs(db: sqlite_utils.Database) -> None:
    # version 0 holds the configuration of every version of the model; a row for a version overrides it.
    db.execute(
        """CREATE TABLE inference_configs (
            name TEXT NOT NULL,
            version INTEGER NOT NULL DEFAULT 0,
            script TEXT,
            script_line_offset INTEGER,
            environment TEXT,
            assets TEXT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (name, version)
        )"""
    )


def _images(db: sqlite_utils.Database) -> None:
    db.execute("ALTER TABLE inference_configs ADD COLUMN dockerfile_steps TEXT")
    db.execute(
        """CREATE TABLE images (
            tag TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            context_digest TEXT NOT NULL,
            image_id TEXT NOT NULL,
            size INTEGER NOT NULL,
            base_image TEXT NOT NULL,
            gpu INTEGER NOT NULL DEFAULT 0,
            build_seconds REAL,
            built_at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX images_model ON images(name, version)")


def _reports(db: sqlite_utils.Database) -> None:
    db.execute(
        f"""CREATE TABLE reports (
            {_VERSION_KEY}
            kind TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (name, version, kind),
            {_GONE_WITH_ITS_VERSION}
        )"""
    )


def _alias_gates(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE alias_gates (
            name TEXT NOT NULL,
            alias TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (name, alias)
        )"""
    )


def _trust(db: sqlite_utils.Database) -> None:
    # Where a version came from ('object': saved from memory; 'path': a file or folder registered as it was;
    # 'unknown': a row written without saying) and who trusted it to be loaded, when. A NULL trusted_at is
    # untrusted: a row that does not say is never trusted by default.
    db.execute("ALTER TABLE versions ADD COLUMN origin TEXT NOT NULL DEFAULT 'unknown'")
    db.execute("ALTER TABLE versions ADD COLUMN origin_path TEXT")
    db.execute("ALTER TABLE versions ADD COLUMN trusted_at TEXT")
    db.execute("ALTER TABLE versions ADD COLUMN trusted_by TEXT")
    # Versions registered before: saving an object records its class (pickled flavors) or writes model.onnx;
    # a registered path keeps its own file name and no class. Objects were the registrant's own: trusted then.
    db.execute(
        """UPDATE versions SET origin = CASE
            WHEN flavor = 'files' THEN 'path'
            WHEN flavor = 'onnx' THEN CASE WHEN json_extract(flavor_options, '$.file') = 'model.onnx'
                                           THEN 'object' ELSE 'path' END
            WHEN json_extract(flavor_options, '$.class') IS NULL THEN 'path'
            ELSE 'object' END"""
    )
    db.execute("UPDATE versions SET trusted_at = created_at, trusted_by = created_by WHERE origin = 'object'")


def _keys_out_of_the_database(db: sqlite_utils.Database) -> None:
    # Keys move to 0600 files under $MLOPS_HOME/secrets; the database keeps only their path.
    db.execute("PRAGMA secure_delete = ON")  # the freed pages that held keys are zeroed
    home = Path(next(row[2] for row in db.execute("PRAGMA database_list") if row[1] == "main")).parent
    store = KeyStore(home)
    for name, state, text in db.execute("SELECT name, state, config FROM deployments").fetchall():
        config = json.loads(text)
        key = config.pop("auth_key", None)
        if key is None:
            continue
        if state != "deleted":
            store.put(ServiceKeys(name, str(key), new_key()))
            config["key_file"] = str(store.path(name))
            config["key_on_command_line"] = True  # its running server got the key itself: it reads no file
        db.execute("UPDATE deployments SET config = ? WHERE name = ?", [json.dumps(config), name])


def _metrics(db: sqlite_utils.Database) -> None:
    # Metrics given at registration are part of the version: a column of its row (so in its manifest too), never
    # changed. Metrics measured later (by a validation) hang off it, the last measurement per source and key.
    db.execute("ALTER TABLE versions ADD COLUMN metrics TEXT NOT NULL DEFAULT '{}'")
    db.execute(
        f"""CREATE TABLE measured_metrics (
            {_VERSION_KEY}
            source TEXT NOT NULL,
            key TEXT NOT NULL,
            value REAL NOT NULL,
            detail TEXT NOT NULL DEFAULT '{{}}',
            measured_at TEXT NOT NULL,
            PRIMARY KEY (name, version, source, key),
            {_GONE_WITH_ITS_VERSION}
        )"""
    )


def _script_origin(db: sqlite_utils.Database) -> None:
    # When an entry script was saved and from where (a notebook and its cell number), so that "which script is
    # live?" has an answer: JSON {"saved_at", "notebook", "cell"}, set with the script and cleared with it.
    db.execute("ALTER TABLE inference_configs ADD COLUMN script_origin TEXT")


def _endpoints(db: sqlite_utils.Database) -> None:
    # An endpoint is one router in front of member deployments. Its routing (JSON: generation, members with their
    # services and weights, shadow, sticky header) changes only by set_endpoint_routing, which gives each change the
    # next generation and records it in endpoint_changes (what a rollback goes back to). Its config holds the router
    # process's facts (port, pid...), opaque to the registry.
    db.execute(
        """CREATE TABLE endpoints (
            name TEXT PRIMARY KEY,
            target TEXT NOT NULL,
            state TEXT NOT NULL,
            url TEXT,
            routing TEXT NOT NULL,
            config TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE endpoint_changes (
            endpoint TEXT NOT NULL REFERENCES endpoints(name) ON DELETE CASCADE,
            generation INTEGER NOT NULL,
            routing TEXT NOT NULL,
            reason TEXT NOT NULL,
            at TEXT NOT NULL,
            by TEXT NOT NULL,
            PRIMARY KEY (endpoint, generation)
        )"""
    )


#: (id, name, apply). Ids are 1, 2, 3... in order.
MIGRATIONS: list[tuple[int, str, Callable[[sqlite_utils.Database], None]]] = [
    (1, "initial schema: models, versions, tags, aliases, alias history, deployments", _initial),
    (2, "inference configurations: entry script, environment and assets per model or version",
     _inference_configs),
    (3, "Docker images built for model versions; extra Dockerfile steps in inference configurations", _images),
    (4, "reports stored with a version: ONNX conversion, validation, profile", _reports),
    (5, "aliases that only point at versions that passed their validation", _alias_gates),
    (6, "where each version came from (an object or a path) and who trusted it to be loaded, when", _trust),
    (7, "deployment keys out of the database, into 0600 files under secrets/", _keys_out_of_the_database),
    (8, "metrics: given at registration (part of the version) and measured later (with their source)", _metrics),
    (9, "when an entry script was saved, and from which notebook cell", _script_origin),
    (10, "endpoints (a router in front of member deployments) and the history of their routing", _endpoints),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]
