"""Names and references: what a model name, an alias, a tag and ``NAME[:VERSION|@ALIAS]`` may be."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlops_magics.errors import InvalidInputError

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
ALIAS_PATTERN = r"[A-Za-z][A-Za-z0-9_-]{0,63}"
TAG_KEY_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}"
TAG_VALUE_MAX = 4096
#: The largest version number: SQLite stores integers in 64 bits.
MAX_VERSION = 2**63 - 1

_NAME_RE = re.compile(NAME_PATTERN)
_ALIAS_RE = re.compile(ALIAS_PATTERN)
_TAG_KEY_RE = re.compile(TAG_KEY_PATTERN)


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid model name.

    Raises:
        InvalidInputError: it is not; the message gives the allowed pattern.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidInputError(
            f"Invalid model name {name!r}: a name is 1-128 characters, letters, digits, '.', '_' "
            "or '-', starting with a letter or digit (e.g. 'iris-classifier')."
        )
    return name


def check_alias(alias: str) -> str:
    """Return ``alias`` if it is a valid alias name.

    Raises:
        InvalidInputError: it is not; the message gives the allowed pattern.
    """
    if not isinstance(alias, str) or not _ALIAS_RE.fullmatch(alias):
        raise InvalidInputError(
            f"Invalid alias {alias!r}: an alias is 1-64 characters, letters, digits, '_' or '-', "
            "starting with a letter (e.g. 'production', 'staging', 'champion-2')."
        )
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
    if not isinstance(key, str) or not _TAG_KEY_RE.fullmatch(key):
        raise InvalidInputError(
            f"Invalid tag key {key!r}: a key is 1-128 characters, letters, digits, '_', '.', ':', '/' "
            "or '-' (e.g. 'team', 'data.version')."
        )
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
