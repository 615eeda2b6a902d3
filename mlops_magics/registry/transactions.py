"""What a registry write transaction does beside the database, and how blocks of it nest.

A write transaction (``BEGIN IMMEDIATE``) can change the artifact store too: it journals those changes
first (:class:`~mlops_magics.registry.journals.Journal`), registers how to undo each one if it does not
commit (:meth:`Transaction.on_rollback`) and what to finish once it did (:meth:`Transaction.after_commit`).

Blocks nest, as sqlite-utils' ``Database.atomic()`` and Python's ``sqlite3`` savepoints do: a write opened
inside another on the same thread is a ``SAVEPOINT``. When the inner block raises, only it is rolled back
(its database changes and the store undo steps it registered); the outer block goes on. ``after_commit``
steps wait for the outermost block to commit; an exception that escapes the outermost block rolls back
everything. A transaction belongs to the thread that opened it: another thread gets its own connection
and its own transaction (waiting for the write lock).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mlops_magics.registry.artifacts import ArtifactStore
from mlops_magics.registry.journals import Journal

if TYPE_CHECKING:
    import sqlite_utils

log = logging.getLogger(__name__)


class Transaction:
    """One write transaction on one connection: its journal, what to undo, what to finish, its savepoints.

    Args:
        store: the artifact store the transaction may change.
        db: the connection the transaction is open on (``BEGIN IMMEDIATE`` done).
    """

    def __init__(self, store: ArtifactStore, db: sqlite_utils.Database) -> None:
        self.store = store
        self.db = db
        self._journal: Journal | None = None
        self._undo: list[Callable[[], None]] = []
        self._after: list[Callable[[], None]] = []
        self._depth = 0
        self._unsettled = False  # a nested block's undo failed: keep the journal for recovery
        #: Why the transaction can no longer commit (a nested block could not be rolled back on its own).
        self.doomed: sqlite3.Error | None = None

    def journal(self) -> Journal:
        """This transaction's journal, created on first use."""
        if self._journal is None:
            self._journal = self.store.open_journal()
        return self._journal

    def on_rollback(self, step: Callable[[], None]) -> None:
        """Run ``step`` if the block it is registered in does not commit (steps run last first)."""
        self._undo.append(step)

    def after_commit(self, step: Callable[[], None]) -> None:
        """Run ``step`` once the outermost block committed."""
        self._after.append(step)

    @contextmanager
    def savepoint(self) -> Iterator[sqlite_utils.Database]:
        """A nested block: committed with the transaction, or rolled back alone if it raises.

        Raises:
            Whatever the block raised, once the block is rolled back.
        """
        self._depth += 1
        name = f"mlops_write_{self._depth}"
        undo_mark, after_mark = len(self._undo), len(self._after)
        try:
            self.db.execute(f"SAVEPOINT {name}")
            try:
                yield self.db
                self.db.execute(f"RELEASE {name}")
            except BaseException:
                self._roll_back_to(name, undo_mark, after_mark)
                raise
        finally:
            self._depth -= 1

    def _roll_back_to(self, name: str, undo_mark: int, after_mark: int) -> None:
        undo = self._undo[undo_mark:]
        del self._undo[undo_mark:], self._after[after_mark:]
        try:
            if not self.db.conn.in_transaction:  # SQLite rolled the whole transaction back (disk full, I/O error)
                raise sqlite3.OperationalError("SQLite rolled back the whole transaction")
            self.db.execute(f"ROLLBACK TO {name}")
            self.db.execute(f"RELEASE {name}")
        except sqlite3.Error as exc:
            log.warning("registry: rolling back a nested write failed; its transaction cannot commit", exc_info=True)
            self.doomed = exc
        if not self._run(reversed(undo), "undoing a nested write that did not commit"):
            self._unsettled = True

    def undo(self) -> None:
        """The transaction rolled back: undo its changes to the store, then release its journal."""
        self._close(self._run(reversed(self._undo), "undoing a write that did not commit"))

    def commit(self) -> None:
        """The transaction committed: finish its changes to the store, then release its journal."""
        self._close(self._run(iter(self._after), "finishing a committed write"))

    def _run(self, steps: Iterator[Callable[[], None]], doing: str) -> bool:
        settled = True
        for step in steps:
            try:
                step()
            except Exception:  # the journal is kept: the next open finishes the job
                log.warning("artifact store %s: %s failed; the next open recovers it", self.store.root, doing,
                            exc_info=True)
                settled = False
        return settled

    def _close(self, settled: bool) -> None:
        if self._journal is not None:
            self._journal.close(keep=self._unsettled or not settled)
