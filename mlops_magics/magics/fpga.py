"""The emulated FPGA engine: %fpga compile, %fpga sweep."""

from __future__ import annotations

from typing import Any

from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from mlops_magics import api
from mlops_magics.magics.base import MagicsBase, examples, user_errors


@magics_class
class FpgaMagics(MagicsBase):
    """The emulated FPGA engine."""

    @examples("%fpga compile digits-mlp --format msfp8 --native-dim 128 --data X_val --labels y_val",
              "%fpga sweep digits-mlp --formats fp32,mxint8,mxfp8,msfp9,msfp8,mxfp6,mxfp4 --data X_val --labels y_val",
              "%fpga compile digits-mlp:2 --format mxfp8 --clock-mhz 300 --no-register   # report only",
              "%fpga compile digits-mlp --format msfp8 --data X_val --labels y_val --finetune 5 --train-data X_train "
              "--train-labels y_train   # quantization-aware fine-tuning first (needs PyTorch)")
    @magic_arguments()
    @argument("action", choices=["compile", "sweep"],
              help="compile: one format, registered as the next version; sweep: several formats side by side.")
    @argument("ref", help="NAME, NAME:VERSION or NAME@ALIAS: an ONNX version, or a model %%onnx converts.")
    @argument("--format", default="mxfp8", metavar="FORMAT",
              help="compile: the number format (default mxfp8; fp32, bf16, fp16, mxint8, mxfp8, mxfp8_e5m2, "
                   "mxfp6, mxfp6_e3m2, mxfp4, msfp9, msfp8).")
    @argument("--formats", metavar="A,B,C",
              help="sweep: the formats to compare (default fp32,mxint8,mxfp8,msfp9,msfp8,mxfp6,mxfp4).")
    @argument("--native-dim", type=int, metavar="N",
              help="The engine's native vector length: tiles are N x N (default 400, Brainwave's).")
    @argument("--vector-format", metavar="FORMAT", help="compile: point-wise precision (default bf16; fp32 for fp32).")
    @argument("--data", metavar="X_EXPR", help="Rows to measure accuracy on (an expression in the notebook); "
                                               "required by sweep.")
    @argument("--labels", metavar="Y_EXPR", help="Their true labels (without them: agreement with fp32 only).")
    @argument("--clock-mhz", type=float, metavar="MHZ", help="The emulated engine's clock (default 250).")
    @argument("--lanes", type=int, help="Values each dot-product unit takes per cycle (default 40).")
    @argument("--tile-engines", type=int, help="Matrix-vector tile engines (default 6).")
    @argument("--dispatch-cycles", type=int, help="Cycles to issue one instruction (default 1, an assumption).")
    @argument("--no-register", action="store_true", help="compile: report only, register nothing.")
    @argument("--finetune", type=int, default=0, metavar="EPOCHS",
              help="compile: fine-tune the weights for the format first (quantization-aware, EPOCHS passes; needs "
                   "PyTorch); the tuned ONNX is registered, then compiled. The report shows accuracy before -> after.")
    @argument("--train-data", metavar="X_EXPR", help="compile --finetune: the training rows (apart from --data).")
    @argument("--train-labels", metavar="Y_EXPR", help="compile --finetune: their labels.")
    @argument("--allow-overlap", action="store_true",
              help="compile --finetune: train on rows that are also --data rows (refused otherwise; the report "
                   "counts them).")
    @line_magic
    def fpga(self, line: str) -> Any:
        """Compile a network for the EMULATED FPGA engine and report it, or sweep number formats (table, plot)."""
        args = self.parse(self.fpga, line)
        data = self.evaluate(args.data, "--data") if args.data else None
        labels = self.evaluate(args.labels, "--labels") if args.labels else None
        tuning = {"finetune": args.finetune, "finetune_overlap": args.allow_overlap,
                  "finetune_data": self.evaluate(args.train_data, "--train-data") if args.train_data else None,
                  "finetune_labels": self.evaluate(args.train_labels, "--train-labels") if args.train_labels else None}
        engine = {"clock_mhz": args.clock_mhz, "lanes": args.lanes, "tile_engines": args.tile_engines,
                  "dispatch_cycles": args.dispatch_cycles}
        with user_errors():
            if args.action == "sweep":
                return api.fpga_sweep(args.ref, formats=args.formats, data=data, labels=labels,
                                      native_dim=args.native_dim, **engine)
            return api.fpga_compile(args.ref, format=args.format, native_dim=args.native_dim,
                                    vector_format=args.vector_format, data=data, labels=labels,
                                    register=not args.no_register, provenance=self.provenance(), **engine,
                                    **tuning)
