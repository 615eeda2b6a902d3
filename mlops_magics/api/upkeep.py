"""Copying a version out and keeping the registry safe: the API behind ``mlops export`` and ``mlops registry``."""

from __future__ import annotations

from pathlib import Path

from mlops_magics.errors import InvalidInputError
from mlops_magics.registry import ModelVersion, Registry, maintenance, or_default


def export_model(ref: str, output: str | Path, *, registry: Registry | None = None) -> ModelVersion:
    """Copy a version's files, exactly as registered and checked, to an empty or new folder.

    Only the files the version's manifest lists are copied, and each copy's sha256 is checked.

    Returns:
        The version exported.

    Raises:
        InvalidInputError: ``output`` exists and is not empty.
        IntegrityError: the artifact differs from what was registered (a file missing, changed or added).
    """
    reg = or_default(registry)
    version = reg.get(ref)
    target = Path(output).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InvalidInputError(f"{target} exists and is not an empty folder: choose an empty or new folder.")
    reg.artifacts.export(version.sha256, version.files, target)
    return version


def backup_registry(path: str | Path, *, home: str | Path | None = None) -> maintenance.BackupReport:
    """Copy the registry database to ``path`` (see :func:`mlops_magics.registry.maintenance.backup`)."""
    return maintenance.backup(path, home=home)


def restore_registry(
    path: str | Path, *, force: bool = False, home: str | Path | None = None
) -> maintenance.RestoreReport:
    """Put a backup in place of the database (see :func:`mlops_magics.registry.maintenance.restore`)."""
    return maintenance.restore(path, home=home, force=force)


def check_registry(*, home: str | Path | None = None) -> maintenance.CheckReport:
    """Check the database and every artifact (see :func:`mlops_magics.registry.maintenance.check`)."""
    return maintenance.check(home=home)


def rebuild_registry(*, home: str | Path | None = None) -> maintenance.RebuildReport:
    """Re-create a lost database (see :func:`mlops_magics.registry.maintenance.rebuild`)."""
    return maintenance.rebuild(home=home)
