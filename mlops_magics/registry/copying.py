"""Copying a registered file or folder into a staging folder, safely.

The whole tree is checked before anything is copied: links that leave the folder, loops, special files
(FIFOs, sockets, devices), too many files and a copy that would not fit on the disk are refused, naming
the entry. Sparse files stay sparse.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from mlops_magics.display import human_size
from mlops_magics.errors import InvalidInputError, NotFoundError, StorageError
from mlops_magics.registry.disk import CHUNK, free_space

#: At most this many files are copied from one registered folder (links inside it included).
MAX_FILES = 100_000
#: Kept free on the disk when a registered folder is copied in (beside what its files take).
SPACE_MARGIN = 1 << 20


@dataclass(frozen=True)
class _Planned:
    source: str  # a real path (no link in it)
    relative: Path
    size: int
    allocated: int


def copy_in(source: Path, target: Path) -> int:
    """Copy the file or folder ``source`` to ``target`` (a new path in a staging folder), keeping sparse files sparse.

    The whole tree is checked before anything is copied. ``source`` itself may be a link (it is
    what the user named). Inside a folder, a link whose target lies inside the folder is copied as
    the file (or folder) it points at; a link that leaves the folder, a dangling link, a link that
    makes a loop, and any named pipe, socket or device are refused, naming the entry: a registered
    folder never brings in files from elsewhere on the machine, and never reads a FIFO or
    ``/dev/zero`` forever. More than :data:`MAX_FILES` files are refused; so is a copy that would
    not fit on the disk (the message gives both sizes).

    Returns:
        The number of bytes the copied files hold (holes in sparse files not counted).

    Raises:
        NotFoundError: ``source`` does not exist.
        InvalidInputError: a link leaves the folder or loops, a special file, too many files.
        StorageError: not enough free space for the copy.
    """
    try:
        root = os.path.realpath(source)
        top = os.stat(root)
    except FileNotFoundError:
        raise NotFoundError(f"No file or folder at {str(source)!r}. Check the path (relative to {Path.cwd()}).") \
            from None
    except OSError as exc:
        raise InvalidInputError(f"Cannot read {str(source)!r}: {exc.strerror}.") from exc
    plan: list[_Planned] = []
    folders: list[Path] = []
    if stat.S_ISDIR(top.st_mode):
        folders.append(Path("."))
        _plan_folder(root, root, str(source), Path("."), frozenset({(top.st_dev, top.st_ino)}), plan, folders)
    elif stat.S_ISREG(top.st_mode):
        plan.append(_Planned(root, Path("."), top.st_size, _allocated(root, top)))
    else:
        raise _special(str(source), top)
    needed = sum(p.allocated for p in plan)
    free = free_space(target.parent)
    if free is not None and needed + SPACE_MARGIN > free:
        raise StorageError(
            f"Registering {str(source)!r} needs {human_size(needed)} of disk "
            f"({len(plan)} file(s), {human_size(sum(p.size for p in plan))} long), but only {human_size(free)} is "
            f"free on the disk holding {target.parent}. Nothing was written. Free some space, or set MLOPS_HOME to a "
            "folder on a bigger disk."
        )
    for folder in folders:
        (target / folder).mkdir(parents=True, exist_ok=True)
    for item in plan:
        copy_file(Path(item.source), target / item.relative if item.relative != Path(".") else target)
    return needed


def _plan_folder(root: str, real: str, shown_folder: str, relative: Path, ancestors: frozenset[tuple[int, int]],
                 plan: list[_Planned], folders: list[Path]) -> None:
    try:
        with os.scandir(real) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        raise InvalidInputError(f"Cannot list the folder {real!r}: {exc.strerror}.") from exc
    for entry in entries:
        child = relative / entry.name
        shown = os.path.join(shown_folder, entry.name)
        if entry.is_symlink():
            pointed = os.readlink(entry.path)
            resolved = os.path.realpath(entry.path)
            try:
                info = os.stat(resolved)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise InvalidInputError(f"{shown} -> {pointed} is a loop of links. Remove the link.") from None
                raise InvalidInputError(
                    f"{shown} is a link to {pointed}, which does not exist. Remove the link, or put the file there."
                ) from None
            if os.path.commonpath([root, resolved]) != root:
                where = pointed if pointed == resolved else f"{pointed} ({resolved})"
                raise InvalidInputError(
                    f"{shown} is a link to {where}, outside the folder {root} being registered: "
                    "its content would be copied from elsewhere on this machine. Copy what the model needs into "
                    "the folder (or register that path itself), or remove the link."
                )
        else:
            resolved = entry.path
            info = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            key = (info.st_dev, info.st_ino)
            if key in ancestors:
                raise InvalidInputError(
                    f"{shown} leads back to {resolved}, a folder that contains it: a loop. Remove the link "
                    "(or the bind mount)."
                )
            folders.append(child)
            _plan_folder(root, resolved, shown, child, ancestors | {key}, plan, folders)
        elif stat.S_ISREG(info.st_mode):
            plan.append(_Planned(resolved, child, info.st_size, _allocated(resolved, info)))
        else:
            raise _special(shown, info)
        if len(plan) + len(folders) > MAX_FILES:  # folders count: links to folders can multiply them unboundedly
            raise InvalidInputError(
                f"{root} holds more than {MAX_FILES:,} files and folders (links followed): too many to register as "
                "one model. Archive the folder (tar, zip) and register the archive, or remove links that repeat "
                "folders."
            )


def _allocated(path: str, info: os.stat_result) -> int:
    """Bytes a copy of this regular file will take: its data, holes of a sparse file left out.

    Fewer blocks than its size is not proof enough (procfs files have none, yet read on): the holes
    are asked for with SEEK_DATA/SEEK_HOLE, and a file that cannot say counts whole.
    """
    blocks = getattr(info, "st_blocks", None)
    if blocks is None or blocks * 512 >= info.st_size:
        return info.st_size
    seek_data, seek_hole = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
    if seek_data is None or seek_hole is None:
        return info.st_size
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return info.st_size
    data, position = 0, 0
    try:
        while position < info.st_size:
            start = os.lseek(fd, position, seek_data)
            end = min(os.lseek(fd, start, seek_hole), info.st_size)
            data += max(0, end - start)
            position = end
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: only a hole is left
            return info.st_size
    finally:
        os.close(fd)
    return data


def _special(path: str, info: os.stat_result) -> InvalidInputError:
    mode = info.st_mode
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "not a regular file")
    return InvalidInputError(
        f"{path} is {kind}: only regular files and folders can be registered (reading it could block forever or "
        "never end). Remove it from the folder, or copy the data into a regular file."
    )


def copy_file(source: Path, target: Path) -> None:
    """Copy one regular file to a new ``target``, holes of a sparse file kept as holes.

    Raises:
        InvalidInputError: ``source`` is not a regular file (anymore).
    """
    try:
        fd_in = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidInputError(f"Cannot read {source}: {exc.strerror}.") from exc
    try:
        info = os.fstat(fd_in)
        if not stat.S_ISREG(info.st_mode):
            raise _special(str(source), info)
        fd_out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            _copy_data(fd_in, fd_out, info.st_size)
            os.ftruncate(fd_out, info.st_size)
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def _copy_data(fd_in: int, fd_out: int, size: int) -> None:
    seek_data, seek_hole = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
    position = 0
    while position < size:
        if seek_data is None or seek_hole is None:
            start, end = position, size
        else:
            try:
                start = os.lseek(fd_in, position, seek_data)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole is left
                    return
                start = position  # the filesystem cannot say where data is: copy it all
                end = size
            else:
                end = min(os.lseek(fd_in, start, seek_hole), size)
        if start >= size:
            return
        _copy_range(fd_in, fd_out, start, end)
        position = end


def _copy_range(fd_in: int, fd_out: int, start: int, end: int) -> None:
    offset = start
    fast = hasattr(os, "copy_file_range")
    while offset < end:
        count = min(end - offset, 1 << 30)
        done = 0
        if fast:
            try:
                done = os.copy_file_range(fd_in, fd_out, count, offset, offset)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                    raise
                fast = False
                continue
        else:
            data = os.pread(fd_in, min(count, CHUNK), offset)
            view = memoryview(data)
            while view:
                written = os.pwrite(fd_out, view, offset + done)
                view = view[written:]
                done += written
        if done == 0:  # the file shrank while it was copied
            return
        offset += done

