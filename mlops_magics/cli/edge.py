"""Verbs of edge devices: edge manifest, offline, online, status, remove."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from mlops_magics import api
from mlops_magics.cli.deployments import StatusLines
from mlops_magics.cli.output import Status, Verbs
from mlops_magics.errors import InvalidInputError


def _edge(args: argparse.Namespace) -> Any:
    device = args.name or api.DEFAULT_DEVICE
    if args.action == "manifest":
        if not args.name:
            raise InvalidInputError("mlops edge manifest needs the edge deployment or the model: mlops edge manifest "
                                    "iris --output deployment.json.")
        made = api.edge_manifest(args.name, output=args.output, image=args.image, data_volume=args.data_volume,
                                 hub=args.hub, mqtt=args.mqtt, cpu=args.cpu, memory=args.memory, port=args.port,
                                 quantize=args.quantize, progress=StatusLines(f"manifest of {args.name}"))
        return Status(repr(made) if made.path else made.json(),
                      {"service": made.service, "path": None if made.path is None else str(made.path),
                       "image": made.image, "served": made.served, "manifest": made.manifest})
    if args.action == "remove":
        if not args.name:
            raise InvalidInputError("mlops edge remove needs the device's name: mlops edge remove sim-1.")
        said = api.remove_device(args.name)
        return Status(said, {"removed": args.name})
    if args.action == "status":
        found = api.edge_status(args.name)
        return Status(repr(found), dataclasses.asdict(found))
    if args.action == "offline":
        status = api.edge_offline(device)
    else:
        status = api.edge_online(device, wait=args.wait, progress=StatusLines(f"bringing {device} online"))
    return Status(repr(status), dataclasses.asdict(status))


def add_verbs(verbs: Verbs) -> None:
    """Add the edge verb."""
    p = verbs.add("edge", _edge, "Simulated IoT Edge devices: a deployment's manifest for a real device, cutting and "
                                 "restoring a device's link, its status, removing it.")
    p.add_argument("action", choices=["manifest", "offline", "online", "status", "remove"],
                   help="manifest: the IoT Edge deployment manifest of NAME (a deployment or a model); offline / "
                        "online: cut or restore the device's link; status: the device (all without NAME); remove.")
    p.add_argument("name", nargs="?", help="The device (default sim-1), or the deployment or model (manifest).")
    p.add_argument("--output", "-o", metavar="FILE", help="manifest: the file to write (default: print it).")
    p.add_argument("--image", metavar="REGISTRY/REPO:TAG", help="manifest: the image as the device pulls it.")
    p.add_argument("--data-volume", metavar="PATH", help="manifest: the device's folder for the module's data.")
    p.add_argument("--hub", metavar="URL", help="manifest: where the module forwards what it collects.")
    p.add_argument("--mqtt", metavar="HOST[:PORT]", help="manifest: the MQTT broker the module takes messages from.")
    p.add_argument("--cpu", type=float, metavar="CORES", help="manifest: the module's CPU limit.")
    p.add_argument("--memory", metavar="SIZE", help="manifest: the module's memory limit.")
    p.add_argument("--port", type=int, help="manifest: the module's port.")
    p.add_argument("--quantize", choices=["int8"], help="manifest of a model: serve an int8 quantization.")
    p.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                   help="online: wait this long at most for buffered records to be forwarded (default 60; 0: no).")
