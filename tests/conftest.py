"""Shared fixtures: a fresh registry folder per test, small trained models, a real IPython shell, and the real
Kubernetes cluster and image registry of the tests marked ``kubernetes`` / ``image_registry``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_magics import registry as registry_module
from mlops_magics.registry import Registry
from tests import infrastructure
from tests.infrastructure import KubeCluster

#: A test that takes one of these fixtures carries its marker, so that ``-m "not kubernetes"`` leaves it out.
_MARKED_FIXTURES = {"kube_cluster": "kubernetes", "image_registry": "image_registry"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, marker in _MARKED_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()) and item.get_closest_marker(marker) is None:
                item.add_marker(marker)


@pytest.fixture(scope="session", autouse=True)
def registry_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tests' own index of registries in use (never the user's ``~/.cache``), inherited by subprocesses."""
    import os

    folder = tmp_path_factory.mktemp("registries-in-use")
    before = os.environ.get("MLOPS_REGISTRY_INDEX")
    os.environ["MLOPS_REGISTRY_INDEX"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("MLOPS_REGISTRY_INDEX", None)
    else:
        os.environ["MLOPS_REGISTRY_INDEX"] = before


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``$MLOPS_HOME``: the default registry of this test, on a real SQLite file."""
    folder = tmp_path / "mlops-home"
    monkeypatch.setenv("MLOPS_HOME", str(folder))
    monkeypatch.delenv("MLOPS_LOCK_TIMEOUT", raising=False)
    registry_module._open.clear()
    return folder


@pytest.fixture
def registry(home: Path) -> Registry:
    """The default registry under the test's ``$MLOPS_HOME``."""
    return registry_module.default_registry()


@pytest.fixture(scope="session")
def iris() -> tuple[Any, Any]:
    """The iris data set, (X, y) as numpy arrays."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    return X, y


@pytest.fixture(scope="session")
def iris_lr(iris: tuple[Any, Any]) -> Any:
    """A LogisticRegression fitted on iris."""
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    return LogisticRegression(max_iter=500).fit(X, y)


@pytest.fixture(scope="session")
def iris_tree(iris: tuple[Any, Any]) -> Any:
    """A DecisionTreeClassifier fitted on iris (different predictions from the LR)."""
    from sklearn.tree import DecisionTreeClassifier

    X, y = iris
    return DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y)


@pytest.fixture
def ip(home: Path) -> Iterator[Any]:
    """A real IPython shell with ``%load_ext mlops_magics`` done and an empty user namespace."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "mlops_magics")
    shell.reset(new_session=False)
    yield shell
    shell.reset(new_session=False)


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """A real Kubernetes cluster that answers: ``$MLOPS_KUBECONFIG``'s, else the one of ``make kube-cluster``, else
    one started for the session (when ``make kube-cluster`` has cached the binaries) and stopped at its end; else
    the test skips saying how to get one, or fails where ``MLOPS_REQUIRE_KUBERNETES=1`` (CI)."""
    with infrastructure.kube_cluster(tmp_path_factory) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def image_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``"127.0.0.1:PORT"`` of a real image registry: ``$MLOPS_TEST_IMAGE_REGISTRY``, else the one of
    ``make image-registry``, else one started for the session (Debian's docker-registry) and stopped at its end;
    else the test skips saying how to get one, or fails where ``MLOPS_REQUIRE_REGISTRY=1`` (CI)."""
    with infrastructure.image_registry(tmp_path_factory) as address:
        yield address
