"""Saving a model with its flavor: detected for an in-memory object, from the suffix for a file or folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlops_magics.errors import (
    InvalidInputError,
    NotFoundError,
)
from mlops_magics.flavors.base import FORMATS, Flavor, SavedModel, qualified
from mlops_magics.flavors.kinds import FLAVORS, OnnxFlavor, PickleFlavor, SklearnFlavor
from mlops_magics.flavors.serializers import skops_types
from mlops_magics.registry import trust


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
            f"A {qualified(obj)} is not a {chosen.name!r} model ({chosen.description}). "
            f"Leave --flavor out to detect it (it would be {flavor_for(obj).name!r})."
        )
    if format == "skops":
        if not isinstance(chosen, SklearnFlavor):
            raise InvalidInputError(
                f"--format skops saves scikit-learn models, and a {qualified(obj)} is a {chosen.name!r} model. "
                "Leave --format out (it is saved as its flavor says), or convert it with %onnx for a format whose "
                "loading runs no code."
            )
        return chosen.save_skops(obj, folder)
    return chosen.save(obj, folder)


#: The longest file name a version's file may be given (most file systems allow 255 bytes).
MAX_FILE_NAME = 255

#: Suffixes that hold the same kind of file: a new version inherits a name only within its kind.
_FILE_KINDS = {".pkl": "pickle", ".pickle": "pickle", ".joblib": "pickle", ".sav": "pickle", ".skops": "skops",
               ".onnx": "onnx", ".pt": "torch", ".pth": "torch"}


def check_file_name(name: str) -> str:
    """Return ``name`` if it can name a model's file inside its folder: one plain name, no folder.

    Raises:
        InvalidInputError: it is empty, too long, names a folder or leaves the model folder.
    """
    if (not name or name in (".", "..") or any(c in name for c in "/\\\0")
            or len(name.encode()) > MAX_FILE_NAME):
        shown = name if len(name) <= 60 else f"{name[:60]}..."
        raise InvalidInputError(f"Invalid file name {shown!r}: give one plain file name of at most {MAX_FILE_NAME} "
                                "bytes, without a folder, e.g. sklearn_regression_model.pkl.")
    return name


def same_kind_of_file(name: str, other: str) -> bool:
    """Whether two file names hold the same kind of model file, by suffix (``.pkl`` and ``.joblib`` do)."""
    kind = _FILE_KINDS.get(Path(name).suffix.lower())
    return kind is not None and kind == _FILE_KINDS.get(Path(other).suffix.lower())


def name_file(saved: SavedModel, folder: Path, file_name: str) -> SavedModel:
    """Give the single file a flavor saved into ``folder`` another name (the one the entry script opens).

    Raises:
        InvalidInputError: the name is not a plain file name (:func:`check_file_name`).
    """
    current = saved.options.get("file")
    if current is None or current == check_file_name(file_name):
        return saved
    (folder / current).rename(folder / file_name)
    return SavedModel(saved.flavor, saved.framework, saved.framework_version, {**saved.options, "file": file_name})


def save_file(source: Path, folder: Path, flavor: str | None = None) -> SavedModel:
    """Register a file or folder as it is (copied by :func:`save_path`), saying what loading it would read.

    A ``.skops`` file is a scikit-learn model in the skops format (its types outside skops' trusted defaults are
    recorded); a folder records which of its files are pickles (:func:`mlops_magics.registry.trust.pickle_files`),
    so that a deployment of it can be refused until it is trusted.

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
    given; anything else is 'files'. The copy is made safely (:func:`mlops_magics.registry.copying.copy_in`):
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

