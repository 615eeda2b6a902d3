"""The Docker engine, through the docker SDK: connecting with a clear error, and building with progress.

The SDK is imported here only, when a Docker feature is used, so ``import mlops_magics`` stays cheap.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_magics.errors import BuildError, EngineError

#: How to get an engine, quoted by every "no engine" message.
HOW_TO_START = (
    "Start one (Docker Desktop, `sudo systemctl start docker`, or on a bare Linux machine "
    "`sudo make docker-engine` in the mlops-magics checkout), or deploy with --target local."
)
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


_clients: dict[str, Any] = {}


def client() -> Any:
    """The docker SDK client for the engine the environment points at (``DOCKER_HOST`` or the local socket).

    One client per address is kept for the process (its connections are pooled).

    Raises:
        EngineError: no engine answers; the message says where it looked and how to start one.
    """
    import docker

    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    cached = _clients.get(where)
    if cached is not None:
        return cached
    if where.startswith("unix://"):  # check first: the SDK leaks the socket of a failed unix connection
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(where.removeprefix("unix://"))
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                raise EngineError(f"No Docker engine is reachable at {where} ({reason}). {HOW_TO_START}") from None
    engine = None
    try:
        engine = docker.from_env(version="auto", timeout=120)
        engine.ping()
    except docker.errors.DockerException as exc:
        if engine is not None:
            engine.close()
        reason = str(exc).split("(", 1)[0].strip().rstrip(":")
        raise EngineError(f"No Docker engine is reachable at {where} ({reason}). {HOW_TO_START}") from None
    _clients[where] = engine
    return engine


def available() -> tuple[bool, str]:
    """Whether an engine answers, and if not, why (for skips and status lines)."""
    try:
        client()
    except EngineError as exc:
        return False, str(exc)
    return True, ""


@dataclass(frozen=True)
class BuildStep:
    """Where a build is: step ``number`` of ``total``, running ``instruction``; ``line`` is its latest output."""

    number: int
    total: int
    instruction: str
    line: str = ""
    cached: bool = False


@dataclass
class _Transcript:
    lines: list[str] = field(default_factory=list)
    step: BuildStep = BuildStep(0, 0, "sending the build context")
    step_start: int = 0


def remove_image(tag: str) -> None:
    """Remove the image ``tag`` from the engine; an image already gone is not an error.

    Raises:
        EngineError: no engine is reachable, or it refused (the image is in use, say); its reason is quoted.
    """
    import docker

    try:
        client().images.remove(tag, force=False, noprune=False)
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.APIError as exc:
        raise EngineError(f"Docker could not remove {tag}: {exc.explanation}") from None


def build(
    folder: Path,
    tag: str,
    *,
    labels: Mapping[str, str] | None = None,
    no_cache: bool = False,
    progress: Callable[[BuildStep], None] | None = None,
    engine: Any = None,
) -> tuple[str, str]:
    """Build the context in ``folder`` as ``tag`` with the engine's classic builder; return (image id, full log).

    The build runs with the host's network (containers here have no bridge), never pulls the base image
    when it is present, and writes its whole log to ``folder/build.log``.

    Raises:
        EngineError: no engine.
        BuildError: a step failed; the message has the step and the last lines of its output.
    """
    engine = engine or client()
    log_path = folder / "build.log"
    if progress is not None:
        progress(_Transcript().step)  # the engine says nothing until it has the whole context
    try:
        events = engine.api.build(path=str(folder), tag=tag, rm=True, forcerm=True, decode=True, pull=False,
                                  network_mode="host", nocache=no_cache, labels=dict(labels or {}))
        image_id, transcript = _follow(events, progress)
    except BuildError as exc:
        log_path.write_text(exc.output)
        raise BuildError(f"{exc}\nFull build log: {log_path}", step=exc.step, output=exc.output,
                         log=str(log_path)) from None
    log = "".join(transcript.lines)
    log_path.write_text(log)
    return image_id, log


def _follow(events: Iterable[Mapping[str, Any]], progress: Callable[[BuildStep], None] | None,
            ) -> tuple[str, _Transcript]:
    t = _Transcript()
    image_id, error = "", ""
    for event in events:  # read to the end even after an error: that closes the engine's response
        if "error" in event:
            error = error or str(event.get("errorDetail", {}).get("message") or event["error"])
        if error:
            continue
        text = event.get("stream") or ""
        if "aux" in event and isinstance(event["aux"], dict):
            image_id = str(event["aux"].get("ID", image_id))
        if not text:
            continue
        t.lines.append(text)
        for line in text.splitlines():
            match = _STEP.match(line)
            if match:
                t.step = BuildStep(int(match[1]), int(match[2]), match[3])
                t.step_start = len(t.lines) - 1
            elif line.strip():
                cached = line.strip() == "---> Using cache"
                t.step = BuildStep(t.step.number, t.step.total, t.step.instruction, line.strip()[:200],
                                   t.step.cached or cached)
            if progress is not None:
                progress(t.step)
    if error or not image_id:
        _fail(t, error or "the engine reported no image id")
    return image_id, t


def _fail(t: _Transcript, error: str) -> None:
    output = "".join(t.lines[t.step_start:])
    tail = "\n".join(output.splitlines()[-25:])
    where = f"step {t.step.number}/{t.step.total} `{t.step.instruction}`" if t.step.number else t.step.instruction
    hint = ""
    if t.step.number == 1 and re.search(r"pull access denied|not found|dial tcp|no such host|repository", error):
        base = t.step.instruction.removeprefix("FROM ").strip()
        hint = (f"\nThe base image {base} is not on this engine and cannot be pulled from here. Build or import one "
                "(see the README, 'Docker without a registry') and pass --base-image NAME or set MLOPS_BASE_IMAGE.")
    raise BuildError(f"The image build failed at {where}: {error.strip()}{hint}\nOutput of that step:\n{tail}",
                     step=where, output="".join(t.lines) + f"\nERROR: {error}\n")
