"""Verbs of services: deploy, scale, deployments, undeploy, logs, reload, update, call, keys."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from mlops_magics import api
from mlops_magics.cli.inputs import ACCEPTED, read_body
from mlops_magics.cli.output import BuildLines, Status, Verbs
from mlops_magics.errors import InvalidInputError
from mlops_magics.packaging.engine import BuildStep
from mlops_magics.targets.base import Status as Step


class StatusLines:
    """Prints a slow step's progress on standard error: each new step, then every ``every`` seconds while it
    lasts (``what, N s``); image build steps as :class:`~mlops_magics.cli.output.BuildLines` prints them."""

    def __init__(self, subject: str, every: float = 2.0) -> None:
        self.subject, self.every = subject, every
        self.build = BuildLines()
        self.what, self.said = "", 0.0

    def __call__(self, event: BuildStep | Step) -> None:
        if isinstance(event, BuildStep):
            self.build(event)
        elif event.what != self.what or time.monotonic() - self.said >= self.every:
            self.what, self.said = event.what, time.monotonic()
            print(f"{self.subject}: {event.what}, {event.elapsed:.0f} s", file=sys.stderr, flush=True)


def _deploy(args: argparse.Namespace) -> Any:
    options = api.kubernetes_options(args.target, args.settings, autoscale=args.autoscale, replicas=args.replicas,
                                     target_utilization=args.target_utilization, namespace=args.namespace,
                                     context=args.context, image_registry=args.registry,
                                     plan=bool(args.dry_run or args.diff))
    options.update(api.edge_options(args.target, device=args.device, quantize=args.quantize,
                                    max_buffer=args.max_buffer, mqtt=False if args.no_mqtt else None))
    options.update(api.fpga_options(args.target, format=args.format, native_dim=args.native_dim,
                                    runtime=args.runtime))
    if args.dry_run:
        return api.kubernetes_manifests(args.ref, name=args.name, write_to=args.dry_run, target_options=options,
                                        auth=args.auth, collect=args.collect, workers=args.workers, port=args.port)
    if args.diff:
        changes = api.kubernetes_diff(args.ref, name=args.name, target_options=options, auth=args.auth,
                                      collect=args.collect, workers=args.workers, port=args.port)
        return Status(changes or "Nothing would change: the cluster has these objects as they are.",
                      {"diff": changes})
    return api.deploy(args.ref, target=args.target, name=args.name, port=args.port, workers=args.workers,
                      auth=args.auth, isolated=args.isolated, cpu=args.cpu, memory=args.memory,
                      base_image=args.base_image, build=not args.no_build, require_validation=args.require_validation,
                      collect=args.collect, sample_rate=args.sample_rate, target_options=options,
                      progress=StatusLines(f"deploying {args.ref}"))


def _scale(args: argparse.Namespace) -> Any:
    bounds = api.autoscale_bounds(args.autoscale) if args.autoscale is not None else None
    scaled = api.scale(args.service, replicas=args.replicas, autoscale=bounds,
                       target_utilization=args.target_utilization)
    chosen = scaled.config["settings"]
    said = (f"{chosen['min_replicas']} to {chosen['max_replicas']} pods (autoscaled at {chosen['target_utilization']}% "
            "CPU)" if chosen["autoscale"] else f"{chosen['replicas']} pods")
    return Status(f"{scaled.name}: {said}", {"name": scaled.name, **{k: chosen[k] for k in (
        "replicas", "autoscale", "min_replicas", "max_replicas", "target_utilization")}})


def _deployments(args: argparse.Namespace) -> Any:
    return api.list_deployments(include_deleted=args.all)


def _undeploy(args: argparse.Namespace) -> Any:
    gone = api.undeploy(args.service, all_services=args.all)
    return Status(f"Undeployed {', '.join(gone) or 'nothing'}.", gone)


def _logs(args: argparse.Namespace) -> Any:
    if not args.follow:
        text = api.logs(args.service, tail=args.tail)
        return Status(text, {"name": args.service, "tail": args.tail, "log": text})
    if getattr(args, "json", False):
        raise InvalidInputError("--follow prints the log's lines as they come: drop --json.")
    try:
        print(api.logs(args.service, tail=args.tail), flush=True)
        for line in api.follow(args.service, timeout=args.timeout):
            print(line, flush=True)
    except KeyboardInterrupt:  # Ctrl-C is how one stops following: a normal end, exit 0
        pass
    return None


def _reload(args: argparse.Namespace) -> Any:
    return api.reload(args.service, progress=StatusLines(f"reloading {args.service}"))


def _update(args: argparse.Namespace) -> Any:
    return api.update(args.service, args.model, progress=StatusLines(f"updating {args.service}"))


def _call(args: argparse.Namespace) -> Any:
    return api.call(args.service, read_body(args.data), request_id=args.request_id)


def _keys(args: argparse.Namespace) -> Any:
    found = api.keys(args.service, regenerate=args.regenerate)
    return {"service": found.service, "primary": found.primary, "secondary": found.secondary}


def add_verbs(verbs: Verbs) -> None:
    """Add this family's verbs."""
    p = verbs.add("deploy", _deploy, "Deploy a model version as a web service and wait until it is healthy (an "
                                     "image build prints its steps on standard error).")
    p.add_argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS.")
    p.add_argument("--target", default="local",
                   help="Where to deploy: local (default), docker, kubernetes, edge or fpga.")
    p.add_argument("--name", "-n", help="Service name (default: the model name).")
    p.add_argument("--port", "-p", type=int, help="Port (default: a free one).")
    p.add_argument("--workers", "-w", type=int, default=1, help="Worker processes (default 1).")
    p.add_argument("--auth", action="store_true", help="Require a key: 'Authorization: Bearer KEY' (mlops keys).")
    p.add_argument("--isolated", action="store_true",
                   help="Run in a virtual environment built from the model's environment only (cached), to prove "
                        "the environment complete before building an image.")
    p.add_argument("--cpu", type=float, metavar="CORES", help="--target docker or edge: CPU cores it may use.")
    p.add_argument("--memory", metavar="SIZE", help="--target docker or edge: memory the container may use (512m, 1g).")
    p.add_argument("--base-image", metavar="IMAGE",
                   help="--target docker: base image (default: $MLOPS_BASE_IMAGE or python:3.11-slim).")
    p.add_argument("--no-build", action="store_true",
                   help="--target docker: use the image built by mlops build; fail instead of building.")
    p.add_argument("--require-validation", action="store_true",
                   help="Refuse a version whose last validation did not pass (or that was never validated).")
    p.add_argument("--collect", action="store_true",
                   help="Record every scored request off the request path; see mlops collected and mlops monitor.")
    p.add_argument("--sample-rate", type=float, metavar="R",
                   help="Record this share of the requests, 0 < R <= 1 (implies --collect; default 1).")
    p.add_argument("--replicas", type=int, metavar="N", help="--target kubernetes: pods to run (default 1).")
    p.add_argument("--autoscale", metavar="MIN,MAX",
                   help="--target kubernetes: let a HorizontalPodAutoscaler run MIN to MAX pods on CPU use.")
    p.add_argument("--target-utilization", type=int, metavar="PCT",
                   help="--target kubernetes, with --autoscale: the CPU use (percent of the request) to aim at.")
    p.add_argument("--namespace", metavar="NS", help="--target kubernetes: the namespace (default mlops; created).")
    p.add_argument("--context", metavar="CTX", help="--target kubernetes: the kubeconfig context (default: current).")
    p.add_argument("--registry", metavar="HOST/REPO",
                   help="--target kubernetes: push the image there for the nodes to pull.")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                   help="--target kubernetes: any setting, by our name or Azure's AKS name; repeatable.")
    p.add_argument("--dry-run", metavar="DIR",
                   help="--target kubernetes: write the manifests to DIR, validated; apply nothing.")
    p.add_argument("--diff", action="store_true",
                   help="--target kubernetes: show what an apply would change on the cluster; apply nothing.")
    p.add_argument("--format", metavar="FORMAT",
                   help="--target fpga: the program's number format (mxfp8 by default; msfp8, mxint8, fp32...).")
    p.add_argument("--native-dim", type=int, metavar="N",
                   help="--target fpga: the emulated engine's native dimension (default 400, Brainwave's).")
    p.add_argument("--runtime", choices=["local", "docker"],
                   help="--target fpga: serve the emulator as a local process (default) or in a container.")

    p.add_argument("--device", metavar="NAME",
                   help="--target edge: the simulated device to run on (default sim-1; made when it does not exist).")
    p.add_argument("--quantize", choices=["int8"], help="--target edge: serve an int8 quantization.")
    p.add_argument("--max-buffer", metavar="SIZE",
                   help="--target edge: the device's buffer of collected records while offline (default 256m).")
    p.add_argument("--no-mqtt", action="store_true", help="--target edge: no MQTT input from the device's broker.")

    p = verbs.add("scale", _scale, "Set how many pods a Kubernetes service runs, or its autoscaler's bounds.")
    p.add_argument("service", help="The Kubernetes service to scale.")
    p.add_argument("--replicas", type=int, metavar="N", help="Run N pods (the autoscaler, if any, is removed).")
    p.add_argument("--autoscale", metavar="MIN,MAX", help="Let the autoscaler run MIN to MAX pods.")
    p.add_argument("--target-utilization", type=int, metavar="PCT", help="With --autoscale: the CPU use to aim at.")

    p = verbs.add("deployments", _deployments, "List deployments with their live state (checked now); deleted ones "
                                               "with --all.")
    p.add_argument("--all", action="store_true", help="Also list the deleted (undeployed) ones.")

    p = verbs.add("undeploy", _undeploy, "Stop and remove a deployment (idempotent).")
    p.add_argument("service", nargs="?", help="The service to stop and remove.")
    p.add_argument("--all", action="store_true", help="Every deployment.")

    p = verbs.add("logs", _logs, "Show the end of a deployment's server log; --follow for more (Ctrl-C stops, exit "
                                 "0).")
    p.add_argument("service", help="The service whose log to show.")
    p.add_argument("--tail", "-t", type=int, default=50, help="How many lines (default 50).")
    p.add_argument("--follow", "-f", action="store_true",
                   help="Then keep printing new lines until the service stops, --timeout passes or Ctrl-C.")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="With --follow: stop after this many seconds.")

    p = verbs.add("reload", _reload, "Serve the edited entry script and assets without re-registering.")
    p.add_argument("service", help="The service to reload.")

    p = verbs.add("update", _update, "Switch a service to another model version; the old one serves until then.")
    p.add_argument("service", help="The service to update.")
    p.add_argument("--model", "-m", required=True, metavar="NAME:VERSION", help="The model version to serve instead.")

    p = verbs.add("call", _call, "Send data to a service and print its answer.")
    p.add_argument("service", help="The service to call.")
    p.add_argument("data", metavar="DATA", help=f"What to send: {ACCEPTED}; or inline JSON, e.g. '[[5.1, 3.5, 1.4, "
                                                "0.2]]'. Rows (a list) go as {\"data\": rows}, an object as it is.")
    p.add_argument("--request-id", help="Send this x-request-id (collected records carry it; mlops label uses it).")

    p = verbs.add("keys", _keys, "A service's primary and secondary keys (deployed with --auth).")
    p.add_argument("service", help="The service.")
    p.add_argument("--regenerate", choices=["primary", "secondary"],
                   help="Replace this key with a new one; the other stays valid.")
