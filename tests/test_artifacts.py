"""The content-addressed store: digests, immutability, verification on load."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import mlops_magics as mm
from mlops_magics.artifacts import ArtifactStore, file_sha256, manifest_digest
from mlops_magics.errors import IntegrityError
from mlops_magics.registry import ArtifactFile, Registry


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
        assert store.recover(set) == []
        assert (staging.folder / "f").exists()
