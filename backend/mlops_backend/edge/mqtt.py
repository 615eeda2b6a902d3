"""The module's message path, IoT Edge style: input messages from an MQTT broker on the device, scored, answered.

``python -m mlops_backend.edge.mqtt --broker HOST:PORT`` subscribes to ``--input-topic`` (QoS 1), sends each
message's payload, as it came, to the scoring server's ``POST /score`` on this device (``--score-url``), and
publishes the answer to ``--output-topic`` (QoS 1) as ``{"request_id", "status", "output"}``: ``output`` is the
answer's JSON (a string when it is not JSON). The request id is the input's MQTT 5 correlation data, or its
``request_id`` user property, or else the one the server made; it is sent as ``x-request-id``, so the collected
record of the request has it too. The answer carries the input's correlation data back and ``request_id`` and
``status`` user properties (MQTT 5).

Messages are scored one at a time, in the order they came, by one thread (the broker's connection is kept by
paho's own thread, so a slow model does not drop it); at most ``--queue`` wait; past that a message is answered
503 at once. A broker that goes away is reconnected to (every 1-2 s) and the topic subscribed to again.

paho-mqtt is imported here only: a module without MQTT configured never needs it.
"""

from __future__ import annotations

import argparse
import http.client
import os
import queue
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from mlops_backend import DEFAULT_PORT

DEFAULT_INPUT_TOPIC = "mlops/score/input"
DEFAULT_OUTPUT_TOPIC = "mlops/score/output"
_ID_LIMIT = 100


@dataclass(frozen=True)
class BridgeSettings:
    """What the bridge needs: see ``python -m mlops_backend.edge.mqtt --help``."""

    host: str
    port: int = 1883
    input_topic: str = DEFAULT_INPUT_TOPIC
    output_topic: str = DEFAULT_OUTPUT_TOPIC
    score_url: str = f"http://127.0.0.1:{DEFAULT_PORT}/score"
    key_file: Path | None = None
    client_id: str = ""
    queue_limit: int = 1000
    timeout_s: float = 60.0


def parse_broker(text: str) -> tuple[str, int]:
    """``"host"`` or ``"host:port"`` (1883 by default).

    Raises:
        ValueError: the port is not a number.
    """
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "1883")
    if not host or not port.isdigit():
        raise ValueError(f"Broker {text!r} is invalid: give HOST or HOST:PORT, e.g. 127.0.0.1:1883.")
    return host, int(port)


def request_id_of(message: Any) -> str | None:
    """The request id an input message carries: MQTT 5 correlation data, else its ``request_id`` user property."""
    properties = getattr(message, "properties", None)
    found: str | None = None
    correlation = getattr(properties, "CorrelationData", None)
    if correlation:
        found = bytes(correlation).decode("utf-8", "replace")
    else:
        for name, value in getattr(properties, "UserProperty", None) or ():
            if name == "request_id":
                found = value
    if found is None or len(found) > _ID_LIMIT or not found.isprintable():
        return None
    return found


class Bridge:
    """The MQTT bridge of one module; :meth:`run` serves until :attr:`stop` is set."""

    def __init__(self, settings: BridgeSettings) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        self.settings = settings
        self.stop = threading.Event()
        self.waiting: queue.Queue[Any] = queue.Queue(settings.queue_limit)
        url = urlsplit(settings.score_url)
        self._score_host, self._score_port = url.hostname or "127.0.0.1", url.port or 80
        self._score_path = url.path or "/score"
        self._connection: http.client.HTTPConnection | None = None
        key = ""
        if settings.key_file is not None:
            lines = settings.key_file.read_text().split()
            key = lines[0] if lines else ""
        self._auth = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_connect = self._connected
        self.client.on_message = self._received
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.scored = 0

    # -- paho's thread ----------------------------------------------------------------------

    def _connected(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            _say(f"the broker refused the connection: {reason}")
            return
        client.subscribe(self.settings.input_topic, qos=1)
        _say(f"subscribed to {self.settings.input_topic!r} on {self.settings.host}:{self.settings.port}")

    def _received(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            self.waiting.put_nowait(message)
        except queue.Full:
            self._publish(request_id_of(message), message, 503,
                          {"message": f"The module has {self.settings.queue_limit} messages waiting: try later."})

    # -- the scoring thread -----------------------------------------------------------------

    def run(self) -> None:
        """Connect (retrying until the broker answers), score messages until :attr:`stop` is set, disconnect."""
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=30)
        self.client.loop_start()
        try:
            while not self.stop.is_set():
                try:
                    message = self.waiting.get(timeout=0.2)
                except queue.Empty:
                    continue
                self.handle(message)
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            if self._connection is not None:
                self._connection.close()

    def handle(self, message: Any) -> None:
        """Score one input message and publish its answer."""
        request_id = request_id_of(message)
        headers = {"Content-Type": "application/json", **self._auth}
        if request_id is not None:
            headers["x-request-id"] = request_id
        try:
            status, answer_id, body = self._score(bytes(message.payload), headers)
        except (OSError, http.client.HTTPException) as exc:
            status, answer_id = 503, request_id
            body = orjson.dumps({"message": f"The scoring server did not answer: {exc}."})
        try:
            output: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            output = body.decode("utf-8", "replace")
        self._publish(answer_id, message, status, output)
        self.scored += 1

    def _score(self, payload: bytes, headers: dict[str, str]) -> tuple[int, str | None, bytes]:
        for attempt in (1, 2):
            reused = self._connection is not None
            if self._connection is None:
                self._connection = http.client.HTTPConnection(self._score_host, self._score_port,
                                                              timeout=self.settings.timeout_s)
            try:
                self._connection.request("POST", self._score_path, body=payload, headers=headers)
                response = self._connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                self._connection.close()
                self._connection = None
                if not reused or attempt == 2:  # a kept-alive connection closed by the server: once more
                    raise
                continue
            if response.will_close:
                self._connection.close()
                self._connection = None
            return response.status, response.getheader("x-request-id"), body
        raise AssertionError("unreachable")

    def _publish(self, request_id: str | None, message: Any, status: int, output: Any) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        correlation = getattr(getattr(message, "properties", None), "CorrelationData", None)
        if correlation:
            properties.CorrelationData = bytes(correlation)
        properties.UserProperty = [("status", str(status))] + ([("request_id", request_id)] if request_id else [])
        payload = orjson.dumps({"request_id": request_id, "status": status, "output": output})
        self.client.publish(self.settings.output_topic, payload, qos=1, properties=properties)


def parser() -> argparse.ArgumentParser:
    """The bridge's command line (each option also from the environment variable its help names)."""
    p = argparse.ArgumentParser(prog="python -m mlops_backend.edge.mqtt",
                                description="Score MQTT input messages with the scoring server on this device and "
                                            "publish the answers.")
    p.add_argument("--broker", help="The MQTT broker, HOST[:PORT] (env MLOPS_EDGE_MQTT; port 1883 by default).")
    p.add_argument("--input-topic", help=f"Topic of input messages (env MLOPS_EDGE_MQTT_INPUT; default "
                                         f"{DEFAULT_INPUT_TOPIC}).")
    p.add_argument("--output-topic", help=f"Topic of the answers (env MLOPS_EDGE_MQTT_OUTPUT; default "
                                          f"{DEFAULT_OUTPUT_TOPIC}).")
    p.add_argument("--score-url", help=f"The scoring server (env MLOPS_EDGE_SCORE_URL; default "
                                       f"http://127.0.0.1:{DEFAULT_PORT}/score).")
    p.add_argument("--key-file", help="The scoring server's key file, when it requires a key (env "
                                      "MLOPS_AUTH_KEY_FILE: the one mlops-serve reads).")
    p.add_argument("--client-id", default="", help="MQTT client id (default: one the broker assigns).")
    p.add_argument("--queue", type=int, default=1000, help="Messages waiting at most; past it, answered 503.")
    return p


def settings_from(argv: Sequence[str] | None, environ: Mapping[str, str]) -> BridgeSettings:
    """The settings from the command line, then the environment.

    Raises:
        ValueError: no broker, or an invalid one.
    """
    args = parser().parse_args(argv)
    broker = args.broker or environ.get("MLOPS_EDGE_MQTT", "")
    if not broker:
        raise ValueError("No broker: give --broker HOST[:PORT] or set MLOPS_EDGE_MQTT.")
    host, port = parse_broker(broker)
    key_file = args.key_file or environ.get("MLOPS_AUTH_KEY_FILE")
    return BridgeSettings(
        host=host, port=port,
        input_topic=args.input_topic or environ.get("MLOPS_EDGE_MQTT_INPUT") or DEFAULT_INPUT_TOPIC,
        output_topic=args.output_topic or environ.get("MLOPS_EDGE_MQTT_OUTPUT") or DEFAULT_OUTPUT_TOPIC,
        score_url=args.score_url or environ.get("MLOPS_EDGE_SCORE_URL") or f"http://127.0.0.1:{DEFAULT_PORT}/score",
        key_file=Path(key_file) if key_file else None, client_id=args.client_id, queue_limit=max(1, args.queue))


def _say(message: str) -> None:
    print(f"mlops-edge-mqtt[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run until SIGTERM or SIGINT (exit 0); 2 for a bad setting or paho-mqtt missing."""
    try:
        settings = settings_from(argv, os.environ)
        bridge = Bridge(settings)
    except ValueError as exc:
        _say(str(exc))
        return 2
    except ImportError:
        _say("MQTT needs paho-mqtt in the module image: pip install paho-mqtt (or leave MLOPS_EDGE_MQTT unset).")
        return 2
    except OSError as exc:
        _say(f"cannot read the key file: {exc.strerror or exc}.")
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: bridge.stop.set())
    _say(f"scoring {settings.input_topic!r} with {settings.score_url}, answers on {settings.output_topic!r}")
    bridge.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
