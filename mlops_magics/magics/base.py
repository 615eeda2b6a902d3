"""What our magics share: the errors they show, shell-like parsing, evaluating an option in the notebook."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics

from mlops_magics.errors import MlopsError
from mlops_magics.registry import Lineage, lineage


def examples(*lines: str) -> Callable[[Any], Any]:
    """Decorate a magic (above ``@magic_arguments()``) so that its help (``%magic?``) ends with these examples.

    Args:
        lines: 2-3 example lines, each ``%magic ...  # what it does`` (a cell magic's body after a newline).
    """
    # A first line of its own: IPython's help formatter dedents every line after the first.
    text = "\nExamples::\n\n" + "\n".join("  " + line.replace("\n", "\n  ") for line in lines) + "\n"

    def decorate(magic: Any) -> Any:
        magic.parser.epilog = text
        magic.__doc__ = magic.parser.format_help()
        return magic

    return decorate


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn our errors into a ``UsageError``: the user sees the message, not a traceback."""
    try:
        yield
    except MlopsError as exc:
        raise UsageError(str(exc)) from exc


class MagicsBase(Magics):
    """What every family of our magics shares: the shell, shell-like argument parsing, evaluating options."""

    @property
    def ipython(self) -> InteractiveShell:
        """The shell these magics run in."""
        if self.shell is None:
            raise UsageError("These magics need an IPython shell: %load_ext mlops_magics.")
        return self.shell

    def parse(self, magic: Callable[..., Any], line: str) -> Any:
        """Parse like a shell (quotes group words and are removed), unlike ``parse_argstring``."""
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"Cannot parse {line!r}: {exc}. Check the quotes.") from exc
        return magic.parser.parse_args(argv)  # type: ignore[attr-defined]

    def evaluate(self, expr: str, option: str) -> Any:
        """The value of ``expr`` in the notebook (an option's expression); a UsageError quoting it if it fails."""
        try:
            return self.ipython.ev(expr)
        except Exception as exc:
            raise UsageError(f"Could not evaluate {option} {expr!r}: {type(exc).__name__}: {exc}") from exc

    def read_text(self, path: str, option: str) -> str:
        """The text of the file an option names; a UsageError quoting it if it cannot be read."""
        try:
            return Path(path).read_text()
        except OSError as exc:
            raise UsageError(f"Cannot read {option} {path!r}: {exc.strerror}.") from exc

    def provenance(self) -> Lineage:
        """Where the current cell runs: the notebook, the cell's ``In[n]`` number, id and source (a version's lineage).

        The cell is the one IPython is running, as its ``ExecutionResult`` says: the shell's own
        ``execution_count`` is already the next cell's number while a cell runs (IPython 9 counts the cell up
        front; 8 did at its end). Outside a cell (a magic called from code), no cell is recorded.
        """
        ns = self.ipython.user_ns
        notebook = ns.get("__session__") or os.environ.get("JPY_SESSION_NAME") or ns.get("__vsc_ipynb_file__")
        running = getattr(self.ipython.displayhook, "exec_result", None)  # set while a cell runs
        info = getattr(running, "info", None)
        stored = info is not None and info.store_history and not info.silent
        return lineage.capture(
            notebook=str(notebook) if notebook else None,
            cell_execution_count=running.execution_count if stored and running is not None else None,
            cell_id=getattr(info, "cell_id", None) if info is not None else None,
            cell_source=info.raw_cell if info is not None else None,
        )
