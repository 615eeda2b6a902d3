"""The scoring server as a process: start-up failures, settings, workers, auth, limits, metrics, logs."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.serving import SCRIPTS, Served, free_port, metric, mlops_serve, serving, start, stop, wait_healthy

pytestmark = pytest.mark.serve


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([mlops_serve(), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


# -- start-up failures: exit non-zero, no half-up server ---------------------------------------

def test_init_failure_exits_3_with_the_traceback_and_the_model_folder(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"x")
    done = _run("--entry_script", str(SCRIPTS / "init_fails.py"), "--port", str(free_port()),
                "--model_dir", str(tmp_path))
    assert done.returncode == 3
    assert "init() of" in done.stderr and "FileNotFoundError" in done.stderr and "missing-model.pkl" in done.stderr
    assert "Contents of the model folder" in done.stderr and "model.pkl" in done.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_ready_file_left_by_an_earlier_run_is_removed_at_start(tmp_path: Path, workers: str) -> None:
    # A pod restarted in place keeps its scratch space: the ready file of the crashed run must not make the new
    # one look ready (the kubernetes target's readiness probe on a shared port reads it).
    ready = tmp_path / "ready"
    ready.write_text("12345\n")
    done = _run("--entry_script", str(SCRIPTS / "init_fails.py"), "--port", str(free_port()),
                "--worker_count", workers, "--ready-file", str(ready), "--model_dir", str(tmp_path))
    assert done.returncode == 3 and not ready.exists()


def test_import_failure_exits_3_naming_the_module(tmp_path: Path) -> None:
    done = _run("--entry_script", str(SCRIPTS / "import_fails.py"), "--port", str(free_port()))
    assert done.returncode == 3
    assert "Importing the entry script" in done.stderr and "package_that_does_not_exist" in done.stderr


@pytest.mark.parametrize("source, message", [
    ("def run(data):\n    return data\n", "does not define a init() function"),
    ("def init():\n    pass\n", "does not define a run() function"),
    ("def init():\n    pass\ndef run(*args):\n    return 1\n", "positional-only, *args or **kwargs"),
    ("def init():\n    pass\ndef run(request_headers):\n    return 1\n", "request_headers alone is not enough"),
])
def test_scripts_the_server_cannot_call_are_refused_at_start(tmp_path: Path, source: str, message: str) -> None:
    (tmp_path / "score.py").write_text(source)
    done = _run("--entry_script", str(tmp_path / "score.py"), "--port", str(free_port()))
    assert done.returncode == 3 and message in done.stderr


@pytest.mark.parametrize("args, message", [
    (["--entry_script", "/no/such/score.py"], "Entry script '/no/such/score.py' does not exist"),
    ([], "No entry script"),
    (["--entry_script", str(SCRIPTS / "echo.py"), "--worker_count", "0"], "Worker count 0 is invalid"),
    (["--entry_script", str(SCRIPTS / "echo.py"), "--model_dir", "/no/models"], "Model folder '/no/models'"),
    (["--entry_script", str(SCRIPTS / "echo.py"), "--auth-key", "short"], "at least 8 characters"),
    (["--entry_script", str(SCRIPTS / "echo.py"), "--max-concurrent-requests", "0"],
     "--max-concurrent-requests 0 is too small: use 1 or more"),
    (["--entry_script", str(SCRIPTS / "echo.py"), "--header-timeout-s", "0"], "--header-timeout-s 0 is out of range"),
    (["--entry_script", str(SCRIPTS / "echo.py"), "--max-header-bytes", "10"], "--max-header-bytes 10 is too small"),
    (["--entry_script", str(SCRIPTS / "echo.py"), "--auth-key-file", "/no/keys"],
     "The auth key file '/no/keys' does not exist"),
])
def test_bad_settings_exit_2_with_what_to_fix(args: list[str], message: str) -> None:
    done = _run(*args, env={"AZUREML_ENTRY_SCRIPT": ""})
    assert done.returncode == 2 and message in done.stderr


def test_the_bounds_are_documented_in_help_with_their_variables_and_defaults() -> None:
    text = " ".join(_run("--help").stdout.split())
    for flag, variable, default in (("--max-concurrent-requests", "MLOPS_MAX_CONCURRENT_REQUESTS", "default 1"),
                                    ("--max-request-wait-ms", "MLOPS_MAX_REQUEST_WAIT_MS", "default 500"),
                                    ("--max-header-bytes", "MLOPS_MAX_HEADER_BYTES", "default 65536"),
                                    ("--max-header-count", "MLOPS_MAX_HEADER_COUNT", "default 100"),
                                    ("--max-url-bytes", "MLOPS_MAX_URL_BYTES", "default 8192"),
                                    ("--header-timeout-s", "MLOPS_HEADER_TIMEOUT_S", "default 10"),
                                    ("--body-timeout-s", "MLOPS_BODY_TIMEOUT_S", "default 60"),
                                    ("--keep-alive-s", "MLOPS_KEEP_ALIVE_S", "default 30"),
                                    ("--max-connections", "MLOPS_MAX_CONNECTIONS", "default 1000"),
                                    ("--auth-key-file", "MLOPS_AUTH_KEY_FILE", "chmod 600")):
        assert flag in text and variable in text, flag
        assert default in text.split(flag, 2)[-1][:600], (flag, default)


def test_the_bounds_can_be_set_from_the_environment(tmp_path: Path) -> None:
    env = {"MLOPS_MAX_URL_BYTES": "100", "MLOPS_MAX_REQUEST_WAIT_MS": "abc"}
    done = _run("--entry_script", str(SCRIPTS / "echo.py"), env=env)
    assert done.returncode == 2 and "MLOPS_MAX_REQUEST_WAIT_MS='abc' is not a whole number" in done.stderr
    with serving("echo.py", logs=tmp_path, env={"MLOPS_MAX_URL_BYTES": "100"}) as s:
        assert s.request("GET", "/?" + "a" * 200).status == 414
        assert s.request("GET", "/?" + "a" * 50).status == 200


def test_a_port_in_use_is_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for workers in ("1", "2"):
            done = _run("--entry_script", str(SCRIPTS / "echo.py"), "--port", str(port), "--worker_count", workers)
            assert done.returncode == 3 and f"Cannot listen on 127.0.0.1:{port}" in done.stderr
            assert "pick another with --port" in done.stderr


# -- settings from the environment and a config file (as azmlinfsrv reads them) ---------------

def test_environment_variables_configure_the_server(tmp_path: Path) -> None:
    env = {"AZUREML_ENTRY_SCRIPT": str(SCRIPTS / "slow.py"), "SCORING_TIMEOUT_MS": "200", "SERVICE_NAME": "envsvc"}
    with serving(None, logs=tmp_path, env=env) as s:
        assert s.request("POST", "/score", "slow").message == "Scoring timeout after 200 ms"
        assert s.request("GET", "/swagger.json").json()["info"]["title"] == "envsvc"


def test_the_command_line_wins_over_the_environment(tmp_path: Path) -> None:
    with serving("echo.py", logs=tmp_path, env={"AZUREML_ENTRY_SCRIPT": str(SCRIPTS / "raising.py")}) as s:
        assert s.request("POST", "/score", "x").json() == "x"


def test_a_config_file_is_read_and_the_command_line_wins(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"SCORING_TIMEOUT_MS": 250, "SERVICE_NAME": "fromfile"}))
    with serving("slow.py", "--config_file", str(config), logs=tmp_path) as s:
        assert s.request("POST", "/score", "slow").message == "Scoring timeout after 250 ms"
    with serving("slow.py", "--config_file", str(config), "--scoring-timeout-ms", "150", logs=tmp_path) as s:
        assert s.request("POST", "/score", "slow").message == "Scoring timeout after 150 ms"
    (tmp_path / "broken.json").write_text("{")
    done = _run("--entry_script", str(SCRIPTS / "echo.py"), "--config_file", str(tmp_path / "broken.json"))
    assert done.returncode == 2 and "is not valid JSON" in done.stderr


# -- our additions: auth, body limit, metrics, access log, CORS, readiness --------------------

def test_key_auth_protects_score_only(tmp_path: Path) -> None:
    with serving("echo.py", "--auth-key", "primary-key-123", "--auth-key", "secondary-key-456", logs=tmp_path) as s:
        missing = s.request("POST", "/score", "x")
        assert missing.status == 401 and "Authorization: Bearer" in missing.message
        assert missing.headers["www-authenticate"] == "Bearer"
        assert s.request("POST", "/score", "x", {"Authorization": "Bearer wrong-key-000"}).status == 401
        assert s.request("POST", "/score", "x", {"Authorization": "primary-key-123"}).status == 401
        for key in ("primary-key-123", "secondary-key-456"):
            assert s.request("POST", "/score", "x", {"Authorization": f"Bearer {key}"}).json() == "x"
        assert s.request("GET", "/").status == 200
        assert s.request("GET", "/swagger.json").json()["paths"]["/score"]["post"]["security"] == [{"Bearer": []}]


def test_keys_can_come_from_the_environment(tmp_path: Path) -> None:
    with serving("echo.py", logs=tmp_path, env={"MLOPS_AUTH_KEYS": "env-key-12345"}) as s:
        assert s.request("POST", "/score", "x").status == 401
        assert s.request("POST", "/score", "x", {"Authorization": "Bearer env-key-12345"}).status == 200
        assert "warning" not in s.log()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _write_keys(path: Path, *keys: str, mode: int = 0o600) -> None:
    """Rewrite a key file the safe way: a new file, then a rename over the old one."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text("".join(f"{k}\n" for k in keys))
    fresh.chmod(mode)
    fresh.replace(path)


def _accepts(s: Any, key: str) -> bool:
    return bool(s.request("POST", "/score", "x", _bearer(key)).status == 200)


def _eventually(condition: Any, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def test_keys_come_from_a_0600_file_and_a_rewrite_rotates_them_without_a_restart(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    _write_keys(keys, "primary-key-001", "secondary-key-001")
    with serving("echo.py", "--auth-key-file", str(keys), logs=tmp_path) as s:
        pid = s.process.pid
        assert _accepts(s, "primary-key-001") and _accepts(s, "secondary-key-001")
        assert not _accepts(s, "other-key-0001")
        assert s.request("POST", "/score", "x").status == 401
        assert "primary-key-001" not in Path(f"/proc/{pid}/cmdline").read_text()
        # regenerate the primary: clients moved to the secondary meanwhile keep working throughout
        _write_keys(keys, "primary-key-002", "secondary-key-001")
        assert _eventually(lambda: _accepts(s, "primary-key-002"))
        assert not _accepts(s, "primary-key-001") and _accepts(s, "secondary-key-001")
        # a botched rewrite (readable by all, then empty) keeps the keys in force, and says why
        _write_keys(keys, "primary-key-003", mode=0o644)
        time.sleep(1.5)
        assert _accepts(s, "primary-key-002") and not _accepts(s, "primary-key-003")
        _write_keys(keys)
        time.sleep(1.5)
        assert _accepts(s, "primary-key-002")
        assert "chmod 600" in s.log() and "holds no key" in s.log()
        assert "The keys in force stay valid" in s.log()
        _write_keys(keys, "primary-key-004")
        assert _eventually(lambda: _accepts(s, "primary-key-004"))
        assert not _accepts(s, "primary-key-002")
        assert s.process.pid == pid and s.process.poll() is None
        assert s.request("GET", "/swagger.json").json()["paths"]["/score"]["post"]["security"] == [{"Bearer": []}]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_key_file_open_to_group_or_others_is_refused_at_start(tmp_path: Path, mode: int) -> None:
    keys = tmp_path / "keys"
    _write_keys(keys, "primary-key-001", mode=mode)
    done = _run("--entry_script", str(SCRIPTS / "echo.py"), "--auth-key-file", str(keys))
    assert done.returncode == 2
    assert "is open to group or others" in done.stderr and f"chmod 600 {keys}" in done.stderr


def test_a_key_file_is_named_by_the_environment_and_excludes_other_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    _write_keys(keys, "file-key-00001")
    with serving("echo.py", logs=tmp_path, env={"MLOPS_AUTH_KEY_FILE": str(keys)}) as s:
        assert _accepts(s, "file-key-00001")
    done = _run("--entry_script", str(SCRIPTS / "echo.py"), "--auth-key-file", str(keys),
                env={"MLOPS_AUTH_KEYS": "env-key-12345"})
    assert done.returncode == 2 and "not both" in done.stderr
    _write_keys(keys, "k1-00000000", "k2-00000000", "k3-00000000")
    done = _run("--entry_script", str(SCRIPTS / "echo.py"), "--auth-key-file", str(keys))
    assert done.returncode == 2 and "holds 3 keys: at most 2" in done.stderr


def test_a_key_on_the_command_line_works_but_warns_that_ps_shows_it(tmp_path: Path) -> None:
    with serving("echo.py", "--auth-key", "argv-key-12345", logs=tmp_path) as s:
        assert _accepts(s, "argv-key-12345")
        assert "warning: --auth-key puts the key on the command line" in s.log()
        assert "--auth-key-file" in s.log()


def test_the_entry_script_does_not_inherit_the_keys_variable(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text("import os\n\ndef init():\n    pass\n\n"
                                       "def run(data):\n    return os.environ.get('MLOPS_AUTH_KEYS', 'unset')\n")
    with serving(tmp_path / "score.py", logs=tmp_path, env={"MLOPS_AUTH_KEYS": "env-key-12345"}) as s:
        assert s.request("POST", "/score", "x", _bearer("env-key-12345")).json() == "unset"


def test_log_dir_appends_both_logs_across_restarts(tmp_path: Path) -> None:
    logs = tmp_path / "volume" / "logs"
    for round_ in (1, 2):
        with serving("echo.py", "--log-dir", str(logs), logs=tmp_path) as s:
            assert s.request("POST", "/score", f"round {round_}").status == 200
        assert s.stderr.read_text() == "" and s.stdout.read_text() == ""  # nothing left on the streams
    assert (logs / "server.log").read_text().count("serving echo.py") == 2
    access = [json.loads(line) for line in (logs / "access.log").read_text().splitlines()]
    assert [a["path"] for a in access if a["path"] == "/score"] == ["/score", "/score"]
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    done = _run("--entry_script", str(SCRIPTS / "echo.py"), "--log-dir", str(blocked / "logs"))
    assert done.returncode == 2 and f"cannot write logs in {blocked / 'logs'}" in done.stderr


def test_a_body_over_the_limit_is_a_413(tmp_path: Path) -> None:
    with serving("echo.py", "--max-body-bytes", "1000", logs=tmp_path) as s:
        assert s.request("POST", "/score", "a" * 1000).status == 200
        too_big = s.request("POST", "/score", "a" * 1001)
        assert too_big.status == 413 and "limit of 1000 bytes" in too_big.message
        assert s.request("POST", "/score", "ok").json() == "ok"


def test_metrics_count_requests_failures_and_latency(tmp_path: Path) -> None:
    with serving("raising.py", logs=tmp_path) as s:
        for _ in range(3):
            s.request("POST", "/score", "x")
        s.request("GET", "/nope")
        text = s.request("GET", "/metrics").body.decode()
    assert metric(text, "mlops_requests_total", worker="0", route="score", status="500") == 3
    assert metric(text, "mlops_requests_total", worker="0", route="other", status="404") == 1
    assert metric(text, "mlops_run_failures_total", worker="0") == 3
    assert metric(text, "mlops_score_duration_seconds_count", worker="0") == 3
    assert metric(text, "mlops_score_duration_seconds_bucket", worker="0", le="+Inf") == 3
    assert metric(text, "mlops_requests_in_flight", worker="0") == 1  # the /metrics request itself


def test_each_request_writes_one_json_access_log_line(tmp_path: Path) -> None:
    with serving("echo.py", logs=tmp_path) as s:
        s.request("POST", "/score", "x", {"x-request-id": "log-me"})
        time.sleep(0.8)  # the log is flushed half a second after the first buffered line
        lines = [json.loads(line) for line in s.stdout.read_text().splitlines()]
    record = next(r for r in lines if r["request_id"] == "log-me")
    assert (record["method"], record["path"], record["status"]) == ("POST", "/score", 200)
    assert record["ms"] >= 0 and record["bytes"] == 3


def test_cors_origins_are_allowed_when_configured(tmp_path: Path) -> None:
    with serving("echo.py", logs=tmp_path, env={"AML_CORS_ORIGINS": "http://app.local"}) as s:
        ok = s.request("POST", "/score", "x", {"Origin": "http://app.local"})
        assert ok.headers["access-control-allow-origin"] == "http://app.local"
        other = s.request("POST", "/score", "x", {"Origin": "http://evil.local"})
        assert "access-control-allow-origin" not in other.headers
        preflight = s.request("OPTIONS", "/score", headers={"Origin": "http://app.local"})
        assert preflight.headers["access-control-allow-methods"] == "GET, POST, OPTIONS"


def test_sigterm_finishes_the_request_in_flight_then_exits_0(tmp_path: Path) -> None:
    import threading

    served = start("slow.py", "--scoring-timeout-ms", "1500", logs=tmp_path)
    wait_healthy(served)
    replies: list[int] = []
    worker = threading.Thread(target=lambda: replies.append(served.request("POST", "/score", "slow").status))
    worker.start()
    time.sleep(0.3)
    served.process.send_signal(signal.SIGTERM)
    worker.join(10)
    assert replies == [500]  # the in-flight request was answered (its timeout), not dropped
    assert served.process.wait(10) == 0


def test_a_keep_alive_clients_next_request_is_answered_while_the_server_stops(tmp_path: Path) -> None:
    # In a rolling update the old server gets SIGTERM while keep-alive clients are between two requests; closing
    # their idle connections at once lost about one request per client (the next one was already on its way).
    served = start("echo.py", logs=tmp_path)
    wait_healthy(served)
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        connection.request("POST", "/score", "first")
        first = connection.getresponse()
        assert first.status == 200 and first.read() and first.getheader("connection") != "close"
        served.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # the server has begun stopping
        connection.request("POST", "/score", "second")  # on the same connection
        second = connection.getresponse()
        assert second.status == 200 and second.read() and second.getheader("connection") == "close"
    finally:
        connection.close()
    assert served.process.wait(10) == 0


# -- several workers -------------------------------------------------------------------------

def test_two_workers_both_serve_and_a_killed_worker_is_replaced(tmp_path: Path) -> None:
    served = start("echo.py", "--worker_count", "2", logs=tmp_path)
    try:
        wait_healthy(served)  # one worker answers: the other may still be starting
        deadline = time.monotonic() + 30
        while "all 2 workers ready" not in served.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(200):  # a new connection each time: the kernel spreads them over the workers
            assert served.request("POST", "/score", "x").status == 200
        text = served.request("GET", "/metrics").body.decode()
        counts = {w: _score_count(text, w) for w in ("0", "1")}
        assert all(c > 20 for c in counts.values()), counts
        worker_pids = [int(p) for p in subprocess.run(["pgrep", "-P", str(served.process.pid)],
                                                      capture_output=True, text=True).stdout.split()]
        assert len(worker_pids) == 2
        os.kill(worker_pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            now = subprocess.run(["pgrep", "-P", str(served.process.pid)], capture_output=True, text=True)
            pids = [int(p) for p in now.stdout.split()]
            if len(pids) == 2 and worker_pids[0] not in pids:
                break
            time.sleep(0.1)
        assert len(pids) == 2 and worker_pids[0] not in pids, served.log()
        assert "died with exit status -9; starting it again" in served.log()
        for _ in range(20):
            assert served.request("POST", "/score", "x").status == 200
    finally:
        assert stop(served) == 0


def _workers(served: Served) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(served.process.pid)], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


def _kill_and_await_replacement(served: Served, pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        pids = _workers(served)
        if len(pids) == 2 and pid not in pids:
            break
        time.sleep(0.1)
    assert len(pids) == 2 and pid not in pids, served.log()
    wait_healthy(served)


def test_dead_workers_keep_their_counts_and_leave_nothing_in_flight(tmp_path: Path) -> None:
    import threading

    served = start("slow.py", "--worker_count", "2", logs=tmp_path)
    try:
        wait_healthy(served)
        sent = 0
        while sent < 600:  # a new connection each time: the kernel spreads them over both workers' sockets
            for _ in range(20):
                assert served.request("POST", "/score", "fast").status == 200
            sent += 20
            before = served.request("GET", "/metrics").body.decode()
            counts = {w: _score_count(before, w) for w in ("0", "1")}
            if all(c > 0 for c in counts.values()):
                break
        assert all(c > 0 for c in counts.values()) and sum(counts.values()) == sent, counts
        held = threading.Thread(target=_slow, args=(served,), daemon=True)
        held.start()  # a request in flight (run() sleeps) when its worker is killed
        time.sleep(0.5)
        for pid in _workers(served):
            _kill_and_await_replacement(served, pid)
        held.join(5)  # its worker died: the connection is reset at once (unless it reached a new worker late)

        def in_flight() -> tuple[int, str]:
            after = served.request("GET", "/metrics").body.decode()
            return sum(metric(after, "mlops_requests_in_flight", worker=w) or 0 for w in ("0", "1")), after

        # A held request that reached a new worker late is counted once that worker reads it: wait for that.
        deadline = time.monotonic() + 5
        while in_flight()[0] != 1 + held.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(5):  # whichever worker answers: the scrape itself is in flight, and nothing of the dead
            count, after = in_flight()
            assert count == 1 + held.is_alive(), after
            assert all(_score_count(after, w) >= counts[w] for w in ("0", "1")), after
    finally:
        stop(served)


def _slow(served: Served) -> None:
    with contextlib.suppress(OSError, http.client.HTTPException):
        served.request("POST", "/score", "slow", timeout=20)


def _score_count(metrics: str, worker: str) -> int:
    return int(metric(metrics, "mlops_requests_total", worker=worker, route="score", status="200") or 0)


def test_a_worker_that_fails_init_stops_the_whole_server(tmp_path: Path) -> None:
    done = _run("--entry_script", str(SCRIPTS / "init_fails.py"), "--port", str(free_port()), "--worker_count", "2")
    assert done.returncode == 3 and "failed to start (exit status 3); stopping the server" in done.stderr


# -- the azureml compatibility modules -------------------------------------------------------

def test_compat_modules_exist_only_inside_the_server_process() -> None:
    code = "import mlops_backend.app, mlops_backend.entry\nimport azureml"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1 and "No module named 'azureml'" in done.stderr


def test_a_real_azureml_installation_wins_over_the_compat_modules(tmp_path: Path) -> None:
    real = tmp_path / "site"
    (real / "azureml" / "core").mkdir(parents=True)
    (real / "azureml" / "__init__.py").write_text("")
    (real / "azureml" / "core" / "__init__.py").write_text("")
    (real / "azureml" / "core" / "model.py").write_text("class Model:\n    REAL = True\n")
    (tmp_path / "score.py").write_text(
        "from azureml.core.model import Model\n\ndef init():\n    pass\n\n"
        "def run(data):\n    return getattr(Model, 'REAL', False)\n")
    with serving(tmp_path / "score.py", logs=tmp_path / "logs", env={"PYTHONPATH": str(real)}) as s:
        assert s.request("POST", "/score", "x").json() is True
