"""Local deployments: real mlops-serve processes started, called, reloaded, updated and stopped."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from IPython.core.error import UsageError

import mlops_magics as mm
from mlops_magics import api
from mlops_magics.errors import ConflictError, DeployError, MlopsError, NotFoundError
from mlops_magics.registry import Registry
from mlops_magics.targets.process import alive as _alive
from mlops_magics.targets.process import is_listening

pytestmark = pytest.mark.serve

ECHO = "import json\n\ndef init():\n    pass\n\ndef run(data):\n    return {'echo': json.loads(data), 'v': 1}\n"


@pytest.fixture
def clean(registry: Registry) -> Iterator[Registry]:
    """The test's registry; every deployment it made is stopped afterwards."""
    yield registry
    mm.undeploy(all_services=True)


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", "/score", body, headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_deploy_call_list_and_undeploy_with_the_generated_script(clean: Registry, iris_lr: Any,
                                                                   iris: Any) -> None:
    X, _ = iris
    mm.register(iris_lr, "iris", sample=X[:3])
    d = mm.deploy("iris")
    assert (d.name, d.model_version, d.state, d.target) == ("iris", 1, "running", "local")
    pid = int(d.config["pid"])
    assert _alive(pid) and os.getsid(pid) != os.getsid(0)  # its own session: it outlives the kernel
    assert is_listening(pid, int(d.config["port"]))
    assert mm.call("iris", X[:5]) == iris_lr.predict(X[:5]).tolist()
    assert [(x.name, x.state) for x in mm.list_deployments()] == [("iris", "running")]
    status, body = _post(d.url, b'{"data": [[1, 2]]}')  # type: ignore[arg-type]
    assert status == 400 and "expected rows of 4 numbers, got shape [1, 2]" in body["message"]
    assert mm.undeploy("iris") == ["iris"]
    assert not _alive(pid)
    assert mm.undeploy("iris") == ["iris"]  # idempotent
    assert mm.list_deployments() == [] and mm.list_deployments().hidden == 1  # deleted: left out by default
    assert [(x.name, x.state) for x in mm.list_deployments(include_deleted=True)] == [("iris", "deleted")]


def test_a_dataframe_model_is_called_with_a_dataframe(clean: Registry, iris: Any) -> None:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    frame = pd.DataFrame(X, columns=["sl", "sw", "pl", "pw"])
    model = LogisticRegression(max_iter=300).fit(frame, y)
    mm.register(model, "frame", sample=frame[:3])
    mm.deploy("frame")
    assert mm.call("frame", frame[:4]) == model.predict(frame[:4]).tolist()
    with pytest.raises(MlopsError) as missing:
        mm.call("frame", frame[["sl", "sw", "pl"]][:2])
    assert str(missing.value) == (
        "Service 'frame' answered 400: Bad input: got 2 rows x 3 named columns, missing 'pw'; expected 4 named "
        "columns: 'sl', 'sw', 'pl', 'pw'. Send records, e.g. {\"data\": [{\"sl\": ..., ...}]}.")
    with pytest.raises(MlopsError) as unnamed:  # rows as lists: what came, what is expected, said once
        mm.call("frame", {"data": [[5.0, 3.4, 1.5, 0.2, 9.9], [5.0, 3.4, 1.5, 0.2, 9.9]]})
    assert str(unnamed.value) == (
        "Service 'frame' answered 400: Bad input: got 2 rows x 5 unnamed columns; expected 4 named columns: 'sl', "
        "'sw', 'pl', 'pw'. Send records, e.g. {\"data\": [{\"sl\": ..., ...}]}.")
    with pytest.raises(MlopsError, match=r"answered 400: Bad input: 'data'. Send \{\"data\": ROWS\}\.$"):
        mm.call("frame", {"rows": []})  # not the body's form: say the form


def test_a_failing_init_fails_the_deploy_with_the_cell_line_and_leaves_nothing_running(
    clean: Registry, iris_lr: Any, ip: Any
) -> None:
    ip.user_ns["clf"] = iris_lr
    ip.run_line_magic("register", "clf --name broken")
    ip.run_cell_magic("score_script", "broken", "def init():\n    raise RuntimeError('no model here')\n\n"
                                                "def run(data):\n    return data\n")
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic("deploy", "broken")
    message = str(caught.value)
    assert "Deployment 'broken' of broken:1 failed: the server exited with status 3" in message
    assert "score script cell, line 3" in message and "RuntimeError: no model here" in message
    failed = clean.get_deployment("broken")
    assert failed.state == "failed" and failed.config["pid"] is None


def test_run_errors_come_back_from_call_with_the_exception(clean: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "raiser")
    mm.set_score_script("raiser", "def init():\n    pass\n\ndef run(data):\n    raise KeyError('feature_x')\n",
                        line_offset=1)
    mm.deploy("raiser")
    with pytest.raises(MlopsError, match=r"answered 500: .*KeyError: 'feature_x'"):
        mm.call("raiser", [1])
    assert "score script cell, line 6, in run" in mm.logs("raiser")


def test_the_server_runs_in_the_app_root_so_relative_paths_find_the_assets(clean: Registry, iris_lr: Any,
                                                                            tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text('["setosa", "versicolor", "virginica"]')
    mm.register(iris_lr, "assets")
    mm.set_score_script("assets", "import json, os\n\ndef init():\n    global labels\n"
                        "    labels = json.load(open('labels.json'))\n\n"
                        "def run(data):\n    return {'labels': labels, 'cwd': os.path.basename(os.getcwd())}\n",
                        assets=[tmp_path / "labels.json"])
    d = mm.deploy("assets")
    assert mm.call("assets", [1]) == {"labels": ["setosa", "versicolor", "virginica"], "cwd": "app"}
    assert Path(d.config["folder"], "app", "labels.json").exists()  # the app root, where the server started


def test_reload_serves_the_edited_script_at_the_same_address(clean: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "svc")
    mm.set_score_script("svc", ECHO, line_offset=1)
    first = mm.deploy("svc")
    assert mm.call("svc", {"x": 1}) == {"echo": {"x": 1}, "v": 1}
    mm.set_score_script("svc", ECHO.replace("'v': 1", "'v': 2"), line_offset=1)
    second = mm.reload("svc")
    assert second.url == first.url and second.config["pid"] != first.config["pid"]
    assert mm.call("svc", {"x": 1}) == {"echo": {"x": 1}, "v": 2}
    assert not is_listening(int(first.config["pid"]), int(first.config["port"]))  # it takes no new requests
    deadline = time.monotonic() + 15  # and drains, exits and is cleaned up in the background
    while (_alive(int(first.config["pid"])) or Path(first.config["folder"]).exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(int(first.config["pid"]))
    assert not Path(first.config["folder"]).exists()


def test_update_switches_versions_and_a_failed_update_keeps_the_old_one(clean: Registry, iris_lr: Any,
                                                                        iris_tree: Any, iris: Any) -> None:
    X, _ = iris
    mm.register(iris_lr, "two", sample=X[:2])
    mm.register(iris_tree, "two", sample=X[:2])
    mm.deploy("two:1")
    assert mm.call("two", X[:150]) == iris_lr.predict(X).tolist()
    updated = mm.update("two", "two:2")
    assert updated.model_version == 2 and mm.call("two", X[:150]) == iris_tree.predict(X).tolist()
    mm.set_score_script("two:1", "def init():\n    raise ValueError('bad')\n\ndef run(data):\n    return 0\n")
    with pytest.raises(DeployError, match="ValueError: bad"):
        mm.update("two", "two:1")
    assert mm.call("two", X[:3]) == iris_tree.predict(X[:3]).tolist()  # still served by version 2
    assert clean.get_deployment("two").model_version == 2


def test_auth_keys_are_required_and_sent_by_call(clean: Registry, iris_lr: Any, iris: Any) -> None:
    X, _ = iris
    mm.register(iris_lr, "secure", sample=X[:2])
    d = mm.deploy("secure", auth=True)
    assert d.auth_key and len(d.auth_key) > 20
    assert mm.call("secure", X[:2]) == iris_lr.predict(X[:2]).tolist()
    assert _post(d.url, b'{"data": [[1, 2, 3, 4]]}')[0] == 401  # type: ignore[arg-type]


def test_calling_an_undeployed_service_says_since_when_and_how_to_deploy_it_again_without_connecting(
        clean: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris")
    with socket.socket() as listener:  # where the record says it was: nothing may connect
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        clean.record_deployment("wine", "iris:1", target="local", state="deleted", url=url,
                                config={"collect": True, "sample_rate": 1.0, "workers": 2})
        undeployed = clean.get_deployment("wine").updated_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        with pytest.raises(ConflictError) as deleted:
            mm.call("wine", [[5.1, 3.5, 1.4, 0.2]])
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert str(deleted.value) == (f"Service 'wine' was undeployed on {undeployed} (it served iris:1 on local). Deploy "
                                  "it again with %deploy iris:1 --name wine --workers 2 --collect.")


def test_calling_a_service_whose_server_stopped_says_so_and_records_it(clean: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, never listening: refused
        clean.record_deployment("iris", "iris:1", target="local", state="running", url=url, config={"pid": None})
        with pytest.raises(ConflictError, match=r"^Service 'iris' is not running: its server stopped \(found so on "
                                                r"[-0-9 :]+; it served iris:1 on local\)\. %logs iris shows how it "
                                                r"ended\. Deploy it again with %deploy iris:1\.$"):
            mm.call("iris", [[5.1, 3.5, 1.4, 0.2]])
    assert clean.get_deployment("iris").state == "stopped"
    with pytest.raises(ConflictError, match="is not running"):  # now known: said before connecting
        mm.call("iris", [[5.1, 3.5, 1.4, 0.2]])
    with pytest.raises(NotFoundError, match=r"No deployment named 'irsi'. Did you mean 'iris'\?"):
        mm.call("irsi", [[5.1, 3.5, 1.4, 0.2]])


def test_deploy_mistakes(clean: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris")
    with pytest.raises(NotFoundError, match=r"no version 9"):
        mm.deploy("iris:9")
    with pytest.raises(NotFoundError, match="No deployment named 'ghost'"):
        mm.logs("ghost")
    with pytest.raises(NotFoundError, match="No deployment named 'ghost'"):
        mm.undeploy("ghost")
    with pytest.raises(NotFoundError,
                       match="Unknown deployment target 'moon'. Targets: docker, edge, fpga, kubernetes, local"):
        mm.deploy("iris", target="moon")
    with pytest.raises(NotFoundError, match=r"Unknown deployment target 'dokcer'. Did you mean 'docker'\? Targets"):
        mm.deploy("iris", target="dokcer")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConflictError, match=rf"Port {taken.getsockname()[1]} is in use by another service \(pid "
                                                rf"{os.getpid()} "):
            mm.deploy("iris", port=taken.getsockname()[1])
    mm.deploy("iris")
    with pytest.raises(ConflictError, match=r"already deployed .* Use %update iris"):
        mm.deploy("iris")


def test_the_deploy_magics_in_a_shell(clean: Registry, ip: Any, iris_lr: Any, iris: Any,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    X, _ = iris
    ip.user_ns.update(clf=iris_lr, X=X)
    ip.run_line_magic("register", "clf --name shell --sample X[:2]")
    d = ip.run_line_magic("deploy", "shell --name shell-svc")
    assert "swagger.json" in d._repr_html_() and d.scoring_url.endswith("/score")
    assert ip.run_line_magic("call", "shell-svc X[:3]") == iris_lr.predict(X[:3]).tolist()
    assert ip.run_cell_magic("call", "shell-svc", '{"data": [[5.1, 3.5, 1.4, 0.2]]}') == [0]
    assert "<table" in ip.run_line_magic("deployments", "")._repr_html_()
    ip.run_line_magic("logs", "shell-svc --tail 5")
    ip.run_line_magic("undeploy", "shell-svc")
    assert "Undeployed shell-svc." in capsys.readouterr().out
    with pytest.raises(UsageError, match="Give the data"):
        ip.run_line_magic("call", "shell-svc")


def test_tabular_answers_become_dataframes() -> None:
    import pandas as pd

    from mlops_magics.targets.client import as_table

    assert isinstance(as_table([{"a": 1}, {"a": 2}]), pd.DataFrame)
    assert as_table([[0.1, 0.9], [0.8, 0.2]]).shape == (2, 2)
    assert as_table([0, 1, 2]) == [0, 1, 2] and as_table([[1], [1, 2]]) == [[1], [1, 2]]
    assert as_table({"a": 1}) == {"a": 1}


def test_payload_shapes() -> None:
    import pandas as pd

    from mlops_magics.targets.client import request_body

    assert json.loads(request_body(np.ones((2, 2)))) == {"data": [[1.0, 1.0], [1.0, 1.0]]}
    assert json.loads(request_body(pd.DataFrame({"a": [1]}))) == {"data": [{"a": 1}]}
    assert json.loads(request_body({"text": "x"})) == {"text": "x"}
    assert request_body("raw") == b"raw" and request_body(b"\x00") == b"\x00"


def test_following_the_log_yields_new_lines_as_they_come(clean: Registry, iris_lr: Any, ip: Any,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import threading

    mm.register(iris_lr, "noisy")
    mm.set_score_script("noisy", "def init():\n    pass\n\ndef run(data):\n    raise ValueError(data)\n",
                        line_offset=1)
    mm.deploy("noisy")
    answers: list[str] = []

    def failing_call() -> None:
        try:
            mm.call("noisy", "boom-1")
        except MlopsError as exc:
            answers.append(str(exc))

    caller = threading.Timer(0.5, failing_call)
    caller.start()
    lines = list(api.follow("noisy", timeout=3))
    caller.join()
    assert answers and "answered 500" in answers[0]
    text = "\n".join(lines)
    assert "ValueError: boom-1" in text and "score script cell, line 6, in run" in text
    ip.run_line_magic("logs", "noisy --tail 2 --follow --timeout 0.3")
    assert "ValueError" in capsys.readouterr().out


OLD_BUG = "def init():\n    pass\n\ndef run(data):\n    raise ValueError('old bug')\n"
INIT_BUG = "def init():\n    x = 1\n    raise RuntimeError('new init bug')\n\ndef run(data):\n    return 1\n"


def test_a_failed_reload_says_what_still_serves_and_calls_say_which_script_answers(clean: Registry, ip: Any,
                                                                                    iris_lr: Any) -> None:
    ip.user_ns.update(clf=iris_lr)
    ip.run_line_magic("register", "clf --name iris")
    ip.run_cell_magic("score_script", "iris", OLD_BUG)
    ip.run_line_magic("deploy", "iris")
    ip.run_cell_magic("score_script", "iris", INIT_BUG)
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic("reload", "iris")
    message = str(caught.value)
    assert message.startswith("Reload of 'iris' failed: the new script failed at init (cell line 4: RuntimeError: "
                              "new init bug); 'iris' still serves iris:1 with the script of ")
    assert ("The script's traceback:\nTraceback (most recent call last):\n  score script cell, line 4, in init\n"
            in message)
    assert "mlops_backend" not in message and "Contents of the model folder" not in message  # the script's frames only
    with pytest.raises(UsageError) as answered:  # the old script answers, and the error says so
        ip.run_line_magic("call", "iris [[1, 2, 3, 4]]")
    assert "ValueError: old bug" in str(answered.value)
    assert "This answer comes from the script of" in str(answered.value) and "failed to start" in str(answered.value)
    ip.run_cell_magic("score_script", "iris", ECHO)
    ip.run_line_magic("reload", "iris")
    assert ip.run_line_magic("call", "iris [1]") == {"echo": {"data": [1]}, "v": 1}
    assert "failed_replace" not in clean.get_deployment("iris").config


def test_slow_steps_show_a_live_line_that_ends_in_the_result(clean: Registry, ip: Any, iris_lr: Any,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from mlops_magics.targets.base import Status

    ip.user_ns.update(clf=iris_lr)
    ip.run_line_magic("register", "clf --name live")
    capsys.readouterr()
    d = ip.run_line_magic("deploy", "live")
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("[mlops] deploying live: starting mlops-serve on port") for line in lines)
    assert lines[-1].startswith(f"[mlops] deploying live: live serves live:1 at {d.url} (local) (in ")
    ip.run_line_magic("reload", "live")
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith(f"[mlops] reloading live: reloaded: live serves live:1 with the current script at "
                                f"{d.url}; the previous server stopped (in ")
    events: list[Any] = []
    mm.reload("live", progress=events.append)
    said = [e.what for e in events if isinstance(e, Status)]
    assert said[0] == "checking live" and "stopping the previous server" in said[-1]
    assert any(w.startswith("starting mlops-serve") for w in said)
    elapsed = [e.elapsed for e in events]
    assert elapsed == sorted(elapsed)  # one clock for the whole operation


def test_the_score_script_says_which_services_serve_it(clean: Registry, ip: Any, iris_lr: Any,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    ip.user_ns.update(clf=iris_lr)
    ip.run_line_magic("register", "clf --name shown")
    ip.run_cell_magic("score_script", "shown", ECHO)
    ip.run_line_magic("deploy", "shown --name shown-svc")
    capsys.readouterr()
    ip.run_line_magic("score_script", "shown")
    assert "# shown-svc serves it (since " in capsys.readouterr().out
    ip.run_cell_magic("score_script", "shown", ECHO.replace("'v': 1", "'v': 2"))
    ip.run_line_magic("score_script", "shown")
    assert "shown-svc serves an older script (since " in capsys.readouterr().out


def test_deleted_deployments_are_listed_with_all_only(clean: Registry, ip: Any, iris_lr: Any) -> None:
    ip.user_ns.update(clf=iris_lr)
    ip.run_line_magic("register", "clf --name gone")
    ip.run_line_magic("deploy", "gone")
    ip.run_line_magic("undeploy", "gone")
    listed = ip.run_line_magic("deployments", "")
    assert listed == [] and repr(listed) == ("No live deployments. 1 deleted deployment not shown: %deployments "
                                             "--all shows them.")
    assert [d.state for d in ip.run_line_magic("deployments", "--all")] == ["deleted"]


def test_an_import_failure_names_the_cell_line_and_keeps_only_the_scripts_frames(clean: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "imports")
    mm.set_score_script("imports", "import json\nfrom json import no_such_name\n\ndef init():\n    pass\n\n"
                                   "def run(data):\n    return 1\n", line_offset=1)
    with pytest.raises(DeployError) as caught:
        mm.deploy("imports")
    message = str(caught.value)
    assert ("failed: the server exited with status 3: its entry script failed at import (cell line 3: ImportError: "
            "cannot import name 'no_such_name'") in message
    assert "  score script cell, line 3, in <module>\n" in message and "EntryScriptError" not in message


AZURE_STYLE = ("import os\nimport joblib\n\ndef init():\n    global model\n"
               "    model = joblib.load(os.path.join(os.getenv('AZUREML_MODEL_DIR'), 'sklearn_regression_model.pkl'))\n"
               "\ndef run(data):\n    import json\n    return model.predict(json.loads(data)['data']).tolist()\n")


def test_an_update_to_a_version_registered_from_memory_finds_the_file_its_script_opens(
        clean: Registry, iris_lr: Any, iris_tree: Any, iris: Any, tmp_path: Path) -> None:
    import joblib

    X, _ = iris
    joblib.dump(iris_lr, tmp_path / "sklearn_regression_model.pkl")
    mm.register(name="diabetes", path=tmp_path / "sklearn_regression_model.pkl", trust=True)
    mm.set_score_script("diabetes", AZURE_STYLE)
    mm.deploy("diabetes")
    assert mm.call("diabetes", X[:3].tolist()) == iris_lr.predict(X[:3]).tolist()
    mm.register(iris_tree, "diabetes")  # %register model2 --name diabetes
    updated = mm.update("diabetes", "diabetes:2")
    assert updated.model_version == 2
    assert mm.call("diabetes", X[:5].tolist()) == iris_tree.predict(X[:5]).tolist()


def test_a_deployment_answers_to_the_names_sdk_v1_users_call_on_a_webservice(clean: Registry, iris_lr: Any,
                                                                            iris: Any) -> None:
    X, _ = iris
    mm.register(iris_lr, "iris", sample=X[:3])
    mm.set_score_script("iris", ECHO)
    service = mm.deploy("iris", auth=True)
    assert isinstance(service, api.Service) and service.state == "running"
    assert service.port == int(service.config["port"]) and service.scoring_uri == f"{service.url}/score"
    assert service.swagger_uri == f"{service.url}/swagger.json"
    assert service.run('{"data": [[1, 2]]}') == {"echo": {"data": [[1, 2]]}, "v": 1}  # a JSON string, as is
    assert service.run([[1, 2]]) == {"echo": {"data": [[1, 2]]}, "v": 1}  # rows as {"data": rows}
    primary, secondary = service.get_keys()
    assert primary == service.auth_key and secondary != primary
    rotated = service.regen_key("Secondary")
    assert rotated.primary == primary and rotated.secondary != secondary
    assert f"serving score.py (string input) on {service.url}" in service.get_logs()
    assert len(service.get_logs(num_lines=1).splitlines()) == 1
    assert service == clean.get_deployment("iris")  # the same record as the registry's
    mm.set_score_script("iris", ECHO.replace("'v': 1", "'v': 2"))
    reloaded = service.reload()
    assert isinstance(reloaded, api.Service) and reloaded.run([[3]]) == {"echo": {"data": [[3]]}, "v": 2}
    assert [d.name for d in mm.list_deployments() if isinstance(d, api.Service)] == ["iris"]
    service.delete()
    assert service.refresh().state == "deleted" and not service.refresh().is_live
    service.delete()  # idempotent, as undeploy is
    with pytest.raises(ConflictError, match="not serving|undeployed"):
        service.run([[1, 2]])
