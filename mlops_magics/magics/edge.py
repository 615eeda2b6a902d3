"""Edge devices: %edge manifest, offline, online, status, remove."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from mlops_magics import api
from mlops_magics.magics.base import MagicsBase, examples, user_errors
from mlops_magics.progress import LiveStatus


@magics_class
class EdgeMagics(MagicsBase):
    """Edge devices."""

    @examples("%edge manifest iris --output deployment.json --image myacr.azurecr.io/iris:2   # for a real device",
              "%edge offline sim-1        # cut the device's link: it scores on, and buffers what it collects",
              "%edge online sim-1         # restore it; waits until the buffered records are forwarded",
              "%edge status sim-1         # modules, health, buffered / forwarded / evicted records, last sync")
    @magic_arguments()
    @argument("action", choices=["manifest", "offline", "online", "status", "remove"],
              help="manifest: write the IoT Edge deployment manifest of NAME (a deployment or a model); offline / "
                   "online: cut or restore the device's link; status: the device (all without NAME); remove: "
                   "the device (its modules undeployed first).")
    @argument("name", nargs="?", help="The device (offline, online, status, remove; default sim-1), or the edge "
                                      "deployment or model (manifest).")
    @argument("--output", "-o", metavar="FILE", help="manifest: the file to write (deployment.json).")
    @argument("--image", metavar="REGISTRY/REPO:TAG", help="manifest: the image as the device pulls it.")
    @argument("--data-volume", metavar="PATH",
              help="manifest: the device's folder for the module's data (default /var/lib/mlops-edge/MODULE).")
    @argument("--hub", metavar="URL", help="manifest: where the module forwards what it collects (a hub's URL).")
    @argument("--mqtt", metavar="HOST[:PORT]", help="manifest: the MQTT broker the module takes messages from.")
    @argument("--cpu", type=float, metavar="CORES", help="manifest: the module's CPU limit (default: as deployed).")
    @argument("--memory", metavar="SIZE", help="manifest: the module's memory limit (default: as deployed).")
    @argument("--port", type=int, help="manifest: the module's port (default: as deployed, else 5001).")
    @argument("--quantize", choices=["int8"], help="manifest of a model: serve an int8 quantization.")
    @argument("--wait", type=float, default=60.0, metavar="SECONDS",
              help="online: wait this long at most for the buffered records to be forwarded (default 60; 0: no).")
    @line_magic
    def edge(self, line: str) -> Any:
        """Simulated IoT Edge devices: a deployment's manifest, cutting and restoring a device's link, its status."""
        args = self.parse(self.edge, line)
        with user_errors():
            if args.action == "manifest":
                if not args.name:
                    raise UsageError("%edge manifest needs the edge deployment or the model: %edge manifest iris "
                                     "--output deployment.json.")
                with LiveStatus(f"manifest of {args.name}") as status:
                    return api.edge_manifest(args.name, output=args.output, image=args.image,
                                             data_volume=args.data_volume, hub=args.hub, mqtt=args.mqtt,
                                             cpu=args.cpu, memory=args.memory, port=args.port,
                                             quantize=args.quantize, progress=status)
            if args.action == "status":
                return api.edge_status(args.name)
            if args.action == "offline":
                return api.edge_offline(args.name or api.DEFAULT_DEVICE)
            if args.action == "remove":
                if not args.name:
                    raise UsageError("%edge remove needs the device's name: %edge remove sim-1.")
                print(api.remove_device(args.name))
                return None
            with LiveStatus(f"bringing {args.name or api.DEFAULT_DEVICE} online") as status:
                return api.edge_online(args.name or api.DEFAULT_DEVICE, wait=args.wait, progress=status)
