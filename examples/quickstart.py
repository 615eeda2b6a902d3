"""Quickstart: the whole MLOps loop of mlops-magics, from Python, in well under a minute.

    make quickstart                                  # or: .venv/bin/python examples/quickstart.py [--home DIR]

Train a model, register it, convert it to ONNX (checked against the original and timed), validate it against a
threshold, deploy it as a local web service that records what it scores, score over HTTP, see the drift of a
shifted batch, and undeploy. Everything goes into a registry of its own (``./.mlops-quickstart``, or ``--home``),
never your ``~/.mlops``; whatever happens (an error, Ctrl-C), the service is stopped before the script exits.

Only the public API is used (``import mlops_magics as mm``); the notebooks do the same with magics.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import mlops_magics as mm

MODEL = "iris-quickstart"
SERVICE = "iris-quickstart"
SHIFT_CM = 2.5  # the shifted batch: petal length arrives 2.5 cm too long (a unit changed upstream, say)


def say(step: str, text: str) -> None:
    """One line of the story: the step in a column, then what happened."""
    print(f"  {step:10} {text}", flush=True)


def send(frame: Any, rows: int = 5) -> list[Any]:
    """Score ``frame`` over HTTP, ``rows`` rows a request; the answers, request by request."""
    return [mm.call(SERVICE, frame.iloc[i:i + rows]) for i in range(0, len(frame), rows)]


def on_disk(rows: int, since: float, timeout: float = 10.0) -> Any:
    """The rows collected since ``since``, once ``rows`` of them are written (the server writes within a second)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = mm.collected(SERVICE, since=since)
        if len(frame) >= rows or time.monotonic() > deadline:
            return frame
        time.sleep(0.1)


def loop() -> None:
    """Train, register, convert, validate, deploy, score, watch drift: told step by step."""
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    iris = load_iris(as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(iris.data, iris.target, test_size=0.3, random_state=0,
                                                        stratify=iris.target)
    model = LogisticRegression(max_iter=500).fit(X_train, y_train)
    say("train", f"LogisticRegression on {len(X_train)} iris rows: accuracy {model.score(X_test, y_test):.3f} "
                 f"on {len(X_test)} held-out rows")

    version = mm.register(model, MODEL, tags={"data": "iris"}, sample=X_test[:5], alias="staging")
    say("register", f"{version.ref} ({version.flavor}, {version.size:,} bytes, sha256 {version.sha256[:12]}), "
                    "alias staging")

    onnx = mm.to_onnx(version.ref, data=X_test, budget=0.25)
    if onnx.registered is None:
        raise mm.ConversionError(f"The ONNX model disagrees with the original: {onnx.parity_line()}")
    speed = onnx.speed
    say("onnx", f"{onnx.registered} (ONNX of :{version.version}): {onnx.parity_line()}")
    say("", f"one row {speed.single_native_median_us:.0f} us -> {speed.single_onnx_median_us:.0f} us "
            f"({speed.single_speedup:.1f}x faster), a batch of {speed.batch_rows:,} {speed.batch_speedup:.1f}x faster")

    report = mm.validate(onnx.registered, X_test, y_test, metrics=["accuracy>=0.9"])
    say("validate", f"{onnx.registered} on {report.rows} held-out rows: accuracy {report.metrics['accuracy']:.3f}, "
                    f"accuracy>=0.9 {'PASSED' if report.passed else 'FAILED'}")
    mm.set_alias(onnx.registered, "production", require_validation=True)  # gated: only a version that passed
    say("", f"alias production -> {onnx.registered} (a gated alias: it refuses a version that did not pass)")

    started = time.monotonic()
    service = mm.deploy(f"{MODEL}@production", name=SERVICE, collect=True, require_validation=True)
    say("deploy", f"{MODEL}@production -> {service.url} (mlops-serve, a local process, collecting), "
                  f"ready in {time.monotonic() - started:.1f} s")

    since = time.time()
    answers = np.concatenate([np.asarray(answer).ravel() for answer in send(X_test)])
    right = int((answers == y_test.to_numpy()).sum())
    first = ", ".join(str(iris.target_names[int(label)]) for label in answers[:3])
    say("score", f"{len(X_test)} rows in {-(-len(X_test) // 5)} HTTP requests: {right} right "
                 f"({right / len(X_test):.1%}); the first answers: {first}, ...")
    records = on_disk(len(X_test), since)
    calm = mm.monitor(SERVICE, data=X_train, since=since)
    say("collect", f"{records['request_id'].nunique()} requests, {len(records)} rows on disk; latency p50 "
                   f"{calm.latency_ms['p50']:.2f} ms; drift against the training data: "
                   f"{', '.join(calm.drifted) or 'none'}")

    since = time.time()
    shifted = X_test.copy()
    shifted["petal length (cm)"] += SHIFT_CM
    send(shifted)
    on_disk(len(shifted), since)
    drift = mm.monitor(SERVICE, data=X_train, since=since)
    if drift.drifted:
        worst = max(drift.drift, key=lambda d: d.psi)
        say("drift", f"a batch with petal length +{SHIFT_CM} cm: DRIFT in {', '.join(drift.drifted)} "
                     f"(PSI {worst.psi:.2f}; 0.2 flags a feature)")
    else:
        say("drift", f"a batch with petal length +{SHIFT_CM} cm: no drift flagged")


def undeploy_everything(home: Path) -> bool:
    """Stop every service of the quickstart's registry (it holds only its own); say so. True if none is left."""
    stopped = mm.undeploy(all_services=True)
    left = [d.name for d in mm.list_deployments() if d.is_live]
    if left:
        print(f"  {'undeploy':10} could not stop {', '.join(left)}: see MLOPS_HOME={home} mlops deployments",
              file=sys.stderr)
        return False
    say("undeploy", f"{', '.join(stopped) or 'no service was running'}: stopped, nothing left running")
    return True


def terminated(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the quickstart as Ctrl-C does: through the clean-up."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the loop in the quickstart's own registry; undeploy in any case. Exit status 0, 1 (failed), 130 (Ctrl-C)."""
    parser = argparse.ArgumentParser(description="The whole MLOps loop of mlops-magics, in well under a minute.")
    parser.add_argument("--home", type=Path, default=Path(".mlops-quickstart"),
                        help="the quickstart's own registry (default: ./.mlops-quickstart; never ~/.mlops)")
    home = parser.parse_args(argv).home.expanduser().resolve()
    os.environ["MLOPS_HOME"] = str(home)  # before the first registry call: every mm.* call below uses it
    signal.signal(signal.SIGTERM, terminated)
    print(f"mlops-magics quickstart: the whole loop on iris, in a registry of its own: {home}")
    print("(MLOPS_HOME; your ~/.mlops is not touched)\n", flush=True)
    started = time.monotonic()
    status = 1
    try:
        loop()
        status = 0
    except KeyboardInterrupt:
        print("\nInterrupted: stopping what was started.", file=sys.stderr)
        status = 130
    except mm.MlopsError as error:
        print(f"\nThe quickstart failed: {error}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave a server behind
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if not undeploy_everything(home):
            status = status or 1
    if status == 0:
        print(f"\nThe loop took {time.monotonic() - started:.1f} s. Look around: MLOPS_HOME={home} .venv/bin/mlops "
              "models (delete the folder to forget it all).")
        print("Next, the same loop with magics, in JupyterLab with the MLOps sidebar (the box icon on the left):")
        print("  make lab    # JupyterLab on 127.0.0.1, the notebooks/ folder open: start with 01_register_models")
    return status


if __name__ == "__main__":
    sys.exit(main())
