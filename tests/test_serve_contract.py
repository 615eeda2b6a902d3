"""The scoring server's HTTP contract, black-box: real mlops-serve processes on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.serving import SCRIPTS, Served, raw_headers, serving, start

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Served]]:
    """``server('echo.py', *args)``: one running server per (script, args) for this module."""
    from contextlib import ExitStack

    logs = tmp_path_factory.mktemp("serve-logs")
    running: dict[tuple[str, ...], Served] = {}
    with ExitStack() as stack:
        def get(script: str, *args: str, env: dict[str, str] | None = None) -> Served:
            key = (script, *args, *sorted((env or {}).items()))  # type: ignore[arg-type]
            if key not in running:
                running[key] = stack.enter_context(serving(script, *args, logs=logs, env=env))
            return running[key]

        yield get


# -- routes ----------------------------------------------------------------------------------

def test_liveness_says_healthy(server: Callable[..., Served]) -> None:
    reply = server("echo.py").request("GET", "/")
    assert (reply.status, reply.body) == (200, b"Healthy")


def test_readiness_and_unknown_routes_and_methods(server: Callable[..., Served]) -> None:
    s = server("echo.py")
    assert (s.request("GET", "/ready").status, s.request("GET", "/ready").json()) == (200, {"status": "ready"})
    missing = s.request("GET", "/nope")
    assert missing.status == 404 and "No route '/nope'" in missing.message
    for method in ("PUT", "DELETE", "PATCH"):
        reply = s.request(method, "/score", "x")
        assert reply.status == 405 and reply.message == "The method is not allowed for the requested URL."  # Azure's
        assert reply.headers["allow"] == "GET, POST, OPTIONS"
    for path in ("/", "/swagger.json", "/ready", "/metrics", "/swagger-mlops.json"):
        other = s.request("POST", path, "x")
        assert (other.status, other.message) == (405, "The method is not allowed for the requested URL."), path
    options = s.request("OPTIONS", "/score")
    assert (options.status, options.body) == (200, b"")


# -- undecorated run(data) -------------------------------------------------------------------

def test_post_body_is_passed_as_a_string_and_the_result_json_encoded_again(server: Callable[..., Served]) -> None:
    reply = server("echo.py").request("POST", "/score", '{"a": 1}', {"Content-Type": "application/json"})
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    assert json.loads(reply.body) == '{"a": 1}'  # a returned string is encoded again, as Azure does
    assert reply.headers["x-ms-run-function-failed"] == "False"
    assert float(reply.headers["x-ms-run-fn-exec-ms"]) >= 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream",
                                          "application/x-www-form-urlencoded", None])
def test_the_body_reaches_run_whatever_the_content_type(server: Callable[..., Served],
                                                        content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    reply = server("echo.py").request("POST", "/score", "a=1&b=é", headers)
    assert reply.json() == "a=1&b=é"


def test_a_non_utf8_body_is_a_400(server: Callable[..., Served]) -> None:
    reply = server("echo.py").request("POST", "/score", b"\xff\xfe", {"Content-Type": "application/octet-stream"})
    assert reply.status == 400 and reply.message.startswith("Input cannot be decoded as UTF-8")


def test_get_passes_the_query_as_a_json_object_string(server: Callable[..., Served]) -> None:
    reply = server("json_echo.py").request("GET", "/score?a=1&b=x&c=%5B1,2%5D&a=2&d=null")
    assert reply.json() == {"received": {"a": [1, 2], "b": "x", "c": [1, 2], "d": None}, "type": "dict"}


# -- inference_schema decorated run ----------------------------------------------------------

def test_numpy_schema_maps_json_keys_to_parameters(server: Callable[..., Served]) -> None:
    s = server("numpy_schema.py")
    assert s.post_json("/score", {"data": [[1, 2, 3], [4, 5, 6]]}).json() == [12.0, 30.0]
    assert s.post_json("/score", {"data": [[1, 2, 3]], "scale": 10, "ignored": True}).json() == [60.0]


def test_pandas_schema_builds_a_dataframe(server: Callable[..., Served]) -> None:
    frame = {"age": [30, 40], "income": [5000.0, 7000.0], "city": ["Lyon", "Oslo"]}
    reply = server("pandas_schema.py").post_json("/score", {"frame": frame})
    assert reply.json() == {"rows": 2, "mean_income": 6000.0, "cities": ["Lyon", "Oslo"]}


def test_standard_schema_with_request_headers(server: Callable[..., Served]) -> None:
    reply = server("standard_schema.py").post_json("/score", {"text": "ab", "repeat": 3}, {"X-Suffix": "!"})
    assert reply.json() == "ababab!"


def test_schema_get_reads_parameters_from_the_query(server: Callable[..., Served]) -> None:
    assert server("numpy_schema.py").request("GET", "/score?data=%5B%5B1,1,1%5D%5D").json() == [6.0]


@pytest.mark.parametrize("body, content_type, status, message", [
    ('{"data": [[1, 2, 3]]}', "text/plain", 415, "Expects Content-Type to be application/json"),
    ("", "application/json", 400, "POST body is empty. Expecting a JSON dictionary."),
    ("{nope", "application/json", 400, "POST body could not be decoded as JSON"),
    ("[1, 2]", "application/json", 400, "POST body should be a JSON dictionary."),
    ('{"scale": 1}', "application/json", 400, "A value is not provided for the 'data' parameter."),
])
def test_schema_input_errors_are_4xx_with_a_message(server: Callable[..., Served], body: str, content_type: str,
                                                    status: int, message: str) -> None:
    reply = server("numpy_schema.py").request("POST", "/score", body, {"Content-Type": content_type})
    assert reply.status == status and reply.message.startswith(message)
    assert reply.headers["x-ms-run-function-failed"] == "False"
    assert reply.headers["x-ms-run-fn-exec-ms"] == "0.000"  # every /score answer carries it; run() never ran


def test_json_with_charset_and_vendor_json_types_are_accepted(server: Callable[..., Served]) -> None:
    s = server("numpy_schema.py")
    for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
        assert s.request("POST", "/score", '{"data": [[1, 2, 3]]}', {"Content-Type": content_type}).status == 200


# -- request headers, raw HTTP, AMLResponse --------------------------------------------------

def test_request_headers_reach_run_with_their_usual_names(server: Callable[..., Served]) -> None:
    reply = server("headers.py").request("POST", "/score", "x", {"X-Custom-Thing": "v1", "Content-Type": "text/plain"})
    body = reply.json()
    assert body["data"] == "x"
    assert body["headers"]["X-Custom-Thing"] == "v1" and body["headers"]["Content-Type"] == "text/plain"


def test_rawhttp_gets_binary_bodies_method_and_args(server: Callable[..., Served]) -> None:
    s = server("rawhttp_script.py")
    payload = bytes(range(256))
    reply = s.request("POST", "/score", payload, {"Content-Type": "application/octet-stream"})
    assert reply.json() == {"method": "POST", "length": 256, "first": "00", "content_type": "application/octet-stream"}
    reversed_ = s.request("POST", "/score", payload, {"Content-Type": "application/octet-stream", "X-Want": "bytes"})
    assert reversed_.body == payload[::-1] and reversed_.headers["content-type"] == "application/octet-stream"
    got = s.request("GET", "/score?x=1&x=2&y=z").json()
    assert got == {"method": "GET", "args": {"x": ["1", "2"], "y": ["z"]}, "path": "/score"}


def test_rawhttp_parses_multipart_forms_and_files(server: Callable[..., Served]) -> None:
    boundary = "xyzBOUNDARYxyz"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'.encode(),
        (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="cat.png"\r\n'
         "Content-Type: image/png\r\n\r\n").encode() + b"\x89PNG" + b"\x00" * 96 + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    reply = server("rawhttp_script.py").request(
        "POST", "/score", b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert reply.json() == {"form": {"note": "hello"},
                            "files": {"image": {"filename": "cat.png", "size": 100, "type": "image/png"}}}


def test_the_newer_azureml_inference_server_http_import_paths_work(server: Callable[..., Served]) -> None:
    reply = server("new_import_path.py").request("POST", "/score", "shout")
    assert (reply.status, reply.body) == (200, b"SHOUT")


@pytest.mark.parametrize("data, status, body, headers", [
    ("created", 201, b'{"id": 7}', {"location": "/items/7", "content-type": "application/json"}),
    ("teapot", 418, b"short and stout", {"content-type": "text/plain"}),
    ("empty", 200, b"{}", {"content-type": "application/json"}),
    ("bytes", 200, b"\x00\x01\x02", {"content-type": "application/octet-stream"}),
])
def test_aml_response_sets_status_headers_and_body(server: Callable[..., Served], data: str, status: int,
                                                   body: bytes, headers: dict[str, str]) -> None:
    reply = server("aml_response.py").request("POST", "/score", data)
    assert (reply.status, reply.body) == (status, body)
    for name, value in headers.items():
        assert reply.headers[name] == value
    assert reply.headers["x-ms-run-function-failed"] == "False"
    assert "x-ms-run-fn-exec-ms" in reply.headers


def test_aml_response_repeats_comma_separated_headers_and_flags_5xx(server: Callable[..., Served]) -> None:
    s = server("aml_response.py")
    conn_reply = s.request("POST", "/score", "created")
    assert conn_reply.headers["x-multi"] in ("a, b", "b")  # http.client folds repeated headers
    failed = s.request("POST", "/score", "unavailable")
    assert (failed.status, failed.body) == (503, b"try later")
    assert failed.headers["x-ms-run-function-failed"] == "True"


# -- models ----------------------------------------------------------------------------------

def test_get_model_path_resolves_two_models(server: Callable[..., Served], tmp_path_factory: pytest.TempPathFactory
                                            ) -> None:
    root = tmp_path_factory.mktemp("azureml-models")
    for name, version, text in (("first", 1, "one"), ("second", 1, "two-old"), ("second", 2, "two-new")):
        (root / name / str(version)).mkdir(parents=True)
        (root / name / str(version) / "model.txt").write_text(text)
    reply = server("two_models.py", "--model_dir", str(root)).request("POST", "/score", "")
    assert reply.json() == {"first": "one", "second": "two-new", "second_latest": "two-new", "root": str(root)}


def test_an_sklearn_model_loaded_with_joblib_from_the_model_dir(
    server: Callable[..., Served], tmp_path_factory: pytest.TempPathFactory, iris_lr: object, iris: tuple
) -> None:
    import joblib

    folder = tmp_path_factory.mktemp("model")
    joblib.dump(iris_lr, folder / "model.pkl")
    X, _ = iris
    reply = server("sklearn_model.py", "--model_dir", str(folder)).post_json("/score", {"data": X[:5].tolist()})
    assert reply.json() == iris_lr.predict(X[:5]).tolist()  # type: ignore[attr-defined]


# -- failures --------------------------------------------------------------------------------

def test_a_run_exception_is_a_500_flagged_as_run_failure(server: Callable[..., Served]) -> None:
    s = server("raising.py")
    reply = s.request("POST", "/score", "x")
    assert reply.status == 500
    assert reply.message == "An unexpected error occurred in scoring script. Check the logs for more info."
    assert reply.headers["x-ms-run-function-failed"] == "True"
    assert float(reply.headers["x-ms-run-fn-exec-ms"]) >= 0
    assert "ValueError: cannot score 'x'" in s.log()


def test_verbose_errors_put_the_exception_in_the_message(server: Callable[..., Served]) -> None:
    reply = server("raising.py", "--verbose-errors").request("POST", "/score", "x")
    assert reply.status == 500 and reply.message.endswith("ValueError: cannot score 'x'")


def test_an_unencodable_result_is_a_500_saying_so(server: Callable[..., Served]) -> None:
    reply = server("raising.py").request("POST", "/score", "bad-output")
    assert reply.status == 500 and "cannot be encoded as JSON" in reply.message
    assert reply.headers["x-ms-run-function-failed"] == "True"


def test_the_scoring_timeout_gives_a_500_naming_the_limit_and_the_server_recovers(
    server: Callable[..., Served]
) -> None:
    s = server("slow.py", env={"SCORING_TIMEOUT_MS": "300"})
    reply = s.request("POST", "/score", "slow")
    assert reply.status == 500 and reply.message == "Scoring timeout after 300 ms"
    assert reply.headers["x-ms-run-function-failed"] == "True"
    assert s.request("POST", "/score", "fast").json() == "done"


# -- request ids -----------------------------------------------------------------------------

def test_request_ids_are_echoed_or_generated(server: Callable[..., Served]) -> None:
    s = server("echo.py")
    generated = s.request("POST", "/score", "x")
    assert len(generated.headers["x-request-id"]) == 36
    assert generated.headers["x-ms-request-id"] == generated.headers["x-request-id"]
    assert "x-ms-client-request-id" not in generated.headers
    given = s.request("POST", "/score", "x", {"x-request-id": "rid", "x-ms-client-request-id": "abc"})
    assert (given.headers["x-request-id"], given.headers["x-ms-request-id"],
            given.headers["x-ms-client-request-id"]) == ("rid", "abc", "abc")
    legacy = s.request("POST", "/score", "x", {"x-ms-request-id": "legacy"})
    assert (legacy.headers["x-ms-request-id"], legacy.headers["x-ms-client-request-id"]) == ("legacy", "legacy")
    traced = s.request("GET", "/", headers={"TraceId": "t-1"})
    assert traced.headers["traceid"] == "t-1"


@pytest.mark.parametrize("header", ["x-request-id", "x-ms-client-request-id", "x-ms-request-id"])
def test_a_request_id_over_100_characters_is_a_431(server: Callable[..., Served], header: str) -> None:
    reply = server("echo.py").request("POST", "/score", "x", {header: "a" * 101})
    assert reply.status == 431 and "must not exceed 100 characters" in reply.message


# -- swagger ---------------------------------------------------------------------------------

def test_swagger_is_built_from_the_schema_in_every_version(server: Callable[..., Served]) -> None:
    s = server("numpy_schema.py")
    v2 = s.request("GET", "/swagger.json").json()
    assert v2["swagger"] == "2.0"
    assert v2["definitions"]["ServiceInput"]["properties"]["data"]["type"] == "array"
    assert v2["definitions"]["ServiceInput"]["example"] == {"data": [[1.0, 2.0, 3.0]], "scale": 1.0}
    for version, openapi in (("3", "3.0.3"), ("3.0", "3.0.3"), ("3.1", "3.1.0")):
        doc = s.request("GET", f"/swagger.json?version={version}").json()
        assert doc["openapi"] == openapi
        assert doc["components"]["schemas"]["ServiceOutput"]["type"] == "array"
    bad = s.request("GET", "/swagger.json?version=9")
    assert bad.status == 404 and "Swagger version [9] is not valid" in bad.message


def test_undecorated_scripts_get_a_generic_swagger(server: Callable[..., Served]) -> None:
    doc = server("echo.py").request("GET", "/swagger.json?version=3").json()
    assert doc["components"]["schemas"]["ServiceInput"] == {"type": "object", "example": {}}
    assert "/score" in doc["paths"] and "/" in doc["paths"]


def test_a_swagger_file_of_the_app_is_served_as_azmlinfsrv_serves_it(tmp_path: Path) -> None:
    app, scripts = tmp_path / "app", tmp_path / "app" / "src"
    scripts.mkdir(parents=True)
    (scripts / "score.py").write_text("def init():\n    pass\n\ndef run(data):\n    return data\n")
    (scripts / "swagger.json").write_text('{"swagger":"2.0","info":{"title":"beside the script"}}')
    (scripts / "swagger3.json").write_text('{"openapi":"3.0.3",\n "info":{"title":"mine"}}')
    (app / "swagger.json").write_text('{"swagger": "2.0", "info": {"title": "app root"}}')
    with serving(scripts / "score.py", logs=tmp_path / "logs", cwd=app) as s:  # the app root: where it started
        assert s.request("GET", "/swagger.json").body == b'{"swagger": "2.0", "info": {"title": "app root"}}'
        # parsed and written again, as azmlinfsrv does (json.dumps); found beside the script when the root has none
        assert s.request("GET", "/swagger.json?version=3").body == b'{"openapi": "3.0.3", "info": {"title": "mine"}}'
        assert s.request("GET", "/swagger-mlops.json").json()["info"]["title"] == "ML service"  # ours: generated
    (app / "swagger.json").write_text("{not json")
    broken = start(scripts / "score.py", logs=tmp_path / "logs", cwd=app)
    assert broken.process.wait(30) == 3
    assert f"The swagger file {app / 'swagger.json'} cannot be served" in broken.log()


# -- as azmlinfsrv does (issue 22) -----------------------------------------------------------

def test_the_working_directory_is_where_the_server_was_started(tmp_path: Path) -> None:
    with serving(SCRIPTS / "source_directory" / "x" / "y" / "score.py", logs=tmp_path, cwd=SCRIPTS) as s:
        reply = s.post_json("/score", {})
    assert reply.json() == {"extra": {"labels": ["setosa", "versicolor", "virginica"]}, "cwd": str(SCRIPTS)}


def test_options_reaches_a_rawhttp_run(server: Callable[..., Served]) -> None:
    reply = server("rawhttp_script.py").request("OPTIONS", "/score")
    assert reply.status == 200
    assert reply.json() == {"method": "OPTIONS", "length": 0, "first": "", "content_type": None}
    assert "x-ms-run-fn-exec-ms" in reply.headers  # run() ran
    assert server("echo.py").request("OPTIONS", "/score").body == b""  # not @rawhttp: answered by the server


def test_a_cors_preflight_is_answered_by_the_server_even_for_rawhttp(server: Callable[..., Served]) -> None:
    s = server("rawhttp_script.py", env={"AML_CORS_ORIGINS": "https://app.example"})
    reply = s.request("OPTIONS", "/score", headers={"Origin": "https://app.example",
                                                    "Access-Control-Request-Method": "POST"})
    assert (reply.status, reply.body) == (200, b"")
    assert reply.headers["access-control-allow-origin"] == "https://app.example"


def test_run_returning_none_answers_an_empty_object(server: Callable[..., Served]) -> None:
    reply = server("response_headers.py").request("POST", "/score", "none")
    assert (reply.status, reply.body, reply.headers["content-type"]) == (200, b"{}", "application/json")


def test_a_scripts_headers_keep_the_request_ids_and_send_the_run_flag_once(server: Callable[..., Served]) -> None:
    s = server("response_headers.py")
    _, ids, body = raw_headers(s, "POST", "/score", "ids", {"x-request-id": "mine"})
    assert body == b"ids"
    assert [v for k, v in ids if k == "x-request-id"] == ["mine"]  # the client's, not the script's "A, x"
    assert [v for k, v in ids if k == "x-ms-request-id"] == ["mine"]
    assert [v for k, v in ids if k == "x-ms-client-request-id"] == ["C"]  # the client sent none: the script's
    _, sent, _ = raw_headers(s, "POST", "/score", "ids", {"x-ms-client-request-id": "client"})
    assert [v for k, v in sent if k == "x-ms-client-request-id"] == ["client"]
    for data, status, flag in (("flag", 200, "custom"), ("flag-500", 500, "True"), ("x", 200, "False")):
        code, headers, _ = raw_headers(s, "POST", "/score", data)
        assert code == status and [v for k, v in headers if k == "x-ms-run-function-failed"] == [flag], data
    for data in ("content-type", "lowercase-content-type"):  # one content type, the script's
        _, headers, _ = raw_headers(s, "POST", "/score", data)
        assert [v for k, v in headers if k == "content-type"] == ["text/plain"], data


def test_swagger_json_is_azures_document_and_ours_is_separate(server: Callable[..., Served]) -> None:
    s = server("numpy_schema.py")
    v2 = s.request("GET", "/swagger.json").json()
    assert (v2["schemes"], v2["consumes"], v2["produces"]) == (["https"], ["application/json"], ["application/json"])
    assert v2["info"]["description"] == "API specification for the Azure Machine Learning service ML service"
    assert v2["paths"]["/"]["get"]["responses"]["200"]["examples"] == {"application/json": "Healthy"}
    assert set(v2["paths"]) == {"/", "/score", "/swagger.json"} and "get" not in v2["paths"]["/score"]
    assert "required" not in v2["definitions"]["ServiceInput"]  # inference_schema's schema, as it generates it
    v3 = s.request("GET", "/swagger.json?version=3").json()
    assert v3["security"] == [{"Bearer": []}] and v3["openapi"] == "3.0.3"
    ours = s.request("GET", "/swagger-mlops.json?version=3").json()
    assert {"/ready", "/metrics", "/swagger-mlops.json"} <= set(ours["paths"]) and "get" in ours["paths"]["/score"]
    assert ours["components"]["schemas"]["ServiceInput"]["required"] == ["data"]
    assert s.request("GET", "/swagger-mlops.json?version=9").status == 404
