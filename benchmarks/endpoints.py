"""Endpoint benchmark: what the router (mlops-route) costs, measured against calling the deployment directly.

    python benchmarks/endpoints.py             # full run (about 6 minutes), results in benchmarks/results/
    python benchmarks/endpoints.py --quick     # a short smoke run, nothing recorded
    python benchmarks/endpoints.py --against REF --record NAME   # REF's router beside this checkout's, too

Two members are real ``mlops-serve`` processes (one worker each, no access log: the leanest member, so the
router's share shows at its largest) serving an iris LogisticRegression through the ordinary Azure ML style
entry script the tests serve (tests/entry_scripts/sklearn_model.py). wrk (Debian package ``wrk``, keep-alive)
posts one row per request at concurrency 1 and 16 to each set-up:

- ``direct``: the member ``blue`` itself;
- ``routed``: a router with ``blue`` at 100%, recording every answer (the default of an endpoint);
- ``routed-norecord``: the same with recording off (``"record": false`` in the routes file);
- ``split``: a router with ``blue`` 90 / ``green`` 10;
- ``shadow``: a router with ``blue`` at 100% and a shadow copy of every request to ``green`` (sent after the
  answer; the copies dropped because 64 were in flight are counted from the router's ``/endpoint``).

Each router is started as an endpoint starts its own (``--traffic-dir``, ``--reuse-port``, a routes file); all
are up at once, the idle ones cost nothing. The machine's speed drifts between runs (up to 50%), so each round
measures every set-up back to back, the order rotating from round to round, and the figures that count are
the ratios to ``direct`` in the same round (then their median over rounds): p50 overhead in ms, p99 overhead,
throughput ratio. CPU per request comes from /proc: the router process, the members, and wrk itself
(getrusage of the children). wrk, the members and the router share the machine's cores (2 here), so at c=16
every CPU millisecond the router spends is taken from the member: the CPU figures show where the time goes.
Goal (issue 19): p50 overhead <= 0.3 ms and throughput >= 80% of direct at c=16.

``--against REF`` adds ``routed-REF``: the router of commit REF's ``backend/`` (taken out of git, run with it
first on PYTHONPATH), recording on, beside this checkout's, to measure a change of the router in one run.
``--router-loop asyncio|uvloop`` runs every router on that loop (default: the router's own, uvloop when installed);
``--setups routed,shadow`` measures
only those (and ``direct``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, backend_at, checkout_ref, command_line, describe, finish, unshadow
from serving import ROWS, SKLEARN, TRAIN_LR, cpu_seconds, free_port, post, stop, tree, wrk

unshadow()

BODY = json.dumps({"data": ROWS["lr"]}).encode()
JSON = "application/json"
CONCURRENCY = (1, 16)
GOAL_P50_MS = 0.3
GOAL_THROUGHPUT = 0.8
#: What each router set-up serves: (members by weight, shadow, record).
ROUTES: dict[str, dict[str, Any]] = {
    "routed": {"weights": {"blue": 100}, "shadow": None, "record": True},
    "routed-norecord": {"weights": {"blue": 100}, "shadow": None, "record": False},
    "split": {"weights": {"blue": 90, "green": 10}, "shadow": None, "record": True},
    "shadow": {"weights": {"blue": 100, "green": 0}, "shadow": "green", "record": True},
}
WHAT = {"direct": "the member blue itself, no router",
        "routed": "router, blue 100%, recording on (the default)",
        "routed-norecord": "router, blue 100%, recording off",
        "split": "router, blue 90 / green 10, recording on",
        "shadow": "router, blue 100% + shadow copy of every request to green, recording on"}


@dataclass
class Setup:
    """One thing wrk loads: a member, or a router in front of members."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    #: The members whose CPU counts for this set-up.
    members: list[subprocess.Popen[bytes]] = field(default_factory=list)
    router: bool = True


def _wait_scoring(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if post(port, "/score", BODY, JSON) == 200:
                return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not serve /score (exit status {process.poll()}); see {log}")
        time.sleep(0.02)


def start_member(work: Path, name: str) -> tuple[subprocess.Popen[bytes], int]:
    """``mlops-serve`` with the iris entry script, one worker; return it and its port."""
    port = free_port()
    log = work / f"member-{name}.log"
    command = [str(Path(sys.executable).parent / "mlops-serve"), "--entry_script", str(work / "score.py"),
               "--model_dir", str(work / "lr"), "--port", str(port), "--worker_count", "1", "--no-access-log"]
    with open(log, "ab") as err:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=work, start_new_session=True)
    _wait_scoring(port, process, f"member {name}", log)
    return process, port


def start_router(work: Path, name: str, routes: dict[str, Any], members: dict[str, int], loop: str,
                 env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """A router process, as an endpoint starts its own, serving ``routes``; return it and its port."""
    place = work / name
    place.mkdir()
    table = {"generation": 1, "endpoint": "iris", "record": routes["record"],
             "members": [{"name": m, "url": f"http://127.0.0.1:{members[m]}", "weight": w}
                         for m, w in routes["weights"].items()],
             "shadow": None if routes["shadow"] is None else {"name": routes["shadow"], "percent": 100}}
    (place / "routes.json").write_text(json.dumps(table))
    port = free_port()
    command = [sys.executable, "-m", "mlops_backend.router.serve", "--routes", str(place / "routes.json"),
               "--port", str(port), "--host", "127.0.0.1", "--traffic-dir", str(place / "traffic"),
               "--ready-file", str(place / "ready"), "--reuse-port", *(["--loop", loop] if loop != "auto" else [])]
    with open(place / "router.log", "ab") as err:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
    _wait_scoring(port, process, f"router {name}", place / "router.log")
    return process, port


def endpoint_status(port: int) -> dict[str, Any]:
    """The router's ``/endpoint``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/endpoint", timeout=5) as response:
        found: dict[str, Any] = json.loads(response.read())
    return found


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(setup: Setup, connections: int, seconds: int, work: Path) -> dict[str, float]:
    """One wrk run against ``setup``, with the CPU each side spent on it."""
    status = endpoint_status(setup.port) if setup.name == "shadow" else None
    router_before = cpu_seconds(tree(setup.process.pid)) if setup.router else 0.0
    members_before = cpu_seconds([p for m in setup.members for p in tree(m.pid)])
    wrk_before = _children_cpu()
    result = wrk(setup.port, "/score", BODY, JSON, connections, seconds, work)
    wrk_used = _children_cpu() - wrk_before
    members_used = cpu_seconds([p for m in setup.members for p in tree(m.pid)]) - members_before
    router_used = cpu_seconds(tree(setup.process.pid)) - router_before if setup.router else 0.0
    requests = max(result["requests"], 1.0)
    row = {"rps": result["rps"], "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
           "requests": result["requests"], "errors": result["non_2xx"] + result["socket_errors"],
           "router_cpu_ms_per_request": router_used / requests * 1000,
           "members_cpu_ms_per_request": members_used / requests * 1000,
           "router_and_members_cpu_ms_per_request": (router_used + members_used) / requests * 1000,
           "wrk_cpu_ms_per_request": wrk_used / requests * 1000}
    if status is not None:
        time.sleep(0.3)  # the copies still in flight land
        after = endpoint_status(setup.port)

        def copies(found: dict[str, Any]) -> int:
            return int(found["answers"].get("green", {}).get("shadow", {}).get("requests", 0))

        row["shadow_sent"] = float(copies(after) - copies(status))
        row["shadow_dropped"] = float(after["shadow_dropped"] - status["shadow_dropped"])
    return row


def rounds_of(setups: list[Setup], rounds: int, seconds: int, work: Path) -> dict[str, list[dict[str, Any]]]:
    """Every set-up at every concurrency, back to back; the order rotates each round (each set-up takes each
    place in turn) and reverses every other round."""
    runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in setups}
    for r in range(rounds):
        shift = r % len(setups)
        order = setups[shift:] + setups[:shift]
        if r % 2:
            order.reverse()
        rows: dict[str, dict[str, Any]] = {s.name: {} for s in setups}
        for connections in CONCURRENCY:
            for setup in order:
                rows[setup.name][f"c{connections}"] = measure(setup, connections, seconds, work)
        for name, row in rows.items():
            runs[name].append(row)
        print(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{name} {row['c16']['rps']:,.0f} req/s" for name, row in rows.items()), file=sys.stderr, flush=True)
    return runs


def compare(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per set-up, against ``direct`` in the same round, then the median over rounds: p50 and p99 overhead (ms)
    at each concurrency, and the throughput ratio."""
    found: dict[str, dict[str, float]] = {}
    for name, rows in runs.items():
        if name == "direct":
            continue
        figures: dict[str, float] = {}
        for c in CONCURRENCY:
            pairs = list(zip(rows, runs["direct"], strict=True))
            figures[f"c{c}_p50_overhead_ms"] = round(statistics.median(
                t[f"c{c}"]["p50_ms"] - d[f"c{c}"]["p50_ms"] for t, d in pairs), 3)
            figures[f"c{c}_p99_overhead_ms"] = round(statistics.median(
                t[f"c{c}"]["p99_ms"] - d[f"c{c}"]["p99_ms"] for t, d in pairs), 3)
            figures[f"c{c}_throughput_ratio"] = round(statistics.median(
                t[f"c{c}"]["rps"] / d[f"c{c}"]["rps"] for t, d in pairs), 3)
        found[name] = figures
    return found


def medians(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The median over rounds of every figure, per concurrency."""
    return {f"c{c}": {k: round(statistics.median(r[f"c{c}"][k] for r in rows), 4) for k in rows[0][f"c{c}"]}
            for c in CONCURRENCY}


def run(args: Any, work: Path) -> dict[str, Any]:
    (work / "lr").mkdir()
    (work / "score.py").write_text(SKLEARN)
    subprocess.run([sys.executable, "-c", TRAIN_LR, str(work)], check=True)
    processes: list[subprocess.Popen[bytes]] = []
    seen: dict[str, str] = {}
    try:
        blue, blue_port = start_member(work, "blue")
        green, green_port = start_member(work, "green")
        processes += [blue, green]
        ports = {"blue": blue_port, "green": green_port}
        setups = [Setup("direct", blue_port, blue, [blue], router=False)]
        variants: list[tuple[str, str, dict[str, str] | None]] = [(n, n, None) for n in ROUTES]
        if args.against:
            backend = backend_at(args.against, work).resolve()
            env = {**os.environ, "PYTHONPATH": str(backend)}
            variants.append((f"routed-{args.against}", "routed", env))
        for name, routes, env in variants:
            if args.setups and name not in args.setups and not (env and "routed" in args.setups):
                continue
            process, port = start_router(work, name, ROUTES[routes], ports, args.router_loop, env)
            processes.append(process)
            used = [blue, green] if ROUTES[routes]["weights"].get("green") or ROUTES[routes]["shadow"] else [blue]
            setups.append(Setup(name, port, process, used))
            seen[name] = subprocess.run([sys.executable, "-c", "import mlops_backend; print(mlops_backend.__file__)"],
                                        env=env, capture_output=True, text=True, check=True).stdout.strip()
        for setup in setups:
            wrk(setup.port, "/score", BODY, JSON, 4, 1, work)  # warm-up: connections, caches
        runs = rounds_of(setups, args.rounds, args.seconds, work)
        traffic = {s.name: endpoint_status(s.port)["traffic"] for s in setups if s.router}
    finally:
        for process in processes:
            stop(process)
    return {"arguments": "".join(f" {a}" for a in sys.argv[1:]), "rounds": args.rounds, "seconds": args.seconds,
            "router_loop": args.router_loop if args.router_loop != "auto" else
            f"auto ({'uvloop' if importlib.util.find_spec('uvloop') else 'asyncio'}; a router of --against runs its "
            "own default)", "code": checkout_ref(),
            "against": args.against, "router_code": seen, "setups": {s.name: WHAT.get(s.name, WHAT["routed"] + " at "
                                                                     + str(args.against)) for s in setups},
            "runs": runs, "medians": {name: medians(rows) for name, rows in runs.items()},
            "vs_direct": compare(runs), "traffic": traffic}


def goals(result: dict[str, Any]) -> dict[str, Any]:
    routed = result["vs_direct"].get("routed")
    if routed is None:
        return {}
    return {f"p50 overhead at c=1, ms (goal <= {GOAL_P50_MS})": routed["c1_p50_overhead_ms"],
            f"p50 overhead at c=16, ms (goal <= {GOAL_P50_MS})": routed["c16_p50_overhead_ms"],
            f"throughput at c=16 vs direct (goal >= {GOAL_THROUGHPUT})": routed["c16_throughput_ratio"]}


def report(result: dict[str, Any]) -> str:
    loop = result["router_loop"]
    lines = ["# Endpoint router benchmark: through mlops-route against calling the member directly", "",
             f"Machine: {describe(result['machine'])}",
             f"Command: `python benchmarks/endpoints.py{result['arguments']}` (code {result['code']}; "
             f"{result['rounds']} rounds of {result['seconds']} s per wrk run, every set-up up at once and measured "
             f"back to back, the order rotating; ratios to direct per round, then their median). Router event loop: "
             f"{loop}.",
             "Members: mlops-serve, one worker each, no access log, iris LogisticRegression through an Azure ML "
             "style entry script; one row per request, keep-alive. wrk, the members and the router share the "
             f"machine's {result['machine']['cores']} cores: at c=16 the router's CPU is taken from the member.", "",
             "## Goal (issue 19), router with one member at 100%, recording on", "",
             "| goal | measured |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in goals(result).items()]
    lines += ["", "## Against direct (median over rounds of each round's difference or ratio)", "",
              "| set-up | c=1 p50 +ms | c=1 p99 +ms | c=1 req/s ratio | c=16 p50 +ms | c=16 p99 +ms | "
              "c=16 req/s ratio |", "|---|---|---|---|---|---|---|"]
    for name, v in result["vs_direct"].items():
        lines.append(f"| {name} | {v['c1_p50_overhead_ms']} | {v['c1_p99_overhead_ms']} | {v['c1_throughput_ratio']} "
                     f"| {v['c16_p50_overhead_ms']} | {v['c16_p99_overhead_ms']} | {v['c16_throughput_ratio']} |")
    lines += ["", "## Figures (medians over rounds)", "",
              "| set-up | c | req/s | p50 ms | p99 ms | router CPU ms/req | members CPU ms/req | "
              "router+members CPU ms/req | wrk CPU ms/req | errors |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, found in result["medians"].items():
        for c in CONCURRENCY:
            m = found[f"c{c}"]
            lines.append(f"| {name} | {c} | {m['rps']:,.0f} | {m['p50_ms']:.3f} | {m['p99_ms']:.3f} | "
                         f"{m['router_cpu_ms_per_request']:.3f} | {m['members_cpu_ms_per_request']:.3f} | "
                         f"{m['router_and_members_cpu_ms_per_request']:.3f} | {m['wrk_cpu_ms_per_request']:.3f} | "
                         f"{m['errors']:g} |")
    shadow = result["runs"].get("shadow")
    if shadow:
        sent = {c: sum(r[f"c{c}"]["shadow_sent"] for r in shadow) for c in CONCURRENCY}
        dropped = {c: sum(r[f"c{c}"]["shadow_dropped"] for r in shadow) for c in CONCURRENCY}
        asked = {c: sum(r[f"c{c}"]["requests"] for r in shadow) for c in CONCURRENCY}
        lines += ["", "Shadow copies (all rounds): " + "; ".join(
            f"c={c}: {asked[c]:,.0f} requests, {sent[c]:,.0f} copies answered by green, {dropped[c]:,.0f} dropped "
            "(64 in flight)" for c in CONCURRENCY) + "."]
    lines += ["", "Traffic records written by each router over the run: " + ", ".join(
        f"{name} {t['written']:,} (dropped {t['dropped']})" for name, t in result["traffic"].items() if t) + ".",
        "", "Every figure of every round is in the JSON file.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = command_line(__doc__, "One short round, nothing recorded.")
    parser.add_argument("--seconds", type=int, default=5, help="Duration of each wrk run.")
    parser.add_argument("--rounds", type=int, default=5, help="Rounds (the order rotates); medians are reported.")
    parser.add_argument("--router-loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                        help="The routers' event loop (default: the router's own default, uvloop when installed).")
    parser.add_argument("--against", metavar="REF", help="Also the router of commit REF, recording on.")
    parser.add_argument("--setups", type=lambda text: text.split(","), metavar="A,B",
                        help="Only these router set-ups (direct is always measured), e.g. routed,shadow.")
    parser.add_argument("--record", metavar="NAME", default="endpoints",
                        help="results/NAME.md and .json (default endpoints).")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 1, 1
    with tempfile.TemporaryDirectory(prefix="mlops-bench-endpoints-") as tmp:
        result = run(args, Path(tmp))
    result["goals"] = goals(result)
    return finish(args.record, result, report, quick=args.quick)


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
