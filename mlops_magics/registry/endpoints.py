"""What the registry records about endpoints: one router (one address) in front of member deployments, its state,
and every change of its routing, numbered (the generation the router reports) and kept for rollback.

A routing is JSON: ``{"generation": int, "members": [{"name": "blue", "service": "iris-blue", "weight": 90,
"owned": true}, ...], "shadow": {"name": "green", "percent": 100} | None, "sticky_header": "x-user" | None}``.
Only :func:`set_endpoint_routing` changes it: in one write transaction it checks the generation the caller saw,
numbers the change (the current generation + 1) and records it in ``endpoint_changes``.

Every function takes the registry's :class:`~mlops_magics.registry.db.Database` first; the public API is
:class:`~mlops_magics.registry.store.Registry`, whose methods call these.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlops_magics.errors import ConflictError, InvalidInputError, NotFoundError
from mlops_magics.registry.db import Database, current_user, stamp, utcnow
from mlops_magics.registry.records import Endpoint, EndpointChange, frozen_mapping
from mlops_magics.registry.refs import NAME_PATTERN, check_name, close_names, listing

if TYPE_CHECKING:
    import sqlite_utils

#: The routing of an endpoint no change has routed yet.
EMPTY_ROUTING: Mapping[str, Any] = frozen_mapping({"generation": 0, "members": (), "shadow": None,
                                                    "sticky_header": None})
#: The keys of a routing, and of each of its members.
ROUTING_KEYS = ("generation", "members", "shadow", "sticky_header")
MEMBER_KEYS = ("name", "service", "weight", "owned")
#: An HTTP header name: one RFC 9110 token.
HEADER_PATTERN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}"

_NAME_RE = re.compile(NAME_PATTERN)
_HEADER_RE = re.compile(HEADER_PATTERN)
_NAME_RULE = "1-128 characters, letters, digits, '.', '_' or '-', starting with a letter or digit"
_MEMBER_SHAPE = '{"name": "blue", "service": "iris-blue", "weight": 90, "owned": true}'


# -- routing ---------------------------------------------------------------------------------


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_member(endpoint: str, number: int, member: Any) -> dict[str, Any]:
    """One member of a routing, as stored (its keys in order), or the error that says what is wrong with it."""
    where = f"member #{number} of endpoint {endpoint!r}"
    if not isinstance(member, Mapping):
        raise InvalidInputError(f"Invalid {where}: {member!r} is not a member; write one as {_MEMBER_SHAPE}.")
    missing = [k for k in MEMBER_KEYS if k not in member]
    unknown = [str(k) for k in member if k not in MEMBER_KEYS]
    if missing or unknown:
        wrong = "; ".join(f"{what} {listing(keys)}" for what, keys in (("missing", missing), ("unknown", unknown))
                          if keys)
        raise InvalidInputError(f"Invalid {where} ({wrong}): a member has exactly 'name', 'service', 'weight' and "
                                f"'owned', e.g. {_MEMBER_SHAPE}.")
    name, service, weight, owned = (member[k] for k in MEMBER_KEYS)
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidInputError(f"Invalid name {name!r} of {where}: a member name is {_NAME_RULE} (e.g. 'blue').")
    where = f"member {name!r} of endpoint {endpoint!r}"
    if not isinstance(service, str) or not _NAME_RE.fullmatch(service):
        raise InvalidInputError(f"Invalid service {service!r} of {where}: a service name is {_NAME_RULE} "
                                "(e.g. 'iris-blue').")
    if not _whole(weight, 0, 100):
        raise InvalidInputError(f"Invalid weight {weight!r} of {where}: a weight is a whole number from 0 to 100 "
                                "(the percentage of requests it answers).")
    if not isinstance(owned, bool):
        raise InvalidInputError(f"Invalid 'owned' {owned!r} of {where}: true or false (true: its service was "
                                "deployed for the endpoint and is removed with it).")
    return {"name": name, "service": service, "weight": weight, "owned": owned}


def check_routing(endpoint: str, routing: Mapping[str, Any]) -> dict[str, Any]:
    """Check the shape of a routing and return it as it is stored (its ``generation`` left out: the registry gives it).

    A routing has ``members`` (a list of ``{"name", "service", "weight", "owned"}``: names unique, weights whole
    numbers from 0 to 100 that sum to 100 unless there is no member), and optionally ``shadow`` (``{"name": MEMBER,
    "percent": 1-100}`` or None) and ``sticky_header`` (an HTTP header name or None).

    Args:
        endpoint: the endpoint's name (quoted in messages).
        routing: the routing to check; a ``generation`` in it is ignored.

    Returns:
        ``{"members": [...], "shadow": ..., "sticky_header": ...}``: plain JSON values, keys in order.

    Raises:
        InvalidInputError: the routing is malformed; the message names what and says what is allowed.
    """
    if not isinstance(routing, Mapping):
        raise InvalidInputError(f"Invalid routing for endpoint {endpoint!r}: {routing!r} is not a mapping of "
                                "'members', 'shadow' and 'sticky_header'.")
    unknown = [str(k) for k in routing if k not in ROUTING_KEYS]
    if unknown:
        raise InvalidInputError(f"Invalid routing for endpoint {endpoint!r}: unknown key(s) {listing(unknown)} (a "
                                "routing has 'members', 'shadow' and 'sticky_header').")
    given = routing.get("members")
    if isinstance(given, (str, bytes, Mapping)) or not isinstance(given, Sequence):
        raise InvalidInputError(f"Invalid routing for endpoint {endpoint!r}: 'members' must be a list of members "
                                f"such as {_MEMBER_SHAPE}, not {given!r}.")
    members = [_check_member(endpoint, number, m) for number, m in enumerate(given, 1)]
    names = [m["name"] for m in members]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInputError(f"Endpoint {endpoint!r} lists member(s) {listing(twice)} more than once: member names "
                                "are unique.")
    total = sum(m["weight"] for m in members)
    if members and total != 100:
        weights = ", ".join(f"{m['name']} {m['weight']}" for m in members)
        raise InvalidInputError(f"The weights of endpoint {endpoint!r} sum to {total} ({weights}): they must sum to "
                                "100 (the percentages of requests each member answers).")
    shadow = routing.get("shadow")
    if shadow is not None:
        if not isinstance(shadow, Mapping) or set(shadow) != {"name", "percent"}:
            raise InvalidInputError(f"Invalid shadow {shadow!r} of endpoint {endpoint!r}: write it as "
                                    '{"name": MEMBER, "percent": 1-100}, or None for no shadow.')
        if shadow["name"] not in names:
            raise InvalidInputError(f"The shadow of endpoint {endpoint!r} names {shadow['name']!r}, which is not one "
                                    f"of its members ({listing(names) or 'it has none'}). Add it as a member first.")
        if not _whole(shadow["percent"], 1, 100):
            raise InvalidInputError(f"Invalid shadow percent {shadow['percent']!r} of endpoint {endpoint!r}: a whole "
                                    "number from 1 to 100 (the percentage of requests copied to the shadow).")
        shadow = {"name": shadow["name"], "percent": shadow["percent"]}
    sticky = routing.get("sticky_header")
    if sticky is not None and (not isinstance(sticky, str) or not _HEADER_RE.fullmatch(sticky)):
        raise InvalidInputError(f"Invalid sticky header {sticky!r} of endpoint {endpoint!r}: an HTTP header name is "
                                "1-256 letters, digits or any of !#$%&'*+-.^_`|~ (e.g. 'x-user'), or None.")
    return {"members": members, "shadow": shadow, "sticky_header": sticky}


# -- reading ---------------------------------------------------------------------------------


def endpoints_where(db: sqlite_utils.Database, where: str = "1", params: list[Any] | None = None) -> list[Endpoint]:
    """The recorded endpoints that match an SQL condition on the ``endpoints`` table, by name."""
    return [
        Endpoint(
            name=r["name"],
            target=r["target"],
            state=r["state"],
            url=r["url"],
            routing=frozen_mapping(json.loads(r["routing"])),
            config=frozen_mapping(json.loads(r["config"])),
            created_at=datetime.fromisoformat(r["created_at"]),
            updated_at=datetime.fromisoformat(r["updated_at"]),
        )
        for r in db.query(f"SELECT * FROM endpoints WHERE {where} ORDER BY name", params or [])
    ]


def no_endpoint(db: sqlite_utils.Database, name: str) -> NotFoundError:
    """The error for a name no endpoint has: close names (not removed ones first), the endpoints there are (the
    removed ones apart), and how to create one."""
    found = endpoints_where(db)
    create = f"Create one with %endpoint {name} --add blue=MODEL:VERSION."
    if not found:
        return NotFoundError(f"No endpoint named {name!r}. There are no endpoints yet. {create}")
    there = [e.name for e in found if e.state != "deleted"]
    gone = [e.name for e in found if e.state == "deleted"]
    close = close_names(name, there)
    hint = (f" Did you mean {' or '.join(map(repr, close))}?" if close else
            "".join(f" Did you mean {c!r} (removed)?" for c in close_names(name, gone, n=1)))
    listed = f" Endpoints: {listing(there) or 'none'}." + (f" Removed: {listing(gone)}." if gone else "")
    return NotFoundError(f"No endpoint named {name!r}.{hint}{listed} {create}")


def _get(db: sqlite_utils.Database, name: str) -> Endpoint:
    found = endpoints_where(db, "name = ?", [name])
    if not found:
        raise no_endpoint(db, name)
    return found[0]


def endpoints(database: Database) -> list[Endpoint]:
    """Every recorded endpoint, by name."""
    with database.read() as db:
        return endpoints_where(db)


def get_endpoint(database: Database, name: str) -> Endpoint:
    """The endpoint with this name (see :meth:`Registry.get_endpoint`)."""
    with database.read() as db:
        return _get(db, name)


def endpoint_history(database: Database, name: str) -> list[EndpointChange]:
    """Every change of the endpoint's routing, oldest first (see :meth:`Registry.endpoint_history`)."""
    with database.read() as db:
        _get(db, name)
        return [
            EndpointChange(endpoint=r["endpoint"], generation=r["generation"],
                           routing=frozen_mapping(json.loads(r["routing"])), reason=r["reason"],
                           at=datetime.fromisoformat(r["at"]), by=r["by"])
            for r in db.query("SELECT * FROM endpoint_changes WHERE endpoint = ? ORDER BY generation", [name])
        ]


def endpoints_routing_to(database: Database, service: str) -> list[Endpoint]:
    """The live endpoints with a member whose service is ``service``, by name."""
    live = ", ".join("?" * len(Endpoint.LIVE_STATES))
    with database.read() as db:
        return endpoints_where(
            db, f"state IN ({live}) AND EXISTS (SELECT 1 FROM json_each(routing, '$.members') "
                "WHERE json_extract(value, '$.service') = ?)", [*Endpoint.LIVE_STATES, service])


# -- writing ---------------------------------------------------------------------------------


def _check_state(name: str, state: str) -> str:
    if state not in Endpoint.STATES:
        raise InvalidInputError(f"Invalid state {state!r} for endpoint {name!r}: one of {listing(Endpoint.STATES)}.")
    return state


def record_endpoint(database: Database, name: str, *, target: str, state: str, url: str | None,
                    config: Mapping[str, Any] | None) -> Endpoint:
    """Create or update the record of an endpoint, keeping its routing (see :meth:`Registry.record_endpoint`)."""
    check_name(name)
    _check_state(name, state)
    now = stamp(utcnow())
    with database.write() as db:
        db.execute(
            "INSERT INTO endpoints (name, target, state, url, routing, config, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET target = excluded.target, "
            "state = excluded.state, url = excluded.url, config = excluded.config, updated_at = excluded.updated_at",
            [name, target, state, url, json.dumps(dict(EMPTY_ROUTING)), json.dumps(dict(config or {})), now, now],
        )
        return _get(db, name)


def set_endpoint_state(database: Database, name: str, state: str) -> Endpoint:
    """Change the recorded state of an endpoint (see :meth:`Registry.set_endpoint_state`)."""
    _check_state(name, state)
    with database.write() as db:
        if not db.execute("UPDATE endpoints SET state = ?, updated_at = ? WHERE name = ?",
                          [state, stamp(utcnow()), name]).rowcount:
            raise no_endpoint(db, name)
        return _get(db, name)


def set_endpoint_routing(database: Database, name: str, routing: Mapping[str, Any], *, reason: str,
                         expected_generation: int | None = None) -> Endpoint:
    """Give an endpoint a new routing, numbered, and record the change (see :meth:`Registry.set_endpoint_routing`)."""
    checked = check_routing(name, routing)
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInputError(f"Say why the routing of endpoint {name!r} changes: reason={reason!r} is empty.")
    with database.write() as db:
        current = _get(db, name).generation
        if expected_generation is not None and expected_generation != current:
            raise ConflictError(
                f"Another process changed the routing of endpoint {name!r} (it is at generation {current}, expected "
                f"{expected_generation}). Look at %endpoint {name} and try again.")
        stored = json.dumps({"generation": current + 1, **checked})
        now = stamp(utcnow())
        db.execute("INSERT INTO endpoint_changes (endpoint, generation, routing, reason, at, by) "
                   "VALUES (?, ?, ?, ?, ?, ?)", [name, current + 1, stored, reason, now, current_user()])
        db.execute("UPDATE endpoints SET routing = ?, updated_at = ? WHERE name = ?", [stored, now, name])
        return _get(db, name)
