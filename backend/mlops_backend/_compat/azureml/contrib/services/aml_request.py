"""``AMLRequest`` and ``@rawhttp``, as Azure ML entry scripts import them.

``@rawhttp`` on ``run`` makes the server pass the whole request: an ``AMLRequest``, which is a
werkzeug ``Request`` exactly like the Flask request Azure ML passes (``get_data()``, ``form``,
``files``, ``args``, ``headers``, ``method``, ``get_json()``...).
"""

from __future__ import annotations

import contextlib
from typing import Any, TypeVar

from werkzeug.wrappers import Request

F = TypeVar("F")

#: Set once any function is decorated with @rawhttp, as in Azure ML's module.
_rawHttpRequested = False


def rawhttp(func: F) -> F:
    """Ask the server to call ``run`` with the raw request instead of its decoded body."""
    global _rawHttpRequested
    _rawHttpRequested = True
    with contextlib.suppress(AttributeError, TypeError):  # a builtin or a class with __slots__
        func.__aml_rawhttp__ = True  # type: ignore[attr-defined]
    return func


class AMLRequest(Request):
    """The raw HTTP request handed to a ``@rawhttp`` run()."""

    def __init__(self, environ: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(environ, *args, **kwargs)
