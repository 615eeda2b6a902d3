"""Flavors: how a kind of model is saved into an artifact folder and loaded back.

Detection order: ONNX ``ModelProto``, PyTorch ``nn.Module`` (when torch is imported),
scikit-learn and anything sklearn-like with ``predict``, then any picklable object (cloudpickle),
labelled as the fallback. Files and folders trained elsewhere register with :func:`save_file`.

Loading a pickle runs code: the pickled flavors load only with ``trusted=True`` (see :mod:`mlops_magics.trust`).
A scikit-learn model saved with ``format="skops"`` loads without pickle, with an explicit list of trusted types.
"""

from __future__ import annotations

import importlib.metadata
import io
import pickle
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from mlops_magics.errors import (
    InvalidInputError,
    MlopsError,
    NotFoundError,
    SerializationError,
    UntrustedModelError,
)
from mlops_magics.registry import trust

PICKLE_FILE = "model.pkl"
SKOPS_FILE = "model.skops"
ONNX_FILE = "model.onnx"
TORCH_FILE = "model.pt"

#: How an in-memory model can be written: ``pickle`` (joblib, or cloudpickle for notebook classes; the default)
#: or ``skops`` (scikit-learn models, loaded without pickle).
FORMATS = ("pickle", "skops")

_DISTRIBUTIONS = {"sklearn": "scikit-learn", "skl2onnx": "skl2onnx", "torch": "torch", "onnx": "onnx"}


@dataclass(frozen=True)
class SavedModel:
    """What a flavor wrote: its name, the framework it belongs to, and options to load it."""

    flavor: str
    framework: str | None = None
    framework_version: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


class Flavor(Protocol):
    """A kind of model the registry knows how to save and load."""

    name: str
    description: str

    def accepts(self, obj: Any) -> bool:
        """True if ``obj`` is of this flavor."""

    def save(self, obj: Any, folder: Path) -> SavedModel:
        """Write ``obj`` into the empty ``folder``.

        Raises:
            SerializationError: it cannot be saved; the message names the part that failed.
        """

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool = False) -> Any:
        """Read the model back from a verified artifact folder.

        Args:
            trusted: the version is trusted (:mod:`mlops_magics.trust`); without it nothing that can run code
                from the artifact is read.

        Raises:
            UntrustedModelError: loading it would run code from the artifact and it is not trusted.
        """


@lru_cache(maxsize=1)
def _package_map() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def framework_of(obj: Any) -> tuple[str | None, str | None]:
    """Return (distribution name, version) of the package that defines ``type(obj)``."""
    top = type(obj).__module__.split(".")[0]
    if top in ("__main__", "builtins"):
        return None, None
    dist = _DISTRIBUTIONS.get(top) or next(iter(_package_map().get(top, [])), top)
    try:
        return dist, importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return top, getattr(sys.modules.get(top), "__version__", None)


def _qualified(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def explain_unpicklable(obj: Any, label: str, dumps: Callable[[Any], Any]) -> str:
    """Find the deepest attribute or item of ``obj`` that ``dumps`` fails on, and say why."""
    path, culprit, error = _find_unpicklable(obj, label, dumps, depth=0)
    where = f"{path}, a {_qualified(culprit)}," if path != label else f"it (a {_qualified(culprit)})"
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


def _cloudpickle_dumps(obj: Any) -> bytes:
    import cloudpickle

    data: bytes = cloudpickle.dumps(obj)
    return data


def _save_pickle(obj: Any, target: Path, *, prefer_joblib: bool) -> str:
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
        raise SerializationError(_unpicklable_message(obj)) from exc


def _unpicklable_message(obj: Any) -> str:
    return (
        f"Cannot save the model: {explain_unpicklable(obj, 'the model', _cloudpickle_dumps)}. "
        "Set that attribute to None (or something picklable) before registering, "
        "or save the model yourself and register the files with --path."
    )


def _load_pickle(path: Path, serializer: str, trusted: bool) -> Any:
    if not trusted:  # the last guard: whatever the caller checked, an untrusted pickle is never opened
        raise UntrustedModelError(f"Refusing to unpickle {path.name} ({serializer}): unpickling an untrusted file runs "
                                  "whatever code its author put in it.")
    if serializer == "joblib":
        import joblib

        return joblib.load(path)
    with open(path, "rb") as fh:
        return pickle.load(fh)


class SklearnFlavor:
    """scikit-learn estimators and pipelines, and any sklearn-like object with ``predict``."""

    name = "sklearn"
    description = "scikit-learn estimator or pipeline (or sklearn-like, with predict), saved with joblib"

    def accepts(self, obj: Any) -> bool:
        if isinstance(obj, type):
            return False
        return type(obj).__module__.startswith("sklearn.") or (
            callable(getattr(obj, "predict", None)) and callable(getattr(obj, "fit", None))
        )

    def save(self, obj: Any, folder: Path) -> SavedModel:
        serializer = _save_pickle(obj, folder / PICKLE_FILE, prefer_joblib=True)
        framework, version = framework_of(obj)
        return SavedModel(self.name, framework, version, {"file": PICKLE_FILE, "serializer": serializer,
                                                          "class": _qualified(obj)})

    def save_skops(self, obj: Any, folder: Path) -> SavedModel:
        """Write ``obj`` with skops: loading it back runs no pickle, and only the types it is told to trust.

        Raises:
            MlopsError: skops is not installed.
            SerializationError: skops cannot save it, or it uses a class defined in the notebook (``__main__``),
                which skops stores by name and a deployment could not import.
        """
        sio = _skops()
        target = folder / SKOPS_FILE
        try:
            sio.dump(obj, target)
        except Exception as exc:
            target.unlink(missing_ok=True)
            raise SerializationError(f"skops cannot save a {_qualified(obj)}: {type(exc).__name__}: {exc}. Register it "
                                     "without --format skops (it is then pickled).") from exc
        types = skops_types(target)
        local = [t for t in types if t.startswith("__main__.")]
        if local:
            target.unlink()
            raise SerializationError(
                f"--format skops stores classes by name, and {', '.join(local)} is defined in the notebook "
                "(__main__), where a deployment cannot import it from. Move it into a module, or register without "
                "--format skops (cloudpickle then saves it by value)."
            )
        framework, version = framework_of(obj)
        return SavedModel(self.name, framework, version, {"file": SKOPS_FILE, "serializer": "skops",
                                                          "class": _qualified(obj), "untrusted_types": types})

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool = False) -> Any:
        path = folder / options.get("file", PICKLE_FILE)
        if options.get("serializer") == "skops":
            return load_skops(path, trusted=trusted)
        return _load_pickle(path, options.get("serializer", "joblib"), trusted)


class OnnxFlavor:
    """ONNX models (an ``onnx.ModelProto``; a ``.onnx`` file registers with ``--path``)."""

    name = "onnx"
    description = "ONNX model (onnx.ModelProto or a .onnx file)"

    def accepts(self, obj: Any) -> bool:
        cls = type(obj)
        return cls.__name__ == "ModelProto" and cls.__module__.split(".")[0] == "onnx"

    def save(self, obj: Any, folder: Path) -> SavedModel:
        (folder / ONNX_FILE).write_bytes(obj.SerializeToString())
        return self._describe(obj, ONNX_FILE)

    def _describe(self, proto: Any, file: str) -> SavedModel:
        options: dict[str, Any] = {"file": file}
        if proto is not None:
            options["ir_version"] = int(proto.ir_version)
            options["opsets"] = {op.domain or "ai.onnx": int(op.version) for op in proto.opset_import}
        try:
            version: str | None = importlib.metadata.version("onnx")
        except importlib.metadata.PackageNotFoundError:
            version = None
        return SavedModel(self.name, "onnx", version, options)

    def describe_file(self, path: Path, file: str) -> SavedModel:
        """Read opsets from a ``.onnx`` file when the onnx package is installed."""
        try:
            import onnx
        except ImportError:
            return self._describe(None, file)
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise InvalidInputError(f"{path} is not a valid ONNX model: {exc}") from exc
        return self._describe(proto, file)

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool = False) -> Any:
        try:
            import onnx
        except ImportError as exc:
            raise MlopsError("Loading an ONNX model needs the onnx package: pip install onnx.") from exc
        return onnx.load(str(folder / options.get("file", ONNX_FILE)))


class TorchFlavor:
    """PyTorch modules (``torch.nn.Module``), saved whole with ``torch.save``."""

    name = "pytorch"
    description = "PyTorch nn.Module, saved whole with torch.save"

    def accepts(self, obj: Any) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(obj, torch.nn.Module)

    def save(self, obj: Any, folder: Path) -> SavedModel:
        import torch

        by_value = type(obj).__module__ == "__main__"
        buffer = io.BytesIO()
        try:
            if by_value:
                import cloudpickle

                torch.save(obj, buffer, pickle_module=cloudpickle)
            else:
                torch.save(obj, buffer)
        except Exception as exc:
            raise SerializationError(_unpicklable_message(obj)) from exc
        (folder / TORCH_FILE).write_bytes(buffer.getvalue())
        return SavedModel(self.name, "torch", torch.__version__, {"file": TORCH_FILE, "class": _qualified(obj)})

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool = False) -> Any:
        path = folder / options.get("file", TORCH_FILE)
        if not trusted:
            raise UntrustedModelError(f"Refusing to load {path.name} with torch.load: a module saved whole is a "
                                      "pickle, and unpickling an untrusted file runs whatever code its author put "
                                      "in it.")
        try:
            import torch
        except ImportError as exc:
            raise MlopsError("Loading a PyTorch model needs torch: pip install torch.") from exc
        return torch.load(path, weights_only=False)


class PickleFlavor:
    """Any other picklable object, saved with cloudpickle: the fallback flavor."""

    name = "pickle"
    description = "fallback: any picklable Python object, saved with cloudpickle"

    def accepts(self, obj: Any) -> bool:
        return True

    def save(self, obj: Any, folder: Path) -> SavedModel:
        serializer = _save_pickle(obj, folder / PICKLE_FILE, prefer_joblib=False)
        framework, version = framework_of(obj)
        return SavedModel(self.name, framework, version,
                          {"file": PICKLE_FILE, "serializer": serializer, "class": _qualified(obj)})

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool = False) -> Any:
        return _load_pickle(folder / options.get("file", PICKLE_FILE), options.get("serializer", "cloudpickle"),
                            trusted)


class FilesFlavor:
    """Files or a folder of any kind; loading returns the verified artifact folder."""

    name = "files"
    description = "files or a folder trained elsewhere; load returns their path"

    def accepts(self, obj: Any) -> bool:
        return False

    def save(self, obj: Any, folder: Path) -> SavedModel:
        raise InvalidInputError("The 'files' flavor registers a path: use --path PATH.")

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool = False) -> Any:
        return folder / options.get("path", "")


FLAVORS: dict[str, Flavor] = {
    f.name: f for f in (OnnxFlavor(), TorchFlavor(), SklearnFlavor(), PickleFlavor(), FilesFlavor())
}


def get_flavor(name: str) -> Flavor:
    """Return the flavor called ``name``.

    Raises:
        NotFoundError: there is none; the message lists the known flavors.
    """
    try:
        return FLAVORS[name]
    except KeyError:
        raise NotFoundError(f"Unknown flavor {name!r}. Flavors: {', '.join(FLAVORS)}.") from None


def flavor_for(obj: Any) -> Flavor:
    """Return the first flavor that accepts ``obj`` (the pickle fallback accepts anything)."""
    return next(f for f in FLAVORS.values() if f.accepts(obj))


def save_object(obj: Any, folder: Path, flavor: str | None = None, format: str | None = None) -> SavedModel:
    """Save an in-memory model into ``folder`` with its detected (or the given) flavor.

    Args:
        format: ``pickle`` (the default) or ``skops`` (scikit-learn models only; see :data:`FORMATS`).

    Raises:
        InvalidInputError: the flavor does not fit the object, or the format does not fit the flavor.
        SerializationError: it cannot be saved; the message names the part that failed.
    """
    if format is not None and format not in FORMATS:
        raise InvalidInputError(f"Unknown format {format!r}. Formats: {', '.join(FORMATS)}.")
    chosen = get_flavor(flavor) if flavor else flavor_for(obj)
    if flavor and not isinstance(chosen, PickleFlavor) and not chosen.accepts(obj):
        raise InvalidInputError(
            f"A {_qualified(obj)} is not a {chosen.name!r} model ({chosen.description}). "
            f"Leave --flavor out to detect it (it would be {flavor_for(obj).name!r})."
        )
    if format == "skops":
        if not isinstance(chosen, SklearnFlavor):
            raise InvalidInputError(
                f"--format skops saves scikit-learn models, and a {_qualified(obj)} is a {chosen.name!r} model. "
                "Leave --format out (it is saved as its flavor says), or convert it with %onnx for a format whose "
                "loading runs no code."
            )
        return chosen.save_skops(obj, folder)
    return chosen.save(obj, folder)


def _skops() -> Any:
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
    sio = _skops()
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
    sio = _skops()
    types = skops_types(path)
    if types and not trusted:
        raise UntrustedModelError(f"Refusing to load {path.name}: it holds types outside skops' trusted defaults "
                                  f"({', '.join(types)}), and loading them runs their code.")
    return sio.load(path, trusted=types)


def save_file(source: Path, folder: Path, flavor: str | None = None) -> SavedModel:
    """Register a file or folder as it is (copied by :func:`save_path`), saying what loading it would read.

    A ``.skops`` file is a scikit-learn model in the skops format (its types outside skops' trusted defaults are
    recorded); a folder records which of its files are pickles (:func:`mlops_magics.trust.pickle_files`), so that
    a deployment of it can be refused until it is trusted.

    Raises:
        NotFoundError: ``source`` does not exist.
        InvalidInputError: the flavor cannot register a path; a ``.skops`` file is not valid.
    """
    skops_file = source.suffix.lower() == ".skops" and source.is_file() and flavor in (None, "sklearn")
    saved = save_path(source, folder, "sklearn" if skops_file else flavor)
    if skops_file:
        return SavedModel("sklearn", None, None, {**saved.options, "serializer": "skops",
                                                  "untrusted_types": skops_types(folder / source.name)})
    if saved.flavor == "files":
        return SavedModel(saved.flavor, saved.framework, saved.framework_version,
                          {**saved.options, "pickles": trust.pickle_files(folder)})
    return saved


_SUFFIX_FLAVORS = {".onnx": "onnx", ".pt": "pytorch", ".pth": "pytorch", ".pkl": "pickle",
                   ".pickle": "pickle", ".joblib": "pickle"}


def save_path(source: Path, folder: Path, flavor: str | None = None) -> SavedModel:
    """Copy a file or folder into ``folder``, keeping its name (as Azure ML lays models out).

    The flavor is taken from a single file's suffix (.onnx, .pt/.pth, .pkl/.pickle/.joblib) unless
    given; anything else is 'files'. The copy is made safely (:func:`mlops_magics.artifacts.copy_in`):
    links out of the folder, loops, pipes and devices are refused, sparse files stay sparse.

    Raises:
        NotFoundError: ``source`` does not exist.
        InvalidInputError: the flavor cannot register a path; a link leaves the folder or loops; a special file.
        StorageError: the copy would not fit on the disk.
    """
    from mlops_magics.registry.copying import copy_in

    if not source.exists():
        raise NotFoundError(f"No file or folder at {str(source)!r}. Check the path (relative to {Path.cwd()}).")
    label = source.name or source.resolve().name
    if not label:
        raise InvalidInputError(f"Cannot register {str(source)!r}: it names no file or folder (the root folder).")
    target = folder / label
    copy_in(source, target)
    name = flavor or (_SUFFIX_FLAVORS.get(source.suffix.lower(), "files") if source.is_file() else "files")
    if name == "onnx":
        return OnnxFlavor().describe_file(target, label)
    if name == "pytorch":
        return SavedModel(name, "torch", None, {"file": label})
    if name in ("pickle", "sklearn"):
        return SavedModel(name, None, None, {"file": label, "serializer": "joblib"})
    if name == "files":
        return SavedModel(name, None, None, {"path": label})
    raise InvalidInputError(
        f"Flavor {name!r} cannot register a path. Use one of: onnx, pytorch, pickle, sklearn, files."
    )
