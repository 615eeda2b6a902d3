"""Names and references: what a model name, an alias, a tag and ``NAME[:VERSION|@ALIAS]`` may be, and which
version a reference names in the database (:func:`resolve`)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from mlops_magics.errors import InvalidInputError, NotFoundError
from mlops_magics.registry.db import stamp

if TYPE_CHECKING:
    import sqlite_utils

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
ALIAS_PATTERN = r"[A-Za-z][A-Za-z0-9_-]{0,63}"
TAG_KEY_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}"
TAG_VALUE_MAX = 4096
#: The largest version number: SQLite stores integers in 64 bits.
MAX_VERSION = 2**63 - 1

_NAME_RE = re.compile(NAME_PATTERN)
_ALIAS_RE = re.compile(ALIAS_PATTERN)
_TAG_KEY_RE = re.compile(TAG_KEY_PATTERN)


def _checked(value: str, pattern: re.Pattern[str], what: str, rule: str) -> str:
    """``value`` if it matches ``pattern`` in full, else an error quoting it with the ``rule`` it breaks."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidInputError(f"Invalid {what} {value!r}: {rule}")
    return value


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid model name.

    Raises:
        InvalidInputError: it is not; the message gives the allowed pattern.
    """
    return _checked(name, _NAME_RE, "model name", "a name is 1-128 characters, letters, digits, '.', '_' or '-', "
                                                  "starting with a letter or digit (e.g. 'iris-classifier').")


def check_alias(alias: str) -> str:
    """Return ``alias`` if it is a valid alias name.

    Raises:
        InvalidInputError: it is not; the message gives the allowed pattern.
    """
    _checked(alias, _ALIAS_RE, "alias", "an alias is 1-64 characters, letters, digits, '_' or '-', starting with a "
                                        "letter (e.g. 'production', 'staging', 'champion-2').")
    if alias == "latest":
        raise InvalidInputError(
            "'latest' is reserved: NAME:latest always means the newest version. Pick another alias."
        )
    return alias


def check_tag(key: str, value: str) -> tuple[str, str]:
    """Return ``(key, value)`` if both are valid.

    Raises:
        InvalidInputError: the key breaks the pattern or the value is too long.
    """
    _checked(key, _TAG_KEY_RE, "tag key", "a key is 1-128 characters, letters, digits, '_', '.', ':', '/' or '-' "
                                          "(e.g. 'team', 'data.version').")
    if not isinstance(value, str) or len(value) > TAG_VALUE_MAX:
        raise InvalidInputError(
            f"Invalid value for tag {key!r}: a value is a string of at most {TAG_VALUE_MAX} characters."
        )
    return key, value


def parse_tag(text: str) -> tuple[str, str]:
    """Parse ``key=value`` (the value may be empty or contain '=').

    Raises:
        InvalidInputError: there is no '=' or the key or value is invalid.
    """
    key, sep, value = text.partition("=")
    if not sep:
        raise InvalidInputError(
            f"Malformed tag {text!r}: write tags as key=value, e.g. --tag team=vision."
        )
    return check_tag(key.strip(), value.strip())


def parse_tags(items: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """Parse several ``key=value`` strings into a dict (a later key wins)."""
    return dict(parse_tag(item) for item in items or ())


@dataclass(frozen=True)
class ModelRef:
    """A parsed ``NAME``, ``NAME:VERSION``, ``NAME:latest`` or ``NAME@ALIAS``.

    ``version`` and ``alias`` are both ``None`` for a bare name or ``NAME:latest``: the newest version.
    """

    name: str
    version: int | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        if self.version is not None and (
                isinstance(self.version, bool) or not isinstance(self.version, int)
                or not 1 <= self.version <= MAX_VERSION):
            raise InvalidInputError(
                f"Invalid version {_quoted(self.version)} of {self.name!r}: a version is a whole number from 1 to "
                f"{MAX_VERSION} (e.g. {self.name}:1)."
            )

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def parse_ref(text: str) -> ModelRef:
    """Parse a model reference.

    Raises:
        InvalidInputError: the text is not ``NAME``, ``NAME:VERSION``, ``NAME:latest`` or ``NAME@ALIAS``.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError(
            "A model reference is needed: NAME, NAME:VERSION or NAME@ALIAS (e.g. iris:2, iris@production)."
        )
    text = text.strip()
    if "@" in text:
        name, _, alias = text.partition("@")
        return ModelRef(check_name(name), alias=check_alias(alias))
    if ":" in text:
        name, _, version = text.partition(":")
        check_name(name)
        if version == "latest":
            return ModelRef(name)
        # ASCII digits only ('²' is a digit to str.isdigit), and at most 19 of them: SQLite's integers are 64-bit
        # (and int() refuses strings of over 4,300 digits).
        if not (version.isascii() and version.isdigit()) or len(version) > 19 or not (
                1 <= int(version) <= MAX_VERSION):
            raise InvalidInputError(
                f"Invalid version {_quoted(version)} in {_quoted(text)}: a version is a whole number from 1 to "
                f"{MAX_VERSION} (e.g. {name}:1), 'latest', or use {name}@ALIAS for an alias."
            )
        return ModelRef(name, version=int(version))
    return ModelRef(check_name(text))


def _quoted(value: object, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters (hostile input stays short in a message)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 5]}...' ({len(str(value)):,} characters)"


# -- suggestions for names that are not found -------------------------------------------------

#: Names a "not found" message lists at most (the rest are counted).
LISTED_NAMES = 20


def close_names(value: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates closest to ``value`` (difflib's ratio of at least 0.6), best first; none when it is long.

    Every name lookup suggests from here, so that a typo gets the same help wherever it is made.
    """
    if not isinstance(value, str) or len(value) > 200:  # hostile input stays cheap
        return []
    pool = [c for c in dict.fromkeys(candidates) if c != value]
    close = difflib.get_close_matches(value, pool, n=n)
    if not close:  # 'IRIS' for 'iris': difflib's ratio is case-sensitive
        lowered = {c.lower(): c for c in pool}
        close = [lowered[c] for c in difflib.get_close_matches(value.lower(), list(lowered), n=n)]
    return close


def did_you_mean(value: str, candidates: Iterable[str], n: int = 3) -> str:
    """``" Did you mean 'iris'?"`` for the names close to ``value`` (:func:`close_names`); ``""`` when none is."""
    close = close_names(value, candidates, n)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def listing(names: Iterable[str], limit: int = LISTED_NAMES, *, quote: bool = True) -> str:
    """``"'a', 'b', 'c'"``: at most ``limit`` names (quoted unless ``quote`` is false), then how many more."""
    items = list(names)
    shown = ", ".join(repr(n) if quote else n for n in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# -- which version a reference names ------------------------------------------------------------


def no_model(db: sqlite_utils.Database, name: str) -> NotFoundError:
    """The error for a model name the registry does not hold: close matches, and what it holds."""
    names = [r[0] for r in db.execute("SELECT DISTINCT name FROM versions ORDER BY name")]
    where = f"Registered: {listing(names)}." if names else "The registry is empty."
    return NotFoundError(f"No model named {_quoted(name)}.{did_you_mean(name, names)} {where} Register it with "
                         f"%register VAR --name {name}.")


def resolve(db: sqlite_utils.Database, ref: ModelRef, as_of: datetime | None = None) -> int:
    """The version number ``ref`` names (at ``as_of`` for aliases and latest).

    Raises:
        NotFoundError: no such model, version or alias; the message lists what exists.
    """
    latest = db.execute("SELECT max(version) FROM versions WHERE name = ?", [ref.name]).fetchone()[0]
    if latest is None:
        raise no_model(db, ref.name)
    if ref.version is not None:
        if db.execute(
            "SELECT 1 FROM versions WHERE name = ? AND version = ?", [ref.name, ref.version]
        ).fetchone() is None:
            versions = [r[0] for r in db.execute(
                "SELECT version FROM versions WHERE name = ? ORDER BY version", [ref.name]
            )]
            raise NotFoundError(
                f"Model {ref.name!r} has no version {ref.version}. "
                f"Versions: {ranges(versions)} (latest {latest})."
            )
        return ref.version
    if ref.alias is not None:
        return resolve_alias(db, ref.name, ref.alias, as_of)
    if as_of is None:
        return int(latest)
    then = db.execute(
        "SELECT max(version) FROM versions WHERE name = ? AND created_at <= ?", [ref.name, stamp(as_of)]
    ).fetchone()[0]
    if then is None:
        raise NotFoundError(f"Model {ref.name!r} had no version yet on {stamp(as_of)}.")
    return int(then)


def resolve_alias(db: sqlite_utils.Database, name: str, alias: str, as_of: datetime | None = None) -> int:
    """The version ``name@alias`` points at (pointed at, at ``as_of``).

    Raises:
        NotFoundError: the model has no such alias (then); the message lists its aliases.
    """
    if as_of is None:
        row = db.execute("SELECT version FROM aliases WHERE name = ? AND alias = ?", [name, alias]).fetchone()
    else:
        row = db.execute(
            "SELECT version FROM alias_history WHERE name = ? AND alias = ? AND at <= ? "
            "ORDER BY at DESC, id DESC LIMIT 1",
            [name, alias, stamp(as_of)],
        ).fetchone()
    if row is not None and row[0] is not None:
        return int(row[0])
    current = db.execute(
        "SELECT alias, version FROM aliases WHERE name = ? ORDER BY alias", [name]
    ).fetchall()
    known = ", ".join(f"{a} -> {v}" for a, v in current) or "none"
    when = f" on {stamp(as_of)}" if as_of else ""
    raise NotFoundError(
        f"Model {name!r} has no alias {_quoted(alias)}{when}.{did_you_mean(alias, [a for a, _ in current])} "
        f"Aliases: {known}. Set it with %alias {name}:VERSION {alias}."
    )


def ranges(numbers: list[int]) -> str:
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
