"""Service keys: never on a command line or in the database, rotated without downtime."""

from __future__ import annotations

import http.client
import json
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError

import mlops_magics as mm
from mlops_magics import cli
from mlops_magics.errors import ConflictError, NotFoundError
from mlops_magics.registry import Registry
from mlops_magics.targets.process import process_tree
from tests.schema import roll_back

pytestmark = pytest.mark.serve


@pytest.fixture
def clean(registry: Registry) -> Iterator[Registry]:
    yield registry
    mm.undeploy(all_services=True)


def _status(url: str, key: str | None) -> int:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    try:
        conn.request("POST", "/score", json.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]}), headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _stored_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.glob("registry.db*"))


def test_a_key_is_in_a_private_file_only_never_on_a_command_line_or_in_the_database(
        clean: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "secure")
    d = mm.deploy("secure", auth=True)
    keys = mm.keys("secure")
    assert d.auth_key == keys.primary and d.auth_keys == (keys.primary, keys.secondary)
    assert len(keys.primary) >= 40 and keys.primary != keys.secondary
    for pid in process_tree(int(d.config["pid"])):  # what `ps` shows every user of the machine
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert keys.primary.encode() not in command_line and keys.secondary.encode() not in command_line
    stored = _stored_bytes(clean.home)
    assert keys.primary.encode() not in stored and keys.secondary.encode() not in stored
    key_file = Path(d.config["key_file"])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert keys.primary not in repr(keys) and keys.primary[:4] in repr(keys)  # a notebook's output holds no key
    primary, secondary = keys  # unpacks like Azure's get_keys()
    assert (_status(str(d.url), primary), _status(str(d.url), secondary), _status(str(d.url), None)) == (200, 200, 401)
    mm.undeploy("secure")
    assert not key_file.exists()  # an undeployed service's keys are gone


def test_regenerating_one_key_never_refuses_a_client_holding_the_other(clean: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "rotate")
    d = mm.deploy("rotate", auth=True)
    old = mm.keys("rotate")
    statuses: list[int] = []
    stop = threading.Event()

    def client() -> None:  # a client on the primary key, all through the rotation of the secondary
        while not stop.is_set():
            statuses.append(_status(str(d.url), old.primary))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        new = mm.keys("rotate", regenerate="secondary")
    finally:
        stop.set()
        thread.join()
    assert statuses and set(statuses) == {200}
    assert new.primary == old.primary and new.secondary != old.secondary
    assert (_status(str(d.url), new.secondary), _status(str(d.url), old.secondary)) == (200, 401)
    last = mm.keys("rotate", regenerate="primary")
    assert (_status(str(d.url), old.primary), _status(str(d.url), last.primary)) == (401, 200)
    assert mm.call("rotate", [[5.1, 3.5, 1.4, 0.2]]) == [0]  # call sends the current primary
    assert last.primary.encode() not in _stored_bytes(clean.home)


def test_keys_mistakes_and_the_magic_and_command_line(clean: Registry, ip: Any, iris_lr: Any,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    mm.register(iris_lr, "open")
    mm.deploy("open")
    with pytest.raises(NotFoundError, match="Service 'open' requires no key: it was deployed without --auth"):
        mm.keys("open")
    with pytest.raises(UsageError, match="No deployment named 'ghost'"):
        ip.run_line_magic("keys", "ghost")
    mm.deploy("open", name="closed", auth=True)
    shown = ip.run_line_magic("keys", "closed --regenerate secondary")
    assert shown.primary == mm.keys("closed").primary and "read .primary" in repr(shown)
    assert cli.main(["--json", "keys", "closed"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"service": "closed", "primary": shown.primary, "secondary": shown.secondary}


def test_keys_stored_in_the_database_by_an_older_version_move_to_private_files(home: Path, iris_lr: Any) -> None:
    reg = Registry(home)
    mm.register(iris_lr, "legacy", registry=reg)
    config = {"pid": None, "port": 1, "auth_key": "an-old-plain-text-key-0123456789"}
    reg.record_deployment("legacy", "legacy:1", target="local", state="running", url=None, config=config)
    reg.record_deployment("old", "legacy:1", target="local", state="deleted", url=None,
                          config={**config, "auth_key": "a-deleted-services-key-0123456789"})
    roll_back(home / "registry.db", 6).close()  # as an older mlops-magics left it (schema 6)
    reg = Registry(home)
    legacy, old = reg.get_deployment("legacy"), reg.get_deployment("old")
    assert "auth_key" not in legacy.config and "auth_key" not in old.config
    assert legacy.auth_key == "an-old-plain-text-key-0123456789" and old.auth_key is None
    with pytest.raises(ConflictError, match=r"started by an older mlops-magics.*Run %reload legacy first"):
        mm.keys("legacy", regenerate="secondary", registry=reg)  # its server reads no file: nothing would change
    assert reg.keys.get("legacy").primary == "an-old-plain-text-key-0123456789"
    reg.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert b"plain-text-key" not in _stored_bytes(home) and b"deleted-services-key" not in _stored_bytes(home)


def test_the_profilers_load_generator_sends_the_key_it_gets_in_its_environment(clean: Registry, iris_lr: Any,
                                                                      tmp_path: Path) -> None:
    from mlops_magics.profiling.profile import generate_load

    mm.register(iris_lr, "loaded")
    d = mm.deploy("loaded", auth=True)
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]}))
    summary = generate_load(f"{d.url}/score", body, 1, 1.0, d.auth_key)
    assert summary["statuses"] and set(summary["statuses"]) == {"200"}  # authorised: the key reached it
    assert set(generate_load(f"{d.url}/score", body, 1, 0.3, None)["statuses"]) == {"401"}
