"""Sidebar benchmark: what the JupyterLab sidebar's polls cost the Jupyter server, with a large registry.

The sidebar polls two endpoints every 5 seconds while it is open: the listing of models (every version of
every model) and the deployments (each live one checked now). This measures, through a real JupyterLab
server on 127.0.0.1 and its REST API, with 10,000 versions over 100 models and two live local deployments:

- the listing made afresh (what every poll cost before the listing was kept until the registry changes),
  the listing unchanged (kept text, sent in full), and unchanged with the ETag (304, nothing sent);
- the deployments, a version's detail, a log tail;
- in Debian's Chromium (Playwright), the time from opening JupyterLab to the sidebar listing the models.

No peer is named for this issue: the side-by-side is the listing made afresh against kept and not sent.

    python benchmarks/sidebar.py            # full run, results written to benchmarks/results/
    python benchmarks/sidebar.py --quick    # 500 versions, few repeats, nothing written
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, describe, finish

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {"median": round(statistics.median(ordered) * 1000, 2),
            "p90": round(ordered[max(0, int(len(ordered) * 0.9) - 1)] * 1000, 2), "n": len(ordered)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_lab(home: Path, folder: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    port, token = _free_port(), secrets.token_hex(16)
    for sub in ("config", "runtime", "settings", "workspaces", "root"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLOPS_HOME": str(home), "JUPYTER_CONFIG_DIR": str(folder / "config"),
           "JUPYTER_RUNTIME_DIR": str(folder / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(folder / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(folder / "workspaces")}
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
               f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder / 'root'}",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", f"/mlops/api/health?token={token}")
            if conn.getresponse().status == 200:
                return process, port, token
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("JupyterLab did not start within 60 s")


class Client:
    """Keep-alive HTTP to the REST API, as the browser does."""

    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": f"token {token}"}

    def get(self, path: str, etag: str | None = None) -> tuple[int, str | None, bytes]:
        headers = dict(self.headers, **({"If-None-Match": etag} if etag else {}))
        self.conn.request("GET", f"/mlops/api/{path}", headers=headers)
        answer = self.conn.getresponse()
        body = answer.read()
        if answer.status not in (200, 304):
            raise SystemExit(f"GET {path}: {answer.status} {body[:300]!r}")
        return answer.status, answer.getheader("Etag"), body

    def time(self, path: str, repeat: int, before: Callable[[], None] | None = None,
             etag: str | None = None, expect: int = 200) -> dict[str, Any]:
        seconds, size = [], 0
        for _ in range(repeat):
            if before is not None:
                before()
            start = time.perf_counter()
            status, _, body = self.get(path, etag)
            seconds.append(time.perf_counter() - start)
            if status != expect:
                raise SystemExit(f"GET {path}: {status}, expected {expect}")
            size = len(body)
        return {**_ms(seconds), "bytes": size}


def fill(home: Path, versions: int) -> float:
    import mlops_magics as mm
    from mlops_magics.registry import Registry

    reg = Registry(home)
    models = max(1, versions // 100)
    start = time.perf_counter()
    for i in range(versions):
        mm.register({"i": i}, f"model-{i % models:03d}", tags={"team": "cv", "run": str(i)}, registry=reg)
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    mm.register(LogisticRegression(max_iter=500).fit(X, y), "iris", sample=X[:3], alias="production", registry=reg)
    return time.perf_counter() - start


def browser_open_ms(port: int, token: str, rounds: int) -> dict[str, Any]:
    """Milliseconds from navigating to JupyterLab (sidebar tab restored open) to the models listed."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed"}
    if not Path(CHROMIUM).exists():
        return {"skipped": f"{CHROMIUM} is missing (apt-get install chromium)"}
    seconds = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(rounds):
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(f"http://127.0.0.1:{port}/lab?token={token}")
            page.locator('.lm-TabBar-tab[data-id="mlops-magics-sidebar"]').click()
            start = time.perf_counter()
            page.locator('#mlops-magics-sidebar [data-model="model-000"]').wait_for()
            seconds.append(time.perf_counter() - start)
            page.close()
        browser.close()
    return _ms(seconds)


def run(versions: int, repeat: int) -> dict[str, Any]:
    from mlops_magics import api
    from mlops_magics.registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        fill_s = fill(home, versions)
        reg = Registry(home)
        for name in ("svc-a", "svc-b"):
            api.deploy("iris@production", name=name, registry=reg)
        process, port, token = start_lab(home, Path(tmp) / "lab")
        try:
            client = Client(port, token)
            _, etag, body = client.get("models")
            listed = sum(len(m["versions"]) for m in json.loads(body))
            if listed != versions + 1:
                raise SystemExit(f"the listing holds {listed} versions, expected {versions + 1}")
            counter = iter(range(10**9))

            def change() -> None:  # a write from another connection, as another process's would be
                reg.set_report(reg.get("iris"), "bench", {"n": next(counter)})

            out: dict[str, Any] = {"versions": versions + 1, "models": max(1, versions // 100) + 1,
                                   "fill_seconds": round(fill_s, 1)}
            out["models_made_afresh"] = client.time("models", repeat, before=change)
            _, etag, _ = client.get("models")
            out["models_kept_sent"] = client.time("models", repeat)
            out["models_not_modified"] = client.time("models", repeat * 3, etag=etag, expect=304)
            _, d_etag, _ = client.get("deployments")
            out["deployments_2_live"] = client.time("deployments", repeat, etag=d_etag, expect=304)
            out["version_detail"] = client.time("models/iris/versions/1", repeat)
            out["logs_tail_200"] = client.time("deployments/svc-a/logs?tail=200", repeat)
            out["browser_open_to_listed"] = browser_open_ms(port, token, max(3, repeat // 10))
        finally:
            process.terminate()
            process.wait(timeout=30)
            api.undeploy(all_services=True, registry=reg)
    poll = out["models_not_modified"]["median"] + out["deployments_2_live"]["median"]
    out["server_ms_per_poll"] = round(poll, 2)
    out["server_ms_per_poll_before"] = round(out["models_made_afresh"]["median"] + out["deployments_2_live"]["median"],
                                             2)
    return out


def report(result: dict[str, Any]) -> str:
    r = result["sidebar"]
    rows = [
        (f"listing of {r['versions']:,} versions, made afresh (every poll, before)", r["models_made_afresh"]),
        ("listing unchanged: kept, sent in full", r["models_kept_sent"]),
        ("listing unchanged: ETag -> 304, nothing sent (every poll, now)", r["models_not_modified"]),
        ("deployments, 2 live ones checked", r["deployments_2_live"]),
        ("one version's detail", r["version_detail"]),
        ("log tail, 200 lines", r["logs_tail_200"]),
    ]
    lines = [
        "# Sidebar benchmark",
        "",
        f"Machine: {describe(result['machine'])}",
        f"Command: `python benchmarks/sidebar.py` (a real JupyterLab server on 127.0.0.1, keep-alive HTTP with the "
        f"token; {r['versions']:,} versions over {r['models']} models; filling took {r['fill_seconds']} s)",
        "",
        "| request | median ms | p90 ms | bytes |",
        "|---|---|---|---|",
    ]
    lines += [f"| {label} | {m['median']} | {m['p90']} | {m['bytes']:,} |" for label, m in rows]
    b = r["browser_open_to_listed"]
    browser = (f"{b['median']} ms median over {b['n']} page loads" if "median" in b else b["skipped"])
    lines += [
        "",
        f"Server time per 5-second poll of an open sidebar: {r['server_ms_per_poll']} ms now, "
        f"{r['server_ms_per_poll_before']} ms with the listing made afresh each time.",
        f"Chromium, from clicking the MLOps tab of a freshly loaded JupyterLab to the models listed: {browser}.",
        "",
        "The machine's speed drifts by up to ~50% between identical runs; figures are medians in one run.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = command_line(__doc__, "Small sizes; print only, write nothing.")
    parser.add_argument("--versions", type=int, default=10_000, help="Versions in the registry.")
    parser.add_argument("--repeat", type=int, default=30, help="Requests per measure.")
    args = parser.parse_args()
    if args.quick:
        args.versions, args.repeat = 500, 5
    os.environ.pop("MLOPS_HOME", None)
    return finish("sidebar", {"sidebar": run(args.versions, args.repeat)}, report, quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
