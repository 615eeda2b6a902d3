"""A version's quality: %validate, %onnx, %profile."""

from __future__ import annotations

from typing import Any

from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from mlops_magics import api
from mlops_magics.magics.base import MagicsBase, examples, user_errors
from mlops_magics.progress import StepProgress


@magics_class
class QualityMagics(MagicsBase):
    """A version's quality."""

    @examples("%validate iris:2 --data X_test --labels y_test --metric 'accuracy>=0.9'",
              "%validate iris:3 --data X_test --labels y_test --metric f1 --baseline iris@production")
    @magic_arguments()
    @argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS to validate.")
    @argument("--data", required=True, metavar="X_EXPR", help="Held-out inputs (an expression in the notebook).")
    @argument("--labels", required=True, metavar="Y_EXPR", help="Their true labels or values.")
    @argument("--metric", action="append", default=[], metavar="CHECK",
              help="accuracy>=0.9, rmse<=3, f1 (shown only)...; repeatable. A notebook function f(y_true, y_pred) "
                   "can be named as a metric.")
    @argument("--baseline", metavar="REF", help="Compare with this version (e.g. NAME@production).")
    @argument("--max-regression", type=float, default=0.0,
              help="How much worse than the baseline a metric may be (absolute; default 0).")
    @line_magic
    def validate(self, line: str) -> Any:
        """Compute metrics on held-out data, check thresholds and a baseline; the verdict is stored."""
        args = self.parse(self.validate, line)
        data = self.evaluate(args.data, "--data")
        labels = self.evaluate(args.labels, "--labels")
        with user_errors():
            return api.validate(args.ref, data, labels, metrics=args.metric, baseline=args.baseline,
                                max_regression=args.max_regression, namespace=self.ipython.user_ns)

    @examples("%onnx iris:2                      # convert, check parity, time both, register the next version",
              "%onnx iris:2 --quantize int8 --data X_test[:100]")
    @magic_arguments()
    @argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS of the model to convert.")
    @argument("--opset", type=int, help="ONNX opset (default: the converter's newest).")
    @argument("--quantize", choices=["int8"], help="Dynamic int8 quantization of MatMul/Gemm/Conv weights.")
    @argument("--data", metavar="EXPR", help="Rows to check parity on and to time (default: the registered sample).")
    @argument("--force", action="store_true", help="Register even when parity fails the tolerance.")
    @line_magic
    def onnx(self, line: str) -> Any:
        """Convert a model to ONNX, check it against the original, time both, register it as the next version."""
        args = self.parse(self.onnx, line)
        data = self.evaluate(args.data, "--data") if args.data else None
        with user_errors():
            return api.to_onnx(args.ref, opset=args.opset, quantize=args.quantize, data=data, force=args.force,
                               provenance=self.provenance())

    @examples("%profile iris:2 --data X_test[:1]",
              "%profile iris:2 --data X_test[:1] --configs 'cpu=0.5,memory=512m; cpu=1,memory=1g' --slo-p95-ms 50")
    @magic_arguments()
    @argument("ref", help="NAME (latest), NAME:VERSION or NAME@ALIAS to profile.")
    @argument("--data", required=True, metavar="EXPR", help="One request's rows (every request sends them).")
    @argument("--configs", default="cpu=0.5,memory=512m; cpu=1,memory=1g",
              help="Resource configurations, ';'-separated (default: 'cpu=0.5,memory=512m; cpu=1,memory=1g').")
    @argument("--concurrency", default="1,4,16", help="Load levels in connections (default 1,4,16); the highest "
                                                      "is the target load.")
    @argument("--duration", type=float, default=10.0, help="Seconds of load per level (default 10).")
    @argument("--slo-p95-ms", type=float, help="The p95 latency to keep at the target load.")
    @argument("--target", choices=["docker", "local"], help="Default: docker when an engine is reachable.")
    @line_magic
    def profile(self, line: str) -> Any:
        """Deploy under each CPU/memory configuration, load it, measure; recommend the smallest that meets the SLO."""
        args = self.parse(self.profile, line)
        data = self.evaluate(args.data, "--data")
        with user_errors():
            return api.profile(args.ref, data, configs=args.configs, concurrency=args.concurrency,
                               duration=args.duration,
                           slo_p95_ms=args.slo_p95_ms, target=args.target, progress=StepProgress())
