"""The Jupyter server extension's REST API, through a real Jupyter server (pytest-jupyter's fixtures) and a real
registry and deployment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import tornado.httpclient

import mlops_magics as mm
from mlops_magics import api, payloads
from mlops_magics.registry import Registry

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"mlops_magics.server_extension": True}}}


@pytest.fixture
def models(registry: Registry, iris_lr: Any, iris_tree: Any, iris: Any) -> Registry:
    mm.register(iris_lr, "iris", sample=iris[0][:3], registry=registry)
    mm.register(iris_tree, "iris", sample=iris[0][:3], alias="production", registry=registry)
    mm.register(iris_lr, "wine", registry=registry)
    return registry


async def _get(jp_fetch: Any, *path: str, **params: Any) -> Any:
    response = await jp_fetch("mlops", "api", *path, params=params or None)
    assert response.code == 200 and response.headers["Content-Type"].startswith("application/json")
    return json.loads(response.body)


async def _error(jp_fetch: Any, *path: str, method: str = "GET", **params: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(tornado.httpclient.HTTPClientError) as raised:
        await jp_fetch("mlops", "api", *path, method=method, params=params or None)
    return raised.value.code, json.loads(raised.value.response.body)


async def test_models_versions_and_aliases(jp_fetch: Any, models: Registry) -> None:
    found = await _get(jp_fetch, "models")
    assert [m["name"] for m in found] == ["iris", "wine"]
    iris = found[0]
    assert [v["version"] for v in iris["versions"]] == [2, 1] and iris["aliases"] == {"production": 2}
    assert (await _get(jp_fetch, "models", "iris", "versions", "1"))["reports"] == {}
    models.set_report(models.get("iris:2"), "profile",
                      {"recommendedCpu": 0.5, "recommendedMemoryInGB": 0.3, "recommendedLatencyInMs": 4.2})
    detail = await _get(jp_fetch, "models", "iris", "versions", "2")
    assert detail["aliases"] == ["production"] and detail["signature"]["inputs"]["type"] == "tensor"
    assert [h["alias"] for h in detail["alias_history"]] == ["production"]
    assert detail["reports"]["profile"]["recommendedCpu"] == 0.5
    assert detail["report_summaries"] == {"profile": "recommended cpu=0.5, memory=0.3 GB, p95 4.2 ms"}
    assert (await _get(jp_fetch, "health"))["registry"] == str(models.home)


async def test_versions_carry_their_registered_and_measured_metrics(jp_fetch: Any, models: Registry,
                                                                   iris_lr: Any) -> None:
    v = mm.register(iris_lr, "wine", metrics={"accuracy": 0.97}, registry=models)
    models.record_measured_metrics(v, {"accuracy": 0.9}, source="validation", detail={"rows": 20})
    wine = (await _get(jp_fetch, "models"))[1]
    assert [item["metrics"] for item in wine["versions"]] == [{"accuracy": 0.97, "accuracy (validation)": 0.9}, {}]
    detail = await _get(jp_fetch, "models", "wine", "versions", "2")
    assert detail["metrics"] == {"accuracy": 0.97}
    assert [(m["key"], m["value"], m["source"], m["detail"]) for m in detail["measured_metrics"]] == [
        ("accuracy", 0.9, "validation", {"rows": 20})]


async def test_the_listing_answers_304_until_the_registry_changes(jp_fetch: Any, models: Registry) -> None:
    """The sidebar polls the listing: unchanged, it is neither made again nor sent again (ETag -> 304); a
    change by this process or by another one is seen at the next poll."""
    async def poll(etag: str) -> tuple[int, str, Any]:
        try:
            answer = await jp_fetch("mlops", "api", "models", headers={"If-None-Match": etag})
        except tornado.httpclient.HTTPClientError as exc:
            return exc.code, etag, None
        return answer.code, answer.headers["Etag"], json.loads(answer.body)

    first = await jp_fetch("mlops", "api", "models")
    etag = first.headers["Etag"]
    assert (await poll(etag))[0] == 304
    assert payloads.models_json_text() is payloads.models_json_text(), "not made again while nothing changed"

    mm.tag_model("wine:1", {"stage": "dev"}, registry=models)  # this process, this connection
    code, etag, body = await poll(etag)
    assert code == 200 and body[1]["versions"][0]["tags"] == {"stage": "dev"}
    assert (await poll(etag))[0] == 304

    other = "import mlops_magics as mm; mm.register({'w': 2}, 'wine')"  # another process
    subprocess.run([sys.executable, "-c", other], env={**os.environ, "MLOPS_HOME": str(models.home)}, check=True)
    code, etag, body = await poll(etag)
    assert code == 200 and [v["version"] for v in body[1]["versions"]] == [2, 1]


async def test_deployments_logs_and_undeploy(jp_fetch: Any, models: Registry) -> None:
    api.deploy("iris:1", name="svc", auth=True, registry=models)
    try:
        (listed,) = await _get(jp_fetch, "deployments")
        assert listed["name"] == "svc" and listed["state"] == "running" and listed["model"] == "iris:1"
        assert listed["auth"] is True and "auth_key" not in json.dumps(listed), "the key never leaves the kernel"
        logs = await _get(jp_fetch, "deployments", "svc", "logs", tail="5")
        assert "serving score.py" in logs["log"] and logs["tail"] == 5
        response = await jp_fetch("mlops", "api", "deployments", "svc", method="DELETE")
        assert json.loads(response.body)["state"] == "deleted"
        assert models.get_deployment("svc").state == "deleted"
        again = await jp_fetch("mlops", "api", "deployments", "svc", method="DELETE")  # idempotent
        assert json.loads(again.body)["state"] == "deleted"
    finally:
        api.undeploy(all_services=True, registry=models)


async def test_errors_are_json_with_the_right_status(jp_fetch: Any, models: Registry) -> None:
    code, body = await _error(jp_fetch, "models", "iris", "versions", "9")
    assert code == 404 and body["reason"] == "NotFoundError" and "iris" in body["message"]
    code, body = await _error(jp_fetch, "deployments", "ghost", "logs")
    assert code == 404 and "ghost" in body["message"]
    code, body = await _error(jp_fetch, "deployments", "ghost", "logs", tail="many")
    assert code == 400 and "tail='many' is invalid" in body["message"]


async def test_requests_without_the_token_are_refused(jp_fetch: Any, models: Registry) -> None:
    with pytest.raises(tornado.httpclient.HTTPClientError) as raised:
        await jp_fetch("mlops", "api", "models", headers={"Authorization": "token wrong"})
    assert raised.value.code == 403


def test_the_installed_environment_enables_the_extension() -> None:
    import subprocess
    import sys
    from pathlib import Path

    jupyter = Path(sys.executable).parent / "jupyter"
    done = subprocess.run([str(jupyter), "server", "extension", "list"], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    assert any("mlops_magics.server_extension" in line and "enabled" in line for line in lines), lines
    assert any("mlops_magics.server_extension" in line and "OK" in line for line in lines), lines


def test_report_summaries_read_the_reports_as_stored() -> None:
    """The one-line summaries (sidebar and model browser) read each kind of report as the code stores it."""
    from mlops_magics.onnx.report import OnnxReport, Parity, Speed

    onnx = OnnxReport(source="iris:1", converter="skl2onnx", opset=17, quantized=None,
                      parity=Parity("classifier", 150, 1.0, 1e-7, None, True, {"atol": 1e-3}),
                      speed=Speed(100.0, 150.0, 25.0, 40.0, 1000, 2e5, 5e5)).as_dict()
    assert payloads.report_summary("onnx", onnx) == ("from iris:1 (skl2onnx, opset 17): parity passed on 150 rows; "
                                                  "single row 4.0x, batch 2.5x the original")
    validation = {"passed": False, "at": "2026-11-22", "checks": [{"check": "accuracy>=0.9", "passed": False}]}
    assert payloads.report_summary("validation", validation) == "FAILED (FAIL accuracy>=0.9) at 2026-11-22"
    assert payloads.report_summary("other", {"a": 1}) == '{"a": 1}'


async def _run_in_kernel(jp_serverapp: Any, code: str) -> str:
    """Start a real kernel in the server's kernel manager (as JupyterLab does), run ``code``; its kernel id."""
    manager = jp_serverapp.kernel_manager
    kernel_id = await manager.start_kernel(kernel_name="python3")
    client = manager.get_kernel(kernel_id).client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        reply = await client.execute_interactive(code, timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        client.stop_channels()
    return str(kernel_id)


async def test_a_kernels_registry_is_listed_and_every_route_reads_it(jp_fetch: Any, jp_serverapp: Any,
                                                                     models: Registry, tmp_path: Any) -> None:
    """A notebook's kernel points MLOPS_HOME at its own folder and registers a model: the server says which
    registry that kernel uses, and every route reads that registry when asked to (the default stays the
    default)."""
    own = tmp_path / "notebook-07" / "mlops-home"
    code = (f"import os; os.environ['MLOPS_HOME'] = {str(own)!r}\n"
            "import mlops_magics as mm; mm.register({'w': 1}, 'alpha'); mm.register({'w': 2}, 'alpha')")
    kernel = await _run_in_kernel(jp_serverapp, code)
    try:
        listed = await _get(jp_fetch, "registries")
        assert listed["default"]["home"] == str(models.home)
        assert listed["kernels"][kernel] == str(own)
        (entry,) = [r for r in listed["registries"] if r["home"] == str(own)]
        assert entry["kernels"] == [kernel] and entry["default"] is False and entry["label"].endswith("mlops-home")
        assert any(r["home"] == str(models.home) and r["default"] for r in listed["registries"])

        found = await _get(jp_fetch, "models", registry=str(own))
        assert [(m["name"], [v["version"] for v in m["versions"]]) for m in found] == [("alpha", [2, 1])]
        assert [m["name"] for m in await _get(jp_fetch, "models")] == ["iris", "wine"], "the default is unchanged"
        assert (await _get(jp_fetch, "models", "alpha", "versions", "2", registry=str(own)))["version"] == 2
        assert await _get(jp_fetch, "deployments", registry=str(own)) == []
        assert (await _get(jp_fetch, "health", registry=str(own)))["registry"] == str(own)
        code, body = await _error(jp_fetch, "models", "alpha", "versions", "2")
        assert code == 404 and "alpha" in body["message"], "not in the default registry"
    finally:
        await jp_serverapp.kernel_manager.shutdown_kernel(kernel, now=True)


async def test_a_registry_that_is_not_one_is_refused_saying_why(jp_fetch: Any, models: Registry,
                                                                tmp_path: Any) -> None:
    plain = tmp_path / "not-a-registry"
    plain.mkdir()
    for route in (("models",), ("deployments",), ("models", "iris", "versions", "1"), ("health",)):
        code, body = await _error(jp_fetch, *route, registry=str(plain))
        assert code == 404 and body["reason"] == "NotFoundError", route
        assert f"registry='{plain}' is not a registry" in body["message"]
        assert str(models.home) in body["message"], "it lists the registries in use"
    assert list(plain.iterdir()) == [], "nothing was created there"
    code, body = await _error(jp_fetch, "models", registry=str(tmp_path / "missing"))
    assert code == 404 and not (tmp_path / "missing").exists()
    code, body = await _error(jp_fetch, "models", registry="relative/home")
    assert code == 400 and "'relative/home' is not an absolute path" in body["message"]
    code, body = await _error(jp_fetch, "deployments", "svc", method="DELETE", registry=str(plain))
    assert code == 404 and "is not a registry" in body["message"]


async def test_each_registry_answers_304_on_its_own(jp_fetch: Any, models: Registry, tmp_path: Any) -> None:
    """The sidebar polls the registry it shows: each registry's listing has its own ETag; a change in one
    is seen there and does not disturb the other's 304."""
    other = Registry(tmp_path / "other")
    mm.register({"w": 1}, "beta", registry=other)

    async def poll(etag: str, **params: Any) -> int:
        try:
            answer = await jp_fetch("mlops", "api", "models", headers={"If-None-Match": etag}, params=params)
        except tornado.httpclient.HTTPClientError as exc:
            return int(exc.code)
        return int(answer.code)

    first = (await jp_fetch("mlops", "api", "models")).headers["Etag"]
    second = (await jp_fetch("mlops", "api", "models", params={"registry": str(other.home)})).headers["Etag"]
    assert first != second
    assert await poll(first) == 304 and await poll(second, registry=str(other.home)) == 304
    mm.register({"w": 2}, "beta", registry=other)
    assert await poll(second, registry=str(other.home)) == 200 and await poll(first) == 304
