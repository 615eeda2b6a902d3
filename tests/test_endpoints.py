"""Endpoints through the API: real local deployments behind a real router process, a real registry."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import mlops_magics as mm
from mlops_magics import api
from mlops_magics.errors import ConflictError, InvalidInputError, NotFoundError
from mlops_magics.registry import Registry


@pytest.fixture
def models(registry: Registry, iris: Any, iris_lr: Any, iris_tree: Any) -> Iterator[Registry]:
    X, _ = iris
    mm.register(iris_lr, "iris", sample=X[:2], registry=registry)
    mm.register(iris_tree, "iris", sample=X[:2], registry=registry)
    yield registry
    for e in api.list_endpoints(registry=registry):
        api.delete_endpoint(e.name, registry=registry)
    api.undeploy(all_services=True, registry=registry)


def _member(url: str, rows: Any) -> str:
    """Which member answered (the router says so in x-mlops-member)."""
    import json
    import urllib.request

    request = urllib.request.Request(f"{url}/score", json.dumps({"data": rows}).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(response.headers["x-mlops-member"])


def test_an_endpoint_splits_traffic_by_weight_and_says_who_answered(models: Registry, iris: Any) -> None:
    X, _ = iris
    rows = X[:2].tolist()
    first = api.endpoint("iris", add="blue=iris:1", registry=models)
    assert (first.weights, first.generation, first.state) == ({"blue": 100}, 1, "running")
    assert first.member("blue").service == "iris-blue" and first.member("blue").model == "iris:1"
    both = api.endpoint("iris", add={"green": "iris:2"}, registry=models)
    assert both.weights == {"blue": 100, "green": 0} and both.url == first.url  # one address throughout
    split = api.endpoint("iris", traffic="blue=80,green=20", registry=models)
    assert split.weights == {"blue": 80, "green": 20} and split.generation == 3
    answered = Counter(_member(str(split.url), rows) for _ in range(400))
    assert 48 <= answered["green"] <= 112, answered  # 20% +- 8 points
    status = api.endpoint_status("iris", registry=models)
    assert status.member("green").answers["live"]["requests"] == answered["green"]
    assert "iris-green" in repr(status) and "generation 3" in status.headline()
    assert [c.reason for c in models.endpoint_history("iris")] == [
        "add blue=iris:1", "add green=iris:2", "traffic blue=80, green=20"]


def test_promotion_and_rollback_under_load_fail_no_request(models: Registry, iris: Any) -> None:
    X, _ = iris
    rows = X[:3].tolist()
    api.endpoint("iris", add="blue=iris:1,green=iris:2", registry=models)
    url = str(api.endpoint_status("iris", registry=models).url)
    failures: list[Any] = []
    answered: Counter[str] = Counter()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                answered[_member(url, rows)] += 1
            except OSError as exc:
                failures.append(exc)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        promoted = api.endpoint("iris", traffic="green=100", registry=models)
        assert promoted.weights == {"blue": 0, "green": 100}
        time.sleep(0.5)
        back = api.endpoint("iris", rollback=True, registry=models)
        assert back.weights == {"blue": 100, "green": 0} and back.generation == 3
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == [] and answered["green"] > 0 and answered["blue"] > 0
    assert models.endpoint_history("iris")[-1].reason == "rollback to generation 1"


def test_a_shadow_gets_a_copy_of_each_request_and_never_answers(models: Registry, iris: Any) -> None:
    X, _ = iris
    api.endpoint("iris", add="blue=iris:1,green=iris:2", shadow="green=100", registry=models)
    url = str(api.endpoint_status("iris", registry=models).url)
    for _ in range(10):
        assert _member(url, X[:2].tolist()) == "blue"
    time.sleep(0.3)
    status = api.endpoint_status("iris", registry=models)
    assert status.member("green").shadow_percent == 100
    assert status.member("green").answers["shadow"]["requests"] == 10
    assert "live" not in status.member("green").answers


def test_gates_refuse_an_unvalidated_member_traffic_and_change_nothing(models: Registry, iris: Any) -> None:
    X, y = iris
    assert api.validate("iris:1", X, y, metrics=["accuracy"], registry=models).passed
    api.endpoint("iris", add="blue=iris:1,green=iris:2", registry=models)
    with pytest.raises(ConflictError, match=r"Member 'green' cannot take traffic: iris:2 has never been validated"):
        api.endpoint("iris", traffic="blue=50,green=50", require_validation=True, registry=models)
    assert api.endpoint_status("iris", registry=models).weights == {"blue": 100, "green": 0}
    assert models.get_endpoint("iris").generation == 1


def test_bad_changes_say_what_is_wrong_and_leave_the_endpoint_as_it_was(models: Registry) -> None:
    with pytest.raises(NotFoundError, match=r"No endpoint named 'iris': create it with %endpoint iris --add"):
        api.endpoint("iris", traffic="blue=100", registry=models)
    api.endpoint("iris", add="blue=iris:1", registry=models)
    with pytest.raises(InvalidInputError, match=r"The weights must add up to 100: blue=60 adds up to 60"):
        api.endpoint("iris", traffic="blue=60", registry=models)
    with pytest.raises(ConflictError, match=r"Member 'blue' takes 100% of 'iris''s traffic: move it first"):
        api.endpoint("iris", remove=["blue"], registry=models)
    with pytest.raises(ConflictError, match=r"has no member 'red'"):
        api.endpoint("iris", traffic="red=100", registry=models)
    with pytest.raises(NotFoundError):  # a model that does not exist: nothing deployed, nothing changed
        api.endpoint("iris", add="green=nosuch:1", registry=models)
    assert models.get_endpoint("iris").generation == 1
    assert "iris-green" not in {d.name for d in models.deployments() if d.is_live}
    with pytest.raises(InvalidInputError, match="--rollback goes back to the previous routing as it was"):
        api.endpoint("iris", rollback=True, traffic="blue=100", registry=models)
    with pytest.raises(ConflictError, match="has no earlier routing"):
        api.endpoint("iris", rollback=True, registry=models)


def test_removing_a_member_and_deleting_the_endpoint_undeploy_what_it_deployed(models: Registry,
                                                                              iris: Any) -> None:
    X, _ = iris
    plain = api.deploy("iris:2", name="standalone", registry=models)
    api.endpoint("iris", add="blue=iris:1,green=standalone", registry=models)  # green: an existing service
    assert not api.endpoint_status("iris", registry=models).member("green").owned
    api.endpoint("iris", add="red=iris:2", registry=models)
    api.endpoint("iris", remove=["red"], registry=models)
    live = {d.name for d in models.deployments() if d.is_live}
    assert "iris-red" not in live and {"iris-blue", "standalone"} <= live
    assert api.delete_endpoint("iris", registry=models) == ["iris-blue"]
    live = {d.name for d in models.deployments() if d.is_live}
    assert "iris-blue" not in live and "standalone" in live  # not the endpoint's to remove
    assert api.call("standalone", X[:1].tolist(), registry=models) == [int(v) for v in mm.load_model(
        plain.model_name + ":2", registry=models).predict(X[:1])]
    assert models.get_endpoint("iris").state == "deleted"


def test_a_service_taking_an_endpoints_traffic_is_not_undeployed_under_it(models: Registry) -> None:
    api.endpoint("iris", add="blue=iris:1,green=iris:2", shadow="green=50", registry=models)
    with pytest.raises(ConflictError, match=r"Service 'iris-blue' is member 'blue' of endpoint 'iris' and takes 100% "
                                            r"of its traffic: move it first"):
        api.undeploy("iris-blue", registry=models)
    with pytest.raises(ConflictError, match=r"Service 'iris-green' is the shadow of endpoint 'iris'"):
        api.undeploy("iris-green", registry=models)
    assert {d.name for d in models.deployments() if d.is_live} == {"iris-blue", "iris-green"}
    api.undeploy(all_services=True, registry=models)  # everything: the endpoint goes first, then the services
    assert models.get_endpoint("iris").state == "deleted"
    assert not [d.name for d in models.deployments() if d.is_live]


def test_the_magic_and_the_verb_are_adapters_of_the_api(ip: Any, models: Registry,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from IPython.core.error import UsageError

    from tests.cli_run import mlops

    made = ip.run_line_magic("endpoint", "iris --add blue=iris:1 --add green=iris:2 --traffic blue=90,green=10")
    assert made.weights == {"blue": 90, "green": 10}
    assert "endpoint iris: Endpoint 'iris' at http://127.0.0.1:" in capsys.readouterr().out
    with pytest.raises(UsageError, match="The weights must add up to 100"):
        ip.run_line_magic("endpoint", "iris --traffic blue=20")
    shown = mlops(capsys, "endpoint", "iris", "--json")
    assert shown.code == 0 and shown.json["generation"] == 1 and [m["weight"] for m in shown.json["members"]] == [
        90, 10]
    bad = mlops(capsys, "endpoint", "iris", "--shadow", "green=500")
    assert bad.code == 2 and "the percent of requests copied is 1 to 100" in bad.err
    gone = mlops(capsys, "endpoint", "iris", "--delete")
    assert gone.code == 0 and gone.out.startswith("Endpoint 'iris' deleted; undeployed iris-blue, iris-green.")


def _expected_agreement(models: Registry, rows: Any) -> float:
    import numpy as np

    lr, tree = mm.load_model("iris:1", registry=models), mm.load_model("iris:2", registry=models)
    return float(np.mean(lr.predict(rows) == tree.predict(rows)))


def test_shadow_answers_compare_row_by_row_with_the_live_ones(models: Registry, iris: Any) -> None:
    X, _ = iris
    api.endpoint("iris", add="blue=iris:1,green=iris:2", shadow="green=100", registry=models)
    url = str(api.endpoint_status("iris", registry=models).url)
    for start in range(0, 150, 5):  # every row of iris, five per request
        assert _member(url, X[start:start + 5].tolist()) == "blue"
    # at once: the router writes its records twice a second, and the comparison waits for what it answered
    compared = api.compare_traffic("iris", "blue", "green", registry=models)
    assert (compared.pairs, compared.rows_compared) == (30, 150)
    assert compared.agreement == pytest.approx(_expected_agreement(models, X))
    assert compared.rows_differing == round((1 - compared.agreement) * 150) > 0  # the tree and the LR differ
    assert len(compared.disagreements) == min(10, compared.rows_differing)
    status = api.endpoint_status("iris", registry=models)
    assert status.shadow is not None and status.shadow.agreement == compared.agreement
    assert "shadow: blue vs green" in repr(status)


def test_replay_sends_collected_requests_to_a_member_and_compares_the_answers(models: Registry, iris: Any) -> None:
    X, _ = iris
    api.deploy("iris:1", name="prod", collect=True, registry=models)
    api.endpoint("iris", add="blue=prod,green=iris:2", registry=models)
    url = str(api.endpoint_status("iris", registry=models).url)
    for start in range(0, 150, 10):
        _member(url, X[start:start + 10].tolist())
    time.sleep(1.2)  # collected within the flush interval
    replayed = api.replay("iris", to="green", rate=200, registry=models)
    assert (replayed.a, replayed.b, replayed.pairs, replayed.rows_compared) == ("blue", "green", 15, 150)
    assert replayed.agreement == pytest.approx(_expected_agreement(models, X))
    assert api.endpoint_status("iris", registry=models).member("green").answers == {}  # not through the router
    with pytest.raises(NotFoundError, match="has no member 'red'"):
        api.replay("iris", to="red", registry=models)
    with pytest.raises(InvalidInputError, match="--rate 0"):
        api.replay("iris", to="green", rate=0, registry=models)


def test_an_endpoint_with_auth_wants_its_own_keys_and_gives_members_theirs(models: Registry, iris: Any) -> None:
    import json
    import urllib.error
    import urllib.request

    X, _ = iris
    api.deploy("iris:1", name="locked", auth=True, registry=models)
    made = api.endpoint("safe", add="blue=locked", auth=True, registry=models)
    keys = api.endpoint_keys("safe", registry=models)
    member_key = api.keys("locked", registry=models).primary

    def post(key: str | None) -> int:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        request = urllib.request.Request(f"{made.url}/score", json.dumps({"data": X[:1].tolist()}).encode(), headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    assert post(None) == 401 and post(member_key) == 401  # the member's key is not the endpoint's
    assert post(keys.primary) == 200 and post(keys.secondary) == 200  # the router sends the member's own
    rotated = api.endpoint_keys("safe", regenerate="secondary", registry=models)
    deadline = time.monotonic() + 5
    while post(rotated.secondary) != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert post(rotated.secondary) == 200 and post(keys.secondary) == 401 and post(keys.primary) == 200
    status = api.endpoint_status("safe", registry=models)  # its router's own routes want the endpoint's key too
    assert status.note == "" and status.member("blue").answers["live"]["requests"] >= 5
    assert keys.primary not in repr(keys) and keys.primary not in (models.home / "endpoints" / "safe" /
                                                                  "router.log").read_text()
    api.endpoint("open", add="blue=iris:1", registry=models)
    with pytest.raises(InvalidInputError, match="an endpoint's keys are set when it is created"):
        api.endpoint("open", auth=True, traffic="blue=100", registry=models)
    with pytest.raises(NotFoundError, match="it was created without --auth"):
        api.endpoint_keys("open", registry=models)
