"""IPython magics: thin adapters over :mod:`mlops_magics.api`.

Each magic parses its arguments, calls one API function and returns its result. Every
:class:`~mlops_magics.errors.MlopsError` becomes a plain ``UsageError``: a message, no traceback.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html import escape
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from mlops_magics import api, flavors, images, services
from mlops_magics.errors import MlopsError
from mlops_magics.packaging.engine import BuildStep
from mlops_magics.registry import Lineage, ModelVersion, lineage, or_default


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn our errors into a ``UsageError``: the user sees the message, not a traceback."""
    try:
        yield
    except MlopsError as exc:
        raise UsageError(str(exc)) from exc


def refresh_display(report: Any, every: float, duration: float | None) -> None:
    """Show ``report`` and redraw it with ``report.refresh()`` every ``every`` seconds, until interrupted or
    ``duration`` seconds pass."""
    from IPython.display import display

    if every <= 0:
        raise UsageError(f"--refresh {every} is invalid: give seconds, e.g. --refresh 5.")
    handle = display(report, display_id=True)
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while deadline is None or time.monotonic() + every <= deadline:
            time.sleep(every)
            report = report.refresh()
            handle.update(report)
    except KeyboardInterrupt:
        print("(stopped refreshing)")


class BuildProgress:
    """Shows an image build in the notebook: a progress bar with the current step, updated in place.

    Nothing is shown until a build starts (an image already built is not rebuilt). With ``full_log`` every
    output line is printed as well.
    """

    def __init__(self, full_log: bool = False) -> None:
        self.full_log = full_log
        self.last: BuildStep | None = None
        self.shown_at = 0.0
        self.handle: Any = None

    def __call__(self, step: BuildStep) -> None:
        new_step = self.last is None or step.number != self.last.number
        if self.full_log:
            print(f"Step {step.number}/{step.total} : {step.instruction}" if new_step else step.line, flush=True)
        self.last = step
        now = time.monotonic()
        if self.handle is None:
            from IPython.display import display

            self.handle = display(self, display_id=True)
            self.shown_at = now
        elif new_step or now - self.shown_at > 0.2:
            self.shown_at = now
            self.handle.update(self)

    def finish(self) -> None:
        """Show the final state (every step done)."""
        if self.handle is not None:
            self.handle.update(self)

    def __repr__(self) -> str:
        step = self.last
        if step is None or not step.total:
            return "Building: sending the build context..."
        done = int(30 * step.number / step.total)
        return f"[{'#' * done}{'.' * (30 - done)}] step {step.number}/{step.total}: {step.instruction[:80]}"

    def _repr_html_(self) -> str:
        step = self.last
        if step is None or not step.total:
            return "<div>Building: sending the build context&hellip;</div>"
        cached = " (cached)" if step.cached else ""
        return (f'<div><progress value="{step.number}" max="{step.total}" style="width:240px"></progress> '
                f"step {step.number}/{step.total}{cached}: <code>{escape(step.instruction[:120])}</code>"
                f'<div style="color:#666;font-size:11px;font-family:monospace">{escape(step.line[:160])}</div></div>')


class StepProgress:
    """A progress bar for long work measured in steps (profiling), updated in place in the notebook."""

    def __init__(self) -> None:
        self.what, self.done, self.total = "starting", 0, 0
        self.handle: Any = None

    def __call__(self, what: str, done: int, total: int) -> None:
        self.what, self.done, self.total = what, done, total
        if self.handle is None:
            from IPython.display import display

            self.handle = display(self, display_id=True)
        else:
            self.handle.update(self)

    def __repr__(self) -> str:
        filled = int(30 * self.done / self.total) if self.total else 0
        return f"[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {self.what}"

    def _repr_html_(self) -> str:
        return (f'<div><progress value="{self.done}" max="{max(self.total, 1)}" style="width:240px"></progress> '
                f"{self.done}/{self.total} {escape(self.what)}</div>")


@magics_class
class MlopsMagics(Magics):
    """The mlops-magics line magics."""

    @property
    def _shell(self) -> InteractiveShell:
        if self.shell is None:
            raise UsageError("These magics need an IPython shell: %load_ext mlops_magics.")
        return self.shell

    def _args(self, magic: Callable[..., Any], line: str) -> Any:
        """Parse like a shell (quotes group words and are removed), unlike ``parse_argstring``."""
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"Cannot parse {line!r}: {exc}. Check the quotes.") from exc
        return magic.parser.parse_args(argv)  # type: ignore[attr-defined]

    def _eval(self, expr: str, option: str) -> Any:
        try:
            return self._shell.ev(expr)
        except Exception as exc:
            raise UsageError(f"Could not evaluate {option} {expr!r}: {type(exc).__name__}: {exc}") from exc

    def _progress_for(self, service: str) -> BuildProgress | None:
        """A build progress display when ``service`` runs in a container (its image is rebuilt)."""
        try:
            target = or_default(None).get_deployment(service).target
        except MlopsError:
            return None  # the API call reports the missing service
        return BuildProgress() if target != "local" else None

    def _read(self, path: str, option: str) -> str:
        try:
            return Path(path).read_text()
        except OSError as exc:
            raise UsageError(f"Cannot read {option} {path!r}: {exc.strerror}.") from exc

    def _provenance(self) -> Lineage:
        ns = self._shell.user_ns
        notebook = ns.get("__session__") or os.environ.get("JPY_SESSION_NAME") or ns.get("__vsc_ipynb_file__")
        history = ns.get("_ih") or []
        return lineage.capture(
            notebook=str(notebook) if notebook else None,
            cell_execution_count=self._shell.execution_count,
            cell_source=history[-1] if history else None,
        )

    @magic_arguments()
    @argument("var", nargs="?", help="Notebook variable holding the model (omit with --path).")
    @argument("--name", "-n", help="Model name (default: the variable's name). Letters, digits, '.', '_', '-'.")
    @argument("--path", "-p", help="Register this file or folder instead of a variable (needs --name).")
    @argument("--tag", "-t", action="append", default=[], metavar="KEY=VALUE", help="Tag the version; repeatable.")
    @argument("--description", "-d", default="", help="Free-text description (quote it).")
    @argument("--sample", "-s", metavar="EXPR",
              help="Expression giving model input, e.g. X_test[:5]: records signature and input example.")
    @argument("--alias", "-a", help="Point this alias (e.g. staging) at the new version.")
    @argument("--flavor", choices=sorted(flavors.FLAVORS), help="Force a flavor instead of detecting it.")
    @argument("--derived-from", metavar="NAME:VERSION", help="Record that this version was made from another.")
    @argument("--format", choices=flavors.FORMATS,
              help="How to save the variable: pickle (default) or skops (scikit-learn, loaded without pickle).")
    @argument("--trust", action="store_true",
              help="With --path: you know where the file comes from; record that you trust it to be loaded (a pickle "
                   "from a path is refused at load and deploy until trusted).")
    @line_magic
    def register(self, line: str) -> ModelVersion:
        """Register a model from the notebook (or a file/folder) as the next version of its name."""
        args = self._args(self.register, line)
        with user_errors():
            model = api.resolve_variable(self._shell.user_ns, args.var) if args.var else None
            sample = self._eval(args.sample, "--sample") if args.sample else None
            return api.register(
                model, args.name or args.var, path=args.path, tags=args.tag, description=args.description,
                sample=sample, alias=args.alias, flavor=args.flavor, derived_from=args.derived_from,
                provenance=self._provenance(), trust=args.trust, format=args.format,
            )

    @magic_arguments()
    @argument("ref", help="NAME:VERSION, the exact version whose source you know (an alias could move).")
    @argument("--revoke", action="store_true", help="Withdraw the trust: loading and deploying it are refused again.")
    @line_magic
    def trust(self, line: str) -> ModelVersion:
        """Trust a version to be loaded and deployed (recorded, with who and when); its files are not changed."""
        args = self._args(self.trust, line)
        with user_errors():
            return api.trust_model(args.ref, revoke=args.revoke)

    @magic_arguments()
    @argument("--name", "-n", metavar="GLOB", help="Only models whose name matches this glob, e.g. 'iris*'.")
    @argument("--tag", "-t", action="append", default=[], metavar="KEY[=VALUE]",
              help="Only versions with this tag (KEY alone: any value); repeatable, all must match.")
    @argument("--latest", "-l", action="store_true", help="Only the newest version of each model.")
    @argument("--widget", action="store_true",
              help="A browser instead of a table: filters, details (signature, lineage, alias history, "
                   "validation and profile), and load / move alias / delete buttons.")
    @line_magic
    def models(self, line: str) -> Any:
        """List registered model versions as a table (or browse them with --widget)."""
        args = self._args(self.models, line)
        if args.widget:
            from mlops_magics.widgets import ModelBrowser

            return ModelBrowser(namespace=self._shell.user_ns, name=args.name or "", tags=", ".join(args.tag))
        with user_errors():
            return api.list_models(args.name, args.tag, latest=args.latest)

    @magic_arguments()
    @argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS.")
    @argument("--as-of", metavar="DATE", help="Resolve aliases/latest as on this date (YYYY-MM-DD or ISO time).")
    @line_magic
    def model(self, line: str) -> ModelVersion:
        """Show one model version: artifact, signature, tags, aliases, lineage."""
        args = self._args(self.model, line)
        with user_errors():
            return api.get_model(args.ref, as_of=args.as_of)

    @magic_arguments()
    @argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS.")
    @argument("--as", dest="var", metavar="VAR", help="Variable to bind (default: the model name as an identifier).")
    @argument("--as-of", metavar="DATE", help="Resolve aliases/latest as on this date.")
    @line_magic
    def load_model(self, line: str) -> Any:
        """Load a registered model (sha256-verified) into the notebook namespace."""
        args = self._args(self.load_model, line)
        with user_errors():
            model = api.load_model(args.ref, as_of=args.as_of)
            var = args.var or api.variable_name_for(args.ref.split(":")[0].split("@")[0])
        if not var.isidentifier():
            raise UsageError(f"--as {var!r} is not a valid Python variable name.")
        self._shell.user_ns[var] = model
        print(f"Loaded {args.ref} into '{var}' (sha256 verified).")
        return model

    @magic_arguments()
    @argument("ref", help="NAME:VERSION to point the alias at (or NAME with --remove/--history).")
    @argument("alias", nargs="?", help="Alias name, e.g. production, staging.")
    @argument("--remove", action="store_true", help="Remove the alias instead of setting it.")
    @argument("--history", action="store_true", help="Show every move of the model's aliases.")
    @argument("--require-validation", action="store_true",
              help="Gate the alias: from now on it only points at versions whose last %%validate passed.")
    @line_magic
    def alias(self, line: str) -> Any:
        """Point an alias at a version, remove it, or show alias history (moves are recorded)."""
        args = self._args(self.alias, line)
        with user_errors():
            if args.history:
                return api.alias_history(args.ref.split("@")[0].split(":")[0], args.alias)
            if not args.alias:
                raise UsageError("Name the alias: %alias NAME:VERSION ALIAS (or --history to list moves).")
            if args.remove:
                api.remove_alias(args.ref.split(":")[0], args.alias)
                print(f"Removed alias {args.alias!r} from {args.ref.split(':')[0]}.")
                return None
            return api.set_alias(args.ref, args.alias, require_validation=args.require_validation)

    @magic_arguments()
    @argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS to profile.")
    @argument("--data", required=True, metavar="EXPR", help="One request's rows (every request sends them).")
    @argument("--configs", default="cpu=0.5,memory=512m; cpu=1,memory=1g",
              help="Resource configurations, ';'-separated (default: 'cpu=0.5,memory=512m; cpu=1,memory=1g').")
    @argument("--concurrency", default="1,4,16", help="Load levels in connections (default 1,4,16); the highest "
                                                      "is the target load.")
    @argument("--duration", type=float, default=10.0, help="Seconds of load per level (default 10).")
    @argument("--slo-p95-ms", type=float, help="The p95 latency to keep at the target load.")
    @argument("--target", choices=["docker", "local"], help="Default: docker when an engine is reachable.")
    @line_magic
    def profile(self, line: str) -> Any:
        """Deploy under each CPU/memory configuration, load it, measure; recommend the smallest that meets the SLO."""
        args = self._args(self.profile, line)
        data = self._eval(args.data, "--data")
        try:
            levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--concurrency {args.concurrency!r}: give numbers separated by commas, e.g. 1,4,16."
                             ) from None
        from mlops_magics.profiling.profile import profile

        with user_errors():
            return profile(args.ref, data, configs=args.configs, concurrency=levels, duration=args.duration,
                           slo_p95_ms=args.slo_p95_ms, target=args.target, progress=StepProgress())

    @magic_arguments()
    @argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS to validate.")
    @argument("--data", required=True, metavar="X_EXPR", help="Held-out inputs (an expression in the notebook).")
    @argument("--labels", required=True, metavar="Y_EXPR", help="Their true labels or values.")
    @argument("--metric", action="append", default=[], metavar="CHECK",
              help="accuracy>=0.9, rmse<=3, f1 (shown only)...; repeatable. A notebook function f(y_true, y_pred) "
                   "can be named as a metric.")
    @argument("--baseline", metavar="REF", help="Compare with this version (e.g. NAME@production).")
    @argument("--max-regression", type=float, default=0.0,
              help="How much worse than the baseline a metric may be (absolute; default 0).")
    @line_magic
    def validate(self, line: str) -> Any:
        """Compute metrics on held-out data, check thresholds and a baseline; the verdict is stored."""
        args = self._args(self.validate, line)
        from mlops_magics import validation

        data = self._eval(args.data, "--data")
        labels = self._eval(args.labels, "--labels")
        builtin = {*validation.HIGHER_IS_BETTER, *validation.LOWER_IS_BETTER}
        functions = {}
        with user_errors():
            for check in args.metric:
                name = validation.parse_check(check)[0]
                found = self._shell.user_ns.get(name)
                if name not in builtin and callable(found):
                    functions[name] = found
            return validation.validate(args.ref, data, labels, metrics=args.metric, functions=functions,
                                       baseline=args.baseline, max_regression=args.max_regression)

    @magic_arguments()
    @argument("ref", help="NAME:VERSION (or NAME@ALIAS) to tag.")
    @argument("tags", nargs="*", metavar="KEY=VALUE", help="Tags to set.")
    @argument("--remove", "-r", action="append", default=[], metavar="KEY", help="Tag key to remove; repeatable.")
    @line_magic
    def tag(self, line: str) -> ModelVersion:
        """Set or remove tags on a version (the artifact itself is immutable)."""
        args = self._args(self.tag, line)
        if not args.tags and not args.remove:
            raise UsageError("Nothing to do: give KEY=VALUE tags to set and/or --remove KEY.")
        with user_errors():
            return api.tag_model(args.ref, args.tags, remove=args.remove)

    @magic_arguments()
    @argument("ref", help="NAME:VERSION to delete (an exact version; aliases are not accepted).")
    @line_magic
    def delete_model(self, line: str) -> None:
        """Delete one model version; refused while a live deployment uses it."""
        args = self._args(self.delete_model, line)
        with user_errors():
            gone = api.delete_model(args.ref)
        print(f"Deleted {gone.ref}.")

    @magic_arguments()
    @argument("ref", help="NAME (every version), NAME:VERSION or NAME@ALIAS (one version).")
    @argument("--asset", action="append", default=[], metavar="PATH",
              help="A file or folder the script needs, copied beside it in deployments; repeatable.")
    @argument("--generate", action="store_true",
              help="Write a default entry script for the model into the next cell, ready to edit.")
    @argument("--test", action="store_true",
              help="Also run init() and run(sample) in a clean process, the model laid out as deployed, "
                   "with the registered input example.")
    @line_cell_magic
    def score_script(self, line: str, cell: str | None = None) -> Any:
        """Save the cell as the model's entry script (checked, not run here), test, show or generate one."""
        args = self._args(self.score_script, line)
        with user_errors():
            if cell is not None:
                saved = api.set_score_script(args.ref, cell, assets=args.asset, line_offset=1)
                return services.try_score_script(args.ref) if args.test else saved
            if args.test:
                return services.try_score_script(args.ref)
            if args.generate:
                source = api.generate_score_script(args.ref)
                self._shell.set_next_input(f"%%score_script {args.ref}\n{source}", replace=False)
                return None
            source, generated = api.entry_script(args.ref)
        print(f"# {'generated default (no script saved yet)' if generated else 'saved'} entry script for {args.ref}")
        print(source)
        return None

    @magic_arguments()
    @argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS.")
    @argument("--target", default="local", help="Where to deploy (default: local).")
    @argument("--name", "-n", help="Service name (default: the model name).")
    @argument("--port", "-p", type=int, help="Port (default: a free one).")
    @argument("--workers", "-w", type=int, default=1, help="Worker processes (default 1).")
    @argument("--auth", action="store_true", help="Require a key: 'Authorization: Bearer KEY' (see .auth_key).")
    @argument("--isolated", action="store_true",
              help="Run in a virtual environment built from the model's environment only (cached), to prove "
                   "the environment complete before building an image.")
    @argument("--cpu", type=float, metavar="CORES", help="--target docker: CPU cores the container may use (0.5).")
    @argument("--memory", metavar="SIZE", help="--target docker: memory the container may use (512m, 1g).")
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
    @line_magic
    def deploy(self, line: str) -> Any:
        """Deploy a model version as a web service and wait until it is healthy."""
        args = self._args(self.deploy, line)
        progress = BuildProgress() if args.target == "docker" and not args.no_build else None
        with user_errors():
            deployed = services.deploy(args.ref, target=args.target, name=args.name, port=args.port,
                                       workers=args.workers, auth=args.auth, isolated=args.isolated, cpu=args.cpu,
                                       memory=args.memory, base_image=args.base_image, build=not args.no_build,
                                       require_validation=args.require_validation, collect=args.collect,
                                       sample_rate=args.sample_rate, progress=progress)
        if progress is not None:
            progress.finish()
        return deployed

    @magic_arguments()
    @argument("--widget", action="store_true",
              help="A board instead of a table: live state, details, and logs / reload / undeploy buttons.")
    @argument("--poll", type=float, metavar="SECONDS", help="With --widget: refresh the states every SECONDS.")
    @line_magic
    def deployments(self, line: str) -> Any:
        """List deployments with their live state (checked now), or act on them with --widget."""
        args = self._args(self.deployments, line)
        if args.widget:
            from mlops_magics.widgets import DeploymentBoard

            return DeploymentBoard(poll=args.poll)
        with user_errors():
            return services.deployments()

    @magic_arguments()
    @argument("service", nargs="?", help="The service to stop and remove.")
    @argument("--all", action="store_true", help="Every deployment.")
    @line_magic
    def undeploy(self, line: str) -> None:
        """Stop and remove a deployment (idempotent)."""
        args = self._args(self.undeploy, line)
        with user_errors():
            gone = services.undeploy(args.service, all_services=args.all)
        print(f"Undeployed {', '.join(gone) or 'nothing'}.")

    @magic_arguments()
    @argument("service", help="The service (deployed with --auth) whose keys to show.")
    @argument("--regenerate", choices=["primary", "secondary"],
              help="Replace this key with a new one; the other stays valid (rotation without downtime).")
    @line_magic
    def keys(self, line: str) -> Any:
        """The service's primary and secondary keys, shown masked (``.primary`` / ``.secondary`` for the values)."""
        args = self._args(self.keys, line)
        with user_errors():
            return services.keys(args.service, regenerate=args.regenerate)

    @magic_arguments()
    @argument("service", help="The service whose log to show.")
    @argument("--tail", "-t", type=int, default=50, help="How many lines (default 50).")
    @argument("--follow", "-f", action="store_true",
              help="Then keep printing new lines until the service stops or the kernel is interrupted.")
    @argument("--timeout", type=float, help="With --follow: stop after this many seconds.")
    @line_magic
    def logs(self, line: str) -> None:
        """Show the end of a deployment's server log (script lines mapped to the cell's); --follow for more."""
        args = self._args(self.logs, line)
        with user_errors():
            print(services.logs(args.service, tail=args.tail))
            if args.follow:
                try:
                    for text in services.follow(args.service, timeout=args.timeout):
                        print(text, flush=True)
                except KeyboardInterrupt:
                    print("(stopped following)")

    @magic_arguments()
    @argument("service", help="The service to reload with the current entry script and assets.")
    @line_magic
    def reload(self, line: str) -> Any:
        """Serve the edited entry script without re-registering; the old one serves until then."""
        args = self._args(self.reload, line)
        with user_errors():
            return services.reload(args.service, progress=self._progress_for(args.service))

    @magic_arguments()
    @argument("service", help="The service to update.")
    @argument("--model", "-m", required=True, metavar="NAME:VERSION", help="The model version to serve instead.")
    @line_magic
    def update(self, line: str) -> Any:
        """Switch a service to another model version; the old one serves until the new one is ready."""
        args = self._args(self.update, line)
        with user_errors():
            return services.update(args.service, args.model, progress=self._progress_for(args.service))

    @magic_arguments()
    @argument("service", help="The service whose records to show (deployed with --collect).")
    @argument("--since", help="Only records from this long ago on: 90s, 30m, 1h, 2d.")
    @argument("--limit", type=int, help="Only the newest N requests.")
    @argument("--designation", help="Show what the entry script's ModelDataCollector(designation=...) collected.")
    @line_magic
    def collected(self, line: str) -> Any:
        """What a deployment recorded, as a DataFrame: one row per input row, features as columns."""
        args = self._args(self.collected, line)
        from mlops_magics import monitoring

        with user_errors():
            frame = monitoring.collected(args.service, since=args.since, limit=args.limit,
                                         designation=args.designation)
        print(frame.attrs["stats"])
        return frame

    @magic_arguments()
    @argument("service", help="The service to watch (deployed with --collect).")
    @argument("--baseline", metavar="NAME:VERSION",
              help="Compare inputs with this version's input example (default: the deployed version's).")
    @argument("--data", metavar="EXPR", help="Compare inputs with this dataset instead (e.g. X_train).")
    @argument("--since", help="Only what was collected from this long ago on: 30m, 1h, 2d.")
    @argument("--refresh", type=float, metavar="SECONDS",
              help="Redraw every SECONDS seconds until interrupted (or --duration passes).")
    @argument("--duration", type=float, metavar="SECONDS", help="With --refresh: stop after this long.")
    @line_magic
    def monitor(self, line: str) -> Any:
        """Dashboard of a deployment: volume, latency, errors, predictions, accuracy, drift (PSI, KS)."""
        args = self._args(self.monitor, line)
        from mlops_magics import monitoring

        data = self._eval(args.data, "--data") if args.data else None
        with user_errors():
            report = monitoring.monitor(args.service, baseline=args.baseline, data=data, since=args.since)
            if args.refresh is None:
                return report
            refresh_display(report, args.refresh, args.duration)
        return None

    @magic_arguments()
    @argument("service", help="The service whose requests the labels belong to.")
    @argument("--data", required=True, metavar="EXPR",
              help="The labels: a DataFrame with request_id and label columns, a Series or dict by request id.")
    @line_magic
    def label(self, line: str) -> Any:
        """Attach ground-truth labels to collected requests by request id; %monitor then shows accuracy."""
        args = self._args(self.label, line)
        from mlops_magics import monitoring

        data = self._eval(args.data, "--data")
        with user_errors():
            return monitoring.label(args.service, data)

    @magic_arguments()
    @argument("service", help="The service to call.")
    @argument("expr", nargs="*", help="Expression giving the data (line form); a cell body is sent as JSON.")
    @argument("--request-id", help="Send this x-request-id (collected records carry it; %%label attaches to it).")
    @line_cell_magic
    def call(self, line: str, cell: str | None = None) -> Any:
        """Send data to a service (an expression, or the cell as a JSON body) and return its answer."""
        args = self._args(self.call, line)
        if cell is not None:
            data: Any = cell.strip()
        elif args.expr:
            data = self._eval(" ".join(args.expr), "the data expression")
        else:
            raise UsageError("Give the data: %call SERVICE EXPR, or %%call SERVICE with a JSON body in the cell.")
        with user_errors():
            return services.call(args.service, data, request_id=args.request_id)

    @magic_arguments()
    @argument("ref", help="NAME (every version) or NAME:VERSION / NAME@ALIAS (one version).")
    @argument("--from-kernel", action="store_true",
              help="Build it from what the entry script and the flavor import, pinned to this kernel's versions.")
    @argument("--write", metavar="DIR", help="Also write conda.yaml and requirements.txt into DIR.")
    @line_cell_magic
    def environment(self, line: str, cell: str | None = None) -> Any:
        """Set the environment deployments install: the cell (conda YAML or pip lines) or --from-kernel."""
        args = self._args(self.environment, line)
        if cell is None and not args.from_kernel:
            raise UsageError("Put conda YAML or pip lines in the cell (%%environment NAME), or use --from-kernel.")
        with user_errors():
            env = api.set_environment(args.ref, cell, from_kernel=args.from_kernel and cell is None, line_offset=1)
        if args.write:
            folder = Path(args.write)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "requirements.txt").write_text(env.requirements_txt())
            (folder / "conda.yaml").write_text(env.conda_yaml(args.ref.split(":")[0].split("@")[0]))
        return env

    @magic_arguments()
    @argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS.")
    @argument("--output", "-o", metavar="DIR", help="Where to write the build context (default: under MLOPS_HOME).")
    @argument("--base-image", metavar="IMAGE", help="Base image (default: $MLOPS_BASE_IMAGE or python:3.11-slim).")
    @argument("--gpu", action="store_true", help="Use a CUDA-capable base image.")
    @argument("--extra-steps", metavar="FILE", help="A file of Dockerfile instructions to run after the base.")
    @argument("--no-wheels", action="store_true",
              help="Do not download dependencies as wheels (the build then needs network access to PyPI).")
    @argument("--build", action="store_true", help="Then build the image (as %%build does).")
    @line_magic
    def package(self, line: str) -> Any:
        """Write a deterministic Docker build context for a model version (Dockerfile, model, script, deps)."""
        args = self._args(self.package, line)
        extra = self._read(args.extra_steps, "--extra-steps") if args.extra_steps else None
        if args.build:
            if args.output or args.no_wheels:
                raise UsageError("--build writes its context under MLOPS_HOME with wheels: drop --output/--no-wheels.")
            return self._build(args.ref, base=args.base_image, gpu=args.gpu, extra_steps=extra)
        with user_errors():
            return images.package(args.ref, args.output, base=args.base_image, gpu=args.gpu, extra_steps=extra,
                                  wheels=not args.no_wheels)

    def _build(self, ref: str, *, full_log: bool = False, **options: Any) -> Any:
        progress = BuildProgress(full_log)
        with user_errors():
            image = images.build(ref, progress=progress, **options)
        progress.finish()
        return image

    @magic_arguments()
    @argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS of the model to convert.")
    @argument("--opset", type=int, help="ONNX opset (default: the converter's newest).")
    @argument("--quantize", choices=["int8"], help="Dynamic int8 quantization of MatMul/Gemm/Conv weights.")
    @argument("--data", metavar="EXPR", help="Rows to check parity on and to time (default: the registered sample).")
    @argument("--force", action="store_true", help="Register even when parity fails the tolerance.")
    @line_magic
    def onnx(self, line: str) -> Any:
        """Convert a model to ONNX, check it against the original, time both, register it as the next version."""
        args = self._args(self.onnx, line)
        data = self._eval(args.data, "--data") if args.data else None
        from mlops_magics.onnx_convert import convert

        with user_errors():
            return convert(args.ref, opset=args.opset, quantize=args.quantize, data=data, force=args.force)

    @magic_arguments()
    @argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS.")
    @argument("--base-image", metavar="IMAGE", help="Base image (default: $MLOPS_BASE_IMAGE or python:3.11-slim).")
    @argument("--gpu", action="store_true", help="Use a CUDA-capable base image.")
    @argument("--extra-steps", metavar="FILE",
              help="A file of Dockerfile instructions to run after the base (default: those of %%%%dockerfile_steps).")
    @argument("--no-cache", action="store_true", help="Rebuild every layer.")
    @argument("--log", action="store_true", help="Print the whole build output as it comes, not only the progress.")
    @line_magic
    def build(self, line: str) -> Any:
        """Build a model version's Docker image with progress, tag it mlops/NAME:VERSION-DIGEST, record it."""
        args = self._args(self.build, line)
        extra = self._read(args.extra_steps, "--extra-steps") if args.extra_steps else None
        return self._build(args.ref, full_log=args.log, base=args.base_image, gpu=args.gpu, extra_steps=extra,
                           no_cache=args.no_cache)

    @magic_arguments()
    @argument("ref", nargs="?", help="NAME (every version), NAME:VERSION or NAME@ALIAS (default: every model).")
    @argument("--remove", action="store_true", help="Remove those images from the engine (not used by a live "
                                                     "deployment) and forget them.")
    @line_magic
    def images(self, line: str) -> Any:
        """List the Docker images built for model versions (tag, id, size, base), or remove them."""
        args = self._args(self.images, line)
        with user_errors():
            if args.remove:
                gone = images.remove_images(args.ref)
                print(f"Removed {len(gone)} image(s){': ' if gone else '.'}{', '.join(i.tag for i in gone)}")
                return None
            return images.images(args.ref)

    @magic_arguments()
    @argument("name", help="The model (every version) or NAME:VERSION (one version) whose images get the steps.")
    @cell_magic
    def dockerfile_steps(self, line: str, cell: str) -> None:
        """Dockerfile instructions (RUN apt-get ..., ENV ...) for the model's images, right after FROM."""
        args = self._args(self.dockerfile_steps, line)
        name, _, version = args.name.partition(":")
        if version and not version.isdigit():
            raise UsageError(f"{args.name!r}: give NAME or NAME:VERSION (a number).")
        with user_errors():
            images.set_dockerfile_steps(name, cell, version=int(version or 0))
        count = sum(1 for x in cell.splitlines() if x.strip() and not x.strip().startswith("#"))
        print(f"Stored {count} Dockerfile line(s) for {args.name}; %build or %deploy --target docker uses them.")
