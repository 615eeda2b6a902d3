"""Serializers under the flavors: pickles (joblib or cloudpickle, explaining what cannot be pickled) and skops."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlops_magics.errors import (
    InvalidInputError,
    MlopsError,
    SerializationError,
    UntrustedModelError,
)
from mlops_magics.flavors.base import qualified


def explain_unpicklable(obj: Any, label: str, dumps: Callable[[Any], Any]) -> str:
    """Find the deepest attribute or item of ``obj`` that ``dumps`` fails on, and say why."""
    path, culprit, error = _find_unpicklable(obj, label, dumps, depth=0)
    where = f"{path}, a {qualified(culprit)}," if path != label else f"it (a {qualified(culprit)})"
    return f"{where} cannot be pickled: {error}"


def _children(obj: Any) -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        return [(f"[{k!r}]", v) for k, v in list(obj.items())[:200]]
    if isinstance(obj, (list, tuple)):
        return [(f"[{i}]", v) for i, v in enumerate(obj[:200])]
    state = getattr(obj, "__dict__", None)
    if isinstance(state, dict):
        return [(f".{k}", v) for k, v in list(state.items())[:200]]
    return []


def _find_unpicklable(
    obj: Any, path: str, dumps: Callable[[Any], Any], depth: int
) -> tuple[str, Any, BaseException | str]:
    if depth < 8:
        for label, child in _children(obj):
            try:
                dumps(child)
            except Exception:  # noqa: BLE001 - any pickling failure is what we look for
                return _find_unpicklable(child, path + label, dumps, depth + 1)
    try:
        dumps(obj)
    except Exception as exc:  # noqa: BLE001
        return path, obj, exc
    return path, obj, "its parts pickle on their own, but not together"


def cloudpickle_dumps(obj: Any) -> bytes:
    """``obj`` pickled by cloudpickle (which also pickles classes defined in a notebook)."""
    import cloudpickle

    data: bytes = cloudpickle.dumps(obj)
    return data


def save_pickle(obj: Any, target: Path, *, prefer_joblib: bool) -> str:
    """Pickle ``obj`` to ``target``; return the serializer used ('joblib' or 'cloudpickle').

    joblib is what Azure ML entry scripts load with; it pickles classes by reference, so an object
    that uses a class or function defined in the notebook (``__main__``) is pickled by value with
    cloudpickle instead: a deployment has no notebook to import it from.
    """
    if prefer_joblib:
        try:
            import joblib

            joblib.dump(obj, target)
            if b"__main__" not in target.read_bytes():
                return "joblib"
        except Exception:  # noqa: BLE001 - fall through to cloudpickle, which handles more
            pass
        target.unlink(missing_ok=True)
    try:
        import cloudpickle

        with open(target, "wb") as fh:
            cloudpickle.dump(obj, fh)
        return "cloudpickle"
    except Exception as exc:
        target.unlink(missing_ok=True)
        from mlops_magics.registry.disk import STORAGE_ERRNOS

        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            raise  # the disk refused the write (full, read-only): not the object's fault; the store says so
        raise SerializationError(unpicklable_message(obj)) from exc


def unpicklable_message(obj: Any) -> str:
    """Why ``obj`` cannot be saved (the attribute that cannot be pickled), and what to do."""
    return (
        f"Cannot save the model: {explain_unpicklable(obj, 'the model', cloudpickle_dumps)}. "
        "Set that attribute to None (or something picklable) before registering, "
        "or save the model yourself and register the files with --path."
    )


def load_pickle(path: Path, serializer: str, trusted: bool) -> Any:
    """Unpickle ``path`` with its serializer; refused unless ``trusted`` (loading a pickle runs its code).

    Raises:
        UntrustedModelError: ``trusted`` is false.
    """
    if not trusted:  # the last guard: whatever the caller checked, an untrusted pickle is never opened
        raise UntrustedModelError(f"Refusing to unpickle {path.name} ({serializer}): unpickling an untrusted file runs "
                                  "whatever code its author put in it.")
    if serializer == "joblib":
        import joblib

        return joblib.load(path)
    with open(path, "rb") as fh:
        return pickle.load(fh)



def skops_io() -> Any:
    """The ``skops.io`` module.

    Raises:
        MlopsError: skops is not installed (the message says how to install it).
    """
    try:
        import skops.io
    except ImportError as exc:
        raise MlopsError("The skops format needs skops: pip install 'mlops-magics[skops]' (or pip install skops)."
                         ) from exc
    return skops.io


def skops_types(path: Path) -> list[str]:
    """The types in a skops file that skops does not trust by default, read from its schema (nothing is loaded).

    Raises:
        MlopsError: skops is not installed.
        InvalidInputError: the file is not a skops file.
    """
    sio = skops_io()
    try:
        return sorted(str(t) for t in sio.get_untrusted_types(file=path))
    except Exception as exc:
        raise InvalidInputError(f"{path.name} is not a valid skops file: {type(exc).__name__}: {exc}") from exc


def load_skops(path: Path, *, trusted: bool) -> Any:
    """Load a skops file with an explicit list of trusted types: skops' defaults, plus, for a trusted version,
    the file's other types.

    Raises:
        UntrustedModelError: the file holds types outside skops' defaults and the version is not trusted; the
            message lists them.
    """
    sio = skops_io()
    types = skops_types(path)
    if types and not trusted:
        raise UntrustedModelError(f"Refusing to load {path.name}: it holds types outside skops' trusted defaults "
                                  f"({', '.join(types)}), and loading them runs their code.")
    return sio.load(path, trusted=types)


