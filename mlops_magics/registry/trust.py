"""Trust: which model versions may be loaded or deployed, and why.

Loading a pickle (joblib, cloudpickle, a PyTorch module saved whole with ``torch.save``) runs whatever code its
author put in it: registering, listing and exporting one runs nothing, but ``load_model``, a deployment (local
or in a container) and everything built on them (validation, ONNX conversion, profiling, images) would. So:

- a version saved from an object in memory (``%register VAR`` in a notebook, ``register(model)`` in a
  script) is its registrant's own: trusted when it is registered;
- a file or folder registered from a path is *untrusted* until someone says otherwise: ``--trust`` at
  registration, or afterwards ``%trust NAME:VERSION`` / ``mlops trust NAME:VERSION`` /
  :func:`mlops_magics.trust_model`. Each records who trusted it and when (a registry write: the artifact
  itself stays immutable);
- loading or deploying an untrusted version whose loading can run code is refused, with a message that says
  why and how to trust it.

Whether loading can run code is decided per flavor, from what loading reads, not from where it came from:

=============================  ==========================================================  ==================
flavor                         what loading runs                                           trust needed
=============================  ==========================================================  ==================
sklearn, pickle                unpickling (joblib, cloudpickle): any code                  yes
sklearn saved with skops       only the types skops trusts by default (scikit-learn,       only for a file
                               numpy, scipy, builtins), unless the file names others       with other types
pytorch                        unpickling (``torch.load`` of a whole module): any code     yes
onnx                           nothing: a protobuf graph of standard operators             no
files                          ``load_model`` returns the folder's path; a deployment's    to serve, when a
                               entry script reads the files as it wants                    file is a pickle
=============================  ==========================================================  ==================

Nothing here imports a model library.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mlops_magics.errors import UntrustedModelError

if TYPE_CHECKING:
    from mlops_magics.registry.records import ModelVersion

#: What is refused: loading into this process, or serving (a deployment, a trial run, an image to run).
Action = Literal["load", "serve"]

#: File name suffixes of pickle formats (a file with any of them, e.g. ``model.pkl.gz``, counts).
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib", ".pt", ".pth", ".ckpt", ".sav", ".dill"})

#: Flavors whose artifact is a pickle unless saved with skops.
_PICKLED = {"sklearn": "joblib", "pickle": "cloudpickle"}

#: Files looked at in a registered folder (a folder with more is summarised by its first pickles).
_MAX_LISTED = 5


def is_pickle_file(path: Path) -> bool:
    """True if ``path`` is (or may hold) a pickle, by its name or its first bytes: protocol 2-5, protocol 0/1
    opcodes that call code, a compressed file (joblib's ``compress=``), or a PyTorch zip archive.

    Reads at most the first 64 KiB (and a zip's directory), never the whole file; nothing is unpickled.
    """
    if any(suffix.lower() in PICKLE_SUFFIXES for suffix in path.suffixes):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError:
        return False
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    if head.startswith(_COMPRESSED):  # joblib's compress= (zlib, gzip, bz2, xz, lz4): may hold a pickle
        return True
    if head[:1] in _PROTOCOL_0_STARTS and _calls_code(head):  # protocol 0/1: text-like, told by its opcodes
        return True
    if head.startswith(b"PK\x03\x04"):  # torch.save writes a zip with the pickle inside as <name>/data.pkl
        try:
            with zipfile.ZipFile(path) as archive:
                return any(name.endswith(".pkl") for name in archive.namelist())
        except (zipfile.BadZipFile, OSError, ValueError):
            return False
    return False


_SNIFF_BYTES = 65536
#: What compressed files start with: zlib (3 levels), gzip, bz2, xz, lz4 frames, joblib's old "ZF" files.
_COMPRESSED = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda", b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00",
               b"\x04\x22\x4d\x18", b"ZF")
_PROTOCOL_0_STARTS = {b"(", b"c", b"]", b"}", b")", b"I", b"S", b"V", b"N", b"F", b"L", b"i", b"o"}
#: Opcodes that find a callable by name, and opcodes that call one: a pickle with both can run code.
_FINDS = {"GLOBAL", "INST", "STACK_GLOBAL"}
_CALLS = {"REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX", "OBJ", "INST"}


def _calls_code(head: bytes) -> bool:
    """True if ``head`` parses as a pickle (to its STOP, or to the end of what was read) whose opcodes name a
    callable and call it. Nothing is executed: :mod:`pickletools` only decodes."""
    import pickletools

    seen: set[str] = set()
    position = 0
    try:
        for opcode, _, at in pickletools.genops(head):
            seen.add(opcode.name)
            position = at or 0
    except Exception:  # noqa: BLE001 - not a pickle, unless the read cut a long one short
        if len(head) < _SNIFF_BYTES or position < len(head) - 4096:
            return False
    return bool(seen & _FINDS and seen & _CALLS)


def pickle_files(folder: Path) -> list[str]:
    """The files under ``folder`` (relative POSIX paths, sorted) that are pickles (see :func:`is_pickle_file`)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and is_pickle_file(p))


def _listed(names: Iterable[str]) -> str:
    items = list(names)
    more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def load_risk(version: ModelVersion) -> str | None:
    """Why loading ``version`` into a Python process can run code from its artifact (None: it cannot).

    Decided from the version's flavor and flavor options (see the table in this module's docstring).
    """
    options = version.flavor_options
    if version.flavor in _PICKLED:
        serializer = str(options.get("serializer") or _PICKLED[version.flavor])
        if serializer == "skops":
            types = list(options.get("untrusted_types") or [])
            if not types:
                return None
            return (f"a skops file with types outside skops' trusted defaults ({_listed(types)}): loading it "
                    "runs their code")
        return f"a pickle ({serializer}): unpickling runs whatever code its author put in it"
    if version.flavor == "pytorch":
        return ("a PyTorch file saved whole with torch.save (a pickle): loading it runs whatever code its author put "
                "in it")
    if version.flavor in ("onnx", "files"):
        return None
    return f"a {version.flavor!r} artifact, which mlops-magics cannot tell is safe to load"


def serve_risk(version: ModelVersion) -> str | None:
    """Why serving ``version`` (a deployment, a trial run, an image) can run code from its artifact: :func:`load_risk`,
    or pickles in a registered folder, which an entry script may load."""
    if version.flavor != "files":
        return load_risk(version)
    recorded = version.flavor_options.get("pickles")
    found = (list(recorded) if recorded is not None
             else [f.path for f in version.files if any(s.lower() in PICKLE_SUFFIXES for s in Path(f.path).suffixes)])
    if not found:
        return None
    return (f"a folder with pickle files ({_listed(found)}): an entry script that loads them runs whatever code "
            "their author put in them")


def status(version: ModelVersion) -> str:
    """One line saying whether ``version`` needs trust to be loaded and deployed, and on whose word it has it."""
    risk = serve_risk(version)
    if risk is None:
        return f"not needed: {_safe_text(version)}"
    if version.trusted_at is not None:
        moment = version.trusted_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        return f"trusted by {version.trusted_by} on {moment} ({_origin_text(version)})"
    return (f"NOT TRUSTED: {_origin_text(version)}; {risk}. Once you know its source, trust it: %trust {version.ref} "
            f"(mlops trust {version.ref})")


def _origin_text(version: ModelVersion) -> str:
    if version.origin == "path":
        return f"registered from {version.origin_path!r}" if version.origin_path else "registered from a file"
    if version.origin == "object":
        return "saved from an object in memory"
    return "of unknown origin"


def _safe_text(version: ModelVersion) -> str:
    if version.flavor == "onnx":
        return "an ONNX graph (loading it runs no code)"
    if version.flavor == "files":
        return "files with no pickle among them (load_model returns their path)"
    return "a skops file with only types skops trusts (loading it runs no other code)"


def how_to_trust(version: ModelVersion) -> str:
    """What to do about an untrusted version: where it came from, and the three ways to trust it."""
    return (
        f"{version.ref} was {_origin_text(version)} and nobody has trusted it. If you know where it comes from and "
        f"trust it, say so (recorded, with who and when): %trust {version.ref} (or `mlops trust {version.ref}`, or "
        f"mlops_magics.trust_model({version.ref!r})). Safer still: register it as ONNX, or save a scikit-learn "
        "model with --format skops."
    )


def refusal(version: ModelVersion, reason: str, action: Action) -> UntrustedModelError:
    """The error that refuses to ``action`` an untrusted ``version`` because of ``reason``; it says how to trust it."""
    doing = ("load" if action == "load" else "serve (deploy, try, package or build)")
    where = "in this process" if action == "load" else "in the service's process or container"
    return UntrustedModelError(
        f"Refusing to {doing} {version.ref}: it is {reason}, {where}. {how_to_trust(version)}"
    )


def require_trusted(version: ModelVersion, action: Action = "serve") -> None:
    """Refuse a version whose loading (``action='load'``) or serving can run code from its artifact, unless it is
    trusted. Reads only the version's record.

    Raises:
        UntrustedModelError: it is untrusted and can run code; the message says why and how to trust it.
    """
    if version.trusted_at is not None:
        return
    risk = load_risk(version) if action == "load" else serve_risk(version)
    if risk is not None:
        raise refusal(version, risk, action)
