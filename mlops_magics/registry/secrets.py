"""Deployment keys, kept out of the registry database.

Each service that requires a key has a primary and a secondary key (as Azure ML services do), in
``$MLOPS_HOME/secrets/<service>/auth-keys``: one key per line, primary first. The folder is 0700 and the file
0600, written atomically (a new file renamed over the old one). The scoring server reads that file itself
(``mlops-serve --auth-key-file``; a container gets the folder mounted read-only), and notices a rewritten
file within a second, so regenerating one key never interrupts clients that hold the other. The database
records only the file's path.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from mlops_magics.errors import InvalidInputError, NotFoundError

KEY_FILE = "auth-keys"
#: Key names, in the order of the file's lines.
KEY_NAMES = ("primary", "secondary")


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ServiceKeys:
    """The two keys of a service; either one is accepted as ``Authorization: Bearer KEY``.

    Unpacks like Azure's ``service.get_keys()``: ``primary, secondary = keys``. Shown masked, so that a
    notebook's saved output never holds a key: read ``.primary`` / ``.secondary`` for the values.
    """

    service: str
    primary: str
    secondary: str

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter((self.primary, self.secondary))

    def __repr__(self) -> str:
        return (f"<ServiceKeys {self.service}: primary {mask(self.primary)}, secondary {mask(self.secondary)}; "
                "read .primary / .secondary for the values>")


def mask(key: str) -> str:
    """A key as it may be shown: its first four characters and its length."""
    return f"{key[:4]}... ({len(key)} chars)"


def read_key_file(path: Path | str) -> tuple[str, ...]:
    """The keys in a key file, primary first (empty when the file is gone)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return ()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


class KeyStore:
    """The key files of a registry's services, under ``home/secrets`` (endpoints': ``home/endpoint-secrets``)."""

    def __init__(self, home: Path, folder: str = "secrets") -> None:
        self.root = home / folder

    def folder(self, service: str) -> Path:
        """The folder holding ``service``'s key file (what a container mounts read-only)."""
        return self.root / service

    def path(self, service: str) -> Path:
        """The key file of ``service``."""
        return self.folder(service) / KEY_FILE

    def create(self, service: str) -> ServiceKeys:
        """Give ``service`` two new keys (replacing any it had)."""
        keys = ServiceKeys(service, new_key(), new_key())
        self.put(keys)
        return keys

    def get(self, service: str) -> ServiceKeys:
        """The keys of ``service``.

        Raises:
            NotFoundError: the service has no keys (it was deployed without ``--auth``).
        """
        found = read_key_file(self.path(service))
        if len(found) < len(KEY_NAMES):
            raise NotFoundError(f"Service {service!r} has no keys: it was deployed without --auth. Deploy it with "
                                f"--auth to require a key.")
        return ServiceKeys(service, found[0], found[1])

    def regenerate(self, service: str, which: str) -> ServiceKeys:
        """Replace one key of ``service`` with a new one; the other stays valid.

        Raises:
            InvalidInputError: ``which`` is neither 'primary' nor 'secondary'.
            NotFoundError: the service has no keys.
        """
        if which not in KEY_NAMES:
            raise InvalidInputError(f"Cannot regenerate the {which!r} key: say 'primary' or 'secondary'.")
        current = self.get(service)
        keys = ServiceKeys(service, new_key() if which == "primary" else current.primary,
                           new_key() if which == "secondary" else current.secondary)
        self.put(keys)
        return keys

    def remove(self, service: str) -> None:
        """Forget the keys of ``service`` (idempotent)."""
        shutil.rmtree(self.folder(service), ignore_errors=True)

    def put(self, keys: ServiceKeys) -> None:
        """Write the key file of ``keys.service`` atomically (0600, in a 0700 folder)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder = self.folder(keys.service)
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)
        os.chmod(folder, 0o700)
        fresh = folder / f".{KEY_FILE}.{secrets.token_hex(4)}"
        fd = os.open(fresh, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            os.write(fd, f"{keys.primary}\n{keys.secondary}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(fresh, self.path(keys.service))
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
