"""What deployments collected: %collected, %monitor, %label."""

from __future__ import annotations

from typing import Any

from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from mlops_magics import api
from mlops_magics.magics.base import MagicsBase, examples, user_errors
from mlops_magics.progress import refresh_display


@magics_class
class MonitoringMagics(MagicsBase):
    """What deployments collected."""

    @examples("%collected iris --since 1h",
              "%collected iris --limit 5")
    @magic_arguments()
    @argument("service", help="The service whose records to show (deployed with --collect).")
    @argument("--since", help="Only records from this long ago on: 90s, 30m, 1h, 2d.")
    @argument("--limit", type=int, help="Only the newest N requests (a request of 3 rows gives 3 rows; with "
                                        "--designation: the newest N rows).")
    @argument("--designation", help="Show what the entry script's ModelDataCollector(designation=...) collected.")
    @line_magic
    def collected(self, line: str) -> Any:
        """What a deployment recorded, as a DataFrame: one row per input row, features as columns."""
        args = self.parse(self.collected, line)
        with user_errors():
            frame = api.collected(args.service, since=args.since, limit=args.limit,
                                         designation=args.designation)
        if frame.attrs.get("note"):
            print(frame.attrs["note"])
        print(frame.attrs["stats"])
        return frame

    @examples("%monitor iris",
              "%monitor iris --baseline iris:2 --since 1h --refresh 10")
    @magic_arguments()
    @argument("service", help="The service to watch (deployed with --collect).")
    @argument("--baseline", metavar="NAME:VERSION",
              help="Compare inputs with this version's input example (default: the deployed version's).")
    @argument("--data", metavar="EXPR", help="Compare inputs with this dataset instead (e.g. X_train).")
    @argument("--since", help="Only what was collected from this long ago on: 30m, 1h, 2d.")
    @argument("--refresh", type=float, metavar="SECONDS",
              help="Redraw every SECONDS seconds until interrupted (or --duration passes).")
    @argument("--duration", type=float, metavar="SECONDS", help="With --refresh: stop after this long.")
    @line_magic
    def monitor(self, line: str) -> Any:
        """Dashboard of a deployment: volume, latency, errors, predictions, accuracy, drift (PSI, KS)."""
        args = self.parse(self.monitor, line)
        data = self.evaluate(args.data, "--data") if args.data else None
        with user_errors():
            report = api.monitor(args.service, baseline=args.baseline, data=data, since=args.since)
            if args.refresh is None:
                return report
            refresh_display(report, args.refresh, args.duration)
        return None

    @examples("%label iris --data truth     # truth: a DataFrame with request_id and label columns",
              "%label iris --data '{\"test-0\": 2, \"test-1\": 0}'     # a dict by request id")
    @magic_arguments()
    @argument("service", help="The service whose requests the labels belong to.")
    @argument("--data", required=True, metavar="EXPR",
              help="The labels: a DataFrame with request_id and label columns, a Series or dict by request id; a "
                   "label may be a list, one per row of its request. A later label replaces an earlier one.")
    @line_magic
    def label(self, line: str) -> Any:
        """Attach ground-truth labels to collected requests by request id; %monitor then shows accuracy."""
        args = self.parse(self.label, line)
        data = self.evaluate(args.data, "--data")
        with user_errors():
            return api.label(args.service, data)
