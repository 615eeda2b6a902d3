"""Verbs of the emulated FPGA engine: ``mlops fpga compile`` and ``mlops fpga sweep``."""

from __future__ import annotations

import argparse
from typing import Any

from mlops_magics import api
from mlops_magics.cli.inputs import ACCEPTED, read_column, read_data
from mlops_magics.cli.output import Verbs


def _engine(args: argparse.Namespace) -> dict[str, Any]:
    return {"clock_mhz": args.clock_mhz, "lanes": args.lanes, "tile_engines": args.tile_engines,
            "dispatch_cycles": args.dispatch_cycles}


def _data(args: argparse.Namespace) -> tuple[Any, Any]:
    data = read_data(args.data) if args.data else None
    labels = read_column(args.labels) if args.labels else None
    return data, labels


def _compile(args: argparse.Namespace) -> Any:
    data, labels = _data(args)
    train = read_data(args.train_data, "--train-data") if args.train_data else None
    train_labels = read_column(args.train_labels, "--train-labels") if args.train_labels else None
    return api.fpga_compile(args.ref, format=args.format, native_dim=args.native_dim,
                            vector_format=args.vector_format, data=data, labels=labels,
                            register=not args.no_register, finetune=args.finetune, finetune_data=train,
                            finetune_labels=train_labels, finetune_overlap=args.allow_overlap, **_engine(args))


def _sweep(args: argparse.Namespace) -> Any:
    data, labels = _data(args)
    return api.fpga_sweep(args.ref, formats=args.formats, data=data, labels=labels, native_dim=args.native_dim,
                          **_engine(args))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", help="NAME, NAME:VERSION or NAME@ALIAS: an ONNX version, or a model 'mlops onnx' converts.")
    p.add_argument("--native-dim", type=int, metavar="N",
                   help="The engine's native vector length: tiles are N x N (default 400, Brainwave's).")
    p.add_argument("--labels", metavar="FILE",
                   help="Their true labels, one column: a CSV with one column, a JSON list or a 1-D .npy.")
    p.add_argument("--clock-mhz", type=float, metavar="MHZ", help="The emulated engine's clock (default 250).")
    p.add_argument("--lanes", type=int, help="Values each dot-product unit takes per cycle (default 40).")
    p.add_argument("--tile-engines", type=int, help="Matrix-vector tile engines (default 6).")
    p.add_argument("--dispatch-cycles", type=int, help="Cycles to issue one instruction (default 1, an assumption).")


def add_verbs(verbs: Verbs) -> None:
    """Add this family's verbs."""
    group = verbs.group("fpga", "The EMULATED FPGA engine: compile a network (per-layer work, emulated latency, "
                                "memory, accuracy vs fp32), or sweep number formats.")
    p = group.add("compile", _compile, "Compile a network for the emulated FPGA engine, report it, register the "
                                       "program as the next version.")
    _common(p)
    p.add_argument("--format", default="mxfp8", metavar="FORMAT",
                   help="The number format (default mxfp8; fp32, bf16, fp16, mxint8, mxfp8_e5m2, mxfp6, mxfp4, "
                        "msfp9, msfp8...).")
    p.add_argument("--vector-format", metavar="FORMAT", help="Point-wise precision (default bf16; fp32 for fp32).")
    p.add_argument("--data", metavar="FILE", help=f"Rows to measure accuracy on: {ACCEPTED}.")
    p.add_argument("--no-register", action="store_true", help="Report only, register nothing.")
    p.add_argument("--finetune", type=int, default=0, metavar="EPOCHS",
                   help="Fine-tune the weights for the format first (quantization-aware, EPOCHS passes; needs "
                        "PyTorch): the tuned ONNX is registered, then compiled; the report shows accuracy before "
                        "and after.")
    p.add_argument("--train-data", metavar="FILE",
                   help=f"--finetune: the training rows (apart from --data): {ACCEPTED}.")
    p.add_argument("--train-labels", metavar="FILE", help="--finetune: their labels, one column (as --labels).")
    p.add_argument("--allow-overlap", action="store_true",
                   help="--finetune: train on rows that are also --data rows (refused otherwise; the report counts "
                        "them).")
    p = group.add("sweep", _sweep, "Compile a network in several number formats and compare accuracy drop, emulated "
                                   "latency and weight memory (a table; --json for the rows).")
    _common(p)
    p.add_argument("--formats", metavar="A,B,C",
                   help="The formats to compare (default fp32,mxint8,mxfp8,msfp9,msfp8,mxfp6,mxfp4).")
    p.add_argument("--data", required=True, metavar="FILE", help=f"Rows to measure on: {ACCEPTED}.")
