"""Streams its answer: AMLResponse(generator, 200). The body (JSON) says where the gate file is: the second part
waits for it, so a client that reads the first part before creating the gate proves the answer is streamed."""

import json
import os
import time

from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


def run(data):
    request = json.loads(data or "{}")
    gate, fail = request.get("gate"), request.get("fail")

    def parts():
        yield "first\n"
        deadline = time.monotonic() + 20
        while gate and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
        yield "released\n" if not gate or os.path.exists(gate) else "not released: the first part was held back\n"
        if fail == "after":
            raise RuntimeError("the generator failed after its first part")
        yield "last\n"

    def failing():
        raise RuntimeError("the generator failed before its first part")
        yield ""  # a generator

    if fail == "before":
        return AMLResponse(failing(), 200)
    return AMLResponse(parts(), 200, {"Content-Type": "text/plain"})
