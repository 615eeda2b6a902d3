"""Verbs of a version's quality: validate (exit 1 when a check fails: a CI gate), onnx, profile."""

from __future__ import annotations

import argparse
from typing import Any

from mlops_magics import api, validation
from mlops_magics.cli.inputs import ACCEPTED, read_column, read_data
from mlops_magics.cli.output import Status, Verbs, step_line


def _validate(args: argparse.Namespace) -> Any:
    return api.validate(args.ref, read_data(args.data), read_column(args.labels), metrics=args.metric,
                        baseline=args.baseline, max_regression=args.max_regression)


def _onnx(args: argparse.Namespace) -> Any:
    data = read_data(args.data) if args.data else None
    report = api.to_onnx(args.ref, opset=args.opset, quantize=args.quantize, data=data, force=args.force)
    return Status(repr(report), report, ok=report.registered is not None)


def _profile(args: argparse.Namespace) -> Any:
    return api.profile(args.ref, read_data(args.data), configs=args.configs, concurrency=args.concurrency,
                       duration=args.duration, slo_p95_ms=args.slo_p95_ms, target=args.target, progress=step_line)


def add_verbs(verbs: Verbs) -> None:
    """Add this family's verbs."""
    builtin = ", ".join((*validation.HIGHER_IS_BETTER, *validation.LOWER_IS_BETTER))
    p = verbs.add("validate", _validate, "Compute metrics on held-out data, check thresholds and a baseline, store "
                                         "the verdict; exit 1 when a check fails.")
    p.add_argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS to validate.")
    p.add_argument("--data", required=True, metavar="FILE", help=f"Held-out inputs: {ACCEPTED}.")
    p.add_argument("--labels", required=True, metavar="FILE",
                   help="Their true labels or values, one column: a CSV with one column, a JSON list or a 1-D .npy.")
    p.add_argument("--metric", action="append", default=[], metavar="CHECK",
                   help=f"accuracy>=0.9, rmse<=3, f1 (shown only)...; repeatable. Built-in metrics only ({builtin}): "
                        "the notebook functions %%validate accepts do not exist in a terminal.")
    p.add_argument("--baseline", metavar="REF", help="Compare with this version (e.g. NAME@production).")
    p.add_argument("--max-regression", type=float, default=0.0,
                   help="How much worse than the baseline a metric may be (absolute; default 0).")

    p = verbs.add("onnx", _onnx, "Convert a model to ONNX, check it against the original, time both, register it "
                                 "as the next version; exit 1 when parity fails and nothing is registered.")
    p.add_argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS of the model to convert.")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the converter's newest).")
    p.add_argument("--quantize", choices=["int8"], help="Dynamic int8 quantization of MatMul/Gemm/Conv weights.")
    p.add_argument("--data", metavar="FILE",
                   help=f"Rows to check parity on and to time (default: the registered sample): {ACCEPTED}.")
    p.add_argument("--force", action="store_true", help="Register even when parity fails the tolerance.")

    p = verbs.add("profile", _profile, "Deploy under each CPU/memory configuration, load it, measure; recommend the "
                                       "smallest that meets the SLO (progress on standard error).")
    p.add_argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS to profile.")
    p.add_argument("--data", required=True, metavar="FILE", help=f"One request's rows: {ACCEPTED}.")
    p.add_argument("--configs", default="cpu=0.5,memory=512m; cpu=1,memory=1g",
                   help="Resource configurations, ';'-separated (default: 'cpu=0.5,memory=512m; cpu=1,memory=1g').")
    p.add_argument("--concurrency", default="1,4,16",
                   help="Load levels in connections (default 1,4,16); the highest is the target load.")
    p.add_argument("--duration", type=float, default=10.0, help="Seconds of load per level (default 10).")
    p.add_argument("--slo-p95-ms", type=float, help="The p95 latency to keep at the target load.")
    p.add_argument("--target", choices=["docker", "local"], help="Default: docker when an engine is reachable.")
