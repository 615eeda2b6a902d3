"""The routes file and the choice of a member for each request.

The file is JSON, written whole and renamed into place by whoever changes the routing; the router reads it
again when it changes (checked a few times a second, off the request path), so a new table takes over
between two requests and no request is lost. A file that cannot be used leaves the table in force and
says why in the log.
"""

from __future__ import annotations

import os
import random
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from mlops_backend.keys import KeyFileError, read_key_file

#: Buckets the weights are spread over: weights are percentages.
BUCKETS = 100
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_MAX_FILE_BYTES = 1 << 20


class RoutesError(Exception):
    """The routes file cannot be used; the message says what is wrong in it."""


@dataclass(frozen=True)
class Member:
    """One deployment behind the endpoint."""

    name: str
    host: str
    port: int
    weight: int
    #: The ``Authorization`` header the member wants (from its key file), or None.
    authorization: bytes | None = None
    #: Its key file (re-read when it changes).
    key_file: Path | None = None

    @property
    def address(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class RouteTable:
    """Who answers: the members with their weights, the shadow and its share, the sticky header."""

    generation: int
    endpoint: str
    members: tuple[Member, ...]
    shadow: Member | None = None
    shadow_percent: int = 0
    #: Lower-case header name: a request carrying it goes to the member its value hashes to.
    sticky_header: bytes | None = None
    record: bool = True
    #: Seconds a member may take to answer (then 504).
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        slots: list[Member] = []
        for member in self.members:
            slots += [member] * member.weight
        object.__setattr__(self, "_slots", tuple(slots))

    @property
    def serving(self) -> tuple[Member, ...]:
        """The members with weight."""
        return tuple(m for m in self.members if m.weight > 0)

    def choose(self, sticky: bytes | None = None) -> Member:
        """The member that answers a request: by the hash of ``sticky`` (the sticky header's value) when given,
        else at random, in proportion to the weights."""
        slots: tuple[Member, ...] = self._slots  # type: ignore[attr-defined]
        if sticky is not None:
            return slots[zlib.crc32(sticky) % len(slots)]
        return slots[int(random.random() * len(slots))]

    def shadows(self) -> bool:
        """Whether this request gets a shadow copy (drawn at ``shadow_percent``)."""
        return self.shadow is not None and (self.shadow_percent >= 100 or random.random() * 100 < self.shadow_percent)

    def member(self, name: str) -> Member | None:
        """The member named ``name``, or None."""
        return next((m for m in self.members if m.name == name), None)

    def others(self, failed: Member) -> tuple[Member, ...]:
        """The members with weight other than ``failed``, heaviest first: where a refused request goes next."""
        return tuple(sorted((m for m in self.serving if m.name != failed.name), key=lambda m: -m.weight))

    def describe(self) -> dict[str, Any]:
        """What the router serves, for ``/endpoint`` (no keys)."""
        return {"generation": self.generation, "endpoint": self.endpoint,
                "members": [{"name": m.name, "address": m.address, "weight": m.weight} for m in self.members],
                "shadow": None if self.shadow is None else {"name": self.shadow.name, "percent": self.shadow_percent},
                "sticky_header": None if self.sticky_header is None else self.sticky_header.decode("latin-1"),
                "record": self.record}


def file_identity(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is replaced: (inode, size, mtime ns); None when it is missing."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def load(path: Path) -> RouteTable:
    """The route table in ``path``.

    Raises:
        RoutesError: the file is missing, too large, not JSON, or not a valid table (the message says where).
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise RoutesError(f"The routes file {str(path)!r} cannot be read: {exc.strerror or exc}.") from None
    if len(raw) > _MAX_FILE_BYTES:
        raise RoutesError(f"The routes file {str(path)!r} is larger than {_MAX_FILE_BYTES} bytes.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RoutesError(f"The routes file {str(path)!r} is not JSON: {exc}.") from None
    return parse(data, path.parent)


def load_newest(paths: Sequence[Path]) -> RouteTable:
    """The table of highest generation among the routes files ``paths`` (the first of equal ones). A file that
    is missing or cannot be used is passed over while another one can be used: several files let a routes file
    written now (a pod's own scratch file) overtake one that a slower channel brings later (a ConfigMap volume).

    Raises:
        RoutesError: no file can be used (what is wrong with each).
    """
    tables: list[RouteTable] = []
    problems: list[str] = []
    for path in paths:
        try:
            tables.append(load(path))
        except RoutesError as exc:
            problems.append(str(exc))
    if not tables:
        raise RoutesError(" ".join(problems) or "No routes file was given.")
    return max(tables, key=lambda table: table.generation)


def parse(data: Any, base: Path | None = None) -> RouteTable:
    """A route table from the routes file's JSON (relative key files are under ``base``).

    Raises:
        RoutesError: the table is not valid.
    """
    if not isinstance(data, dict):
        raise RoutesError("The routes file must hold a JSON object.")
    members_data = data.get("members")
    if not isinstance(members_data, list) or not members_data:
        raise RoutesError("'members' must be a non-empty list of {name, url, weight}.")
    members = tuple(_member(item, i, base) for i, item in enumerate(members_data))
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise RoutesError(f"Member names must be unique: {names}.")
    total = sum(m.weight for m in members)
    if total != BUCKETS:
        raise RoutesError(f"The weights must add up to {BUCKETS}: they add up to {total} "
                          f"({', '.join(f'{m.name}={m.weight}' for m in members)}).")
    shadow_data = data.get("shadow")
    shadow, percent = None, 0
    if shadow_data is not None:
        if not isinstance(shadow_data, dict) or not isinstance(shadow_data.get("name"), str):
            raise RoutesError("'shadow' must be null or {name, percent}.")
        shadow = next((m for m in members if m.name == shadow_data["name"]), None)
        if shadow is None:
            raise RoutesError(f"The shadow {shadow_data['name']!r} is not a member ({', '.join(names)}).")
        percent = shadow_data.get("percent", 100)
        if not isinstance(percent, int) or isinstance(percent, bool) or not 1 <= percent <= 100:
            raise RoutesError(f"The shadow's percent must be 1 to 100, not {percent!r}.")
    sticky = data.get("sticky_header")
    if sticky is not None and (not isinstance(sticky, str) or not _TOKEN.fullmatch(sticky)):
        raise RoutesError(f"'sticky_header' must be null or a header name, not {sticky!r}.")
    generation = data.get("generation", 0)
    if not isinstance(generation, int) or isinstance(generation, bool):
        raise RoutesError(f"'generation' must be an integer, not {generation!r}.")
    timeout = data.get("timeout_s", 60.0)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 86400:
        raise RoutesError(f"'timeout_s' must be a number of seconds, 0 to 86400, not {timeout!r}.")
    return RouteTable(generation=generation, endpoint=str(data.get("endpoint") or "endpoint"), members=members,
                      shadow=shadow, shadow_percent=percent,
                      sticky_header=None if sticky is None else sticky.lower().encode("latin-1"),
                      record=bool(data.get("record", True)), timeout_s=float(timeout))


def _member(item: Any, index: int, base: Path | None) -> Member:
    if not isinstance(item, dict):
        raise RoutesError(f"members[{index}] must be an object {{name, url, weight}}.")
    name, url, weight = item.get("name"), item.get("url"), item.get("weight")
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise RoutesError(f"members[{index}].name must be a name of letters, digits, '-', '_' or '.', not {name!r}.")
    if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= BUCKETS:
        raise RoutesError(f"The weight of {name!r} must be an integer from 0 to {BUCKETS}, not {weight!r}.")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise RoutesError(f"The url of {name!r} must be http://HOST:PORT, not {url!r}.")
    try:
        port = parts.port or 80
    except ValueError:
        raise RoutesError(f"The url of {name!r} has an invalid port: {url!r}.") from None
    authorization = None
    key_file = item.get("key_file")
    if key_file is not None:
        path = Path(key_file) if base is None else base / key_file
        try:
            authorization = b"Bearer " + read_key_file(path)[0].encode()
        except KeyFileError as exc:
            raise RoutesError(f"The key of {name!r}: {exc}") from None
    return Member(name=name, host=parts.hostname, port=port, weight=weight, authorization=authorization,
                  key_file=None if key_file is None else path)
