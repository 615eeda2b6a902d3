"""Reliability across processes: parallel registration, and SIGKILL at every step of a write."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import mlops_magics as mm
from mlops_magics.registry import Registry

pytestmark = pytest.mark.slow


def _python(code: str, home: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "MLOPS_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _assert_consistent(home: Path) -> Registry:
    """Open the registry (which recovers) and check nothing half-written remains."""
    reg = Registry(home)
    versions = reg.find()
    for v in versions:
        reg.verified_artifact(v)  # raises if any file a version trusts is damaged
    assert list(reg.artifacts.staging_root.iterdir()) == []
    assert list(reg.artifacts.trash.iterdir()) == []
    stored = {p.name for p in reg.artifacts.blobs.glob("*/*")}
    assert stored == {v.sha256 for v in versions}
    return reg


def test_eight_processes_registering_one_name_get_versions_1_to_400(home: Path) -> None:
    worker = """
        import os, mlops_magics as mm
        for n in range(50):
            mm.register({"pid": os.getpid(), "n": n}, "shared")
    """
    procs = [_python(worker, home) for _ in range(8)]  # they also race to create the registry
    results = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err for _, err in results]
    assert all(err == "" for _, err in results), [err for _, err in results]
    reg = _assert_consistent(home)
    versions = reg.find("shared")
    assert [v.version for v in versions] == list(range(1, 401))
    payloads = {(m["pid"], m["n"]) for m in (mm.load_model(v.ref, registry=reg) for v in versions)}
    assert len(payloads) == 400


KILL_AT = {
    # while the artifact is being written, before any registry write
    "saving": ("mlops_magics.flavors", "save_object", "before"),
    # after the artifact moved into the store, inside the write transaction, before COMMIT
    "published": ("mlops_magics.registry.artifacts", "ArtifactStore.publish", "after"),
    # after COMMIT, before the staging folder is cleaned up
    "committed": ("mlops_magics.registry.store", "Registry.add_version", "after"),
}


@pytest.mark.parametrize("phase", list(KILL_AT))
def test_sigkill_during_registration_leaves_no_half_written_version(home: Path, phase: str) -> None:
    mm.register({"keep": True}, "model", registry=Registry(home))
    module, attr, when = KILL_AT[phase]
    owner, _, name = attr.rpartition(".")
    child = _python(f"""
        import os, signal, importlib
        import mlops_magics as mm
        mod = importlib.import_module({module!r})
        owner = getattr(mod, {owner!r}) if {owner!r} else mod
        original = getattr(owner, {name!r})
        def dying(*args, **kwargs):
            if {when!r} == "before":
                args[1].joinpath("model.pkl").write_bytes(b"half a model")
                os.kill(os.getpid(), signal.SIGKILL)
            result = original(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        setattr(owner, {name!r}, dying)
        mm.register({{"big": "x" * 100000}}, "model")
    """, home)
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    reg = _assert_consistent(home)
    expected = [1, 2] if phase == "committed" else [1]
    assert [v.version for v in reg.find("model")] == expected
    assert mm.load_model("model:1", registry=reg) == {"keep": True}
    assert mm.register({"after": 1}, "model", registry=reg).version == expected[-1] + 1


def test_sigkill_during_a_delete_keeps_the_version_intact(home: Path) -> None:
    reg = Registry(home)
    mm.register({"v": 1}, "model", registry=reg)
    child = _python("""
        import os, signal
        import mlops_magics as mm
        from mlops_magics.registry.artifacts import ArtifactStore
        original = ArtifactStore.retire
        def dying(self, digest):
            original(self, digest)
            os.kill(os.getpid(), signal.SIGKILL)
        ArtifactStore.retire = dying
        mm.delete_model("model:1")
    """, home)
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    reg = _assert_consistent(home)  # the artifact came back from the trash
    assert mm.load_model("model:1", registry=reg) == {"v": 1}


def test_random_sigkills_while_registering_large_models_never_corrupt_the_registry(home: Path) -> None:
    rng = random.Random(1)
    for _ in range(4):
        child = _python("""
            import os, mlops_magics as mm
            for n in range(1000):
                mm.register({"n": n, "pad": os.urandom(4_000_000)}, "big")
        """, home)
        time.sleep(rng.uniform(0.8, 2.0))
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
        _assert_consistent(home)
    versions = Registry(home).find("big")
    assert [v.version for v in versions] == list(range(1, len(versions) + 1))
