"""Deployments: %deploy, %deployments, %undeploy, %keys, %logs, %reload, %update, %call."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from mlops_magics import api
from mlops_magics.magics.base import MagicsBase, examples, user_errors
from mlops_magics.progress import LiveStatus


@magics_class
class DeploymentMagics(MagicsBase):
    """Deployments."""

    @examples("%deploy iris:2                            # a local process, healthy when this returns",
              "%deploy iris --target kubernetes --autoscale 1,4 --dry-run ./k8s   # manifests only, validated",
              "%deploy iris --target edge --device sim-1 --cpu 0.5 --memory 256m --collect   # an IoT Edge module")
    @magic_arguments()
    @argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS.")
    @argument("--target", default="local",
              help="Where to deploy (default: local): local, docker, kubernetes, edge (a simulated IoT Edge device), "
                   "fpga (the emulated FPGA engine).")
    @argument("--name", "-n", help="Service name (default: the model name).")
    @argument("--port", "-p", type=int, help="Port (default: a free one).")
    @argument("--workers", "-w", type=int, default=1, help="Worker processes (default 1).")
    @argument("--auth", action="store_true", help="Require a key: 'Authorization: Bearer KEY' (see .auth_key).")
    @argument("--isolated", action="store_true",
              help="Run in a virtual environment built from the model's environment only (cached), to prove "
                   "the environment complete before building an image.")
    @argument("--cpu", type=float, metavar="CORES", help="--target docker or edge: CPU cores it may use (0.5).")
    @argument("--memory", metavar="SIZE", help="--target docker or edge: memory the container may use (512m, 1g).")
    @argument("--base-image", metavar="IMAGE",
              help="--target docker: base image (default: $MLOPS_BASE_IMAGE or python:3.11-slim).")
    @argument("--no-build", action="store_true",
              help="--target docker: use the image built by %%build; fail instead of building.")
    @argument("--require-validation", action="store_true",
              help="Refuse a version whose last %%validate did not pass (or that was never validated).")
    @argument("--collect", action="store_true",
              help="Record every scored request (input, output, latency, status) off the request path; see "
                   "%%collected and %%monitor. Entry scripts' ModelDataCollector writes too.")
    @argument("--sample-rate", type=float, metavar="R",
              help="Record this share of the requests, 0 < R <= 1 (implies --collect; default 1).")
    @argument("--replicas", type=int, metavar="N", help="--target kubernetes: pods to run (default 1).")
    @argument("--autoscale", metavar="MIN,MAX",
              help="--target kubernetes: let a HorizontalPodAutoscaler run MIN to MAX pods on CPU use.")
    @argument("--target-utilization", type=int, metavar="PCT",
              help="--target kubernetes, with --autoscale: the CPU use (percent of the request) to aim at (70).")
    @argument("--namespace", metavar="NS", help="--target kubernetes: the namespace (default mlops; created).")
    @argument("--context", metavar="CTX", help="--target kubernetes: the kubeconfig context (default: current).")
    @argument("--registry", metavar="HOST/REPO",
              help="--target kubernetes: push the image there for the nodes to pull (default: they have it).")
    @argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
              help="--target kubernetes: any setting, by our name or Azure's AKS name (cpu_cores=0.5, "
                   "memory_gb_limit=2, period_seconds=5, network=host...); repeatable.")
    @argument("--dry-run", metavar="DIR",
              help="--target kubernetes: write the manifests to DIR, validated for Kubernetes 1.25-1.37; apply "
                   "nothing.")
    @argument("--device", metavar="NAME",
              help="--target edge: the simulated device to run on (default sim-1; made when it does not exist).")
    @argument("--quantize", choices=["int8"],
              help="--target edge: serve an int8 quantization of the ONNX version (its accuracy is shown).")
    @argument("--max-buffer", metavar="SIZE",
              help="--target edge: the device's buffer of collected records while offline (default 256m; the "
                   "oldest are evicted past it, and counted).")
    @argument("--no-mqtt", action="store_true",
              help="--target edge: no MQTT input (default: from the device's broker, when mosquitto is installed).")
    @argument("--diff", action="store_true",
              help="--target kubernetes: show what an apply would change on the cluster; apply nothing.")
    @argument("--format", metavar="FORMAT",
              help="--target fpga: the number format of the program (mxfp8 by default; msfp8, mxint8, fp32...).")
    @argument("--native-dim", type=int, metavar="N",
              help="--target fpga: the emulated engine's native dimension (default 400, Brainwave's).")
    @argument("--runtime", choices=["local", "docker"],
              help="--target fpga: serve the emulator as a local process (default) or in a container.")
    @line_magic
    def deploy(self, line: str) -> Any:
        """Deploy a model version as a web service and wait until it is healthy."""
        args = self.parse(self.deploy, line)
        with user_errors():
            options = api.kubernetes_options(args.target, args.settings, autoscale=args.autoscale,
                                             replicas=args.replicas, target_utilization=args.target_utilization,
                                             namespace=args.namespace, context=args.context,
                                             image_registry=args.registry, plan=bool(args.dry_run or args.diff))
            options.update(api.edge_options(args.target, device=args.device, quantize=args.quantize,
                                            max_buffer=args.max_buffer, mqtt=False if args.no_mqtt else None))
            options.update(api.fpga_options(args.target, format=args.format, native_dim=args.native_dim,
                                            runtime=args.runtime))
            if args.dry_run:
                return api.kubernetes_manifests(args.ref, name=args.name, write_to=args.dry_run,
                                                target_options=options, auth=args.auth, collect=args.collect,
                                                workers=args.workers, port=args.port)
            if args.diff:
                changes = api.kubernetes_diff(args.ref, name=args.name, target_options=options, auth=args.auth,
                                              collect=args.collect, workers=args.workers, port=args.port)
                print(changes or "Nothing would change: the cluster has these objects as they are.")
                return None
        with user_errors(), LiveStatus(f"deploying {args.ref}") as status:
            deployed = api.deploy(args.ref, target=args.target, name=args.name, port=args.port,
                                  workers=args.workers, auth=args.auth, isolated=args.isolated, cpu=args.cpu,
                                  memory=args.memory, base_image=args.base_image, build=not args.no_build,
                                  require_validation=args.require_validation, collect=args.collect,
                                  sample_rate=args.sample_rate, target_options=options, progress=status)
        status.done(f"{deployed.name} serves {deployed.model_name}:{deployed.model_version} at {deployed.url} "
                    f"({deployed.target})")
        for line in deployed.config.get("quantization") or ():  # an edge module's int8 model, against its float one
            print(line)
        return deployed

    @examples("%scale iris --replicas 3", "%scale iris --autoscale 2,8 --target-utilization 60")
    @magic_arguments()
    @argument("service", help="The Kubernetes service to scale.")
    @argument("--replicas", type=int, metavar="N", help="Run N pods (the autoscaler, if any, is removed).")
    @argument("--autoscale", metavar="MIN,MAX", help="Let the autoscaler run MIN to MAX pods.")
    @argument("--target-utilization", type=int, metavar="PCT", help="With --autoscale: the CPU use to aim at.")
    @line_magic
    def scale(self, line: str) -> Any:
        """Set how many pods a Kubernetes service runs, or its autoscaler's bounds."""
        args = self.parse(self.scale, line)
        with user_errors():
            bounds = api.autoscale_bounds(args.autoscale) if args.autoscale is not None else None
            scaled = api.scale(args.service, replicas=args.replicas, autoscale=bounds,
                               target_utilization=args.target_utilization)
        chosen = scaled.config["settings"]
        print(f"{scaled.name}: " + (f"{chosen['min_replicas']} to {chosen['max_replicas']} pods (autoscaled at "
                                    f"{chosen['target_utilization']}% CPU)" if chosen["autoscale"] else
                                    f"{chosen['replicas']} pods"))
        return None

    @examples("%deployments",
              "%deployments --widget --poll 5")
    @magic_arguments()
    @argument("--widget", action="store_true",
              help="A board instead of a table: live state, details, and logs / reload / undeploy buttons.")
    @argument("--poll", type=float, metavar="SECONDS", help="With --widget: refresh the states every SECONDS.")
    @argument("--all", action="store_true", help="Also list the deleted (undeployed) ones.")
    @line_magic
    def deployments(self, line: str) -> Any:
        """List deployments with their live state (checked now), or act on them with --widget."""
        args = self.parse(self.deployments, line)
        if args.widget:
            from mlops_magics.widgets import DeploymentBoard

            return DeploymentBoard(poll=args.poll, include_deleted=args.all)
        with user_errors():
            return api.list_deployments(include_deleted=args.all)

    @examples("%undeploy iris",
              "%undeploy --all")
    @magic_arguments()
    @argument("service", nargs="?", help="The service to stop and remove.")
    @argument("--all", action="store_true", help="Every deployment.")
    @line_magic
    def undeploy(self, line: str) -> None:
        """Stop and remove a deployment (idempotent)."""
        args = self.parse(self.undeploy, line)
        with user_errors():
            gone = api.undeploy(args.service, all_services=args.all)
        print(f"Undeployed {', '.join(gone) or 'nothing'}.")

    @examples("%keys iris",
              "%keys iris --regenerate secondary")
    @magic_arguments()
    @argument("service", help="The service (deployed with --auth) whose keys to show.")
    @argument("--regenerate", choices=["primary", "secondary"],
              help="Replace this key with a new one; the other stays valid (rotation without downtime).")
    @line_magic
    def keys(self, line: str) -> Any:
        """The service's primary and secondary keys, shown masked (``.primary`` / ``.secondary`` for the values)."""
        args = self.parse(self.keys, line)
        with user_errors():
            return api.keys(args.service, regenerate=args.regenerate)

    @examples("%logs iris --tail 20",
              "%logs iris --follow --timeout 30")
    @magic_arguments()
    @argument("service", help="The service whose log to show.")
    @argument("--tail", "-t", type=int, default=50, help="How many lines (default 50).")
    @argument("--follow", "-f", action="store_true",
              help="Then keep printing new lines until the service stops or the kernel is interrupted.")
    @argument("--timeout", type=float, help="With --follow: stop after this many seconds.")
    @line_magic
    def logs(self, line: str) -> None:
        """Show the end of a deployment's server log (script lines mapped to the cell's); --follow for more."""
        args = self.parse(self.logs, line)
        with user_errors():
            print(api.logs(args.service, tail=args.tail))
            if args.follow:
                try:
                    for text in api.follow(args.service, timeout=args.timeout):
                        print(text, flush=True)
                except KeyboardInterrupt:
                    print("(stopped following)")

    @examples("%reload iris      # after editing %%score_script iris: the old script serves until the new one is up",
              "%reload iris      # after %environment iris --from-kernel: the new libraries")
    @magic_arguments()
    @argument("service", help="The service to reload with the current entry script and assets.")
    @line_magic
    def reload(self, line: str) -> Any:
        """Serve the edited entry script without re-registering; the old one serves until then."""
        args = self.parse(self.reload, line)
        with user_errors(), LiveStatus(f"reloading {args.service}") as status:
            reloaded = api.reload(args.service, progress=status)
        status.done(f"reloaded: {reloaded.name} serves {reloaded.model_name}:{reloaded.model_version} with the "
                    f"current script at {reloaded.url}; the previous server stopped")
        return reloaded

    @examples("%update iris --model iris:3",
              "%update iris --model iris@production     # the version the alias points at now")
    @magic_arguments()
    @argument("service", help="The service to update.")
    @argument("--model", "-m", required=True, metavar="NAME:VERSION", help="The model version to serve instead.")
    @line_magic
    def update(self, line: str) -> Any:
        """Switch a service to another model version; the old one serves until the new one is ready."""
        args = self.parse(self.update, line)
        with user_errors(), LiveStatus(f"updating {args.service}") as status:
            updated = api.update(args.service, args.model, progress=status)
        status.done(f"{updated.name} serves {updated.model_name}:{updated.model_version} at {updated.url}; the "
                    "previous version's server stopped")
        return updated

    @examples("%call iris X_test[:3]",
              "%call iris X_test[:3] --request-id test-1",
              '%%call iris\n{"data": [[5.1, 3.5, 1.4, 0.2]]}')
    @magic_arguments()
    @argument("service", help="The service to call.")
    @argument("expr", nargs="*", help="Expression giving the data (line form); a cell body is sent as JSON.")
    @argument("--request-id", help="Send this x-request-id (collected records carry it; %%label attaches to it).")
    @line_cell_magic
    def call(self, line: str, cell: str | None = None) -> Any:
        """Send data to a service (an expression, or the cell as a JSON body) and return its answer."""
        args = self.parse(self.call, line)
        if cell is not None:
            data: Any = cell.strip()
        elif args.expr:
            data = self.evaluate(" ".join(args.expr), "the data expression")
        else:
            raise UsageError("Give the data: %call SERVICE EXPR, or %%call SERVICE with a JSON body in the cell.")
        with user_errors():
            return api.call(args.service, data, request_id=args.request_id)
