"""Verbs of monitoring: collected (CSV), label, monitor."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mlops_magics import api
from mlops_magics.cli.inputs import ACCEPTED, read_data
from mlops_magics.cli.output import Status, Verbs


def _collected(args: argparse.Namespace) -> Any:
    frame = api.collected(args.service, since=args.since, limit=args.limit, designation=args.designation)
    print(frame.attrs["stats"], file=sys.stderr)
    if not args.output:
        return frame
    Path(args.output).write_text(frame.to_csv(index=False))
    return Status(f"Wrote {len(frame):,} rows to {args.output}.", {"rows": len(frame), "output": args.output})


def _label(args: argparse.Namespace) -> Any:
    return api.label(args.service, read_data(args.data))


def _monitor(args: argparse.Namespace) -> Any:
    data = read_data(args.data) if args.data else None
    return api.monitor(args.service, baseline=args.baseline, data=data, since=args.since)


def add_verbs(verbs: Verbs) -> None:
    """Add this family's verbs."""
    p = verbs.add("collected", _collected, "What a deployment collected (--collect), as CSV (--json: records); the "
                                           "collection's counters on standard error.")
    p.add_argument("service", help="The service.")
    p.add_argument("--since", help="Only records from this long ago on: 90s, 30m, 1h, 2d.")
    p.add_argument("--limit", type=int, help="Only the newest N requests.")
    p.add_argument("--designation", help="What the entry script's ModelDataCollector collected instead.")
    p.add_argument("--output", "-o", metavar="FILE", help="Write the CSV here (default: standard output).")

    p = verbs.add("label", _label, "Attach ground-truth labels to collected requests by request id; mlops monitor "
                                   "then shows accuracy.")
    p.add_argument("service", help="The service whose requests the labels belong to.")
    p.add_argument("--data", required=True, metavar="FILE",
                   help="The labels: a CSV with request_id and label columns, or a JSON object {request id: label}.")

    p = verbs.add("monitor", _monitor, "A deployment's traffic, latency, errors, accuracy and drift, as text (for "
                                       "a live view: watch -n 5 mlops monitor SERVICE).")
    p.add_argument("service", help="The service (deployed with --collect).")
    p.add_argument("--baseline", metavar="NAME:VERSION", help="Compare with this version's input example.")
    p.add_argument("--data", metavar="FILE", help=f"Compare inputs with this dataset instead (e.g. the training "
                                                  f"features): {ACCEPTED}.")
    p.add_argument("--since", help="Only what was collected from this long ago on.")
