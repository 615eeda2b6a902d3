"""The plain-Python API: one function per magic, usable from scripts, tests and CI."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import Any

from mlops_magics import flavors, signature
from mlops_magics.errors import InvalidInputError, NotFoundError, UntrustedModelError
from mlops_magics.registry import (
    Lineage,
    ModelVersion,
    ModelVersionList,
    Registry,
    comparison,
    lineage,
    or_default,
)
from mlops_magics.registry.comparison import Comparison
from mlops_magics.registry.metrics import metrics_argument
from mlops_magics.registry.refs import check_name, check_tag, did_you_mean, parse_tag, parse_tags
from mlops_magics.registry.trust import how_to_trust, require_trusted

TagsArg = Mapping[str, str] | Iterable[str] | None


def _tags(tags: TagsArg) -> dict[str, str]:
    if tags is None:
        return {}
    if isinstance(tags, Mapping):
        return dict(check_tag(str(k), str(v)) for k, v in tags.items())
    if isinstance(tags, str):
        return dict([parse_tag(tags)])
    return parse_tags(list(tags))


def parse_moment(text: str | datetime) -> datetime:
    """Parse '2026-11-01' (the end of that day) or an ISO date-time (local time if naive).

    Raises:
        InvalidInputError: the text is neither.
    """
    if isinstance(text, datetime):
        return text if text.tzinfo else text.astimezone()
    try:
        if len(text.strip()) == 10:
            day = datetime.fromisoformat(text.strip()).date()
            return datetime.combine(day, time.max).astimezone()
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInputError(
            f"Invalid date {text!r}: use YYYY-MM-DD (the end of that day) or YYYY-MM-DDTHH:MM[:SS][+TZ]."
        ) from None
    return moment if moment.tzinfo else moment.astimezone()


def register(
    model: Any = None,
    name: str | None = None,
    *,
    path: str | Path | None = None,
    tags: TagsArg = None,
    description: str = "",
    sample: Any = None,
    alias: str | None = None,
    flavor: str | None = None,
    derived_from: str | None = None,
    provenance: Lineage | None = None,
    trust: bool = False,
    format: str | None = None,
    metrics: Mapping[str, float] | Iterable[str] | None = None,
    file_name: str | None = None,
    registry: Registry | None = None,
) -> ModelVersion:
    """Register an in-memory model, or a file or folder, as the next version of ``name``.

    An object from memory is trusted to be loaded (it is the caller's own); a file or folder is recorded as
    registered from its path and is untrusted unless ``trust`` says otherwise: loading or serving an untrusted
    pickle is refused (see :mod:`mlops_magics.registry.trust`).

    Args:
        model: the object to register (omit when ``path`` is given).
        name: the model name; versions are numbered 1, 2, 3... per name.
        path: a file or folder trained elsewhere, registered as it is.
        tags: ``{"key": "value"}`` or ``["key=value", ...]``.
        description: free text shown with the version.
        sample: model input (DataFrame, array, list) from which the signature and an input example
            are recorded; the model's ``predict`` is checked on it.
        alias: point this alias (e.g. 'staging') at the new version.
        flavor: force a flavor instead of detecting it (see :data:`mlops_magics.flavors.FLAVORS`).
        derived_from: ``NAME:VERSION`` of the version this one was made from (lineage).
        provenance: lineage captured by the caller (the magics pass the notebook and cell);
            captured here when omitted.
        trust: with ``path``: record that you trust the file to be loaded (you know where it comes from).
        format: how to save an object: ``pickle`` (default) or ``skops`` (scikit-learn models, loaded without
            pickle: see :data:`mlops_magics.flavors.FORMATS`). A file keeps its own format (``.skops``, ``.onnx``).
        metrics: what you measured, ``{"accuracy": 0.97}`` or ``["accuracy=0.97", ...]``: part of the version,
            never changed (``%validate`` adds what it measures beside them, with its source).
        file_name: the name of the object's file in the model folder (``$AZUREML_MODEL_DIR/<file_name>``, what an
            entry script opens). Default: the previous version's file name when it holds the same kind of file
            (``.pkl`` / ``.joblib``, ``.skops``, ``.onnx``, ``.pt``), as a version registered from a file
            (``path=``) keeps its own name; else the flavor's (``model.pkl``). Not with ``path``.
        registry: default: the registry under ``$MLOPS_HOME``.

    Returns:
        The new, immutable version.

    Raises:
        InvalidInputError: bad name, tag, metric, alias, flavor, format, file name or sample; neither or both of
            model/path.
        SerializationError: the object cannot be pickled; the message names the failing attribute.
        NotFoundError: ``path`` or ``derived_from`` does not exist.
        RegistryLockedError: another process held the write lock too long.
    """
    if (model is None) == (path is None):
        raise InvalidInputError("Give either a model object or a path to register (not both, not neither).")
    if not name:
        raise InvalidInputError("A model name is needed: register(model, name='iris') or %register VAR --name iris.")
    check_name(name)
    if path is not None and format is not None:
        raise InvalidInputError(f"--format {format} says how to save an object from memory; a file keeps its own "
                                "format (a .skops file registers as skops, a .onnx file as ONNX). Leave --format out "
                                "with --path.")
    if path is not None and file_name is not None:
        raise InvalidInputError(f"--file-name {file_name} names the file an object from memory is saved as; --path "
                                "keeps the file's own name (the one its entry script opens). Rename the file, or "
                                "leave --file-name out.")
    if file_name is not None:
        flavors.check_file_name(file_name)
    tag_map = _tags(tags)
    metric_map = metrics_argument(metrics)  # checked before anything is saved
    reg = or_default(registry)
    parent = None
    if derived_from:
        parent = reg.get(derived_from).ref
    sig = example = None
    if sample is not None:
        if model is None:
            raise InvalidInputError("--sample needs an in-memory model (the model's predict() checks it).")
        sig, example = signature.infer(model, sample)
    if provenance is None:
        provenance = lineage.capture(script=lineage.running_script(), derived_from=parent)
    elif parent:
        provenance = Lineage(**{**provenance.as_dict(), "derived_from": parent})
    with reg.artifacts.stage() as staging:
        if path is not None:
            source = Path(path).expanduser()
            saved = flavors.save_file(source, staging.folder, flavor)
            origin, origin_path, trusted = "path", str(source.absolute()), trust
        else:
            saved = flavors.save_object(model, staging.folder, flavor, format)
            chosen = file_name or _previous_file_name(reg, name, saved.options.get("file"))
            if chosen:
                saved = flavors.name_file(saved, staging.folder, chosen)
            origin, origin_path, trusted = "object", None, True
        staged = staging.finish()
        return reg.add_version(
            name,
            staged,
            flavor=saved.flavor,
            flavor_options=saved.options,
            framework=saved.framework,
            framework_version=saved.framework_version,
            tags=tag_map,
            description=description,
            signature=sig,
            input_example=example,
            lineage=provenance,
            alias=alias,
            origin=origin,
            origin_path=origin_path,
            trusted=trusted,
            metrics=metric_map,
        )


def _previous_file_name(reg: Registry, name: str, default: str | None) -> str | None:
    """The latest version's file name (what its entry script opens), if it is one file of ``default``'s kind.

    None when there is no earlier version, it holds several files or a folder, or another kind of file.
    """
    if default is None:
        return None
    latest = reg.find(name, {}, latest=True)
    if not latest or len(latest[0].files) != 1:
        return None
    previous = latest[0].files[0].path
    return previous if "/" not in previous and flavors.same_kind_of_file(previous, default) else None


def parse_tag_filters(items: Iterable[str] | None) -> dict[str, str | None]:
    """``['team=cv', 'reviewed']`` -> ``{'team': 'cv', 'reviewed': None}`` (key only: must be set)."""
    filters: dict[str, str | None] = {}
    for item in items or ():
        if "=" in item:
            key, value = parse_tag(item)
            filters[key] = value
        else:
            filters[check_tag(item.strip(), "")[0]] = None
    return filters


def list_models(
    name: str | None = None,
    tags: Mapping[str, str | None] | Iterable[str] | None = None,
    *,
    latest: bool = False,
    registry: Registry | None = None,
) -> ModelVersionList:
    """List registered versions, by name then version.

    Args:
        name: a glob on model names, e.g. ``iris*``.
        tags: ``{"key": "value"}`` (``None`` value: key must be set) or ``["key=value", "key"]``.
        latest: only the newest version of each model.
    """
    filters = dict(tags) if isinstance(tags, Mapping) else parse_tag_filters(tags)
    return or_default(registry).find(name, filters, latest=latest)


def get_model(ref: str, *, as_of: str | datetime | None = None, registry: Registry | None = None) -> ModelVersion:
    """Return the version that ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS`` names.

    Args:
        as_of: resolve aliases and 'latest' as they were then ('2026-11-01' means the end of that day).

    Raises:
        NotFoundError: no such model, version or alias; the message lists what exists.
    """
    return or_default(registry).get(ref, as_of=parse_moment(as_of) if as_of else None)


def load_model(ref: str, *, as_of: str | datetime | None = None, registry: Registry | None = None) -> Any:
    """Load a registered model back into memory after verifying its artifact's sha256.

    A version whose loading can run code from its artifact (a pickle, a skops file with types skops does not
    trust) loads only once trusted: see :func:`trust_model`.

    Raises:
        NotFoundError: no such model, version or alias.
        UntrustedModelError: loading it could run code and it is not trusted; the message says how to trust it.
        IntegrityError: the artifact changed since registration; the message names the file.
    """
    reg = or_default(registry)
    version = reg.get(ref, as_of=parse_moment(as_of) if as_of else None)
    require_trusted(version, "load")
    folder = reg.verified_artifact(version)
    try:
        return flavors.get_flavor(version.flavor).load(folder, version.flavor_options, trusted=version.trusted)
    except UntrustedModelError as exc:  # what the file holds, found on reading it (e.g. a newer skops trusts less)
        raise UntrustedModelError(f"{exc} {how_to_trust(version)}") from exc


def trust_model(ref: str, *, revoke: bool = False, registry: Registry | None = None) -> ModelVersion:
    """Record that you trust one version to be loaded and served (who and when are recorded), or withdraw it.

    Needed for a pickle (or PyTorch file, or a folder with pickles) registered from a path: loading one runs
    whatever code its author put in it. The artifact is not changed. Trusting a trusted version keeps the first
    record; withdrawing trust does not stop a running deployment.

    Args:
        ref: ``NAME:VERSION``, the exact version you checked (an alias or 'latest' is refused: it may move).
        revoke: withdraw the trust instead (loading and serving it are refused again).

    Returns:
        The version, with its trust as recorded now.

    Raises:
        InvalidInputError: the reference is not ``NAME:VERSION``.
        NotFoundError: no such version.
    """
    return or_default(registry).set_trust(ref, not revoke)


def tag_model(
    ref: str, tags: TagsArg = None, *, remove: Iterable[str] | None = None, registry: Registry | None = None
) -> ModelVersion:
    """Set and/or remove tags on one version (its artifact stays immutable)."""
    return or_default(registry).set_tags(ref, _tags(tags), list(remove or []))


@dataclass(frozen=True)
class Deleted:
    """What :func:`delete_model` removed, in one line: ``Deleted iris:2 (removed aliases staging, production).``"""

    #: The version as it was before the delete (its aliases included).
    version: ModelVersion

    @property
    def ref(self) -> str:
        """``NAME:VERSION`` of the deleted version."""
        return self.version.ref

    @property
    def removed_aliases(self) -> tuple[str, ...]:
        """The aliases that pointed at the version and went with it (each removal is in the alias history)."""
        return tuple(self.version.aliases)

    def __str__(self) -> str:
        gone = self.removed_aliases
        aliases = f" (removed alias{'es' if len(gone) > 1 else ''} {', '.join(gone)})" if gone else ""
        return f"Deleted {self.ref}{aliases}."

    def __repr__(self) -> str:
        return str(self)


def delete_model(ref: str, *, registry: Registry | None = None) -> Deleted:
    """Delete one version (``NAME:VERSION``) and the aliases pointing at it; refused while a live deployment uses it.

    Returns:
        The version as it was and the aliases removed with it, shown in one line.

    Raises:
        InvalidInputError: the reference does not name an exact version.
        ConflictError: a live deployment uses it; the message names the deployment.
    """
    return Deleted(or_default(registry).delete_version(ref))


def resolve_variable(namespace: Mapping[str, Any], var: str) -> Any:
    """Return ``namespace[var]``.

    Raises:
        NotFoundError: no such variable; the message suggests close names.
    """
    if var in namespace:
        return namespace[var]
    public = [k for k in namespace if not k.startswith("_")]
    raise NotFoundError(
        f"No variable named {var!r} in the notebook.{did_you_mean(var, public)} Define it first, or register a "
        "file with --path."
    )


def variable_name_for(name: str) -> str:
    """A Python identifier for a model name: 'iris-clf.v2' -> 'iris_clf_v2'."""
    ident = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return ident if ident.isidentifier() else f"model_{ident}"




#: Versions one comparison puts side by side.
MAX_COMPARED = 12


def compare_models(refs: Sequence[str], *, registry: Registry | None = None) -> Comparison:
    """Put model versions side by side: metrics, signature, validation, profile, ONNX speed, size, created.

    As MLflow compares runs: registered and measured metrics, the difference of each signature from the first's
    (columns added, removed, retyped), the stored validation and profile results, latency (profile p95, ONNX
    speed-up where stored), size, flavor and when each was registered.

    Args:
        refs: two or more of ``NAME``, ``NAME:VERSION``, ``NAME@ALIAS``; the first is the one the others are
            compared with (their signatures are diffed against its).

    Returns:
        A :class:`~mlops_magics.registry.comparison.Comparison` (shows itself as a table; ``to_dataframe()``).

    Raises:
        InvalidInputError: fewer than two references, more than :data:`MAX_COMPARED`, or two naming one version.
        NotFoundError: a reference names no version; the message says which and lists what exists.
    """
    if isinstance(refs, str):
        refs = refs.split()
    if len(refs) < 2:
        raise InvalidInputError(f"Compare at least two versions, e.g. %compare iris:1 iris:2 (got {len(refs)}: "
                                f"{' '.join(refs) or 'none'}).")
    if len(refs) > MAX_COMPARED:
        raise InvalidInputError(f"{len(refs)} versions given: compare at most {MAX_COMPARED} at once.")
    reg = or_default(registry)
    versions: list[ModelVersion] = []
    with reg.read():  # one snapshot: every version and its reports as they were at one moment
        for ref in refs:
            version = reg.get(ref)
            twin = next((v for v in versions if v.ref == version.ref), None)
            if twin is not None:
                raise InvalidInputError(f"{ref!r} and an earlier reference both name {version.ref}: compare "
                                        "different versions.")
            versions.append(version)
        reports = [reg.reports(v) for v in versions]
    return comparison.compare(versions, reports)
