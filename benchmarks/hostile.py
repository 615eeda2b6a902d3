"""Hostile-client benchmark: mlops-serve before the hardening of issue 15 and after it, side by side in one run.

    python benchmarks/hostile.py            # about 5 minutes; results in benchmarks/results/hostile.md and .json
    python benchmarks/hostile.py --quick    # under 2 minutes, nothing recorded

The old server is the backend of ``--old-ref`` (default cca8bd8, the commit before the hardening), taken out of
git into a temporary folder (or ``--old-backend PATH``, a checkout's ``backend/``); the new one is this
checkout's ``backend/``. Each side runs ``python -m mlops_backend.cli`` with its own folder on PYTHONPATH, and
every entry script notes ``mlops_backend.__file__`` from inside the server at init(), so a result cannot come
from the wrong code. Both sides run with their default settings, one worker, no access log, on 127.0.0.1.

Scenarios (the issue's hostile clients; each bounded in count and time):

1. One 1 MB header; 100,000 headers: the status answered and the time to it.
2. 8 connections each streaming a 48 MB header (--quick: 16 MB) that never ends: the RSS of the server's processes (from
   /proc) before, at the peak, and after the connections close.
3. A 100,000-deep JSON body to an inference-schema script: the status.
4. 40 connections that never finish their headers: how many are still open 15 s later.
5. Overload: 200 clients for 10 s against a run() that sleeps 1 s. Each client sends a request, waits for its
   answer up to 5 s (then gives up: a client timeout), pauses 0.2 s after anything but a 200, and sends the
   next. Meanwhile GET / is probed every 0.2 s (each probe waits up to 10 s). When the clients leave: the
   run() calls that still start (the script appends a line per call to a file), and the time until GET /
   answers in under 100 ms (watched for a bounded time).
6. Fast-path cost: an echo run() under wrk at 1 and 16 connections, old and new both up and measured back to
   back, the order alternating, over rounds; the new/old throughput ratio of each round and their median (the
   machine's speed drifts: only ratios from one run count).
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, backend_at, checkout_ref, command_line, describe, finish, machine_info, unshadow
from serving import free_port, tree, wrk

unshadow()


HOST = "127.0.0.1"

#: Every entry script starts with this: it records which mlops_backend the server process imported.
WHICH = '''import os, sys, time
HERE = os.path.dirname(os.path.abspath(__file__))


def _note_backend():
    with open(os.path.join(HERE, "backend.txt"), "w") as fh:
        fh.write(sys.modules["mlops_backend"].__file__)
'''
ECHO = WHICH + '''

def init():
    _note_backend()


def run(data):
    return data
'''
SCHEMA = WHICH + '''
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema


def init():
    _note_backend()


@input_schema("data", StandardPythonParameterType([1.0, 2.0]))
def run(data):
    return len(data)
'''
SLOW = WHICH + '''

def init():
    _note_backend()


def run(data):
    with open(os.path.join(HERE, "runs.log"), "a") as fh:
        fh.write("%.6f\\n" % time.time())
    time.sleep(1)
    return "slept"
'''
SCRIPTS = {"echo": ECHO, "schema": SCHEMA, "slow": SLOW}


@dataclass
class Side:
    """One server's code: a backend folder to put on PYTHONPATH."""

    name: str  # old | new
    ref: str
    backend: Path
    seen: set[str] = field(default_factory=set)  # mlops_backend.__file__ as the servers reported it


@dataclass
class Server:
    side: Side
    process: subprocess.Popen[bytes]
    port: int
    folder: Path


_SERVERS: list[subprocess.Popen[bytes]] = []
_SOCKETS: list[socket.socket] = []


def _connect(port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=timeout)
    _SOCKETS.append(sock)
    return sock


def _close(sock: socket.socket) -> None:
    sock.close()
    with suppress(ValueError):
        _SOCKETS.remove(sock)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL if it has not gone within 5 s."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    with suppress(ValueError):
        _SERVERS.remove(process)


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, MB."""
    total = 0
    for member in tree(pid):
        with suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def exchange(port: int, data: bytes, timeout: float = 30) -> dict[str, Any]:
    """Send ``data`` on a new connection and read one response: status (0: closed without one), content type,
    body, and the seconds from the first byte sent to the whole response."""
    sock = _connect(port, timeout)
    began = time.perf_counter()
    try:
        with suppress(OSError):  # a server that answers early and closes resets the rest of the send
            sock.sendall(data)
        status, headers, body = _read_response(sock)
        return {"status": status, "content_type": headers.get("content-type", ""),
                "body": body[:300].decode("utf-8", "replace"), "seconds": round(time.perf_counter() - began, 4)}
    finally:
        _close(sock)


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            chunk = b""
        if not chunk:
            return 0, {}, b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def health(port: int, timeout: float = 5) -> int:
    """GET /: the status (0 if no answer)."""
    try:
        return int(exchange(port, b"GET / HTTP/1.1\r\nHost: b\r\n\r\n", timeout)["status"])
    except OSError:
        return 0


@contextmanager
def serving(side: Side, script: str, work: Path, *args: str) -> Iterator[Server]:
    """A server of ``side`` on a free port serving the entry script ``script`` (a key of SCRIPTS); stopped after."""
    folder = Path(tempfile.mkdtemp(prefix=f"{side.name}-{script}-", dir=work))
    (folder / "score.py").write_text(SCRIPTS[script])
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(side.backend), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "mlops_backend.cli", "--entry_script", str(folder / "score.py"),
               "--port", str(port), "--no-access-log", *args]
    with open(folder / "server.log", "wb") as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=folder,
                                   start_new_session=True)
    _SERVERS.append(process)
    try:
        deadline = time.monotonic() + 60
        while health(port, 2) != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {side.name} server did not start; see {folder / 'server.log'}")
            time.sleep(0.02)
        backend = (folder / "backend.txt").read_text()
        if not Path(backend).resolve().is_relative_to(side.backend.resolve()):
            raise RuntimeError(f"the {side.name} server imported {backend}, not the code in {side.backend}")
        side.seen.add(backend)
        yield Server(side, process, port, folder)
    finally:
        _stop(process)


# -- 1. huge heads ---------------------------------------------------------------------------------

def big_heads(side: Side, work: Path) -> dict[str, Any]:
    with serving(side, "echo", work) as s:
        one_mb = exchange(s.port, b"GET / HTTP/1.1\r\nHost: b\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
        many = exchange(s.port, b"GET / HTTP/1.1\r\nHost: b\r\n" + b"X-A: b\r\n" * 100_000 + b"\r\n")
        return {"one_1mb_header": one_mb, "100000_headers": many, "health_after": health(s.port),
                "rss_mb_after": round(rss_mb(s.process.pid), 1)}


# -- 2. unfinished 48 MB heads ---------------------------------------------------------------------

def unfinished_heads(side: Side, work: Path, connections: int = 8, megabytes: int = 48) -> dict[str, Any]:
    with serving(side, "echo", work) as s:
        time.sleep(0.3)
        before = rss_mb(s.process.pid)
        socks = [_connect(s.port, 30) for _ in range(connections)]
        sent = [0] * connections
        chunk = b"a" * (1 << 20)

        def stream(i: int) -> None:
            try:
                socks[i].sendall(b"GET / HTTP/1.1\r\nHost: b\r\nX-Big: ")
                for _ in range(megabytes):  # the header never ends, unless the server cuts it
                    socks[i].sendall(chunk)
                    sent[i] += len(chunk)
            except OSError:
                pass

        threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(connections)]
        for thread in threads:
            thread.start()
        peak = before
        while any(t.is_alive() for t in threads):
            peak = max(peak, rss_mb(s.process.pid))
            time.sleep(0.05)
        settle = time.monotonic() + 1.5  # what the server had still to read from its sockets
        while time.monotonic() < settle:
            peak = max(peak, rss_mb(s.process.pid))
            time.sleep(0.05)
        held = rss_mb(s.process.pid)
        answered = []
        for sock in socks:
            readable, _, _ = select.select([sock], [], [], 0)
            status = 0
            if readable:
                with suppress(OSError, ValueError, IndexError):
                    status = _read_response(sock)[0]
            answered.append(status)
            _close(sock)
        time.sleep(1)
        return {"connections": connections, "megabytes_each": megabytes, "rss_mb_before": round(before, 1),
                "rss_mb_peak": round(peak, 1), "rss_mb_held_open": round(held, 1),
                "rss_mb_after_close": round(rss_mb(s.process.pid), 1),
                "mb_sent_max": round(max(sent) / (1 << 20), 1), "statuses": sorted(set(answered)),
                "health_after": health(s.port)}


# -- 3. deep JSON ------------------------------------------------------------------------------------

def deep_json(side: Side, work: Path, depth: int = 100_000) -> dict[str, Any]:
    with serving(side, "schema", work) as s:
        body = b"[" * depth + b"]" * depth
        reply = exchange(s.port, b"POST /score HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        fine = exchange(s.port, b'POST /score HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n'
                        b'Content-Length: 20\r\n\r\n{"data": [1.0, 2.0]}')
        return {"depth": depth, **reply, "normal_request_after": fine["status"]}


# -- 4. slow heads -----------------------------------------------------------------------------------

def slow_heads(side: Side, work: Path, connections: int = 40, seconds: float = 15) -> dict[str, Any]:
    with serving(side, "echo", work) as s:
        socks = [_connect(s.port, 5) for _ in range(connections)]
        began = time.monotonic()
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: b\r\nX-Slow: ")
        pending = {sock: b"" for sock in socks}
        closed: dict[socket.socket, tuple[float, bytes]] = {}
        while pending and time.monotonic() - began < seconds:
            readable, _, _ = select.select(list(pending), [], [], max(0.0, seconds - (time.monotonic() - began)))
            for sock in readable:
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    chunk = b""
                if chunk:
                    pending[sock] += chunk
                else:
                    closed[sock] = (time.monotonic() - began, pending.pop(sock))
        statuses: dict[str, int] = {}
        for _, data in closed.values():
            code = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "none"
            statuses[code] = statuses.get(code, 0) + 1
        still_open = len(pending)
        up = health(s.port)
        for sock in socks:
            _close(sock)
        times = [t for t, _ in closed.values()]
        return {"connections": connections, "watched_s": seconds, "still_open": still_open,
                "closed": len(closed), "closed_with": statuses,
                "closed_after_s": round(statistics.median(times), 2) if times else None,
                "health_during": up}


# -- 5. overload -------------------------------------------------------------------------------------

async def _ask(port: int, data: bytes, timeout: float) -> tuple[str, float]:
    """One request on a new connection: ("200"/"503"/..., seconds), ("timeout", s) or ("error", s)."""
    began = time.perf_counter()
    writers: list[asyncio.StreamWriter] = []

    async def exchange() -> str:
        reader, writer = await asyncio.open_connection(HOST, port)
        writers.append(writer)
        writer.write(data)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next((int(v) for k, _, v in (x.partition(":") for x in lines[1:])
                       if k.strip().lower() == "content-length"), 0)
        await reader.readexactly(length)
        return lines[0].split()[1]

    try:
        return await asyncio.wait_for(exchange(), timeout), time.perf_counter() - began
    except asyncio.TimeoutError:
        return "timeout", time.perf_counter() - began
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return "error", time.perf_counter() - began
    finally:
        for writer in writers:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()


async def _overload(port: int, clients: int, seconds: float, client_timeout: float, probe_timeout: float,
                    watch: float) -> dict[str, Any]:
    score = b"POST /score HTTP/1.1\r\nHost: b\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nwait"
    probe = b"GET / HTTP/1.1\r\nHost: b\r\n\r\n"
    outcomes: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def client() -> None:
        while (left := end - loop.time()) > 0:
            outcome, _ = await _ask(port, score, min(client_timeout, left))
            if outcome == "timeout" and loop.time() >= end - 0.01:
                outcome = "waiting at the end"  # no answer yet when the clients left
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if outcome != "200":
                await asyncio.sleep(0.2)

    probes: list[asyncio.Task[tuple[str, float]]] = []

    async def prober() -> None:
        while loop.time() < end:
            probes.append(asyncio.create_task(_ask(port, probe, probe_timeout)))
            await asyncio.sleep(0.2)

    await asyncio.gather(prober(), *(client() for _ in range(clients)))
    left_at = time.time()
    recovered = None
    watch_end = loop.time() + watch
    began = loop.time()
    while loop.time() < watch_end:  # GET / every 0.2 s, each waiting up to 1 s, until one takes under 100 ms
        outcome, took = await _ask(port, probe, 1.0)
        if outcome == "200" and took < 0.1:
            recovered = loop.time() - began
            break
        await asyncio.sleep(0.2)
    probed = await asyncio.gather(*probes)
    latencies = [took if outcome == "200" else float("inf") for outcome, took in probed]
    return {"outcomes": outcomes, "left_at": left_at, "recovered_s": recovered,
            "probes": len(probed), "probes_answered": sum(o == "200" for o, _ in probed),
            "probes_over_1s": sum(t > 1 for t in latencies),
            "probe_max_s": max(latencies), "probe_median_s": statistics.median(latencies),
            "probe_seconds": [round(t, 4) if t != float("inf") else None for t in latencies]}


def overload(side: Side, work: Path, clients: int, seconds: float, watch: float) -> dict[str, Any]:
    with serving(side, "slow", work) as s:
        result = asyncio.run(_overload(s.port, clients, seconds, 5.0, 10.0, watch))
        if result["recovered_s"] is not None:
            time.sleep(2)  # a run() that was about to start would show in the log by now
        log = s.folder / "runs.log"
        stamps = [float(x) for x in log.read_text().split()] if log.exists() else []
        left_at = result.pop("left_at")
        after = sum(t > left_at for t in stamps)
        result.update({"clients": clients, "seconds": seconds, "watched_s": watch, "run_calls": len(stamps),
                       "run_calls_after_clients_left": after})
        for key in ("probe_max_s", "probe_median_s"):
            result[key] = None if result[key] == float("inf") else round(result[key], 4)
        if result["recovered_s"] is not None:
            result["recovered_s"] = round(result["recovered_s"], 2)
        return result


# -- 6. fast path ------------------------------------------------------------------------------------

def fast_path(sides: list[Side], work: Path, rounds: int, seconds: int) -> dict[str, Any]:
    """Both servers up at once (the one not measured is idle); each round measures old and new back to back,
    at 1 then 16 connections, the order alternating, so that a ratio compares runs seconds apart."""
    from contextlib import ExitStack

    body = b'{"data": [[1, 2, 3, 4]]}'
    runs: dict[str, list[dict[str, float]]] = {side.name: [] for side in sides}
    with ExitStack() as stack:
        servers = {side.name: stack.enter_context(serving(side, "echo", work)) for side in sides}
        for s in servers.values():
            wrk(s.port, "/score", body, "application/json", 4, 1, work)  # warm-up
        for r in range(rounds):
            rows: dict[str, dict[str, float]] = {side.name: {} for side in sides}
            for connections in (1, 16):
                for side in sides if (r + connections) % 2 == 0 else list(reversed(sides)):
                    found = wrk(servers[side.name].port, "/score", body, "application/json", connections, seconds,
                                work)
                    rows[side.name][f"c{connections}_rps"] = found["rps"]
                    rows[side.name][f"c{connections}_p99_ms"] = found["p99_ms"]
                    rows[side.name][f"c{connections}_errors"] = found["non_2xx"] + found["socket_errors"]
            for name, row in rows.items():
                runs[name].append(row)
                print(f"  round {r + 1} {name}: c1 {row['c1_rps']:,.0f} req/s, c16 {row['c16_rps']:,.0f} req/s",
                      file=sys.stderr, flush=True)
    ratios = {f"c{c}": [n[f"c{c}_rps"] / o[f"c{c}_rps"] for o, n in zip(runs["old"], runs["new"], strict=True)]
              for c in (1, 16)}
    medians = {name: {k: round(statistics.median(r[k] for r in found), 3) for k in found[0]}
               for name, found in runs.items()}
    return {"rounds": rounds, "seconds": seconds, "runs": runs, "medians": medians,
            "ratio_per_round": {k: [round(x, 3) for x in v] for k, v in ratios.items()},
            "ratio_median": {k: round(statistics.median(v), 3) for k, v in ratios.items()}}


# -- the run -----------------------------------------------------------------------------------------

def run_all(sides: list[Side], work: Path, quick: bool, only: set[str]) -> dict[str, Any]:
    scenarios: dict[str, dict[str, Any]] = {}

    def each(name: str, measure: Any, *args: Any) -> None:
        if only and name not in only:
            return
        scenarios[name] = {}
        for side in sides:
            print(f"{name}: {side.name}", file=sys.stderr, flush=True)
            began = time.monotonic()
            scenarios[name][side.name] = measure(side, work, *args)
            print(f"  {json.dumps(scenarios[name][side.name])[:400]} ({time.monotonic() - began:.0f} s)",
                  file=sys.stderr, flush=True)

    each("big_heads", big_heads)
    each("unfinished_heads", unfinished_heads, 8, 16 if quick else 48)
    each("deep_json", deep_json)
    each("slow_heads", slow_heads)
    each("overload", overload, 200, 5 if quick else 10, 10 if quick else 90)
    if only and "fast_path" not in only:
        return scenarios
    print("fast_path", file=sys.stderr, flush=True)
    scenarios["fast_path"] = fast_path(sides, work, 2 if quick else 8, 1 if quick else 3)
    return scenarios


def _status(found: dict[str, Any]) -> str:
    text = str(found["status"] or "no answer")
    if found.get("content_type") and found["status"] != 200:
        text += " JSON" if found["content_type"] == "application/json" else f" {found['content_type']}"
    return f"{text} in {found['seconds'] * 1000:.0f} ms"


def _message(body: str) -> str:
    try:
        return repr(str(json.loads(body)["message"])[:90])
    except (ValueError, KeyError, TypeError):
        return repr(body[:90])


def _seconds(value: float | None, bound: float) -> str:
    return f"> {bound:g} s (not within the watch)" if value is None else f"{value:.2f} s"


def table(result: dict[str, Any]) -> list[str]:
    s = result["scenarios"]
    rows: list[tuple[str, str, str]] = []

    def add(label: str, fn: Any) -> None:
        old, new = (fn(s_name) for s_name in ("old", "new"))
        rows.append((label, old, new))

    add("1. one 1 MB header: status", lambda k: _status(s["big_heads"][k]["one_1mb_header"]))
    add("1. 100,000 headers: status", lambda k: _status(s["big_heads"][k]["100000_headers"]))
    u = s["unfinished_heads"]
    add(f"2. {u['old']['connections']} unfinished {u['old']['megabytes_each']} MB headers: RSS MB before -> "
        "peak -> after close",
        lambda k: f"{u[k]['rss_mb_before']:.0f} -> {u[k]['rss_mb_peak']:.0f} -> {u[k]['rss_mb_after_close']:.0f}")
    add("2. ... MB a client sent before the server cut it (most of the 8)", lambda k: f"{u[k]['mb_sent_max']:g}"
        + (f", answered {u[k]['statuses']}" if any(u[k]["statuses"]) else ""))
    d = s["deep_json"]
    add(f"3. JSON body {d['old']['depth']:,} deep: status", lambda k: f"{d[k]['status']} {_message(d[k]['body'])}")
    h = s["slow_heads"]
    add(f"4. {h['old']['connections']} never-finished heads: still open after {h['old']['watched_s']:g} s",
        lambda k: f"{h[k]['still_open']}" + (f" (closed with {h[k]['closed_with']} after {h[k]['closed_after_s']} s)"
                                             if h[k]["closed"] else ""))
    o = s["overload"]
    add(f"5. {o['old']['clients']} clients x {o['old']['seconds']:g} s, run() = 1 s: answers 200 / 503 / client "
        "timeouts (5 s) / still waiting at the end",
        lambda k: " / ".join(str(o[k]["outcomes"].get(x, 0)) for x in ("200", "503", "timeout", "waiting at the end"))
        + (f" / errors {o[k]['outcomes']['error']}" if o[k]["outcomes"].get("error") else ""))
    add("5. GET / during the load (every 0.2 s): answered, over 1 s, median, max",
        lambda k: f"{o[k]['probes_answered']}/{o[k]['probes']}, {o[k]['probes_over_1s']}, "
                  + ", ".join("> 10 s" if o[k][x] is None else f"{o[k][x] * 1000:.0f} ms"
                              for x in ("probe_median_s", "probe_max_s")))
    add("5. run() calls: all / after the clients left",
        lambda k: f"{o[k]['run_calls']} / {o[k]['run_calls_after_clients_left']}"
                  + (" (still going)" if o[k]["recovered_s"] is None else ""))
    add("5. GET / under 100 ms again, after the clients left",
        lambda k: _seconds(o[k]["recovered_s"], o[k]["watched_s"]))
    f = s["fast_path"]
    for c in (1, 16):
        rows.append((f"6. echo, wrk c={c}: req/s (median of {f['rounds']} rounds of {f['seconds']} s)",
                     f"{f['medians']['old'][f'c{c}_rps']:,.0f}", f"{f['medians']['new'][f'c{c}_rps']:,.0f} "
                     f"(new/old {f['ratio_median'][f'c{c}']:.3f}; rounds {f['ratio_per_round'][f'c{c}']})"))
        rows.append((f"6. echo, wrk c={c}: p99 ms", f"{f['medians']['old'][f'c{c}_p99_ms']:.2f}",
                     f"{f['medians']['new'][f'c{c}_p99_ms']:.2f}"))
    old, new = result["sides"]["old"], result["sides"]["new"]
    lines = [f"| scenario | old ({old['ref']}) | new ({new['ref']}) |", "|---|---|---|"]
    return lines + [f"| {a} | {b} | {c} |" for a, b, c in rows]


def report(result: dict[str, Any]) -> str:
    lines = ["# Hostile clients benchmark (issue 15): mlops-serve before and after the hardening", "",
             f"Machine: {describe(result['machine'])}",
             f"Command: `python benchmarks/hostile.py{' --quick' if result['quick'] else ''}` "
             f"({result['seconds']:.0f} s). Both servers with their default settings, one worker, no access log, "
             "127.0.0.1; the clients run on the same 2 cores.",
             "Code: " + "; ".join(f"{k} = {v['backend_seen']}" for k, v in result["sides"].items())
             + " (as each server process reported it).", ""]
    lines += table(result)
    lines += ["", "Overload clients: a request on a new connection, up to 5 s for its answer, 0.2 s pause after "
              "anything but a 200; \"still waiting at the end\": requests not answered yet when the load ended and "
              "the clients left. GET / probes wait up to 10 s each (\"> 10 s\": not answered in that time; Kubernetes' "
              "default probe timeout is 1 s). After the load, GET / is asked every 0.2 s until it answers in "
              "under 100 ms, for a bounded watch; the old server's queue is still being run when it is stopped.",
              "", "Every figure of the run is in hostile.json.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = command_line(__doc__, "Shorter load and fewer rounds; nothing recorded.")
    parser.add_argument("--old-ref", default="cca8bd8", help="The commit before the hardening (default cca8bd8).")
    parser.add_argument("--old-backend", type=Path, help="Use this backend/ folder for the old side instead.")
    parser.add_argument("--only", default="", help="Comma-separated scenarios (big_heads, unfinished_heads, "
                        "deep_json, slow_heads, overload, fast_path): their figures printed, no report.")
    args = parser.parse_args()
    only = {x for x in args.only.split(",") if x}
    began = time.monotonic()
    for sig in (signal.SIGTERM, signal.SIGHUP):  # stop the servers on the way out, whatever ends the run
        signal.signal(sig, lambda *_: sys.exit(1))
    with tempfile.TemporaryDirectory(prefix="mlops-bench-hostile-") as tmp:
        work = Path(tmp)
        try:
            old_backend = args.old_backend or backend_at(args.old_ref, work)
            sides = [Side("old", args.old_ref, old_backend.resolve()), Side("new", checkout_ref(), REPO / "backend")]
            scenarios = run_all(sides, work, args.quick, only)
        finally:
            for sock in list(_SOCKETS):
                _close(sock)
            for process in list(_SERVERS):
                _stop(process)
    result = {"machine": machine_info(), "quick": args.quick, "seconds": round(time.monotonic() - began, 1),
              "sides": {side.name: {"ref": side.ref, "backend": str(side.backend),
                                    "backend_seen": sorted(side.seen)[0] if side.seen else None}
                        for side in sides},
              "scenarios": scenarios}
    if only:
        print(json.dumps(result, indent=2))
        return 0
    return finish("hostile", result, report, quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
