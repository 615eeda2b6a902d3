"""The edge runtime (mlops_backend.edge): the device's buffer, the agent, the hub, the MQTT bridge, the module.

Real processes, a real SQLite file, real HTTP on 127.0.0.1, a real mosquitto broker (skipped, saying why, when
``mosquitto`` is not installed, unless MLOPS_REQUIRE_MQTT=1). Kills are real kill -9s.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from mlops_backend.collection_store import read_stats, segments
from mlops_backend.edge.agent import parse_bytes
from mlops_backend.edge.buffer import Buffer, BufferError

from mlops_magics.monitoring import store
from tests.serving import Served, free_port, serving, start, stop, wait_healthy

pytestmark = pytest.mark.serve

DEVICE = "sim-1"


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30, logs: Callable[[], str] = str) -> Any:
    """Poll ``condition`` until it is true; fail saying ``what`` was awaited (and the logs) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs()}")
        time.sleep(0.01)


@dataclass
class Proc:
    """A ``python -m`` process of the edge runtime, its stderr in a file."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                raise AssertionError(f"did not stop within {timeout} s of SIGTERM:\n{self.log()}") from None
        return self.process.returncode


def python_m(module: str, *args: str, logs: Path, name: str, env: dict[str, str] | None = None) -> Proc:
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"{name}-{time.monotonic_ns()}.err"
    with open(path, "wb") as err:
        process = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.DEVNULL, stderr=err,
                                   env={**os.environ, **(env or {})})
    return Proc(process, path)


@contextmanager
def running(proc: Proc) -> Iterator[Proc]:
    try:
        yield proc
    finally:
        if proc.process.poll() is None:
            proc.kill9()


def start_hub(root: Path, port: int, logs: Path) -> Proc:
    ready = logs / f"hub-ready-{port}"
    ready.unlink(missing_ok=True)
    hub = python_m("mlops_backend.edge.hub", "--root", str(root), "--port", str(port), "--ready-file", str(ready),
                   logs=logs, name="hub")
    wait_for(lambda: ready.exists() or hub.process.poll() is not None, "the hub to listen", logs=hub.log)
    assert hub.process.poll() is None, f"the hub exited with {hub.process.returncode}:\n{hub.log()}"
    return hub


def start_agent(collect: Path, buffer: Path, hub_port: int, status: Path, logs: Path, *args: str) -> Proc:
    return python_m("mlops_backend.edge.agent", "--collect-dir", str(collect), "--buffer", str(buffer),
                    "--hub", f"http://127.0.0.1:{hub_port}", "--device", DEVICE, "--status-file", str(status),
                    "--poll-s", "0.05", *args, logs=logs, name="agent")


def status_of(path: Path) -> dict[str, Any]:
    try:
        return dict(orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError):
        return {}


def hub_records(root: Path) -> list[dict[str, Any]]:
    """What ``%collected`` reads from the device's folder on this machine."""
    return list(store.records(root / DEVICE))


def hub_count(root: Path) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in segments(root / DEVICE, closed_only=True))


def scoring(collect: Path, logs: Path) -> Any:
    return serving("json_echo.py", "--collect-dir", str(collect), "--collect-segment-s", "0.2", logs=logs,
                   env={"MLOPS_COLLECT_FLUSH_S": "0.05"})


# -- the buffer -----------------------------------------------------------------------------


def test_the_buffer_evicts_the_oldest_past_its_size_and_counts_them(tmp_path: Path) -> None:
    with Buffer(tmp_path / "buffer.sqlite", max_bytes=1000) as buffer:
        records = [b'{"i": "%03d", "pad": "%s"}' % (i, b"x" * 77) for i in range(30)]  # 100 bytes each
        assert {len(r) for r in records} == {100}
        assert buffer.append(records[:10]) == (1, 10)
        assert buffer.stats().evicted == 0
        buffer.append(records[10:25])
        stats = buffer.stats()
        assert (stats.records, stats.bytes, stats.evicted, stats.evicted_bytes) == (10, 1000, 15, 1500)
        assert [offset for offset, _ in buffer.pending(100)] == list(range(16, 26)), "the oldest went first"
    with Buffer(tmp_path / "buffer.sqlite", max_bytes=1000) as buffer:  # the counts are kept in the file
        buffer.append(records[25:])
        stats = buffer.stats()
        assert (stats.records, stats.evicted, stats.taken, stats.last_offset) == (10, 20, 30, 30)
        assert [int(orjson.loads(r)["i"]) for _, r in buffer.pending(100)] == list(range(20, 30))


def test_the_buffer_keeps_order_and_its_acknowledged_offset_across_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    with Buffer(path, max_bytes=10**6) as buffer:
        epoch = buffer.epoch
        buffer.append([b'{"i":"%02d"}' % i for i in range(100)])
        batch = buffer.pending(30, max_bytes=10**6)
        assert [o for o, _ in batch] == list(range(1, 31))
        assert len(buffer.pending(100, max_bytes=50)) == 5, "bytes bound the batch too (10 bytes a record)"
        assert buffer.ack(30) == 30 and buffer.ack(20) == 0, "an older acknowledgement changes nothing"
    with Buffer(path, max_bytes=10**6) as buffer:
        assert buffer.epoch == epoch
        stats = buffer.stats()
        assert (stats.acked, stats.forwarded, stats.records) == (30, 30, 70)
        assert [int(orjson.loads(r)["i"]) for _, r in buffer.pending(1000)] == list(range(30, 100))
        assert buffer.append([b'{"i": 100}']) == (101, 101), "offsets go on, never reused"
    with pytest.raises(BufferError, match="is in use by another process"), Buffer(path, 10**6), Buffer(path, 10**6):
        pass
    path.unlink()
    for extra in ("-wal", "-shm"):
        Path(f"{path}{extra}").unlink(missing_ok=True)
    with Buffer(path, max_bytes=10**6) as fresh:
        assert fresh.epoch != epoch, "a new buffer is a new epoch: the hub does not take its offsets for old ones"


def test_a_segment_taken_before_a_kill_is_only_removed_never_taken_twice(tmp_path: Path) -> None:
    records_dir = tmp_path / "collected" / "records"
    records_dir.mkdir(parents=True)
    segment = records_dir / "20250101T000000-w0-00000000-0001.jsonl"
    segment.write_bytes(b"".join(b'{"request_id": "r%d"}\n' % i for i in range(5)))
    copy = tmp_path / "copy"
    shutil.copy(segment, copy)
    with Buffer(tmp_path / "buffer.sqlite", max_bytes=10**6) as buffer:
        assert buffer.take_segment(segment) == 5 and not segment.exists()
        # A kill between the commit and the removal: the file is still there, and so is its name in the buffer.
        shutil.copy(copy, segment)
        buffer._db.execute("INSERT INTO taken VALUES (?, 1, 5, 0)", (segment.name,))
        assert buffer.take_segment(segment) == 0 and not segment.exists()
        shutil.copy(copy, segment)
        buffer._db.execute("INSERT INTO taken VALUES (?, 1, 5, 0)", (segment.name,))
    with Buffer(tmp_path / "buffer.sqlite", max_bytes=10**6) as buffer:
        assert buffer.settle(records_dir) == 1 and not segment.exists()
        assert buffer.taken_segments() == []
        assert [orjson.loads(r)["request_id"] for _, r in buffer.pending(100)] == [f"r{i}" for i in range(5)]


@pytest.mark.parametrize("text, size", [("1000", 1000), ("256m", 256 * 2**20), ("1GiB", 2**30), ("64 k", 65536)])
def test_sizes_are_read_with_binary_suffixes(text: str, size: int) -> None:
    assert parse_bytes(text) == size


# -- the hub --------------------------------------------------------------------------------

EPOCH = "20250101T000000-0123abcd"


def post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def batch(offsets: range | list[int]) -> bytes:
    return b"".join(b'%d\t{"request_id": "r%d"}\n' % (o, o) for o in offsets)


def records_path(first: int, last: int) -> str:
    return f"/v1/devices/{DEVICE}/records?epoch={EPOCH}&first={first}&last={last}"


def test_the_hub_keeps_only_the_new_part_of_an_overlapping_batch_and_knows_its_offset_after_a_restart(
        tmp_path: Path) -> None:
    root, port = tmp_path / "hub", free_port()
    with running(start_hub(root, port, tmp_path)) as hub:
        assert post(port, records_path(1, 10), batch(range(1, 11)))[1]["stored"] == 10
        assert post(port, records_path(5, 15), batch(range(5, 16)))[1]["stored"] == 15
        assert post(port, records_path(3, 8), batch(range(3, 9)))[1]["stored"] == 15, "all known: nothing stored"
        assert post(port, records_path(18, 20), batch([18, 20]))[1]["stored"] == 20, "gaps: evicted on the device"
        second = subprocess.run([sys.executable, "-m", "mlops_backend.edge.hub", "--root", str(root), "--port", "0"],
                                capture_output=True, text=True, timeout=60)
        assert (second.returncode, "Another hub stores into" in second.stderr) == (2, True), second.stderr
        assert hub.stop() == 0
    (root / DEVICE / "records" / ".half-written.jsonl.tmp").write_bytes(b'{"request_id": "r99"')  # a killed write
    with running(start_hub(root, port, tmp_path)) as hub:
        status, answer = post(port, records_path(12, 21), batch(range(12, 22)))
        assert (status, answer["stored"]) == (200, 21)
        assert hub.stop() == 0
    assert [r["request_id"] for r in hub_records(root)] == [f"r{i}" for i in [*range(1, 16), 18, 20, 21]]
    assert not list((root / DEVICE / "records").glob(".*")), "the temporary file of a killed write is removed"
    state = json.loads((root / DEVICE / "hub.json").read_text())
    assert (state["stored"], state["epoch"]) == (21, EPOCH)


def test_the_hub_stores_a_named_devices_records_in_its_own_folder_and_reads_its_offset_there(
        tmp_path: Path) -> None:
    root, folder, port = tmp_path / "hub", tmp_path / "service" / "collected", free_port()
    ready = tmp_path / "hub-ready"

    def named_hub() -> Proc:
        ready.unlink(missing_ok=True)
        hub = python_m("mlops_backend.edge.hub", "--root", str(root), "--device-folder", f"{DEVICE}={folder}",
                       "--port", str(port), "--ready-file", str(ready), logs=tmp_path, name="hub")
        wait_for(lambda: ready.exists() or hub.process.poll() is not None, "the hub to listen", logs=hub.log)
        return hub

    with running(named_hub()) as hub:
        assert post(port, records_path(1, 5), batch(range(1, 6)))[1]["stored"] == 5
        assert hub.stop() == 0
    with running(named_hub()) as hub:
        assert post(port, records_path(3, 8), batch(range(3, 9)))[1]["stored"] == 8, "offset 5 read from the folder"
        assert hub.stop() == 0
    assert [r["request_id"] for r in store.records(folder)] == [f"r{i}" for i in range(1, 9)]
    assert not (root / DEVICE).exists() and json.loads((folder / "hub.json").read_text())["stored"] == 8
    bad = subprocess.run([sys.executable, "-m", "mlops_backend.edge.hub", "--root", str(root), "--device-folder",
                          "no-equals", "--port", "0"], capture_output=True, text=True, timeout=60)
    assert (bad.returncode, "is not DEVICE=PATH" in bad.stderr) == (2, True), bad.stderr


def test_the_hub_refuses_malformed_and_oversized_batches_saying_why(tmp_path: Path) -> None:
    root, port = tmp_path / "hub", free_port()
    ready = tmp_path / "ready"
    hub = python_m("mlops_backend.edge.hub", "--root", str(root), "--port", str(port), "--max-body-bytes", "2048",
                   "--ready-file", str(ready), logs=tmp_path, name="hub")
    with running(hub):
        wait_for(ready.exists, "the hub to listen", logs=hub.log)
        cases = [
            (records_path(1, 2), b"1\t{}\nnot a line\n", 400, "line 2 of the batch is not '<offset>\\t<record JSON>'"),
            (records_path(1, 2), b"2\t{}\n1\t{}\n", 400, "offset 1 does not follow 2"),
            (records_path(1, 1), b"1\t[1, 2]\n", 400, "the record is not a JSON object"),
            (records_path(1, 1), b"1\t{\"a\": \n", 400, "the record is not JSON"),
            (records_path(1, 9), batch(range(1, 3)), 400, "says offsets 1..9 but holds 1..2"),
            (f"/v1/devices/{DEVICE}/records?epoch=bad&first=1&last=1", batch([1]), 400, "epoch='bad' is missing"),
            (f"/v1/devices/bad%20name/records?epoch={EPOCH}&first=1&last=1", batch([1]), 400, "is invalid"),
            (f"/v1/devices/..%2Fx/records?epoch={EPOCH}&first=1&last=1", batch([1]), 404, "No route"),
            (records_path(1, 100), batch(range(1, 101)), 413, "over the hub's limit of 2,048 bytes"),
            ("/elsewhere", b"", 404, "No route /elsewhere"),
        ]
        for path, body, want_status, want_message in cases:
            status, answer = post(port, path, body)
            assert (status, want_message in answer["message"]) == (want_status, True), (path, answer)
        assert hub.stop() == 0
    assert not (root / DEVICE / "records").exists(), "nothing refused was stored"


# -- store and forward ----------------------------------------------------------------------


def test_records_scored_while_the_hub_is_down_arrive_once_in_order_when_it_is_back(tmp_path: Path) -> None:
    collect, root, buffer, status = tmp_path / "collected", tmp_path / "hub", tmp_path / "buffer.sqlite", \
        tmp_path / "agent.json"
    port = free_port()
    hub = start_hub(root, port, tmp_path)
    with scoring(collect, tmp_path) as served, running(start_agent(collect, buffer, port, status, tmp_path)) as agent:
        sent = [served.post_json("/score", {"data": [[i]]}).headers["x-request-id"] for i in range(20)]
        wait_for(lambda: hub_count(root) == 20, "the first 20 records at the hub", logs=agent.log)
        assert hub.stop() == 0  # the link is down
        sent += [served.post_json("/score", {"data": [[i]]}).headers["x-request-id"] for i in range(20, 120)]
        down = wait_for(lambda: (s := status_of(status)).get("taken_records") == 120 and s.get("hub_reachable") is False
                        and s, "the agent to buffer 100 records with the hub unreachable", logs=agent.log)
        assert down["buffered_records"] == 100 and "unreachable" in down["last_error"]
        assert hub_count(root) == 20
        assert not list(segments(collect, closed_only=True)), "the agent took every closed segment"
        with running(start_hub(root, port, tmp_path)) as hub:
            wait_for(lambda: hub_count(root) == 120, "all 120 records at the hub", logs=agent.log)
            up = wait_for(lambda: (s := status_of(status)).get("buffered_records") == 0 and s, "an empty buffer")
            assert (up["hub_reachable"], up["last_error"], up["forwarded_records"], up["evicted_records"]) == \
                (True, None, 120, 0)
            assert up["last_sync"] is not None
            assert agent.stop() == 0
            assert hub.stop() == 0
    got = hub_records(root)
    assert [r["request_id"] for r in got] == sent, "every record once, in the order scored"
    assert [r["input"]["data"][0][0] for r in got] == list(range(120))


def test_a_kill_9_of_the_agent_and_of_the_hub_mid_forward_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    collect, root, buffer, status = tmp_path / "collected", tmp_path / "hub", tmp_path / "buffer.sqlite", \
        tmp_path / "agent.json"
    port, total = free_port(), 3000
    served = start("json_echo.py", "--collect-dir", str(collect), "--collect-segment-s", "0.2", "--no-access-log",
                   logs=tmp_path, env={"MLOPS_COLLECT_FLUSH_S": "0.05"})
    agent_args = ("--batch-records", "20")
    agent = start_agent(collect, buffer, port, status, tmp_path, *agent_args)
    try:
        wait_healthy(served)
        _load(served, total, tmp_path)  # the hub is down: a backlog of 3000 builds up on the device
        wait_for(lambda: status_of(status).get("taken_records") == total, f"the agent to buffer {total} records",
                 logs=agent.log)
        hub = start_hub(root, port, tmp_path)
        wait_for(lambda: hub_count(root) > 0, "forwarding to begin", logs=agent.log)
        hub.process.send_signal(signal.SIGSTOP)  # frozen mid-forward: the agent waits for an answer
        assert 0 < hub_count(root) < total, "the backlog is forwarded part-way"
        agent.kill9()
        hub.process.send_signal(signal.SIGCONT)  # it may store the batch whose answer the agent never got
        agent = start_agent(collect, buffer, port, status, tmp_path, *agent_args)
        before = hub_count(root)
        wait_for(lambda: hub_count(root) > before, "forwarding to resume after the agent's restart", logs=agent.log)
        hub.process.send_signal(signal.SIGSTOP)
        assert hub_count(root) < total, "the backlog is still forwarded part-way"
        hub.kill9()
        hub = start_hub(root, port, tmp_path)
        wait_for(lambda: hub_count(root) >= total, f"all {total} records at the hub", logs=agent.log, timeout=60)
        wait_for(lambda: status_of(status).get("buffered_records") == 0, "the agent to empty its buffer")
        assert agent.stop() == 0 and hub.stop() == 0
    finally:
        for proc in (agent, locals().get("hub")):
            if isinstance(proc, Proc) and proc.process.poll() is None:
                proc.kill9()
        assert stop(served) == 0
    written = sum(read_stats(p)["written"] for p in (collect / "stats").glob("*.bin"))
    ids = [r["request_id"] for r in hub_records(root)]
    assert written == total and len(ids) == total, f"{len(ids)} records at the hub, {written} collected"
    assert len(set(ids)) == total, f"{total - len(set(ids))} duplicated"
    final = status_of(status)
    assert (final["forwarded_records"], final["evicted_records"], final["acked_offset"]) == (total, 0, total)


def test_past_its_size_the_buffer_evicts_the_oldest_records_and_the_hub_gets_the_rest(tmp_path: Path) -> None:
    collect, root, buffer, status = tmp_path / "collected", tmp_path / "hub", tmp_path / "buffer.sqlite", \
        tmp_path / "agent.json"
    port = free_port()
    with scoring(collect, tmp_path) as served, \
            running(start_agent(collect, buffer, port, status, tmp_path, "--max-buffer-bytes", "8k")) as agent:
        sent = [served.post_json("/score", {"data": [[i]]}).headers["x-request-id"] for i in range(150)]
        offline = wait_for(lambda: (s := status_of(status)).get("taken_records") == 150 and s,
                           "the agent to take 150 records", logs=agent.log)
        assert offline["evicted_records"] > 0 and offline["buffered_bytes"] <= 8192
        assert offline["buffered_records"] + offline["evicted_records"] == 150
        with running(start_hub(root, port, tmp_path)) as hub:
            wait_for(lambda: status_of(status).get("buffered_records") == 0, "the buffer to drain", logs=agent.log)
            assert agent.stop() == 0 and hub.stop() == 0
    kept = 150 - offline["evicted_records"]
    assert [r["request_id"] for r in hub_records(root)] == sent[-kept:], "the newest records, once, in order"
    assert json.loads((root / DEVICE / "hub.json").read_text())["device_evicted"] == offline["evicted_records"]


def _hub_has_unread_request(port: int) -> bool:
    """Some connection to ``port`` holds bytes the (frozen) hub has not read: a request waits for its answer."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                local, state, queues = fields[1], fields[3], fields[4]
                established = state == "01"  # not the listening socket, whose queue counts connections
                if established and int(local.rsplit(":", 1)[1], 16) == port and int(queues.split(":")[1], 16) > 0:
                    return True
    return False


def test_sigterm_stops_an_agent_waiting_for_a_frozen_hub_and_nothing_is_lost(tmp_path: Path) -> None:
    collect, root, buffer, status = tmp_path / "collected", tmp_path / "hub", tmp_path / "buffer.sqlite", \
        tmp_path / "agent.json"
    port = free_port()
    hub = start_hub(root, port, tmp_path)
    with running(hub), scoring(collect, tmp_path) as served:
        hub.process.send_signal(signal.SIGSTOP)
        agent = start_agent(collect, buffer, port, status, tmp_path)
        with running(agent):
            sent = [served.post_json("/score", {"data": [[i]]}).headers["x-request-id"] for i in range(10)]
            wait_for(lambda: _hub_has_unread_request(port), "the agent's batch to wait at the frozen hub",
                     logs=agent.log)
            assert agent.stop(timeout=10) == 0, "SIGTERM gives up the batch in flight (the hub would take 30 s)"
        hub.process.send_signal(signal.SIGCONT)
        with running(start_agent(collect, buffer, port, status, tmp_path)) as agent:
            wait_for(lambda: status_of(status).get("buffered_records") == 0 and hub_count(root) >= 10,
                     "the 10 records at the hub", logs=agent.log)
            assert agent.stop() == 0
        assert hub.stop() == 0
    assert [r["request_id"] for r in hub_records(root)] == sent


def _load(served: Served, requests: int, tmp_path: Path) -> None:
    (tmp_path / "body.json").write_bytes(b'{"data": [[1.5, 2, 3]]}')
    done = subprocess.run([sys.executable, "-m", "mlops_magics.profiling.loadgen", "--url", f"{served.url}/score",
                           "--body", str(tmp_path / "body.json"), "--concurrency", "4", "--duration", "120",
                           "--requests", str(requests)], capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(done.stdout)["statuses"] == {"200": requests}


def test_agent_settings_that_cannot_work_are_refused_saying_why(tmp_path: Path) -> None:
    cases = [
        (["--buffer", "b", "--hub", "http://127.0.0.1:1", "--device", "d"], "No collection folder"),
        (["--collect-dir", "c", "--buffer", "b", "--hub", "ftp://x", "--device", "d"], "Hub URL 'ftp://x' is invalid"),
        (["--collect-dir", "c", "--buffer", "b", "--hub", "http://h:1", "--device", "../d"], "Device name '../d'"),
        (["--collect-dir", "c", "--buffer", "b", "--hub", "http://h:1", "--device", "d", "--max-buffer-bytes",
          "lots"], "'lots' is not a size"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_EDGE", "MLOPS_COLLECT"))}
    for args, message in cases:
        done = subprocess.run([sys.executable, "-m", "mlops_backend.edge.agent", *args], capture_output=True,
                              text=True, timeout=60, cwd=tmp_path, env=env)
        assert (done.returncode, message in done.stderr) == (2, True), (args, done.stderr)


# -- MQTT -----------------------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    """A real mosquitto on 127.0.0.1 (its port)."""
    exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
    if exe is None:
        if os.environ.get("MLOPS_REQUIRE_MQTT") == "1":
            pytest.fail("MLOPS_REQUIRE_MQTT=1 but mosquitto is not installed: apt-get install -y mosquitto")
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto): the MQTT path is not tested")
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    log = tmp_path / "mosquitto.log"
    with open(log, "wb") as err:
        process = subprocess.Popen([exe, "-c", str(config)], stdout=err, stderr=subprocess.STDOUT)
    proc = Proc(process, log)
    with running(proc):
        def listening() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                return process.poll() is not None
        wait_for(listening, "mosquitto to listen", logs=proc.log)
        assert process.poll() is None, f"mosquitto exited:\n{proc.log()}"
        yield port
        proc.stop()


def mqtt_client(port: int, on_message: Callable[[Any], None] | None = None) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    if on_message is not None:
        client.on_message = lambda _c, _u, message: on_message(message)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def test_mqtt_input_messages_are_scored_and_answered_on_the_output_topic(tmp_path: Path, broker: int) -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    collect = tmp_path / "collected"
    answers: list[Any] = []
    listener = mqtt_client(broker, answers.append)
    subscribed = listener.subscribe("dev/out", qos=1)
    assert subscribed[0] == 0
    with serving("json_echo.py", "--collect-dir", str(collect), logs=tmp_path) as served:
        bridge = python_m("mlops_backend.edge.mqtt", "--broker", f"127.0.0.1:{broker}", "--input-topic", "dev/in",
                          "--output-topic", "dev/out", "--score-url", f"{served.url}/score", logs=tmp_path,
                          name="mqtt")
        with running(bridge):
            wait_for(lambda: "subscribed to 'dev/in'" in bridge.log(), "the bridge to subscribe", logs=bridge.log)
            sender = mqtt_client(broker)
            for i in range(20):
                properties = Properties(PacketTypes.PUBLISH)
                properties.CorrelationData = f"corr-{i}".encode()
                sender.publish("dev/in", json.dumps({"data": [[i]]}), qos=1, properties=properties).wait_for_publish(10)
            plain = Properties(PacketTypes.PUBLISH)
            plain.UserProperty = [("request_id", "by-property")]
            sender.publish("dev/in", b"not json", qos=1, properties=plain).wait_for_publish(10)
            wait_for(lambda: len(answers) == 21, "21 answers on dev/out", logs=bridge.log)
            sender.disconnect()
            assert bridge.stop() == 0
    listener.disconnect()
    listener.loop_stop()
    bodies = [json.loads(m.payload) for m in answers]
    assert [b["request_id"] for b in bodies] == [f"corr-{i}" for i in range(20)] + ["by-property"]
    assert [b["output"]["received"] for b in bodies[:20]] == [{"data": [[i]]} for i in range(20)]
    assert all(b["status"] == 200 for b in bodies[:20]) and bodies[20]["status"] == 500
    assert [bytes(m.properties.CorrelationData) for m in answers[:20]] == [f"corr-{i}".encode() for i in range(20)]
    assert ("status", "200") in answers[0].properties.UserProperty
    collected = {r["request_id"] for r in store.records(collect)}
    assert collected == {f"corr-{i}" for i in range(20)} | {"by-property"}, "the records carry the message's id"


# -- the module's supervisor ----------------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def start_module(tmp_path: Path, port: int, env: dict[str, str]) -> tuple[Proc, Path]:
    data = tmp_path / "device"
    module = python_m("mlops_backend.edge.module", "--entry_script", str(Path(__file__).parent / "entry_scripts" /
                                                                            "json_echo.py"),
                      "--port", str(port), logs=tmp_path, name="module",
                      env={"MLOPS_EDGE_DATA": str(data), "MLOPS_EDGE_DEVICE": DEVICE, **env})
    return module, data


def module_state(data: Path) -> dict[str, Any]:
    return status_of(data / "module.json").get("children", {})


def test_the_module_restarts_a_killed_child_and_sigterm_stops_everything(tmp_path: Path) -> None:
    root, hub_port, port = tmp_path / "hub", free_port(), free_port()
    served = Served(port, None, tmp_path / "none", tmp_path / "none")
    with running(start_hub(root, hub_port, tmp_path)) as hub:
        module, data = start_module(tmp_path, port, {"MLOPS_EDGE_HUB": f"http://127.0.0.1:{hub_port}"})
        with running(module):
            first = wait_for(lambda: (s := module_state(data)) and all(c["running"] for c in s.values()) and s,
                             "the module's children to run", logs=module.log)
            assert set(first) == {"serve", "agent"}, "no MLOPS_EDGE_MQTT: no bridge"
            wait_for(lambda: _healthy(served), "the module's scoring server", logs=module.log)
            ids = [served.post_json("/score", {"data": [[i]]}).headers["x-request-id"] for i in range(5)]
            wait_for(lambda: hub_count(root) == 5, "the module's records at the hub", logs=module.log)
            for name in ("agent", "serve"):
                os.kill(first[name]["pid"], signal.SIGKILL)
                again = wait_for(lambda n=name: (c := module_state(data).get(n, {})).get("restarts") == 1
                                 and c["running"] and c, f"{name} to be restarted", logs=module.log)
                assert again["pid"] != first[name]["pid"] and again["last_exit"] == -signal.SIGKILL
            assert "agent (pid" in module.log() and "was killed by signal 9; restarting it" in module.log()
            wait_for(lambda: _healthy(served), "the restarted scoring server", logs=module.log)
            ids.append(served.post_json("/score", {"data": [[5]]}).headers["x-request-id"])
            wait_for(lambda: hub_count(root) == 6, "the record scored after the restarts at the hub", logs=module.log)
            pids = [c["pid"] for c in module_state(data).values()]
            assert module.stop(timeout=40) == 0
        assert hub.stop() == 0
    assert not [pid for pid in pids if alive(pid)], "SIGTERM stopped every child"
    assert not _healthy(served)
    assert [r["request_id"] for r in hub_records(root)] == ids
    final = status_of(data / "module.json")
    assert final["stopping"] and not any(c["running"] for c in final["children"].values())


def _healthy(served: Served) -> bool:
    try:
        return served.request("GET", "/", timeout=2).status == 200
    except OSError:
        return False


def test_the_module_bridges_mqtt_when_a_broker_is_configured(tmp_path: Path, broker: int) -> None:
    answers: list[Any] = []
    listener = mqtt_client(broker, answers.append)
    listener.subscribe("mod/out", qos=1)
    port = free_port()
    module, data = start_module(tmp_path, port, {"MLOPS_EDGE_MQTT": f"127.0.0.1:{broker}", "MLOPS_EDGE_MQTT_INPUT":
                                                 "mod/in", "MLOPS_EDGE_MQTT_OUTPUT": "mod/out",
                                                 "MLOPS_COLLECT_DIR": str(tmp_path / "device" / "collected")})
    served = Served(port, None, tmp_path / "none", tmp_path / "none")
    with running(module):
        wait_for(lambda: set(module_state(data)) == {"serve", "mqtt"}, "serve and mqtt", logs=module.log)
        wait_for(lambda: _healthy(served) and "subscribed to 'mod/in'" in module.log(), "the module to subscribe",
                 logs=module.log)
        sender = mqtt_client(broker)
        sender.publish("mod/in", json.dumps({"data": [[7]]}), qos=1).wait_for_publish(10)
        wait_for(lambda: answers, "an answer on mod/out", logs=module.log)
        sender.disconnect()
        assert module.stop(timeout=40) == 0
    listener.disconnect()
    listener.loop_stop()
    answer = json.loads(answers[0].payload)
    assert (answer["status"], answer["output"]["received"]) == (200, {"data": [[7]]})
    assert [r["input"] for r in store.records(data / "collected")] == [{"data": [[7]]}], "collected on the volume"


def test_the_module_collects_only_when_it_forwards_or_is_told_to() -> None:
    from mlops_backend.edge.module import children

    def serve_args(environ: dict[str, str]) -> list[str]:
        return children(["--port", "5001"], {"MLOPS_EDGE_DATA": "/data", **environ})[0].argv

    assert "--collect-dir" not in serve_args({}), "no hub: nothing fills the device with records nobody takes"
    assert [c.name for c in children([], {"MLOPS_EDGE_DATA": "/data"})] == ["serve"]
    forwarding = children([], {"MLOPS_EDGE_DATA": "/data", "MLOPS_EDGE_HUB": "http://10.213.0.1:5380"})
    assert [c.name for c in forwarding] == ["serve", "agent"]
    assert forwarding[0].argv[-4:] == ["--collect-dir", "/data/collected", "--collect-segment-s", "1"]
    told = serve_args({"MLOPS_COLLECT_DIR": "/elsewhere"})
    assert told[-2:] == ["--collect-segment-s", "1"], "collecting anyway: segments close for the agent to take"


def test_a_hub_gone_silent_while_the_agent_was_idle_is_noticed_at_the_next_batch_not_after_the_timeout(
        tmp_path: Path) -> None:
    """Regression: the agent kept its connection alive while idle, so after a link cut the next batch went into the
    dead connection and waited for the answer timeout (10 s here, the status saying the hub was reachable)."""
    import http.server
    import threading

    from mlops_backend.edge.agent import Agent, AgentSettings

    silent, released = threading.Event(), threading.Event()
    connections: list[Any] = []

    class Hub(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if silent.is_set():
                released.wait(600)  # a connection whose far end is gone: no answer while the test runs
            last = int(body.strip().split(b"\n")[-1].split(b"\t")[0])
            answer = json.dumps({"stored": last}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    server.daemon_threads = True
    original = server.get_request
    server.get_request = lambda: (found := original(), connections.append(found[0]))[0]  # type: ignore[method-assign]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    collect = tmp_path / "collected"
    (collect / "records").mkdir(parents=True)
    seen: dict[str, Any] = {}

    def run_agent() -> None:  # the buffer's SQLite connection belongs to one thread: the agent's whole life here
        agent = Agent(AgentSettings(collect_dir=collect, buffer=tmp_path / "buffer.sqlite", device=DEVICE,
                                    hub=f"http://127.0.0.1:{server.server_address[1]}", timeout_s=600))
        try:
            (collect / "records" / "a.jsonl").write_bytes(b'{"request_id": "r1"}\n')
            agent.take()
            seen["first"] = (agent.forward(), agent.status()["forwarded_records"])
            silent.set()
            server.socket.close()  # the link is cut: no new connection gets through, the old one never answers
            (collect / "records" / "b.jsonl").write_bytes(b'{"request_id": "r2"}\n')
            agent.take()
            seen["second"] = (agent.forward(), agent.hub_reachable, agent.status()["buffered_records"])
        finally:
            agent.request_stop()
            agent.close()

    worker = threading.Thread(target=run_agent, daemon=True)
    try:
        worker.start()
        worker.join(60)
        assert seen.get("first") == (True, 1)
        assert seen.get("second") == (False, False, 1), "the next batch fails at once instead of waiting an answer"
        assert len(connections) == 1
    finally:
        released.set()
        server.shutdown()
