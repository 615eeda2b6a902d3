"""The content-addressed store: digests, immutability, verification on load."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import mlops_magics as mm
from mlops_magics import api
from mlops_magics.errors import IntegrityError
from mlops_magics.registry import ArtifactFile, Registry
from mlops_magics.registry.artifacts import ArtifactStore, manifest_digest
from mlops_magics.registry.disk import file_sha256


class _NoDatabase:
    """A recovery view of a database that holds nothing."""

    def has_version(self, name: str, version: int) -> bool:
        return False

    def manifest_body(self, name: str, version: int) -> dict[str, Any] | None:
        return None

    def referenced(self) -> set[str]:
        return set()


def test_digest_covers_paths_sizes_and_contents(tmp_path: Path) -> None:
    a = (ArtifactFile("model.pkl", 3, "aa"),)
    assert manifest_digest(a) != manifest_digest((ArtifactFile("other.pkl", 3, "aa"),))
    assert manifest_digest(a) != manifest_digest((ArtifactFile("model.pkl", 3, "ab"),))
    two = (ArtifactFile("b", 1, "x"), ArtifactFile("a", 1, "y"))
    assert manifest_digest(two) == manifest_digest(tuple(reversed(two)))


def test_identical_content_is_stored_once(registry: Registry, iris_lr: Any) -> None:
    first, second = mm.register(iris_lr, "a"), mm.register(iris_lr, "b")
    assert first.sha256 == second.sha256 and first.artifact_path == second.artifact_path
    assert len(list(registry.artifacts.blobs.glob("*/*"))) == 1


def test_stored_files_are_read_only_and_hashes_match(registry: Registry, iris_lr: Any) -> None:
    v = mm.register(iris_lr, "iris")
    path = registry.verified_artifact(v) / "model.pkl"
    assert not os.stat(path).st_mode & 0o222
    assert file_sha256(path) == v.files[0].sha256


def test_a_corrupted_artifact_is_not_loaded_and_the_file_is_named(registry: Registry, iris_lr: Any) -> None:
    v = mm.register(iris_lr, "iris")
    path = v.artifact_path / "model.pkl"  # type: ignore[operator]
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=rf"Artifact file {path} is corrupted: its sha256 no longer matches"):
        mm.load_model("iris:1")


def test_a_missing_artifact_file_is_named(registry: Registry, iris_lr: Any) -> None:
    v = mm.register(iris_lr, "iris")
    (v.artifact_path / "model.pkl").unlink()  # type: ignore[operator]
    with pytest.raises(IntegrityError, match="model.pkl is missing"):
        mm.load_model("iris")


def test_staging_is_removed_even_when_saving_fails(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError), store.stage() as staging:
        (staging.folder / "half").write_bytes(b"x")
        raise RuntimeError("saving failed")
    assert list(store.staging_root.iterdir()) == []


def test_recovery_leaves_a_live_writers_staging_alone(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with store.stage() as staging:
        (staging.folder / "f").write_bytes(b"x")
        assert not store.needs_recovery()
        assert store.recover(_NoDatabase()) == []
        assert (staging.folder / "f").exists()


def test_recovery_never_takes_a_lock_file_a_live_writer_has_created_but_not_locked_yet(tmp_path: Path) -> None:
    import os
    import time

    from mlops_magics.registry.disk import PENDING, PENDING_GRACE_S

    store = ArtifactStore(tmp_path)
    with store.stage():  # makes the folder writers lock their files in
        pass
    # A writer between creating its lock file and locking it: recovery in another process must not see it as dead
    # (it used to remove such a file, and the writer then failed: seen with 8 processes registering at once).
    fresh = tmp_path / PENDING / "0123456789abcdef.lock"
    fresh.touch()
    store.recover(_NoDatabase())
    assert fresh.exists()
    with store.stage() as staging:  # and writers go on locking theirs beside it
        assert staging.folder.exists()
    stale = time.time() - PENDING_GRACE_S - 1
    os.utime(fresh, (stale, stale))  # left by a writer that died before it began, long ago: cleaned
    assert any("died before it began" in action for action in store.recover(_NoDatabase()))
    assert not fresh.exists()


def test_a_file_dropped_into_a_stored_artifact_is_refused_at_load_and_named(registry: Registry, iris_lr: Any) -> None:
    v = mm.register(iris_lr, "iris")
    folder = v.artifact_path
    assert folder is not None
    os.chmod(folder, 0o755)
    (folder / "sitecustomize.py").write_text("import os\n")
    with pytest.raises(IntegrityError, match=rf"Artifact folder {folder} holds 'sitecustomize.py', which was not "
                                             r"registered with it \(its manifest lists 1 file\(s\)\)"):
        mm.load_model("iris")
    (folder / "sitecustomize.py").unlink()
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.py").write_text("")
    with pytest.raises(IntegrityError, match="holds 'sub/deep.py'"):
        mm.load_model("iris")


def test_a_link_in_a_stored_artifact_is_refused(registry: Registry, iris_lr: Any) -> None:
    v = mm.register(iris_lr, "iris")
    folder = v.artifact_path
    assert folder is not None
    pickle = folder / "model.pkl"
    real = folder.parent / "elsewhere.pkl"
    os.chmod(folder, 0o755)
    os.rename(pickle, real)
    pickle.symlink_to(real)  # same content, but not the file that was registered
    with pytest.raises(IntegrityError, match=r"model.pkl is a symbolic link, not the regular file registered"):
        mm.load_model("iris")


def test_verification_checks_the_recorded_file_list_against_the_digest(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    files = (ArtifactFile("model.pkl", 3, "ab" * 32),)
    with pytest.raises(IntegrityError, match="does not match its digest: the registry database was modified"):
        store.verify("0" * 64, files)


def test_export_copies_exactly_the_registered_files_and_checks_the_copies(registry: Registry, iris_lr: Any,
                                                                          tmp_path: Path) -> None:
    v = mm.register(iris_lr, "iris")
    out = tmp_path / "out"
    api.export_model("iris", out)
    assert sorted(p.name for p in out.iterdir()) == ["model.pkl"]
    assert file_sha256(out / "model.pkl") == v.files[0].sha256
    with pytest.raises(mm.InvalidInputError, match="exists and is not an empty folder"):
        api.export_model("iris", out)
