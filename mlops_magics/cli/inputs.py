"""What the verbs read: data files (``--data``, ``--labels``, ``call``'s body) and text files (``--file``).

One reader for every data-taking verb: a ``.json`` file (any JSON value: rows, records or an object), a ``.csv``
file (pandas, a header row), a ``.npy`` file (no pickles), or ``-`` for JSON on standard input. A missing file, an
unknown suffix or malformed content is an :class:`~mlops_magics.errors.InvalidInputError` quoting the path.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlops_magics.errors import InvalidInputError

#: What a data option accepts, as the help and the errors say it.
ACCEPTED = "a .json file (rows, records or an object), a .csv file with a header row, a .npy file, or - for JSON " \
           "on standard input"


def _json_file(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _csv_file(path: Path) -> Any:
    import pandas as pd

    return pd.read_csv(path)


def _npy_file(path: Path) -> Any:
    import numpy as np

    return np.load(path, allow_pickle=False)


#: The reader of each suffix, and what it reads (for the error on malformed content).
READERS: dict[str, tuple[Callable[[Path], Any], str]] = {
    ".json": (_json_file, "JSON"), ".csv": (_csv_file, "CSV"), ".npy": (_npy_file, "a NumPy .npy array")}


def is_data_file(text: str) -> bool:
    """Whether ``text`` names data to read (``-`` or a path with a suffix we read), rather than inline JSON."""
    return text == "-" or Path(text).suffix.lower() in READERS


def read_data(path: str, option: str = "--data") -> Any:
    """The data in a ``.json``, ``.csv`` or ``.npy`` file, or JSON on standard input (``-``).

    Args:
        path: the file, or ``-``.
        option: the option it was given to, for the messages.

    Returns:
        The JSON value, a pandas DataFrame (CSV) or a NumPy array (NPY).

    Raises:
        InvalidInputError: no such file, a suffix we do not read, or content that is not what its suffix says.
    """
    if path == "-":
        return parse_json(sys.stdin.read(), f"{option} - (standard input)")
    file = Path(path).expanduser()
    suffix = file.suffix.lower()
    if suffix not in READERS:
        kind = f"a {suffix} file" if suffix else "a file without a suffix"
        raise InvalidInputError(f"{option} {path!r}: cannot read {kind}. Give {ACCEPTED}.")
    if not file.is_file():
        raise InvalidInputError(f"{option} {path!r}: no such file. Give {ACCEPTED}.")
    reader, kind = READERS[suffix]
    try:
        return reader(file)
    except (ValueError, EOFError, OSError) as exc:  # JSONDecodeError, pandas' ParserError and EmptyDataError too
        raise InvalidInputError(f"{option} {path!r} is not {kind}: {exc}. Give {ACCEPTED}.") from None


def parse_json(text: str, where: str) -> Any:
    """``text`` as JSON.

    Raises:
        InvalidInputError: it is not JSON (``where`` says what it is).
    """
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(f"{where} is not valid JSON: {exc}.") from None


def read_body(text: str) -> Any:
    """``call``'s data: a data file (see :func:`read_data`), ``-``, or an inline JSON value such as ``[[1, 2]]``.

    Raises:
        InvalidInputError: unreadable file, or neither a data file nor JSON.
    """
    if is_data_file(text):
        return read_data(text, "DATA")
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidInputError(f"DATA {text!r} is neither a data file nor inline JSON: give {ACCEPTED}, or a "
                                "JSON value such as '[[5.1, 3.5, 1.4, 0.2]]'.") from None


def read_column(path: str, option: str = "--labels") -> Any:
    """One column of values (labels): a CSV with one column, a JSON list of values, or a 1-D ``.npy`` array.

    Raises:
        InvalidInputError: unreadable, or not a single column (the message says what was found).
    """
    value = read_data(path, option)
    columns = getattr(value, "columns", None)
    if columns is not None:
        if len(columns) != 1:
            raise InvalidInputError(f"{option} {path!r} has {len(columns)} columns ({', '.join(map(str, columns))}): "
                                    "give a file with one column of labels.")
        return value[columns[0]].to_numpy()
    shape = getattr(value, "shape", None)
    if shape is not None:
        if len(shape) == 2 and shape[1] == 1:
            return value.ravel()
        if len(shape) != 1:
            raise InvalidInputError(f"{option} {path!r} holds an array of shape {tuple(shape)}: give one column.")
        return value
    if not isinstance(value, list) or any(isinstance(v, (list, dict)) for v in value):
        raise InvalidInputError(f"{option} {path!r} is not one column: give a JSON list of values, e.g. [0, 1, 2].")
    return value


def read_text(path: str, option: str) -> str:
    """A text file's content (``-``: standard input).

    Raises:
        InvalidInputError: the file cannot be read (why, quoting the path).
    """
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InvalidInputError(f"Cannot read {option} {path!r}: {why}.") from None
