"""Verbs of endpoints: endpoint, replay, compare-traffic."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from mlops_magics import api
from mlops_magics.cli.deployments import StatusLines
from mlops_magics.cli.output import Status, Verbs


def _endpoint(args: argparse.Namespace) -> Any:
    if args.keys or args.regenerate_key:
        keys = api.endpoint_keys(args.name, regenerate=args.regenerate_key)
        return Status(repr(keys), {"name": args.name, "regenerated": args.regenerate_key})
    if args.delete:
        gone = api.delete_endpoint(args.name)
        return Status(f"Endpoint {args.name!r} deleted" + (f"; undeployed {', '.join(gone)}." if gone else "."),
                      {"name": args.name, "undeployed": gone})
    result = api.endpoint(args.name, add=args.add, remove=args.remove, traffic=args.traffic, shadow=args.shadow,
                          sticky=args.sticky, rollback=args.rollback, require_validation=args.require_validation,
                          target=args.target, port=args.port, auth=args.auth, router=args.router,
                          gateway=args.gateway, progress=StatusLines(f"endpoint {args.name}"))
    return Status(repr(result), dataclasses.asdict(result))


def _replay(args: argparse.Namespace) -> Any:
    result = api.replay(args.name, to=args.to, since=args.since, source=args.source, rate=args.rate,
                        limit=args.limit, progress=StatusLines(f"replay to {args.to}"))
    return Status(result.headline(), result.to_dict())


def _compare_traffic(args: argparse.Namespace) -> Any:
    result = api.compare_traffic(args.name, args.a, args.b, since=args.since, tolerance=args.tolerance,
                                 examples=args.examples)
    return Status(result.headline() + (f"\n{result.note}" if result.note else ""), result.to_dict())


def add_verbs(verbs: Verbs) -> None:
    """Add the endpoint verbs."""
    p = verbs.add("endpoint", _endpoint, "One address in front of several deployments: weights, a shadow copy, a "
                                         "sticky header, rollback; without changes, what it serves.")
    p.add_argument("name", help="The endpoint (its members' services are NAME-MEMBER).")
    p.add_argument("--add", action="append", metavar="MEMBER=REF",
                   help="Add a member: a model (iris:2) deployed as NAME-MEMBER, or a live service by name.")
    p.add_argument("--remove", action="append", default=[], metavar="MEMBER",
                   help="Remove a member that takes no traffic (a service it deployed is undeployed).")
    p.add_argument("--traffic", metavar="M=PCT,...", help="Weights in percent: blue=90,green=10.")
    p.add_argument("--shadow", metavar="MEMBER=PCT",
                   help="Copy that share of the requests to MEMBER after the answer (recorded, never returned); off.")
    p.add_argument("--sticky", metavar="HEADER", help="Requests with this header stay on one member; off.")
    p.add_argument("--rollback", action="store_true", help="Go back to the routing before the current one.")
    p.add_argument("--require-validation", action="store_true", default=None,
                   help="Members that take traffic must have passed validation (from now on).")
    p.add_argument("--no-require-validation", dest="require_validation", action="store_false",
                   help="Members need not have passed validation any more.")
    p.add_argument("--target", default="local", help="Where --add deploys members (default: local).")
    p.add_argument("--port", type=int, help="The endpoint's port when it is created (default: a free one).")
    p.add_argument("--router", choices=["auto", "process", "deployment", "httproute", "virtualservice"],
                   help="When creating it, how it routes (auto: this machine's process, unless every member is on "
                        "one Kubernetes cluster: an HTTPRoute or VirtualService it serves, else our router as a "
                        "Deployment).")
    p.add_argument("--gateway", metavar="[NAMESPACE/]NAME",
                   help="With --router httproute or virtualservice: the Gateway it attaches to (default: the mesh).")
    p.add_argument("--auth", action="store_true", help="When creating it: clients must send one of its own keys.")
    p.add_argument("--keys", action="store_true", help="Show its keys, masked (mlops keys-style; --json: names only).")
    p.add_argument("--regenerate-key", choices=["primary", "secondary"], help="Replace one of its keys.")
    p.add_argument("--delete", action="store_true", help="Stop the router and undeploy the members it deployed.")

    p = verbs.add("replay", _replay, "Send collected requests to a member and compare its answers with the ones "
                                     "clients got.")
    p.add_argument("name", help="The endpoint.")
    p.add_argument("--to", required=True, metavar="MEMBER", help="The member that gets the requests.")
    p.add_argument("--since", help="Only requests collected from then on (1h, 30m, an ISO time).")
    p.add_argument("--source", metavar="SERVICE", help="The service whose collected requests are sent (default: the "
                                                       "member with the most weight).")
    p.add_argument("--rate", type=float, default=50.0, help="Requests per second at most (default 50).")
    p.add_argument("--limit", type=int, default=1000, help="The newest N collected requests at most (default 1000).")

    p = verbs.add("compare-traffic", _compare_traffic, "How two members' answers compare: agreement, predictions, "
                                                       "latency, errors.")
    p.add_argument("name", help="The endpoint.")
    p.add_argument("a", help="The reference member (e.g. blue).")
    p.add_argument("b", help="The member compared with it (e.g. green).")
    p.add_argument("--since", help="Only traffic from then on (1h, 30m, an ISO time).")
    p.add_argument("--tolerance", type=float, default=1e-6, help="Numbers agree within this relative tolerance.")
    p.add_argument("--examples", type=int, default=10, help="How many differing rows to show (default 10).")
