"""A member of an endpoint in the router's tests: says who it is, echoes the request, and behaves as its
environment says (MEMBER: its name; MEMBER_FAIL=1: run() raises; MEMBER_WAIT_FOR=PATH: run() waits until the
file exists, at most 60 s; MEMBER_SLEEP_S: run() sleeps that long; MEMBER_OFFSET: added to each row's label)."""

import json
import os
import time
from pathlib import Path


def init():
    pass


def run(raw_data, request_headers):
    if os.environ.get("MEMBER_FAIL") == "1":
        raise RuntimeError(f"member {os.environ['MEMBER']} fails on purpose")
    wait_for = os.environ.get("MEMBER_WAIT_FOR")
    if wait_for:
        deadline = time.monotonic() + 60
        while not Path(wait_for).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    if os.environ.get("MEMBER_SLEEP_S"):
        time.sleep(float(os.environ["MEMBER_SLEEP_S"]))
    data = json.loads(raw_data)
    rows = data.get("data", []) if isinstance(data, dict) else []
    offset = int(os.environ.get("MEMBER_OFFSET", "0"))
    return {"member": os.environ["MEMBER"], "labels": [int(sum(r)) % 3 + offset for r in rows],
            "request_id": request_headers.get("X-Request-Id") or request_headers.get("x-request-id"),
            "authorization": request_headers.get("Authorization") or request_headers.get("authorization")}
