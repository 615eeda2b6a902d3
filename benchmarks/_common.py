"""What every benchmark script shares: its command line, the machine it ran on, and where results go.

Each script's ``main()`` is: ``args = command_line(__doc__, ...).parse_args()``, the measures, then
``return finish(name, result, report, quick=args.quick)``, which stamps the machine, prints the report and,
unless ``--quick``, writes ``results/<name>.md`` and ``results/<name>.json``. Scripts that compare
mlops-serve before and after a change take the older side's ``backend/`` out of git with :func:`backend_at`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import tarfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, OS, Python and SQLite versions, and the time of the run."""
    return {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def describe(info: dict[str, Any]) -> str:
    """One line for a results header."""
    return (f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, {info['os']}, "
            f"Python {info['python']}, SQLite {info['sqlite']}, {info['when']}")


def record(name: str, text: str, result: dict[str, Any]) -> None:
    """Write ``results/<name>.md`` (the report) and ``results/<name>.json`` (every figure)."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"Recorded in {RESULTS / name}.md and {name}.json")


def unshadow() -> None:
    """Take benchmarks/ off ``sys.path``: it holds docker.py and onnx.py, which would hide the libraries."""
    import sys

    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]


def command_line(doc: str | None, quick: str) -> argparse.ArgumentParser:
    """A script's argument parser: the first paragraph of its docstring, and ``--quick`` (help: ``quick``)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=quick)
    return parser


def finish(name: str, result: dict[str, Any], report: Callable[[dict[str, Any]], str], *, quick: bool) -> int:
    """Stamp ``result`` with the machine (first, unless it has it), print its report, and record both unless
    ``quick``; return the script's exit status (0)."""
    if "machine" not in result:
        stamped = {"machine": machine_info(), **result}
        result.clear()
        result.update(stamped)
    text = report(result)
    print(text)
    if not quick:
        record(name, text, result)
    return 0


def backend_at(ref: str, work: Path) -> Path:
    """``backend/`` of commit ``ref``, taken out of git into ``work/<ref>``."""
    archive = work / f"{ref}.tar"
    with open(archive, "wb") as out:
        subprocess.run(["git", "-C", str(REPO), "archive", ref, "backend"], stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(work / ref, filter="data")
    return work / ref / "backend"


def checkout_ref() -> str:
    """This checkout's commit, short, with ``+changes`` when ``backend/`` has uncommitted changes."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "backend"], capture_output=True,
                           text=True).stdout.strip()
    return sha + ("+changes" if dirty else "")


#: The entry scripts of the iris model's scikit-learn and ONNX-only images (benchmarks/docker.py, edge.py).
SKLEARN_SCRIPT = """\
import json, os
import joblib
import numpy as np

def init():
    global model
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pkl"))

def run(raw):
    return model.predict(np.asarray(json.loads(raw)["data"])).tolist()
"""
ONNX_SCRIPT = """\
import json, os
import numpy as np
import onnxruntime as ort

def init():
    global session
    session = ort.InferenceSession(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.onnx"),
                                   providers=["CPUExecutionProvider"])

def run(raw):
    rows = np.asarray(json.loads(raw)["data"], dtype=np.float32)
    return session.run(None, {"X": rows})[0].tolist()
"""


def onnx_iris(clf: Any) -> Any:
    """The iris LogisticRegression as a hand-built ONNX graph (MatMul, Add, ArgMax): no converter needed."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("MatMul", ["X", "W"], ["Z0"]), helper.make_node("Add", ["Z0", "B"], ["Z"]),
             helper.make_node("ArgMax", ["Z"], ["label"], axis=1, keepdims=0)]
    graph = helper.make_graph(
        nodes, "iris_lr", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None])],
        [numpy_helper.from_array(clf.coef_.T.astype(np.float32), "W"),
         numpy_helper.from_array(clf.intercept_.astype(np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model
