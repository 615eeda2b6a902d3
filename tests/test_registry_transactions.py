"""Nested registry writes (``Registry.write()`` inside ``Registry.write()``): SAVEPOINTs on a real SQLite file.

What is stored is always read back through a second ``Registry`` on the same folder: another connection sees only
what was committed.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

import mlops_magics as mm
from mlops_magics.errors import RegistryLockedError
from mlops_magics.registry import ModelVersion, Registry


def _committed(home: Path) -> Registry:
    """A second registry object on the same folder: its own connection, so it sees only committed data."""
    return Registry(home)


def _blobs(home: Path) -> set[str]:
    return {p.name for p in (home / "artifacts" / "blobs").glob("*/*")}


def _manifests(home: Path, name: str) -> list[str]:
    folder = home / "artifacts" / "manifests" / name
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _leftovers(home: Path) -> list[Path]:
    """What a settled write must not leave: staging folders, journals, trash."""
    art = home / "artifacts"
    return [*(art / ".staging").iterdir(), *(art / ".trash").iterdir(),
            *((art / ".journal").iterdir() if (art / ".journal").exists() else [])]


def _new_version(reg: Registry, name: str, content: str) -> ModelVersion:
    """Stage a one-file artifact and add it as the next version of ``name`` (as %onnx registers its model)."""
    with reg.artifacts.stage() as staging:
        (staging.folder / "model.txt").write_text(content)
        return reg.add_version(name, staging.finish(), flavor="files", origin="object")


def test_an_inner_write_that_fails_is_rolled_back_alone_and_the_outer_one_commits_the_rest(home: Path) -> None:
    reg = Registry(home)
    first = mm.register({"n": 1}, "m", registry=reg)
    blobs = _blobs(home)
    with reg.write():
        reg.set_tags("m:1", {"kept": "yes"})
        with pytest.raises(RuntimeError, match="inner"), reg.write():
            reg.set_tags("m:1", {"lost": "yes"})
            _new_version(reg, "m", "inner, rolled back")  # a blob and a manifest, undone with the block
            raise RuntimeError("inner")
        assert _blobs(home) == blobs and _manifests(home, "m") == ["1.json"]
        reg.set_report(first, "profile", {"n": 1})
    stored = _committed(home)
    assert dict(stored.get("m:1").tags) == {"kept": "yes"}
    assert stored.reports(first) == {"profile": {"n": 1}}
    assert [v.version for v in stored.find("m")] == [1]
    assert _blobs(home) == blobs and _manifests(home, "m") == ["1.json"] and _leftovers(home) == []
    assert _new_version(stored, "m", "next").version == 2  # the rolled-back number was never handed out


def test_an_outer_failure_after_a_successful_inner_write_stores_nothing(home: Path) -> None:
    reg = Registry(home)
    mm.register({"n": 1}, "m", registry=reg)
    blobs = _blobs(home)
    with pytest.raises(RuntimeError, match="outer"), reg.write():
        with reg.write():
            inner = mm.register({"n": 2}, "m", registry=reg, tags={"stage": "new"})
            reg.set_alias(inner.ref, "staging")
        assert reg.get("m@staging").version == 2  # inside the transaction: its own writes are visible
        raise RuntimeError("outer")
    stored = _committed(home)
    assert [v.version for v in stored.find("m")] == [1]
    assert stored.alias_history("m") == []
    assert _blobs(home) == blobs and _manifests(home, "m") == ["1.json"] and _leftovers(home) == []


def test_a_new_version_and_its_report_in_one_outer_write_are_stored_together(home: Path) -> None:
    reg = Registry(home)
    with reg.write():
        version = _new_version(reg, "m", "converted")
        reg.set_report(version, "onnx", {"parity": "passed"})
        assert _committed(home).find("m") == ()  # not yet visible to anyone else
    stored = _committed(home)
    assert stored.reports(stored.get("m:1")) == {"onnx": {"parity": "passed"}}
    assert _manifests(home, "m") == ["1.json"] and _leftovers(home) == []


def test_a_new_version_whose_report_fails_is_not_stored_either(home: Path) -> None:
    reg = Registry(home)
    with pytest.raises(TypeError), reg.write():
        version = _new_version(reg, "m", "converted")
        reg.set_report(version, "onnx", {"not json": object()})  # fails inside set_report's own (nested) write
    stored = _committed(home)
    assert stored.find("m") == ()
    assert _blobs(home) == set() and _manifests(home, "m") == [] and _leftovers(home) == []
    assert _new_version(stored, "m", "again").version == 1


def test_after_commit_steps_wait_for_the_outermost_write(home: Path) -> None:
    reg = Registry(home)
    mm.register({"n": 1}, "m", registry=reg)
    manifest = home / "artifacts" / "manifests" / "m" / "1.json"
    ran: list[str] = []
    with reg.write():
        with reg.write():
            reg.transaction().after_commit(lambda: ran.append("inner"))
            reg.set_tags("m:1", {"team": "a"})  # its manifest is rewritten after the commit
        with pytest.raises(RuntimeError), reg.write():
            reg.transaction().after_commit(lambda: ran.append("rolled back"))
            reg.transaction().on_rollback(lambda: ran.append("undone"))
            raise RuntimeError("inner")
        assert ran == ["undone"]  # the failed block's undo ran at once; nothing else ran yet
        assert json.loads(manifest.read_text())["tags"] == {}
    assert ran == ["undone", "inner"]
    assert json.loads(manifest.read_text())["tags"] == {"team": "a"}
    assert _leftovers(home) == []


def test_a_delete_rolled_back_by_the_outer_write_leaves_the_version_loadable(home: Path) -> None:
    reg = Registry(home)
    mm.register({"n": 1}, "m", registry=reg)
    with pytest.raises(RuntimeError), reg.write():
        reg.delete_version("m:1")  # its artifact goes to the trash inside the transaction
        raise RuntimeError("outer")
    assert _leftovers(home) == []  # at once, not at the next open's recovery: the artifact is back from the trash
    assert mm.load_model("m:1", registry=reg) == {"n": 1}
    assert mm.load_model("m:1", registry=_committed(home)) == {"n": 1}
    assert _manifests(home, "m") == ["1.json"]


def test_a_write_on_another_thread_is_not_nested_it_waits_for_the_lock(home: Path) -> None:
    reg = Registry(home, lock_timeout=0.2)
    mm.register({"n": 1}, "m", registry=reg)
    raised: list[BaseException] = []

    def other_thread() -> None:
        try:
            reg.set_tags("m:1", {"from": "thread"})
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            raised.append(exc)

    with reg.write():
        reg.set_tags("m:1", {"from": "main"})
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join(timeout=30)
    assert len(raised) == 1 and isinstance(raised[0], RegistryLockedError)
    assert dict(_committed(home).get("m:1").tags) == {"from": "main"}
