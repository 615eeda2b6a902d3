"""Endpoints: several deployments (members) behind one address, with weights, a shadow copy and a sticky header.

:func:`endpoint` creates or changes one (deploying the members it adds), :func:`endpoint_status` says what it
serves and what each member answered, :func:`delete_endpoint` removes it. Every change of the routing is one
generation, recorded with its reason, taken up by the router between two requests (no request fails), and
``rollback`` goes back to the previous one.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from mlops_magics.api.deployments import deploy, reachable_url, require_validated, undeploy
from mlops_magics.api.monitoring import collection_folder, feature_names
from mlops_magics.endpoints import comparison, kube_router, router, routing, traffic
from mlops_magics.endpoints.comparison import TrafficComparison
from mlops_magics.endpoints.kube_objects import IN_CLUSTER
from mlops_magics.errors import ConflictError, EngineError, InvalidInputError, NotFoundError
from mlops_magics.monitoring import store
from mlops_magics.monitoring.collection import parse_since
from mlops_magics.registry import Endpoint, Registry, or_default
from mlops_magics.registry.secrets import ServiceKeys
from mlops_magics.targets.base import Progress, Steps


@dataclass(frozen=True)
class MemberStatus:
    """One member: the deployment it is, its share, and what it answered (live and shadow)."""

    name: str
    service: str
    model: str
    target: str
    weight: int
    shadow_percent: int
    owned: bool
    state: str
    answers: Mapping[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """One row of the status table."""
        live, shadow = self.answers.get("live") or {}, self.answers.get("shadow") or {}
        def ms(value: Any) -> Any:
            return "" if value is None else round(float(value), 1)

        return {"member": self.name, "weight": f"{self.weight}%",
                "shadow": f"{self.shadow_percent}%" if self.shadow_percent else "",
                "model": self.model, "service": f"{self.service} ({self.target}, {self.state})",
                "requests": live.get("requests", 0), "errors": live.get("errors", 0),
                "p50 ms": ms(live.get("p50_ms")), "p99 ms": ms(live.get("p99_ms")),
                "shadow requests": shadow.get("requests", 0) if self.shadow_percent or shadow else ""}


@dataclass(frozen=True)
class EndpointStatus:
    """What an endpoint serves now, as the registry and its router say."""

    name: str
    url: str | None
    state: str
    generation: int
    members: tuple[MemberStatus, ...]
    sticky_header: str | None
    router: str
    shadow_dropped: int = 0
    failovers: int = 0
    note: str = ""
    #: The shadow's answers against the member answering the same requests (None: no shadow, or no copies yet).
    shadow: TrafficComparison | None = None

    def member(self, name: str) -> MemberStatus:
        """The member ``name``.

        Raises:
            NotFoundError: no such member.
        """
        for found in self.members:
            if found.name == name:
                return found
        raise NotFoundError(f"Endpoint {self.name!r} has no member {name!r} "
                            f"(members: {', '.join(m.name for m in self.members) or 'none'}).")

    @property
    def weights(self) -> dict[str, int]:
        """Each member's share of the requests, in percent."""
        return {m.name: m.weight for m in self.members}

    def headline(self) -> str:
        """One line: where, what generation, who takes what."""
        shares = ", ".join(f"{m.name}={m.weight}%" for m in self.members) or "no members"
        shadow = next((f"; shadow {m.name} {m.shadow_percent}%" for m in self.members if m.shadow_percent), "")
        sticky = f"; sticky {self.sticky_header}" if self.sticky_header else ""
        return (f"Endpoint {self.name!r} at {self.url or '(no address)'} ({self.state}, generation "
                f"{self.generation}): {shares}{shadow}{sticky}")

    def __repr__(self) -> str:
        lines = [self.headline()]
        for m in self.members:
            row = m.row()
            lines.append(f"  {row['member']:<10} {row['weight']:>4}  {row['model']:<16} {row['service']:<36} "
                         f"{row['requests']:>6} requests, {row['errors']} errors"
                         + (f", p50 {row['p50 ms']} ms" if row["p50 ms"] != "" else "")
                         + (f", shadow {m.shadow_percent}%: {row['shadow requests']} copies" if m.shadow_percent
                            else ""))
        lines.append(f"  router: {self.router}")
        if self.shadow is not None:
            lines.append(f"  shadow: {self.shadow.headline()}")
        if self.note:
            lines.append(f"  {self.note}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from mlops_magics.display import table

        note = f"<div>{html.escape(self.note)}</div>" if self.note else ""
        shadow = "" if self.shadow is None else (f"<div><b>Shadow:</b> {html.escape(self.shadow.headline())} "
                                                 f"(%compare_traffic {self.name} {self.shadow.a} {self.shadow.b} "
                                                 "for the rows and plots)</div>")
        return (f"<div><b>{html.escape(self.headline())}</b></div>{table([m.row() for m in self.members])}"
                f"{shadow}<div style='color:#666'>router: {html.escape(self.router)}</div>{note}")


def endpoint(
    name: str,
    *,
    add: Mapping[str, str] | Sequence[str] | str | None = None,
    remove: Sequence[str] = (),
    traffic: Mapping[str, int] | Sequence[str] | str | None = None,
    shadow: str | None = None,
    sticky: str | None = None,
    rollback: bool = False,
    require_validation: bool | None = None,
    target: str = "local",
    target_options: Mapping[str, Any] | None = None,
    port: int | None = None,
    auth: bool = False,
    router: str | None = None,
    gateway: str | None = None,
    progress: Progress | None = None,
    registry: Registry | None = None,
) -> EndpointStatus:
    """Create or change an endpoint, as one new generation of its routing; block until its router serves it.

    Args:
        name: the endpoint (its members' services are ``NAME-MEMBER``).
        add: members to add, ``{'blue': 'iris:2'}`` or ``'blue=iris:2,green=iris:3'``: a model reference
            (``NAME:VERSION``, ``NAME@ALIAS``) is deployed on ``target`` as service ``NAME-MEMBER`` (removed with the
            member); the bare name of a live deployment routes to it as it is. A new member takes no traffic,
            except the first one (100%).
        remove: members to remove (they must take no traffic and not be the shadow).
        traffic: the weights, ``'blue=90,green=10'`` (percent; members left out get 0 when those named add up
            to 100).
        shadow: ``'green=100'``: copy that share of the requests to a member after the client has its answer (the
            copy's answer is recorded, never returned); ``'off'``: no copies.
        sticky: a header name: requests carrying it stay on one member (by its value); ``'off'``: none.
        rollback: go back to the routing before the current one (anything else given is refused).
        require_validation: members that take traffic must have passed ``%validate`` (kept for later changes).
        target: where added members are deployed (``local``, ``docker``, ``kubernetes``...).
        target_options: the settings of the members deployed on ``target`` (as ``deploy(target_options=)``).
        port: the endpoint's port when it is created (default: a free one).
        auth: when it is created: clients must send one of the endpoint's own keys (``Authorization: Bearer KEY``;
            :func:`endpoint_keys` shows and rotates them). Members that require keys get theirs from the router.
        router: when it is created, how it routes: ``auto`` (the default: a process of this machine, unless every
            member runs on one Kubernetes cluster and namespace; then a Gateway API HTTPRoute if the cluster serves
            one, else an Istio VirtualService if it serves one, else ``deployment``), ``process``, ``deployment``
            (our router as a Deployment beside the members), ``httproute`` or ``virtualservice``. Weights never
            rely on replica ratios. Only our router offers a sticky header and records answers.
        gateway: with an HTTPRoute or a VirtualService: the Gateway (``NAME`` or ``NAMESPACE/NAME``) it attaches
            to (default: the mesh, through the endpoint's own Service).

    Raises:
        InvalidInputError: a malformed argument, or weights that do not add up to 100.
        ConflictError: a member named twice, absent, still taking traffic when removed; a gate refuses.
        NotFoundError: no such endpoint (and nothing to add), model or deployment.
        DeployError: a member or the router did not start (nothing of this change is left running).
    """
    reg = or_default(registry)
    steps = Steps.of(progress)
    current = _find(reg, name)
    if rollback:
        if add or remove or traffic is not None or shadow is not None or sticky is not None:
            raise InvalidInputError("--rollback goes back to the previous routing as it was: give it alone.")
        if current is None:
            raise NotFoundError(f"No endpoint named {name!r} to roll back.")
        return _roll_back(reg, current, steps)
    added = routing.parse_pairs(add, "--add", "--add blue=iris:2") if add else {}
    asked = bool(added or remove) or any(v is not None for v in (traffic, shadow, sticky, require_validation))
    if not asked:  # what it serves; a router that stopped (a reboot) starts again on its port
        if current is None:
            raise NotFoundError(f"No endpoint named {name!r}: create it with %endpoint {name} --add "
                                "blue=MODEL:VERSION.")
        if router is not None:
            _router_kind(reg, name, dict(current.config), router, current.routing)  # refused when it differs
        if current.state != "deleted" and current.routing.get("members") and not _router_running(current.config):
            _serve(reg, current, dict(current.config), port, steps)
        return endpoint_status(name, registry=reg)
    creating = current is None or not current.is_live
    if current is None or not current.is_live:
        if not added:
            raise NotFoundError(f"No endpoint named {name!r}: create it with %endpoint {name} --add "
                                "blue=MODEL:VERSION.")
        current = reg.record_endpoint(name, target="local", state="creating", url=None,
                                      config={"require_validation": bool(require_validation), "auth": auth})
        if auth:
            reg.endpoint_keys.create(name)
    elif auth and not current.config.get("auth"):
        raise InvalidInputError(f"Endpoint {name!r} was created without --auth: an endpoint's keys are set when it "
                                f"is created (%endpoint {name} --delete, then create it with --auth).")
    config = dict(current.config)
    if require_validation is not None:
        config["require_validation"] = require_validation
    new = routing.plain(current.routing)
    started: list[str] = []
    try:
        members = [_member(reg, name, member, value, target, target_options, steps, started)
                   for member, value in added.items()]
        new = routing.with_members(new, members, list(remove), name)
        if traffic is not None:
            new = routing.with_traffic(new, routing.weights_from(traffic), name)
        if shadow is not None:
            new = routing.with_shadow(new, routing.shadow_from(shadow), name)
        if sticky is not None:
            new = routing.with_sticky(new, sticky)
        if config.get("require_validation"):
            _gate(reg, new)
        kind = _router_kind(reg, name, config, router, new)
        kube_router.check(kind, name, new)
        reasons = [f"add {', '.join(f'{k}={v}' for k, v in added.items())}" if added else "",
                   f"remove {', '.join(remove)}" if remove else "",
                   f"traffic {routing.describe({'members': [m for m in new['members'] if m['weight']]})}"
                   if traffic is not None else "", f"shadow {shadow}" if shadow is not None else "",
                   f"sticky {sticky}" if sticky is not None else ""]
        reason = "; ".join(r for r in reasons if r) or "no change"
        changed = reg.set_endpoint_routing(name, new, reason=reason, expected_generation=current.generation)
        live = _serve(reg, changed, config, port, steps, kind=kind, gateway=gateway)
    except BaseException:
        if creating:  # an endpoint whose router never served routes to nothing: its members may go
            with contextlib.suppress(Exception):
                reg.set_endpoint_state(name, "failed")
        for service in started:  # members this call deployed go again: nothing of a failed change stays
            with contextlib.suppress(Exception):
                undeploy(service, registry=reg)
        raise
    for gone in remove:
        was = routing.member(current.routing, gone)
        if was is not None and was.get("owned"):
            steps.say(f"undeploying {was['service']}")
            undeploy(was["service"], registry=reg)
    return endpoint_status(live.name, registry=reg)


def endpoint_status(name: str, *, registry: Registry | None = None) -> EndpointStatus:
    """What the endpoint serves and what each member answered since its router started.

    Raises:
        NotFoundError: no such endpoint.
    """
    reg = or_default(registry)
    found = reg.get_endpoint(name)
    answers: dict[str, Any] = {}
    note = ""
    summary: dict[str, Any] = {}
    url = found.url
    in_cluster = kube_router.is_in_cluster(found.config)
    if found.is_live and url and in_cluster:
        answers, summary, note = _cluster_answers(reg, found)
    elif found.is_live and url:
        if not router.running(found.config):
            note = f"Its router is not running: %endpoint {name} starts it again."
            found = reg.set_endpoint_state(name, "stopped")
        else:
            try:
                summary = router.ask(url, "/endpoint", key=_key(reg, found))
                answers = summary.get("answers") or {}
                router.settle(url, _key(reg, found), summary)
            except (OSError, ValueError) as exc:
                note = f"Its router did not answer: {exc}."
    deployments = {d.name: d for d in reg.deployments()}
    shadow = found.routing.get("shadow") or {}
    members = []
    for m in found.routing.get("members") or []:
        d = deployments.get(m["service"])
        members.append(MemberStatus(
            name=m["name"], service=m["service"],
            model="?" if d is None else f"{d.model_name}:{d.model_version}",
            target="?" if d is None else d.target, weight=int(m["weight"]),
            shadow_percent=int(shadow.get("percent") or 0) if shadow.get("name") == m["name"] else 0,
            owned=bool(m.get("owned")), state="missing" if d is None else d.state,
            answers=answers.get(m["name"]) or {}))
    where = (kube_router.describe(found.config, reg.home, name) if in_cluster else
             f"an mlops-route process of this machine (pid {found.config.get('pid')}), recording answers in "
             f"{router.traffic_folder(reg.home, name)}" if found.config.get("router") == "process" else "none")
    return EndpointStatus(name=found.name, url=found.url, state=found.state, generation=found.generation,
                          members=tuple(members), sticky_header=found.routing.get("sticky_header"), router=where,
                          shadow_dropped=int(summary.get("shadow_dropped") or 0),
                          failovers=int(summary.get("failovers") or 0), note=note,
                          shadow=_shadow_comparison(reg, found, answers))


def delete_endpoint(name: str, *, keep_members: bool = False, registry: Registry | None = None) -> list[str]:
    """Stop the endpoint's router and undeploy the members it deployed (``keep_members``: leave them running).

    On a cluster the router's Deployment, Service, ConfigMap and Secret go (or its HTTPRoute or VirtualService
    and its Service). Idempotent.

    Returns:
        The services undeployed.

    Raises:
        NotFoundError: no such endpoint.
    """
    reg = or_default(registry)
    found = reg.get_endpoint(name)
    if kube_router.is_in_cluster(found.config) and found.state != "deleted":
        kube_router.delete(found.config, reg.home, name)
    elif found.config.get("pid"):
        router.stop(int(found.config["pid"]), found.config.get("pid_stamp"))
    reg.set_endpoint_state(name, "deleted")
    reg.endpoint_keys.remove(name)
    gone = []
    if not keep_members:
        deployments = {d.name: d for d in reg.deployments()}
        for m in found.routing.get("members") or []:
            d = deployments.get(m["service"])
            if m.get("owned") and d is not None and d.state != "deleted":
                undeploy(m["service"], registry=reg)
                gone.append(m["service"])
    return gone


def endpoint_keys(name: str, *, regenerate: str | None = None, registry: Registry | None = None) -> ServiceKeys:
    """The keys clients of an endpoint send, shown masked.

    ``regenerate='primary'`` or ``'secondary'`` replaces one, the other staying valid (the router takes the new
    file up within a second).

    Raises:
        NotFoundError: no such endpoint, or it was created without ``auth``.
        InvalidInputError: ``regenerate`` names no key.
    """
    reg = or_default(registry)
    found = reg.get_endpoint(name)
    if not found.config.get("auth"):
        raise NotFoundError(f"Endpoint {name!r} has no keys: it was created without --auth.")
    if regenerate is not None:
        keys = reg.endpoint_keys.regenerate(name, regenerate)
        if found.is_live and found.config.get("router") == "deployment":  # the pods get the new key file now
            _serve(reg, found, dict(found.config), None, Steps.of(None))
        return keys
    return reg.endpoint_keys.get(name)


def list_endpoints(*, registry: Registry | None = None) -> list[Endpoint]:
    """Every endpoint not deleted, by name."""
    return [e for e in or_default(registry).endpoints() if e.state != "deleted"]


def compare_traffic(name: str, a: str, b: str, *, since: str | float | datetime | None = None,
                    tolerance: float = 1e-6, examples: int = 10, registry: Registry | None = None) -> TrafficComparison:
    """Compare what two members answered.

    On the same requests (a shadow's copies, a replay) row by row; else (a canary) their predictions, latency and
    errors side by side.

    Args:
        a: the member whose answers are the reference (``blue``); ``b``: the one compared with it.
        since: only traffic from then on (``'1h'``, ``'30m'``, a datetime...).
        tolerance: numbers agree within this relative tolerance (labels must be equal).
        examples: how many differing rows to show.

    Raises:
        NotFoundError: no such endpoint, or a member answered nothing yet.
        InvalidInputError: ``a`` and ``b`` are the same, or a bad ``since``.
    """
    reg = or_default(registry)
    found = reg.get_endpoint(name)
    if found.is_live and found.config.get("router") == "deployment":  # its pods' records, written and here
        kube_router.wait_settled(found.config, _key(reg, found))
        kube_router.fetch_traffic(found.config, reg.home, name)
    elif found.is_live and found.url and router.running(found.config):
        router.settle(found.url, _key(reg, found))  # the answers given until now are in what is read
    frame = traffic.read_traffic(router.traffic_folder(reg.home, name), since=parse_since(since), members=(a, b))
    return comparison.compare(frame, a, b, feature_names=_features(reg, found, a), tolerance=tolerance,
                              examples=examples, endpoint=name)


def replay(name: str, *, to: str, since: str | float | datetime | None = None, source: str | None = None,
           rate: float = 50.0, limit: int = 1000, tolerance: float = 1e-6, progress: Progress | None = None,
           registry: Registry | None = None) -> TrafficComparison:
    """Send requests a service collected to member ``to`` and compare its answers with the ones clients got.

    At most ``rate`` requests a second; both sides are recorded in the endpoint's traffic as ``original`` and
    ``replay`` (the service must have been deployed with ``--collect``).

    Args:
        to: the member that gets the requests (it need not take traffic: replay before promoting).
        since: only requests collected from then on (``'1h'``...).
        source: the service whose collected requests are sent (default: the member with the most weight).
        rate: requests per second at most (a replay must not swamp what it tests).
        limit: the newest ``limit`` collected requests at most.

    Raises:
        NotFoundError: no such endpoint or member; the source collects nothing.
        InvalidInputError: a bad rate, limit or ``since``; nothing collected in the window.
    """
    if not 0 < rate <= 10_000:
        raise InvalidInputError(f"--rate {rate}: give requests per second, more than 0 and at most 10000.")
    if limit < 1:
        raise InvalidInputError(f"--limit {limit}: give 1 or more requests.")
    reg = or_default(registry)
    steps = Steps.of(progress)
    found = reg.get_endpoint(name)
    target = routing.member(found.routing, to)
    if target is None:
        raise NotFoundError(f"Endpoint {name!r} has no member {to!r} (members: "
                            f"{', '.join(routing.names(found.routing)) or 'none'}).")
    members = list(found.routing.get("members") or [])
    origin = (next((m for m in members if m["service"] == source), None) if source else
              max((m for m in members if m["name"] != to), key=lambda m: m["weight"], default=None))
    service = source or (origin["service"] if origin else None)
    if service is None:
        raise InvalidInputError(f"Endpoint {name!r} has no member besides {to!r} to take collected requests from: "
                                "name the service with --source.")
    label = origin["name"] if origin else service
    _, folder = collection_folder(reg, service)
    start = parse_since(since)
    collected = [r for r in store.records(folder, since=start) if r.get("input") is not None
                 and 200 <= int(r.get("status") or 0) < 300][-limit:]
    if not collected:
        raise InvalidInputError(f"Service {service!r} collected no answered request"
                                + (f" since {since}" if since else "") + ": nothing to replay.")
    deployment = reg.get_deployment(target["service"])
    url = reachable_url(deployment, reg)
    key = reg.keys.get(deployment.name).primary if deployment.config.get("key_file") else None
    lines: list[bytes] = []
    every = 1.0 / rate
    began = time.monotonic()
    for number, record in enumerate(collected, 1):
        wait = began + (number - 1) * every - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        request_id = str(record.get("request_id") or f"replay-{number}")
        body = record["input"] if isinstance(record["input"], str) else json.dumps(record["input"])
        sent = time.perf_counter()
        status, answer = _post(url, body.encode(), key, request_id)
        elapsed = round((time.perf_counter() - sent) * 1000, 3)
        lines.append(_line(record.get("time"), request_id, label, "original", int(record.get("status") or 0),
                           record.get("latency_ms"), record["input"], record.get("output")))
        lines.append(_line(time.time(), request_id, to, "replay", status, elapsed, None, answer))
        if number % 25 == 0 or number == len(collected):
            steps.say(f"replayed {number}/{len(collected)} requests of {service} to {to}")
    place = router.traffic_folder(reg.home, name)
    place.mkdir(parents=True, exist_ok=True)
    path = place / f"traffic-{int(time.time() * 1000)}-{os.getpid()}.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(b"".join(lines))
    frame = traffic.read_traffic(place, members=(label, to), kinds=("original", "replay"))
    frame = frame[frame["id"].isin({str(r.get("request_id") or "") for r in collected})]
    return comparison.compare(frame, label, to, feature_names=_features(reg, found, to), tolerance=tolerance,
                              endpoint=name)


def _post(url: str, body: bytes, key: str | None, request_id: str) -> tuple[int, Any]:
    """POST a replayed request; (status, the answer as JSON or text); status 0 when nothing answered."""
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json", "x-request-id": request_id,
               **({"Authorization": f"Bearer {key}"} if key else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{url}/score", body, headers), timeout=60) as response:
            raw, status = response.read(), response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    except OSError as exc:
        return 0, str(exc)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", errors="replace")


def _line(moment: Any, request_id: str, member: str, kind: str, status: int, ms: Any, body: Any,
          answer: Any) -> bytes:
    """One traffic record (the router's format: see :mod:`mlops_backend.router.traffic`)."""
    record: dict[str, Any] = {"t": float(moment or time.time()), "id": request_id, "m": member, "kind": kind,
                              "status": status, "ms": float(ms or 0.0)}
    if body is not None:
        record["in"] = body
    record["out"] = answer
    if status == 0:
        record["error"] = str(answer)
    return (json.dumps(record) + "\n").encode()


#: Traffic records read for the status view's shadow comparison (the newest; %compare_traffic reads more).
STATUS_RECORDS = 20_000


def _shadow_comparison(reg: Registry, found: Endpoint, answers: Mapping[str, Any]) -> TrafficComparison | None:
    shadow = (found.routing.get("shadow") or {}).get("name")
    if not shadow or not (answers.get(shadow) or {}).get("shadow"):
        return None
    serving = max((m for m in found.routing.get("members") or [] if m["name"] != shadow),
                  key=lambda m: m["weight"], default=None)
    if serving is None:
        return None
    frame = traffic.read_traffic(router.traffic_folder(reg.home, found.name), members=(serving["name"], shadow),
                                 limit=STATUS_RECORDS)
    try:
        return comparison.compare(frame, serving["name"], shadow, feature_names=_features(reg, found, shadow),
                                  examples=5, endpoint=found.name)
    except NotFoundError:  # no record written yet (within half a second of the first copies)
        return None


def _cluster_answers(reg: Registry, found: Endpoint) -> tuple[dict[str, Any], dict[str, Any], str]:
    """What the router on a cluster says (answers, its summary) and a note; the router pods' records fetched."""
    if not kube_router.running(found.config):
        return {}, {}, (f"Its router is not on the cluster, or has no ready pod: %endpoint {found.name} makes it "
                        "again.")
    if found.config.get("router") != "deployment":
        return {}, {}, ""
    try:
        url = str(kube_router.local_url(found.config))
        summary = router.ask(url, "/endpoint", key=_key(reg, found))
        router.settle(url, _key(reg, found), summary)
        kube_router.fetch_traffic(found.config, reg.home, found.name)
    except (OSError, ValueError, EngineError) as exc:
        return {}, {}, f"Its router did not answer: {exc}."
    return dict(summary.get("answers") or {}), dict(summary), ""


def _key(reg: Registry, found: Endpoint) -> str | None:
    """The endpoint's primary key when it has keys (its router's own routes want one too)."""
    return reg.endpoint_keys.get(found.name).primary if found.config.get("auth") else None


def _features(reg: Registry, found: Endpoint, name: str) -> list[str] | None:
    m = routing.member(found.routing, name)
    deployments = {d.name: d for d in reg.deployments()}
    d = deployments.get(m["service"]) if m else None
    return feature_names(reg, d) if d is not None else None


# -- the steps --------------------------------------------------------------------------------


def _find(reg: Registry, name: str) -> Endpoint | None:
    try:
        return reg.get_endpoint(name)
    except NotFoundError:
        return None


def _member(reg: Registry, endpoint: str, member: str, value: str, target: str,
            target_options: Mapping[str, Any] | None, steps: Steps, started: list[str]) -> dict[str, Any]:
    """The member ``member`` = ``value``: a live deployment as it is, else a model reference deployed now."""
    routing.check_member(member)
    live = {d.name: d for d in reg.deployments() if d.is_live}
    if ":" not in value and "@" not in value and value in live:
        return {"name": member, "service": value, "owned": False}
    service = f"{endpoint}-{member}"
    steps.say(f"deploying {value} as {service} ({target})")
    deploy(value, target=target, name=service, target_options=dict(target_options or {}), progress=steps,
           registry=reg)
    started.append(service)
    return {"name": member, "service": service, "owned": True}


def _gate(reg: Registry, new: Mapping[str, Any]) -> None:
    deployments = {d.name: d for d in reg.deployments()}
    for m in new["members"]:
        d = deployments.get(m["service"])
        if m["weight"] > 0 and d is not None:
            try:
                require_validated(reg, f"{d.model_name}:{d.model_version}")
            except ConflictError as exc:
                raise ConflictError(f"Member {m['name']!r} cannot take traffic: {exc}") from None


def _router_kind(reg: Registry, name: str, config: Mapping[str, Any], asked: str | None,
                 new: Mapping[str, Any]) -> str:
    """How the endpoint routes: what it was created with, else what ``asked`` (``auto`` by default) chooses.

    Raises:
        ConflictError: ``asked`` differs from the router the endpoint has (chosen when it is created).
    """
    recorded = config.get("router")
    if recorded:
        if asked is not None and asked.lower() not in ("auto", recorded):
            raise ConflictError(f"Endpoint {name!r} routes with {recorded!r}: its router is chosen when it is created. "
                                f"To change it: delete it keeping its members (delete_endpoint({name!r}, "
                                f"keep_members=True)), then create it again with --router {asked}, adding the members "
                                "by their service names.")
        return str(recorded)
    return kube_router.choose(asked, name, new, {d.name: d for d in reg.deployments()})


def _router_running(config: Mapping[str, Any]) -> bool:
    """Whether the endpoint's router (a process of this machine, or on a cluster) is there."""
    if kube_router.is_in_cluster(config):
        return kube_router.running(config)
    return router.running(config)


def _serve(reg: Registry, endpoint: Endpoint, config: dict[str, Any], port: int | None, steps: Steps, *,
           kind: str | None = None, gateway: str | None = None) -> Endpoint:
    """Make the endpoint's router serve its routing: for a process of this machine, write the routes file, start
    the router if need be, and wait until it serves this generation; on a cluster, see :mod:`.kube_router`."""
    deployments = {d.name: d for d in reg.deployments()}
    for m in endpoint.routing.get("members") or []:
        d = deployments.get(m["service"])
        if d is None or not d.is_live or not d.url:
            raise ConflictError(f"Member {m['name']!r} of endpoint {endpoint.name!r} is service {m['service']!r}, "
                                "which is not deployed: deploy it again, or remove the member.")
    kind = kind or str(config.get("router") or endpoint.config.get("router") or "process")
    if kind in IN_CLUSTER:
        merged = replace(endpoint, config={**dict(endpoint.config), **config})
        url, recorded = kube_router.serve(reg, merged, kind, deployments, steps, gateway)
        return reg.record_endpoint(endpoint.name, target="kubernetes", state="running", url=url, config=recorded)
    urls: dict[str, str] = {}
    keys: dict[str, str | None] = {}
    for m in endpoint.routing.get("members") or []:
        d = deployments[m["service"]]
        urls[m["name"]] = reachable_url(d, reg)
        keys[m["name"]] = str(reg.keys.path(d.name)) if d.config.get("key_file") or d.config.get("auth") else None
    routes = routing.routes_file(endpoint.name, endpoint.routing, urls, keys)
    router.write_routes(reg.home, endpoint.name, routes)
    if endpoint.url and router.running(endpoint.config):
        steps.say(f"switching the router to generation {endpoint.generation}")
        router.wait_generation(endpoint.url, endpoint.generation, endpoint.name)
        return reg.record_endpoint(endpoint.name, target=endpoint.target, state="running", url=endpoint.url,
                                   config={**dict(endpoint.config), **config})
    steps.say(f"starting the router of {endpoint.name}")
    chosen = port or endpoint.config.get("port")
    key_file = reg.endpoint_keys.path(endpoint.name) if endpoint.config.get("auth") or config.get("auth") else None
    process = router.start(reg.home, endpoint.name, int(chosen) if chosen else None, key_file)
    try:
        router.wait_generation(process.url, endpoint.generation, endpoint.name)
        return reg.record_endpoint(endpoint.name, target="local", state="running", url=process.url,
                                   config={**dict(endpoint.config), **config, **process.config()})
    except BaseException:
        router.stop(process.pid, process.stamp)
        raise


def _roll_back(reg: Registry, current: Endpoint, steps: Steps) -> EndpointStatus:
    history = reg.endpoint_history(current.name)
    earlier = [c for c in history if c.generation < current.generation]
    if not earlier:
        raise ConflictError(f"Endpoint {current.name!r} has no earlier routing to go back to (generation "
                            f"{current.generation} is its first).")
    previous = earlier[-1]
    changed = reg.set_endpoint_routing(current.name, routing.plain(previous.routing),
                                       reason=f"rollback to generation {previous.generation}",
                                       expected_generation=current.generation)
    _serve(reg, changed, dict(current.config), None, steps)
    return endpoint_status(current.name, registry=reg)
