"""Data collection in the scoring server: exact counts under load, SIGTERM flush, crash accounting, sampling,
spilling, dropping, Azure's ModelDataCollector CSV layout, /metrics, forwarding."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from mlops_backend.collection_store import forward, read_stats, segments
from mlops_backend.collector import Collector

from mlops_magics.monitoring import store
from tests.serving import Served, free_port, metric, serving, start, stop, wait_healthy

pytestmark = pytest.mark.serve


def _lines(folder: Path) -> list[dict]:
    return [orjson.loads(line) for path in segments(folder) for line in path.read_bytes().splitlines()]


def _load(url: str, body: bytes, requests: int, concurrency: int, tmp_path: Path) -> dict:
    (tmp_path / "body.json").write_bytes(body)
    done = subprocess.run([sys.executable, "-m", "mlops_magics.profiling.loadgen", "--url", url, "--body",
                           str(tmp_path / "body.json"), "--concurrency", str(concurrency), "--duration", "600",
                           "--requests", str(requests)], capture_output=True, text=True, timeout=900, check=True)
    return json.loads(done.stdout)


def test_100000_requests_give_exactly_100000_records(tmp_path: Path) -> None:
    collect = tmp_path / "collected"
    port = free_port()
    served = start("json_echo.py", "--collect-dir", str(collect), "--worker_count", "2", "--no-access-log",
                   port=port, logs=tmp_path)
    try:
        wait_healthy(served)
        summary = _load(f"{served.url}/score", b'{"data": [[1.5, 2, 3]]}', 100_000, 16, tmp_path)
    finally:
        assert stop(served) == 0
    assert summary["statuses"] == {"200": 100_000} and not summary["errors"]
    records = _lines(collect)
    assert len(records) == 100_000
    assert len({r["request_id"] for r in records}) == 100_000
    assert all(r["status"] == 200 and r["input"] == {"data": [[1.5, 2, 3]]} for r in records)
    counters = [read_stats(p) for p in (collect / "stats").glob("*.bin")]
    assert len(counters) == 2 and all(c["closed"] == 1 for c in counters)
    assert all(c["received"] > 10_000 for c in counters), "both workers served"
    assert sum(c["written"] for c in counters) == 100_000 and sum(c["dropped"] for c in counters) == 0
    assert not list((collect / "records").glob("*.part")), "a clean stop closes every segment"


def test_sigterm_writes_what_is_queued(tmp_path: Path) -> None:
    collect = tmp_path / "collected"
    # An hour between writes: without the flush at SIGTERM nothing would reach the disk.
    with serving("json_echo.py", "--collect-dir", str(collect), logs=tmp_path,
                 env={"MLOPS_COLLECT_FLUSH_S": "3600"}) as served:
        ids = [served.post_json("/score", {"data": [[i]]}).headers["x-request-id"] for i in range(300)]
        assert _lines(collect) == []
    records = _lines(collect)
    assert [r["request_id"] for r in records] == ids
    assert [r["input"]["data"][0][0] for r in records] == list(range(300))
    assert all(r["latency_ms"] > 0 for r in records)


def test_a_crash_loses_at_most_the_unflushed_records_and_the_counters_say_how_many(tmp_path: Path) -> None:
    collect = tmp_path / "collected"
    served = start("json_echo.py", "--collect-dir", str(collect), env={"MLOPS_COLLECT_FLUSH_S": "3600"},
                   logs=tmp_path)
    try:
        wait_healthy(served)
        for i in range(40):
            served.post_json("/score", {"data": [[i]]})
        # A record is queued just after its answer is sent: wait until the last one is, then crash.
        deadline = time.monotonic() + 10
        while (metric(served.request("GET", "/metrics").body.decode(), "mlops_collect_queued", worker="0") != 40
               and time.monotonic() < deadline):
            time.sleep(0.01)
    finally:
        served.process.send_signal(signal.SIGKILL)
        served.process.wait()
    found = store.stats("crashed", collect, running=False)
    assert (found.received, found.written, found.lost, found.dropped) == (40, 0, 40, 0)
    assert "40 lost when a worker ended without a clean stop" in repr(found)


def test_sample_rate_is_respected_within_statistical_tolerance(tmp_path: Path) -> None:
    collect = tmp_path / "collected"
    with serving("json_echo.py", "--collect-dir", str(collect), "--sample-rate", "0.2", logs=tmp_path) as served:
        summary = _load(f"{served.url}/score", b'{"data": [[1]]}', 5000, 8, tmp_path)
    assert summary["statuses"] == {"200": 5000}
    written = len(_lines(collect))
    assert abs(written - 1000) < 5 * (5000 * 0.2 * 0.8) ** 0.5  # 5 standard deviations of the binomial
    counters = read_stats(next((collect / "stats").glob("*.bin")))
    assert counters["written"] == written and counters["written"] + counters["sampled_out"] == 5000


@pytest.mark.parametrize("args, message", [
    (["--collect-dir", "COLLECT", "--sample-rate", "0"], "Sample rate 0.0 is out of range"),
    (["--collect-dir", "COLLECT", "--sample-rate", "1.5"], "Sample rate 1.5 is out of range"),
    (["--sample-rate", "0.5"], "--sample-rate applies to collection: give --collect-dir DIR too"),
    (["--collect-dir", "COLLECT", "--collect-segment-s", "0"], "--collect-segment-s 0 is out of range"),
    (["--collect-segment-s", "5"], "--collect-segment-s applies to collection: give --collect-dir DIR too"),
])
def test_bad_collection_settings_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    from tests.serving import SCRIPTS, mlops_serve

    args = [str(tmp_path) if a == "COLLECT" else a for a in args]
    done = subprocess.run([mlops_serve(), "--entry_script", str(SCRIPTS / "echo.py"), *args],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and message in done.stderr


def test_every_answer_is_recorded_with_its_status_and_odd_bodies_as_they_came(tmp_path: Path) -> None:
    collect = tmp_path / "collected"
    with serving("json_echo.py", "--collect-dir", str(collect), "--auth-key", "secret-key-1", logs=tmp_path) as s:
        auth = {"Authorization": "Bearer secret-key-1"}
        ok = s.post_json("/score", {"data": [[1, 2]]}, auth)
        bad = s.request("POST", "/score", "not json", {"Content-Type": "application/json", **auth})
        refused = s.post_json("/score", {"data": [[1]]})  # no key: not scored, not recorded
        got = s.request("GET", "/score?data=[[3,4]]", headers=auth)
        assert (ok.status, bad.status, refused.status, got.status) == (200, 500, 401, 200)
    records = {r["request_id"]: r for r in _lines(collect)}
    assert set(records) == {ok.headers["x-request-id"], bad.headers["x-request-id"], got.headers["x-request-id"]}
    assert records[bad.headers["x-request-id"]]["input"] == "not json"
    assert records[bad.headers["x-request-id"]]["status"] == 500  # run() could not parse it
    assert records[bad.headers["x-request-id"]]["output"]["message"].startswith("An unexpected error occurred")
    assert records[got.headers["x-request-id"]]["input"] == {"data": [[3, 4]]}


def test_the_queue_spills_to_disk_instead_of_dropping(tmp_path: Path) -> None:
    collector = Collector(tmp_path, queue_limit=10, flush_interval=3600)
    for i in range(100):
        collector.record(f"id-{i}".encode(), 200, 0.001, b'{"x": %d}' % i, b"[1]")
    assert len(collector.queue) == 10
    assert read_stats(collector.stats_path)["spilled"] == 90
    collector.close()
    records = _lines(tmp_path)
    assert sorted(r["input"]["x"] for r in records) == list(range(100))
    counters = read_stats(collector.stats_path)
    assert (counters["written"], counters["dropped"], counters["spilled"]) == (100, 0, 90)


def test_a_refusing_store_keeps_the_records_and_writes_them_when_it_takes_them_again(tmp_path: Path) -> None:
    collector = Collector(tmp_path, flush_interval=3600)
    real = collector._fd
    collector._fd = os.open("/dev/full", os.O_WRONLY)  # every write fails with ENOSPC
    for i in range(25):
        collector.record(f"id-{i}".encode(), 200, 0.001, b"{}", b"{}")
    collector._drain()
    counters = read_stats(collector.stats_path)
    assert (counters["written"], counters["dropped"], len(collector.queue)) == (0, 0, 25)
    os.close(collector._fd)
    collector._fd = real
    collector.record(b"after", 200, 0.001, b"{}", b"{}")
    collector.close()
    counters = read_stats(collector.stats_path)
    assert (counters["dropped"], counters["written"]) == (0, 26)
    assert [r["request_id"] for r in _lines(tmp_path)] == [f"id-{i}" for i in range(25)] + ["after"]


def test_large_bodies_are_recorded_as_their_size(tmp_path: Path) -> None:
    collector = Collector(tmp_path, max_body_bytes=100)
    collector.record(b"big", 200, 0.001, b'"' + b"x" * 500 + b'"', b'"ok"')
    collector.close()
    (record,) = _lines(tmp_path)
    assert record["input"] == {"truncated": True, "bytes": 502} and record["output"] == "ok"


def test_segments_rotate_and_closed_ones_can_be_forwarded(tmp_path: Path) -> None:
    collector = Collector(tmp_path, segment_bytes=2000, flush_interval=3600)
    for i in range(200):
        collector.record(f"id-{i}".encode(), 200, 0.001, b"[1]", b"[2]")
        if i % 20 == 19:
            collector._drain()  # a segment is closed after the write that takes it past its size
    closed = list(segments(tmp_path, closed_only=True))
    assert len(closed) >= 5 and all(p.suffix == ".jsonl" for p in closed)
    shipped = sum(len(p.read_bytes().splitlines()) for p in closed[:2])
    offered: list[Path] = []
    assert forward(tmp_path, lambda p: offered.append(p) or len(offered) < 3) == 2  # offline after two
    assert offered == closed[:3] and list(segments(tmp_path, closed_only=True)) == closed[2:]
    collector.close()
    assert len(_lines(tmp_path)) == 200 - shipped


def test_segments_close_by_age_when_they_hold_records(tmp_path: Path) -> None:
    collector = Collector(tmp_path, segment_seconds=0.1, flush_interval=0.02)
    try:
        time.sleep(0.3)  # no record: the segment stays open (no empty closed files)
        assert list(segments(tmp_path, closed_only=True)) == []
        for round_ in range(3):
            for i in range(5):
                collector.record(f"id-{round_}-{i}".encode(), 200, 0.001, b"[1]", b"[2]")
            deadline = time.monotonic() + 10
            while len(list(segments(tmp_path, closed_only=True))) <= round_ and time.monotonic() < deadline:
                time.sleep(0.01)
            closed = list(segments(tmp_path, closed_only=True))
            assert len(closed) == round_ + 1, f"no segment closed by age after round {round_}: {closed}"
    finally:
        collector.close()
    assert not list((tmp_path / "records").glob("*.part"))
    ids = [r["request_id"] for r in _lines(tmp_path)]
    assert ids == [f"id-{r}-{i}" for r in range(3) for i in range(5)]


def test_the_server_closes_segments_by_age(tmp_path: Path) -> None:
    collect = tmp_path / "collected"
    with serving("json_echo.py", "--collect-dir", str(collect), "--collect-segment-s", "0.2", logs=tmp_path,
                 env={"MLOPS_COLLECT_FLUSH_S": "0.05"}) as served:
        ids = [served.post_json("/score", {"data": [[i]]}).headers["x-request-id"] for i in range(10)]
        deadline = time.monotonic() + 10
        while not list(segments(collect, closed_only=True)) and time.monotonic() < deadline:
            time.sleep(0.02)
        closed = list(segments(collect, closed_only=True))
        assert closed, "the server closed no segment while running"
        assert [orjson.loads(line)["request_id"] for line in closed[0].read_bytes().splitlines()] == ids


def test_metrics_expose_the_collection_counters(tmp_path: Path) -> None:
    with serving("json_echo.py", "--collect-dir", str(tmp_path / "c"), logs=tmp_path) as served:
        for _ in range(7):
            served.post_json("/score", {"data": [[1]]})
        deadline = time.monotonic() + 10
        while True:
            text = served.request("GET", "/metrics").body.decode()
            if metric(text, "mlops_collected_records_total", worker="0") == 7 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert metric(text, "mlops_collected_records_total", worker="0") == 7
    assert metric(text, "mlops_collect_dropped_total", worker="0") == 0
    assert metric(text, "mlops_collect_queued", worker="0") == 0


# -- Azure's ModelDataCollector ----------------------------------------------------------------

def test_a_model_data_collector_script_writes_azures_csv_layout(tmp_path: Path) -> None:
    collect = tmp_path / "collected"
    with serving("mdc_collect.py", "--collect-dir", str(collect), "--worker_count", "2", logs=tmp_path,
                 env={"SERVICE_NAME": "aks-w-collv9", "MLOPS_MODEL_NAME": "best_model", "MLOPS_MODEL_VERSION": "10"},
                 ) as served:
        answers = [served.post_json("/score", {"data": [[i, 1, 2], [i, 0, 0]]}) for i in range(30)]
    assert all(a.status == 200 for a in answers)
    today = time.gmtime()
    day = Path(f"{today.tm_year:04d}", f"{today.tm_mon:02d}", f"{today.tm_mday:02d}")
    base = collect / "modeldata" / "default" / "default" / "default" / "aks-w-collv9" / "best_model" / "10"
    with open(base / "inputs" / day / "data.csv", newline="") as fh:
        inputs = list(csv.reader(fh))
    header = inputs[0]
    assert header[:3] == ["f1", "f2", "f3"] and header[3:] == [
        "$aml_dc_correlation_id", "$aml_dc_scoring_timestamp", "$aml_dc_boundary", "$aml_workspace",
        "$aml_service_name", "$aml_model_name", "$aml_model_version", "$aml_request_id"]
    rows = inputs[1:]
    assert len(rows) == 60, "one header although two workers write the file"
    assert {r[0] for r in rows} == {str(i) for i in range(30)}
    assert {r[-1] for r in rows} == {a.headers["x-request-id"] for a in answers}, "$aml_request_id is the request's"
    assert {r[-4] for r in rows} == {"aks-w-collv9"} and {r[-2] for r in rows} == {"10"}
    with open(base / "predictions" / day / "data.csv", newline="") as fh:
        predictions = list(csv.reader(fh))
    assert predictions[0][0] == "prediction" and len(predictions) == 61
    sums: dict[str, list[float]] = {}
    for r in rows:  # one correlation id per collect() call: a request's rows share it
        sums.setdefault(r[3], []).append(sum(float(v) for v in r[:3]))
    predicted: dict[str, list[float]] = {}
    for r in predictions[1:]:  # add_correlations ties the predictions to the inputs they came from
        predicted.setdefault(r[1], []).append(float(r[0]))
    assert predicted == sums and len(sums) == 30
    with open(base / "signals" / day / "data.csv", newline="") as fh:
        signals = list(csv.reader(fh))
    assert signals[0] == ["total"] and len(signals) == 31, "the legacy identifier= keyword names the designation"
    assert store.designations(collect) == ["inputs", "predictions", "signals"]
    counters = [read_stats(p) for p in (collect / "stats").glob("*.bin")]
    assert sum(c["csv_received"] for c in counters) == sum(c["csv_written"] for c in counters) == 60 + 60 + 30


def test_model_data_collector_without_collection_is_a_no_op_that_says_so(tmp_path: Path) -> None:
    with serving("mdc_collect.py", logs=tmp_path) as served:
        assert served.post_json("/score", {"data": [[1, 2, 3]]}).json() == [6]
        log = served.log()
    assert "Data collection is not enabled: deploy with --collect" in log
    assert not list(tmp_path.rglob("data.csv"))


# -- a full disk, for real: a small tmpfs of the test's own ---------------------------------------

@contextlib.contextmanager
def _tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A tmpfs of the test's own on ``folder`` (root only: a skip saying so, a failure under CI)."""
    required = os.environ.get("CI", "").lower() not in ("", "0", "false") or os.environ.get("MLOPS_REQUIRE_DOCKER")
    give_up = pytest.fail if required else pytest.skip
    if os.geteuid() != 0:
        give_up("a full disk is made with a small tmpfs of the test's own: mounting one needs root")
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                          text=True, timeout=30)
    if done.returncode != 0:
        give_up(f"cannot mount a tmpfs ({options}) on {folder}: {done.stderr.strip() or done.returncode}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "--lazy", str(folder)], capture_output=True, timeout=30)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB file system to fill up for real."""
    with _tmpfs(tmp_path / "small-disk", "size=256k") as folder:
        yield folder


def _fill(disk: Path) -> Path:
    """Take every free byte of ``disk`` with one file and return it (unlink it to give the space back)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, bytes(65536))
    finally:
        os.close(fd)
    assert os.statvfs(disk).f_bavail == 0
    return filler


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _metric(served: Served, name: str) -> float:
    value = metric(served.request("GET", "/metrics").body.decode(), name, worker="0")
    return -1.0 if value is None else value


def _send(collector: Collector, first: int, count: int) -> None:
    for i in range(first, first + count):
        collector.record(f"id-{i}".encode(), 200, 0.001, b'{"x": %d}' % i, b"[1]")


def test_a_full_disk_keeps_whole_lines_holds_the_records_and_writes_them_when_space_returns(
        small_disk: Path) -> None:
    folder = small_disk / "collected"
    collector = Collector(folder, flush_interval=3600)  # the test drives the writer
    _send(collector, 0, 50)
    collector._drain()
    filler = _fill(small_disk)
    _send(collector, 50, 200)
    collector._drain()  # fills the segment's last page, then the store refuses
    collector._drain()  # and refuses again
    on_disk = _lines(folder)  # every line parses: the torn one was cut off
    counters = read_stats(collector.stats_path)
    assert counters["written"] == len(on_disk) < 250 and counters["dropped"] == 0
    assert len(collector.queue) == 250 - len(on_disk), "what the disk refused waits in memory"
    assert [r["input"]["x"] for r in on_disk] == list(range(len(on_disk)))
    filler.unlink()
    _send(collector, 250, 50)
    collector.close()
    assert [r["input"]["x"] for r in _lines(folder)] == list(range(300))
    counters = read_stats(collector.stats_path)
    assert (counters["received"], counters["written"], counters["dropped"]) == (300, 300, 0)


def test_on_a_full_disk_records_past_the_memory_bound_are_dropped_and_counted(
        small_disk: Path, capfd: pytest.CaptureFixture[str]) -> None:
    folder = small_disk / "collected"
    collector = Collector(folder, flush_interval=3600, queue_bytes=4000)
    filler = _fill(small_disk)  # before the first record: the segment is empty, it has no page to fill
    _send(collector, 0, 400)
    held = list(collector.queue)
    assert 4000 - len(held[-1]) <= sum(map(len, held)) <= 4000 + len(held[-1])
    collector._drain()
    assert list(collector.queue) == held, "the oldest records are kept, in order"
    filler.unlink()
    collector.close()
    counters = read_stats(collector.stats_path)
    assert counters["written"] == len(held) and counters["dropped"] == 400 - len(held)
    assert [r["input"]["x"] for r in _lines(folder)] == list(range(len(held)))
    log = capfd.readouterr().err
    assert log.count("No space left on device") == 1, "said once, not at every try"
    assert f"writing records again to {folder}; {400 - len(held)} dropped while the store refused" in log


def test_model_data_collector_rows_stay_whole_on_a_full_disk_and_are_written_when_space_returns(
        small_disk: Path) -> None:
    folder = small_disk / "collected"
    collector = Collector(folder, flush_interval=3600)
    path = folder / "modeldata" / "inputs" / "data.csv"

    def collect(first: int, count: int) -> None:
        for i in range(first, first + count):  # a quoted line break: a row is not a line
            collector.csv(path, b"n,text\n", b'%d,"two\nlines"\n%d,one line\n' % (i, i), 2)

    def rows() -> list[list[str]]:
        with open(path, newline="") as fh:
            header, *found = csv.reader(fh)
        assert header == ["n", "text"] and all(len(r) == 2 for r in found)
        return found

    collect(0, 20)
    collector._drain()
    filler = _fill(small_disk)
    collect(20, 400)
    collector._drain()
    collector._drain()
    found = rows()
    assert len(found) < 840 and read_stats(collector.stats_path)["csv_written"] == len(found)
    assert [int(r[0]) for r in found] == [i // 2 for i in range(len(found))]
    filler.unlink()
    collect(420, 10)
    collector.close()
    found = rows()
    assert [int(r[0]) for r in found] == [i // 2 for i in range(860)]
    counters = read_stats(collector.stats_path)
    assert (counters["csv_received"], counters["csv_written"], counters["csv_dropped"]) == (860, 860, 0)


def test_when_no_new_segment_can_be_created_the_records_wait_until_forwarding_makes_room(tmp_path: Path) -> None:
    # Seven inodes: the root, collected/, records/, stats/, the counters and two segments; no third one.
    with _tmpfs(tmp_path / "disk", "size=256k,nr_inodes=7") as disk:
        folder = disk / "collected"
        collector = Collector(folder, flush_interval=3600, segment_bytes=1000)
        for first in range(0, 60, 15):  # each write of 15 records takes a segment past its size: a new one
            _send(collector, first, 15)
            collector._drain()
        assert len(list(segments(folder))) == 2 and len(collector.queue) == 30
        forwarded: list[dict] = []
        assert forward(folder, lambda p: forwarded.extend(orjson.loads(x) for x in p.read_bytes().splitlines())
                       or True) == 2
        collector.close()
        on_disk = _lines(folder)
        counters = read_stats(collector.stats_path)
    assert [r["input"]["x"] for r in forwarded + on_disk] == list(range(60))
    assert (counters["written"], counters["dropped"]) == (60, 0)


def test_a_server_on_a_full_disk_records_every_answer_once_and_no_torn_line(small_disk: Path,
                                                                             tmp_path: Path) -> None:
    collect = small_disk / "collected"
    served = start("mdc_collect.py", "--collect-dir", str(collect), "--no-access-log", logs=tmp_path,
                   env={"MLOPS_COLLECT_FLUSH_S": "0.05", "MLOPS_MODEL_NAME": "best_model",
                        "MLOPS_MODEL_VERSION": "1"})
    ids: list[str] = []

    def send(first: int, count: int) -> None:
        for i in range(first, first + count):
            answer = served.post_json("/score", {"data": [[i, 1, 2]]})
            assert answer.status == 200
            ids.append(answer.headers["x-request-id"])

    try:
        wait_healthy(served)
        send(0, 100)
        assert _until(lambda: _metric(served, "mlops_collected_records_total") == 100)
        filler = _fill(small_disk)
        send(100, 100)
        refused = _until(lambda: "cannot write" in served.log())  # the writer tried, the disk refused
        held = _metric(served, "mlops_collect_queued")
        filler.unlink()
        send(200, 100)
    finally:
        assert stop(served) == 0
    records = _lines(collect)  # every line parses
    assert [r["request_id"] for r in records] == ids, "every answer recorded exactly once, in order"
    counters = read_stats(next((collect / "stats").glob("*.bin")))
    assert (counters["received"], counters["written"], counters["dropped"], counters["sampled_out"]) == (
        300, 300, 0, 0)
    assert refused and held > 0, "the records waited in memory while the disk was full"
    assert "writing records again" in served.log()
    total = 0
    for designation in ("inputs", "predictions", "signals"):
        rows = []
        for path in store.csv_files(collect, designation):  # one file a day
            with open(path, newline="") as fh:
                header, *found = csv.reader(fh)
            assert all(len(r) == len(header) for r in found), f"no torn row in {path}"
            rows += found
        assert len(rows) == 300
        total += len(rows)
    assert (counters["csv_received"], counters["csv_written"], counters["csv_dropped"]) == (total, total, 0)
