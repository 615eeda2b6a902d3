"""A closed-loop HTTP load generator, run as its own process by the profiler.

    python -m mlops_magics.profiling.loadgen --url http://127.0.0.1:PORT/score --body FILE \\
        --concurrency 16 --duration 10 [--requests N] [--header "X-Name: value"]

A service key comes in the environment variable ``MLOPS_LOADGEN_KEY`` (sent as ``Authorization: Bearer KEY``),
never on the command line.

``concurrency`` keep-alive connections each send the body, wait for the whole answer, and send again, for
``duration`` seconds. It prints one JSON object: requests, successes, statuses, errors, wall seconds,
queries per second and latency percentiles in milliseconds. It uses only the standard library, so it runs
anywhere the kernel runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

PERCENTILES = (50, 90, 95, 99, 99.9)


def percentile(ordered: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile of sorted values (nearest rank); nan when empty."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


async def _connection(host: str, port: int, request: bytes, deadline: float, latencies: list[float],
                      statuses: Counter[int], errors: Counter[str], budget: list[int] | None) -> None:
    reader = writer = None
    while time.perf_counter() < deadline:
        if budget is not None:  # one event loop: taking from the shared budget needs no lock
            if budget[0] <= 0:
                break
            budget[0] -= 1
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            began = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, close = 0, False
            for line in head.split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                key = key.strip().lower()
                if key == b"content-length":
                    length = int(value)
                elif key == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await reader.readexactly(length)
            latencies.append((time.perf_counter() - began) * 1000)
            statuses[status] += 1
            if close:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            errors[type(exc).__name__] += 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


#: The environment variable that carries a service key to the load generator.
KEY_VARIABLE = "MLOPS_LOADGEN_KEY"


async def run(url: str, body: bytes, concurrency: int, duration: float, headers: Sequence[str] = (),
              requests: int | None = None) -> dict[str, Any]:
    """Load ``url`` with ``concurrency`` connections for ``duration`` seconds (or until ``requests`` were sent);
    return the summary."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    extra = "".join(f"{h}\r\n" for h in headers)
    request = (f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    began = time.perf_counter()
    deadline = began + duration
    budget = None if requests is None else [requests]
    await asyncio.gather(*(_connection(host, port, request, deadline, latencies, statuses, errors, budget)
                           for _ in range(concurrency)))
    wall = time.perf_counter() - began
    ordered = sorted(latencies)
    ok = sum(n for status, n in statuses.items() if status < 400)
    total = len(latencies) + sum(errors.values())
    return {
        "requests": total, "successes": ok, "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors), "seconds": wall, "qps": len(latencies) / wall if wall else 0.0,
        "average_ms": sum(ordered) / len(ordered) if ordered else float("nan"),
        "percentiles_ms": {str(p): percentile(ordered, p) for p in PERCENTILES},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="The scoring URL.")
    parser.add_argument("--body", required=True, help="A file holding the request body (JSON).")
    parser.add_argument("--concurrency", type=int, default=1, help="Connections, each one request at a time.")
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds of load.")
    parser.add_argument("--header", action="append", default=[], help="An extra request header; repeatable.")
    parser.add_argument("--requests", type=int, help="Stop after sending this many requests in all.")
    args = parser.parse_args(argv)
    key = os.environ.pop(KEY_VARIABLE, "")
    if key:  # a key comes through the environment, never the command line (which `ps` shows)
        args.header.append(f"Authorization: Bearer {key}")
    with open(args.body, "rb") as fh:
        body = fh.read()
    try:  # uvloop, when installed, lets one generator process drive more load
        import uvloop

        summary = uvloop.run(run(args.url, body, args.concurrency, args.duration, args.header, args.requests))
    except ImportError:
        summary = asyncio.run(run(args.url, body, args.concurrency, args.duration, args.header, args.requests))
    json.dump(summary, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
