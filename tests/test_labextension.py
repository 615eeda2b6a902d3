"""The JupyterLab sidebar in a real browser: JupyterLab on 127.0.0.1 with a registry holding models and a live
local deployment, opened in Debian's Chromium driven by Playwright (never a downloaded browser).

Screenshots are saved under ``$MLOPS_TEST_ARTIFACTS`` (default ``build/test-artifacts``). Where Chromium,
Playwright or the built extension is missing the tests skip saying how to get them; with
``MLOPS_REQUIRE_BROWSER=1`` (as in CI) they fail instead.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import mlops_magics as mm
from mlops_magics import api
from mlops_magics.registry import Registry

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
#: As DESIGN.md says: without the background-networking flags, Chromium keeps dialling Google's hosts here.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("MLOPS_TEST_ARTIFACTS", Path(__file__).parent.parent / "build" / "test-artifacts"))
TAB = '.lm-TabBar-tab[data-id="mlops-magics-sidebar"]'
PANEL = "#mlops-magics-sidebar"


def _give_up(why: str) -> None:
    if os.environ.get("MLOPS_REQUIRE_BROWSER"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def playwright_browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        _give_up(f"{CHROMIUM} is missing: apt-get install chromium (the browser tests use Debian's Chromium).")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _give_up("Playwright for Python is missing: pip install -e '.[test]'.")
    installed = Path(sys.prefix, "share", "jupyter", "labextensions", "mlops-magics", "package.json")
    if not installed.exists():
        _give_up(f"The sidebar is not built into this environment ({installed} is missing): run make setup "
                 "(it needs Node.js 20 and npm).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@dataclass
class Lab:
    url: str
    token: str
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_lab(folder: Path, home: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Lab]:
    """JupyterLab on 127.0.0.1 with its own config, settings and workspaces (nothing from ~/.jupyter)."""
    port, token = _free_port(), secrets.token_hex(16)
    for sub in ("config", "runtime", "settings", "workspaces", "root"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLOPS_HOME": str(home), "JUPYTER_CONFIG_DIR": str(folder / "config"),
           "JUPYTER_RUNTIME_DIR": str(folder / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(folder / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(folder / "workspaces")}
    news = folder / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True, exist_ok=True)
    news.write_text(json.dumps({"fetchNews": "false"}))  # no "get notified about Jupyter news?" toast
    log = folder / "jupyterlab.log"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
               f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder / 'root'}",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", *extra]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    lab = Lab(f"http://127.0.0.1:{port}", token, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"JupyterLab exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{lab.url}/api/status?token={token}", timeout=2) as answer:
                if answer.status == 200:
                    return process, lab
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise AssertionError(f"JupyterLab did not answer within 60 s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def deployed(registry: Registry, iris_lr: Any, iris_tree: Any, iris: Any) -> Iterator[Registry]:
    """Two versions of iris (v2 is production), a second model, and iris:2 served by a live local deployment."""
    mm.register(iris_lr, "iris", sample=iris[0][:3], registry=registry)
    mm.register(iris_tree, "iris", sample=iris[0][:3], alias="production", registry=registry)
    mm.register(iris_lr, "wine", registry=registry)
    api.deploy("iris@production", name="iris-svc", registry=registry)
    try:
        yield registry
    finally:
        api.undeploy(all_services=True, registry=registry)


def _open_sidebar(browser: Any, lab: Lab) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(f"{lab.url}/lab?token={lab.token}")
    page.locator(TAB).click()
    page.locator(PANEL).wait_for(state="visible")
    return page


def _screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"labextension-{name}.png"
    page.screenshot(path=str(path))
    return path


def test_sidebar_lists_registry_and_undeploys(playwright_browser: Any, deployed: Registry, tmp_path: Path) -> None:
    process, lab = _start_lab(tmp_path / "lab", deployed.home)
    try:
        page = _open_sidebar(playwright_browser, lab)
        panel = page.locator(PANEL)
        # models, their aliases, and the deployment with its live state
        iris = panel.locator('[data-model="iris"]')
        iris.wait_for()
        assert "production→v2" in iris.inner_text() and "2 versions" in iris.inner_text()
        assert panel.locator('[data-model="wine"]').count() == 1
        service = panel.locator('[data-deployment="iris-svc"]')
        service.wait_for()
        assert service.get_attribute("data-state") == "running"
        assert "iris:2" in service.inner_text() and "local" in service.inner_text()
        # the next poll sends the listing's ETag and gets "not modified": nothing is sent again
        page.wait_for_event("response", timeout=30_000,
                            predicate=lambda r: urlsplit(r.url).path.endswith("/mlops/api/models") and r.status == 304)

        # a version's details come from the API: alias history and signature
        iris.locator(".jp-mlops-model-row").click()
        panel.locator('[data-version="iris:2"]').click()
        details = panel.locator(".jp-mlops-details-body")
        details.get_by_text("Alias history").wait_for()
        assert "iris:2" in details.inner_text() and "sklearn" in details.inner_text()

        # the deployment's details and its log
        service.click()
        details.get_by_text("Collecting").wait_for()
        assert deployed.get_deployment("iris-svc").url in details.inner_text()
        details.get_by_role("button", name="Logs").click()
        log = details.locator(".jp-mlops-log")
        log.wait_for()
        assert "serving" in log.inner_text()
        shot = _screenshot(page, "listed")

        # undeploy, confirmed in JupyterLab's dialog: the deployment leaves the list and the registry says so
        url = deployed.get_deployment("iris-svc").url
        details.get_by_role("button", name="Undeploy").click()
        page.locator(".jp-Dialog").get_by_role("button", name="Undeploy").click()
        service.wait_for(state="detached")
        panel.get_by_text("Undeployed iris-svc.").wait_for()
        assert "1 undeployed, not shown" in panel.inner_text()
        assert deployed.get_deployment("iris-svc").state == "deleted"
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{url}/", timeout=2)
        _screenshot(page, "undeployed")
        assert shot.stat().st_size > 10_000, "the screenshot is a real picture"
        page.close()
    finally:
        _stop(process)


def test_sidebar_says_when_the_server_extension_is_missing(playwright_browser: Any, registry: Registry,
                                                           tmp_path: Path) -> None:
    process, lab = _start_lab(tmp_path / "lab", registry.home,
                              "--ServerApp.jpserver_extensions=mlops_magics.server_extension=False")
    try:
        with urllib.request.urlopen(f"{lab.url}/api/status?token={lab.token}") as answer:
            assert answer.status == 200
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{lab.url}/mlops/api/health?token={lab.token}")
        assert missing.value.code == 404, "the server extension is really off"
        page = _open_sidebar(playwright_browser, lab)
        notice = page.locator(f"{PANEL} .jp-mlops-notice-missing")
        notice.wait_for()
        assert "MLOps API not found" in notice.inner_text() and "pip install mlops-magics" in notice.inner_text()
        page.locator(f"{PANEL} .jp-mlops-updated").get_by_text("retrying in").wait_for()
        _screenshot(page, "missing-extension")
        page.close()
    finally:
        _stop(process)


def test_the_built_extension_is_the_one_installed() -> None:
    """The environment's copy of the sidebar is the build of labextension/ (make setup refreshes it)."""
    built = Path(__file__).parent.parent / "mlops_magics" / "labextension"
    installed = Path(sys.prefix, "share", "jupyter", "labextensions", "mlops-magics")
    if not built.exists() or not installed.exists():
        _give_up("The sidebar is not built: run make setup (it needs Node.js 20 and npm).")
    meta = json.loads((installed / "package.json").read_text())
    assert meta["name"] == "mlops-magics" and meta["jupyterlab"]["_build"]["load"].startswith("static/remoteEntry.")
    def files(folder: Path) -> list[str]:
        return sorted(p.name for p in (folder / "static").iterdir())

    assert files(built) == files(installed)
    listing = subprocess.run([sys.executable, "-m", "jupyter", "labextension", "list"], capture_output=True,
                             text=True, check=True)
    assert "mlops-magics v0.1.0" in listing.stdout + listing.stderr


def _notebook(path: Path, *cells: str) -> None:
    """A notebook file of code cells, on the python3 kernel."""
    path.write_text(json.dumps({
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [{"cell_type": "code", "id": f"c{n}", "metadata": {}, "execution_count": None, "outputs": [],
                   "source": source} for n, source in enumerate(cells)],
    }))


def _open_notebook(page: Any, lab: Lab, folder: Path, name: str, code: str) -> None:
    """Open ``name`` in JupyterLab (the workspace keeps what was open) and run ``code`` in the kernel JupyterLab
    started for it, as a cell would (through its connection file: clicking Run raced the kernel's start here)."""
    from jupyter_client import BlockingKernelClient

    page.goto(f"{lab.url}/lab/tree/{name}?token={lab.token}")
    page.locator(".jp-NotebookPanel:visible .jp-Cell").first.wait_for()
    page.locator(PANEL).wait_for(state="attached")
    if not page.locator(PANEL).is_visible():
        page.locator(TAB).click()
    page.locator('.jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for()
    deadline, connection = time.monotonic() + 60, None
    while connection is None and time.monotonic() < deadline:
        with urllib.request.urlopen(f"{lab.url}/api/sessions?token={lab.token}", timeout=10) as answer:
            sessions = json.loads(answer.read())
        kernel = next((s["kernel"]["id"] for s in sessions if s["path"] == name and s.get("kernel")), None)
        found = folder / "runtime" / f"kernel-{kernel}.json"
        connection = found if kernel is not None and found.exists() else None
        time.sleep(0.2)
    assert connection is not None, f"no kernel for {name}"
    client = BlockingKernelClient(connection_file=str(connection))
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        reply = client.execute_interactive(code, timeout=60, output_hook=lambda _: None)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        client.stop_channels()


def _registry_line(page: Any, home: Path, source: str) -> Any:
    line = page.locator(f'{PANEL} .jp-mlops-registry[data-registry="{home}"][data-source="{source}"]')
    try:
        line.wait_for()
    except Exception:
        _screenshot(page, "registry-failed")  # what the sidebar showed instead
        raise
    return line


def test_sidebar_follows_the_registry_of_the_notebooks_kernel(playwright_browser: Any, registry: Registry,
                                                              tmp_path: Path) -> None:
    """Each notebook's kernel points MLOPS_HOME at its own folder (as the tutorials do) and registers a model:
    the sidebar shows that registry and names it; switching notebooks switches the list; the selector offers
    the registries in use; with no notebook it shows the server's default, saying so."""
    mm.register({"w": 0}, "served-default", registry=registry)
    folder = tmp_path / "lab"
    root = folder / "root"
    root.mkdir(parents=True)
    homes = {name: (root / name / "mlops-home").resolve() for name in ("a", "b")}
    cells = {name: f"import os\nos.environ['MLOPS_HOME'] = {str(homes[name])!r}\n"
                   f"import mlops_magics as mm\nmm.register({{'w': 1}}, {model!r})"
             for name, model in (("a", "alpha"), ("b", "beta"))}
    for name, cell in cells.items():
        _notebook(root / f"{name}.ipynb", cell)
    process, lab = _start_lab(folder, registry.home)
    try:
        page = _open_sidebar(playwright_browser, lab)
        panel = page.locator(PANEL)
        line = _registry_line(page, registry.home, "default")
        assert "server's default (no notebook open)" in line.inner_text()
        panel.locator('[data-model="served-default"]').wait_for()
        # the Refresh button is whole inside the sidebar at its default width
        box, refresh = panel.bounding_box(), panel.locator(".jp-mlops-refresh").bounding_box()
        assert box is not None and refresh is not None
        assert box["x"] <= refresh["x"] and refresh["x"] + refresh["width"] <= box["x"] + box["width"], (box, refresh)
        _screenshot(page, "registry-default")

        _open_notebook(page, lab, folder, "a.ipynb", cells["a"])
        line = _registry_line(page, homes["a"], "kernel")
        assert "used by the kernel of a.ipynb" in line.inner_text()
        assert "mlops-home" in line.locator(".jp-mlops-registry-path").inner_text()
        panel.locator('[data-model="alpha"]').wait_for()
        assert panel.locator('[data-model="served-default"]').count() == 0, "not the server's registry"
        _screenshot(page, "registry-notebook-a")

        _open_notebook(page, lab, folder, "b.ipynb", cells["b"])
        line = _registry_line(page, homes["b"], "kernel")
        panel.locator('[data-model="beta"]').wait_for()
        assert panel.locator('[data-model="alpha"]').count() == 0
        assert "used by the kernel of b.ipynb" in line.inner_text()
        panel.locator(".jp-mlops-status").get_by_text("Now showing").wait_for()
        _screenshot(page, "registry-notebook-b")

        # back to a's tab: the sidebar follows without a reload
        page.locator("#jp-main-dock-panel .lm-TabBar-tab").filter(has_text="a.ipynb").click()
        _registry_line(page, homes["a"], "kernel")
        panel.locator('[data-model="alpha"]').wait_for()
        assert "Now showing" in panel.locator(".jp-mlops-status").inner_text()

        # the selector offers every registry in use; choosing one shows it, labelled as chosen
        select = panel.locator(".jp-mlops-registry-select")
        offered = select.locator("option").evaluate_all("options => options.map(o => o.value)")
        assert {str(homes["a"]), str(homes["b"]), str(registry.home)} <= set(offered)
        select.select_option(str(homes["b"]))
        line = _registry_line(page, homes["b"], "chosen")
        panel.locator('[data-model="beta"]').wait_for()
        assert "a.ipynb's kernel uses" in line.inner_text()
        _screenshot(page, "registry-chosen")
        select.select_option("")
        _registry_line(page, homes["a"], "kernel")
        page.close()
    finally:
        _stop(process)
