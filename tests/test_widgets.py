"""The notebook widgets, clicked headlessly (``Button.click()``) against a real registry and real deployments."""

from __future__ import annotations

from typing import Any

import pytest

import mlops_magics as mm
from mlops_magics import api
from mlops_magics.registry import Registry
from mlops_magics.widgets import DeploymentBoard, ModelBrowser


@pytest.fixture
def two_models(registry: Registry, iris_lr: Any, iris_tree: Any, iris: Any) -> Registry:
    X = iris[0]
    mm.register(iris_lr, "iris", sample=X[:3], tags={"team": "cv"}, registry=registry)
    mm.register(iris_tree, "iris", sample=X[:3], tags={"team": "cv"}, registry=registry)
    mm.register(iris_lr, "wine", tags={"team": "nlp"}, registry=registry)
    return registry


def test_filters_list_the_matching_versions(two_models: Registry) -> None:
    browser = ModelBrowser(registry=two_models)
    assert sorted(ref for _, ref in browser.versions.options) == ["iris:1", "iris:2", "wine:1"]
    browser.name_filter.value = "ir*"
    assert sorted(ref for _, ref in browser.versions.options) == ["iris:1", "iris:2"]
    browser.name_filter.value = ""
    browser.tag_filter.value = "team=nlp"
    assert [ref for _, ref in browser.versions.options] == ["wine:1"]
    browser.tag_filter.value = ""
    browser.latest.value = True
    assert sorted(ref for _, ref in browser.versions.options) == ["iris:2", "wine:1"]
    assert browser.status.text == "2 versions" and not browser.status.failed


def test_selection_shows_signature_lineage_alias_history_and_reports(two_models: Registry, iris: Any) -> None:
    mm.set_alias("iris:1", "production", registry=two_models)
    mm.set_alias("iris:2", "production", registry=two_models)
    api.validate("iris:2", iris[0], iris[1], metrics=["accuracy>=0.9"], registry=two_models)
    browser = ModelBrowser(registry=two_models, name="iris")
    browser.select("iris:2")
    html = browser.details.value
    assert "signature" in html and "lineage" in html
    assert "Alias history" in html and html.count("production") >= 2
    assert "validation</strong>: passed (ok accuracy&gt;=0.9)" in html
    assert dict(browser.versions.options)["iris:2 [production]"] == "iris:2"


def test_actions_change_the_registry_through_the_api(two_models: Registry) -> None:
    namespace: dict[str, Any] = {}
    browser = ModelBrowser(registry=two_models, namespace=namespace, name="iris")
    browser.select("iris:1")
    browser.alias.value = "staging"
    browser.alias_button.click()
    assert two_models.get("iris@staging").version == 1 and browser.status.text == "staging -> iris:1"
    browser.variable.value = "clf"
    browser.load_button.click()
    assert type(namespace["clf"]).__name__ == "LogisticRegression"
    assert browser.status.text == "Loaded iris:1 into 'clf' (sha256 verified)."
    browser.select("iris:2")
    browser.delete_button.click()  # arms
    assert "Click Delete again" in browser.status.text and len(mm.list_models("iris", registry=two_models)) == 2
    browser.delete_button.click()
    assert [v.version for v in mm.list_models("iris", registry=two_models)] == [1]
    assert browser.status.text == "Deleted iris:2." and "iris:2" not in [r for _, r in browser.versions.options]


def test_errors_show_in_the_status_line(two_models: Registry, iris: Any) -> None:
    api.validate("iris:1", iris[0], iris[1], metrics=["accuracy>=0.9"], registry=two_models)
    mm.set_alias("iris:1", "production", require_validation=True, registry=two_models)
    browser = ModelBrowser(registry=two_models, name="iris")
    browser.select("iris:2")
    browser.alias.value = "production"
    browser.alias_button.click()  # gated: iris:2 was never validated
    assert browser.status.failed and "production" in browser.status.text and "validat" in browser.status.text
    assert two_models.get("iris@production").version == 1
    browser.variable.value = "not a name"
    browser.load_button.click()
    assert browser.status.failed and "valid Python variable name" in browser.status.text


def test_the_deployment_board_shows_logs_reloads_and_undeploys(two_models: Registry) -> None:
    api.deploy("iris:1", name="svc", registry=two_models)
    try:
        board = DeploymentBoard(registry=two_models)
        assert board.selected == "svc" and "running" in board.details.value and "swagger.json" in board.details.value
        assert board.status.text == "1 running, 1 in all"
        board.logs_button.click()
        assert "serving score.py" in board.log.value
        first_pid = two_models.get_deployment("svc").config["pid"]
        board.reload_button.click()
        assert board.status.text == "Reloaded svc." and two_models.get_deployment("svc").config["pid"] != first_pid
        board.undeploy_button.click()
        assert two_models.get_deployment("svc").state == "deleted" and board.status.text == "Undeployed svc."
        assert board.services.options == () and board.reload_button.disabled and board.undeploy_button.disabled
        board.show_deleted.value = True  # deleted ones show on demand, with the actions that cannot apply disabled
        assert "deleted" in board.services.options[0][0] and board.selected == "svc"
        assert board.reload_button.disabled and board.undeploy_button.disabled and not board.logs_button.disabled
    finally:
        api.undeploy(all_services=True, registry=two_models)


def test_polling_refreshes_the_states(two_models: Registry) -> None:
    import time

    api.deploy("iris:1", name="polled", registry=two_models)
    board = DeploymentBoard(registry=two_models, poll=0.2)
    try:
        assert "running" in board.services.options[0][0]
        api.undeploy("polled", registry=two_models)
        deadline = time.monotonic() + 10
        while board.services.options and time.monotonic() < deadline:
            time.sleep(0.1)
        assert board.services.options == () and "1 deleted not shown" in board.status.text
    finally:
        board.stop_polling()
        api.undeploy(all_services=True, registry=two_models)
    with pytest.raises(ValueError, match="poll 0 is invalid"):
        board.start_polling(0)


def test_the_magics_give_the_widgets(ip: Any, two_models: Registry) -> None:
    browser = ip.run_line_magic("models", "--widget --name iris --tag team=cv")
    assert isinstance(browser, ModelBrowser) and browser.namespace is ip.user_ns
    assert sorted(r for _, r in browser.versions.options) == ["iris:1", "iris:2"]
    browser.variable.value = "loaded"
    browser.load_button.click()
    assert "loaded" in ip.user_ns
    board = ip.run_line_magic("deployments", "--widget")
    assert isinstance(board, DeploymentBoard) and board.status.text == "0 running, 0 in all"
    assert "application/vnd.jupyter.widget-view+json" in board._repr_mimebundle_()


def test_the_browsers_rows_wrap_in_a_narrow_notebook_instead_of_cutting_off_refresh(two_models: Registry) -> None:
    import ipywidgets as widgets

    browser = ModelBrowser(registry=two_models)
    rows = [child for child in browser.widget.children if isinstance(child, widgets.HBox)]
    assert len(rows) == 3 and all(row.layout.flex_flow == "row wrap" for row in rows)
    assert browser.refresh_button in rows[0].children
