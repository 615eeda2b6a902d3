"""Our OpenAPI document is the truth: schemathesis generates requests from it against a real server.

A decorated entry script (inference-schema) runs in a real mlops-serve on 127.0.0.1; schemathesis
loads its ``/swagger-mlops.json`` (OpenAPI 3: what the server does; ``/swagger.json`` is Azure ML's
document, served as azmlinfsrv serves it, which says ``text/plain`` where the servers answer
``text/html`` and has no ``GET /score``) and, for every operation, sends requests built from the
schema and checks that none gets a 5xx, and that statuses, content types and bodies conform to
the document. Bounded: a few examples per operation, no deadline, seconds in all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.serving import Served, serving

pytestmark = pytest.mark.serve

SCRIPT = '''
import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    pass


@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0, 3.0]])))
@input_schema("label", StandardPythonParameterType("iris"))
@input_schema("scale", StandardPythonParameterType(1.0))
@output_schema(StandardPythonParameterType({"rows": 1, "label": "iris", "scale": 1.0}))
def run(data, label, scale=1.0, request_headers=None):
    return {"rows": int(data.shape[0]), "label": label, "scale": scale}
'''
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("openapi")
    (folder / "score.py").write_text(SCRIPT)
    with serving(folder / "score.py", "--no-access-log", logs=folder / "logs") as served:
        yield served


def test_our_document_marks_required_inputs_and_lists_get_score_and_our_routes(server: Served) -> None:
    for version in ("2", "3", "3.1"):
        doc = server.request("GET", f"/swagger-mlops.json?version={version}").json()
        assert {"/", "/score", "/swagger.json", "/swagger-mlops.json", "/ready", "/metrics"} == set(doc["paths"])
        azure = server.request("GET", f"/swagger.json?version={version}").json()
        assert set(azure["paths"]) == {"/", "/score", "/swagger.json"}  # Azure's document: Azure's routes only
        if version == "3.1":
            continue
        schemas = doc["definitions"] if version == "2" else doc["components"]["schemas"]
        service_input = schemas["ServiceInput"]
        assert service_input["required"] == ["data", "label"]  # scale has a default
        assert "request_headers" not in service_input["properties"]  # filled from the headers, not the body
        assert "request_headers" not in service_input["example"]
        get = doc["paths"]["/score"]["get"]
        assert {p["name"]: p["required"] for p in get["parameters"]} == {"data": True, "label": True, "scale": False}
    missing = server.post_json("/score", {"data": [[1.0, 2.0, 3.0]]})
    assert missing.status == 400 and "'label'" in missing.message  # what "required" promises


def test_generated_requests_get_no_5xx_and_conforming_answers(server: Served) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/swagger-mlops.json?version=3")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} >= {("GET", "/score"), ("POST", "/score"), ("GET", "/"),
                                                                        ("GET", "/ready"), ("GET", "/metrics")}
    for operation in operations:
        _exercise(server, operation.as_strategy(GenerationMode.POSITIVE), CHECKS)
        if operation.path == "/score":  # inputs that break the schema: answered (4xx), never a 5xx
            _exercise(server, operation.as_strategy(GenerationMode.NEGATIVE), CHECKS)
    assert "unexpected server error" not in server.log()


def _exercise(server: Served, cases: Any, checks: list[Any]) -> None:
    @settings(max_examples=15, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck), database=None)
    @given(case=cases)
    def check(case: Any) -> None:
        case.call_and_validate(base_url=server.url, checks=checks, timeout=10)

    check()


def test_a_wrong_type_for_an_input_is_a_400_naming_the_parameter(server: Served, tmp_path: Path) -> None:
    for body, name, expected in (({"data": [[1.0, 2.0, 3.0]], "label": "x", "scale": {}}, "scale", "a number"),
                                 ({"data": "not an array", "label": "x"}, "data", "an array of arrays of numbers"),
                                 ({"data": [[1.0, 2.0]], "label": "x"}, "data", "shape (n, 3)")):
        reply = server.post_json("/score", body)
        assert reply.status == 400, reply.body
        assert reply.message.startswith(f"Invalid value for the '{name}' parameter: expected ")
        assert expected in reply.message
        assert reply.headers["x-ms-run-function-failed"] == "False"
    query = server.request("GET", "/score?data=%22text%22&label=%22x%22")
    assert query.status == 400 and "'data' parameter" in query.message
