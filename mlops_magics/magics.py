"""IPython magics: thin adapters over :mod:`mlops_magics.api`.

Each magic parses its arguments, calls one API function and returns its result. Every
:class:`~mlops_magics.errors.MlopsError` becomes a plain ``UsageError``: a message, no traceback.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from mlops_magics import api, flavors, images, lineage, services
from mlops_magics.errors import MlopsError
from mlops_magics.registry import Lineage, ModelVersion, ModelVersionList


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn our errors into a ``UsageError``: the user sees the message, not a traceback."""
    try:
        yield
    except MlopsError as exc:
        raise UsageError(str(exc)) from exc


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
                provenance=self._provenance(),
            )

    @magic_arguments()
    @argument("--name", "-n", metavar="GLOB", help="Only models whose name matches this glob, e.g. 'iris*'.")
    @argument("--tag", "-t", action="append", default=[], metavar="KEY[=VALUE]",
              help="Only versions with this tag (KEY alone: any value); repeatable, all must match.")
    @argument("--latest", "-l", action="store_true", help="Only the newest version of each model.")
    @line_magic
    def models(self, line: str) -> ModelVersionList:
        """List registered model versions as a table."""
        args = self._args(self.models, line)
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
            return api.set_alias(args.ref, args.alias)

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
    @line_magic
    def deploy(self, line: str) -> Any:
        """Deploy a model version as a web service and wait until it is healthy."""
        args = self._args(self.deploy, line)
        with user_errors():
            return services.deploy(args.ref, target=args.target, name=args.name, port=args.port,
                                   workers=args.workers, auth=args.auth, isolated=args.isolated)

    @magic_arguments()
    @line_magic
    def deployments(self, line: str) -> Any:
        """List deployments with their live state (checked now)."""
        self._args(self.deployments, line)
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
            return services.reload(args.service)

    @magic_arguments()
    @argument("service", help="The service to update.")
    @argument("--model", "-m", required=True, metavar="NAME:VERSION", help="The model version to serve instead.")
    @line_magic
    def update(self, line: str) -> Any:
        """Switch a service to another model version; the old one serves until the new one is ready."""
        args = self._args(self.update, line)
        with user_errors():
            return services.update(args.service, args.model)

    @magic_arguments()
    @argument("service", help="The service to call.")
    @argument("expr", nargs="*", help="Expression giving the data (line form); a cell body is sent as JSON.")
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
            return services.call(args.service, data)

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
    @line_magic
    def package(self, line: str) -> Any:
        """Write a deterministic Docker build context for a model version (Dockerfile, model, script, deps)."""
        args = self._args(self.package, line)
        extra = Path(args.extra_steps).read_text() if args.extra_steps else ""
        with user_errors():
            return images.package(args.ref, args.output, base=args.base_image, gpu=args.gpu, extra_steps=extra,
                                  wheels=not args.no_wheels)
