"""``Model.profile`` and ``azureml.core.profile.ModelProfile``: :func:`mlops_magics.api.profile` with Azure's keys.

``input_dataset`` is SDK v1's dataset of request bodies, one string per row; here it is a list of request strings,
one request string, or the path of a text file with one request per line (the first request is sent by every
request of the load). ``cpu`` and ``memory_in_gb`` give the one configuration to measure (Azure's); without them
our two default configurations are measured. Load: ``duration`` seconds per level (``$MLOPS_PROFILE_DURATION``,
default 10) at ``concurrency`` connections (``$MLOPS_PROFILE_CONCURRENCY``, default ``1,4,16``).

``get_details()`` answers with the keys of Azure's profile result (``requestedCpu``, ``requestedMemoryInGB``,
``recommendedCpu``, ``recommendedMemoryInGB``, ``recommendationLatencyInMs``, ``maxUtilizedCpu``,
``maxUtilizedMemoryInGB``, ``latencyPercentile50InMs`` ... ``measuredQueriesPerSecond``, ``totalQueries``,
``successQueries``, ``successRate``, ``state``, ``error``); ``requestedMemoryInGb`` too, as Azure's docs spell it.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

from mlops_magics import api
from mlops_magics.azureml.exceptions import UserErrorException, WebserviceException
from mlops_magics.azureml.staging import translated
from mlops_magics.azureml.unsupported import SdkObject

#: Azure's per-configuration result keys, copied from the measured configuration when it has them.
MEASURED = ("requestedCpu", "requestedMemoryInGB", "maxUtilizedCpu", "maxUtilizedMemoryInGB", "averageLatencyInMs",
            "latencyPercentile50InMs", "latencyPercentile90InMs", "latencyPercentile95InMs",
            "latencyPercentile99InMs", "latencyPercentile999InMs", "measuredQueriesPerSecond", "totalQueries",
            "successRate")


def _requests(input_dataset: Any) -> str:
    """The request body every request of the load sends."""
    if input_dataset is None:
        raise UserErrorException("Model.profile needs input_dataset: a list of request strings (JSON bodies), one "
                                 "request string, or a text file with one request per line.")
    if isinstance(input_dataset, (list, tuple)) and input_dataset:
        first = input_dataset[0]
        return first if isinstance(first, str) else __import__("json").dumps(first)
    if isinstance(input_dataset, (str, os.PathLike)):
        path = Path(input_dataset)
        text = str(input_dataset)
        if len(text) < 4096 and "\n" not in text and path.is_file():
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            if not lines:
                raise UserErrorException(f"{path} holds no request (one request body per line).")
            return lines[0]
        return text
    raise UserErrorException(f"input_dataset is a {type(input_dataset).__name__}: give a list of request strings, "
                             "one request string, or a text file with one request per line (there are no Azure "
                             "datasets here).")


def run_profile(ws: Any, name: str, model: Any, input_dataset: Any, cpu: float | None, memory_in_gb: float | None,
                description: str | None, duration: float | None, concurrency: Any) -> ModelProfile:
    """Measure and return the profile (it blocks: ``wait_for_completion`` returns at once)."""
    body = _requests(input_dataset)
    kwargs: dict[str, Any] = {
        "duration": float(duration if duration is not None else os.environ.get("MLOPS_PROFILE_DURATION") or 10),
        "concurrency": concurrency or os.environ.get("MLOPS_PROFILE_CONCURRENCY") or (1, 4, 16)}
    if cpu is not None or memory_in_gb is not None:
        kwargs["configs"] = [{"cpu": float(cpu) if cpu is not None else 1.0,
                              "memory": f"{max(1, round(float(memory_in_gb or 0.5) * 1024))}m"}]
    started = datetime.datetime.now(datetime.timezone.utc)
    with translated(f"Model.profile({name!r})"):
        report = api.profile(model.id, body, registry=ws.registry, **kwargs)
    return ModelProfile(ws, name, model, report, description, started)


class ModelProfile(SdkObject):
    """The result of ``Model.profile``."""

    def __init__(self, workspace: Any, name: str, model: Any, report: Any, description: str | None,
                 created: datetime.datetime) -> None:
        self.workspace = workspace
        self.name = name
        self.model = model
        self.report = report
        self.description = description
        self.created_time = created
        ok = report.recommendedCpu is not None or any(not c.get("error") for c in report.configurations)
        self.state = "Succeeded" if ok else "Failed"

    def wait_for_completion(self, show_output: bool = False) -> None:
        """Return at once: ``Model.profile`` measured already (it blocks); raise if every configuration failed.

        Raises:
            WebserviceException: the profiling failed (the first error quoted).
        """
        if self.state == "Failed":
            errors = [str(c.get("error")) for c in self.report.configurations if c.get("error")]
            raise WebserviceException(f"Model profiling {self.name} failed: {errors[0] if errors else 'no result'}")
        if show_output:
            print(f"Model profiling {self.name} Succeeded: {self.report!r}")

    def _measured(self) -> dict[str, Any]:
        """The configuration the figures come from: the recommended one, else the first that answered."""
        configs = list(self.report.configurations)
        for c in configs:
            if (c.get("requestedCpu"), c.get("requestedMemoryInGB")) == (self.report.recommendedCpu,
                                                                        self.report.recommendedMemoryInGB):
                return dict(c)
        return dict(next((c for c in configs if not c.get("error")), configs[0] if configs else {}))

    def get_details(self) -> dict[str, Any]:
        """Azure's profile result keys."""
        measured = self._measured()
        details: dict[str, Any] = {"name": self.name, "description": self.description,
                                   "createdTime": self.created_time.isoformat(), "state": self.state,
                                   "recommendedCpu": self.report.recommendedCpu,
                                   "recommendedMemoryInGB": self.report.recommendedMemoryInGB,
                                   "recommendationLatencyInMs": self.report.recommendedLatencyInMs}
        details.update({k: measured[k] for k in MEASURED if k in measured})
        if "totalQueries" in measured and "successRate" in measured:
            details["successQueries"] = round(float(measured["totalQueries"]) * float(measured["successRate"]))
        details["requestedMemoryInGb"] = details.get("requestedMemoryInGB")
        details["error"] = measured.get("error")
        details["errorLogsUri"] = None
        return details

    def serialize(self) -> dict[str, Any]:
        return self.get_details()

    def __repr__(self) -> str:
        return f"ModelProfile({self.name}: {self.model.id}, {self.state})\n{self.report!r}"
