"""Endpoints: %endpoint, %replay, %compare_traffic."""

from __future__ import annotations

from typing import Any

from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from mlops_magics import api
from mlops_magics.magics.base import MagicsBase, examples, user_errors
from mlops_magics.progress import LiveStatus


@magics_class
class EndpointMagics(MagicsBase):
    """Endpoints."""

    @examples("%endpoint iris --add blue=iris:2 --add green=iris:3 --traffic blue=90,green=10",
              "%endpoint iris --shadow green=100      # a copy of every request; its answers recorded, never returned",
              "%endpoint iris --traffic green=100     # promote; --rollback goes back",
              "%endpoint iris                         # members, weights, requests, errors, latency")
    @magic_arguments()
    @argument("name", help="The endpoint (its members' services are NAME-MEMBER).")
    @argument("--add", action="append", metavar="MEMBER=REF",
              help="Add a member: a model (iris:2, iris@prod) deployed as NAME-MEMBER, or a live service by name. "
                   "It takes no traffic until --traffic gives it some (the first member takes all).")
    @argument("--remove", action="append", default=[], metavar="MEMBER",
              help="Remove a member that takes no traffic (a service it deployed is undeployed).")
    @argument("--traffic", metavar="M=PCT,...",
              help="Weights in percent: blue=90,green=10 (members left out get 0 when these add up to 100).")
    @argument("--shadow", metavar="MEMBER=PCT",
              help="Copy that share of the requests to MEMBER after the answer (recorded, never returned); off: stop.")
    @argument("--sticky", metavar="HEADER", help="Requests with this header stay on one member (by its value); off.")
    @argument("--rollback", action="store_true", help="Go back to the routing before the current one.")
    @argument("--require-validation", action="store_true", default=None,
              help="Members that take traffic must have passed %%validate (from now on).")
    @argument("--no-require-validation", dest="require_validation", action="store_false",
              help="Members need not have passed validation any more.")
    @argument("--target", default="local", help="Where --add deploys members (default: local).")
    @argument("--port", type=int, help="The endpoint's port when it is created (default: a free one).")
    @argument("--auth", action="store_true", help="When creating it: clients must send one of its own keys.")
    @argument("--router", choices=["auto", "process", "deployment", "httproute", "virtualservice"],
              help="When creating it, how it routes: auto (default: this machine's process, unless every member is on "
                   "one Kubernetes cluster: an HTTPRoute or Istio VirtualService the cluster serves, else our router "
                   "as a Deployment), process, deployment, httproute, virtualservice.")
    @argument("--gateway", metavar="[NAMESPACE/]NAME",
              help="With --router httproute or virtualservice: the Gateway it attaches to (default: the mesh).")
    @argument("--keys", action="store_true", help="Show its keys (masked; .primary / .secondary for the values).")
    @argument("--regenerate-key", choices=["primary", "secondary"], help="Replace one of its keys.")
    @argument("--delete", action="store_true", help="Stop the router and undeploy the members it deployed.")
    @line_magic
    def endpoint(self, line: str) -> Any:
        """One address in front of several deployments: weights, a shadow copy, a sticky header, rollback."""
        args = self.parse(self.endpoint, line)
        if args.keys or args.regenerate_key:
            with user_errors():
                return api.endpoint_keys(args.name, regenerate=args.regenerate_key)
        if args.delete:
            with user_errors():
                gone = api.delete_endpoint(args.name)
            print(f"Endpoint {args.name!r} deleted" + (f"; undeployed {', '.join(gone)}." if gone else "."))
            return None
        with user_errors(), LiveStatus(f"endpoint {args.name}") as status:
            result = api.endpoint(args.name, add=args.add, remove=args.remove, traffic=args.traffic,
                                  shadow=args.shadow, sticky=args.sticky, rollback=args.rollback,
                                  require_validation=args.require_validation, target=args.target, port=args.port,
                                  auth=args.auth, router=args.router, gateway=args.gateway, progress=status)
        status.done(result.headline())
        return result

    @examples("%replay iris --to green --since 1h          # collected requests to green, answers compared",
              "%replay iris --to green --source iris-blue --rate 20 --limit 200")
    @magic_arguments()
    @argument("name", help="The endpoint.")
    @argument("--to", required=True, metavar="MEMBER", help="The member that gets the requests.")
    @argument("--since", help="Only requests collected from then on (1h, 30m, an ISO time).")
    @argument("--source", metavar="SERVICE",
              help="The service whose collected requests are sent (default: the member with the most weight).")
    @argument("--rate", type=float, default=50.0, help="Requests per second at most (default 50).")
    @argument("--limit", type=int, default=1000, help="The newest N collected requests at most (default 1000).")
    @line_magic
    def replay(self, line: str) -> Any:
        """Send collected requests to a member and compare its answers with the ones clients got."""
        args = self.parse(self.replay, line)
        with user_errors(), LiveStatus(f"replay to {args.to}") as status:
            result = api.replay(args.name, to=args.to, since=args.since, source=args.source, rate=args.rate,
                                limit=args.limit, progress=status)
        status.done(result.headline())
        return result

    @examples("%compare_traffic iris blue green            # agreement, predictions, latency, errors",
              "%compare_traffic iris blue green --since 1h --plot")
    @magic_arguments()
    @argument("name", help="The endpoint.")
    @argument("a", help="The reference member (e.g. blue).")
    @argument("b", help="The member compared with it (e.g. green).")
    @argument("--since", help="Only traffic from then on (1h, 30m, an ISO time).")
    @argument("--tolerance", type=float, default=1e-6, help="Numbers agree within this relative tolerance.")
    @argument("--examples", type=int, default=10, help="How many differing rows to show (default 10).")
    @argument("--plot", action="store_true", help="Return the plots (predictions, latency) instead of the report.")
    @line_magic
    def compare_traffic(self, line: str) -> Any:
        """How two members' answers compare: agreement rate, predictions, latency p50/p99, errors."""
        args = self.parse(self.compare_traffic, line)
        with user_errors():
            result = api.compare_traffic(args.name, args.a, args.b, since=args.since, tolerance=args.tolerance,
                                         examples=args.examples)
        return result.plot() if args.plot else result
