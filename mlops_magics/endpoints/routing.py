"""An endpoint's routing: which members take what share, the shadow, the sticky header; and the routes file
the router reads.

Routing is what the registry records (``Endpoint.routing``): ``{"generation", "members": [{"name", "service",
"weight", "owned"}], "shadow": {"name", "percent"} | None, "sticky_header"}``. Changes are computed here as
pure functions (a new routing from the old one and what the user asked), checked, and only then applied.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from mlops_magics.errors import ConflictError, InvalidInputError

_MEMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
EMPTY: dict[str, Any] = {"generation": 0, "members": [], "shadow": None, "sticky_header": None}


def check_member(name: str) -> str:
    """Return ``name`` if it can name a member (``blue``, ``v2``, ``canary-1``).

    Raises:
        InvalidInputError: it cannot.
    """
    if not _MEMBER.fullmatch(name):
        raise InvalidInputError(f"{name!r} cannot name a member: use 1-32 letters, digits, '.', '_' or '-', starting "
                                "with a letter or digit (e.g. blue, green, v2).")
    return name


def parse_pairs(text: str | Sequence[str] | Mapping[str, Any], what: str, example: str) -> dict[str, str]:
    """``'blue=90,green=10'`` (or a list of ``'K=V'``, or a mapping) as ``{'blue': '90', 'green': '10'}``.

    Raises:
        InvalidInputError: an item is not ``NAME=VALUE``, or a name repeats.
    """
    if isinstance(text, Mapping):
        return {check_member(str(k)): str(v) for k, v in text.items()}
    items = [part.strip() for chunk in ([text] if isinstance(text, str) else text) for part in chunk.split(",")]
    pairs: dict[str, str] = {}
    for item in items:
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise InvalidInputError(f"{what} {item!r} is not MEMBER=VALUE: e.g. {example}.")
        name = check_member(name.strip())
        if name in pairs:
            raise InvalidInputError(f"{what} names {name!r} twice.")
        pairs[name] = value.strip()
    return pairs


def weights_from(text: str | Sequence[str] | Mapping[str, Any]) -> dict[str, int]:
    """``'blue=90,green=10'`` as weights.

    Raises:
        InvalidInputError: not ``MEMBER=PERCENT`` pairs of whole percentages.
    """
    weights: dict[str, int] = {}
    for name, value in parse_pairs(text, "--traffic", "--traffic blue=90,green=10").items():
        try:
            weights[name] = int(value.rstrip("%"))
        except ValueError:
            raise InvalidInputError(f"--traffic {name}={value}: a weight is a whole percentage, 0 to 100.") from None
        if not 0 <= weights[name] <= 100:
            raise InvalidInputError(f"--traffic {name}={value}: a weight is a whole percentage, 0 to 100.")
    return weights


def shadow_from(text: str | None) -> tuple[str, int] | None:
    """``'green=100'`` (or ``'green'``: all requests) as (member, percent); ``'off'``/``''``/None: no shadow.

    Raises:
        InvalidInputError: not ``MEMBER[=PERCENT]`` with a percent from 1 to 100.
    """
    if text is None or text.strip().lower() in ("", "off", "none"):
        return None
    name, _, value = text.strip().partition("=")
    name = check_member(name.strip())
    try:
        percent = int(value.strip().rstrip("%")) if value.strip() else 100
    except ValueError:
        raise InvalidInputError(f"--shadow {text}: give MEMBER=PERCENT, e.g. --shadow green=100.") from None
    if not 1 <= percent <= 100:
        raise InvalidInputError(f"--shadow {text}: the percent of requests copied is 1 to 100 (--shadow off stops it).")
    return name, percent


def plain(routing: Mapping[str, Any]) -> dict[str, Any]:
    """A routing as plain, mutable JSON values (the registry's is read-only)."""
    copied: dict[str, Any] = json.loads(json.dumps(dict(routing), default=dict))
    copied["members"] = list(copied.get("members") or [])
    return copied


def member(routing: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The member ``name`` of ``routing``, or None."""
    return next((dict(m) for m in routing.get("members") or [] if m["name"] == name), None)


def names(routing: Mapping[str, Any]) -> list[str]:
    """The member names, in order."""
    return [m["name"] for m in routing.get("members") or []]


def with_members(routing: Mapping[str, Any], added: Sequence[Mapping[str, Any]], removed: Sequence[str],
                 endpoint: str) -> dict[str, Any]:
    """``routing`` with members added (weight 0, or 100 for the first one) and removed.

    Raises:
        ConflictError: an added name is taken, a removed one is absent, takes traffic or is the shadow.
    """
    new = plain(routing)
    new["members"] = [dict(m) for m in new.get("members") or []]
    for name in removed:
        found = member(new, name)
        if found is None:
            raise ConflictError(f"Endpoint {endpoint!r} has no member {name!r} (members: "
                                f"{', '.join(names(new)) or 'none'}).")
        if found["weight"] > 0:
            others = [m["name"] for m in new["members"] if m["name"] != name]
            hint = f"%endpoint {endpoint} --traffic {others[0]}=100" if others else f"%endpoint {endpoint} --delete"
            raise ConflictError(f"Member {name!r} takes {found['weight']}% of {endpoint!r}'s traffic: move it first "
                                f"({hint}), then remove it.")
        if (new.get("shadow") or {}).get("name") == name:
            raise ConflictError(f"Member {name!r} is {endpoint!r}'s shadow: stop the copies first "
                                f"(%endpoint {endpoint} --shadow off).")
        new["members"] = [m for m in new["members"] if m["name"] != name]
    for item in added:
        if member(new, item["name"]) is not None:
            raise ConflictError(f"Endpoint {endpoint!r} has a member {item['name']!r} already: pick another name, or "
                                f"remove it first (%endpoint {endpoint} --remove {item['name']}).")
        first = not new["members"]
        new["members"].append({"name": item["name"], "service": item["service"], "weight": 100 if first else 0,
                               "owned": bool(item.get("owned"))})
    return new


def with_traffic(routing: Mapping[str, Any], weights: Mapping[str, int], endpoint: str) -> dict[str, Any]:
    """``routing`` with new weights: those named, the others 0 when the named ones add up to 100, else kept.

    Raises:
        ConflictError: a name is not a member.
        InvalidInputError: the weights do not add up to 100.
    """
    new = plain(routing)
    known = names(new)
    for name in weights:
        if name not in known:
            raise ConflictError(f"Endpoint {endpoint!r} has no member {name!r} (members: {', '.join(known) or 'none'})"
                                f": add it first (%endpoint {endpoint} --add {name}=MODEL:VERSION).")
    named = sum(weights.values())
    keep_others = named != 100
    for m in new["members"]:
        m["weight"] = weights.get(m["name"], m["weight"] if keep_others else 0)
    total = sum(m["weight"] for m in new["members"])
    if total != 100:
        now = ", ".join(f"{m['name']}={m['weight']}" for m in new["members"])
        raise InvalidInputError(f"The weights must add up to 100: {now} adds up to {total}. Name every member "
                                f"that takes traffic, e.g. --traffic {known[0]}=90"
                                + (f",{known[1]}=10." if len(known) > 1 else "."))
    return new


def with_shadow(routing: Mapping[str, Any], shadow: tuple[str, int] | None, endpoint: str) -> dict[str, Any]:
    """``routing`` with ``shadow`` (None: no copies).

    Raises:
        ConflictError: the shadow is not a member.
    """
    new = plain(routing)
    if shadow is not None and member(new, shadow[0]) is None:
        raise ConflictError(f"Endpoint {endpoint!r} has no member {shadow[0]!r} to copy requests to (members: "
                            f"{', '.join(names(new)) or 'none'}).")
    new["shadow"] = None if shadow is None else {"name": shadow[0], "percent": shadow[1]}
    return new


def with_sticky(routing: Mapping[str, Any], header: str | None) -> dict[str, Any]:
    """``routing`` with the sticky header (None or 'off': none).

    Raises:
        InvalidInputError: not a header name.
    """
    new = plain(routing)
    if header is None or header.strip().lower() in ("", "off", "none"):
        new["sticky_header"] = None
        return new
    if not _HEADER.fullmatch(header.strip()):
        raise InvalidInputError(f"--sticky {header!r} is not a header name (e.g. --sticky x-user-id).")
    new["sticky_header"] = header.strip().lower()
    return new


def describe(routing: Mapping[str, Any]) -> str:
    """``blue=90, green=10; shadow green 100%; sticky x-user`` (for history reasons and messages)."""
    parts = [", ".join(f"{m['name']}={m['weight']}" for m in routing.get("members") or []) or "no members"]
    if routing.get("shadow"):
        parts.append(f"shadow {routing['shadow']['name']} {routing['shadow']['percent']}%")
    if routing.get("sticky_header"):
        parts.append(f"sticky {routing['sticky_header']}")
    return "; ".join(parts)


def routes_file(endpoint: str, routing: Mapping[str, Any], urls: Mapping[str, str],
                key_files: Mapping[str, str | None], *, record: bool = True) -> dict[str, Any]:
    """The router's routes file for ``routing`` (``urls``/``key_files``: each member's, by member name)."""
    return {"generation": int(routing.get("generation") or 0), "endpoint": endpoint,
            "members": [{"name": m["name"], "url": urls[m["name"]], "weight": m["weight"],
                         "key_file": key_files.get(m["name"])} for m in routing.get("members") or []],
            "shadow": routing.get("shadow"), "sticky_header": routing.get("sticky_header"), "record": record}
