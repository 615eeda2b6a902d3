"""The per-user index of registries in use (mlops_magics.registry.index): real processes, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_magics import registry as registry_module
from mlops_magics.errors import InvalidInputError, NotFoundError
from mlops_magics.registry import index

USE = ("import mlops_magics as mm, sys; mm.default_registry(); sys.stdout.write('ok'); sys.stdout.flush(); "
       "sys.stdin.read()")


def _start(home: Path, folder: Path) -> subprocess.Popen[str]:
    """A process that uses the registry ``home`` and waits (until its stdin closes)."""
    env = {**os.environ, "MLOPS_HOME": str(home), "MLOPS_REGISTRY_INDEX": str(folder)}
    process = subprocess.Popen([sys.executable, "-c", USE], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None and process.stdout.read(2) == "ok"
    return process


def _end(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.close()
    process.wait(timeout=30)
    process.stdout.close()


def test_a_process_records_the_registry_it_uses_and_its_end_drops_it(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    process = _start(tmp_path / "a", folder)
    try:
        (use,) = index.in_use(folder)
        assert use.home == (tmp_path / "a").resolve() and use.pid == process.pid and use.latest
        assert use.kernel is None, "not a Jupyter kernel"
        assert (folder / f"{process.pid}.json").exists()
    finally:
        _end(process)
    assert index.in_use(folder) == []
    assert not (folder / f"{process.pid}.json").exists(), "the ended process's file is removed"


def test_switching_mlops_home_records_the_latest_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "index"
    monkeypatch.setenv("MLOPS_REGISTRY_INDEX", str(folder))
    for name in ("a", "b", "a"):
        monkeypatch.setenv("MLOPS_HOME", str(tmp_path / name))
        registry_module.default_registry()
    uses = [u for u in index.in_use(folder) if u.pid == os.getpid()]
    assert [(u.home.name, u.latest) for u in uses] == [("a", True), ("b", False)]
    written = (folder / f"{os.getpid()}.json").stat().st_mtime_ns
    registry_module.default_registry()
    assert (folder / f"{os.getpid()}.json").stat().st_mtime_ns == written, "the same registry again: no write"


def test_the_index_is_bounded_and_ignores_what_is_not_ours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "index"
    monkeypatch.setenv("MLOPS_REGISTRY_INDEX", str(folder))
    for n in range(index.MAX_PER_PROCESS + 5):
        index.record(tmp_path / f"r{n}")
    body = json.loads((folder / f"{os.getpid()}.json").read_text())
    assert len(body["registries"]) == index.MAX_PER_PROCESS
    assert body["registries"][0]["home"] == str(tmp_path / f"r{index.MAX_PER_PROCESS + 4}")
    # a damaged file, a huge one and one naming another pid, all of live processes: skipped, not crashed on
    (folder / f"{os.getppid()}.json").write_text("{not json")
    (folder / "1.json").write_bytes(b" " * (index.MAX_FILE_BYTES + 10))
    assert {u.pid for u in index.in_use(folder)} == {os.getpid()}
    assert not list(folder.glob(".*.tmp")), "no temporary file left behind"


def test_a_reused_pid_is_not_taken_for_the_recording_process(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    folder.mkdir()
    body = {"pid": os.getpid(), "started": "1", "kernel": None,
            "registries": [{"home": str(tmp_path / "a"), "used_at": "2026-01-01T00:00:00+00:00"}]}
    (folder / f"{os.getpid()}.json").write_text(json.dumps(body))
    assert index.in_use(folder) == [], "same pid, another start time: another process"


def test_resolve_refuses_what_is_not_a_registry(tmp_path: Path, registry: registry_module.Registry) -> None:
    default = registry.home
    assert index.resolve("", default=default) == default
    assert index.resolve(str(default), default=default) == default
    other = registry_module.Registry(tmp_path / "other")
    assert index.resolve(str(other.home), default=default) == other.home
    with pytest.raises(InvalidInputError, match="'relative/path' is not an absolute path"):
        index.resolve("relative/path", default=default)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(NotFoundError, match=r"is not a registry: .*plain holds no registry.db"):
        index.resolve(str(plain), default=default)
    assert list(plain.iterdir()) == [], "nothing was created in it"
    with pytest.raises(InvalidInputError, match="too long"):
        index.resolve("/" + "a" * 10_000, default=default)
