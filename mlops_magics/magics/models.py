"""The registry's magics: %register, %trust, %models, %model, %compare, %load_model, %alias, %tag, %delete_model."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from mlops_magics import api, flavors
from mlops_magics.magics.base import MagicsBase, examples, user_errors
from mlops_magics.registry import ModelVersion, parse_ref

#: The file names the flavors give an object's file: any other name was kept from the previous version.
_FLAVOR_FILES = (flavors.base.PICKLE_FILE, flavors.base.SKOPS_FILE, flavors.base.ONNX_FILE, flavors.base.TORCH_FILE)


@magics_class
class ModelMagics(MagicsBase):
    """The registry's magics."""

    @examples("%register clf --name iris --sample X_test[:5]   # the variable clf as the next version of iris",
              "%register --path model.onnx --name forest        # a file instead of a variable",
              "%register model2 --name diabetes --file-name sklearn_regression_model.pkl  # the file the script opens")
    @magic_arguments()
    @argument("var", nargs="?", help="Notebook variable holding the model (omit with --path).")
    @argument("--name", "-n", help="Model name (default: the variable's name). Letters, digits, '.', '_', '-'.")
    @argument("--path", "-p", help="Register this file or folder instead of a variable (needs --name).")
    @argument("--tag", "-t", action="append", default=[], metavar="KEY=VALUE", help="Tag the version; repeatable.")
    @argument("--metric", "-m", action="append", default=[], metavar="KEY=NUMBER",
              help="A metric you measured, e.g. accuracy=0.97; repeatable. Part of the version (never changed); "
                   "%%validate adds what it measures beside it.")
    @argument("--description", "-d", default="", help="Free-text description (quote it).")
    @argument("--sample", "-s", metavar="EXPR",
              help="Expression giving model input, e.g. X_test[:5]: records signature and input example.")
    @argument("--alias", "-a", help="Point this alias (e.g. staging) at the new version.")
    @argument("--flavor", choices=sorted(flavors.FLAVORS), help="Force a flavor instead of detecting it.")
    @argument("--derived-from", metavar="NAME:VERSION", help="Record that this version was made from another.")
    @argument("--format", choices=flavors.FORMATS,
              help="How to save the variable: pickle (default) or skops (scikit-learn, loaded without pickle).")
    @argument("--file-name", metavar="FILE",
              help="The variable's file name in the model folder ($AZUREML_MODEL_DIR/FILE, what the entry script "
                   "opens). Default: the previous version's, when it holds the same kind of file (as --path keeps "
                   "a file's name); else model.pkl.")
    @argument("--trust", action="store_true",
              help="With --path: you know where the file comes from; record that you trust it to be loaded (a pickle "
                   "from a path is refused at load and deploy until trusted).")
    @line_magic
    def register(self, line: str) -> ModelVersion:
        """Register a model from the notebook (or a file/folder) as the next version of its name."""
        args = self.parse(self.register, line)
        with user_errors():
            model = api.resolve_variable(self.ipython.user_ns, args.var) if args.var else None
            sample = self.evaluate(args.sample, "--sample") if args.sample else None
            version = api.register(
                model, args.name or args.var, path=args.path, tags=args.tag, description=args.description,
                sample=sample, alias=args.alias, flavor=args.flavor, derived_from=args.derived_from,
                provenance=self.provenance(), trust=args.trust, format=args.format, metrics=args.metric,
                file_name=args.file_name,
            )
        if not args.name and args.var:
            print(f"Registered {version.ref}: the model is named after the variable {args.var!r} (--name NAME "
                  "names it otherwise).")
        kept = version.flavor_options.get("file")
        if args.var and not args.file_name and kept and kept not in _FLAVOR_FILES:
            print(f"Saved as {kept!r}, the file name of the previous version of {version.name} (the name its "
                  "entry script opens); --file-name FILE names it otherwise.")
        return version

    @examples("%trust evil:1            # you checked where this pickle comes from: allow loading it",
              "%trust evil:1 --revoke   # refuse it again")
    @magic_arguments()
    @argument("ref", help="NAME:VERSION, the exact version whose source you know (an alias could move).")
    @argument("--revoke", action="store_true", help="Withdraw the trust: loading and deploying it are refused again.")
    @line_magic
    def trust(self, line: str) -> ModelVersion:
        """Trust a version to be loaded and deployed (recorded, with who and when); its files are not changed."""
        args = self.parse(self.trust, line)
        with user_errors():
            return api.trust_model(args.ref, revoke=args.revoke)

    @examples("%models                      # every version, as a table",
              "%models --name 'iris*' --latest --tag team=cv",
              "%models --widget             # browse: details, load, move alias, delete")
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
        args = self.parse(self.models, line)
        if args.widget:
            from mlops_magics.widgets import ModelBrowser

            return ModelBrowser(namespace=self.ipython.user_ns, name=args.name or "", tags=", ".join(args.tag))
        with user_errors():
            return api.list_models(args.name, args.tag, latest=args.latest)

    @examples("%model iris                  # the newest version",
              "%model iris@production",
              "%model iris@production --as-of 2026-01-31")
    @magic_arguments()
    @argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS.")
    @argument("--as-of", metavar="DATE", help="Resolve aliases/latest as on this date (YYYY-MM-DD or ISO time).")
    @line_magic
    def model(self, line: str) -> ModelVersion:
        """Show one model version: artifact, signature, tags, aliases, lineage."""
        args = self.parse(self.model, line)
        with user_errors():
            return api.get_model(args.ref, as_of=args.as_of)

    @examples("%compare iris:1 iris:2                # side by side, iris:2 against iris:1",
              "%compare iris@production iris:3 iris:4   # each against the production version")
    @magic_arguments()
    @argument("refs", nargs="+", metavar="REF",
              help="Two or more versions: NAME (latest), NAME:VERSION or NAME@ALIAS; the others are compared with the "
                   "first.")
    @line_magic
    def compare(self, line: str) -> Any:
        """Compare versions side by side: metrics, signature diff, validation and profile results, size, latency."""
        args = self.parse(self.compare, line)
        with user_errors():
            return api.compare_models(args.refs)

    @examples("%load_model iris:2                   # into the variable iris",
              "%load_model iris@production --as clf")
    @magic_arguments()
    @argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS.")
    @argument("--as", dest="var", metavar="VAR", help="Variable to bind (default: the model name as an identifier).")
    @argument("--as-of", metavar="DATE", help="Resolve aliases/latest as on this date.")
    @line_magic
    def load_model(self, line: str) -> Any:
        """Load a registered model (sha256-verified) into the notebook namespace."""
        args = self.parse(self.load_model, line)
        with user_errors():
            model = api.load_model(args.ref, as_of=args.as_of)
            var = args.var or api.variable_name_for(parse_ref(args.ref).name)
        if not var.isidentifier():
            raise UsageError(f"--as {var!r} is not a valid Python variable name.")
        self.ipython.user_ns[var] = model
        print(f"Loaded {args.ref} into '{var}' (sha256 verified).")
        return model

    @examples("%alias iris:2 production                          # prints: iris@production -> iris:2 (was iris:1)",
              "%alias iris:2 production --require-validation     # gated: only versions whose %validate passed",
              "%alias iris --history")
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
        args = self.parse(self.alias, line)
        with user_errors():
            if args.history:
                return api.alias_history(args.ref, args.alias)
            if not args.alias:
                raise UsageError("Name the alias: %alias NAME:VERSION ALIAS (or --history to list moves).")
            if args.remove:
                print(f"Removed alias {args.alias!r} from {api.remove_alias(args.ref, args.alias)}.")
                return None
            return api.set_alias(args.ref, args.alias, require_validation=args.require_validation)

    @examples("%tag iris:2 reviewed=yes data=v2",
              "%tag iris:2 --remove data")
    @magic_arguments()
    @argument("ref", help="NAME:VERSION (or NAME@ALIAS) to tag.")
    @argument("tags", nargs="*", metavar="KEY=VALUE", help="Tags to set.")
    @argument("--remove", "-r", action="append", default=[], metavar="KEY", help="Tag key to remove; repeatable.")
    @line_magic
    def tag(self, line: str) -> ModelVersion:
        """Set or remove tags on a version (the artifact itself is immutable)."""
        args = self.parse(self.tag, line)
        if not args.tags and not args.remove:
            raise UsageError("Nothing to do: give KEY=VALUE tags to set and/or --remove KEY.")
        with user_errors():
            return api.tag_model(args.ref, args.tags, remove=args.remove)

    @examples("%delete_model iris:3     # a version registered by mistake",
              "%delete_model iris:1     # refused while a live deployment serves it: %undeploy it first")
    @magic_arguments()
    @argument("ref", help="NAME:VERSION to delete (an exact version; aliases are not accepted).")
    @line_magic
    def delete_model(self, line: str) -> None:
        """Delete one model version and the aliases pointing at it; refused while a live deployment uses it."""
        args = self.parse(self.delete_model, line)
        with user_errors():
            print(api.delete_model(args.ref))
