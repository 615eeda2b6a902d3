"""Rolling a registry file back to an older schema version, as an older mlops-magics left it (the migration tests).

Each migration's undo is written here once: a new migration without one fails every rollback test, saying so.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mlops_magics.registry.migrations import SCHEMA_VERSION

#: The statements that undo each migration's schema changes (data moves, like 7's keys, stay as they are).
UNDO: dict[int, tuple[str, ...]] = {
    2: ("DROP TABLE inference_configs",),
    3: ("DROP TABLE images", "ALTER TABLE inference_configs DROP COLUMN dockerfile_steps"),
    4: ("DROP TABLE reports",),
    5: ("DROP TABLE alias_gates",),
    6: tuple(f"ALTER TABLE versions DROP COLUMN {column}"
             for column in ("origin", "origin_path", "trusted_at", "trusted_by")),
    7: (),
    8: ("DROP TABLE measured_metrics", "ALTER TABLE versions DROP COLUMN metrics"),
    9: ("ALTER TABLE inference_configs DROP COLUMN script_origin",),
    10: ("DROP TABLE endpoint_changes", "DROP TABLE endpoints"),
}


def roll_back(database: Path, to: int) -> sqlite3.Connection:
    """Undo the migrations after ``to`` in the registry file ``database``; the open connection, for checks."""
    missing = [number for number in range(to + 1, SCHEMA_VERSION + 1) if number not in UNDO]
    assert not missing, f"tests/schema.py has no undo for migration(s) {missing}: add what reverses them to UNDO"
    conn = sqlite3.connect(database)
    for number in range(SCHEMA_VERSION, to, -1):
        for statement in UNDO[number]:
            conn.execute(statement)
    conn.execute("DELETE FROM _migrations WHERE id > ?", [to])
    conn.commit()
    return conn
