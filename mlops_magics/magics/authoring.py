"""Authoring a deployment from cells: %%score_script and %%environment."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from mlops_magics import api
from mlops_magics.magics.base import MagicsBase, examples, user_errors


@magics_class
class AuthoringMagics(MagicsBase):
    """Authoring a deployment from cells."""

    @examples("%%score_script iris --test --sample X_test[:2]   # save the cell, try it on two rows\n"
              "def init(): ...\ndef run(data): ...",
              "%score_script iris --file score.py --test   # the script a %%writefile cell wrote",
              "%score_script iris --generate           # a default script for iris, in the next cell")
    @magic_arguments()
    @argument("ref", help="NAME (every version), NAME:VERSION or NAME@ALIAS (one version).")
    @argument("--file", "-f", metavar="PATH",
              help="Save this file as the entry script (e.g. what %%%%writefile score.py wrote) instead of the cell; "
                   "its problems and tracebacks name the file's lines.")
    @argument("--asset", action="append", default=[], metavar="PATH",
              help="A file or folder the script needs, copied beside it in deployments; repeatable.")
    @argument("--generate", action="store_true",
              help="Write a default entry script for the model into the next cell, ready to edit.")
    @argument("--test", action="store_true",
              help="Also run init() and run(sample) in a clean process, the model laid out as deployed, "
                   "with the registered input example (or --sample).")
    @argument("--sample", "-s", metavar="EXPR",
              help="With --test: the input to send, an expression evaluated in the notebook (e.g. X_test[:2]), "
                   "instead of the registered input example.")
    @line_cell_magic
    def score_script(self, line: str, cell: str | None = None) -> Any:
        """Save the cell (or --file) as the model's entry script (checked, not run here), test, show or generate one."""
        args = self.parse(self.score_script, line)
        if args.file and (cell is not None or args.generate):
            raise UsageError(f"--file {args.file} is the script to save: leave the cell empty (%score_script, one %) "
                             "and --generate out.")
        if args.sample and not args.test:
            raise UsageError(f"--sample {args.sample} is what --test sends: add --test.")
        sample = self.evaluate(args.sample, "--sample") if args.sample else None
        with user_errors():
            if cell is not None or args.file:
                here = self.provenance()
                api.set_score_script(args.ref, cell, file=args.file, assets=args.asset, line_offset=1,
                                     notebook=here.notebook, cell=here.cell_execution_count)
                if args.test:
                    return api.try_score_script(args.ref, sample=sample)
                print(api.script_info(args.ref).saved_note())
                return None
            if args.test:
                return api.try_score_script(args.ref, sample=sample)
            info = api.script_info(args.ref)
            if args.generate:
                source = api.generate_score_script(args.ref)
                self.ipython.set_next_input(f"%%score_script {args.ref}\n{source}", replace=False)
                print(info.generated_note())
                return None
        print(repr(info))
        return None

    @examples("%environment iris --from-kernel          # the versions of the model's libraries here",
              "%%environment iris\nscikit-learn==1.5.2\npandas")
    @magic_arguments()
    @argument("ref", help="NAME (every version) or NAME:VERSION / NAME@ALIAS (one version).")
    @argument("--from-kernel", action="store_true",
              help="Build it from what the entry script and the flavor import, pinned to this kernel's versions.")
    @argument("--write", metavar="DIR", help="Also write conda.yaml and requirements.txt into DIR.")
    @line_cell_magic
    def environment(self, line: str, cell: str | None = None) -> Any:
        """Set the environment deployments install: the cell (conda YAML or pip lines) or --from-kernel."""
        args = self.parse(self.environment, line)
        if cell is None and not args.from_kernel:
            raise UsageError("Put conda YAML or pip lines in the cell (%%environment NAME), or use --from-kernel.")
        with user_errors():
            return api.set_environment(args.ref, cell, from_kernel=args.from_kernel and cell is None, line_offset=1,
                                       write_to=args.write)
