"""The deployment and monitoring verbs on real local deployments: each answers what its API function answers."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlops_magics as mm
from mlops_magics import api, payloads
from mlops_magics.registry import Registry
from tests.cli_run import mlops

pytestmark = pytest.mark.serve


@pytest.fixture
def clean(registry: Registry) -> Iterator[Registry]:
    """The test's registry; every deployment it made is stopped afterwards."""
    yield registry
    api.undeploy(all_services=True)


def test_deploy_call_keys_logs_reload_update_and_undeploy(clean: Registry, iris: Any, iris_lr: Any, iris_tree: Any,
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    X, _ = iris
    mm.register(iris_lr, "iris", sample=X[:3])
    mm.register(iris_tree, "iris", sample=X[:3])
    run = mlops(capsys, "deploy", "iris:1", "--auth", "--json")
    assert "deploying iris:1: starting mlops-serve on port" in run.err  # the slow steps say what they do
    deployed = run.json
    assert deployed == payloads.deployment_json(clean.get_deployment("iris"))
    assert (deployed["model"], deployed["state"], deployed["auth"]) == ("iris:1", "running", True)
    assert mlops(capsys, "deployments", "--json").json == payloads.deployments_json()
    assert mlops(capsys, "deployments").out.split()[:4] == ["iris", "iris:1", "local", "running"]

    expected = api.call("iris", X[:2])
    np.save(tmp_path / "x.npy", X[:2])
    (tmp_path / "x.json").write_text(json.dumps(X[:2].tolist()))
    for data in (json.dumps(X[:2].tolist()), str(tmp_path / "x.json"), str(tmp_path / "x.npy")):
        assert mlops(capsys, "--json", "call", "iris", data).json == expected == iris_lr.predict(X[:2]).tolist()
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"data": X[:2].tolist()})))
    assert mlops(capsys, "call", "iris", "-", "--json").json == expected
    refused = mlops(capsys, "call", "iris", "[[1, 2]]")
    assert refused.code == 2 and "answered 400" in refused.err and "got shape [1, 2]" in refused.err

    keys = mlops(capsys, "keys", "iris", "--json").json
    assert (keys["primary"], keys["secondary"]) == tuple(api.keys("iris"))
    assert mlops(capsys, "logs", "iris", "--tail", "5").out.rstrip("\n") == api.logs("iris", tail=5)
    assert mlops(capsys, "logs", "iris", "--json").json["log"] == api.logs("iris")
    followed = mlops(capsys, "logs", "iris", "--tail", "1", "--follow", "--timeout", "0.3")
    assert followed.code == 0 and followed.out.rstrip("\n") == api.logs("iris", tail=1)

    following = subprocess.Popen([sys.executable, "-m", "mlops_magics.cli", "logs", "iris", "--tail", "1", "--follow"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert following.stdout is not None and following.stdout.readline().strip() == api.logs("iris", tail=1)
    following.send_signal(signal.SIGINT)  # Ctrl-C: how one stops following
    out, err = following.communicate(timeout=10)
    assert (following.returncode, out, err) == (0, "", "")

    assert mlops(capsys, "reload", "iris", "--json").json["model"] == "iris:1"
    updated = mlops(capsys, "update", "iris", "--model", "iris:2")
    assert updated.code == 0 and updated.out.startswith("<Deployment iris: iris:2 on local, running")
    assert mlops(capsys, "call", "iris", json.dumps(X[:2].tolist()), "--json").json == iris_tree.predict(
        X[:2]).tolist()

    assert mlops(capsys, "undeploy", "iris").out == "Undeployed iris.\n"
    assert mlops(capsys, "undeploy", "iris", "--json").json == ["iris"]  # idempotent
    assert mlops(capsys, "undeploy", "--all", "--json").json == []
    assert mlops(capsys, "deployments", "--json").json == []  # deleted: listed with --all only
    assert [(d["name"], d["state"]) for d in mlops(capsys, "deployments", "--all", "--json").json] == [
        ("iris", "deleted")]
    missing = mlops(capsys, "logs", "nope")
    assert missing.code == 2 and "nope" in missing.err


def test_collected_label_and_monitor(clean: Registry, iris: Any, iris_lr: Any, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    X, y = iris
    mm.register(iris_lr, "iris", sample=X[:40])
    mlops(capsys, "deploy", "iris", "--collect")
    for i in range(3):
        mlops(capsys, "call", "iris", json.dumps(X[i * 50:i * 50 + 2].tolist()), "--request-id", f"r{i}")
    deadline = time.monotonic() + 10
    while len(api.collected("iris")) < 6 and time.monotonic() < deadline:
        time.sleep(0.1)

    records = mlops(capsys, "collected", "iris", "--json")
    assert records.json == json.loads(api.collected("iris").to_json(orient="records", date_format="iso",
                                                                      date_unit="us"))
    assert [r["request_id"] for r in records.json] == ["r0", "r0", "r1", "r1", "r2", "r2"]
    assert "6 records written" not in records.err and "records written" in records.err  # the counters, on stderr
    as_csv = mlops(capsys, "collected", "iris", "--limit", "1")
    assert as_csv.out.splitlines()[0].startswith("time,request_id,row,status,latency_ms,x0")
    assert len(as_csv.out.splitlines()) == 3

    (tmp_path / "labels.csv").write_text("request_id,label\n" + "".join(f"r{i},{y[i * 50]}\n" for i in range(3)))
    labelled = mlops(capsys, "label", "iris", "--data", str(tmp_path / "labels.csv"))
    assert labelled.code == 0 and labelled.out.startswith("iris: 3 labels attached, 3 to collected requests")

    np.save(tmp_path / "train.npy", X)
    shown = mlops(capsys, "monitor", "iris", "--data", str(tmp_path / "train.npy"), "--json").json
    report = api.monitor("iris", data=X)
    assert (shown["requests"], shown["rows"], shown["labelled_rows"]) == (report.requests, report.rows, 6) == (3, 6, 6)
    assert shown["quality"] == report.quality and [d["feature"] for d in shown["drift"]] == [
        d.feature for d in report.drift]
    assert mlops(capsys, "monitor", "iris").out.startswith("iris (iris:1): 3 requests, 6 rows, error rate 0.0%")
