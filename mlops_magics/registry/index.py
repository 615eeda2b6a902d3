"""The per-user index of registries in use: which process (and which Jupyter kernel) uses which registry.

Each process that uses a registry as its default (:func:`mlops_magics.registry.default_registry`: the registry
``$MLOPS_HOME`` names, so a notebook that points ``MLOPS_HOME`` at its own folder) records it in its own small
file, ``<index>/<pid>.json`` (``$MLOPS_REGISTRY_INDEX``, default ``~/.cache/mlops-magics/registries-in-use``):
its pid and start time, its Jupyter kernel id when it is a kernel, and the registries it used, the latest first.
The JupyterLab sidebar reads the index through the server extension to follow the registry of the open
notebook's kernel, without running code in that kernel.

One file per process means no lock between processes and no lost update: a process only ever replaces its own
file (written whole to a temporary file, then renamed). A reader drops the files of processes that ended (and
removes them). Everything is bounded: :data:`MAX_PER_PROCESS` registries per file, :data:`MAX_FILE_BYTES` per
file, :data:`MAX_PROCESSES` files read. Recording never fails the registry it records: a read-only disk only
means the sidebar cannot follow this process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from mlops_magics import config
from mlops_magics.errors import InvalidInputError, NotFoundError
from mlops_magics.registry.db import DB_FILE

__all__ = [
    "MAX_FILE_BYTES", "MAX_PER_PROCESS", "MAX_PROCESSES", "RegistryUse", "in_use", "is_registry", "kernel_id",
    "record", "resolve",
]

log = logging.getLogger(__name__)

#: Registries one process file keeps (the least recently used is dropped).
MAX_PER_PROCESS = 16
#: A process file larger than this is not read (it is not one of ours).
MAX_FILE_BYTES = 64 * 1024
#: Process files read at most (the most recently written first).
MAX_PROCESSES = 256
#: The longest registry path a caller may name.
MAX_PATH = 4096

_KERNEL_FILE = re.compile(r"^kernel-([A-Za-z0-9][A-Za-z0-9_-]{0,127})\.json$")
_lock = threading.Lock()
#: What this process recorded last: (index folder, registries latest first), so that using the same registry
#: again writes nothing.
_recorded: tuple[Path, list[tuple[str, str]]] | None = None


@dataclass(frozen=True)
class RegistryUse:
    """One live process's use of one registry.

    Attributes:
        home: the registry folder.
        pid: the process.
        kernel: its Jupyter kernel id, when the process is a Jupyter kernel.
        used_at: when the process last switched to this registry.
        latest: whether it is the registry the process switched to last (the one it uses now).
    """

    home: Path
    pid: int
    kernel: str | None
    used_at: datetime
    latest: bool


def record(home: Path) -> None:
    """Record that this process uses the registry ``home`` now (cheap when it is the one recorded last).

    Never raises: a failure to write the index is logged at debug level.

    Args:
        home: the registry folder (absolute).
    """
    global _recorded
    folder = config.registry_index()
    text = str(home)
    with _lock:
        previous = _recorded[1] if _recorded is not None and _recorded[0] == folder else []
        if previous and previous[0][0] == text:
            return
        now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        used = [(text, now), *[(h, at) for h, at in previous if h != text]][:MAX_PER_PROCESS]
        body = {"pid": os.getpid(), "started": _start_time(os.getpid()), "kernel": kernel_id(),
                "registries": [{"home": h, "used_at": at} for h, at in used]}
        try:
            _write_atomically(folder / f"{os.getpid()}.json", json.dumps(body))
        except OSError as exc:
            log.debug("could not record registry %s in the index %s: %s", home, folder, exc)
        _recorded = (folder, used)


def kernel_id() -> str | None:
    """This process's Jupyter kernel id, when it is a running ipykernel (read from its connection file's name).

    ipykernel is never imported here: only a process that imported it already can be a kernel.
    """
    ipykernel = sys.modules.get("ipykernel")
    get_connection_file = getattr(ipykernel, "get_connection_file", None)
    if get_connection_file is None:
        return None
    try:
        name = os.path.basename(str(get_connection_file()))
    except Exception:  # noqa: BLE001 - not in a running kernel (ipykernel raises RuntimeError, or others)
        return None
    match = _KERNEL_FILE.match(name)
    return match.group(1) if match else None


def in_use(folder: Path | None = None) -> list[RegistryUse]:
    """Every live process's registries, the most recently switched to first; files of ended processes removed.

    Args:
        folder: the index folder; default :func:`mlops_magics.config.registry_index`.
    """
    folder = config.registry_index() if folder is None else folder
    try:
        entries = [e for e in os.scandir(folder) if e.name.endswith(".json") and e.name[:-5].isdigit()]
    except OSError:
        return []
    entries.sort(key=_mtime, reverse=True)
    found: list[RegistryUse] = []
    for entry in entries[:MAX_PROCESSES]:
        pid = int(entry.name[:-5])
        body = _read(Path(entry.path))
        if not _alive(pid, None if body is None else body.get("started")):
            _remove(Path(entry.path), pid)
            continue
        if body is None or body.get("pid") != pid:
            continue  # not one of ours: left alone
        found.extend(_uses(body, pid))
    found.sort(key=lambda use: use.used_at, reverse=True)
    return found


def is_registry(home: Path) -> bool:
    """Whether ``home`` is a registry folder (it holds the registry's database)."""
    return (home / DB_FILE).is_file()


def resolve(raw: str, *, default: Path, folder: Path | None = None) -> Path:
    """The registry folder a caller named, checked: the default one, one in use, or an existing registry.

    A path that is none of these is refused (so that no folder is created or read because a URL named it).

    Args:
        raw: the folder as given (absolute); empty means ``default``.
        default: the caller's default registry.
        folder: the index folder; default :func:`mlops_magics.config.registry_index`.

    Returns:
        The folder, absolute and resolved.

    Raises:
        InvalidInputError: ``raw`` is too long, holds a NUL or is not absolute.
        NotFoundError: ``raw`` is not a registry; the message lists the registries in use.
    """
    if raw == "":
        return default
    shown = raw if len(raw) <= 200 else raw[:200] + "..."
    if len(raw) > MAX_PATH or "\x00" in raw:
        raise InvalidInputError(f"registry={shown!r} is not a folder name (too long or holds a NUL). "
                                "Give the absolute path of a registry folder, as GET mlops/api/registries lists.")
    if not os.path.isabs(raw):
        raise InvalidInputError(f"registry={shown!r} is not an absolute path. Give the absolute path of a registry "
                                "folder, as GET mlops/api/registries lists them.")
    home = Path(raw).resolve()
    if home == default or is_registry(home):
        return home
    known = sorted({str(use.home) for use in in_use(folder)} | {str(default)})
    raise NotFoundError(f"registry={shown!r} is not a registry: {home} holds no {DB_FILE} and no process uses it. "
                        f"Registries in use: {', '.join(repr(k) for k in known)}. Pick one of those, or create it: "
                        f"set MLOPS_HOME={home} in a notebook and register a model.")


# -- the files --------------------------------------------------------------------------------------------------

def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def _read(path: Path) -> dict[str, object] | None:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_FILE_BYTES:
        return None
    try:
        body = json.loads(data)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _uses(body: dict[str, object], pid: int) -> list[RegistryUse]:
    kernel = body.get("kernel")
    kernel = kernel if isinstance(kernel, str) and _KERNEL_FILE.match(f"kernel-{kernel}.json") else None
    registries = body.get("registries")
    uses: list[RegistryUse] = []
    for position, item in enumerate(registries[:MAX_PER_PROCESS] if isinstance(registries, list) else []):
        if not isinstance(item, dict):
            continue
        home, at = item.get("home"), item.get("used_at")
        if not isinstance(home, str) or not os.path.isabs(home) or len(home) > MAX_PATH or not isinstance(at, str):
            continue
        try:
            used_at = datetime.fromisoformat(at)
        except ValueError:
            continue
        if used_at.tzinfo is None:
            used_at = used_at.replace(tzinfo=timezone.utc)
        uses.append(RegistryUse(Path(home), pid, kernel, used_at, position == 0))
    return uses


def _remove(path: Path, pid: int) -> None:
    if pid == os.getpid():
        return
    with contextlib.suppress(OSError):
        path.unlink()


def _mtime(entry: os.DirEntry[str]) -> float:
    try:
        return entry.stat().st_mtime
    except OSError:
        return 0.0


# -- processes --------------------------------------------------------------------------------------------------

def _start_time(pid: int) -> str | None:
    """When the process started (Linux: its start time in clock ticks since boot), to tell a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19].decode() if len(fields) > 19 else None


def _alive(pid: int, started: object) -> bool:
    """Whether the process runs (and, when its start time was recorded, is the same process)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return False  # PermissionError: another user's process has the pid now (the index is per user)
    if isinstance(started, str):
        now = _start_time(pid)
        return now is None or now == started
    return True

