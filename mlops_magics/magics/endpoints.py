"""Endpoints: %endpoint."""

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
    @argument("--target", default="local", help="Where --add deploys members (default: local).")
    @argument("--port", type=int, help="The endpoint's port when it is created (default: a free one).")
    @argument("--delete", action="store_true", help="Stop the router and undeploy the members it deployed.")
    @line_magic
    def endpoint(self, line: str) -> Any:
        """One address in front of several deployments: weights, a shadow copy, a sticky header, rollback."""
        args = self.parse(self.endpoint, line)
        if args.delete:
            with user_errors():
                gone = api.delete_endpoint(args.name)
            print(f"Endpoint {args.name!r} deleted" + (f"; undeployed {', '.join(gone)}." if gone else "."))
            return None
        with user_errors(), LiveStatus(f"endpoint {args.name}") as status:
            result = api.endpoint(args.name, add=args.add, remove=args.remove, traffic=args.traffic,
                                  shadow=args.shadow, sticky=args.sticky, rollback=args.rollback,
                                  require_validation=args.require_validation, target=args.target, port=args.port,
                                  progress=status)
        status.done(result.headline())
        return result
